//! Is the worker making progress, and if not, what is it waiting for?
//!
//! The consume loop waits on the broker in three places only: the fetch
//! (polling the consumer), the acknowledgements of a batch's outputs, and
//! the consumer group (join and sync). Nothing on the loop asks the broker
//! for lag or watermarks; those come from librdkafka's statistics
//! ([`cohort_kafka::health`]), and a watchdog task reads them once a second
//! beside the loop:
//!
//! - it says what the worker waits for ([`Waiting`]) and for how long,
//!   as `cohort_worker_stall_seconds{waiting_for}`;
//! - after `processing.stall_timeout` (default 30 s) of the same wait,
//!   `/readyz` and `cohort_worker_ready` turn not-ready, and a WARN names
//!   the wait, once a minute while it lasts; when it ends, an INFO says how
//!   long it lasted;
//! - every few seconds it sets the lag gauges (the fetched high watermark
//!   minus the store's next offset) and the store's gauges.
//!
//! The decision is [`assess`], a pure function of what the loop reported
//! ([`Progress`]) and what the consumer last heard ([`HealthSnapshot`]).

use crate::http::Readiness;
use crate::metrics::Metrics;
use cohort_kafka::{ClientHealth, HealthSnapshot};
use cohort_store::Store;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How often a stall that lasts is reported again.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// How often lag and store gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// What the worker is waiting for, when it is not making progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// To join its consumer group and be assigned partitions.
    GroupJoin { state: String, join_state: String },
    /// For the broker to answer its fetches (no response from a partition
    /// leader).
    Fetch,
    /// For the broker to acknowledge a batch's output records.
    ProduceAcks { records: usize },
    /// For the store to commit a batch.
    StoreCommit,
}

impl Waiting {
    /// The `waiting_for` label.
    pub fn label(&self) -> &'static str {
        match self {
            Waiting::GroupJoin { .. } => "group",
            Waiting::Fetch => "fetch",
            Waiting::ProduceAcks { .. } => "produce",
            Waiting::StoreCommit => "commit",
        }
    }

    /// Every label, so each series exists (at 0) from the start.
    pub const LABELS: [&'static str; 4] = ["group", "fetch", "produce", "commit"];
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::GroupJoin { state, join_state } => write!(
                f,
                "waiting to join the consumer group (group state {}, join state {})",
                or_unknown(state),
                or_unknown(join_state)
            ),
            Waiting::Fetch => write!(f, "waiting for the broker to answer fetches"),
            Waiting::ProduceAcks { records } => {
                write!(f, "waiting for the broker to acknowledge {records} output records")
            }
            Waiting::StoreCommit => write!(f, "waiting for the store to commit a batch"),
        }
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

/// A wait and how long it has lasted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub waiting: Waiting,
    pub for_: Duration,
}

/// What the consume loop and its produce-and-commit task report. Shared.
#[derive(Debug)]
pub struct Progress {
    inner: Mutex<ProgressState>,
}

#[derive(Debug, Clone)]
pub struct ProgressState {
    /// When the worker started (or last had no partitions).
    pub unassigned_since: Option<Instant>,
    /// The partitions the worker owns.
    pub partitions: BTreeSet<i32>,
    /// A batch's outputs handed to the producer at this instant, this many,
    /// not all acknowledged yet.
    pub acks_since: Option<(Instant, usize)>,
    /// A store commit begun at this instant, not finished.
    pub commit_since: Option<Instant>,
}

