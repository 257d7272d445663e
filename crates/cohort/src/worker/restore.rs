//! Restores and warm standbys: the changelog read back into the store.
//!
//! One thread (`cohort-restore`) does all of it, so the consume loop never
//! waits on the changelog: a newly assigned partition is paused in the
//! rebalance callback and queued here; partitions already restored keep
//! processing while it restores; when it is done the loop loads the
//! partition from the store, seeks its inputs to the restored offsets and
//! resumes it ([`Worker::on_restored`](super::Worker)).
//!
//! A restore of partition P (see `cohort_core::partition::changelog` for
//! why it stops at the last metadata record):
//!
//! 1. From where: the changelog position in the store's metadata record for
//!    P (the offset after the last record this store reflects). With none,
//!    or one the changelog no longer has, P is emptied and restored whole.
//!    At the changelog's end already: nothing to do (a restart, or a warm
//!    standby that is caught up).
//! 2. Find the last metadata record, reading windows back from the end.
//!    What follows it is the tail: a batch whose producer died; its
//!    customers are fenced by the new owner's first batch.
//! 3. Apply every state record up to it in chunks of at most
//!    `restore.max_memory_bytes / 2`, written without the WAL; then flush
//!    and write the metadata record with its changelog position. A crash
//!    before that starts the restore again from the old position.
//!
//! A standby is the same restore, repeated every `restore.standby_interval`
//! for every changelog partition the worker does not own, without the
//! fence (the tail is the owner's batch in progress).

use crate::metrics::Metrics;
use anyhow::Context as _;
use cohort_core::partition::changelog::{decode_timer, entry, fence, Entry, HEADER_TIMER};
use cohort_core::partition::PartitionMeta;
use cohort_kafka::{ChangelogReader, ChangelogRecord};
use cohort_store::{Bytes, Restored, Store};
use std::collections::{BTreeSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What a finished restore tells the consume loop.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// Customers of the tail, to fence (see the module doc).
    pub(super) tail: BTreeSet<String>,
}

/// How a partition is being restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Assigned to this worker: it processes the partition next.
    Active,
    /// Followed so that a takeover is quick.
    Standby,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::Standby => "standby",
        }
    }
}

/// What the consume loop and the restore thread share.
struct Shared {
    /// Partitions this worker owns or restores: never followed as standbys.
    owned: Mutex<BTreeSet<i32>>,
    /// Restores the loop no longer wants (the partition was revoked).
    cancelled: Mutex<BTreeSet<i32>>,
    /// Restore requests sent and not yet picked up: a standby round yields to them.
    queued: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn cancelled(&self, p: i32) -> bool {
        self.stop.load(Ordering::Relaxed) || lock(&self.cancelled).contains(&p)
    }

    fn owned(&self, p: i32) -> bool {
        lock(&self.owned).contains(&p)
    }
}

/// A lock that a panicked holder left poisoned still guards plain sets.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The restore thread's handle, kept by the worker.
pub(super) struct Restorer {
    jobs: mpsc::Sender<i32>,
    /// Finished restores: the partition and its report.
    pub(super) done: tokio::sync::mpsc::UnboundedReceiver<(i32, anyhow::Result<Report>)>,
    shared: Arc<Shared>,
    /// Disconnected when the thread has ended.
    ended: mpsc::Receiver<()>,
}

/// Settings of the restore thread.
pub(super) struct RestoreSettings {
    /// Bytes of changelog records per write batch.
    pub(super) chunk_bytes: usize,
    /// Whether to follow the changelog partitions this worker does not own.
    pub(super) standbys: bool,
    pub(super) standby_interval: Duration,
}

