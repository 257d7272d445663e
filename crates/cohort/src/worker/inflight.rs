//! The one-batch-in-flight protocol: what the batch being produced and
//! committed writes, read by the next batch and by the rebalance callback
//! until it settles; the task that produces and commits it; and the
//! worker's last act, flushing and leaving within the shutdown budget.
//!
//! See docs/architecture.md, "The in-flight protocol".

use crate::liveness::Progress;
use crate::metrics::Metrics;
use cohort_core::partition::PartitionMeta;
use cohort_core::time::Timestamp;
use cohort_kafka::{Delivered, OffsetSource, OutputProducer, OutputRecord, TopicPartition};
use cohort_store::{Batch, Bytes, Store};
use foldhash::HashMap;
use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use super::records::Processed;
use super::telemetry::OUTPUT_ERRORS_LABEL;

/// The states and input offsets of the batch in flight: read before the
/// store's, which does not have them until the batch commits.
#[derive(Default)]
pub(super) struct InFlightWrites {
    /// Partition → customer → its new bytes (`None`: erased).
    pub(super) states: HashMap<i32, HashMap<String, Option<Bytes>>>,
    /// Shared with the rebalance callback.
    pub(super) offsets: Arc<InFlightOffsets>,
}

impl InFlightWrites {
    /// `commits` and the input positions they reach are now in flight.
    pub(super) fn set(&mut self, commits: &[Batch], positions: &[(TopicPartition, i64)]) {
        self.states.clear();
        for b in commits {
            let states = self.states.entry(b.partition as i32).or_default();
            states.extend(b.states.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.offsets.set(positions, commits.iter().map(|b| b.partition as i32));
    }

    /// After the batch committed: the store has it all.
    pub(super) fn clear(&mut self) {
        self.states.clear();
        self.offsets.settle();
    }
}

/// What the rebalance callback needs of the batch in flight, until it is
/// committed or has failed ("settled"): its next input offsets, to seek a
/// re-assigned partition after them, and its partitions, whose revocation
/// waits for it.
#[derive(Default)]
pub(super) struct InFlightOffsets {
    state: Mutex<InFlightPartitions>,
    settled: Condvar,
}

#[derive(Default)]
struct InFlightPartitions {
    /// (topic, partition) → next input offset.
    next: HashMap<(String, i32), i64>,
    /// Every partition the batch writes, those with input offsets and those
    /// with only timer decisions (an idle partition under `live_clock`).
    partitions: BTreeSet<i32>,
}

impl InFlightOffsets {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightPartitions> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock().next.get(&(topic.to_string(), partition)).copied()
    }

    fn set(&self, positions: &[(TopicPartition, i64)], partitions: impl Iterator<Item = i32>) {
        let mut state = self.lock();
        state.next.clear();
        state.partitions.clear();
        state.next.extend(positions.iter().map(|(tp, next)| ((tp.topic.clone(), tp.partition), *next)));
        state.partitions.extend(partitions);
    }

    /// The batch is committed (the store has its offsets) or failed (the
    /// store's offsets are where a restart replays from): either way the
    /// store's offsets are the ones to resume from.
    fn settle(&self) {
        let mut state = self.lock();
        state.next.clear();
        state.partitions.clear();
        drop(state);
        self.settled.notify_all();
    }

    /// Waits until none of `parts` has anything in flight; false if
    /// `timeout` passed first.
    pub(super) fn wait_settled(&self, parts: &[TopicPartition], timeout: Duration) -> bool {
        let busy = |state: &mut InFlightPartitions| parts.iter().any(|p| state.partitions.contains(&p.partition));
        let (_state, result) =
            self.settled.wait_timeout_while(self.lock(), timeout, busy).unwrap_or_else(|e| e.into_inner());
        !result.timed_out()
    }
}

/// Settles the in-flight offsets when the produce-and-commit task ends,
/// however it ends (committed, failed or aborted).
pub(super) struct SettleOnDrop(pub(super) Arc<InFlightOffsets>);

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        self.0.settle();
    }
}

