//! Exact windowed counters at day granularity.
//!
//! A customer who clicks a thousand times a day must still fit in a few
//! kilobytes, so windows cannot keep one entry per event. They keep one sparse
//! bucket per UTC day that had activity, for the last 365 days, plus lifetime
//! totals.
//!
//! **Definition** (what "exact" means, and what the property test recounts):
//! an event with time `t` counts in the `N`-day window at instant `now` iff
//! `day(now) - N < day(t) <= day(now)`, where `day(x) = floor(x / 86_400_000)`
//! (UTC days). So "orders in 30 days" on 2024-05-31 at 15:00 counts orders from
//! 2024-05-02 00:00 onwards. A window's value changes by itself only at UTC
//! midnight, which is the instant [`DayBuckets::next_change`] reports, so
//! timers fire exactly when a count drops.

use crate::rules::Window;
use crate::time::{Timestamp, MS_PER_DAY};

/// How many days of buckets are kept: the longest window. A bucket older than
/// this can never be counted again (lifetime totals are kept separately).
pub const KEPT_DAYS: i64 = 365;

/// The counters kept per day. The order is the encoding order: append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    Orders = 0,
    /// Order totals in minor units (cents): integer so that sums are exact
    /// and independent of the order events arrive in.
    SpendCents = 1,
    PageViews = 2,
    ProductViews = 3,
    Sessions = 4,
}

/// Number of [`Counter`]s.
pub const COUNTERS: usize = 5;

impl Counter {
    pub const ALL: [Counter; COUNTERS] =
        [Counter::Orders, Counter::SpendCents, Counter::PageViews, Counter::ProductViews, Counter::Sessions];
}

/// One UTC day's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DayBucket {
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
    pub counts: [i64; COUNTERS],
}

/// Sparse per-day counters for the last [`KEPT_DAYS`] days plus lifetime
/// totals. Buckets are sorted by day, at most one per day.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DayBuckets {
    buckets: Vec<DayBucket>,
    lifetime: [i64; COUNTERS],
}

/// Window sums for every windowed counter at one day, computed in one pass so
/// that evaluating twenty rules does not rescan the buckets twenty times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WindowSums {
    pub day: i64,
    /// `sums[window][counter]` for windows 7, 30, 90, 365 days.
    pub sums: [[i64; COUNTERS]; 4],
    /// Day of the oldest bucket with a non-zero count, per window and
    /// counter (`i64::MAX`: none), for [`WindowSums::next_change`].
    pub oldest: [[i64; COUNTERS]; 4],
    /// Whether some bucket lies after `day` (then `next_change` defers to
    /// [`DayBuckets::next_change`]).
    pub future: bool,
    /// Lifetime totals ([`DayBuckets::lifetime`]), so that one struct
    /// answers every counter field.
    pub lifetime: [i64; COUNTERS],
}

fn window_index(w: Window) -> Option<usize> {
    match w {
        Window::D7 => Some(0),
        Window::D30 => Some(1),
        Window::D90 => Some(2),
        Window::D365 => Some(3),
        Window::Lifetime => None,
    }
}

/// The windows' lengths in days, in [`WindowSums::sums`] order.
pub const WINDOW_DAYS: [i64; 4] = [7, 30, 90, 365];

fn window_days(w: Window) -> Option<i64> {
    window_index(w).map(|i| WINDOW_DAYS[i])
}

impl DayBuckets {
    /// Adds `amount` to `counter` for the day of `time`, then drops buckets
    /// that no window can count any more relative to the newest bucket.
    /// Events older than the kept horizon still count in lifetime totals.
    pub fn add(&mut self, time: Timestamp, counter: Counter, amount: i64) {
        if amount == 0 {
            return;
        }
        let c = counter as usize;
        self.lifetime[c] = self.lifetime[c].saturating_add(amount);
        let day = clamp_day(time.day());
        if let Some(newest) = self.buckets.last() {
            if i64::from(day) <= i64::from(newest.day) - KEPT_DAYS {
                return;
            }
        }
        // Nearly always the newest day: check the end first.
        match self.buckets.last_mut() {
            Some(b) if b.day == day => b.counts[c] = b.counts[c].saturating_add(amount),
            Some(b) if b.day < day => {
                let mut nb = DayBucket { day, counts: [0; COUNTERS] };
                nb.counts[c] = amount;
                self.buckets.push(nb);
                self.prune();
            }
            None => {
                let mut nb = DayBucket { day, counts: [0; COUNTERS] };
                nb.counts[c] = amount;
                self.buckets.push(nb);
            }
            Some(_) => match self.buckets.binary_search_by_key(&day, |b| b.day) {
                Ok(i) => self.buckets[i].counts[c] = self.buckets[i].counts[c].saturating_add(amount),
                Err(i) => {
                    let mut nb = DayBucket { day, counts: [0; COUNTERS] };
                    nb.counts[c] = amount;
                    self.buckets.insert(i, nb);
                }
            },
        }
    }

    fn prune(&mut self) {
        let Some(newest) = self.buckets.last() else { return };
        let limit = i64::from(newest.day) - KEPT_DAYS;
        let keep_from = self.buckets.partition_point(|b| i64::from(b.day) <= limit);
        if keep_from > 0 {
            self.buckets.drain(..keep_from);
        }
    }

