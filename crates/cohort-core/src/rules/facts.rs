//! The read-only view of one customer that rules are evaluated against.
//!
//! The rules compiler resolves every field path (`orders.30d`,
//! `profile.country`, ...) to one of the small `Copy` enums below, so an
//! evaluation never looks a field up by name. The state crate implements
//! [`Facts`] for its customer record; tests implement it for fakes.
//!
//! Everything here is allocation-free and takes `now` where a value depends
//! on time, because core never reads the clock.

use crate::time::{Duration, Timestamp};
use crate::window::WindowSums;

/// A sliding window for counts and sums. Windows end at `now` and include
/// events with `now - window < event_time <= now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// Last 7 days.
    D7,
    /// Last 30 days.
    D30,
    /// Last 90 days.
    D90,
    /// Last 365 days.
    D365,
    /// Everything ever recorded.
    Lifetime,
}

impl Window {
    /// All windows, in the order the rules language lists them.
    pub const ALL: [Window; 5] = [Window::D7, Window::D30, Window::D90, Window::D365, Window::Lifetime];

    /// The window's length, or `None` for lifetime (which never expires
    /// anything, so it never needs a timer).
    pub const fn length(self) -> Option<Duration> {
        match self {
            Window::D7 => Some(Duration::from_days(7)),
            Window::D30 => Some(Duration::from_days(30)),
            Window::D90 => Some(Duration::from_days(90)),
            Window::D365 => Some(Duration::from_days(365)),
            Window::Lifetime => None,
        }
    }

    /// The suffix used in field paths: `7d`, `30d`, `90d`, `365d`, `lifetime`.
    pub const fn suffix(self) -> &'static str {
        match self {
            Window::D7 => "7d",
            Window::D30 => "30d",
            Window::D90 => "90d",
            Window::D365 => "365d",
            Window::Lifetime => "lifetime",
        }
    }
}

/// Numeric facts. Windowed ones must be exact (a brute-force recount of the
/// events in the window gives the same number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumField {
    /// Number of orders in the window.
    Orders(Window),
    /// Sum of order totals in the window.
    Spend(Window),
    /// Page views in the window.
    PageViews(Window),
    /// Product-detail views in the window.
    ProductViews(Window),
    /// Sessions started in the window.
    Sessions(Window),
    /// Lifetime average order value; 0 when there are no orders.
    Aov,
    /// Items currently in the cart.
    CartItems,
    /// Value of the current cart.
    CartValue,
}

/// Instants that may be unknown (a customer who never purchased has no
/// `last_purchase`); a comparison involving a missing instant is false.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeField {
    /// `cart.last_added`: the last add to the current cart.
    CartLastAdded,
    /// `last_purchase`.
    LastPurchase,
    /// `first_purchase`.
    FirstPurchase,
    /// `first_seen`: the first event of any kind.
    FirstSeen,
    /// `last_seen`: the latest event of any kind.
    LastSeen,
}

/// Profile attributes held as text. Missing text makes any comparison false.
/// Values are normalised when stored ([`TextField::normalise`]) and literals
/// compared with them are normalised the same way when the rules load, so
/// comparisons ignore case and surrounding whitespace (docs/rules.md, "Text
/// values"); the comparison itself is then exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextField {
    /// `profile.gender`.
    Gender,
    /// `profile.income_band`.
    IncomeBand,
    /// `profile.education`.
    Education,
    /// `profile.country`.
    Country,
    /// `profile.region`.
    Region,
    /// `profile.city`.
    City,
    /// `profile.loyalty_tier`.
    LoyaltyTier,
}

impl TextField {
    /// The field's stored form of `s`: trimmed, cut at
    /// [`crate::state::MAX_TEXT`] bytes, and upper-case for the country,
    /// lower-case for gender, income band, education and loyalty tier
    /// (region and city keep their case).
    pub fn normalise(self, s: &str) -> String {
        match self {
            TextField::Country => crate::state::norm_upper(s),
            TextField::Region | TextField::City => crate::state::norm_trim(s),
            TextField::Gender | TextField::IncomeBand | TextField::Education | TextField::LoyaltyTier => {
                crate::state::norm_lower(s)
            }
        }
    }
}

