//! The one pure decision function: state + input → new state + outputs +
//! next timer.
//!
//! [`apply`] is everything the worker asks of core for one customer. It folds
//! an event into the state (or takes a timer firing), evaluates every segment
//! at the decision instant, reports segment changes, runs next-best-offer
//! arbitration at decision points, and says when to wake this customer up
//! next. It reads no clock and does no I/O.
//!
//! **The decision instant** is the input's own time (the event time, or the
//! timer's due time), but never earlier than the customer's previous
//! decision instant: a late event is folded in and evaluated "now" for this
//! customer instead of rewriting history. Because the instant comes from the
//! input and the state only, a replay produces the same outputs, not just
//! the same ids.
//!
//! **Output ids** are 128-bit stable hashes of the input's identity and the
//! output's position among that input's outputs, as 32 hex digits:
//!
//! - an event: the record it was read from ([`Origin`]: input topic,
//!   partition and offset), which no other record shares and every replay
//!   reads again. Not the event id: producers re-send ids, and a re-sent id
//!   that has left the duplicate window is a new decision;
//! - a timer: the customer, the due time and the customer's
//!   [`CustomerState::incarnation`] (which record started this state, so a
//!   customer forgotten and seen again never repeats an earlier timer's id;
//!   a customer's timers are due ever later within one incarnation);
//! - a rules change: the customer, the rules version, the instant and the
//!   incarnation.
//!
//! So an id is unique per decision and the same on every replay, restore or
//! batch split: consumers can dedup on it.
//!
//! **Decision points**: entering a segment, the cart being abandoned (a
//! non-empty cart with no add for [`EngineSettings::cart_abandon_after`]), a
//! purchase, a new session. At most one next-best-offer is emitted per input:
//! the best of all offers whose `triggers` match any decision point of that
//! input and whose `eligible` condition holds.

use crate::event::{Channel, Event, EventKind};
use crate::hash::{fast64, hex128, FastBuildHasher, StableHasher};
use crate::offer::{choose, recommend, Candidate, Popularity, Propensity, Rejection, Scores};
use crate::rules::{self, RuleSet, SegmentSet, Trigger};
use crate::state::{CustomerState, Membership, OfferSend, Recorded, SegmentBits, StateSettings};
use crate::time::{Duration, Timestamp};
use crate::view::CustomerView;
use crate::window::WindowSums;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Engine settings that are not part of the rules language. Defaults are
/// what a CDP would do out of the box; the worker may expose them in config.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    /// A cart with no add for this long is abandoned (the `cart_abandoned`
    /// trigger). One hour is the usual e-commerce reminder delay.
    pub cart_abandon_after: Duration,
    /// Affinity denominator floor, see [`StateSettings::affinity_min_evidence`].
    pub affinity_min_evidence: f64,
    /// Products attached to a next-best-offer.
    pub products_per_offer: usize,
    /// Context weight of each decision point kind: how receptive a customer
    /// is at that moment. An offer matched by several uses the highest.
    pub context_weights: ContextWeights,
}

/// See [`EngineSettings::context_weights`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContextWeights {
    pub segment_entered: f64,
    /// Right after abandoning a cart intent is highest: reminders convert
    /// about twice as well as cold sends.
    pub cart_abandoned: f64,
    pub purchase: f64,
    pub session_start: f64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            cart_abandon_after: Duration::from_hours(1),
            affinity_min_evidence: StateSettings::default().affinity_min_evidence,
            products_per_offer: 4,
            context_weights: ContextWeights {
                segment_entered: 1.0,
                cart_abandoned: 2.0,
                purchase: 1.0,
                session_start: 0.5,
            },
        }
    }
}

/// Rules plus settings, prepared once (name index, state settings) and
/// shared by every partition of a worker.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    settings: EngineSettings,
    state_settings: StateSettings,
    seg_index: HashMap<String, u16, FastBuildHasher>,
    /// Tags [`CustomerState::segment_bits`] computed with these rules.
    fingerprint: u64,
}