impl Restorer {
    pub(super) fn spawn(
        store: Arc<Store>,
        reader: ChangelogReader,
        metrics: Metrics,
        settings: RestoreSettings,
    ) -> anyhow::Result<Restorer> {
        let (jobs, rx) = mpsc::channel();
        let (done_tx, done) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            owned: Mutex::default(),
            cancelled: Mutex::default(),
            queued: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let restore = Thread { store, reader, metrics, settings, shared: shared.clone(), jobs: rx, done: done_tx };
        let (ended_tx, ended) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("cohort-restore".into())
            .spawn(move || {
                restore.run();
                drop(ended_tx);
            })
            .context("starting the restore thread")?;
        Ok(Restorer { jobs, done, shared, ended })
    }

    /// Queues partition `p`'s restore; its report arrives on `done`.
    pub(super) fn restore(&self, p: i32) {
        lock(&self.shared.cancelled).remove(&p);
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(p).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Stops partition `p`'s restore, queued or under way; no report comes.
    pub(super) fn cancel(&self, p: i32) {
        lock(&self.shared.cancelled).insert(p);
    }

    /// The partitions this worker owns or restores (no standby for them).
    pub(super) fn set_owned(&self, owned: BTreeSet<i32>) {
        *lock(&self.shared.owned) = owned;
    }
}

impl Drop for Restorer {
    fn drop(&mut self) {
        // The thread ends at its next check; nothing it left half-done is
        // trusted (the metadata record is written last). It is waited for
        // (a chunk's write or a read's poll, well under a second): a
        // process that exits while it writes to RocksDB aborts in RocksDB's
        // destructors ("pthread lock: Invalid argument"), which made a
        // clean SIGTERM exit with a failure status.
        self.shared.stop.store(true, Ordering::Relaxed);
        if self.ended.recv_timeout(Duration::from_secs(5)) == Err(mpsc::RecvTimeoutError::Timeout) {
            tracing::warn!("the restore thread did not stop within 5 s; exiting without it");
        }
    }
}

struct Thread {
    store: Arc<Store>,
    reader: ChangelogReader,
    metrics: Metrics,
    settings: RestoreSettings,
    shared: Arc<Shared>,
    jobs: mpsc::Receiver<i32>,
    done: tokio::sync::mpsc::UnboundedSender<(i32, anyhow::Result<Report>)>,
}

impl Thread {
    fn run(self) {
        let mut pending: VecDeque<i32> = VecDeque::new();
        let mut next_standby = Instant::now() + self.settings.standby_interval;
        let standbys = self.settings.standbys;
        // The changelog's partitions, once the broker has said.
        let mut partitions: Option<i32> = None;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let wait = if !pending.is_empty() {
                Duration::ZERO
            } else if standbys {
                next_standby.saturating_duration_since(Instant::now())
            } else {
                Duration::from_millis(500)
            };
            match self.jobs.recv_timeout(wait) {
                Ok(p) => self.take(p, &mut pending),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(p) = self.jobs.try_recv() {
                self.take(p, &mut pending);
            }
            if let Some(p) = pending.pop_front() {
                if self.shared.cancelled(p) {
                    continue;
                }
                self.metrics.standby_partitions.set(0);
                if let Some(result) = self.restore_active(p) {
                    let _ = self.done.send((p, result));
                }
                continue;
            }
            if standbys && Instant::now() >= next_standby {
                if partitions.is_none() {
                    partitions = self.reader.partition_count(self.reader.topic()).ok().flatten().map(|n| n as i32);
                }
                self.standby_round(partitions.unwrap_or(0));
                next_standby = Instant::now() + self.settings.standby_interval;
            }
        }
    }

    fn take(&self, p: i32, pending: &mut VecDeque<i32>) {
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        if !pending.contains(&p) {
            pending.push_back(p);
        }
    }

