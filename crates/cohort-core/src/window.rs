//! Exact windowed counters, bounded per customer.
//!
//! **Definition** (what rules read, and what the property test recounts):
//! a contribution at time `t` (an order, its spend, a page view, a product
//! view, a session start) counts in the `N`-day window at instant `now` iff
//! `now - N days < t <= now`, to the millisecond. So "orders in 30 days" at
//! 2024-05-31 15:00:00.000 counts orders from 2024-05-01 15:00:00.001 on,
//! and an order leaves the window exactly 30 days after it was placed, the
//! instant [`Windows::next_change`] reports, so timers fire exactly when a
//! count drops.
//!
//! **Bounds.** A customer who clicks a thousand times a day must still fit
//! in a few kilobytes, so each counter keeps its newest [`MAX_EXACT`]
//! contributions with their exact times (contributions at the same
//! millisecond share one entry); one older than the longest window
//! ([`KEPT_DAYS`]) can never count again and is dropped when its counter is
//! next added to (until then it costs space, not time: sums search past
//! it). A contribution pushed out by newer ones is
//! *folded* into a per-UTC-day bucket of that counter: a folded contribution
//! counts in the `N`-day window while `day(now) - N < day(t) <= day(now)`,
//! i.e. it may leave up to a day early. So windows are exact for every
//! customer with at most [`MAX_EXACT`] contributions of a counter in the
//! window, which is every customer's orders and spend in practice (128
//! orders a year), and for the busiest browsers exact over their newest 128
//! page views and day-precise before that. Lifetime totals are always
//! exact. States stored before format 2 had only day buckets: those read as
//! folded contributions, and age out within a year.
//!
//! Sums saturate at `i64::MAX` (so absurd totals cannot make an evaluation
//! panic).

use crate::rules::Window;
use crate::time::{Timestamp, MS_PER_DAY};
use std::collections::VecDeque;

/// How many days of contributions are kept: the longest window. Older ones
/// can never be counted again (lifetime totals are kept separately).
pub const KEPT_DAYS: i64 = 365;

/// Contributions of one counter kept with their exact times.
pub const MAX_EXACT: usize = 128;

/// The counters. The order is the encoding order: append only.
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

/// One UTC day's folded contributions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DayBucket {
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
    pub counts: [i64; COUNTERS],
}

/// One counter's exact contributions: `(time, running total)`, sorted by
/// time, one entry per millisecond. The running total (saturating) makes a
/// window's sum two binary searches instead of a scan.
#[derive(Clone, Debug, Default)]
struct Series {
    entries: VecDeque<(i64, i64)>,
    /// The running total before the first entry.
    base: i64,
}

impl PartialEq for Series {
    /// Equal contributions, whatever the base the running totals start from.
    fn eq(&self, other: &Series) -> bool {
        self.entries.len() == other.entries.len() && self.amounts().eq(other.amounts())
    }
}

impl Series {
    /// `(time, amount)` per entry, oldest first.
    fn amounts(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let mut prev = self.base;
        self.entries.iter().map(move |&(t, cum)| {
            let a = cum.saturating_sub(prev);
            prev = cum;
            (t, a)
        })
    }

    fn total_before(&self, i: usize) -> i64 {
        if i == 0 {
            self.base
        } else {
            self.entries[i - 1].1
        }
    }

    /// Adds `amount` at `t`; the entry goes where its time belongs.
    fn add(&mut self, t: i64, amount: i64) {
        match self.entries.back_mut() {
            Some(last) if last.0 == t => last.1 = last.1.saturating_add(amount),
            Some(&mut (lt, cum)) if lt < t => self.entries.push_back((t, cum.saturating_add(amount))),
            None => self.entries.push_back((t, self.base.saturating_add(amount))),
            Some(_) => {
                // Late: insert (or merge) in order, then move every later
                // running total.
                let i = self.entries.partition_point(|e| e.0 < t);
                if self.entries[i].0 != t {
                    let before = self.total_before(i);
                    self.entries.insert(i, (t, before));
                }
                for e in self.entries.range_mut(i..) {
                    e.1 = e.1.saturating_add(amount);
                }
            }
        }
    }

    /// Removes the oldest entry, returning its time and amount.
    fn pop_oldest(&mut self) -> Option<(i64, i64)> {
        let (t, cum) = self.entries.pop_front()?;
        let amount = cum.saturating_sub(self.base);
        self.base = cum;
        Some((t, amount))
    }

