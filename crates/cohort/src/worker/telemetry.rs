//! Everything the worker tells, in one place: each thing worth telling is
//! one event type whose `emit` writes its log line and updates its metrics
//! together, as Vector's `internal_events` do, so a log line never exists
//! without its counter or the other way round.
//!
//! Lines that can come in bursts (a run of bad input, a corrupt store) are
//! rate-limited: at most one per event and reason per [`LOG_INTERVAL`],
//! carrying how many were suppressed since the last one, as librdkafka's
//! own repeated lines do. Counters count every occurrence.

use super::inflight::Committed;
use super::records::Processed;
use crate::metrics::Metrics;
use cohort_kafka::InputRecord;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// At most one line per event and reason per interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The `topic` label of `cohort_output_errors_total`: a failed send fails
/// the batch's whole set, which is retried whole.
pub(super) const OUTPUT_ERRORS_LABEL: &str = "all";

/// The worker's metrics and its log rate limiter.
#[derive(Clone)]
pub(super) struct Telemetry {
    pub(super) metrics: Metrics,
    limiter: std::sync::Arc<RateLimiter>,
}

impl Telemetry {
    pub(super) fn new(metrics: Metrics) -> Telemetry {
        Telemetry { metrics, limiter: Default::default() }
    }

    pub(super) fn emit(&self, event: impl InternalEvent) {
        event.emit(self);
    }
}

/// Something the worker tells.
pub(super) trait InternalEvent {
    fn emit(self, t: &Telemetry);
}

/// An event's name and a reason.
type LineKey = (&'static str, &'static str);

/// Per (event, reason): when a line was last written, and how many were
/// suppressed since.
#[derive(Default)]
struct RateLimiter {
    seen: Mutex<BTreeMap<LineKey, (Instant, u64)>>,
}

impl RateLimiter {
    /// `Some(suppressed since the last line)` if a line may be written now.
    fn admit(&self, event: &'static str, reason: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(&(event, reason)) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                seen.insert((event, reason), (now, 0));
                Some(0)
            }
        }
    }
}

/// An input record went to the dead-letter topic.
pub(super) struct RecordDeadLettered<'a> {
    pub(super) record: &'a InputRecord<'a>,
    pub(super) reason: &'static str,
    /// The record could not be decoded at all (also `cohort_decode_errors_total`).
    pub(super) undecodable: bool,
}

impl InternalEvent for RecordDeadLettered<'_> {
    fn emit(self, t: &Telemetry) {
        t.metrics.dlq_records.with_label_values(&[self.reason]).inc();
        if self.undecodable {
            t.metrics.decode_errors.with_label_values(&[self.reason]).inc();
        }
        if let Some(suppressed) = t.limiter.admit("dead_lettered", self.reason, Instant::now()) {
            let r = self.record;
            warn!(
                topic = %r.topic, partition = r.partition, offset = r.offset, reason = self.reason,
                suppressed, "record sent to dlq (`suppressed`: more with this reason since the last such line)"
            );
        }
    }
}

/// A stored customer state did not decode; the customer starts afresh.
pub(super) struct CorruptStateReset<'a> {
    pub(super) partition: i32,
    pub(super) error: &'a dyn std::fmt::Display,
}

impl InternalEvent for CorruptStateReset<'_> {
    fn emit(self, t: &Telemetry) {
        t.metrics.decode_errors.with_label_values(&["corrupt_state"]).inc();
        if let Some(suppressed) = t.limiter.admit("corrupt_state", "corrupt_state", Instant::now()) {
            warn!(partition = self.partition, error = %self.error, suppressed, "undecodable customer state; starting it afresh");
        }
    }
}

/// A batch was acknowledged by the broker and committed to the store.
pub(super) struct BatchCommitted<'a> {
    pub(super) processed: &'a Processed,
    pub(super) committed: &'a Committed,
}

impl InternalEvent for BatchCommitted<'_> {
    fn emit(self, t: &Telemetry) {
        let (p, m) = (self.processed, &t.metrics);
        m.batch_records.observe(p.stats.records as f64);
        for (topic, n) in &p.stats.by_topic {
            m.input_records.with_label_values(&[topic.as_ref()]).inc_by(*n);
        }
        m.batch_duration.observe(self.committed.batch_duration.as_secs_f64());
        m.timers_fired.inc_by(p.stats.timers_fired);
        for (s, n) in &p.stats.entries {
            m.segment_entries.with_label_values(&[s]).inc_by(*n as u64);
        }
        for (s, n) in &p.stats.exits {
            m.segment_exits.with_label_values(&[s]).inc_by(*n as u64);
        }
        for (offer, holdout) in &p.stats.offers {
            m.offers_decided.with_label_values(&[offer.as_str(), if *holdout { "true" } else { "false" }]).inc();
        }
        for at in &p.output_event_times {
            let secs = self.committed.at.since(*at).as_millis().max(0) as f64 / 1000.0;
            m.event_to_output_latency.observe(secs);
        }
        debug!(
            records = p.stats.records,
            outputs = p.output_event_times.len(),
            took = ?self.committed.batch_duration,
            "batch committed"
        );
    }
}

/// Partitions were assigned to this worker and are ready.
pub(super) struct PartitionAssigned {
    pub(super) partition: i32,
    pub(super) timers: usize,
    pub(super) customers_in_segments: u64,
    /// As committed, in seconds since the epoch (0: nothing seen yet).
    pub(super) watermark_secs: i64,
}

impl InternalEvent for PartitionAssigned {
    fn emit(self, t: &Telemetry) {
        t.metrics.rebalances.with_label_values(&["assigned"]).inc();
        t.metrics.partition_watermark.with_label_values(&[&self.partition.to_string()]).set(self.watermark_secs);
        info!(
            partition = self.partition,
            timers = self.timers,
            memberships = self.customers_in_segments,
            "partition ready"
        );
    }
}

/// A partition was taken from this worker.
pub(super) struct PartitionRevoked {
    pub(super) partition: i32,
}

impl InternalEvent for PartitionRevoked {
    fn emit(self, t: &Telemetry) {
        t.metrics.rebalances.with_label_values(&["revoked"]).inc();
        // Its lag series go with the watchdog's next refresh.
        let _ = t.metrics.partition_watermark.remove_label_values(&[&self.partition.to_string()]);
        info!(partition = self.partition, "partition revoked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_writes_one_line_per_interval_and_counts_the_rest() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.admit("dead_lettered", "bad_json", t0), Some(0));
        for i in 1..=500 {
            assert_eq!(limiter.admit("dead_lettered", "bad_json", t0 + Duration::from_millis(i)), None);
        }
        // Another reason has its own allowance.
        assert_eq!(limiter.admit("dead_lettered", "oversized", t0), Some(0));
        assert_eq!(limiter.admit("dead_lettered", "bad_json", t0 + LOG_INTERVAL), Some(500));
        assert_eq!(limiter.admit("dead_lettered", "bad_json", t0 + LOG_INTERVAL), None);
    }
}
