//! One customer's state: everything rules and offers need, bounded in size.
//!
//! [`CustomerState`] is what the store persists (see [`crate::encode`]) and
//! what [`CustomerState::record`] folds events into. It is plain data: no
//! clock, no rules. The engine ([`crate::engine`]) decides when to evaluate
//! it; [`crate::view`] exposes it to rules.
//!
//! Bounds (so a customer with 100,000 events a year still encodes in a few
//! kilobytes): windowed counters keep the newest 128 contributions of each
//! counter with their exact times and older ones per day, for 365 days
//! ([`crate::window`]); text fields are cut at [`MAX_TEXT`] bytes; the cart
//! keeps [`MAX_CART_LINES`] lines, affinities the [`MAX_CATEGORIES`] strongest
//! categories, offer history the last [`MAX_OFFER_SENDS`] sends within a year,
//! and purchased products the last [`MAX_PURCHASED`].
//!
//! Normalisation (docs/rules.md, "Text values"): categories, interests,
//! gender, income band, education and loyalty tier are trimmed and
//! lower-cased; countries trimmed and upper-cased; region and city trimmed;
//! all cut at [`MAX_TEXT`] bytes. The rules compiler normalises literals
//! compared with these fields the same way, so comparisons ignore case and
//! surrounding whitespace.

use crate::event::{Channel, Click, ClickKind, ConsentUpdate, Date, Event, EventKind, Geo, ProfileUpdate, Purchase};
use crate::hash::fast64;
use crate::rules::SegmentSet;
use crate::time::{Duration, Timestamp};
use crate::window::{Counter, Windows};
use std::borrow::Cow;

/// Longest text kept in state, in bytes (cut at a character boundary).
pub const MAX_TEXT: usize = 64;
/// Cart lines kept; adding to a full cart replaces nothing and is ignored for
/// the line list (the value and last-add time still update).
pub const MAX_CART_LINES: usize = 32;
/// Categories with a decayed affinity kept (the weakest is dropped).
pub const MAX_CATEGORIES: usize = 16;
/// Offer sends kept for caps and cooldowns (the oldest is dropped).
pub const MAX_OFFER_SENDS: usize = 32;
/// Offer sends older than this are dropped: no cap or cooldown may be longer.
pub const OFFER_HISTORY_HORIZON: Duration = Duration::from_days(365);
/// Products remembered as bought, so recommendations skip them.
pub const MAX_PURCHASED: usize = 32;
/// Declared interests kept.
pub const MAX_INTERESTS: usize = 16;
/// Recent event id hashes kept for duplicate suppression.
pub const RECENT_EVENTS: usize = 16;

/// Settings that change how events are folded into state. They come from the
/// rules file (`settings:`) and the worker's config; see
/// [`crate::engine::Context`].
#[derive(Clone, Debug, PartialEq)]
pub struct StateSettings {
    /// A click or purchase more than this after the previous one starts a new
    /// session. 30 minutes is the web-analytics convention (Google Analytics).
    pub session_gap: Duration,
    /// Half-life of category affinity weights.
    pub affinity_half_life: Duration,
    /// Affinity denominators are at least this much weight, so that a single
    /// product view does not make a customer 100 % "keto".
    pub affinity_min_evidence: f64,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            session_gap: Duration::from_mins(30),
            affinity_half_life: Duration::from_days(30),
            affinity_min_evidence: 5.0,
        }
    }
}

/// Affinity weight of one interaction with a category. Stronger intent
/// weighs more: a purchase line is worth five product views.
pub fn affinity_weight(kind: ClickKind) -> f64 {
    match kind {
        ClickKind::PageView | ClickKind::Search => 0.5,
        ClickKind::ProductView => 1.0,
        ClickKind::AddToCart => 3.0,
        ClickKind::RemoveFromCart | ClickKind::CheckoutStarted => 0.0,
    }
}

/// Affinity weight of one purchased line.
pub const PURCHASE_AFFINITY_WEIGHT: f64 = 5.0;

/// Marketing consent as last stated; `None` is unknown, which counts as no.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consent {
    pub email: Option<bool>,
    pub sms: Option<bool>,
    pub push: Option<bool>,
    pub web: Option<bool>,
}