impl Progress {
    pub fn new(now: Instant) -> Progress {
        Progress {
            inner: Mutex::new(ProgressState {
                unassigned_since: Some(now),
                partitions: BTreeSet::new(),
                acks_since: None,
                commit_since: None,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ProgressState) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn state(&self) -> ProgressState {
        self.with(|s| s.clone())
    }

    pub fn set_partitions(&self, partitions: BTreeSet<i32>) {
        self.with(|s| {
            match (s.partitions.is_empty(), partitions.is_empty()) {
                (false, true) => s.unassigned_since = Some(Instant::now()),
                (_, false) => s.unassigned_since = None,
                (true, true) => {}
            }
            s.partitions = partitions;
        })
    }

    pub fn producing(&self, records: usize) {
        self.with(|s| s.acks_since = Some((Instant::now(), records)))
    }

    pub fn produced(&self) {
        self.with(|s| s.acks_since = None)
    }

    pub fn committing(&self) {
        self.with(|s| s.commit_since = Some(Instant::now()))
    }

    pub fn committed(&self) {
        self.with(|s| s.commit_since = None)
    }
}

/// What the worker waits for at `now`, if anything, and since when. In
/// order: unacknowledged outputs, an unfinished store commit, the group (no
/// partitions and not joined), the fetch (no answer from the brokers it
/// fetches from). `started` stands in for "never" (no statistics yet, no
/// broker answer yet).
pub fn assess(now: Instant, started: Instant, progress: &ProgressState, consumer: &HealthSnapshot) -> Option<Stall> {
    let since = |t: Instant| now.saturating_duration_since(t);
    if let Some((at, records)) = progress.acks_since {
        return Some(Stall { waiting: Waiting::ProduceAcks { records }, for_: since(at) });
    }
    if let Some(at) = progress.commit_since {
        return Some(Stall { waiting: Waiting::StoreCommit, for_: since(at) });
    }
    if progress.partitions.is_empty() {
        // Joined with nothing to own (more workers than partitions) is not
        // a wait; readiness says "no partitions assigned" on its own.
        let joined = consumer.group_state == "up" && consumer.join_state == "steady";
        if joined {
            return None;
        }
        let from = progress.unassigned_since.unwrap_or(started);
        return Some(Stall {
            waiting: Waiting::GroupJoin {
                state: consumer.group_state.clone(),
                join_state: consumer.join_state.clone(),
            },
            for_: since(from),
        });
    }
    // Statistics arrive only while the loop polls; with none, or none
    // recent, the last answer known is what counts.
    let last = consumer.last_response.unwrap_or(started).max(started);
    Some(Stall { waiting: Waiting::Fetch, for_: since(last) })
}

/// The watchdog: runs beside the consume loop until dropped.
pub struct Watchdog {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the watchdog reads and writes.
pub struct WatchdogParts {
    pub progress: Arc<Progress>,
    pub consumer: Arc<ClientHealth>,
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    pub store: Arc<Store>,
    pub input_topics: Vec<String>,
    pub stall_timeout: Duration,
}

impl Watchdog {
    pub fn spawn(parts: WatchdogParts) -> Watchdog {
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut reported = Reported::default();
            let mut last_gauges: Option<Instant> = None;
            let mut lag_partitions: BTreeSet<i32> = BTreeSet::new();
            let gauges = Arc::new(WatchdogGauges {
                metrics: parts.metrics.clone(),
                store: parts.store.clone(),
                topics: parts.input_topics.clone(),
            });
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let progress = parts.progress.state();
                let snapshot = parts.consumer.snapshot();
                let stall = assess(now, started, &progress, &snapshot);
                reported.report(now, stall.as_ref(), &parts);
                if last_gauges.is_none_or(|t| now.duration_since(t) >= GAUGES_EVERY) {
                    last_gauges = Some(now);
                    let p = gauges.clone();
                    let owned = progress.partitions.clone();
                    let before = std::mem::take(&mut lag_partitions);
                    // RocksDB reads: off the async workers.
                    lag_partitions = tokio::task::spawn_blocking(move || p.refresh(&owned, &before, &snapshot))
                        .await
                        .unwrap_or_default();
                }
            }
        });
        Watchdog { task }
    }
}

/// What the watchdog last said, so a lasting stall is told once a minute.
#[derive(Default)]
struct Reported {
    /// The wait being reported and when it was last logged.
    warned: Option<(Waiting, Instant)>,
}

impl Reported {
    fn report(&mut self, now: Instant, stall: Option<&Stall>, parts: &WatchdogParts) {
        let m = &parts.metrics;
        for label in Waiting::LABELS {
            let secs = stall.filter(|s| s.waiting.label() == label).map_or(0.0, |s| s.for_.as_secs_f64());
            m.stall_seconds.with_label_values(&[label]).set(secs);
        }
        let over = stall.filter(|s| s.for_ >= parts.stall_timeout);
        match over {
            Some(s) => {
                let reason = format!("{} for {}s", s.waiting, s.for_.as_secs());
                let due = match &self.warned {
                    Some((w, at)) => w.label() != s.waiting.label() || now.duration_since(*at) >= WARN_EVERY,
                    None => true,
                };
                if due {
                    warn!(
                        waiting_for = s.waiting.label(),
                        seconds = s.for_.as_secs(),
                        "no progress: {reason}; /readyz says not ready until it ends"
                    );
                    self.warned = Some((s.waiting.clone(), now));
                }
                parts.readiness.set_stalled(Some(reason));
            }
            None => {
                // A wait over the limit that turns into another one (a
                // fetch stall whose session expires, revoking the
                // partitions, becomes a group wait) is not progress: the
                // next wait is told when it passes the limit in turn.
                let recovered = match stall {
                    None => true,
                    Some(s) => !matches!(s.waiting, Waiting::GroupJoin { .. }),
                };
                if recovered {
                    if let Some((w, _)) = self.warned.take() {
                        info!(waiting_for = w.label(), "progress again: no longer {w}");
                    }
                }
                parts.readiness.set_stalled(None);
            }
        }
        m.ready.set(i64::from(parts.readiness.is_ready()));
    }
}

struct WatchdogGauges {
    metrics: Metrics,
    store: Arc<Store>,
    topics: Vec<String>,
}

impl WatchdogGauges {
    /// Sets the store's gauges and each owned partition's lag; removes the
    /// lag series of partitions no longer owned. Returns the partitions
    /// whose lag it set.
    fn refresh(&self, owned: &BTreeSet<i32>, before: &BTreeSet<i32>, consumer: &HealthSnapshot) -> BTreeSet<i32> {
        let m = &self.metrics;
        if let Ok(stats) = self.store.stats() {
            m.store_size_bytes.set(stats.live_sst_bytes as i64);
            m.store_memtable_bytes.set(stats.memtable_bytes as i64);
            m.store_pending_compaction_bytes.set(stats.pending_compaction_bytes as i64);
            m.store_write_stalled.set(i64::from(stats.write_stopped || stats.delayed_write_rate > 0));
        }
        for p in before.difference(owned) {
            let label = p.to_string();
            for t in &self.topics {
                let _ = m.consumer_lag_records.remove_label_values(&[t, &label]);
            }
        }
        let mut set = BTreeSet::new();
        for p in owned {
            // One read (and decode) of the partition's metadata for all its topics.
            let committed = self.store.partition_meta(*p as u32).ok().flatten().map(|m| m.next_offsets);
            for t in &self.topics {
                let Some(high) = consumer.high_watermarks.get(&(t.clone(), *p)) else { continue };
                let next = committed.as_ref().and_then(|o| o.get(t).copied()).unwrap_or(0);
                m.consumer_lag_records.with_label_values(&[t, &p.to_string()]).set((high - next).max(0));
                set.insert(*p);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(at: Instant, silent: Option<Duration>, group: (&str, &str)) -> HealthSnapshot {
        HealthSnapshot {
            at: Some(at),
            silent_for: silent,
            last_response: silent.and_then(|d| at.checked_sub(d)),
            group_state: group.0.into(),
            join_state: group.1.into(),
            high_watermarks: Default::default(),
        }
    }

    #[test]
    fn unacknowledged_outputs_come_first_then_an_unfinished_commit() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        let p = Progress::new(t0);
        p.set_partitions([0, 1].into());
        p.committing();
        let s = assess(now, t0, &p.state(), &snapshot(now, Some(Duration::ZERO), ("up", "steady")));
        assert_eq!(s.map(|s| s.waiting), Some(Waiting::StoreCommit));
        p.producing(7);
        let s = assess(now, t0, &p.state(), &snapshot(now, Some(Duration::ZERO), ("up", "steady"))).expect("stall");
        assert_eq!(s.waiting, Waiting::ProduceAcks { records: 7 });
        p.produced();
        p.committed();
        let s = assess(now, t0, &p.state(), &snapshot(now, Some(Duration::from_millis(300)), ("up", "steady")));
        assert_eq!(s, Some(Stall { waiting: Waiting::Fetch, for_: Duration::from_millis(300) }));
    }

    #[test]
    fn a_silent_broker_is_a_fetch_wait_as_long_as_its_silence() {
        let t0 = Instant::now();
        let p = Progress::new(t0);
        p.set_partitions([3].into());
        // Statistics 10 s old that saw the leader silent for 25 s: 35 s.
        let snap = snapshot(t0 + Duration::from_secs(40), Some(Duration::from_secs(25)), ("up", "steady"));
        let s = assess(t0 + Duration::from_secs(50), t0, &p.state(), &snap).expect("stall");
        assert_eq!((s.waiting, s.for_), (Waiting::Fetch, Duration::from_secs(35)));
        // No statistics at all yet: since the start.
        let s = assess(t0 + Duration::from_secs(9), t0, &p.state(), &HealthSnapshot::default()).expect("stall");
        assert_eq!(s.for_, Duration::from_secs(9));
    }

    #[test]
    fn no_partitions_is_a_group_wait_unless_joined() {
        let t0 = Instant::now();
        let p = Progress::new(t0);
        let now = t0 + Duration::from_secs(45);
        let s = assess(now, t0, &p.state(), &snapshot(now, None, ("wait-coord", "init"))).expect("stall");
        assert_eq!(s.waiting, Waiting::GroupJoin { state: "wait-coord".into(), join_state: "init".into() });
        assert_eq!(s.for_, Duration::from_secs(45));
        assert!(s.waiting.to_string().contains("group state wait-coord"), "{}", s.waiting);
        // Joined, with nothing assigned (more workers than partitions).
        assert_eq!(assess(now, t0, &p.state(), &snapshot(now, None, ("up", "steady"))), None);
        // Partitions lost later: counted from then.
        p.set_partitions([1].into());
        p.set_partitions(BTreeSet::new());
        let later = Instant::now() + Duration::from_secs(5);
        let s = assess(later, t0, &p.state(), &snapshot(later, None, ("up", "wait-join"))).expect("stall");
        assert!(s.for_ <= Duration::from_secs(6), "{s:?}");
    }

    #[test]
    fn every_wait_has_a_label_of_the_metric() {
        let waits = [
            Waiting::GroupJoin { state: String::new(), join_state: String::new() },
            Waiting::Fetch,
            Waiting::ProduceAcks { records: 1 },
            Waiting::StoreCommit,
        ];
        let labels: Vec<&str> = waits.iter().map(Waiting::label).collect();
        assert_eq!(labels, Waiting::LABELS);
        assert!(waits[0].to_string().contains("unknown"));
    }
}
