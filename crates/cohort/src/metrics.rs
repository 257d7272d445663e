//! Every metric cohort exports, in one place.
//!
//! Names follow `cohort_<subsystem>_<name>_<unit>[_total]`. Labels are
//! bounded: topic, partition, segment, offer, reason, never a customer id.
//! Hot paths count once per batch, not once per event.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The worker's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Records read, by input topic.
    pub input_records: IntCounterVec,
    /// Records that could not become events, by reason (same reasons as the DLQ header).
    pub decode_errors: IntCounterVec,
    /// Records written to the dead-letter topic, by reason.
    pub dlq_records: IntCounterVec,
    /// Records per processed batch.
    pub batch_records: Histogram,
    /// Wall time from a batch's first record to its store commit.
    pub batch_duration: Histogram,
    /// From an event's event time to the commit of the outputs it caused.
    pub event_to_output_latency: Histogram,
    /// Segment entries and exits, by segment.
    pub segment_entries: IntCounterVec,
    pub segment_exits: IntCounterVec,
    /// Customers currently in each segment, on the partitions this worker owns.
    pub segment_population: IntGaugeVec,
    /// Next-best-offer decisions, by offer and whether the customer was held out.
    pub offers_decided: IntCounterVec,
    /// Timers fired (time-based rule re-evaluations).
    pub timers_fired: IntCounter,
    /// State cache hits and misses; hit ratio = hits / (hits + misses).
    pub state_cache_hits: IntCounter,
    pub state_cache_misses: IntCounter,
    /// RocksDB: live data on disk, memtables, pending compaction, stalls.
    pub store_size_bytes: IntGauge,
    pub store_memtable_bytes: IntGauge,
    pub store_pending_compaction_bytes: IntGauge,
    pub store_write_stalled: IntGauge,
    /// Records between the worker's position and the partition's end.
    pub consumer_lag_records: IntGaugeVec,
    /// Partitions assigned to this worker, and rebalances by kind.
    pub assigned_partitions: IntGauge,
    pub rebalances: IntCounterVec,
    /// Records sent to the output topics, by topic.
    pub output_records: IntCounterVec,
    /// Output sends that failed (the batch is retried), by topic.
    pub output_errors: IntCounterVec,
    /// Output records handed to the producer and not yet acknowledged.
    pub output_in_flight: IntGauge,
    /// Assigned partitions still restoring state (not yet consuming).
    pub restoring_partitions: IntGauge,
    /// Changelog records applied to the store, by kind (active: a partition
    /// this worker was assigned; standby: one it follows).
    pub restore_records: IntCounterVec,
    /// Changelog records still to apply in the restores under way.
    pub restore_remaining: IntGauge,
    /// Changelog partitions followed as warm standbys.
    pub standby_partitions: IntGauge,
    /// 1 while /readyz answers ready.
    pub ready: IntGauge,
    /// How long the worker has been waiting on the broker or the store,
    /// by what it waits for (`crate::liveness`); 0 for every other wait.
    pub stall_seconds: GaugeVec,
    /// Each owned partition's event-time watermark, in seconds since the epoch.
    pub partition_watermark: IntGaugeVec,
    /// The rules version in force (the label): 1 for it, 0 for those replaced.
    pub rules_info: IntGaugeVec,
    /// 1 while the rules in force are the worker's own rules file's, 0 while
    /// they are other rules (the group's, from the rules topic).
    pub rules_file_in_force: IntGauge,
    /// Rules files read after a change or SIGHUP, by result (`applied`,
    /// `refused`: did not compile, the rules in force keep running).
    pub rules_reloads: IntCounterVec,
    /// Owned partitions whose customers are being re-evaluated after a rules change.
    pub reevaluating_partitions: IntGauge,
    /// Stored customers the background re-evaluation has examined.
    pub reevaluated_customers: IntCounter,
    /// This build's version (the label); always 1.
    pub build_info: IntGaugeVec,
}

/// Latency buckets from 1 ms to ~30 s.
fn latency_buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