impl Consent {
    /// Whether we may contact the customer on `channel`. Only explicit
    /// consent counts. Channels without a consent flag (app, store, other)
    /// are not marketing channels and are never allowed.
    pub fn allows(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email == Some(true),
            Channel::Sms => self.sms == Some(true),
            Channel::Push => self.push == Some(true),
            Channel::Web => self.web == Some(true),
            Channel::App | Channel::Store | Channel::Other => false,
        }
    }

    fn apply(&mut self, u: &ConsentUpdate) {
        self.email = u.email.or(self.email);
        self.sms = u.sms.or(self.sms);
        self.push = u.push.or(self.push);
        self.web = u.web.or(self.web);
    }
}

/// Profile attributes from the CRM (and location from clicks when the CRM
/// never stated one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub birth_date: Option<Date>,
    pub declared_age: Option<u32>,
    pub gender: Option<String>,
    pub income_band: Option<String>,
    pub education: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub interests: Vec<String>,
    pub consent: Consent,
    pub loyalty_tier: Option<String>,
}

/// One cart line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CartLine {
    pub product_id: String,
    pub category: Option<String>,
    pub quantity: u32,
    /// Unit price in minor units (cents).
    pub unit_price_cents: i64,
}

/// The current cart. Emptied by a purchase (checkout converts the cart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cart {
    pub lines: Vec<CartLine>,
    pub last_added: Option<Timestamp>,
    /// Whether the engine already fired `cart_abandoned` for this cart since
    /// its last add (so one abandoned cart is one decision point).
    pub abandon_fired: bool,
}

impl Cart {
    /// Units in the cart.
    pub fn items(&self) -> u64 {
        self.lines.iter().map(|l| u64::from(l.quantity)).sum()
    }
    /// Cart value in minor units, saturating (like the lines' products) so
    /// that absurd prices cannot make an evaluation panic.
    pub fn value_cents(&self) -> i64 {
        self.lines
            .iter()
            .fold(0, |acc: i64, l| acc.saturating_add(l.unit_price_cents.saturating_mul(i64::from(l.quantity))))
    }
}

/// Decayed category affinities. Weights are stored as of `as_of`; the
/// affinity of category `c` at `t >= as_of` is
/// `w_c * 2^(-(t - as_of) / half_life) / max(total, min_evidence)`,
/// i.e. the category's share of the customer's decayed interest at their
/// last interaction, decaying exactly exponentially since. It is in `[0, 1]`
/// because `w_c <= total`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Affinities {
    pub as_of: Timestamp,
    /// Total decayed weight as of `as_of`, including dropped categories.
    pub total: f64,
    /// The strongest categories, at most [`MAX_CATEGORIES`], in no
    /// particular order: `fast64` of the name and the weight as of `as_of`.
    /// Rules ask for affinities by name several times per event and every
    /// event decays all weights, so both touch this one small array and
    /// never the names.
    entries: Vec<(u64, f64)>,
    /// The names, parallel to `entries`.
    names: Vec<String>,
}

impl Affinities {
    /// Built from category names and their weights as of `as_of`.
    pub fn from_parts(as_of: Timestamp, total: f64, weights: Vec<(String, f64)>) -> Affinities {
        let entries = weights.iter().map(|(c, w)| (fast64(c.as_bytes()), *w)).collect();
        let names = weights.into_iter().map(|(c, _)| c).collect();
        Affinities { as_of, total, entries, names }
    }

    /// For the decoder, which refills them in place: `entries[i]` must be
    /// `(fast64(names[i]), weight)`.
    pub(crate) fn parts_mut(&mut self) -> (&mut Vec<(u64, f64)>, &mut Vec<String>) {
        (&mut self.entries, &mut self.names)
    }