    /// The value of `counter` over window `w` at `now` (see the module docs for
    /// the exact definition). Saturates: see [`DayBuckets::sums_at`].
    pub fn sum(&self, counter: Counter, w: Window, now: Timestamp) -> i64 {
        let c = counter as usize;
        let Some(days) = window_days(w) else { return self.lifetime[c] };
        let today = now.day();
        let from = today - days; // exclusive
        let start = self.buckets.partition_point(|b| i64::from(b.day) <= from);
        let end = start + self.buckets[start..].partition_point(|b| i64::from(b.day) <= today);
        self.buckets[start..end].iter().rev().fold(0, |acc: i64, b| acc.saturating_add(b.counts[c]))
    }

    /// Every windowed sum at `now` in one pass. Sums saturate like
    /// [`DayBuckets::add`] (so absurd totals cannot make an evaluation
    /// panic), adding the newest bucket first as [`DayBuckets::sum`] does.
    pub fn sums_at(&self, now: Timestamp) -> WindowSums {
        let today = now.day();
        // Buckets after today (late clocks): skipped, and flagged.
        let end = match self.buckets.last() {
            Some(b) if i64::from(b.day) > today => self.buckets.partition_point(|b| i64::from(b.day) <= today),
            _ => self.buckets.len(),
        };
        let mut out = WindowSums {
            day: today,
            sums: [[0; COUNTERS]; 4],
            oldest: [[i64::MAX; COUNTERS]; 4],
            future: end < self.buckets.len(),
            lifetime: self.lifetime,
        };
        // Newest first: every window is a run of the newest buckets, so one
        // running sum (and oldest non-zero day) serves all four, copied out
        // as the buckets leave each window.
        let mut sum = [0i64; COUNTERS];
        let mut oldest = [i64::MAX; COUNTERS];
        let mut wi = 0;
        for b in self.buckets[..end].iter().rev() {
            let day = i64::from(b.day);
            let age = today - day;
            while age >= WINDOW_DAYS[wi] {
                out.sums[wi] = sum;
                out.oldest[wi] = oldest;
                wi += 1;
                if wi == WINDOW_DAYS.len() {
                    return out;
                }
            }
            for c in 0..COUNTERS {
                sum[c] = sum[c].saturating_add(b.counts[c]);
                if b.counts[c] != 0 {
                    oldest[c] = day;
                }
            }
        }
        for w in wi..WINDOW_DAYS.len() {
            out.sums[w] = sum;
            out.oldest[w] = oldest;
        }
        out
    }

    /// Lifetime total of `counter`.
    pub fn lifetime(&self, counter: Counter) -> i64 {
        self.lifetime[counter as usize]
    }

    /// The earliest instant `> now` at which `sum(counter, w, _)` changes with
    /// no new event: the UTC midnight at which the oldest counted day leaves
    /// the window (or a future day enters it). `None` for lifetime or when
    /// nothing would change.
    pub fn next_change(&self, counter: Counter, w: Window, now: Timestamp) -> Option<Timestamp> {
        let c = counter as usize;
        let days = window_days(w)?;
        let today = now.day();
        let from = today - days;
        let start = self.buckets.partition_point(|b| i64::from(b.day) <= from);
        // The oldest counted day leaves at the midnight `days` days after it;
        // the first future day (an event ahead of `now`) enters at its own.
        let leave = self.buckets[start..]
            .iter()
            .take_while(|b| i64::from(b.day) <= today)
            .find(|b| b.counts[c] != 0)
            .map(|b| i64::from(b.day) + days);
        let enter = self.buckets[start..]
            .iter()
            .find(|b| i64::from(b.day) > today && b.counts[c] != 0)
            .map(|b| i64::from(b.day));
        let next = match (leave, enter) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|d| Timestamp(d.saturating_mul(MS_PER_DAY)))
    }

    /// The buckets, oldest first (for encoding and inspection).
    pub fn buckets(&self) -> &[DayBucket] {
        &self.buckets
    }

    /// Lifetime totals in [`Counter`] order (for encoding).
    pub fn lifetime_totals(&self) -> [i64; COUNTERS] {
        self.lifetime
    }

    /// Rebuilds from encoded parts. Buckets must be sorted by day with no
    /// duplicates; the decoder checks that before calling.
    pub(crate) fn from_parts(buckets: Vec<DayBucket>, lifetime: [i64; COUNTERS]) -> DayBuckets {
        DayBuckets { buckets, lifetime }
    }
}

impl WindowSums {
    /// The precomputed sum for `counter` over `w`; `None` for lifetime.
    pub fn get(&self, counter: Counter, w: Window) -> Option<i64> {
        window_index(w).map(|i| self.sums[i][counter as usize])
    }

    /// [`DayBuckets::next_change`] at any instant of day `self.day`, from the
    /// same pass: `Some(answer)`, or `None` when it cannot tell (a future
    /// bucket exists) and the buckets must be asked.
    pub fn next_change(&self, counter: Counter, w: Window) -> Option<Option<Timestamp>> {
        let Some(wi) = window_index(w) else { return Some(None) };
        self.next_change_at(wi, counter as usize)
    }