    /// The sum over `(from, to]` and when it next changes after `to` (ms;
    /// `i64::MAX`: never) for a window of `len` ms: the oldest counted entry
    /// leaving at its time + `len`, or the first entry after `to` entering.
    #[inline]
    fn window(&self, end: usize, to: i64, len: i64) -> (i64, i64) {
        let from = to.saturating_sub(len);
        // Entries from `end` on are after `to`, so after `from` too. Most
        // often every kept entry is in the window: no search.
        let start = match self.entries.front() {
            Some(first) if first.0 > from => 0,
            _ => self.entries.partition_point(|e| e.0 <= from).min(end),
        };
        let sum = self.total_before(end).saturating_sub(self.total_before(start));
        let leave = if start < end { self.entries[start].0.saturating_add(len) } else { i64::MAX };
        let enter = self.entries.get(end).map_or(i64::MAX, |e| e.0);
        (sum, leave.min(enter))
    }

    /// How many entries are at or before `to`.
    #[inline]
    fn end(&self, to: i64) -> usize {
        match self.entries.back() {
            Some(last) if last.0 > to => self.entries.partition_point(|e| e.0 <= to),
            _ => self.entries.len(),
        }
    }
}

/// Every counter's exact contributions, folded day buckets and lifetime
/// totals (see the module doc).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Windows {
    exact: [Series; COUNTERS],
    /// Folded contributions, sorted by day, at most one bucket per day.
    folded: Vec<DayBucket>,
    lifetime: [i64; COUNTERS],
}

/// Window sums for the windowed counters the rules read at one instant,
/// computed once so that evaluating twenty rules does not search twenty
/// times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WindowSums {
    /// The instant the sums are for.
    pub at: Timestamp,
    /// Which `(window, counter)` pairs are computed: bit
    /// [`WindowSums::bit`]; the others read 0 and never change here, and
    /// [`WindowSums::get`] and [`WindowSums::next_change`] do not answer
    /// for them.
    pub mask: u32,
    /// `sums[window][counter]` for windows 7, 30, 90, 365 days.
    pub sums: [[i64; COUNTERS]; 4],
    /// When each of `sums` next changes with no new event, in ms since the
    /// epoch (`i64::MAX`: never): [`Windows::next_change`].
    pub next: [[i64; COUNTERS]; 4],
    /// Lifetime totals, so that one struct answers every counter field.
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

impl Windows {
    /// Adds `amount` to `counter` at `time`. A contribution older than the
    /// kept horizon (relative to the counter's newest) only counts in the
    /// lifetime total.
    pub fn add(&mut self, time: Timestamp, counter: Counter, amount: i64) {
        if amount == 0 {
            return;
        }
        let c = counter as usize;
        self.lifetime[c] = self.lifetime[c].saturating_add(amount);
        let t = time.as_millis();
        let horizon = KEPT_DAYS * MS_PER_DAY;
        let s = &mut self.exact[c];
        if s.entries.back().is_some_and(|last| t <= last.0.saturating_sub(horizon)) {
            return;
        }
        // Full, and the new contribution is the newest: fold the oldest
        // first, so the buffer never grows past the bound.
        if s.entries.len() >= MAX_EXACT && s.entries.back().is_some_and(|last| last.0 < t) {
            if let Some((old, amount)) = s.pop_oldest() {
                fold(&mut self.folded, old.div_euclid(MS_PER_DAY), c, amount);
            }
        }
        s.add(t, amount);
        // Contributions no window can count any more go; beyond the bound,
        // the oldest are folded into their days.
        let newest = s.entries.back().map_or(t, |e| e.0);
        while s.entries.front().is_some_and(|e| e.0 <= newest.saturating_sub(horizon)) {
            s.pop_oldest();
        }
        while s.entries.len() > MAX_EXACT {
            if let Some((old, amount)) = s.pop_oldest() {
                fold(&mut self.folded, old.div_euclid(MS_PER_DAY), c, amount);
            }
        }
        prune_folded(&mut self.folded, newest.div_euclid(MS_PER_DAY));
    }

    /// The value of `counter` over window `w` at `now` (see the module doc).
    pub fn sum(&self, counter: Counter, w: Window, now: Timestamp) -> i64 {
        match window_index(w) {
            None => self.lifetime[counter as usize],
            Some(wi) => self.sums_for(now, WindowSums::bit(wi, counter as usize)).sums[wi][counter as usize],
        }
    }

    /// Every windowed sum at `now`, and when each next changes.
    pub fn sums_at(&self, now: Timestamp) -> WindowSums {
        self.sums_for(now, WindowSums::ALL)
    }