    /// Categories and their weights as of [`Affinities::as_of`].
    pub fn weights(&self) -> impl ExactSizeIterator<Item = (&str, f64)> + '_ {
        self.names.iter().zip(&self.entries).map(|(c, (_, w))| (c.as_str(), *w))
    }

    /// Finds a category by its 64-bit name hash alone: with at most
    /// [`MAX_CATEGORIES`] names a collision has a probability around 1e-17,
    /// and not touching the names avoids a cache miss per lookup.
    fn position_hashed(&self, h: u64) -> Option<usize> {
        self.entries.iter().position(|(x, _)| *x == h)
    }

    fn decay_factor(dt: Duration, half_life: Duration) -> f64 {
        if half_life.as_millis() <= 0 {
            return if dt.as_millis() > 0 { 0.0 } else { 1.0 };
        }
        (-(dt.as_millis() as f64) / half_life.as_millis() as f64).exp2()
    }

    /// Adds `weight` for `category` at `time`.
    pub fn add(&mut self, category: &str, weight: f64, time: Timestamp, half_life: Duration) {
        if weight <= 0.0 || category.is_empty() {
            return;
        }
        let w = if self.entries.is_empty() && self.total == 0.0 {
            self.as_of = time;
            weight
        } else if time > self.as_of {
            let f = Self::decay_factor(time.since(self.as_of), half_life);
            for (_, x) in &mut self.entries {
                *x *= f;
            }
            self.total *= f;
            self.as_of = time;
            weight
        } else {
            // A late event: decay its weight to `as_of` instead of moving back.
            weight * Self::decay_factor(self.as_of.since(time), half_life)
        };
        self.total += w;
        let h = fast64(category.as_bytes());
        if let Some(i) = self.position_hashed(h) {
            self.entries[i].1 += w;
            return;
        }
        if self.entries.len() < MAX_CATEGORIES {
            self.entries.push((h, w));
            self.names.push(category.to_owned());
            return;
        }
        // Full: replace the weakest if the newcomer is stronger.
        let mut weakest = 0;
        for (i, (_, x)) in self.entries.iter().enumerate() {
            if *x < self.entries[weakest].1 {
                weakest = i;
            }
        }
        if self.entries[weakest].1 < w {
            self.entries[weakest] = (h, w);
            self.names[weakest] = category.to_owned();
        }
    }

    /// The normalised affinity for `category` at `now` (see the type docs).
    pub fn get(&self, category: &str, now: Timestamp, settings: &StateSettings) -> f64 {
        self.get_hashed(fast64(category.as_bytes()), now, settings)
    }

    /// [`Affinities::get`] by the category's [`fast64`] hash.
    pub fn get_hashed(&self, hash: u64, now: Timestamp, settings: &StateSettings) -> f64 {
        let Some(i) = self.position_hashed(hash) else { return 0.0 };
        self.normalise(self.entries[i].1, now, settings)
    }

    fn normalise(&self, w: f64, now: Timestamp, settings: &StateSettings) -> f64 {
        (w * self.scale(now, settings)).clamp(0.0, 1.0)
    }

    /// The factor that turns a stored weight into the affinity at `now`:
    /// the decay since `as_of` over the normalising denominator.
    pub fn scale(&self, now: Timestamp, settings: &StateSettings) -> f64 {
        let denom = self.total.max(settings.affinity_min_evidence);
        if denom <= 0.0 {
            return 0.0;
        }
        let f =
            if now > self.as_of { Self::decay_factor(now.since(self.as_of), settings.affinity_half_life) } else { 1.0 };
        f / denom
    }

    /// The affinity for `category` given [`Affinities::scale`] at some instant.
    pub fn get_scaled(&self, category: &str, scale: f64) -> f64 {
        self.get_scaled_hashed(fast64(category.as_bytes()), scale)
    }

    /// [`Affinities::get_scaled`] by the category's [`fast64`] hash.
    pub fn get_scaled_hashed(&self, hash: u64, scale: f64) -> f64 {
        match self.position_hashed(hash) {
            Some(i) => (self.entries[i].1 * scale).clamp(0.0, 1.0),
            None => 0.0,
        }
    }

    /// Categories by affinity at `now`, strongest first (ties by name).
    pub fn ranked(&self, now: Timestamp, settings: &StateSettings) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = self.weights().map(|(c, w)| (c, self.normalise(w, now, settings))).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v
    }
}

/// Outcome flags of one send (bit per [`crate::event::Outcome`]).
pub mod outcome_bits {
    pub const DELIVERED: u8 = 1;
    pub const OPENED: u8 = 2;
    pub const CLICKED: u8 = 4;
    pub const CONVERTED: u8 = 8;
    pub const DISMISSED: u8 = 16;
}

/// One next-best-offer decision that named an offer (sent or held out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferSend {
    /// The decision's output id (128-bit), to match outcomes to sends.
    pub decision: u128,
    pub offer: String,
    pub time: Timestamp,
    pub channel: Channel,
    /// Held-out decisions count towards caps and cooldowns like real sends,
    /// so the control group is decided on the same schedule as the treated.
    pub holdout: bool,
    /// [`outcome_bits`] seen for this send.
    pub outcomes: u8,
}

/// A segment the customer is in, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub segment: String,
    pub since: Timestamp,
}

