//! A fake customer for rules tests: events with times, so windowed counts,
//! instants and their next changes are computed by brute force, the way a
//! correct state implementation must answer.

#![allow(dead_code)]

use cohort_core::rules::{CivilDate, Facts, FlagField, NumField, SetField, TextField, TimeField, Window};
use cohort_core::time::{Duration, Timestamp};

/// Something that happened to the customer.
#[derive(Clone, Debug, PartialEq)]
pub enum Ev {
    Purchase(f64),
    PageView,
    ProductView,
    SessionStart,
    CartAdd(f64),
    Send(String),
}

#[derive(Clone, Debug, Default)]
pub struct FakeFacts {
    /// All events, sorted by time; only the first `applied` have happened.
    pub events: Vec<(Timestamp, Ev)>,
    pub applied: usize,
    pub first_seen: Option<Timestamp>,
    pub texts: Vec<(TextField, String)>,
    pub interests: Vec<String>,
    pub flags: Vec<FlagField>,
    /// (category, value at `at`, at)
    pub affinities: Vec<(String, f64, Timestamp)>,
    pub half_life: Duration,
    pub birth: Option<CivilDate>,
    pub declared_age: Option<u32>,
}

impl FakeFacts {
    /// Mark every event at or before `now` as happened.
    pub fn apply_until(&mut self, now: Timestamp) {
        self.applied = self.events.partition_point(|(t, _)| *t <= now);
    }

    fn happened(&self) -> &[(Timestamp, Ev)] {
        &self.events[..self.applied]
    }

    fn in_window(t: Timestamp, w: Window, now: Timestamp) -> bool {
        match w.length() {
            None => t <= now,
            Some(len) => t <= now && now < t + len,
        }
    }

    fn matches(f: NumField, ev: &Ev) -> Option<(Window, f64)> {
        match (f, ev) {
            (NumField::Orders(w), Ev::Purchase(_)) => Some((w, 1.0)),
            (NumField::Spend(w), Ev::Purchase(x)) => Some((w, *x)),
            (NumField::PageViews(w), Ev::PageView) => Some((w, 1.0)),
            (NumField::ProductViews(w), Ev::ProductView) => Some((w, 1.0)),
            (NumField::Sessions(w), Ev::SessionStart) => Some((w, 1.0)),
            _ => None,
        }
    }
}

impl Facts for FakeFacts {
    fn number(&self, f: NumField, now: Timestamp) -> f64 {
        match f {
            NumField::Aov => {
                let (n, s) = self.happened().iter().fold((0.0, 0.0), |(n, s), (_, e)| match e {
                    Ev::Purchase(x) => (n + 1.0, s + x),
                    _ => (n, s),
                });
                if n > 0.0 {
                    s / n
                } else {
                    0.0
                }
            }
            NumField::CartItems | NumField::CartValue => {
                let last_purchase = self.instant(TimeField::LastPurchase);
                self.happened()
                    .iter()
                    .filter(|(t, _)| last_purchase.is_none_or(|p| *t > p))
                    .filter_map(|(_, e)| match e {
                        Ev::CartAdd(v) => Some(if f == NumField::CartItems { 1.0 } else { *v }),
                        _ => None,
                    })
                    .sum()
            }
            _ => self
                .happened()
                .iter()
                .filter_map(|(t, e)| Self::matches(f, e).filter(|(w, _)| Self::in_window(*t, *w, now)).map(|(_, x)| x))
                .sum(),
        }
    }

    fn next_window_change(&self, f: NumField, now: Timestamp) -> Option<Timestamp> {
        self.happened()
            .iter()
            .filter_map(|(t, e)| {
                let (w, _) = Self::matches(f, e)?;
                let leaves = *t + w.length()?;
                (*t <= now && leaves > now).then_some(leaves)
            })
            .min()
    }

    fn instant(&self, f: TimeField) -> Option<Timestamp> {
        let last = |pred: &dyn Fn(&Ev) -> bool| self.happened().iter().rev().find(|(_, e)| pred(e)).map(|(t, _)| *t);
        match f {
            TimeField::CartLastAdded => last(&|e| matches!(e, Ev::CartAdd(_))),
            TimeField::LastPurchase => last(&|e| matches!(e, Ev::Purchase(_))),
            TimeField::FirstPurchase => {
                self.happened().iter().find(|(_, e)| matches!(e, Ev::Purchase(_))).map(|(t, _)| *t)
            }
            TimeField::FirstSeen => self.first_seen.or(self.happened().first().map(|(t, _)| *t)),
            TimeField::LastSeen => self.happened().last().map(|(t, _)| *t).or(self.first_seen),
        }
    }

    fn text(&self, f: TextField) -> Option<&str> {
        self.texts.iter().find(|(k, _)| *k == f).map(|(_, v)| v.as_str())
    }

    fn set_contains(&self, f: SetField, value: &str) -> bool {
        match f {
            SetField::Interests => self.interests.iter().any(|i| i == value),
        }
    }

    fn flag(&self, f: FlagField) -> bool {
        self.flags.contains(&f)
    }

    fn affinity(&self, category: &str, now: Timestamp) -> f64 {
        self.affinities.iter().find(|(c, _, _)| c == category).map_or(0.0, |(_, v, at)| {
            let dt = now.since(*at).as_millis() as f64;
            v * (-dt / self.half_life.as_millis() as f64).exp2()
        })
    }

    fn birth_date(&self) -> Option<CivilDate> {
        self.birth
    }

    fn declared_age(&self) -> Option<u32> {
        self.declared_age
    }

    fn offers_sent(&self, offer: &str, window: Duration, now: Timestamp) -> u32 {
        self.happened()
            .iter()
            .filter(|(t, e)| matches!(e, Ev::Send(o) if o == offer) && *t <= now && now < *t + window)
            .count() as u32
    }

    fn next_offers_sent_change(&self, offer: &str, window: Duration, now: Timestamp) -> Option<Timestamp> {
        self.happened()
            .iter()
            .filter(|(_, e)| matches!(e, Ev::Send(o) if o == offer))
            .map(|(t, _)| *t + window)
            .filter(|leaves| *leaves > now)
            .min()
    }
}

pub const DAY: i64 = 86_400_000;
pub const HOUR: i64 = 3_600_000;

pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}
