//! The rules language: segments and offers from one YAML file, compiled once.
//!
//! Marketing writes segments as conditions over a customer's facts; the
//! engine evaluates them on every event and, through [`RuleSet::next_flip`],
//! whenever time alone could change an answer ("no purchase for 90 days").
//! Everything is checked when the file is loaded, so a typo is a
//! `rules.yaml:12:11: ...` error at start-up, never a wrong segment in
//! production. `docs/rules.md` is the user guide; this is the reference.
//!
//! # File format (`version: 1`)
//!
//! ```yaml
//! version: 1                      # required; only 1 exists
//! settings:                       # optional
//!   affinity_half_life: 30d       # default 30d: half-life of category affinities
//!   session_gap: 30m              # default 30m: inactivity that ends a session
//! segments:                       # optional list, at most 256, evaluated in dependency order
//!   - name: cart_abandoner        # required, unique; a-z A-Z 0-9 _ - (1..=64)
//!     description: text           # optional
//!     group: value_tier           # optional: at most one segment per group is a member
//!     priority: 1                 # required with `group` (only then): lowest qualifying wins; unique in its group
//!     when: cart.items > 0 && since(cart.last_added) >= 1h   # required condition
//! offers:                         # optional list
//!   - id: winback_20              # required, unique; same characters as names
//!     description: text           # optional
//!     eligible: in_segment("lapsed") && consent.email       # required condition
//!     value: 20.0                 # default 1.0, >= 0: business value
//!     lever: 1.0                  # default 1.0, >= 0: business priority weight
//!     channels: [email]           # required, non-empty: email, sms, push, web
//!     cap: { max: 1, per: 30d }   # optional: at most `max` sends per rolling `per`
//!     cooldown: 7d                # optional: minimum time between two sends of this offer
//!     holdout: 0.1                # default 0: control-group share, 0 <= holdout < 1
//!     prior: { alpha: 1, beta: 20 } # default 1, 1: Beta prior of the propensity, both > 0
//!     triggers: [segment_entered] # optional, see below
//! ```
//!
//! Unknown keys, duplicate keys, YAML anchors, aliases, tags and a second
//! document are errors. Durations are a whole number and a unit: `ms`, `s`,
//! `m`, `h`, `d`, `w`.
//!
//! Triggers (which decision points consider the offer):
//! `segment_entered` (entering any segment its `eligible` references, or
//! any segment if it references none; this is the default),
//! `segment_entered:<segment>`, `cart_abandoned`, `purchase`,
//! `session_start`. See [`Trigger`].
//!
//! # Conditions
//!
//! Types: number, string, bool, duration, instant, string-set. Operators,
//! loosest first: `||`, `&&`, comparisons (`== != < <= > >=`, `in`), `!`.
//! Parentheses group. Literals: numbers (`1000`, `0.6`, `-1`), `"strings"`
//! (escapes `\"` and `\\`), durations (`30s 15m 1h 90d 2w`), `true`,
//! `false`, and lists of strings (`["DE", "AT"]`, only after `in`).
//! `a in [..]` tests a string against a list; `"x" in profile.interests`
//! tests a string-set field. Strings compare exactly (case-sensitive) and
//! only with `==`/`!=`. A comparison involving a missing value (no
//! `last_purchase`, unknown country, unknown age) is false, and so is its
//! `!=`; `!` of it is true.
//!
//! Fields and functions are listed in one table, [`catalogue`], which error
//! messages and `docs/rules.md` follow. In short: `orders.*`, `spend.*`,
//! `page_views.*`, `product_views.*`, `sessions.*` over `7d 30d 90d 365d
//! lifetime`; `aov`, `cart.items`, `cart.value`, `profile.age` (numbers);
//! `cart.last_added`, `last_purchase`, `first_purchase`, `first_seen`,
//! `last_seen` (instants); `profile.gender income_band education country
//! region city loyalty_tier` (strings); `profile.interests` (string-set);
//! `consent.email sms push web` (bools). Functions: `since(instant)`,
//! `affinity("category")`, `in_segment("name")`, `birthday_within(7d)`,
//! `birthday_this_month()`, `offers_sent("offer_id", 30d)`.
//!
//! Calendar functions and `profile.age` use UTC days; someone born on
//! 29 February has their birthday on 28 February in common years.
//!
//! # Time
//!
//! [`RuleSet::next_flip`] returns the earliest instant after `now` at which
//! any segment or offer condition could change with no new event:
//! `since(x) >= d` at `x + d`; windowed numbers when their oldest event leaves the
//! window ([`Facts::next_window_change`]); affinities where their
//! exponential decay crosses the threshold; ages at the next birthday;
//! birthday functions at day and month boundaries. An `&&` that is false
//! waits for all its false operands, so a segment whose event-driven part is
//! false sets no timer. The answer may be early, never late.
//!
//! # Layout
//!
//! `facts` (what rules read), `catalogue` (names and types), `parse`
//! (winnow grammar), `compile` (types, names to ids), `eval` (evaluation and
//! time analysis of the compiled tree), `program` (the same, lowered for the
//! engine's hot path: flat leaves, each distinct leaf analysed once per
//! evaluation), `yaml` + `load` (file structure and positions), `calendar`,
//! `segset`.

