//! Per-partition event-time watermarks.
//!
//! A partition's watermark is the highest event time seen on it minus the
//! allowed lateness: no event older than the watermark is expected any more,
//! so timers due at or before it can fire. In live mode an idle partition's
//! watermark also follows the wall clock (passed in, never read here), so
//! time-based segments such as "lapsed" fire for customers who never send
//! another event.

use crate::time::{Duration, Timestamp};

/// The watermark of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    allowed_lateness: Duration,
    max_event_time: Option<Timestamp>,
    current: Timestamp,
}

impl Watermark {
    /// A partition that has seen nothing. `start` is the watermark restored
    /// from the store (or [`Timestamp::MIN`]): watermarks never go back, even
    /// across restarts.
    pub fn new(allowed_lateness: Duration, start: Timestamp) -> Watermark {
        Watermark { allowed_lateness, max_event_time: None, current: start }
    }

    /// Records an event's time; returns the watermark after it.
    pub fn observe(&mut self, event_time: Timestamp) -> Timestamp {
        if self.max_event_time.is_none_or(|m| event_time > m) {
            self.max_event_time = Some(event_time);
        }
        self.advance_to(event_time - self.allowed_lateness)
    }

    /// Live mode: lets the wall clock carry the watermark forward on a
    /// partition whose events stopped. The same lateness applies, so an
    /// event that is merely in flight is not overtaken.
    pub fn observe_wall_clock(&mut self, now: Timestamp) -> Timestamp {
        self.advance_to(now - self.allowed_lateness)
    }

    /// The instant up to which timers may fire.
    pub fn current(&self) -> Timestamp {
        self.current
    }

    /// The highest event time seen since this value was created.
    pub fn max_event_time(&self) -> Option<Timestamp> {
        self.max_event_time
    }

    /// Whether an event at `event_time` is late: older than the watermark.
    /// Late events are still applied (state stays exact); rules evaluated at
    /// the watermark may already have fired on the earlier picture.
    pub fn is_late(&self, event_time: Timestamp) -> bool {
        event_time < self.current
    }

    fn advance_to(&mut self, candidate: Timestamp) -> Timestamp {
        if candidate > self.current {
            self.current = candidate;
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_mins(1);

    #[test]
    fn trails_the_highest_event_time_by_the_allowed_lateness() {
        let mut w = Watermark::new(MIN, Timestamp::MIN);
        assert_eq!(w.observe(Timestamp(600_000)), Timestamp(540_000));
        // An older event does not move it back.
        assert_eq!(w.observe(Timestamp(300_000)), Timestamp(540_000));
        assert!(w.is_late(Timestamp(300_000)));
        assert!(!w.is_late(Timestamp(540_000)));
        assert_eq!(w.max_event_time(), Some(Timestamp(600_000)));
    }

    #[test]
    fn the_wall_clock_carries_an_idle_partition_forward_but_never_back() {
        let mut w = Watermark::new(MIN, Timestamp::MIN);
        w.observe(Timestamp(600_000));
        assert_eq!(w.observe_wall_clock(Timestamp(3_600_000)), Timestamp(3_540_000));
        assert_eq!(w.observe_wall_clock(Timestamp(1_000_000)), Timestamp(3_540_000));
        assert_eq!(w.observe(Timestamp(700_000)), Timestamp(3_540_000));
    }

    #[test]
    fn a_restored_watermark_is_never_undercut() {
        let mut w = Watermark::new(MIN, Timestamp(10_000_000));
        assert_eq!(w.observe(Timestamp(600_000)), Timestamp(10_000_000));
    }
}
