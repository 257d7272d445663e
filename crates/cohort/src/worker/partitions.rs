//! The partitions this worker owns: each one's partition task (loaded from
//! the store's metadata record and timers when assigned) and hot states;
//! and the exact segment populations they add up to.

use super::telemetry::{PartitionAssigned, PartitionRevoked};
use super::Worker;
use crate::hot::HotStates;
use anyhow::Context as _;
use cohort_core::partition::PartitionTask;
use cohort_kafka::PartitionEvent;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

/// What the worker keeps in memory for a partition it owns.
pub(super) struct PartitionRuntime {
    /// Watermark, timers, learned tables, populations, positions.
    pub(super) task: PartitionTask,
    /// Decoded states of recently active customers (see [`crate::hot`]).
    pub(super) hot: HotStates,
}

impl Worker {
    pub(super) fn on_partition_event(&mut self, ev: PartitionEvent) -> anyhow::Result<()> {
        match ev {
            PartitionEvent::Assigned(parts) => {
                let partitions: BTreeSet<i32> = parts.iter().map(|(p, _)| p.partition).collect();
                for p in partitions {
                    if self.partitions.contains_key(&p) {
                        continue;
                    }
                    self.telemetry.metrics.restoring_partitions.inc();
                    let loaded = self.load_partition(p);
                    self.telemetry.metrics.restoring_partitions.dec();
                    let rt = loaded?;
                    self.telemetry.emit(PartitionAssigned {
                        partition: p,
                        timers: rt.task.timers_pending(),
                        customers_in_segments: rt.task.populations().values().sum(),
                        watermark_secs: rt.task.watermark().as_millis().max(0) / 1000,
                    });
                    self.partitions.insert(p, rt);
                }
            }
            PartitionEvent::Revoked(parts) => {
                let revoked: BTreeSet<i32> = parts.iter().map(|p| p.partition).collect();
                for p in revoked {
                    if self.partitions.remove(&p).is_some() {
                        self.telemetry.emit(PartitionRevoked { partition: p });
                    }
                }
            }
        }
        self.progress.set_partitions(self.partitions.keys().copied().collect());
        self.set_hot_budgets();
        let assigned = !self.partitions.is_empty();
        self.readiness.assigned.store(assigned, Ordering::Relaxed);
        self.readiness.consuming.store(assigned, Ordering::Relaxed);
        let m = &self.telemetry.metrics;
        m.assigned_partitions.set(self.partitions.len() as i64);
        m.ready.set(i64::from(self.readiness.is_ready()));
        self.publish_populations();
        Ok(())
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
        Ok(PartitionRuntime {
            task: PartitionTask::new(p, meta, timers, self.task_settings),
            hot: HotStates::default(),
        })
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
        for (segment, n) in sums {
            gauge.with_label_values(&[segment]).set(n as i64);
        }
    }
}