pub mod calendar;
pub mod catalogue;
mod compile;
mod eval;
pub mod explain;
pub mod facts;
mod load;
mod parse;
#[cfg(test)]
mod plan_tests;
mod program;
mod segset;
mod yaml;

pub use facts::{CivilDate, Facts, FlagField, NumField, SetField, TextField, TimeField, Window};
pub use load::SUPPORTED_VERSION;
pub use segset::{SegmentSet, MAX_SEGMENTS};

use crate::time::{Duration, Timestamp};
use crate::window::WindowSums;
use compile::Expr;
use eval::{Env, Membership, Next, SegNext, Segs};
use program::{Cond, Leaves, Plan};

/// A rules file that cannot be used, with where and why.
///
/// Always fatal for the process that loads it (the worker refuses to start,
/// `cohort validate` exits non-zero): rules are configuration, not input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RulesError {
    file: String,
    line: usize,
    column: usize,
    message: String,
}

impl RulesError {
    fn new(file: &str, line: usize, column: usize, message: impl Into<String>) -> RulesError {
        RulesError { file: file.to_string(), line, column, message: message.into() }
    }
    /// The source name given to [`RuleSet::from_yaml`].
    pub fn file(&self) -> &str {
        &self.file
    }
    /// 1-based line.
    pub fn line(&self) -> usize {
        self.line
    }
    /// 1-based column, in characters.
    pub fn column(&self) -> usize {
        self.column
    }
    /// The message without the position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// File-wide settings that the state keeper must honour for rules to mean
/// what they say.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Half-life of category affinities. [`Facts::affinity`] must decay with
    /// it, because affinity timers are computed from it.
    pub affinity_half_life: Duration,
    /// Inactivity after which the next event starts a new session
    /// (`sessions.*`).
    pub session_gap: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        // 30 days: a month-old interest counts half. 30 minutes: the usual
        // web-analytics session timeout.
        Settings { affinity_half_life: Duration::from_days(30), session_gap: Duration::from_mins(30) }
    }
}

/// A segment's definition, for outputs, metrics labels and `inspect`.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Unique name, used in outputs and as a metrics label.
    pub name: String,
    /// Free text for people reading outputs and dashboards.
    pub description: Option<String>,
    /// Exclusive group; at most one member of a group is a member.
    pub group: Option<String>,
    /// Rank in the group; lowest qualifying wins. Set iff `group` is.
    pub priority: Option<i64>,
    /// The condition as written.
    pub when: String,
    /// Segments this one reads through `in_segment`.
    pub depends_on: SegmentSet,
    /// Whether the condition can change with time alone (needs timers).
    pub time_dependent: bool,
}