    /// The windowed sums of the `(window, counter)` pairs in `mask` (bits
    /// [`WindowSums::bit`]) at `now`, and when each next changes: what an
    /// evaluation of rules that read only those needs
    /// ([`crate::rules::RuleSet::windows_read`]). Each is two binary
    /// searches in its counter's exact contributions.
    pub fn sums_for(&self, now: Timestamp, mask: u32) -> WindowSums {
        let to = now.as_millis();
        let mut out = WindowSums {
            at: now,
            mask,
            sums: [[0; COUNTERS]; 4],
            next: [[i64::MAX; COUNTERS]; 4],
            lifetime: self.lifetime,
        };
        for (c, s) in self.exact.iter().enumerate() {
            if s.entries.is_empty() || mask & WindowSums::counter_bits(c) == 0 {
                continue;
            }
            let end = s.end(to);
            for (wi, days) in WINDOW_DAYS.iter().enumerate() {
                if mask & WindowSums::bit(wi, c) != 0 {
                    let (sum, next) = s.window(end, to, days * MS_PER_DAY);
                    out.sums[wi][c] = sum;
                    out.next[wi][c] = next;
                }
            }
        }
        if !self.folded.is_empty() {
            self.add_folded(now, mask, &mut out);
        }
        out
    }

    /// The folded buckets' part of [`Windows::sums_at`], with day
    /// semantics, in one pass from the newest day (every window is a run of
    /// the newest buckets).
    /// Only the counters `mask` asks for, and nothing at all when none of
    /// them has folded contributions (a busy browser folds page views the
    /// rules may never read).
    #[inline(never)]
    fn add_folded(&self, now: Timestamp, mask: u32, out: &mut WindowSums) {
        let mut present = 0u32;
        for b in &self.folded {
            for (c, n) in b.counts.iter().enumerate() {
                if *n != 0 {
                    present |= WindowSums::counter_bits(c);
                }
            }
        }
        let wanted = present & mask;
        if wanted == 0 {
            return;
        }
        let today = now.day();
        let end = self.folded.partition_point(|b| i64::from(b.day) <= today);
        // A bucket after today (a clock behind the events) enters at its midnight.
        for b in &self.folded[end..] {
            for c in 0..COUNTERS {
                if b.counts[c] != 0 {
                    let enter = i64::from(b.day).saturating_mul(MS_PER_DAY);
                    for wi in 0..WINDOW_DAYS.len() {
                        if wanted & WindowSums::bit(wi, c) != 0 {
                            out.next[wi][c] = out.next[wi][c].min(enter);
                        }
                    }
                }
            }
        }
        let mut sum = [0i64; COUNTERS];
        let mut oldest = [i64::MAX; COUNTERS];
        let mut wi = 0;
        let mut flush = |wi: usize, sum: &[i64; COUNTERS], oldest: &[i64; COUNTERS]| {
            for c in (0..COUNTERS).filter(|&c| wanted & WindowSums::bit(wi, c) != 0) {
                out.sums[wi][c] = out.sums[wi][c].saturating_add(sum[c]);
                if oldest[c] != i64::MAX {
                    let leave = (oldest[c] + WINDOW_DAYS[wi]).saturating_mul(MS_PER_DAY);
                    out.next[wi][c] = out.next[wi][c].min(leave);
                }
            }
        };
        for b in self.folded[..end].iter().rev() {
            let day = i64::from(b.day);
            while today - day >= WINDOW_DAYS[wi] {
                flush(wi, &sum, &oldest);
                wi += 1;
                if wi == WINDOW_DAYS.len() {
                    return;
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
            flush(w, &sum, &oldest);
        }
    }

    /// Lifetime total of `counter`.
    pub fn lifetime(&self, counter: Counter) -> i64 {
        self.lifetime[counter as usize]
    }

    /// The earliest instant `> now` at which `sum(counter, w, _)` changes with
    /// no new event: the oldest counted contribution leaving the window (or
    /// a later one entering it). `None` for lifetime or when nothing would
    /// change.
    pub fn next_change(&self, counter: Counter, w: Window, now: Timestamp) -> Option<Timestamp> {
        let wi = window_index(w)?;
        let next = self.sums_for(now, WindowSums::bit(wi, counter as usize)).next[wi][counter as usize];
        (next != i64::MAX).then_some(Timestamp(next))
    }

    /// A counter's exact contributions, `(time, amount)`, oldest first (for
    /// encoding and inspection).
    pub fn exact(&self, counter: Counter) -> impl Iterator<Item = (Timestamp, i64)> + '_ {
        self.exact[counter as usize].amounts().map(|(t, a)| (Timestamp(t), a))
    }

    /// How many exact contributions `counter` keeps.
    pub fn exact_len(&self, counter: Counter) -> usize {
        self.exact[counter as usize].entries.len()
    }

    /// The folded day buckets, oldest first (for encoding and inspection).
    pub fn folded(&self) -> &[DayBucket] {
        &self.folded
    }

    /// Lifetime totals in [`Counter`] order (for encoding).
    pub fn lifetime_totals(&self) -> [i64; COUNTERS] {
        self.lifetime
    }

    /// For the decoder: refills counter `c`'s exact contributions with the
    /// `n` `(time, amount)` pairs `next` reads, in time order, keeping the
    /// series' allocation.
    pub(crate) fn decode_exact<E>(
        &mut self,
        c: usize,
        n: usize,
        mut next: impl FnMut() -> Result<(i64, i64), E>,
    ) -> Result<(), E> {
        let s = &mut self.exact[c];
        s.entries.clear();
        s.base = 0;
        s.entries.reserve_exact(n);
        let mut cum = 0i64;
        for _ in 0..n {
            let (t, amount) = next()?;
            cum = cum.saturating_add(amount);
            s.entries.push_back((t, cum));
        }
        Ok(())
    }

    /// For the decoder: the folded day buckets, to refill in day order.
    pub(crate) fn folded_mut(&mut self) -> &mut Vec<DayBucket> {
        &mut self.folded
    }

    /// For the decoder: the lifetime totals.
    pub(crate) fn lifetime_mut(&mut self) -> &mut [i64; COUNTERS] {
        &mut self.lifetime
    }
}

/// Adds a folded contribution to its day's bucket.
fn fold(folded: &mut Vec<DayBucket>, day: i64, c: usize, amount: i64) {
    let day = day.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    match folded.binary_search_by_key(&day, |b| b.day) {
        Ok(i) => folded[i].counts[c] = folded[i].counts[c].saturating_add(amount),
        Err(i) => {
            let mut b = DayBucket { day, counts: [0; COUNTERS] };
            b.counts[c] = amount;
            folded.insert(i, b);
        }
    }
}

/// Drops folded buckets no window can count relative to `newest_day`.
fn prune_folded(folded: &mut Vec<DayBucket>, newest_day: i64) {
    let Some(first) = folded.first() else { return };
    let limit = newest_day - KEPT_DAYS;
    if i64::from(first.day) <= limit {
        let keep_from = folded.partition_point(|b| i64::from(b.day) <= limit);
        folded.drain(..keep_from);
    }
}

impl WindowSums {
    /// Every `(window, counter)` pair.
    pub const ALL: u32 = (1 << (4 * COUNTERS)) - 1;

