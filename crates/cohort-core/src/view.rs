//! [`Facts`] for a customer: the read-only view rules are evaluated against.
//!
//! A view borrows the state and the settings that shape it (the affinity
//! half-life lives in the rules file, not in every state record) and caches
//! the windowed sums for one day, computed in one pass over the day buckets,
//! so that twenty segment rules do not each rescan a year of buckets.

use crate::hash::fast64;
use crate::rules::facts::{CivilDate, Facts, FlagField, NumField, SetField, TextField, TimeField, Window};
use crate::state::{CustomerState, StateSettings};
use crate::time::{Duration, Timestamp};
use crate::window::{Counter, WindowSums};

/// A customer as rules see it.
#[derive(Clone, Copy, Debug)]
pub struct CustomerView<'a> {
    pub state: &'a CustomerState,
    pub settings: &'a StateSettings,
    sums: Sums<'a>,
    /// `(now, scale)`: affinities at `now` are `weight * scale`, computed
    /// once instead of one `exp2` per `affinity()` call.
    affinity_scale: Option<(Timestamp, f64)>,
}

/// The view's window sums: none, its own, or the caller's. Owned sums stay
/// inline (a view lives on the stack for one evaluation; boxing them would
/// allocate, and would make the view not `Copy`).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
enum Sums<'a> {
    None,
    Owned(WindowSums),
    Borrowed(&'a WindowSums),
}

impl<'a> CustomerView<'a> {
    /// A view with no cached sums (every windowed read scans the buckets).
    pub fn new(state: &'a CustomerState, settings: &'a StateSettings) -> Self {
        CustomerView { state, settings, sums: Sums::None, affinity_scale: None }
    }

    /// A view with the windowed sums precomputed for `now`'s day: reads at
    /// any instant of that day are answered from the cache.
    pub fn at(state: &'a CustomerState, settings: &'a StateSettings, now: Timestamp) -> Self {
        Self::with_sums(state, settings, state.counters.sums_at(now), now)
    }

    /// A view with sums already computed by [`crate::window::Windows::sums_at`]
    /// (so several views of one evaluation share one pass over the buckets).
    /// `sums` must be `state.counters.sums_at(now)`.
    pub fn with_sums(state: &'a CustomerState, settings: &'a StateSettings, sums: WindowSums, now: Timestamp) -> Self {
        let scale = state.affinities.scale(now, settings);
        CustomerView { state, settings, sums: Sums::Owned(sums), affinity_scale: Some((now, scale)) }
    }

    /// [`CustomerView::with_sums`] borrowing the sums, so that views of one
    /// evaluation do not each copy them.
    pub fn with_sums_ref(
        state: &'a CustomerState,
        settings: &'a StateSettings,
        sums: &'a WindowSums,
        now: Timestamp,
    ) -> Self {
        let scale = state.affinities.scale(now, settings);
        CustomerView { state, settings, sums: Sums::Borrowed(sums), affinity_scale: Some((now, scale)) }
    }

    fn sums(&self) -> Option<&WindowSums> {
        match &self.sums {
            Sums::None => None,
            Sums::Owned(s) => Some(s),
            Sums::Borrowed(s) => Some(s),
        }
    }
}

fn counter_of(f: NumField) -> Option<(Counter, Window)> {
    match f {
        NumField::Orders(w) => Some((Counter::Orders, w)),
        NumField::Spend(w) => Some((Counter::SpendCents, w)),
        NumField::PageViews(w) => Some((Counter::PageViews, w)),
        NumField::ProductViews(w) => Some((Counter::ProductViews, w)),
        NumField::Sessions(w) => Some((Counter::Sessions, w)),
        NumField::Aov | NumField::CartItems | NumField::CartValue => None,
    }
}