/// The store's input offsets, or the batch in flight's where it has one: a
/// partition assigned while a batch is in flight (in an eager rebalance that
/// gives back the same partition) must resume after that batch, which will
/// be committed before the assignment is handled (or the worker stops).
pub(super) struct StoreOffsets {
    pub(super) store: Arc<Store>,
    pub(super) in_flight: Arc<InFlightOffsets>,
    /// How long a revocation waits for the batch in flight.
    pub(super) revoke_timeout: Duration,
}

impl OffsetSource for StoreOffsets {
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        if let Some(next) = self.in_flight.get(topic, partition) {
            return Some(next);
        }
        match self.store.input_offset(topic, partition as u32) {
            Ok(o) => o,
            Err(e) => {
                warn!(topic, partition, error = %e, "cannot read stored offset; starting per start_from");
                None
            }
        }
    }

    /// Holds the revocation until the batch in flight is committed, so this
    /// worker produces nothing from the partition once it is given up and
    /// its store ends where its outputs do, as with a serial loop. The
    /// produce-and-commit task runs on another thread: on a multi-threaded
    /// runtime this thread's other tasks move elsewhere while it waits
    /// (`block_in_place`); on a single-threaded one the task could not run,
    /// so there is nothing to wait for.
    fn before_revoke(&self, parts: &[TopicPartition]) {
        let wait = || self.in_flight.wait_settled(parts, self.revoke_timeout);
        let settled = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            Ok(_) => self.in_flight.wait_settled(parts, Duration::ZERO),
            Err(_) => wait(),
        };
        if !settled {
            warn!(
                timeout = ?self.revoke_timeout,
                "revoking partitions whose last batch is not committed yet; their next owner may \
                 reproduce some of its outputs (same ids)"
            );
        }
    }
}

/// A batch produced and being committed while the next is processed.
pub(super) struct InFlight {
    /// Produces the outputs, waits for every acknowledgement, commits the store.
    pub(super) task: tokio::task::JoinHandle<anyhow::Result<Committed>>,
    /// The batch's metrics and Kafka offsets (outputs and commits moved out).
    pub(super) processed: Processed,
}

/// When a batch's store commit returned (the end of its outputs' latency),
/// and how long after the batch's processing began.
pub(super) struct Committed {
    pub(super) at: Timestamp,
    pub(super) batch_duration: Duration,
}