/// Everything cohort knows about one customer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomerState {
    pub profile: Profile,
    /// First and last click or purchase.
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// Orders, spend, page views, product views, sessions: exact windows
    /// ([`crate::window`]).
    pub counters: Windows,
    pub first_purchase: Option<Timestamp>,
    pub last_purchase: Option<Timestamp>,
    pub cart: Cart,
    pub affinities: Affinities,
    /// Recently bought products, newest last, for "not bought yet" filters.
    pub purchased: Vec<String>,
    pub offers: Vec<OfferSend>,
    /// Current segments, sorted by name.
    pub segments: Vec<Membership>,
    /// The same membership as indexes into the rules that computed it,
    /// tagged with a fingerprint of those rules, so the engine can skip name
    /// lookups on every event. Ignored (and rebuilt from `segments`) when the
    /// fingerprint is not the current rules'.
    pub segment_bits: SegmentBits,
    /// The latest instant this customer was evaluated at; evaluation never
    /// goes back in time, so late events cannot make segments flicker.
    pub evaluated_at: Option<Timestamp>,
    /// Hashes of the last few event ids.
    pub recent_events: RecentEvents,
    /// Which record started this state: a hash of the input topic,
    /// partition and offset of the customer's first event (or first after
    /// a forget), never 0 once set; 0 for a state stored before format 2
    /// and not touched by an event since. Timer and rules-change output ids
    /// include it, so a customer forgotten and seen again never repeats an
    /// id of its previous life ([`crate::engine`], "Output ids").
    pub incarnation: u64,
}

/// The last [`RECENT_EVENTS`] event id hashes, inline (no heap allocation:
/// it is read on every event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentEvents {
    ids: [u64; RECENT_EVENTS],
    len: u8,
}

impl RecentEvents {
    /// The hashes, oldest first.
    pub fn as_slice(&self) -> &[u64] {
        &self.ids[..usize::from(self.len)]
    }

    /// Whether `h` is among them.
    pub fn contains(&self, h: u64) -> bool {
        self.as_slice().contains(&h)
    }

    /// Remembers `h`, forgetting the oldest when full.
    pub fn push(&mut self, h: u64) {
        let n = usize::from(self.len);
        if n == RECENT_EVENTS {
            self.ids.copy_within(1.., 0);
            self.ids[RECENT_EVENTS - 1] = h;
        } else {
            self.ids[n] = h;
            self.len += 1;
        }
    }
}

/// See [`CustomerState::segment_bits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentBits {
    /// Fingerprint of the rules version the set is indexed by; 0: none.
    pub rules: u64,
    pub set: SegmentSet,
}

/// What folding one event changed, for decision triggers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub purchase: bool,
    pub cart_changed: bool,
    pub new_session: bool,
}

/// Cuts `s` to at most [`MAX_TEXT`] bytes at a character boundary.
pub fn bounded(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// [`norm_lower`] without allocating when `s` is already normalised (the
/// common case for categories on the hot path).
pub fn norm_lower_cow(s: &str) -> Cow<'_, str> {
    // Short, printable ASCII without spaces or capitals: nothing to trim,
    // cut or lower. One pass instead of trim, then the checks below.
    if s.len() <= MAX_TEXT && s.bytes().all(|b| matches!(b, 0x21..=0x7e) && !b.is_ascii_uppercase()) {
        return Cow::Borrowed(s);
    }
    let t = bounded(s.trim());
    if t.len() == s.len() && t.is_ascii() && !t.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(t)
    } else {
        Cow::Owned(norm_lower(s))
    }
}

/// Normalises a category-like token: trimmed, lower-case, bounded.
pub fn norm_lower(s: &str) -> String {
    let t = bounded(s.trim());
    if t.bytes().any(|b| b.is_ascii_uppercase()) || !t.is_ascii() {
        bounded(&t.to_lowercase()).to_owned()
    } else {
        t.to_owned()
    }
}

/// Normalises a country: trimmed, upper-case, bounded.
pub fn norm_upper(s: &str) -> String {
    bounded(&s.trim().to_uppercase()).to_owned()
}

/// Normalises a place name: trimmed, bounded, case kept.
pub fn norm_trim(s: &str) -> String {
    bounded(s.trim()).to_owned()
}

fn to_cents(x: f64) -> i64 {
    // `as` saturates; NaN becomes 0. Validation rejects both before here.
    (x * 100.0).round() as i64
}

impl CustomerState {
    /// Whether this customer has no data at all (e.g. after a forget).
    pub fn is_empty(&self) -> bool {
        *self == CustomerState::default()
    }

    /// Reads one word of each separately allocated part that folding and
    /// evaluating an event reads (affinity weights, cart lines, the
    /// membership list), so that their cache misses are in flight together
    /// instead of one after another as each is reached. Not the windows:
    /// an event adds to one counter and rules read a few, so touching all
    /// five would cost more misses than it hides. The value means nothing.
    pub(crate) fn touch_parts(&self) -> u64 {
        let weight = self.affinities.entries.last().map_or(0, |e| e.0);
        let line = self.cart.lines.first().map_or(0, |l| u64::from(l.quantity));
        let member = self.segments.first().map_or(0, |m| m.since.as_millis() as u64);
        weight ^ line ^ member
    }

