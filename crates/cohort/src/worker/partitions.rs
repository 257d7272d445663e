//! The partitions this worker owns: each one's partition task (loaded from
//! the store's metadata record and timers when assigned) and hot states;
//! and the exact segment populations they add up to.

use super::restore::Report;
use super::rules::{begin_reevaluation, ReevaluationRun};
use super::telemetry::{PartitionAssigned, PartitionRevoked};
use super::Worker;
use crate::hot::HotStates;
use anyhow::Context as _;
use cohort_core::partition::PartitionTask;
use cohort_kafka::{InputConsumer, PartitionEvent, TopicPartition};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the worker keeps in memory for a partition it owns.
pub(super) struct PartitionRuntime {
    /// Watermark, timers, learned tables, populations, positions.
    pub(super) task: PartitionTask,
    /// Decoded states of recently active customers (see [`crate::hot`]).
    pub(super) hot: HotStates,
    /// Customers a restore found in the changelog's tail, re-written by the
    /// partition's next batch (`cohort_core::partition::changelog`).
    pub(super) fence: BTreeSet<String>,
    /// The re-evaluation under way after a rules change, if any (`rules`).
    pub(super) reevaluation: Option<ReevaluationRun>,
}

impl Worker {
    pub(super) fn on_partition_event(&mut self, ev: PartitionEvent) -> anyhow::Result<()> {
        match ev {
            PartitionEvent::Assigned(parts) => {
                let mut by_partition: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
                for (tp, _) in parts {
                    by_partition.entry(tp.partition).or_default().push(tp);
                }
                for (p, tps) in by_partition {
                    if self.partitions.contains_key(&p) || self.restoring.contains_key(&p) {
                        continue;
                    }
                    match &self.restorer {
                        // Paused in the rebalance callback; resumed once restored.
                        Some(restorer) => {
                            restorer.restore(p);
                            self.restoring.insert(p, tps);
                        }
                        // Offline (`Worker::assign`): the store is all there is.
                        None => {
                            let rt = self.load_partition(p)?;
                            self.activate(p, rt);
                        }
                    }
                }
            }
            PartitionEvent::Revoked(parts) => {
                let revoked: BTreeSet<i32> = parts.iter().map(|p| p.partition).collect();
                for p in revoked {
                    if self.partitions.remove(&p).is_some() {
                        self.telemetry.emit(PartitionRevoked { partition: p });
                    }
                    if self.restoring.remove(&p).is_some() {
                        if let Some(r) = &self.restorer {
                            r.cancel(p);
                        }
                    }
                }
            }
        }
        self.ownership_changed();
        Ok(())
    }