/// Profile attributes held as a set of strings, tested with `"x" in field`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetField {
    /// Declared interests.
    Interests,
}

impl SetField {
    /// The stored form of a member: trimmed, lower-case, bounded.
    pub fn normalise(self, s: &str) -> String {
        match self {
            SetField::Interests => crate::state::norm_lower(s),
        }
    }
}

/// Boolean facts (consents). Unknown consent must be reported as `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlagField {
    /// `consent.email`.
    ConsentEmail,
    /// `consent.sms`.
    ConsentSms,
    /// `consent.push`.
    ConsentPush,
    /// `consent.web`.
    ConsentWeb,
}

/// A civil date (proleptic Gregorian, UTC): year, month 1..=12, day 1..=31.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CivilDate {
    /// Year, e.g. 1990.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
}

/// What rules may ask about one customer.
///
/// Implementations must be deterministic functions of the customer's state
/// and `now`: the engine relies on "same state, same now, same answer" to
/// replay, and on [`Facts::next_window_change`] to schedule timers.
pub trait Facts {
    /// A numeric fact as of `now` (windowed counts and sums exclude events
    /// that have left the window by `now`).
    fn number(&self, f: NumField, now: Timestamp) -> f64;

    /// Earliest instant `> now` at which `number(f, _)` changes with no new
    /// event (the oldest event in the window leaving it), or `None` if it
    /// cannot change by itself (lifetime, cart, aov, or an empty window).
    /// Returning an earlier instant at which nothing changes is allowed;
    /// returning a later one makes segment changes late.
    fn next_window_change(&self, f: NumField, now: Timestamp) -> Option<Timestamp>;

    /// An instant fact, or `None` if it never happened.
    fn instant(&self, f: TimeField) -> Option<Timestamp>;

    /// A text fact, or `None` if unknown.
    fn text(&self, f: TextField) -> Option<&str>;

    /// Whether a set-valued fact contains `value`.
    fn set_contains(&self, f: SetField, value: &str) -> bool;

    /// A consent flag.
    fn flag(&self, f: FlagField) -> bool;

    /// The decayed affinity for `category` at `now`, in `[0, 1]`; 0 when
    /// unknown. With no new event it must decay exactly as
    /// `a(now) * 2^(-(t - now) / half_life)` with `half_life` from the rules'
    /// `settings.affinity_half_life`, because timers are computed from that.
    fn affinity(&self, category: &str, now: Timestamp) -> f64;

    /// The customer's birth date, if known. `profile.age` and the birthday
    /// functions are computed from it by the rules (UTC calendar), so that
    /// the timer for "age changes at the next birthday" agrees with the value.
    fn birth_date(&self) -> Option<CivilDate>;

    /// The age the customer declared, used for `profile.age` only when the
    /// birth date is unknown. It does not change with time.
    fn declared_age(&self) -> Option<u32>;

    /// How many times `offer` was sent in `(now - window, now]`.
    fn offers_sent(&self, offer: &str, window: Duration, now: Timestamp) -> u32;

    /// Earliest instant `> now` at which `offers_sent(offer, window, _)`
    /// changes with no new send (the oldest counted send leaving the window),
    /// or `None`. Same contract as [`Facts::next_window_change`].
    fn next_offers_sent_change(&self, offer: &str, window: Duration, now: Timestamp) -> Option<Timestamp>;

    /// Every windowed count and sum at one instant at once, if the
    /// implementation has them, so rules read them without a call per field.
    /// When this returns `Some(s)`, then at `now == s.at` and for every
    /// counter field (`orders.*`, `spend.*`, `page_views.*`,
    /// `product_views.*`, `sessions.*`), [`Facts::number`] must equal the
    /// matching entry of `s.sums` or `s.lifetime` (divided by 100 for
    /// `spend`), and [`Facts::next_window_change`] must equal
    /// [`WindowSums::next_change`]. Default: `None`.
    fn window_sums(&self) -> Option<&WindowSums> {
        None
    }

    /// [`Facts::affinity`] with the category's [`crate::hash::fast64`]
    /// computed once at rules load; must return exactly what `affinity`
    /// does. Default: ignores the hash.
    fn affinity_hashed(&self, category: &str, hash: u64, now: Timestamp) -> f64 {
        let _ = hash;
        self.affinity(category, now)
    }
}