    /// Whether `id_hash` was seen among the last [`RECENT_EVENTS`] events,
    /// and remembers it otherwise. The worker dedups by offset too; this
    /// catches producer retries that got new offsets.
    pub fn seen_before(&mut self, id_hash: u64) -> bool {
        if self.recent_events.contains(id_hash) {
            return true;
        }
        self.recent_events.push(id_hash);
        false
    }

    /// Folds one event into the state. Offer outcomes and forgets are the
    /// engine's business (they touch the propensity table and the store) and
    /// are ignored here, except that outcomes are marked on the send.
    pub fn record(&mut self, ev: &Event, settings: &StateSettings) -> Recorded {
        let mut r = Recorded::default();
        match &ev.kind {
            EventKind::Click(c) => {
                r.new_session = self.touch(ev.time, settings);
                self.record_click(c, ev.time, settings, &mut r);
            }
            EventKind::Purchase(p) => {
                r.new_session = self.touch(ev.time, settings);
                self.record_purchase(p, ev.time, settings);
                r.purchase = true;
                r.cart_changed = true;
            }
            EventKind::ProfileUpdate(p) => self.record_profile(p),
            EventKind::OfferOutcome(o) => {
                let bit = outcome_bit(o.outcome);
                if let Ok(decision) = u128::from_str_radix(&o.decision_id, 16) {
                    if let Some(s) = self.offers.iter_mut().find(|s| s.decision == decision) {
                        s.outcomes |= bit;
                    }
                }
            }
            EventKind::Forget => *self = CustomerState::default(),
        }
        r
    }

    /// Activity bookkeeping shared by clicks and purchases. Returns whether a
    /// new session started: the first activity, or one more than the
    /// session gap after the latest activity seen so far. Late events never
    /// start a session.
    fn touch(&mut self, t: Timestamp, settings: &StateSettings) -> bool {
        let new_session = match self.last_seen {
            None => true,
            Some(last) => t > last + settings.session_gap,
        };
        self.first_seen = Some(self.first_seen.map_or(t, |f| f.min(t)));
        self.last_seen = Some(self.last_seen.map_or(t, |l| l.max(t)));
        if new_session {
            self.counters.add(t, Counter::Sessions, 1);
        }
        new_session
    }

    fn record_click(&mut self, c: &Click, t: Timestamp, settings: &StateSettings, r: &mut Recorded) {
        match c.kind {
            ClickKind::PageView => self.counters.add(t, Counter::PageViews, 1),
            ClickKind::ProductView => self.counters.add(t, Counter::ProductViews, 1),
            ClickKind::AddToCart => {
                let qty = c.quantity.unwrap_or(1).max(0) as u32;
                if let Some(pid) = c.product_id.as_deref().and_then(known_id) {
                    let price = c.price.map(to_cents).unwrap_or(0);
                    if let Some(l) = self.cart.lines.iter_mut().find(|l| l.product_id == pid) {
                        l.quantity = l.quantity.saturating_add(qty);
                        if c.price.is_some() {
                            l.unit_price_cents = price;
                        }
                    } else if self.cart.lines.len() < MAX_CART_LINES {
                        self.cart.lines.push(CartLine {
                            product_id: pid.to_owned(),
                            category: known(&c.category, norm_lower),
                            quantity: qty,
                            unit_price_cents: price,
                        });
                    }
                    self.cart.lines.retain(|l| l.quantity > 0);
                }
                self.cart.last_added = Some(self.cart.last_added.map_or(t, |l| l.max(t)));
                self.cart.abandon_fired = false;
                r.cart_changed = true;
            }
            ClickKind::RemoveFromCart => {
                if let Some(pid) = c.product_id.as_deref().and_then(known_id) {
                    if let Some(l) = self.cart.lines.iter_mut().find(|l| l.product_id == pid) {
                        match c.quantity {
                            Some(q) => l.quantity = l.quantity.saturating_sub(q.max(0) as u32),
                            None => l.quantity = 0,
                        }
                    }
                    self.cart.lines.retain(|l| l.quantity > 0);
                    if self.cart.lines.is_empty() {
                        self.cart.last_added = None;
                    }
                    r.cart_changed = true;
                }
            }
            ClickKind::Search | ClickKind::CheckoutStarted => {}
        }
        if let Some(cat) = &c.category {
            let w = affinity_weight(c.kind);
            if w > 0.0 {
                let cat = norm_lower_cow(cat);
                self.affinities.add(&cat, w, t, settings.affinity_half_life);
            }
        }
        self.fill_location(&c.geo);
    }

