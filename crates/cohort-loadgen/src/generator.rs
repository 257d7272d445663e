//! The traffic itself: an iterator of events in event-time order.
//!
//! Every customer is a small state machine with two tracks, its sessions and
//! the offer it is currently answering. A binary heap holds each track's next
//! instant; [`Generator::next`] pops the earliest, advances that track by one
//! step (which emits at most one event) and pushes the track's next instant.
//! Rescheduling a track (an offer click pulling the next visit forward)
//! pushes a new entry and leaves the old one to be skipped as stale.

use crate::catalog::{Catalog, Category, CATEGORIES};
use crate::config::{Audience, Config, ConfigError, OfferSpec};
use crate::population::{Customer, Persona, Population, PLACES};
use crate::rng::Rng;
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, Event, EventKind, Geo, LineItem, OfferOutcome, Outcome, ProfileUpdate,
    Purchase,
};
use cohort_core::time::Timestamp;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const SESSION: u8 = 0;
const OFFER: u8 = 1;
const NOT_DUE: i64 = i64::MIN;

/// Sessions of lapsed customers come this much less often.
const LAPSED_ACTIVITY: f64 = 0.15;
/// Share of browsing steps that stay in the customer's preferred categories.
const PREFERRED_SHARE: f64 = 0.8;
/// Probability that a product view leads to an add-to-cart, for products of
/// a preferred category and for others.
const ADD_PREFERRED: f64 = 0.2;
const ADD_OTHER: f64 = 0.06;
/// Share of abandoned carts that got as far as the checkout page.
const ABANDON_AT_CHECKOUT: f64 = 0.3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Between sessions; the next step starts one.
    Idle,
    Landing,
    Browsing,
    /// The next step adds this product to the cart.
    Adding(u32),
    /// Checkout started; the next step is the order.
    Paying,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum OfferState {
    Idle,
    /// An offer will be delivered at `offer_due`.
    Scheduled,
    Chain {
        offer: u16,
        decision: u32,
        steps: [Outcome; 4],
        len: u8,
        pos: u8,
        converting: bool,
    },
    /// Clicked and converting: the conversion is reported when the campaign
    /// session's order is placed.
    AwaitingPurchase {
        offer: u16,
        decision: u32,
    },
}

/// A customer's moving parts.
#[derive(Clone, Debug)]
struct Live {
    rng: Rng,
    events: u64,
    sessions: u64,
    orders: u64,
    decisions: u32,
    profile_sent: bool,
    session_due: i64,
    offer_due: i64,
    phase: Phase,
    buying: bool,
    views_left: u16,
    channel: Channel,
    campaign: Option<u16>,
    cart: Vec<(u32, i32)>,
    offer: OfferState,
    /// When the customer asks to be forgotten (`i64::MAX`: never).
    forget_at: i64,
}

/// An offer with its category names resolved.
#[derive(Clone, Debug)]
struct OfferRt {
    spec: OfferSpec,
    category: Option<Category>,
    rates: Vec<(Rule, f64)>,
}

#[derive(Clone, Copy, Debug)]
enum Rule {
    Prefers(Category),
    Lapsed,
    HighActivity,
}

impl OfferRt {
    fn new(spec: &OfferSpec) -> OfferRt {
        let rates = spec
            .rates
            .iter()
            .filter_map(|r| {
                let rule = match &r.audience {
                    Audience::Prefers(c) => Rule::Prefers(Category::parse(c)?),
                    Audience::Lapsed => Rule::Lapsed,
                    Audience::HighActivity => Rule::HighActivity,
                };
                Some((rule, r.rate))
            })
            .collect();
        OfferRt { spec: spec.clone(), category: spec.category.as_deref().and_then(Category::parse), rates }
    }

    fn conversion_rate(&self, persona: &Persona, at: Timestamp, customers: u32) -> f64 {
        self.rates
            .iter()
            .filter(|(rule, _)| match *rule {
                Rule::Prefers(c) => persona.prefers(c),
                Rule::Lapsed => persona.is_lapsed(at),
                Rule::HighActivity => u64::from(persona.activity_rank) * 10 <= u64::from(customers),
            })
            .map(|&(_, r)| r)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
            .unwrap_or(self.spec.base_rate)
    }
}