impl Engine {
    /// Prepares compiled rules for evaluation. Build one per rules version
    /// and share it (it is `Send + Sync`); after replacing it, feed each
    /// customer an [`Input::RulesChanged`] to re-evaluate them.
    pub fn new(rules: RuleSet, settings: EngineSettings) -> Engine {
        let state_settings = StateSettings {
            session_gap: rules.settings().session_gap,
            affinity_half_life: rules.settings().affinity_half_life,
            affinity_min_evidence: settings.affinity_min_evidence,
        };
        let seg_index = rules.segments().iter().enumerate().map(|(i, s)| (s.name.clone(), i as u16)).collect();
        // Never 0, which marks "no bitset".
        let fingerprint = fast64(rules.version().as_bytes()) | 1;
        Engine { rules, settings, state_settings, seg_index, fingerprint }
    }

    /// The compiled rules (segment and offer names for outputs and metrics).
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Whether `state` was decided under other rules than these and must be
    /// re-evaluated ([`Input::RulesChanged`]) before anything else is
    /// decided on it. A customer never evaluated has nothing to re-evaluate.
    pub fn is_stale(&self, state: &CustomerState) -> bool {
        state.evaluated_at.is_some() && state.segment_bits.rules != self.fingerprint
    }

    /// The engine settings it was built with.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The settings state is folded with; also what a [`CustomerView`] for
    /// inspection needs.
    pub fn state_settings(&self) -> &StateSettings {
        &self.state_settings
    }
}

/// What [`apply`] needs besides the state: the engine and the partition's
/// learned tables (read-only here; the worker updates them with
/// [`Tables::observe`] after each input).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub engine: &'a Engine,
    pub popularity: &'a Popularity,
    pub propensity: &'a Propensity,
}

/// The per-partition learned tables, kept together for convenience.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tables {
    pub popularity: Popularity,
    pub propensity: Propensity,
}

impl Tables {
    /// Learns from one input event: purchases feed popularity, offer
    /// outcomes feed propensity. Call it for every valid event, in input
    /// order, after [`apply`] (so a decision never sees its own event's
    /// effect on the tables; either order is deterministic, this one is the
    /// contract).
    pub fn observe(&mut self, ev: &Event) {
        match &ev.kind {
            EventKind::Purchase(p) => self.popularity.record(p),
            EventKind::OfferOutcome(o) => self.propensity.record(&o.offer_id, o.outcome),
            _ => {}
        }
    }

    /// A context borrowing these tables.
    pub fn context<'a>(&'a self, engine: &'a Engine) -> Context<'a> {
        Context { engine, popularity: &self.popularity, propensity: &self.propensity }
    }
}

/// Where an input record was read: what makes an event's decision unique
/// (see the module doc, "Output ids").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl Origin<'_> {
    /// The identity hash state of decisions on this record.
    fn identity(&self) -> StableHasher {
        StableHasher::new().str("record").str(self.topic).u64(self.partition as u32 as u64).u64(self.offset as u64)
    }

    /// The incarnation a state started by this record gets (never 0).
    pub fn incarnation(&self) -> u64 {
        self.identity().finish64() | 1
    }
}

/// What to decide on.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A validated input event (see [`Event::validate`]) and the record it
    /// was read from.
    Event(&'a Event, Origin<'a>),
    /// This customer's timer, set from an earlier [`Decision::next_timer`],
    /// fired because the partition's watermark passed `due`.
    Timer { customer: &'a str, due: Timestamp },
    /// The rules were replaced; re-evaluate this customer at `at`.
    /// `switch` numbers the partition's rules switches
    /// ([`crate::partition::RulesProgress::switch`]), so that a change
    /// undone and made again at the same instant gets new output ids.
    RulesChanged { customer: &'a str, at: Timestamp, switch: u64 },
}

impl Input<'_> {
    fn customer(&self) -> &str {
        match self {
            Input::Event(e, _) => &e.customer,
            Input::Timer { customer, .. } | Input::RulesChanged { customer, .. } => customer,
        }
    }
    fn time(&self) -> Timestamp {
        match self {
            Input::Event(e, _) => e.time,
            Input::Timer { due, .. } => *due,
            Input::RulesChanged { at, .. } => *at,
        }
    }
}