    /// An assigned partition's restore, retried (with a warning) while the
    /// broker or the store fails in a way that can pass; `None` if cancelled.
    fn restore_active(&self, p: i32) -> Option<anyhow::Result<Report>> {
        let mut attempt = 0u32;
        loop {
            let keep_going = || !self.shared.cancelled(p);
            match self.restore(p, Kind::Active, &keep_going) {
                Ok(Some(report)) => return Some(Ok(report)),
                Ok(None) => return None,
                Err(e) if !keep_going() => {
                    debug!(partition = p, error = %e, "restore cancelled");
                    return None;
                }
                Err(e) if retryable(&e) => {
                    attempt += 1;
                    let backoff = Duration::from_millis((200u64 << attempt.min(5)).min(5_000));
                    warn!(
                        partition = p,
                        attempt,
                        ?backoff,
                        error = format!("{e:#}"),
                        "restoring the partition failed; retrying"
                    );
                    std::thread::sleep(backoff);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn standby_round(&self, partitions: i32) {
        // Counted before the round: a first round over a large changelog
        // takes minutes, and the gauge says what is followed meanwhile.
        let unowned: Vec<i32> = (0..partitions).filter(|&p| !self.shared.owned(p)).collect();
        self.metrics.standby_partitions.set(unowned.len() as i64);
        for p in unowned {
            let keep_going = || {
                !self.shared.stop.load(Ordering::Relaxed)
                    && !self.shared.owned(p)
                    && self.shared.queued.load(Ordering::Relaxed) == 0
            };
            if !keep_going() {
                break;
            }
            if let Err(e) = self.restore(p, Kind::Standby, &keep_going) {
                debug!(partition = p, error = format!("{e:#}"), "standby catch-up failed; trying again next round");
            }
        }
    }

    /// Restores partition `p` up to the changelog's last metadata record.
    /// `None`: stopped by `keep_going` before it finished.
    fn restore(&self, p: i32, kind: Kind, keep_going: &dyn Fn() -> bool) -> anyhow::Result<Option<Report>> {
        let started = Instant::now();
        let local = self.store.partition_meta(p as u32).context("reading the partition's metadata record")?;
        let (low, high) = self.reader.watermarks(p).context("asking the broker for the changelog's offsets")?;
        let stored = local.as_ref().and_then(|m| m.changelog_next);
        let (from, whole) = match stored {
            Some(x) if (low..=high).contains(&x) => (x, false),
            // A store from before changelog positions, with nothing to restore.
            None if local.is_some() && low == high => return Ok(Some(Report::default())),
            _ => (low, true),
        };
        if from == high {
            return Ok(Some(Report::default()));
        }
        let Some(last) = self.last_meta(p, from, high, keep_going)? else { return Ok(None) };
        if whole {
            self.store.drop_partition(p as u32).context("emptying the partition before a whole restore")?;
        }
        let Some((meta_at, meta)) = last.meta else {
            // Nothing committed since `from`: all of it is the tail.
            return Ok(Some(Report { tail: last.tail }));
        };
        let remaining = meta_at - from;
        self.metrics.restore_remaining.add(remaining);
        let applied = self.apply(p, from, meta_at, whole, kind, keep_going);
        self.metrics.restore_remaining.sub(remaining);
        let Some(records) = applied? else { return Ok(None) };
        let meta = PartitionMeta::with_changelog_next(&meta, meta_at + 1).with_context(|| {
            format!("changelog partition {p}: the metadata record at offset {meta_at} does not decode")
        })?;
        self.store.restore_finish(p as u32, &meta).context("writing the restored metadata record")?;
        let took = started.elapsed();
        let rate = records as f64 / took.as_secs_f64().max(1e-3);
        if kind == Kind::Active || records > 0 {
            info!(
                partition = p,
                kind = kind.label(),
                records,
                from,
                to = meta_at + 1,
                whole,
                tail = last.tail.len(),
                took_ms = took.as_millis() as u64,
                records_per_sec = rate.round() as u64,
                "partition restored from the changelog"
            );
        }
        let tail = if kind == Kind::Active { last.tail } else { BTreeSet::new() };
        Ok(Some(Report { tail }))
    }

    /// The last metadata record in `[from, high)` and the customers after
    /// it, reading windows back from `high` (4× larger each time) so that
    /// a long log is read once more only near its end. `None`: stopped.
    fn last_meta(
        &self,
        p: i32,
        from: i64,
        high: i64,
        keep_going: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<LastMeta>> {
        let mut tail_keys: Vec<Vec<u8>> = Vec::new();
        let (mut hi, mut window) = (high, 1_024i64);
        loop {
            let lo = from.max(hi - window);
            let mut meta: Option<(i64, Vec<u8>)> = None;
            let mut after: Vec<Vec<u8>> = Vec::new();
            let end = self.reader.read(p, lo, hi, self.settings.chunk_bytes, keep_going, |chunk| {
                for r in chunk {
                    match (entry(&r.key), r.value) {
                        (Some(Entry::Meta(q)), Some(value)) if q == p => {
                            meta = Some((r.offset, value));
                            after.clear();
                        }
                        _ => after.push(r.key),
                    }
                }
                ControlFlow::Continue(())
            })?;
            if !end.complete {
                return Ok(None);
            }
            after.append(&mut tail_keys);
            tail_keys = after;
            if meta.is_some() || lo == from {
                let tail = fence(tail_keys.iter().map(Vec::as_slice));
                return Ok(Some(LastMeta { meta, tail }));
            }
            hi = lo;
            window = window.saturating_mul(4);
        }
    }

    /// Writes the state records of `[from, until)` to the store, chunk by
    /// chunk. `None`: stopped.
    fn apply(
        &self,
        p: i32,
        from: i64,
        until: i64,
        whole: bool,
        kind: Kind,
        keep_going: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<u64>> {
        let counter = self.metrics.restore_records.with_label_values(&[kind.label()]);
        let mut applied = 0u64;
        let mut failed = None;
        let mut position = from;
        let end = self.reader.read(p, from, until, self.settings.chunk_bytes, keep_going, |chunk| {
            let last = chunk.last().map_or(position, |r| r.offset + 1);
            let restored: Vec<Restored> = chunk.into_iter().filter_map(restored).collect();
            // Into an emptied partition only the first chunk can skip looking
            // for a customer's earlier timer: a later one may repeat a
            // customer an earlier chunk wrote with another timer.
            let replace_timers = !whole || position > from;
            if let Err(e) = self.store.restore_write(p as u32, &restored, replace_timers) {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            applied += restored.len() as u64;
            counter.inc_by(restored.len() as u64);
            self.metrics.restore_remaining.sub(last - position);
            position = last;
            if keep_going() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })?;
        // What was not counted down (offsets compacted away, or a stop).
        self.metrics.restore_remaining.add(position - from);
        if let Some(e) = failed {
            return Err(e).context("writing restored states");
        }
        Ok(end.complete.then_some(applied))
    }
}

/// The last metadata record found and the tail after it.
struct LastMeta {
    /// Its offset and value; `None` when the range has none.
    meta: Option<(i64, Vec<u8>)>,
    tail: BTreeSet<String>,
}

/// A state record as the store takes it; `None` for anything else.
fn restored(r: ChangelogRecord) -> Option<Restored> {
    let timer = r.header(HEADER_TIMER).and_then(decode_timer);
    let ChangelogRecord { key, value, .. } = r;
    match entry(&key) {
        Some(Entry::Customer(c)) => {
            Some(Restored { customer: c.to_string(), timer: value.as_ref().and(timer), state: value.map(Bytes::from) })
        }
        _ => None,
    }
}

/// Whether trying again later can succeed: the broker away or slow, the
/// store busy. A metadata record that does not decode cannot.
fn retryable(e: &anyhow::Error) -> bool {
    for cause in e.chain() {
        if let Some(k) = cause.downcast_ref::<cohort_kafka::KafkaAdapterError>() {
            return k.is_retryable();
        }
        if let Some(s) = cause.downcast_ref::<cohort_store::StoreError>() {
            return s.class() == cohort_store::ErrorClass::Retryable;
        }
    }
    false
}