    /// A restore finished (see `restore`): the partition is loaded from the
    /// store, its inputs sought to the restored offsets (no record below
    /// them is processed) and resumed. A partition revoked meanwhile is
    /// left alone.
    pub(super) fn on_restored(
        &mut self,
        consumer: &InputConsumer,
        p: i32,
        result: anyhow::Result<Report>,
    ) -> anyhow::Result<()> {
        let Some(tps) = self.restoring.remove(&p) else { return Ok(()) };
        match self.resume_restored(consumer, p, &tps, result) {
            Ok(()) => Ok(()),
            // The group took the partition away while it was restoring and
            // its revocation is still queued (librdkafka revokes in the
            // poll thread): its next owner restores it; nothing was read.
            Err(e) if !still_assigned(consumer, &tps) => {
                tracing::info!(partition = p, reason = %format!("{e:#}"), "partition revoked while restoring; left to its next owner");
                self.ownership_changed();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn resume_restored(
        &mut self,
        consumer: &InputConsumer,
        p: i32,
        tps: &[TopicPartition],
        result: anyhow::Result<Report>,
    ) -> anyhow::Result<()> {
        let report = result.with_context(|| format!("restoring partition {p} from the changelog"))?;
        let mut rt = self.load_partition(p)?;
        rt.fence = report.tail;
        for tp in tps {
            if let Some(next) = rt.task.next_offset(&tp.topic) {
                seek(consumer, tp, next)?;
                self.handed.reset(&tp.topic, p, next);
            }
        }
        consumer.resume(tps).with_context(|| format!("resuming partition {p} after its restore"))?;
        self.activate(p, rt);
        self.ownership_changed();
        Ok(())
    }

    fn activate(&mut self, p: i32, rt: PartitionRuntime) {
        self.telemetry.emit(PartitionAssigned {
            partition: p,
            timers: rt.task.timers_pending(),
            customers_in_segments: rt.task.populations().values().sum(),
            watermark_secs: rt.task.watermark().as_millis().max(0) / 1000,
        });
        self.partitions.insert(p, rt);
    }

    /// Gauges, readiness, hot budgets and the standby set after partitions
    /// came, went or finished restoring.
    fn ownership_changed(&mut self) {
        self.progress.set_partitions(self.partitions.keys().copied().collect());
        self.set_hot_budgets();
        let assigned = !self.partitions.is_empty() || !self.restoring.is_empty();
        self.readiness.assigned.store(assigned, Ordering::Relaxed);
        self.readiness.consuming.store(assigned && self.restoring.is_empty(), Ordering::Relaxed);
        if let Some(r) = &self.restorer {
            r.set_owned(self.partitions.keys().chain(self.restoring.keys()).copied().collect());
        }
        let m = &self.telemetry.metrics;
        m.assigned_partitions.set((self.partitions.len() + self.restoring.len()) as i64);
        m.restoring_partitions.set(self.restoring.len() as i64);
        self.publish_reevaluation();
        m.ready.set(i64::from(self.readiness.is_ready()));
        self.publish_populations();
    }

    /// The hot-state budget is the worker's, split over its partitions.
    pub(super) fn set_hot_budgets(&mut self) {
        let per_partition = self.config.store.rocksdb.state_cache_bytes as usize / self.partitions.len().max(1);
        for rt in self.partitions.values_mut() {
            rt.hot.set_budget(per_partition);
        }
    }

    /// A partition as last committed: its metadata record (watermark,
    /// tables, positions, populations) and its timers.
    pub(super) fn load_partition(&self, p: i32) -> anyhow::Result<PartitionRuntime> {
        let meta = self
            .store
            .partition_meta(p as u32)
            .with_context(|| format!("reading partition {p}'s metadata record from the store"))?
            .unwrap_or_default();
        let timers =
            self.store.partition_timers(p as u32).with_context(|| format!("reading partition {p}'s timers"))?;
        let mut rt = PartitionRuntime {
            task: PartitionTask::new(p, meta, timers, self.task_settings),
            hot: HotStates::default(),
            fence: BTreeSet::new(),
            reevaluation: None,
        };
        // Last decided under other rules (a restart on a changed rules
        // file, a partition taken over from a worker on other rules), or a
        // re-evaluation a crash or a move interrupted: it goes on here.
        begin_reevaluation(&mut rt, &self.engine);
        Ok(rt)
    }

    /// `cohort_segment_population_customers`: each segment's customers over
    /// the partitions this worker owns, exactly as their states stand (every
    /// rules segment has a series, 0 when empty). A partition given up takes
    /// its customers with it; its next owner reports them.
    pub(super) fn publish_populations(&self) {
        let mut sums: BTreeMap<&str, u64> =
            self.engine.rules().segments().iter().map(|s| (s.name.as_str(), 0)).collect();
        for rt in self.partitions.values() {
            for (segment, n) in rt.task.populations() {
                *sums.entry(segment.as_str()).or_default() += n;
            }
        }
        let gauge = &self.telemetry.metrics.segment_population;
        // A segment the rules no longer define leaves the metric once its
        // last customer has left it.
        use prometheus::core::Collector as _;
        for family in gauge.collect() {
            for metric in family.get_metric() {
                if let Some(label) = metric.get_label().first() {
                    if !sums.contains_key(label.value()) {
                        let _ = gauge.remove_label_values(&[label.value()]);
                    }
                }
            }
        }
        for (segment, n) in sums {
            gauge.with_label_values(&[segment]).set(n as i64);
        }
    }
}

/// Whether every one of these topic-partitions is still assigned to this
/// member (an unreadable assignment counts as assigned: the error stands).
fn still_assigned(consumer: &InputConsumer, tps: &[TopicPartition]) -> bool {
    match consumer.assignment() {
        Ok(now) => tps.iter().all(|tp| now.contains(tp)),
        Err(_) => true,
    }
}

/// Seeks a paused partition that was just assigned: librdkafka can refuse
/// while the assignment is still being set up, so a few tries.
fn seek(consumer: &InputConsumer, tp: &TopicPartition, next: i64) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        match consumer.seek(tp, next, Duration::from_secs(5)) {
            Ok(()) => return Ok(()),
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!(topic = %tp.topic, partition = tp.partition, error = %e, "seek refused; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("seeking {} partition {} to offset {next}", tp.topic, tp.partition))
            }
        }
    }
}