/// Why the customer was evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    Event,
    Timer,
    RulesChanged,
}

/// What caused an output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub kind: CauseKind,
    /// The input event's id, for `kind == event`.
    pub event_id: Option<String>,
    /// The decision point for offers: `segment_entered:<segment>`,
    /// `cart_abandoned`, `purchase` or `session_start`.
    pub trigger: Option<String>,
}

/// The customer's segments changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentChanged {
    pub id: String,
    pub customer: String,
    /// The decision instant.
    pub time: Timestamp,
    /// Sorted by name.
    pub entered: Vec<String>,
    /// Sorted by name; includes segments the current rules no longer define.
    pub exited: Vec<String>,
    /// Every segment the customer is in now, sorted by name.
    pub segments: Vec<String>,
    pub cause: Cause,
    /// [`RuleSet::version`] of the rules that decided.
    pub rules_version: String,
}

/// A next-best-offer decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NextBestOffer {
    /// Also the `decision_id` outcomes refer back to.
    pub id: String,
    pub customer: String,
    pub time: Timestamp,
    /// The offer to send; `None` when the customer is in the holdout, so
    /// that a consumer that ignores `holdout` still sends nothing.
    pub offer: Option<String>,
    /// The offer whose control group the customer is in (when `holdout`),
    /// to measure uplift against.
    pub holdout_offer: Option<String>,
    /// `None` when holdout.
    pub channel: Option<Channel>,
    pub scores: OfferScores,
    /// Personalised products, best first (empty when holdout).
    pub products: Vec<String>,
    pub holdout: bool,
    pub cause: Cause,
    pub rules_version: String,
}

/// Serializable copy of [`Scores`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferScores {
    pub propensity: f64,
    pub context_weight: f64,
    pub value: f64,
    pub lever: f64,
    /// `propensity × context_weight × value × lever`.
    pub total: f64,
}

impl From<Scores> for OfferScores {
    fn from(s: Scores) -> Self {
        OfferScores {
            propensity: s.propensity,
            context_weight: s.context_weight,
            value: s.value,
            lever: s.lever,
            total: s.total,
        }
    }
}

/// Everything about this customer was erased; downstream systems should
/// erase it too. The store deletes the state and timers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    pub id: String,
    pub customer: String,
    pub time: Timestamp,
}

/// One output record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    SegmentChanged(SegmentChanged),
    NextBestOffer(NextBestOffer),
    Forgotten(Forgotten),
}

impl Output {
    /// The output's deterministic id: the idempotency key downstream.
    pub fn id(&self) -> &str {
        match self {
            Output::SegmentChanged(o) => &o.id,
            Output::NextBestOffer(o) => &o.id,
            Output::Forgotten(o) => &o.id,
        }
    }
}

/// The result of [`apply`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub outputs: Vec<Output>,
    /// When to fire this customer's timer next (replaces any earlier one);
    /// `None`: no timer needed.
    pub next_timer: Option<Timestamp>,
    /// The state was erased: delete it from the store instead of writing it.
    pub forget: bool,
    /// The event id was seen recently for this customer: nothing was done.
    pub duplicate: bool,
    /// Offers considered at a decision point and why each lost, as indexes
    /// into [`RuleSet::offers`] (for logs, metrics and `cohort inspect`);
    /// empty when there was no decision point.
    pub rejected: Vec<(usize, Rejection)>,
}