/// Synthetic traffic, deterministic from [`Config::seed`]: an endless
/// iterator of valid events in non-decreasing event time. Bound it with
/// `take(n)` or `take_while(|e| e.time < end)`.
#[derive(Debug)]
pub struct Generator {
    config: Config,
    prefix: String,
    catalog: Catalog,
    population: Population,
    offers: Vec<OfferRt>,
    /// Population index of each simulated customer (all of them, or a shard).
    members: Vec<u32>,
    live: Vec<Live>,
    heap: BinaryHeap<Reverse<u128>>,
    now: Timestamp,
    emitted: u64,
}

fn key(t: i64, local: usize, track: u8) -> Reverse<u128> {
    Reverse((u128::from(t as u64) << 64) | ((local as u128) << 1) | u128::from(track))
}

/// Appends the decimal digits of `n`.
fn push_u64(s: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        s.push(char::from(b));
    }
}

/// `<prefix>.<customer>.<tag><n>`: unique per run, stable across replays.
fn make_id(prefix: &str, customer: &str, tag: char, n: u64) -> String {
    let mut s = String::with_capacity(prefix.len() + customer.len() + 24);
    s.push_str(prefix);
    s.push('.');
    s.push_str(customer);
    s.push('.');
    s.push(tag);
    push_u64(&mut s, n);
    s
}