    fn fill_location(&mut self, g: &Geo) {
        // The CRM is authoritative; clicks only fill what it never stated.
        let p = &mut self.profile;
        if p.country.is_none() && p.region.is_none() && p.city.is_none() {
            p.country = known(&g.country, norm_upper);
            p.region = known(&g.region, norm_trim);
            p.city = known(&g.city, norm_trim);
        }
    }

    // Out of line: rare next to clicks.
    #[inline(never)]
    fn record_purchase(&mut self, p: &Purchase, t: Timestamp, settings: &StateSettings) {
        self.counters.add(t, Counter::Orders, 1);
        self.counters.add(t, Counter::SpendCents, to_cents(p.total));
        self.first_purchase = Some(self.first_purchase.map_or(t, |f| f.min(t)));
        self.last_purchase = Some(self.last_purchase.map_or(t, |l| l.max(t)));
        for item in &p.items {
            if let Some(cat) = &item.category {
                let cat = norm_lower_cow(cat);
                self.affinities.add(&cat, PURCHASE_AFFINITY_WEIGHT, t, settings.affinity_half_life);
            }
            // A line without a product still counts in the order's total
            // and its category; there is just no product to remember.
            let Some(pid) = known_id(&item.product_id) else { continue };
            if let Some(i) = self.purchased.iter().position(|x| x == pid) {
                let x = self.purchased.remove(i);
                self.purchased.push(x);
            } else {
                if self.purchased.len() >= MAX_PURCHASED {
                    self.purchased.remove(0);
                }
                self.purchased.push(pid.to_owned());
            }
        }
        // Checkout converts the cart, whatever was in it.
        self.cart = Cart::default();
    }

    // Out of line: rare next to clicks.
    #[inline(never)]
    fn record_profile(&mut self, u: &ProfileUpdate) {
        let p = &mut self.profile;
        if let Some(d) = u.birth_date {
            p.birth_date = Some(d);
        }
        if let Some(a) = u.age {
            p.declared_age = Some(a);
        }
        set_opt(&mut p.gender, &u.gender, norm_lower);
        set_opt(&mut p.income_band, &u.income_band, norm_lower);
        set_opt(&mut p.education, &u.education, norm_lower);
        set_opt(&mut p.loyalty_tier, &u.loyalty_tier, norm_lower);
        if u.country.is_some() || u.region.is_some() || u.city.is_some() {
            // A stated location replaces one guessed from clicks as a whole;
            // a blank part of it is unknown.
            p.country = known(&u.country, norm_upper);
            p.region = known(&u.region, norm_trim);
            p.city = known(&u.city, norm_trim);
        }
        if let Some(list) = &u.interests {
            let mut v: Vec<String> = list.iter().map(|s| norm_lower(s)).filter(|s| !s.is_empty()).collect();
            v.sort();
            v.dedup();
            v.truncate(MAX_INTERESTS);
            p.interests = v;
        }
        p.consent.apply(&u.consent);
    }

    /// Records a decision that named an offer, dropping sends older than the
    /// history horizon and the oldest beyond [`MAX_OFFER_SENDS`].
    pub fn record_send(&mut self, send: OfferSend) {
        let horizon = send.time - OFFER_HISTORY_HORIZON;
        self.offers.retain(|s| s.time > horizon);
        if self.offers.len() >= MAX_OFFER_SENDS {
            self.offers.remove(0);
        }
        self.offers.push(send);
    }

    /// How many sends of `offer` fall in `(now - window, now]`.
    pub fn sends_in(&self, offer: &str, window: Duration, now: Timestamp) -> u32 {
        let from = now - window;
        self.offers.iter().filter(|s| s.offer == offer && s.time > from && s.time <= now).count() as u32
    }

    /// The latest send of `offer`, if any.
    pub fn last_send(&self, offer: &str) -> Option<Timestamp> {
        self.offers.iter().filter(|s| s.offer == offer).map(|s| s.time).max()
    }

    /// The latest send of any offer, if any.
    pub fn last_any_send(&self) -> Option<Timestamp> {
        self.offers.iter().map(|s| s.time).max()
    }