/// Produces every record of the batch and waits for all acknowledgements,
/// retrying the whole set while the broker is away (ids are stable, so a
/// resend is a duplicate consumers can drop). Returns where each record was
/// written.
pub(super) async fn deliver(
    producer: &OutputProducer,
    metrics: &Metrics,
    progress: &Progress,
    outputs: &[OutputRecord],
) -> anyhow::Result<Vec<Delivered>> {
    let mut attempt = 0u32;
    progress.producing(outputs.len());
    let delivered = loop {
        metrics.output_in_flight.set(outputs.len() as i64);
        match producer.send_all(outputs).await {
            Ok(d) => break d,
            Err(e) if e.is_retryable() => {
                attempt += 1;
                metrics.output_errors.with_label_values(&[OUTPUT_ERRORS_LABEL]).inc();
                let backoff = Duration::from_millis((100u64 << attempt.min(6)).min(5_000));
                warn!(error = %e, attempt, ?backoff, "producing the batch failed; retrying");
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    metrics.output_in_flight.set(0);
    progress.produced();
    // Counted per topic first: a labelled counter's lookup hashes the
    // label and takes a lock, once per topic instead of once per record.
    let mut by_topic: Vec<(&str, u64)> = Vec::with_capacity(4);
    for r in outputs {
        match by_topic.iter_mut().find(|(t, _)| *t == &*r.topic) {
            Some((_, n)) => *n += 1,
            None => by_topic.push((&r.topic, 1)),
        }
    }
    for (topic, n) in by_topic {
        metrics.output_records.with_label_values(&[topic]).inc_by(n);
    }
    Ok(delivered)
}

/// Splits a batch's records into the metadata records (`meta_records`
/// names their indices, in increasing order) and all the others, each in
/// their order.
pub(super) fn split_markers(
    outputs: Vec<OutputRecord>,
    meta_records: &[(usize, usize)],
) -> (Vec<OutputRecord>, Vec<OutputRecord>) {
    let mut markers = Vec::with_capacity(meta_records.len());
    let mut body = Vec::with_capacity(outputs.len().saturating_sub(meta_records.len()));
    let mut next = meta_records.iter().map(|&(_, output)| output).peekable();
    for (i, r) in outputs.into_iter().enumerate() {
        if next.peek() == Some(&i) {
            next.next();
            markers.push(r);
        } else {
            body.push(r);
        }
    }
    (body, markers)
}

/// Stores with each partition's metadata record the changelog position
/// after its acknowledged copy (`delivered[i]` is `meta_records[i]`'s): the
/// position a later restore of this store starts from.
pub(super) fn set_changelog_positions(
    commits: &mut [Batch],
    meta_records: &[(usize, usize)],
    delivered: &[Delivered],
) -> anyhow::Result<()> {
    for (&(commit, _), at) in meta_records.iter().zip(delivered) {
        let Some(batch) = commits.get_mut(commit) else { continue };
        if let Some(meta) = &batch.meta {
            batch.meta = Some(PartitionMeta::with_changelog_next(meta, at.offset + 1)?.into());
        }
    }
    Ok(())
}

/// Flushes the producer and leaves the group on a thread of their own, for
/// at most `budget`: with the broker down or unresponsive librdkafka's
/// consumer close waits for a LeaveGroup (and the rebalance it triggers)
/// that may never be answered. True if both finished in time; otherwise
/// the thread is left behind and the process exits without it.
pub(super) async fn close_within(
    producer: Arc<OutputProducer>,
    consumer: cohort_kafka::InputConsumer,
    budget: Duration,
) -> bool {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let started = Instant::now();
    let spawned = std::thread::Builder::new().name("cohort-close".into()).spawn(move || {
        if let Err(e) = producer.flush(budget) {
            warn!(error = %e, "the producer's last records were not all acknowledged");
        }
        drop(producer);
        consumer.close();
        let _ = done_tx.send(());
    });
    if spawned.is_err() {
        return false;
    }
    let finished = tokio::time::timeout(budget, done_rx).await.is_ok_and(|r| r.is_ok());
    if finished {
        debug!(took = ?started.elapsed(), "producer flushed and group left");
    }
    finished
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, n: u8) -> OutputRecord {
        OutputRecord {
            topic: topic.into(),
            key: Some(vec![n]),
            value: Some(vec![n]),
            headers: Vec::new(),
            timestamp: None,
            partition: Some(0),
        }
    }

    #[test]
    fn metadata_records_are_split_from_the_rest_each_keeping_its_order() {
        let outputs = vec![
            record("out", 0),
            record("changelog", 1),
            record("changelog", 2), // partition 0's metadata record
            record("out", 3),
            record("changelog", 4),
            record("changelog", 5), // partition 1's metadata record
        ];
        let (body, markers) = split_markers(outputs, &[(0, 2), (1, 5)]);
        let keys = |v: &[OutputRecord]| v.iter().map(|r| r.key.as_ref().unwrap()[0]).collect::<Vec<_>>();
        assert_eq!(keys(&body), [0, 1, 3, 4]);
        assert_eq!(keys(&markers), [2, 5]);
        let (body, markers) = split_markers(vec![record("out", 0)], &[]);
        assert_eq!((body.len(), markers.len()), (1, 0));
    }
}