fn round_cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Generator {
    /// Builds the catalogue and the population and schedules every customer's
    /// first visit.
    pub fn new(config: Config) -> Result<Generator, ConfigError> {
        config.validate()?;
        let catalog = Catalog::new(config.products, config.product_skew, config.seed);
        let population = Population::new(&config);
        let offers = config.offers.iter().map(OfferRt::new).collect();
        let members: Vec<u32> = match config.shard {
            None => (0..config.customers).collect(),
            Some(s) => (s.index..config.customers).step_by(s.count as usize).collect(),
        };
        let start = config.start.as_millis();
        let mut heap = BinaryHeap::with_capacity(members.len() * 2);
        let live = members
            .iter()
            .enumerate()
            .map(|(local, &idx)| {
                let mut rng = Rng::stream(config.seed, 0xBE4A, u64::from(idx));
                let persona = &population.customer(idx as usize).persona;
                let first = start + 1 + rng.exp(session_mean_ms(&config, persona, false)) as i64;
                // A stream of its own, so turning erasures on changes nothing else.
                let mut erasure = Rng::stream(config.seed, 0xF0E7, u64::from(idx));
                let forget_at = if erasure.chance(config.forget_share) {
                    start + 1 + (erasure.f64() * config.forget_within.as_millis() as f64) as i64
                } else {
                    i64::MAX
                };
                heap.push(key(first, local, SESSION));
                Live {
                    rng,
                    events: 0,
                    sessions: 0,
                    orders: 0,
                    decisions: 0,
                    profile_sent: false,
                    session_due: first,
                    offer_due: NOT_DUE,
                    phase: Phase::Idle,
                    buying: false,
                    views_left: 0,
                    channel: Channel::Web,
                    campaign: None,
                    cart: Vec::new(),
                    offer: OfferState::Idle,
                    forget_at,
                }
            })
            .collect();
        Ok(Generator {
            prefix: config.id_prefix(),
            config,
            catalog,
            population,
            offers,
            members,
            live,
            heap,
            now: Timestamp(start),
            emitted: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The customers, with profiles as last emitted.
    pub fn population(&self) -> &Population {
        &self.population
    }

    /// Event time of the last event returned (the start before the first).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// How many events have been returned.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// P(converted | delivered) of an offer for a customer at an instant; the
    /// ground truth propensity learning should approach. `None` for an
    /// unknown offer or customer.
    pub fn conversion_rate(&self, offer_id: &str, customer_id: &str, at: Timestamp) -> Option<f64> {
        let offer = self.offers.iter().find(|o| o.spec.id == offer_id)?;
        let c = self.population.by_id(customer_id)?;
        Some(offer.conversion_rate(&c.persona, at, self.config.customers))
    }

    /// Appends up to `n` events to `out` (handy for batching producers).
    pub fn fill(&mut self, out: &mut Vec<Event>, n: usize) {
        out.extend(self.by_ref().take(n));
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.next_before(Timestamp::MAX)
    }
}

impl Generator {
    /// The next event if its time is before `end`; otherwise `None`, and
    /// nothing is consumed (unlike `take_while`, which drops the first event
    /// past the bound). A paced sender asks for events before "simulated now".
    pub fn next_before(&mut self, end: Timestamp) -> Option<Event> {
        loop {
            let Reverse(k) = *self.heap.peek()?;
            let t = (k >> 64) as u64 as i64;
            // Every event is stamped with the time of the entry that made it,
            // and the top entry is the earliest, so nothing before `end` is left.
            if t >= end.as_millis() {
                return None;
            }
            let local = ((k as u64) >> 1) as usize;
            let track = (k & 1) as u8;
            let Generator { config, prefix, catalog, population, offers, members, live, heap, .. } = self;
            let l = &mut live[local];
            let due = if track == SESSION { l.session_due } else { l.offer_due };
            if due != t {
                heap.pop(); // rescheduled since
                continue;
            }
            let mut ctx = Ctx {
                cfg: config,
                prefix,
                catalog,
                offers,
                scheduled: Scheduled::default(),
                local,
                customer: population.customer_mut(members[local] as usize),
                l,
            };
            let event = if track == SESSION { ctx.session_step(t) } else { ctx.offer_step(t) };
            // The track's next step usually replaces the entry just handled:
            // one sift-down instead of a pop and a push.
            let Scheduled { keys, len } = ctx.scheduled;
            match keys[..len].split_first() {
                Some((&first, rest)) => {
                    if let Some(mut top) = heap.peek_mut() {
                        *top = first;
                    }
                    heap.extend(rest.iter().copied());
                }
                None => {
                    heap.pop();
                }
            }
            if let Some(e) = event {
                self.now = e.time;
                self.emitted += 1;
                return Some(e);
            }
        }
    }
}

/// Heap entries a step wants pushed (at most one per track, so two).
#[derive(Clone, Copy, Default)]
struct Scheduled {
    keys: [Reverse<u128>; 2],
    len: usize,
}

impl Scheduled {
    fn push(&mut self, k: Reverse<u128>) {
        self.keys[self.len] = k;
        self.len += 1;
    }
}

fn session_mean_ms(cfg: &Config, persona: &Persona, lapsed: bool) -> f64 {
    let rate = cfg.sessions_per_customer_day * persona.activity * if lapsed { LAPSED_ACTIVITY } else { 1.0 };
    86_400_000.0 / rate
}

/// One customer's step, with what it may touch.
struct Ctx<'a> {
    cfg: &'a Config,
    prefix: &'a str,
    catalog: &'a Catalog,
    offers: &'a [OfferRt],
    scheduled: Scheduled,
    local: usize,
    customer: &'a mut Customer,
    l: &'a mut Live,
}

impl Ctx<'_> {
    fn event(&mut self, t: i64, kind: EventKind) -> Event {
        self.l.events += 1;
        Event {
            id: make_id(self.prefix, &self.customer.id, 'e', self.l.events),
            customer: self.customer.id.clone(),
            time: Timestamp(t),
            kind,
        }
    }

    fn schedule_session(&mut self, at: i64) {
        self.l.session_due = at;
        self.scheduled.push(key(at, self.local, SESSION));
    }

    fn schedule_offer(&mut self, at: i64) {
        self.l.offer_due = at;
        self.scheduled.push(key(at, self.local, OFFER));
    }

    /// The pause between two clicks of a session.
    fn click_gap(&mut self) -> i64 {
        2_000 + self.l.rng.exp(25_000.0) as i64
    }

    fn click(&self, kind: ClickKind) -> Click {
        let mut c = Click::new(kind);
        c.channel = Some(self.l.channel);
        c.device = Some(self.customer.profile.device.as_str().to_string());
        c.session_id = Some(make_id(self.prefix, &self.customer.id, 's', self.l.sessions));
        c
    }

    fn product_click(&self, kind: ClickKind, product: u32, quantity: Option<i32>) -> Click {
        let p = self.catalog.product(product);
        let mut c = self.click(kind);
        c.product_id = Some(p.id.clone());
        c.category = Some(p.category.name().to_string());
        c.price = Some(p.price);
        c.quantity = quantity;
        c
    }

    /// Where the customer's attention goes next: mostly their preferred
    /// categories (or the campaign's), sometimes anywhere.
    fn next_category(&mut self) -> Category {
        if let Some(c) = self.l.campaign.and_then(|o| self.offers[usize::from(o)].category) {
            if self.l.rng.chance(0.7) {
                return c;
            }
        }
        let pref = &self.customer.persona.preferred;
        if self.l.rng.chance(PREFERRED_SHARE) {
            pref[self.l.rng.below(pref.len() as u32) as usize]
        } else {
            self.catalog.sample_category(&mut self.l.rng)
        }
    }

    fn session_step(&mut self, t: i64) -> Option<Event> {
        match self.l.phase {
            Phase::Idle => self.start_session(t),
            Phase::Landing => Some(self.landing(t)),
            Phase::Browsing => self.browse(t),
            Phase::Adding(p) => Some(self.add(t, p)),
            Phase::Paying => Some(self.purchase(t)),
        }
    }

    fn start_session(&mut self, t: i64) -> Option<Event> {
        if t >= self.l.forget_at && self.l.profile_sent {
            // Gone for good: nothing is scheduled again.
            self.l.offer = OfferState::Idle;
            self.l.offer_due = NOT_DUE;
            self.l.session_due = NOT_DUE;
            return Some(self.event(t, EventKind::Forget));
        }
        let l = &mut *self.l;
        l.sessions += 1;
        let lapsed = self.customer.persona.is_lapsed(Timestamp(t));
        l.buying = !lapsed && (l.campaign.is_some() || !l.rng.chance(self.cfg.abandon_share));
        l.views_left = (1.0 + l.rng.exp(3.5)).min(25.0) as u16;
        l.channel = if self.customer.profile.app_user && l.rng.chance(0.8) { Channel::App } else { Channel::Web };
        l.phase = Phase::Landing;
        let update = if !l.profile_sent {
            l.profile_sent = true;
            Some(full_profile(self.customer))
        } else if l.rng.chance(self.cfg.profile_update_share) {
            Some(change_profile(self.customer, &mut l.rng))
        } else {
            None
        };
        match update {
            Some(p) => {
                let next = t + 500 + i64::from(self.l.rng.below(2_000));
                self.schedule_session(next);
                Some(self.event(t, EventKind::ProfileUpdate(p)))
            }
            None => Some(self.landing(t)),
        }
    }

    fn landing(&mut self, t: i64) -> Event {
        let mut c = self.click(ClickKind::PageView);
        let campaign = self.l.campaign.map(|o| &self.offers[usize::from(o)]);
        c.page = Some(match campaign.and_then(|o| o.category) {
            Some(cat) => format!("/c/{}", cat.name()),
            None if self.l.rng.chance(0.5) => "/".to_string(),
            None => format!("/c/{}", self.next_category().name()),
        });
        c.campaign = campaign.map(|o| o.spec.id.clone());
        let p = &self.customer.profile;
        c.geo = Geo {
            country: Some(p.country.to_string()),
            region: Some(p.region.to_string()),
            city: Some(p.city.to_string()),
        };
        self.l.phase = Phase::Browsing;
        let next = t + self.click_gap();
        self.schedule_session(next);
        self.event(t, EventKind::Click(c))
    }

    fn browse(&mut self, t: i64) -> Option<Event> {
        if self.l.views_left == 0 {
            return self.finish(t);
        }
        self.l.views_left -= 1;
        let r = self.l.rng.f64();
        let click = if r < 0.05 && !self.l.cart.is_empty() {
            let i = self.l.rng.below(self.l.cart.len() as u32) as usize;
            let (p, q) = self.l.cart.swap_remove(i);
            self.product_click(ClickKind::RemoveFromCart, p, Some(q))
        } else if r < 0.15 {
            let cat = self.next_category();
            let mut c = self.click(ClickKind::PageView);
            c.page = Some(format!("/c/{}", cat.name()));
            c
        } else if r < 0.20 {
            let cat = self.next_category();
            let mut c = self.click(ClickKind::Search);
            c.search_query = Some(cat.spec().queries[self.l.rng.below(3) as usize].to_string());
            c.page = Some("/search".to_string());
            c
        } else {
            let cat = self.next_category();
            let p = self.catalog.sample_in(cat, &mut self.l.rng);
            let liked = self.customer.persona.prefers(cat)
                || self.l.campaign.is_some_and(|o| self.offers[usize::from(o)].category == Some(cat));
            if self.l.rng.chance(if liked { ADD_PREFERRED } else { ADD_OTHER }) {
                self.l.phase = Phase::Adding(p);
            }
            self.product_click(ClickKind::ProductView, p, None)
        };
        let next = t + self.click_gap();
        self.schedule_session(next);
        Some(self.event(t, EventKind::Click(click)))
    }

    fn add(&mut self, t: i64, product: u32) -> Event {
        let q = match self.l.rng.f64() {
            x if x < 0.8 => 1,
            x if x < 0.95 => 2,
            _ => 3,
        };
        match self.l.cart.iter_mut().find(|(p, _)| *p == product) {
            Some(line) => line.1 += q,
            None => self.l.cart.push((product, q)),
        }
        self.l.phase = Phase::Browsing;
        let next = t + self.click_gap();
        self.schedule_session(next);
        let c = self.product_click(ClickKind::AddToCart, product, Some(q));
        self.event(t, EventKind::Click(c))
    }

    /// The end of browsing: checkout, abandonment, or just leaving.
    fn finish(&mut self, t: i64) -> Option<Event> {
        if self.l.cart.is_empty() {
            if self.l.buying && self.l.campaign.is_some() {
                // Came for the offer: put something in the cart.
                let cat = self.next_category();
                let p = self.catalog.sample_in(cat, &mut self.l.rng);
                self.l.phase = Phase::Adding(p);
                let next = t + self.click_gap();
                self.schedule_session(next);
            } else {
                self.end_session(t);
            }
            return None;
        }
        let mut c = self.click(ClickKind::CheckoutStarted);
        c.page = Some("/checkout".to_string());
        if self.l.buying {
            self.l.phase = Phase::Paying;
            let next = t + 20_000 + self.l.rng.exp(60_000.0) as i64;
            self.schedule_session(next);
            return Some(self.event(t, EventKind::Click(c)));
        }
        let at_checkout = self.l.rng.chance(ABANDON_AT_CHECKOUT);
        self.end_session(t);
        at_checkout.then(|| self.event(t, EventKind::Click(c)))
    }

    fn purchase(&mut self, t: i64) -> Event {
        self.l.orders += 1;
        let items: Vec<LineItem> = self
            .l
            .cart
            .iter()
            .map(|&(p, q)| {
                let p = self.catalog.product(p);
                LineItem {
                    product_id: p.id.clone(),
                    category: Some(p.category.name().to_string()),
                    quantity: q,
                    unit_price: p.price,
                }
            })
            .collect();
        let total = round_cents(items.iter().map(|i| f64::from(i.quantity) * i.unit_price).sum());
        let order = Purchase {
            order_id: make_id(self.prefix, &self.customer.id, 'o', self.l.orders),
            items,
            total,
            currency: self.cfg.currency.clone(),
            channel: Some(self.l.channel),
        };
        if let OfferState::AwaitingPurchase { offer, decision } = self.l.offer {
            let steps = [Outcome::Delivered, Outcome::Opened, Outcome::Clicked, Outcome::Converted];
            self.l.offer = OfferState::Chain { offer, decision, steps, len: 4, pos: 3, converting: true };
            self.schedule_offer(t + 1_000);
        }
        self.end_session(t);
        self.event(t, EventKind::Purchase(order))
    }

    fn end_session(&mut self, t: i64) {
        let l = &mut *self.l;
        l.cart.clear();
        l.campaign = None;
        l.phase = Phase::Idle;
        if let OfferState::AwaitingPurchase { .. } = l.offer {
            l.offer = OfferState::Idle; // came back, did not buy after all
        }
        if l.offer == OfferState::Idle && !self.offers.is_empty() && l.rng.chance(self.cfg.offer_share) {
            l.offer = OfferState::Scheduled;
            let at = t + 60_000 + l.rng.exp(7_200_000.0) as i64;
            self.schedule_offer(at);
        }
        let persona = &self.customer.persona;
        let mean = session_mean_ms(self.cfg, persona, persona.is_lapsed(Timestamp(t)));
        let next = t + 60_000 + self.l.rng.exp(mean) as i64;
        self.schedule_session(next);
    }

    fn consents(&self, channel: Channel) -> bool {
        let c = self.customer.profile.consent;
        match channel {
            Channel::Email => c.email,
            Channel::Sms => c.sms,
            Channel::Push | Channel::App => c.push,
            Channel::Web => c.web,
            Channel::Store | Channel::Other => true,
        }
    }

    fn offer_step(&mut self, t: i64) -> Option<Event> {
        match self.l.offer {
            OfferState::Scheduled => {
                let n = self.offers.len() as u32;
                let first = self.l.rng.below(n);
                let Some(offer) = (0..n)
                    .map(|i| ((first + i) % n) as u16)
                    .find(|&o| self.consents(self.offers[usize::from(o)].spec.channel))
                else {
                    self.l.offer = OfferState::Idle;
                    self.l.offer_due = NOT_DUE;
                    return None;
                };
                self.l.decisions += 1;
                let rate = self.offers[usize::from(offer)].conversion_rate(
                    &self.customer.persona,
                    Timestamp(t),
                    self.cfg.customers,
                );
                use Outcome::*;
                let converting = self.l.rng.chance(rate);
                let (steps, len) = if converting {
                    ([Delivered, Opened, Clicked, Converted], 4)
                } else {
                    match self.l.rng.f64() {
                        x if x < 0.30 => ([Delivered; 4], 1),
                        x if x < 0.55 => ([Delivered, Opened, Opened, Opened], 2),
                        x if x < 0.70 => ([Delivered, Opened, Clicked, Clicked], 3),
                        _ => ([Delivered, Opened, Dismissed, Dismissed], 3),
                    }
                };
                let decision = self.l.decisions;
                self.l.offer = OfferState::Chain { offer, decision, steps, len, pos: 0, converting };
                self.outcome(t)
            }
            OfferState::Chain { .. } => self.outcome(t),
            OfferState::Idle | OfferState::AwaitingPurchase { .. } => None,
        }
    }

    /// Emits the chain's next outcome and schedules the one after.
    fn outcome(&mut self, t: i64) -> Option<Event> {
        let OfferState::Chain { offer, decision, steps, len, pos, converting } = self.l.offer else {
            return None;
        };
        let outcome = steps[usize::from(pos)];
        let pos = pos + 1;
        let lapsed = self.customer.persona.is_lapsed(Timestamp(t));
        if outcome == Outcome::Clicked && converting && pos < len && self.l.phase == Phase::Idle && !lapsed {
            // The click brings the customer to the shop; the order it leads
            // to is reported as the conversion.
            self.l.campaign = Some(offer);
            self.l.offer = OfferState::AwaitingPurchase { offer, decision };
            self.l.offer_due = NOT_DUE;
            let visit = t + 3_000 + self.l.rng.exp(20_000.0) as i64;
            self.schedule_session(visit);
        } else if pos < len {
            self.l.offer = OfferState::Chain { offer, decision, steps, len, pos, converting };
            let delay = match steps[usize::from(pos)] {
                Outcome::Opened => 10_000.0 + self.l.rng.exp(2_700_000.0),
                Outcome::Clicked => 2_000.0 + self.l.rng.exp(180_000.0),
                Outcome::Converted => 30_000.0 + self.l.rng.exp(1_800_000.0),
                Outcome::Dismissed => 5_000.0 + self.l.rng.exp(600_000.0),
                Outcome::Delivered => 1_000.0,
            };
            self.schedule_offer(t + delay as i64);
        } else {
            self.l.offer = OfferState::Idle;
            self.l.offer_due = NOT_DUE;
        }
        let spec = &self.offers[usize::from(offer)].spec;
        let o = OfferOutcome {
            offer_id: spec.id.clone(),
            decision_id: make_id(self.prefix, &self.customer.id, 'd', u64::from(decision)),
            outcome,
            channel: Some(spec.channel),
        };
        Some(self.event(t, EventKind::OfferOutcome(o)))
    }
}

/// Everything the CRM knows, sent when a customer is first seen.
fn full_profile(c: &Customer) -> ProfileUpdate {
    let p = &c.profile;
    ProfileUpdate {
        birth_date: p.birth_date,
        age: p.age,
        gender: p.gender.map(str::to_string),
        income_band: Some(p.income_band.to_string()),
        education: Some(p.education.to_string()),
        country: Some(p.country.to_string()),
        region: Some(p.region.to_string()),
        city: Some(p.city.to_string()),
        interests: Some(p.interests.iter().map(|s| s.to_string()).collect()),
        consent: ConsentUpdate {
            email: Some(p.consent.email),
            sms: Some(p.consent.sms),
            push: Some(p.consent.push),
            web: Some(p.consent.web),
        },
        loyalty_tier: p.loyalty_tier.map(str::to_string),
    }
}

const INCOME_ORDER: [&str; 5] = ["low", "lower_middle", "middle", "upper_middle", "high"];

/// Changes one thing about a customer and returns the partial update that
/// says so.
fn change_profile(c: &mut Customer, rng: &mut Rng) -> ProfileUpdate {
    let p = &mut c.profile;
    let mut u = ProfileUpdate::default();
    match rng.f64() {
        x if x < 0.35 => {
            let k = rng.below(4);
            let flag = match k {
                0 => &mut p.consent.email,
                1 => &mut p.consent.sms,
                2 => &mut p.consent.push,
                _ => &mut p.consent.web,
            };
            *flag = !*flag;
            let v = Some(*flag);
            match k {
                0 => u.consent.email = v,
                1 => u.consent.sms = v,
                2 => u.consent.push = v,
                _ => u.consent.web = v,
            }
        }
        x if x < 0.55 => {
            let same_country: Vec<_> = PLACES.iter().filter(|pl| pl.0 == p.country).collect();
            let place = if rng.chance(0.7) {
                same_country[rng.below(same_country.len() as u32) as usize]
            } else {
                &PLACES[rng.below(PLACES.len() as u32) as usize]
            };
            (p.country, p.region, p.city) = (place.0, place.1, place.2);
            u.country = Some(p.country.to_string());
            u.region = Some(p.region.to_string());
            u.city = Some(p.city.to_string());
        }
        x if x < 0.70 => {
            let i = INCOME_ORDER.iter().position(|b| *b == p.income_band).unwrap_or(2);
            let j = if rng.chance(0.7) { (i + 1).min(4) } else { i.saturating_sub(1) };
            p.income_band = INCOME_ORDER[j];
            u.income_band = Some(p.income_band.to_string());
        }
        x if x < 0.90 => {
            if !p.interests.is_empty() && rng.chance(0.3) {
                let i = rng.below(p.interests.len() as u32) as usize;
                p.interests.remove(i);
            } else {
                let pref = &c.persona.preferred;
                let cat = if rng.chance(0.7) {
                    pref[rng.below(pref.len() as u32) as usize]
                } else {
                    Category(rng.below(CATEGORIES.len() as u32) as u8)
                };
                let tag = cat.spec().interests[rng.below(2) as usize];
                if !p.interests.contains(&tag) {
                    p.interests.push(tag);
                }
            }
            u.interests = Some(p.interests.iter().map(|s| s.to_string()).collect());
        }
        _ => {
            p.loyalty_tier = Some(match p.loyalty_tier {
                None => "bronze",
                Some("bronze") => "silver",
                Some(_) => "gold",
            });
            u.loyalty_tier = p.loyalty_tier.map(str::to_string);
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_built_without_format() {
        assert_eq!(make_id("lg1", "c-000001", 'e', 0), "lg1.c-000001.e0");
        assert_eq!(make_id("x", "c", 's', 1_234_567_890), "x.c.s1234567890");
        let mut s = String::new();
        push_u64(&mut s, u64::MAX);
        assert_eq!(s, u64::MAX.to_string());
    }

    #[test]
    fn events_come_out_in_time_order_from_a_small_population() {
        let cfg = Config { customers: 50, products: 100, ..Config::default() };
        let g = Generator::new(cfg).unwrap();
        let events: Vec<Event> = g.take(5_000).collect();
        assert_eq!(events.len(), 5_000);
        assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
    }
}