    /// [`WindowSums::next_change`] by window index (into [`WindowSums::sums`])
    /// and counter index; both must be in range.
    #[inline]
    pub fn next_change_at(&self, window: usize, counter: usize) -> Option<Option<Timestamp>> {
        if self.future {
            return None;
        }
        let oldest = self.oldest[window][counter];
        if oldest == i64::MAX {
            return Some(None);
        }
        Some(Some(Timestamp((oldest + WINDOW_DAYS[window]).saturating_mul(MS_PER_DAY))))
    }
}

fn clamp_day(day: i64) -> i32 {
    day.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MS_PER_DAY;

    #[test]
    fn window_boundaries_are_utc_midnights() {
        let mut b = DayBuckets::default();
        let t0 = Timestamp(20_000 * DAY + 15 * 3_600_000); // day 20000, 15:00
        b.add(t0, Counter::Orders, 1);
        assert_eq!(b.sum(Counter::Orders, Window::D7, t0), 1);
        // Still counted on day 20006 at 23:59:59.999, gone at day 20007 00:00.
        assert_eq!(b.sum(Counter::Orders, Window::D7, Timestamp(20_007 * DAY - 1)), 1);
        assert_eq!(b.sum(Counter::Orders, Window::D7, Timestamp(20_007 * DAY)), 0);
        assert_eq!(b.next_change(Counter::Orders, Window::D7, t0), Some(Timestamp(20_007 * DAY)));
        assert_eq!(b.next_change(Counter::Orders, Window::Lifetime, t0), None);
        assert_eq!(b.next_change(Counter::PageViews, Window::D7, t0), None);
        assert_eq!(b.lifetime(Counter::Orders), 1);
    }

    #[test]
    fn absurd_totals_saturate_in_sums_instead_of_panicking() {
        // Two days' spend that each fit in an i64 but not together: `add`
        // saturates, and so must every sum read at evaluation time.
        let mut b = DayBuckets::default();
        b.add(Timestamp(100 * DAY), Counter::SpendCents, i64::MAX);
        b.add(Timestamp(101 * DAY), Counter::SpendCents, i64::MAX - 1);
        b.add(Timestamp(102 * DAY), Counter::SpendCents, 5);
        assert_eq!(b.lifetime(Counter::SpendCents), i64::MAX);
        let now = Timestamp(102 * DAY + 1);
        let s = b.sums_at(now);
        for w in [Window::D7, Window::D30, Window::D90, Window::D365] {
            assert_eq!(s.get(Counter::SpendCents, w), Some(i64::MAX), "{w:?}");
            assert_eq!(b.sum(Counter::SpendCents, w, now), i64::MAX, "{w:?}");
        }
        assert_eq!(s.oldest[0][Counter::SpendCents as usize], 100);
    }

    #[test]
    fn sums_at_matches_sum_and_next_change_per_window() {
        // Buckets in every band (and in the future of the earlier days),
        // against the per-window reads.
        let mut b = DayBuckets::default();
        for (d, c, n) in [(600, 0, 1), (700, 1, 250), (880, 2, 3), (900, 0, 2), (950, 3, 4), (975, 4, 5), (978, 0, 1)] {
            b.add(Timestamp(d * DAY), Counter::ALL[c], n);
        }
        for today in [900, 960, 979, 1000, 1100] {
            let now = Timestamp(today * DAY + 5);
            let s = b.sums_at(now);
            assert_eq!(s.future, today < 978, "day {today}");
            for w in [Window::D7, Window::D30, Window::D90, Window::D365] {
                for c in Counter::ALL {
                    assert_eq!(s.get(c, w), Some(b.sum(c, w, now)), "day {today} {w:?} {c:?}");
                    if !s.future {
                        assert_eq!(s.next_change(c, w), Some(b.next_change(c, w, now)), "day {today} {w:?} {c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn old_buckets_are_pruned_but_lifetime_kept() {
        let mut b = DayBuckets::default();
        for d in 0..1000 {
            b.add(Timestamp(d * DAY), Counter::PageViews, 2);
        }
        assert!(b.buckets().len() <= KEPT_DAYS as usize);
        assert_eq!(b.lifetime(Counter::PageViews), 2000);
        assert_eq!(b.sum(Counter::PageViews, Window::D365, Timestamp(999 * DAY)), 730);
        let s = b.sums_at(Timestamp(999 * DAY));
        assert_eq!(s.get(Counter::PageViews, Window::D30), Some(60));
        // A late event inside the horizon lands in its own day.
        b.add(Timestamp(900 * DAY), Counter::Orders, 1);
        assert_eq!(b.sum(Counter::Orders, Window::D365, Timestamp(999 * DAY)), 1);
        // One outside the horizon only counts for lifetime.
        b.add(Timestamp(10 * DAY), Counter::Orders, 1);
        assert_eq!(b.lifetime(Counter::Orders), 2);
        assert_eq!(b.sum(Counter::Orders, Window::D365, Timestamp(999 * DAY)), 1);
    }
}