    /// Whether the customer is currently in `segment`.
    pub fn in_segment(&self, segment: &str) -> bool {
        self.segments.binary_search_by(|m| m.segment.as_str().cmp(segment)).is_ok()
    }
}

/// A profile label: null keeps what is known, a blank string clears it
/// (the only way an Avro or JSON producer can say "no longer known").
fn set_opt(slot: &mut Option<String>, v: &Option<String>, f: fn(&str) -> String) {
    if v.is_some() {
        *slot = known(v, f);
    }
}

/// A descriptive string (country, region, city, category, a profile label)
/// normalised by `f`; `None` when absent or blank, which cohort reads as
/// unknown rather than as a value that rules could match (docs/schemas.md,
/// "Empty strings").
fn known(v: &Option<String>, f: fn(&str) -> String) -> Option<String> {
    v.as_deref().map(f).filter(|s| !s.is_empty())
}

/// A product id as cohort keeps it (bounded, otherwise as sent); `None`
/// when absent, empty or only whitespace: such a line or click names no
/// product, so none enters the cart, the purchase history or the products
/// of an offer.
pub fn known_id(s: &str) -> Option<&str> {
    Some(bounded(s)).filter(|s| !s.trim().is_empty())
}

/// The outcome flag for an outcome.
pub fn outcome_bit(o: crate::event::Outcome) -> u8 {
    use crate::event::Outcome;
    match o {
        Outcome::Delivered => outcome_bits::DELIVERED,
        Outcome::Opened => outcome_bits::OPENED,
        Outcome::Clicked => outcome_bits::CLICKED,
        Outcome::Converted => outcome_bits::CONVERTED,
        Outcome::Dismissed => outcome_bits::DISMISSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Click, LineItem};
    use crate::rules::Window;

    fn click(t: i64, kind: ClickKind, cat: Option<&str>) -> Event {
        let mut c = Click::new(kind);
        c.category = cat.map(str::to_owned);
        c.product_id = Some("p1".into());
        c.price = Some(10.0);
        Event { id: format!("e{t}"), customer: "c".into(), time: Timestamp(t), kind: EventKind::Click(c) }
    }

    #[test]
    fn sessions_split_on_inactivity_gap() {
        let s = StateSettings::default();
        let mut st = CustomerState::default();
        let base = 1_700_000_000_000;
        for t in [0, 60_000, 29 * 60_000 + 60_000, 2 * 3_600_000, 2 * 3_600_000 + 1] {
            st.record(&click(base + t, ClickKind::PageView, None), &s);
        }
        assert_eq!(st.counters.lifetime(Counter::Sessions), 2);
        assert_eq!(st.counters.sum(Counter::PageViews, Window::D7, Timestamp(base + 3_600_000 * 3)), 5);
    }

    #[test]
    fn cart_fills_and_purchase_empties_it() {
        let s = StateSettings::default();
        let mut st = CustomerState::default();
        let mut e = click(1_700_000_000_000, ClickKind::AddToCart, Some("Keto"));
        if let EventKind::Click(c) = &mut e.kind {
            c.quantity = Some(2);
        }
        st.record(&e, &s);
        assert_eq!(st.cart.items(), 2);
        assert_eq!(st.cart.value_cents(), 2000);
        assert!(st.affinities.get("keto", Timestamp(1_700_000_000_000), &s) > 0.0);
        let p = Purchase {
            order_id: "o1".into(),
            items: vec![LineItem {
                product_id: "p1".into(),
                category: Some("keto".into()),
                quantity: 2,
                unit_price: 10.0,
            }],
            total: 20.0,
            currency: "EUR".into(),
            channel: None,
        };
        st.record(
            &Event {
                id: "p".into(),
                customer: "c".into(),
                time: Timestamp(1_700_000_100_000),
                kind: EventKind::Purchase(p),
            },
            &s,
        );
        assert_eq!(st.cart.items(), 0);
        assert_eq!(st.counters.lifetime(Counter::SpendCents), 2000);
        assert_eq!(st.purchased, vec!["p1".to_owned()]);
    }

    #[test]
    fn absurd_cart_prices_saturate_instead_of_panicking() {
        let s = StateSettings::default();
        let mut st = CustomerState::default();
        for (i, pid) in ["p1", "p2"].into_iter().enumerate() {
            let mut e = click(1_700_000_000_000 + i as i64, ClickKind::AddToCart, None);
            if let EventKind::Click(c) = &mut e.kind {
                c.product_id = Some(pid.into());
                c.price = Some(1e300);
            }
            st.record(&e, &s);
        }
        assert_eq!(st.cart.lines.len(), 2);
        assert_eq!(st.cart.value_cents(), i64::MAX);
    }

    #[test]
    fn blank_product_ids_and_places_are_unknown_not_values() {
        let s = StateSettings::default();
        let mut st = CustomerState::default();
        let t = 1_700_000_000_000;
        let at =
            |t: i64, kind: EventKind| Event { id: format!("e{t}"), customer: "c".into(), time: Timestamp(t), kind };
        // An add to cart naming no product: the cart was touched, no line.
        let mut c = Click::new(ClickKind::AddToCart);
        c.product_id = Some(String::new());
        c.category = Some(" ".into());
        c.geo = Geo { country: Some(" ".into()), region: Some(String::new()), city: None };
        st.record(&at(t, EventKind::Click(c)), &s);
        assert!(st.cart.lines.is_empty());
        assert_eq!(st.cart.last_added, Some(Timestamp(t)));
        assert_eq!((&st.profile.country, &st.profile.region), (&None, &None), "a blank place is not a place");
        // So a later click with a real country still fills it.
        let mut c = Click::new(ClickKind::PageView);
        c.geo.country = Some("de".into());
        st.record(&at(t + 1, EventKind::Click(c)), &s);
        assert_eq!(st.profile.country.as_deref(), Some("DE"));

        // A purchase line without a product: the order and its spend and
        // category count, no product is remembered.
        let p = Purchase {
            order_id: "o1".into(),
            items: vec![
                LineItem { product_id: "  ".into(), category: Some("keto".into()), quantity: 1, unit_price: 5.0 },
                LineItem { product_id: "p2".into(), category: None, quantity: 1, unit_price: 5.0 },
            ],
            total: 10.0,
            currency: "EUR".into(),
            channel: None,
        };
        st.record(&at(t + 2, EventKind::Purchase(p.clone())), &s);
        assert_eq!(st.purchased, vec!["p2".to_owned()]);
        assert_eq!(st.counters.lifetime(Counter::SpendCents), 1000);
        assert!(st.affinities.get("keto", Timestamp(t + 2), &s) > 0.0);
        let mut pop = crate::offer::Popularity::default();
        pop.record(&p);
        assert_eq!(pop.top_in("keto").count(), 0, "the blank product is not popular in keto");

        // In a profile update null keeps a value and a blank string clears it.
        let profile = |u: ProfileUpdate| EventKind::ProfileUpdate(u);
        st.record(
            &at(
                t + 3,
                profile(ProfileUpdate {
                    gender: Some("F".into()),
                    country: Some("AT".into()),
                    city: Some("Wien".into()),
                    ..Default::default()
                }),
            ),
            &s,
        );
        st.record(&at(t + 4, profile(ProfileUpdate { income_band: Some("high".into()), ..Default::default() })), &s);
        assert_eq!(st.profile.gender.as_deref(), Some("f"));
        assert_eq!(st.profile.country.as_deref(), Some("AT"));
        st.record(
            &at(
                t + 5,
                profile(ProfileUpdate { gender: Some(String::new()), country: Some("".into()), ..Default::default() }),
            ),
            &s,
        );
        assert_eq!(st.profile.gender, None);
        assert_eq!((&st.profile.country, &st.profile.city), (&None, &None), "the location is replaced as a whole");
        assert_eq!(st.profile.income_band.as_deref(), Some("high"));
    }

    #[test]
    fn affinity_decays_exactly_by_half_life() {
        let s = StateSettings { affinity_min_evidence: 0.0, ..StateSettings::default() };
        let mut a = Affinities::default();
        a.add("vegan", 3.0, Timestamp(0), s.affinity_half_life);
        a.add("keto", 1.0, Timestamp(0), s.affinity_half_life);
        assert!((a.get("vegan", Timestamp(0), &s) - 0.75).abs() < 1e-12);
        let later = Timestamp(0) + s.affinity_half_life;
        assert!((a.get("vegan", later, &s) - 0.375).abs() < 1e-12);
        assert_eq!(a.ranked(later, &s)[0].0, "vegan");
    }

    #[test]
    fn text_is_normalised_and_bounded() {
        assert_eq!(norm_lower("  Gluten-Free "), "gluten-free");
        for raw in ["keto", "Keto", " keto", "keto\t", "gluten free", "\u{a0}keto", "ké", "", &"x".repeat(80)] {
            assert_eq!(norm_lower_cow(raw), norm_lower(raw), "{raw:?}");
        }
        let long = "é".repeat(100);
        assert!(bounded(&long).len() <= MAX_TEXT);
    }
}