/// A delivery channel; each has the consent flag that gates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Gated by `consent.email`.
    Email,
    /// Gated by `consent.sms`.
    Sms,
    /// Gated by `consent.push`.
    Push,
    /// Gated by `consent.web`.
    Web,
}

impl Channel {
    /// Every channel, in the order the docs list them.
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::Sms, Channel::Push, Channel::Web];

    /// The name used in rules files and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Web => "web",
        }
    }

    /// The consent required to use this channel.
    pub fn consent(self) -> FlagField {
        match self {
            Channel::Email => FlagField::ConsentEmail,
            Channel::Sms => FlagField::ConsentSms,
            Channel::Push => FlagField::ConsentPush,
            Channel::Web => FlagField::ConsentWeb,
        }
    }
}

/// At most `max` sends of an offer in any rolling `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// Most sends allowed in the period.
    pub max: u32,
    /// Length of the rolling period.
    pub per: Duration,
}

/// Beta prior of an offer's conversion propensity, before any outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    /// Pseudo-count of conversions.
    pub alpha: f64,
    /// Pseudo-count of non-conversions.
    pub beta: f64,
}

impl Default for Prior {
    /// Beta(1, 1): uniform, no opinion.
    fn default() -> Self {
        Prior { alpha: 1.0, beta: 1.0 }
    }
}

/// A decision point at which an offer is considered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The customer entered one of these segments.
    SegmentEntered(SegmentSet),
    /// The engine decided a cart was abandoned.
    CartAbandoned,
    /// An order was placed.
    Purchase,
    /// A new session started.
    SessionStart,
    /// A rules change made the customer enter one of these segments (see
    /// docs/rules.md, "Changing the rules"). Only offers that list it are
    /// considered on a rules change.
    RulesChanged(SegmentSet),
}

/// An offer's definition. Caps, cooldowns, holdout and ranking are applied
/// by the engine; the rules decide eligibility.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// Unique id, used in outputs, caps and `offers_sent`.
    pub id: String,
    /// Free text for people.
    pub description: Option<String>,
    /// The eligibility condition as written.
    pub eligible: String,
    /// Business value, a factor of the score.
    pub value: f64,
    /// Business priority weight, a factor of the score.
    pub lever: f64,
    /// Channels it may be sent on, in preference order; never empty.
    pub channels: Vec<Channel>,
    /// Rolling frequency cap, if any.
    pub cap: Option<Cap>,
    /// Minimum time between two sends, if any.
    pub cooldown: Option<Duration>,
    /// Share of customers held out as a control group, in `[0, 1)`.
    pub holdout: f64,
    /// Propensity prior before any outcome.
    pub prior: Prior,
    /// Never empty: defaults to entering the referenced segments.
    pub triggers: Vec<Trigger>,
    /// Segments `eligible` references.
    pub segments: SegmentSet,
}

/// A compiled rules file: cheap to evaluate, immutable, `Send + Sync`, so
/// one instance can be shared by every partition of a worker.
#[derive(Clone, Debug)]
pub struct RuleSet {
    version: u32,
    version_string: String,
    settings: Settings,
    segments: Vec<Segment>,
    /// The conditions as compiled (the tree the tests check the lowered
    /// forms against), and lowered for evaluation.
    #[cfg_attr(not(test), allow(dead_code))]
    seg_exprs: Vec<Expr>,
    seg_conds: Vec<Cond>,
    seg_plan: Plan,
    /// `segments[i].time_dependent`, packed for the hot loop.
    seg_timed: Vec<bool>,
    /// Segment indexes, dependencies first.
    order: Vec<u16>,
    membership: Membership,
    offers: Vec<Offer>,
    #[cfg_attr(not(test), allow(dead_code))]
    offer_exprs: Vec<Expr>,
    offer_conds: Vec<Cond>,
    /// Whether each offer's condition can change with time alone.
    offer_timed: Vec<bool>,
    /// The offers whose condition can change with time other than through
    /// `in_segment` (see [`RuleSet::evaluate_with_next_flip`]).
    offer_own_timed: Vec<usize>,
    /// The windowed counter fields any condition reads
    /// ([`crate::window::WindowSums::mask`] bits).
    windows: u32,
}