    /// The [`WindowSums::mask`] bit of a window index (into
    /// [`WindowSums::sums`]) and a counter index.
    pub const fn bit(window: usize, counter: usize) -> u32 {
        1 << (window * COUNTERS + counter)
    }

    /// The bits of every window of one counter.
    const fn counter_bits(counter: usize) -> u32 {
        Self::bit(0, counter) | Self::bit(1, counter) | Self::bit(2, counter) | Self::bit(3, counter)
    }

    /// Whether the sums answer for `counter` over `w` (lifetime: always).
    pub fn has(&self, counter: Counter, w: Window) -> bool {
        window_index(w).is_none_or(|wi| self.mask & Self::bit(wi, counter as usize) != 0)
    }

    /// The precomputed sum for `counter` over `w`; `None` for lifetime and
    /// for a pair not computed.
    pub fn get(&self, counter: Counter, w: Window) -> Option<i64> {
        window_index(w)
            .filter(|&i| self.mask & Self::bit(i, counter as usize) != 0)
            .map(|i| self.sums[i][counter as usize])
    }

    /// [`Windows::next_change`] at [`WindowSums::at`]; `None` also for a
    /// pair not computed (see [`WindowSums::has`]).
    pub fn next_change(&self, counter: Counter, w: Window) -> Option<Timestamp> {
        let wi = window_index(w)?;
        self.next_change_at(wi, counter as usize)
    }