/// [`latency_buckets`], then on to a week: event-to-output latency is
/// measured from event time, so a backlog, a replay or a late producer
/// reads as minutes to days, not as "over 30 s".
fn event_latency_buckets() -> Vec<f64> {
    let mut b = latency_buckets();
    // 1 and 5 minutes, 15 minutes, 1 and 4 hours, 1, 3 and 7 days.
    b.extend([60.0, 300.0, 900.0, 3_600.0, 14_400.0, 86_400.0, 259_200.0, 604_800.0]);
    b
}

/// Label values a counter starts at 0 with, so a dashboard or an alert
/// reads 0 rather than "no data" before the first increment.
fn with_zeros(c: IntCounterVec, values: &[&str]) -> IntCounterVec {
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

/// The `reason`s of `cohort_input_decode_errors_total`: the codec's, and
/// `corrupt_state` for a stored state that does not decode (worker.rs).
pub fn decode_error_reasons() -> Vec<&'static str> {
    let mut v = cohort_codec::DecodeError::REASONS.to_vec();
    v.push("corrupt_state");
    v
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        Ok(Metrics {
            input_records: counter_vec("cohort_input_records_total", "Records read, by input topic.", &["topic"])?,
            decode_errors: with_zeros(
                counter_vec(
                    "cohort_input_decode_errors_total",
                    "Input records that could not become events, by reason.",
                    &["reason"],
                )?,
                &decode_error_reasons(),
            ),
            dlq_records: with_zeros(
                counter_vec(
                    "cohort_dlq_records_total",
                    "Records written to the dead-letter topic, by reason.",
                    &["reason"],
                )?,
                &crate::dlq::reason::all(),
            ),
            batch_records: histogram(
                "cohort_batch_size_records",
                "Records per processed batch.",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0],
            )?,
            batch_duration: histogram(
                "cohort_batch_duration_seconds",
                "Time a batch takes: processing, producing its outputs and committing the store (not the wait for the batch before it).",
                latency_buckets(),
            )?,
            event_to_output_latency: histogram(
                "cohort_event_to_output_latency_seconds",
                "From an event's event time to the commit of the outputs it caused.",
                event_latency_buckets(),
            )?,
            segment_entries: counter_vec(
                "cohort_segment_entries_total",
                "Customers entering a segment, by segment.",
                &["segment"],
            )?,
            segment_exits: counter_vec(
                "cohort_segment_exits_total",
                "Customers leaving a segment, by segment.",
                &["segment"],
            )?,
            segment_population: gauge_vec(
                "cohort_segment_population_customers",
                "Customers in each segment, exactly, over the partitions this worker owns.",
                &["segment"],
            )?,
            offers_decided: counter_vec(
                "cohort_offers_decided_total",
                "Next-best-offer decisions, by offer and holdout.",
                &["offer", "holdout"],
            )?,
            timers_fired: counter("cohort_timers_fired_total", "Timers fired: time-based re-evaluations.")?,
            state_cache_hits: counter("cohort_state_cache_hits_total", "Customer state reads served from memory.")?,
            state_cache_misses: counter(
                "cohort_state_cache_misses_total",
                "Customer state reads that went to RocksDB.",
            )?,
            store_size_bytes: gauge("cohort_store_size_bytes", "Live RocksDB data on disk.")?,
            store_memtable_bytes: gauge("cohort_store_memtable_bytes", "RocksDB memtables in memory.")?,
            store_pending_compaction_bytes: gauge(
                "cohort_store_pending_compaction_bytes",
                "RocksDB's estimate of bytes waiting for compaction.",
            )?,
            store_write_stalled: gauge("cohort_store_write_stalled", "1 while RocksDB is stalling writes.")?,
            consumer_lag_records: gauge_vec(
                "cohort_consumer_lag_records",
                "Records between this worker's position and the partition's end.",
                &["topic", "partition"],
            )?,
            assigned_partitions: gauge("cohort_consumer_assigned_partitions", "Input partitions this worker owns.")?,
            rebalances: counter_vec(
                "cohort_consumer_rebalances_total",
                "Consumer-group rebalances, by kind (assigned, revoked).",
                &["kind"],
            )?,
            output_records: counter_vec(
                "cohort_output_records_total",
                "Records produced, by output topic.",
                &["topic"],
            )?,
            output_errors: counter_vec(
                "cohort_output_errors_total",
                "Output sends that failed, by topic; the batch is retried.",
                &["topic"],
            )?,
            output_in_flight: gauge(
                "cohort_output_in_flight_records",
                "Output records handed to the producer and not yet acknowledged.",
            )?,
            restoring_partitions: gauge(
                "cohort_consumer_restoring_partitions",
                "Assigned partitions still restoring state.",
            )?,
            restore_records: counter_vec(
                "cohort_restore_records_total",
                "Changelog records applied to the store, by kind (active: an assigned partition's restore; standby).",
                &["kind"],
            )?,
            restore_remaining: gauge(
                "cohort_restore_remaining_records",
                "Changelog records still to apply in the restores under way.",
            )?,
            standby_partitions: gauge(
                "cohort_standby_partitions",
                "Changelog partitions this worker follows as a warm standby.",
            )?,
            ready: gauge("cohort_worker_ready", "1 while /readyz answers ready.")?,
            stall_seconds: {
                let g = GaugeVec::new(
                    Opts::new(
                        "cohort_worker_stall_seconds",
                        "How long the worker has been waiting, by what it waits for (group, fetch, produce, commit); \
                         0 for waits not under way. Past processing.stall_timeout, /readyz says not ready.",
                    ),
                    &["waiting_for"],
                )?;
                registry.register(Box::new(g.clone()))?;
                for label in crate::liveness::Waiting::LABELS {
                    g.with_label_values(&[label]).set(0.0);
                }
                g
            },
            partition_watermark: gauge_vec(
                "cohort_partition_watermark_seconds",
                "Each owned partition's event-time watermark, in seconds since the epoch.",
                &["partition"],
            )?,
            rules_info: gauge_vec(
                "cohort_rules_info",
                "The rules version in force, as a label (1); versions replaced since the start read 0.",
                &["version"],
            )?,
            rules_file_in_force: gauge(
                "cohort_rules_file_in_force",
                "1 while the rules in force are those of this worker's rules file; 0 while they are other rules \
                 (with rules.topic: the group's, and the file holds a version the group ran before).",
            )?,
            rules_reloads: counter_vec(
                "cohort_rules_reloads_total",
                "Rules files read after a change or SIGHUP, by result: applied, refused (did not compile; the rules \
                 in force keep running).",
                &["result"],
            )?,
            reevaluating_partitions: gauge(
                "cohort_reevaluation_partitions",
                "Owned partitions whose stored customers are being re-evaluated after a rules change.",
            )?,
            reevaluated_customers: counter(
                "cohort_reevaluated_customers_total",
                "Stored customers the background re-evaluation after a rules change has examined.",
            )?,
            build_info: gauge_vec("cohort_build_info", "This build's version, as a label.", &["version"])?,
            registry,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_follows_the_naming_convention() {
        let m = Metrics::new().expect("metrics register");
        m.input_records.with_label_values(&["clickstream"]).inc();
        m.batch_records.observe(3.0);
        for family in m.registry.gather() {
            let name = family.name();
            assert!(name.starts_with("cohort_"), "{name}");
            let unit_or_total = [
                "_total",
                "_seconds",
                "_bytes",
                "_records",
                "_customers",
                "_partitions",
                "_stalled",
                "_ready",
                "_in_force",
                "_info",
            ];
            assert!(unit_or_total.iter().any(|s| name.ends_with(s)), "{name} ends with a unit");
        }
        let text = m.render();
        assert!(text.contains("cohort_input_records_total{topic=\"clickstream\"} 1"), "{text}");
    }
}