impl RuleSet {
    /// Parse, check and compile a rules file. `source_name` is used in
    /// error messages only (usually the path as the user gave it).
    pub fn from_yaml(source_name: &str, text: &str) -> Result<RuleSet, RulesError> {
        load::load(source_name, text)
    }

    /// The windowed counter fields any segment or offer reads, as
    /// [`crate::window::WindowSums::mask`] bits: the window sums an
    /// evaluation needs ([`crate::window::Windows::sums_for`]).
    pub fn windows_read(&self) -> u32 {
        self.windows
    }

    /// `<file version>-<16 hex digits of a content hash>`: stamped on every
    /// output as `rules_version`, so a consumer can tell which rules decided
    /// it. Identical bytes give the identical string on every machine.
    pub fn version(&self) -> &str {
        &self.version_string
    }

    /// The `version:` number of the file format.
    pub fn file_version(&self) -> u32 {
        self.version
    }

    /// File-wide settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Segments in file order; a segment's index here is its index in
    /// every [`SegmentSet`].
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Index of a segment by name (for tests and admin tools; not for hot
    /// paths).
    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.name == name)
    }

    /// Whether any segment or offer condition can change with time alone.
    /// When false, [`RuleSet::next_flip`] is always `None` and the engine
    /// can skip timers entirely.
    pub fn depends_on_time(&self) -> bool {
        self.seg_timed.iter().chain(&self.offer_timed).any(|t| *t)
    }

    /// Offers in file order.
    pub fn offers(&self) -> &[Offer] {
        &self.offers
    }

    /// True if an offer lists the `rules_changed` trigger: a rules change
    /// can then send offers.
    pub fn offers_on_rules_change(&self) -> bool {
        self.offers.iter().flat_map(|o| &o.triggers).any(|t| matches!(t, Trigger::RulesChanged(_)))
    }

    /// Index of an offer by id.
    pub fn offer_index(&self, id: &str) -> Option<usize> {
        self.offers.iter().position(|o| o.id == id)
    }

    /// The customer's segments at `now`, written into `out` (cleared
    /// first). Conditions run in dependency order; exclusive groups keep
    /// only their lowest-priority qualifying member. Allocation-free.
    pub fn evaluate_segments<F: Facts + ?Sized>(&self, facts: &F, now: Timestamp, out: &mut SegmentSet) {
        let raw = self.raw_segments(facts, now);
        self.membership.finalize(&raw, out);
    }

    fn raw_segments<F: Facts + ?Sized>(&self, facts: &F, now: Timestamp) -> SegmentSet {
        let mut raw = SegmentSet::new();
        let sums = eval::sums_for(facts, now);
        for &i in &self.order {
            let i = usize::from(i);
            let hit = self.seg_conds[i].eval(&self.env(facts, now, sums, Segs::Raw(&raw, &self.membership)));
            if hit {
                raw.insert(i);
            }
        }
        raw
    }

    fn env<'a, F: Facts + ?Sized>(
        &self,
        facts: &'a F,
        now: Timestamp,
        sums: Option<&'a WindowSums>,
        segs: Segs<'a>,
    ) -> Env<'a, F> {
        Env { facts, now, segs, half_life: self.settings.affinity_half_life, sums }
    }

    /// Whether offer `i` is eligible given the customer's current
    /// `segments` (as returned by [`RuleSet::evaluate_segments`]). Caps,
    /// cooldowns and consent per channel are the engine's job. Out-of-range
    /// `i` is not eligible.
    pub fn offer_eligible<F: Facts + ?Sized>(
        &self,
        i: usize,
        facts: &F,
        segments: &SegmentSet,
        now: Timestamp,
    ) -> bool {
        match self.offer_conds.get(i) {
            Some(c) => c.eval(&self.env(facts, now, eval::sums_for(facts, now), Segs::Final(segments))),
            None => false,
        }
    }

    /// The earliest instant `> now` at which a segment's membership or an
    /// offer's eligibility could change if no event arrives: when the engine
    /// should set this customer's timer. `None`: nothing changes by time
    /// alone. May be early (re-evaluating then changes nothing and yields
    /// the next instant), never late.
    pub fn next_flip<F: Facts + ?Sized>(&self, facts: &F, now: Timestamp) -> Option<Timestamp> {
        let mut segments = SegmentSet::new();
        self.evaluate_with_next_flip(facts, now, &mut segments)
    }

    /// [`RuleSet::evaluate_segments`] and [`RuleSet::next_flip`] in one
    /// pass: the engine needs both after every event and timer, and the
    /// timer analysis evaluates every condition anyway.
    pub fn evaluate_with_next_flip<F: Facts + ?Sized>(
        &self,
        facts: &F,
        now: Timestamp,
        out: &mut SegmentSet,
    ) -> Option<Timestamp> {
        // The per-segment scratch lives on the stack; small rule sets get a
        // small array so clearing it costs nothing measurable, and rule sets
        // where nothing reads another segment's next change need none.
        if !self.seg_plan.reads_segments() && self.offer_own_timed.is_empty() {
            self.evaluate_with_next_flip_n::<0, F>(facts, now, out)
        } else if self.segments.len() <= 32 {
            self.evaluate_with_next_flip_n::<32, F>(facts, now, out)
        } else {
            self.evaluate_with_next_flip_n::<MAX_SEGMENTS, F>(facts, now, out)
        }
    }

    fn evaluate_with_next_flip_n<const N: usize, F: Facts + ?Sized>(
        &self,
        facts: &F,
        now: Timestamp,
        out: &mut SegmentSet,
    ) -> Option<Timestamp> {
        let mut raw = SegmentSet::new();
        let mut raw_next = [Next::NEVER; N];
        let mut best = Next::NEVER;
        let sums = eval::sums_for(facts, now);
        let mut leaves = Leaves::default();
        {
            let env = self.env(facts, now, sums, Segs::Raw(&raw, &self.membership));
            let seg_next = SegNext { raw_next: &raw_next, membership: &self.membership };
            self.seg_plan.analyse_leaves(&env, &seg_next, &mut leaves);
        }
        if N == 0 {
            // Nothing reads a segment's next change (see the caller).
            let (assembled, next) = self.seg_plan.assemble(&leaves);
            self.membership.finalize(&assembled, out);
            return next.get();
        }
        for step in self.seg_plan.steps() {
            let i = usize::from(step.segment);
            let (hit, t) = match leaves.result(&step.shape) {
                // A condition that does not depend on time has no leaf that
                // does, so its next change is never either way.
                Some((hit, t)) => (hit, if step.timed { t } else { Next::NEVER }),
                None => {
                    let env = self.env(facts, now, sums, Segs::Raw(&raw, &self.membership));
                    if step.timed {
                        self.seg_conds[i].analyse(&env, &SegNext { raw_next: &raw_next, membership: &self.membership })
                    } else {
                        (self.seg_conds[i].eval(&env), Next::NEVER)
                    }
                }
            };
            if hit {
                raw.insert(i);
            }
            if let Some(slot) = raw_next.get_mut(i) {
                *slot = t;
            }
            best = best.min(t);
        }
        self.membership.finalize(&raw, out);
        // An offer whose only time-dependent atoms are `in_segment` cannot
        // lower `best`: each atom's next change is then a segment's
        // membership change (a minimum over `raw_next`, so `>= best`) or
        // never, and `analyse` of `!`, `&&`, `||` and `==` never reports an
        // instant earlier than the earliest of its atoms'.
        if !self.offer_own_timed.is_empty() {
            let env = self.env(facts, now, sums, Segs::Final(out));
            let seg_next = SegNext { raw_next: &raw_next, membership: &self.membership };
            for &o in &self.offer_own_timed {
                best = best.min(self.offer_conds[o].analyse(&env, &seg_next).1);
            }
        }
        best.get()
    }
}