/// Decides on one input for one customer; see the module docs. `state` is
/// updated in place; a fresh customer starts from `CustomerState::default()`.
/// [`Decision::next_timer`] is computed for every input.
pub fn apply(state: &mut CustomerState, input: Input<'_>, ctx: &Context<'_>) -> Decision {
    apply_inner(state, input, ctx, true)
}

/// The timer to store for this customer as its state stands: the next
/// instant a rule could flip or the cart becomes abandoned, after the
/// customer's last decision instant. [`apply`] already returns it; this is
/// for states loaded from the store (after a rules change, for `inspect`).
/// `None`: no timer (also for a customer never evaluated).
pub fn customer_timer(state: &CustomerState, ctx: &Context<'_>) -> Option<Timestamp> {
    let t = state.evaluated_at?;
    next_timer(state, ctx.engine, t, None)
}

fn apply_inner(state: &mut CustomerState, input: Input<'_>, ctx: &Context<'_>, timer: bool) -> Decision {
    let engine = ctx.engine;
    let customer = input.customer();
    // Hashed only when an output is actually produced (most inputs produce
    // none). Read before the input changes the state: the incarnation a
    // decision is made in is the one its state had.
    let incarnation = state.incarnation;
    let identity = || match input {
        Input::Event(_, origin) => origin.identity(),
        Input::Timer { due, .. } => {
            incarnated(StableHasher::new().str("timer").str(customer).u64(due.as_millis() as u64), incarnation)
        }
        Input::RulesChanged { at, switch, .. } => incarnated(
            StableHasher::new()
                .str("rules")
                .str(customer)
                .str(engine.rules.version())
                .u64(at.as_millis() as u64)
                .u64(switch),
            incarnation,
        ),
    };
    // The identity's hash state, computed once for all of this input's outputs.
    let identity_state = std::cell::OnceCell::new();
    let out_id = |k: u64| identity_state.get_or_init(identity).u64(k).finish128();
    let cause_kind = match input {
        Input::Event(..) => CauseKind::Event,
        Input::Timer { .. } => CauseKind::Timer,
        Input::RulesChanged { .. } => CauseKind::RulesChanged,
    };
    let event_id = match input {
        Input::Event(e, _) => Some(e.id.as_str()),
        _ => None,
    };
    let mut decision = Decision::default();

    // A timer or rules change for a customer never evaluated (or forgotten
    // since the timer was set) has nothing to decide on, and must not
    // resurrect a forgotten customer.
    if !matches!(input, Input::Event(..)) && state.evaluated_at.is_none() {
        return decision;
    }

    let mut recorded = Recorded::default();
    if let Input::Event(ev, origin) = input {
        if matches!(ev.kind, EventKind::Forget) {
            *state = CustomerState::default();
            decision.forget = true;
            decision.outputs.push(Output::Forgotten(Forgotten {
                id: hex128(out_id(0)),
                customer: customer.to_owned(),
                time: ev.time,
            }));
            return decision;
        }
        std::hint::black_box(state.touch_parts());
        if state.seen_before(fast64(ev.id.as_bytes())) {
            decision.duplicate = true;
            let t = state.evaluated_at.unwrap_or(ev.time);
            if timer {
                decision.next_timer = next_timer(state, engine, t, None);
            }
            return decision;
        }
        if state.incarnation == 0 {
            state.incarnation = origin.incarnation();
        }
        recorded = state.record(ev, &engine.state_settings);
    }

    let t = state.evaluated_at.map_or(input.time(), |e| e.max(input.time()));
    state.evaluated_at = Some(t);

    // Segments.
    let mut new_set = SegmentSet::new();
    // Counters do not change during the evaluation: one pass over the day
    // buckets serves every view below.
    let sums = state.counters.sums_for(t, engine.rules.windows_read());
    let view = CustomerView::with_sums_ref(state, &engine.state_settings, &sums, t);
    // One pass gives both the membership and the next rule flip; the flip is
    // recomputed below only if a send changes what offers_sent() counts.
    let flip = if timer {
        engine.rules.evaluate_with_next_flip(&view, t, &mut new_set)
    } else {
        engine.rules.evaluate_segments(&view, t, &mut new_set);
        None
    };
    let mut old_set = SegmentSet::new();
    let mut unknown_exited: Vec<String> = Vec::new();
    if state.segment_bits.rules == engine.fingerprint {
        old_set = state.segment_bits.set;
    } else {
        for m in &state.segments {
            match engine.seg_index.get(&m.segment) {
                Some(&i) => old_set.insert(usize::from(i)),
                None => unknown_exited.push(m.segment.clone()),
            }
        }
    }
    state.segment_bits = SegmentBits { rules: engine.fingerprint, set: new_set };
    let entered_set = new_set.difference(&old_set);
    if new_set != old_set || !unknown_exited.is_empty() {
        let id = hex128(out_id(decision.outputs.len() as u64));
        let cause = Cause { kind: cause_kind, event_id: event_id.map(str::to_owned), trigger: None };
        let changed = segments_changed(state, engine, &old_set, &new_set, unknown_exited, id, customer, t, cause);
        decision.outputs.push(Output::SegmentChanged(changed));
    }

    // Decision points. A rules change re-draws the segments, and a customer
    // entering one because the rules moved is a moment to send an offer
    // only for offers that list the `rules_changed` trigger (docs/rules.md,
    // "Changing the rules"); a cart it finds abandoned is left for the
    // timer set below, which fires right after.
    let rules_change = matches!(input, Input::RulesChanged { .. });
    let cart_abandoned = match state.cart.last_added {
        Some(last) if !rules_change && !state.cart.lines.is_empty() && !state.cart.abandon_fired => {
            t >= last + engine.settings.cart_abandon_after
        }
        _ => false,
    };
    if cart_abandoned {
        state.cart.abandon_fired = true;
    }
    let points = Points {
        entered: entered_set,
        rules_change,
        cart_abandoned,
        purchase: recorded.purchase,
        session: recorded.new_session,
    };
    let sends_before = state.offers.len();
    let last_send_before = state.offers.last().map(|s| s.decision);
    if points.any() {
        decide_offer(state, customer, &points, &new_set, t, &sums, ctx, &out_id, cause_kind, event_id, &mut decision);
    }

    if timer {
        let sent = state.offers.len() != sends_before || state.offers.last().map(|s| s.decision) != last_send_before;
        decision.next_timer =
            if sent { next_timer(state, engine, t, Some(&sums)) } else { earliest(flip, cart_timer(state, engine, t)) };
    }
    decision
}