    /// [`WindowSums::next_change`] by window index (into [`WindowSums::sums`])
    /// and counter index; both must be in range.
    #[inline]
    pub fn next_change_at(&self, window: usize, counter: usize) -> Option<Timestamp> {
        let next = self.next[window][counter];
        (next != i64::MAX).then_some(Timestamp(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MS_PER_DAY;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_contribution_leaves_exactly_one_window_length_after_it() {
        let mut b = Windows::default();
        let t0 = 20_000 * DAY + 23 * HOUR; // late in a UTC day
        b.add(Timestamp(t0), Counter::Orders, 1);
        assert_eq!(b.sum(Counter::Orders, Window::D7, Timestamp(t0)), 1);
        // Still counted a millisecond before t0 + 7 days, gone at it: not at
        // the midnight of its day + 7, 23 hours earlier.
        assert_eq!(b.sum(Counter::Orders, Window::D7, Timestamp(t0 + 7 * DAY - 1)), 1);
        assert_eq!(b.sum(Counter::Orders, Window::D7, Timestamp(t0 + 7 * DAY)), 0);
        assert_eq!(b.next_change(Counter::Orders, Window::D7, Timestamp(t0)), Some(Timestamp(t0 + 7 * DAY)));
        assert_eq!(b.next_change(Counter::Orders, Window::D30, Timestamp(t0 + DAY)), Some(Timestamp(t0 + 30 * DAY)));
        assert_eq!(b.next_change(Counter::Orders, Window::Lifetime, Timestamp(t0)), None);
        assert_eq!(b.next_change(Counter::PageViews, Window::D7, Timestamp(t0)), None);
        assert_eq!(b.lifetime(Counter::Orders), 1);
        // A contribution after `now` enters at its own instant.
        assert_eq!(b.sum(Counter::Orders, Window::D7, Timestamp(t0 - 1)), 0);
        assert_eq!(b.next_change(Counter::Orders, Window::D7, Timestamp(t0 - HOUR)), Some(Timestamp(t0)));
    }

    #[test]
    fn late_contributions_land_in_order_and_same_instants_merge() {
        let mut b = Windows::default();
        for (t, n) in [(10 * DAY, 1), (12 * DAY, 2), (11 * DAY, 4), (12 * DAY, 8), (9 * DAY, 16)] {
            b.add(Timestamp(t), Counter::SpendCents, n);
        }
        let got: Vec<(Timestamp, i64)> = b.exact(Counter::SpendCents).collect();
        let want = [(9 * DAY, 16), (10 * DAY, 1), (11 * DAY, 4), (12 * DAY, 10)];
        assert_eq!(got, want.map(|(t, n)| (Timestamp(t), n)));
        assert_eq!(b.sum(Counter::SpendCents, Window::D7, Timestamp(12 * DAY)), 31);
        assert_eq!(b.sum(Counter::SpendCents, Window::D7, Timestamp(17 * DAY)), 14);
        assert_eq!(b.next_change(Counter::SpendCents, Window::D7, Timestamp(17 * DAY)), Some(Timestamp(18 * DAY)));
    }

    #[test]
    fn absurd_totals_saturate_in_sums_instead_of_panicking() {
        let mut b = Windows::default();
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
    }

    #[test]
    fn beyond_the_bound_the_oldest_contributions_fold_into_days() {
        let mut b = Windows::default();
        // 200 page views, one an hour: the oldest 72 are folded.
        let t0 = 1_000 * DAY + 30 * 60_000;
        for i in 0..200 {
            b.add(Timestamp(t0 + i * HOUR), Counter::PageViews, 1);
        }
        assert_eq!(b.exact_len(Counter::PageViews), MAX_EXACT);
        let folded: i64 = b.folded().iter().map(|d| d.counts[Counter::PageViews as usize]).sum();
        assert_eq!(folded, 200 - MAX_EXACT as i64);
        assert_eq!(b.lifetime(Counter::PageViews), 200);
        let now = Timestamp(t0 + 199 * HOUR);
        assert_eq!(b.sum(Counter::PageViews, Window::D30, now), 200);
        // The 7-day window's edge falls among the exact ones: exact.
        assert_eq!(b.sum(Counter::PageViews, Window::D7, Timestamp(t0 + 7 * DAY + 100 * HOUR)), 99);
        // Folded days leave at the midnight after day + 7: the first day
        // (1,000) had 24 views, all folded. 168 views are at or before the
        // instants asked.
        assert_eq!(b.sum(Counter::PageViews, Window::D7, Timestamp(1_007 * DAY - 1)), 168);
        assert_eq!(b.sum(Counter::PageViews, Window::D7, Timestamp(1_007 * DAY)), 144);
        assert_eq!(
            b.next_change(Counter::PageViews, Window::D7, Timestamp(1_007 * DAY - 1)),
            Some(Timestamp(1_007 * DAY))
        );
        // Sums for the rules' pairs only agree, folded days included.
        for now in [1_007 * DAY - 1, 1_007 * DAY, 1_008 * DAY + 5, 1_040 * DAY] {
            let now = Timestamp(now);
            for (wi, w) in [Window::D7, Window::D30, Window::D90, Window::D365].into_iter().enumerate() {
                let only = b.sums_for(now, WindowSums::bit(wi, Counter::PageViews as usize));
                assert_eq!(only.get(Counter::PageViews, w), Some(b.sum(Counter::PageViews, w, now)), "{now:?} {w:?}");
                assert_eq!(only.next_change(Counter::PageViews, w), b.next_change(Counter::PageViews, w, now));
                let other = b.sums_for(now, WindowSums::bit(wi, Counter::Orders as usize));
                assert_eq!(other.sums[wi][Counter::PageViews as usize], 0, "not asked for");
            }
        }
    }

    #[test]
    fn sums_at_matches_sum_and_next_change_per_window() {
        let mut b = Windows::default();
        for (d, c, n) in [(600, 0, 1), (700, 1, 250), (880, 2, 3), (900, 0, 2), (950, 3, 4), (975, 4, 5), (978, 0, 1)] {
            b.add(Timestamp(d * DAY + 5 * HOUR), Counter::ALL[c], n);
        }
        for now in [900 * DAY, 960 * DAY + 5, 978 * DAY + 5 * HOUR, 1000 * DAY, 1100 * DAY] {
            let now = Timestamp(now);
            let s = b.sums_at(now);
            for w in [Window::D7, Window::D30, Window::D90, Window::D365] {
                for c in Counter::ALL {
                    assert_eq!(s.get(c, w), Some(b.sum(c, w, now)), "{now:?} {w:?} {c:?}");
                    assert_eq!(s.next_change(c, w), b.next_change(c, w, now), "{now:?} {w:?} {c:?}");
                }
            }
        }
    }

    #[test]
    fn masked_sums_answer_only_for_their_pairs() {
        let mut b = Windows::default();
        b.add(Timestamp(10 * DAY), Counter::Orders, 1);
        b.add(Timestamp(10 * DAY), Counter::PageViews, 3);
        let now = Timestamp(12 * DAY);
        let mask = WindowSums::bit(1, Counter::Orders as usize);
        let s = b.sums_for(now, mask);
        let all = b.sums_at(now);
        assert_eq!(s.get(Counter::Orders, Window::D30), all.get(Counter::Orders, Window::D30));
        assert_eq!(s.next_change(Counter::Orders, Window::D30), Some(Timestamp(40 * DAY)));
        assert!(s.has(Counter::Orders, Window::D30) && s.has(Counter::PageViews, Window::Lifetime));
        assert!(!s.has(Counter::PageViews, Window::D30));
        assert_eq!(
            (s.get(Counter::PageViews, Window::D30), s.next_change(Counter::PageViews, Window::D30)),
            (None, None)
        );
        let rules = crate::rules::RuleSet::from_yaml(
            "t.yaml",
            "version: 1\nsegments:\n  - { name: a, when: 'orders.30d >= 2 && page_views.lifetime > 0' }\n",
        )
        .expect("rules load");
        assert_eq!(rules.windows_read(), mask, "lifetime totals need no window");
    }

    #[test]
    fn old_contributions_are_dropped_but_lifetime_kept() {
        let mut b = Windows::default();
        for d in 0..1000 {
            b.add(Timestamp(d * DAY), Counter::Orders, 2);
        }
        assert!(b.exact_len(Counter::Orders) <= MAX_EXACT);
        assert!(b.folded().len() <= KEPT_DAYS as usize);
        assert_eq!(b.lifetime(Counter::Orders), 2000);
        assert_eq!(b.sum(Counter::Orders, Window::D365, Timestamp(999 * DAY)), 730);
        assert_eq!(b.sum(Counter::Orders, Window::D30, Timestamp(999 * DAY)), 60);
        // One outside the horizon only counts for lifetime.
        b.add(Timestamp(10 * DAY), Counter::Orders, 1);
        assert_eq!(b.lifetime(Counter::Orders), 2001);
        assert_eq!(b.sum(Counter::Orders, Window::D365, Timestamp(999 * DAY)), 730);
    }
}