impl Facts for CustomerView<'_> {
    fn number(&self, f: NumField, now: Timestamp) -> f64 {
        let st = self.state;
        match counter_of(f) {
            Some((c, w)) => {
                let raw = match (self.sums(), w) {
                    (_, Window::Lifetime) => st.counters.lifetime(c),
                    (Some(s), w) if s.at == now && s.has(c, w) => s.get(c, w).unwrap_or(0),
                    _ => st.counters.sum(c, w, now),
                };
                if c == Counter::SpendCents {
                    raw as f64 / 100.0
                } else {
                    raw as f64
                }
            }
            None => match f {
                NumField::Aov => {
                    let orders = st.counters.lifetime(Counter::Orders);
                    if orders <= 0 {
                        0.0
                    } else {
                        st.counters.lifetime(Counter::SpendCents) as f64 / 100.0 / orders as f64
                    }
                }
                NumField::CartItems => st.cart.items() as f64,
                NumField::CartValue => st.cart.value_cents() as f64 / 100.0,
                _ => 0.0,
            },
        }
    }

    fn next_window_change(&self, f: NumField, now: Timestamp) -> Option<Timestamp> {
        let (c, w) = counter_of(f)?;
        match self.sums() {
            Some(s) if s.at == now && s.has(c, w) => s.next_change(c, w),
            _ => self.state.counters.next_change(c, w, now),
        }
    }

    fn instant(&self, f: TimeField) -> Option<Timestamp> {
        let st = self.state;
        match f {
            TimeField::CartLastAdded => {
                if st.cart.lines.is_empty() {
                    None
                } else {
                    st.cart.last_added
                }
            }
            TimeField::LastPurchase => st.last_purchase,
            TimeField::FirstPurchase => st.first_purchase,
            // Customer activity only (clicks and purchases): a CRM profile
            // update or a delivery receipt is not the customer being seen.
            TimeField::FirstSeen => st.first_seen,
            TimeField::LastSeen => st.last_seen,
        }
    }

    fn text(&self, f: TextField) -> Option<&str> {
        let p = &self.state.profile;
        match f {
            TextField::Gender => p.gender.as_deref(),
            TextField::IncomeBand => p.income_band.as_deref(),
            TextField::Education => p.education.as_deref(),
            TextField::Country => p.country.as_deref(),
            TextField::Region => p.region.as_deref(),
            TextField::City => p.city.as_deref(),
            TextField::LoyaltyTier => p.loyalty_tier.as_deref(),
        }
    }

    fn set_contains(&self, f: SetField, value: &str) -> bool {
        match f {
            SetField::Interests => self.state.profile.interests.iter().any(|i| i == value),
        }
    }

    fn flag(&self, f: FlagField) -> bool {
        let c = &self.state.profile.consent;
        match f {
            FlagField::ConsentEmail => c.email == Some(true),
            FlagField::ConsentSms => c.sms == Some(true),
            FlagField::ConsentPush => c.push == Some(true),
            FlagField::ConsentWeb => c.web == Some(true),
        }
    }

    fn affinity(&self, category: &str, now: Timestamp) -> f64 {
        self.affinity_hashed(category, fast64(category.as_bytes()), now)
    }

    #[inline]
    fn affinity_hashed(&self, _category: &str, hash: u64, now: Timestamp) -> f64 {
        match self.affinity_scale {
            Some((t, scale)) if t == now => self.state.affinities.get_scaled_hashed(hash, scale),
            _ => self.state.affinities.get_hashed(hash, now, self.settings),
        }
    }

    fn window_sums(&self) -> Option<&WindowSums> {
        self.sums()
    }

    fn birth_date(&self) -> Option<CivilDate> {
        self.state.profile.birth_date.map(|d| CivilDate { year: d.year, month: d.month, day: d.day })
    }

    fn declared_age(&self) -> Option<u32> {
        self.state.profile.declared_age
    }

    fn offers_sent(&self, offer: &str, window: Duration, now: Timestamp) -> u32 {
        self.state.sends_in(offer, window, now)
    }

    fn next_offers_sent_change(&self, offer: &str, window: Duration, now: Timestamp) -> Option<Timestamp> {
        // A send at `s` is counted while `now - window < s <= now`, so it
        // leaves at `s + window`; a future send enters at `s`.
        let from = now - window;
        self.state
            .offers
            .iter()
            .filter(|s| s.offer == offer)
            .filter_map(|s| {
                if s.time > now {
                    Some(s.time)
                } else if s.time > from {
                    Some(s.time + window)
                } else {
                    None
                }
            })
            .filter(|t| *t > now)
            .min()
    }
}