/// Updates the membership list for a change from `old_set` to `new_set`
/// (plus `unknown_exited`: members the rules no longer define) and builds
/// its output. Out of line: most inputs change no segment, and keeping this
/// code apart keeps the common path's code small.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn segments_changed(
    state: &mut CustomerState,
    engine: &Engine,
    old_set: &SegmentSet,
    new_set: &SegmentSet,
    mut unknown_exited: Vec<String>,
    id: String,
    customer: &str,
    t: Timestamp,
    cause: Cause,
) -> SegmentChanged {
    let segs = engine.rules.segments();
    let mut entered: Vec<String> = new_set.difference(old_set).iter().map(|i| segs[i].name.clone()).collect();
    let mut exited: Vec<String> = old_set.difference(new_set).iter().map(|i| segs[i].name.clone()).collect();
    exited.append(&mut unknown_exited);
    entered.sort();
    exited.sort();
    // Kept members in their order, then the entered ones, stably sorted
    // by name (the list is kept sorted, so this is a merge).
    state.segments.retain(|m| engine.seg_index.get(&m.segment).is_some_and(|&i| new_set.contains(usize::from(i))));
    state.segments.extend(entered.iter().map(|name| Membership { segment: name.clone(), since: t }));
    state.segments.sort_by(|a, b| a.segment.cmp(&b.segment));
    SegmentChanged {
        id,
        customer: customer.to_owned(),
        time: t,
        entered,
        exited,
        segments: state.segments.iter().map(|m| m.segment.clone()).collect(),
        cause,
        rules_version: engine.rules.version().to_owned(),
    }
}

/// The decision points of one evaluation.
struct Points {
    /// Segments entered; by a rules change if `rules_change`.
    entered: SegmentSet,
    rules_change: bool,
    cart_abandoned: bool,
    purchase: bool,
    session: bool,
}

impl Points {
    fn any(&self) -> bool {
        !self.entered.is_empty() || self.cart_abandoned || self.purchase || self.session
    }

    /// The context weight and decision point of `trigger` if it matches.
    fn matches(&self, trigger: &Trigger, w: &ContextWeights) -> Option<(f64, Point)> {
        match trigger {
            // The first segment of `set` that was entered.
            Trigger::SegmentEntered(set) if !self.rules_change => {
                let hit = set.intersection(&self.entered).first()?;
                Some((w.segment_entered, Point::Entered(hit)))
            }
            Trigger::RulesChanged(set) if self.rules_change => {
                let hit = set.intersection(&self.entered).first()?;
                Some((w.segment_entered, Point::RulesChanged(hit)))
            }
            Trigger::CartAbandoned if self.cart_abandoned => Some((w.cart_abandoned, Point::CartAbandoned)),
            Trigger::Purchase if self.purchase => Some((w.purchase, Point::Purchase)),
            Trigger::SessionStart if self.session => Some((w.session_start, Point::SessionStart)),
            _ => None,
        }
    }
}

/// One decision point, labelled only for the winning offer.
#[derive(Clone, Copy, Debug)]
enum Point {
    Entered(usize),
    RulesChanged(usize),
    CartAbandoned,
    Purchase,
    SessionStart,
}

impl Point {
    fn label(self, rules: &RuleSet) -> String {
        match self {
            Point::Entered(i) => {
                format!("segment_entered:{}", rules.segments().get(i).map_or("", |s| s.name.as_str()))
            }
            Point::RulesChanged(i) => {
                format!("rules_changed:{}", rules.segments().get(i).map_or("", |s| s.name.as_str()))
            }
            Point::CartAbandoned => "cart_abandoned".to_owned(),
            Point::Purchase => "purchase".to_owned(),
            Point::SessionStart => "session_start".to_owned(),
        }
    }
}

pub(crate) fn channel_of(c: rules::Channel) -> Channel {
    match c {
        rules::Channel::Email => Channel::Email,
        rules::Channel::Sms => Channel::Sms,
        rules::Channel::Push => Channel::Push,
        rules::Channel::Web => Channel::Web,
    }
}

/// Out of line: few inputs are decision points.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn decide_offer(
    state: &mut CustomerState,
    customer: &str,
    points: &Points,
    segments: &SegmentSet,
    t: Timestamp,
    sums: &WindowSums,
    ctx: &Context<'_>,
    out_id: &dyn Fn(u64) -> u128,
    cause_kind: CauseKind,
    event_id: Option<&str>,
    decision: &mut Decision,
) {
    let engine = ctx.engine;
    let rules = &engine.rules;
    let weights = &engine.settings.context_weights;
    // Offers whose triggers match, with their best context weight and point.
    let mut matched: Vec<(usize, f64, Point, [Channel; 4], usize)> = Vec::new();
    {
        let view = CustomerView::with_sums_ref(state, &engine.state_settings, sums, t);
        for (i, offer) in rules.offers().iter().enumerate() {
            let best = offer.triggers.iter().filter_map(|tr| points.matches(tr, weights)).fold(
                None::<(f64, Point)>,
                |acc, m| match acc {
                    Some(a) if a.0 >= m.0 => Some(a),
                    _ => Some(m),
                },
            );
            let Some((weight, point)) = best else { continue };
            if !rules.offer_eligible(i, &view, segments, t) {
                continue;
            }
            let mut channels = [Channel::Other; 4];
            let n = offer.channels.len().min(4);
            for (slot, c) in channels.iter_mut().zip(&offer.channels) {
                *slot = channel_of(*c);
            }
            matched.push((i, weight, point, channels, n));
        }
    }
    if matched.is_empty() {
        return;
    }
    let candidates = matched.iter().map(|(i, weight, _, channels, n)| {
        let o = &rules.offers()[*i];
        Candidate {
            key: *i,
            id: &o.id,
            value: o.value,
            lever: o.lever,
            channels: &channels[..*n],
            cap: o.cap.map(|c| (c.max, c.per)),
            cooldown: o.cooldown,
            holdout: o.holdout,
            prior: (o.prior.alpha, o.prior.beta),
            context_weight: *weight,
        }
    });
    let choice = choose(state, customer, candidates, ctx.propensity, t);
    decision.rejected = choice.rejected;
    let Some(chosen) = choice.chosen else { return };
    let trigger = matched.iter().find(|m| m.0 == chosen.key).map(|m| m.2.label(rules));
    let id = out_id(decision.outputs.len() as u64);
    let products = if chosen.holdout {
        Vec::new()
    } else {
        recommend(state, &engine.state_settings, ctx.popularity, t, engine.settings.products_per_offer)
    };
    state.record_send(OfferSend {
        decision: id,
        offer: chosen.offer.clone(),
        time: t,
        channel: chosen.channel,
        holdout: chosen.holdout,
        outcomes: 0,
    });
    decision.outputs.push(Output::NextBestOffer(NextBestOffer {
        id: hex128(id),
        customer: customer.to_owned(),
        time: t,
        offer: if chosen.holdout { None } else { Some(chosen.offer.clone()) },
        holdout_offer: if chosen.holdout { Some(chosen.offer) } else { None },
        channel: if chosen.holdout { None } else { Some(chosen.channel) },
        scores: chosen.scores.into(),
        products,
        holdout: chosen.holdout,
        cause: Cause { kind: cause_kind, event_id: event_id.map(str::to_owned), trigger },
        rules_version: rules.version().to_owned(),
    }));
}

/// The next instant anything about this customer can change by time alone:
/// a rule flipping, or the cart becoming abandoned.
fn next_timer(state: &CustomerState, engine: &Engine, t: Timestamp, sums: Option<&WindowSums>) -> Option<Timestamp> {
    let owned;
    let sums = match sums {
        Some(s) => s,
        None => {
            owned = state.counters.sums_for(t, engine.rules.windows_read());
            &owned
        }
    };
    let view = CustomerView::with_sums_ref(state, &engine.state_settings, sums, t);
    earliest(engine.rules.next_flip(&view, t), cart_timer(state, engine, t))
}

/// When a non-empty cart that has not fired yet becomes abandoned.
fn cart_timer(state: &CustomerState, engine: &Engine, t: Timestamp) -> Option<Timestamp> {
    match state.cart.last_added {
        Some(last) if !state.cart.lines.is_empty() && !state.cart.abandon_fired => {
            Some((last + engine.settings.cart_abandon_after).max(Timestamp(t.as_millis().saturating_add(1))))
        }
        _ => None,
    }
}

/// A timer's or rules change's identity in `incarnation`. Incarnation 0
/// (a state stored before incarnations existed, not touched by an event
/// since) keeps the identity ids had then, so such a customer's pending
/// timers keep their ids across the upgrade.
fn incarnated(h: StableHasher, incarnation: u64) -> StableHasher {
    if incarnation == 0 {
        h
    } else {
        h.str("incarnation").u64(incarnation)
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Click, ClickKind};

    const RULES: &str = "version: 1
segments:
  - name: visitor
    when: sessions.lifetime > 0
  - name: browsing_now
    when: since(last_seen) < 30m
";

    fn engine() -> Engine {
        Engine::new(RuleSet::from_yaml("t.yaml", RULES).expect("test rules load"), EngineSettings::default())
    }

    fn origin(offset: i64) -> Origin<'static> {
        Origin { topic: "clickstream", partition: 0, offset }
    }

    fn click(id: &str, t: i64) -> Event {
        Event {
            id: id.into(),
            customer: "c".into(),
            time: Timestamp(t),
            kind: EventKind::Click(Click::new(ClickKind::PageView)),
        }
    }

    #[test]
    fn rules_change_exits_segments_the_rules_no_longer_define() {
        let e = engine();
        let tables = Tables::default();
        let mut st = CustomerState::default();
        st.segments.push(Membership { segment: "retired".into(), since: Timestamp(0) });
        st.evaluated_at = Some(Timestamp(0));
        let d =
            apply(&mut st, Input::RulesChanged { customer: "c", at: Timestamp(1_000), switch: 1 }, &tables.context(&e));
        let Some(Output::SegmentChanged(s)) = d.outputs.first() else { panic!("expected a segment change") };
        assert_eq!(s.exited, vec!["retired".to_owned()]);
        assert!(s.entered.is_empty() && s.segments.is_empty());
        assert_eq!(s.cause.kind, CauseKind::RulesChanged);
        assert!(st.segments.is_empty());
    }

    #[test]
    fn timer_flips_and_late_events_do_not_go_back_in_time() {
        let e = engine();
        let tables = Tables::default();
        let ctx = tables.context(&e);
        let mut st = CustomerState::default();
        let t0 = 1_700_000_000_000;
        let d = apply(&mut st, Input::Event(&click("a", t0), origin(0)), &ctx);
        assert_eq!(d.next_timer, Some(Timestamp(t0 + 30 * 60_000)));
        let d = apply(&mut st, Input::Timer { customer: "c", due: Timestamp(t0 + 30 * 60_000) }, &ctx);
        let Some(Output::SegmentChanged(s)) = d.outputs.first() else { panic!("expected a segment change") };
        assert_eq!(s.exited, vec!["browsing_now".to_owned()]);
        assert_eq!(s.time, Timestamp(t0 + 30 * 60_000));
        // A late click is folded in but evaluated at the customer's latest
        // instant: it was 29 minutes ago then, so the customer is browsing
        // again until a minute later.
        let d = apply(&mut st, Input::Event(&click("late", t0 + 60_000), origin(1)), &ctx);
        let Some(Output::SegmentChanged(s)) = d.outputs.first() else { panic!("expected a segment change") };
        assert_eq!(s.entered, vec!["browsing_now".to_owned()]);
        assert_eq!(s.time, Timestamp(t0 + 30 * 60_000));
        assert_eq!(d.next_timer, Some(Timestamp(t0 + 31 * 60_000)));
        assert_eq!(st.evaluated_at, Some(Timestamp(t0 + 30 * 60_000)));
    }

    #[test]
    fn forget_erases_and_reports() {
        let e = engine();
        let tables = Tables::default();
        let ctx = tables.context(&e);
        let mut st = CustomerState::default();
        apply(&mut st, Input::Event(&click("a", 1_700_000_000_000), origin(0)), &ctx);
        let forget =
            Event { id: "f".into(), customer: "c".into(), time: Timestamp(1_700_000_100_000), kind: EventKind::Forget };
        let d = apply(&mut st, Input::Event(&forget, origin(1)), &ctx);
        assert!(d.forget && d.next_timer.is_none());
        assert!(matches!(d.outputs.as_slice(), [Output::Forgotten(_)]));
        assert!(st.is_empty());
        // A stale timer for the forgotten customer does nothing.
        let d = apply(&mut st, Input::Timer { customer: "c", due: Timestamp(1_700_000_200_000) }, &ctx);
        assert_eq!(d, Decision::default());
        assert!(st.is_empty());
    }
}
