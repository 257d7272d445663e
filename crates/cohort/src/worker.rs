//! The worker: Kafka in, decisions out.
//!
//! One loop per process, following DESIGN.md's data flow for every batch:
//!
//! ```text
//! poll batch ─> decode (codec) ─> load states (store) ─> apply events and
//! fire due timers (core) ─> produce outputs, dead letters and changelog ─>
//! await acks ─> commit {states, timers, input offsets} (store) ─> advisory
//! Kafka commit
//! ```
//!
//! The store commit happens only after every output of the batch is
//! acknowledged, so a crash at any point replays from offsets that match the
//! state: state is exactly-once, outputs at-least-once with stable ids.
//!
//! One batch is in flight while the next is polled and processed: batch N's
//! produce, acknowledgements and store commit run in a task of their own,
//! and batch N+1 reads N's states from memory (the in-flight overlay) where
//! the store does not have them yet. N+1's outputs are produced only after
//! N is committed, so the order of produces and commits is that of the
//! serial loop; if N fails the worker stops before N+1 is produced, and a
//! restart replays both from the store's offsets. The rebalance callback
//! holds a revocation until the batch in flight is committed (at most
//! `shutdown_timeout`, with a warning if that passes), so this worker
//! produces nothing from a partition after giving it up, and its store ends
//! exactly where its outputs do (a partition that comes back resumes there;
//! another member starts from its own store, see README "Scaling"). The
//! advisory Kafka commit that follows covers only partitions still
//! assigned. Records fetched again after an eager revoke and re-assign are
//! not processed twice ([`Handed`]).
//!
//! Backpressure is structural: at most one batch is unacknowledged while
//! one more is processed, so input is never consumed faster than outputs are
//! accepted, and librdkafka's prefetch is bounded by its own queue settings.
//!
//! Timers fire in event-time order as the partition's watermark passes them,
//! interleaved with events (before each event, every timer due at or before
//! the watermark so far fires), so where batch boundaries fall never changes
//! what is decided. In live mode an idle partition's watermark also follows
//! the injected [`Clock`].

use crate::config::{Config, StartFrom, WireFormat};
use crate::dlq;
use crate::hot::{self, HotStates};
use crate::http::Readiness;
use crate::liveness::{Progress, Watchdog, WatchdogParts};
use crate::metrics::Metrics;
use crate::timers::Timers;
use anyhow::{anyhow, Context as _};
use cohort_codec::{Decoder, Encoder, Format, InputKind, Registry};
use cohort_core::engine::{apply, Engine, Input, Output, Tables};
use cohort_core::event::{Event, EventKind};
use cohort_core::state::CustomerState;
use cohort_core::time::{Duration as CoreDuration, Timestamp};
use cohort_core::watermark::Watermark;
use cohort_kafka::consumer::ConsumerSettings;
use cohort_kafka::{
    InputConsumer, InputRecord, OffsetSource, OutputProducer, OutputRecord, PartitionEvent, StartPosition,
    TopicPartition,
};
use cohort_store::{Batch, Bytes, Store, Timer, TopicOffset};
use foldhash::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, info_span, warn};

/// Where "now" comes from. The worker reads wall-clock time only through
/// this, so tests and the demo (an accelerated clock) control it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// A clock that always reads the same instant: offline replays, tests and
/// benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// Header set on a `segment-changes` tombstone that announces a forgotten customer.
pub const HEADER_FORGOTTEN: &str = "cohort.forgotten";
/// Header naming an output record's type (`segment_changed`, `next_best_offer`, `forgotten`).
pub const HEADER_TYPE: &str = "cohort.type";
/// Header carrying an output's id, so consumers can dedup without decoding.
pub const HEADER_ID: &str = "cohort.id";

/// Everything the worker needs, built by [`Worker::open`].
pub struct Worker {
    config: Config,
    engine: Arc<Engine>,
    store: Arc<Store>,
    decoder: Decoder,
    encoder: Encoder,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    /// What the loop waits for, read by the watchdog (`crate::liveness`).
    progress: Arc<Progress>,
    clock: Arc<dyn Clock>,
    partitions: BTreeMap<i32, PartitionRuntime>,
    /// Input topic name → what it carries.
    kinds: HashMap<String, InputKind>,
    /// What the batch in flight (produced, not yet committed) writes.
    in_flight: InFlightWrites,
    /// How far each input partition has been handed to processing.
    handed: Handed,
    /// The output topics' names, shared by every record produced to them.
    out_topics: OutTopics,
    /// Per-batch buffers kept between batches (see [`Scratch`]).
    scratch: Scratch,
}

/// A batch's decoded events and loaded states. Kept between batches, empty,
/// so each batch reuses their memory: allocated afresh, a 10,000-record
/// batch's events (about 3 MB) cost a page fault per 4 KiB every batch.
#[derive(Default)]
struct Scratch {
    /// Each valid event with the index of its record.
    events: Vec<(Event, usize)>,
    states: States,
}

struct OutTopics {
    segment_changes: Arc<str>,
    next_best_offers: Arc<str>,
    changelog: Arc<str>,
}

/// The states and input offsets of the batch in flight: read before the
/// store's, which does not have them until the batch commits.
#[derive(Default)]
struct InFlightWrites {
    /// Partition → customer (or reserved key) → its new bytes (`None`: erased).
    states: HashMap<i32, HashMap<String, Option<Bytes>>>,
    /// Shared with the rebalance callback.
    offsets: Arc<InFlightOffsets>,
}

impl InFlightWrites {
    fn set(&mut self, commits: &[Batch]) {
        self.states.clear();
        for b in commits {
            let states = self.states.entry(b.partition as i32).or_default();
            states.extend(b.states.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.offsets.set(commits);
    }

    /// After the batch committed: the store has it all.
    fn clear(&mut self) {
        self.states.clear();
        self.offsets.settle();
    }
}

/// What the rebalance callback needs of the batch in flight, until it is
/// committed or has failed ("settled"): its next input offsets, to seek a
/// re-assigned partition after them, and its partitions, whose revocation
/// waits for it.
#[derive(Default)]
struct InFlightOffsets {
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

    /// The batch `commits` is now in flight.
    fn set(&self, commits: &[Batch]) {
        let mut state = self.lock();
        state.next.clear();
        state.partitions.clear();
        for b in commits {
            let partition = b.partition as i32;
            state.next.extend(b.input_offsets.iter().map(|o| ((o.topic.clone(), partition), o.next_offset)));
            state.partitions.insert(partition);
        }
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
    fn wait_settled(&self, parts: &[TopicPartition], timeout: Duration) -> bool {
        let busy = |state: &mut InFlightPartitions| parts.iter().any(|p| state.partitions.contains(&p.partition));
        let (_state, result) =
            self.settled.wait_timeout_while(self.lock(), timeout, busy).unwrap_or_else(|e| e.into_inner());
        !result.timed_out()
    }
}

/// Settles the in-flight offsets when the produce-and-commit task ends,
/// however it ends (committed, failed or aborted).
struct SettleOnDrop(Arc<InFlightOffsets>);

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        self.0.settle();
    }
}

/// Reserved store keys under which each partition's learned tables are
/// committed with its states. Customer ids starting with NUL are refused at
/// input (DLQ reason `invalid_key`), so no customer can collide with them.
pub const KEY_POPULARITY: &str = "\u{0}cohort.popularity";
pub const KEY_PROPENSITY: &str = "\u{0}cohort.propensity";
/// The partition's watermark (i64 big-endian milliseconds). Committed with
/// the batch: a restarted worker fires timers exactly where an
/// uninterrupted one would, so replays re-emit the same outputs.
pub const KEY_WATERMARK: &str = "\u{0}cohort.watermark";

/// The changelog key of a partition's reserved record (`key` is one of
/// [`KEY_WATERMARK`], [`KEY_POPULARITY`], [`KEY_PROPENSITY`]): `key/partition`,
/// e.g. `"\0cohort.watermark/3"`. The store keeps these per partition under
/// the bare key, but the changelog places records by key hash, so under the
/// bare key every partition's watermark would share one changelog key: its
/// latest record, and all compaction keeps, would be whichever partition
/// wrote last, not any one partition's value.
pub fn changelog_key(key: &str, partition: i32) -> String {
    format!("{key}/{partition}")
}

/// What the worker keeps in memory for a partition it owns.
struct PartitionRuntime {
    watermark: Watermark,
    tables: Tables,
    /// The tables learned something in this batch and must be committed.
    tables_dirty: bool,
    /// Pending timers: each customer's one, and all in due order.
    timers: Timers,
    /// Decoded states of recently active customers (see [`crate::hot`]).
    hot: HotStates,
}

impl PartitionRuntime {
    fn set_timer(&mut self, customer: &str, due: Option<Timestamp>, delta: &mut TimerDelta) {
        if let Some((id, old)) = self.timers.set(customer, due) {
            delta.touch(id, old);
        }
    }

    /// The earliest pending timer due at or before the watermark.
    fn pop_due(&mut self, watermark: Timestamp, delta: &mut TimerDelta) -> Option<(Timestamp, Arc<str>)> {
        let (due, id) = self.timers.pop_due(watermark)?;
        delta.touch(id.clone(), Some(due));
        Some((due, id))
    }
}

/// Each customer's timer as it was when the batch first touched it; the
/// store is told only the difference to its timer at the end of the batch.
/// (A timer cleared and set again within one batch must survive.)
#[derive(Default)]
struct TimerDelta {
    initial: HashMap<Arc<str>, Option<Timestamp>>,
}

impl TimerDelta {
    fn touch(&mut self, customer: Arc<str>, due: Option<Timestamp>) {
        self.initial.entry(customer).or_insert(due);
    }

    /// `(timers to set, timers to clear)`, given the timers at the end of the batch.
    fn finish(self, now: &Timers) -> (Vec<Timer>, Vec<Timer>) {
        let mut set = Vec::new();
        let mut clear = Vec::new();
        for (customer, before) in self.initial {
            let after = now.get(&customer);
            if before == after {
                continue;
            }
            if let Some(due) = before {
                clear.push(Timer { due, customer: customer.to_string() });
            }
            if let Some(due) = after {
                set.push(Timer { due, customer: customer.to_string() });
            }
        }
        set.sort();
        clear.sort();
        (set, clear)
    }
}

/// A batch produced and being committed while the next is processed.
struct InFlight {
    /// Produces the outputs, waits for every acknowledgement, commits the store.
    task: tokio::task::JoinHandle<anyhow::Result<Committed>>,
    /// The batch's metrics and Kafka offsets (outputs and commits moved out).
    processed: Processed,
}

/// When a batch's store commit returned (the end of its outputs' latency),
/// and how long after the batch's processing began.
struct Committed {
    at: Timestamp,
    batch_duration: Duration,
}

/// The `topic` label of `cohort_output_errors_total`: a failed send fails
/// the batch's whole set, which is retried whole.
const OUTPUT_ERRORS_LABEL: &str = "all";

/// Produces every record of the batch and waits for all acknowledgements,
/// retrying the whole set while the broker is away (ids are stable, so a
/// resend is a duplicate consumers can drop).
async fn deliver(
    producer: &OutputProducer,
    metrics: &Metrics,
    progress: &Progress,
    outputs: &[OutputRecord],
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    progress.producing(outputs.len());
    loop {
        metrics.output_in_flight.set(outputs.len() as i64);
        match producer.send_all(outputs).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() => {
                attempt += 1;
                metrics.output_errors.with_label_values(&[OUTPUT_ERRORS_LABEL]).inc();
                let backoff = Duration::from_millis((100u64 << attempt.min(6)).min(5_000));
                warn!(error = %e, attempt, ?backoff, "producing the batch failed; retrying");
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    metrics.output_in_flight.set(0);
    progress.produced();
    for r in outputs {
        metrics.output_records.with_label_values(&[&r.topic]).inc();
    }
    Ok(())
}

/// The store's input offsets, or the batch in flight's where it has one: a
/// partition assigned while a batch is in flight (in an eager rebalance that
/// gives back the same partition) must resume after that batch, which will
/// be committed before the assignment is handled (or the worker stops).
struct StoreOffsets {
    store: Arc<Store>,
    in_flight: Arc<InFlightOffsets>,
    /// How long a revocation waits for the batch in flight.
    revoke_timeout: Duration,
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

/// The next offset of each input partition after the records already handed
/// to processing. Everything handed is committed before the store's offset
/// is read again (or the worker stops), so a record below it has been
/// processed: an eager rebalance revokes and re-assigns a partition while
/// records fetched before it are still unprocessed in a batch, the partition
/// is sought back to the store's offset, and those records come again, in
/// the same poll or a later one. Processed twice, a customer's counts would
/// be doubled (or the second copy dead-lettered as a duplicate event id).
#[derive(Default)]
struct Handed {
    next: HashMap<(Arc<str>, i32), i64>,
}

impl Handed {
    /// `records` without those already handed; records them as handed.
    fn keep_new(&mut self, records: Vec<InputRecord>) -> Vec<InputRecord> {
        records
            .into_iter()
            .filter(|r| {
                let next = self.next.entry((r.topic.clone(), r.partition)).or_insert(i64::MIN);
                let new = r.offset >= *next;
                if new {
                    *next = r.offset + 1;
                }
                new
            })
            .collect()
    }
}

/// The batch's customers: state, changed by the batch, hot-state charge.
type States = HashMap<String, (Box<CustomerState>, bool, usize)>;

/// Adds one to `name`'s count, allocating the name only the first time.
fn count(counts: &mut HashMap<String, i64>, name: &str) {
    match counts.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            counts.insert(name.to_string(), 1);
        }
    }
}

/// A processed batch, ready to be produced and committed.
#[derive(Default)]
struct Processed {
    outputs: Vec<OutputRecord>,
    commits: Vec<Batch>,
    kafka_offsets: Vec<(TopicPartition, i64)>,
    /// Event times of the events that caused outputs, for latency.
    output_event_times: Vec<Timestamp>,
    stats: BatchStats,
}

#[derive(Default)]
struct BatchStats {
    records: u64,
    by_topic: BTreeMap<Arc<str>, u64>,
    timers_fired: u64,
    dlq: Vec<&'static str>,
    entries: HashMap<String, i64>,
    exits: HashMap<String, i64>,
    offers: Vec<(String, bool)>,
}

fn format_of(f: WireFormat) -> Format {
    match f {
        WireFormat::Json => Format::Json,
        WireFormat::Avro => Format::Avro,
        WireFormat::ConfluentAvro => Format::ConfluentAvro,
    }
}

/// Loads the rules file, refusing it with file, line, column and reason.
pub fn load_rules(path: &std::path::Path) -> anyhow::Result<cohort_core::rules::RuleSet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read rules", path.display()))?;
    cohort_core::rules::RuleSet::from_yaml(&path.display().to_string(), &text).map_err(|e| anyhow!("{e}"))
}

/// Builds the codec registry from the configured schemas directory and ids.
pub fn load_registry(config: &Config) -> anyhow::Result<Registry> {
    if config.format.schema_ids.is_empty() && !config.format.schemas_dir.join("io.cohort.v1.ClickEvent.avsc").exists() {
        return Ok(Registry::builtin());
    }
    let ids = config.format.schema_id_list();
    Registry::load(&config.format.schemas_dir, ids).map_err(|e| anyhow!("{e}"))
}

impl Worker {
    /// Opens the store and compiles the rules; connects to nothing yet.
    pub fn open(
        config: Config,
        metrics: Metrics,
        readiness: Arc<Readiness>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Worker> {
        let rules = load_rules(&config.rules.path)?;
        metrics.rules_info.with_label_values(&[rules.version()]).set(1);
        // Series that exist before the first output or failure, so rates
        // over them are defined from the start (0, not "No data").
        metrics.output_errors.with_label_values(&[OUTPUT_ERRORS_LABEL]).inc_by(0);
        let engine = Arc::new(Engine::new(rules, Default::default()));
        // The worker keeps hot customers decoded, in `state_cache_bytes`
        // (see `crate::hot`); a second cache of their encoded bytes in the
        // store would only cost memory and a copy on every commit.
        let rocksdb = cohort_store::StoreConfig { state_cache_bytes: 0, ..config.store.rocksdb.clone() };
        let store = Arc::new(
            Store::open(&config.store.path, &rocksdb)
                .with_context(|| format!("opening the store at {}", config.store.path.display()))?,
        );
        let registry = Arc::new(load_registry(&config)?);
        let decoder = Decoder::new(format_of(config.format.input), registry.clone())
            .with_max_value_bytes(config.processing.max_record_bytes);
        let encoder = Encoder::new(format_of(config.format.output), registry);
        let t = &config.topics;
        let kinds = [
            (t.clickstream.clone(), InputKind::Click),
            (t.purchases.clone(), InputKind::Purchase),
            (t.profiles.clone(), InputKind::Profile),
            (t.offer_outcomes.clone(), InputKind::OfferOutcome),
        ]
        .into_iter()
        .collect();
        let out_topics = OutTopics {
            segment_changes: t.segment_changes.as_str().into(),
            next_best_offers: t.next_best_offers.as_str().into(),
            changelog: t.changelog.as_str().into(),
        };
        Ok(Worker {
            config,
            engine,
            store,
            decoder,
            encoder,
            metrics,
            readiness,
            progress: Arc::new(Progress::new(Instant::now())),
            clock,
            partitions: BTreeMap::new(),
            kinds,
            in_flight: InFlightWrites::default(),
            handed: Handed::default(),
            out_topics,
            scratch: Scratch::default(),
        })
    }

    /// The store, shared with the admin API.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The compiled rules and settings.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Consumes until `shutdown` completes, then finishes the batch in hand,
    /// commits, and leaves the group. An error stops consuming the same way:
    /// the batch in flight gets `shutdown_timeout` to be acknowledged and
    /// committed before the producer is flushed and the group left.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let cfg = self.config.clone();
        let mut consumer_props = cfg.kafka.properties.clone();
        consumer_props.extend(cfg.kafka.consumer_properties.clone());
        let settings = ConsumerSettings {
            bootstrap: cfg.kafka.bootstrap_servers.clone(),
            group_id: cfg.kafka.group_id.clone(),
            topics: cfg.topics.inputs().iter().map(|s| s.to_string()).collect(),
            properties: consumer_props,
            start: match cfg.kafka.start_from {
                StartFrom::Earliest => StartPosition::Earliest,
                StartFrom::Latest => StartPosition::Latest,
            },
        };
        let offsets = StoreOffsets {
            store: self.store.clone(),
            in_flight: self.in_flight.offsets.clone(),
            revoke_timeout: cfg.processing.shutdown_timeout,
        };
        let (consumer, events) = InputConsumer::new(&settings, Arc::new(offsets))?;
        let mut producer_props = cfg.kafka.properties.clone();
        producer_props.extend(cfg.kafka.producer_properties.clone());
        let producer =
            Arc::new(OutputProducer::new(&cfg.kafka.bootstrap_servers, &producer_props, cfg.processing.max_in_flight)?);
        info!(
            group = %cfg.kafka.group_id,
            bootstrap = %cfg.kafka.bootstrap_servers,
            rules = %self.engine.rules().version(),
            "worker started"
        );
        let watchdog = Watchdog::spawn(WatchdogParts {
            progress: self.progress.clone(),
            consumer: consumer.health(),
            readiness: self.readiness.clone(),
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            input_topics: cfg.topics.inputs().iter().map(|t| t.to_string()).collect(),
            stall_timeout: cfg.processing.stall_timeout,
        });

        let mut in_flight: Option<InFlight> = None;
        let consumed = self.consume(&consumer, events, &producer, &mut in_flight, shutdown).await;
        // One budget for everything after the loop: the batch in flight,
        // the producer's last records and leaving the group.
        let budget = cfg.processing.shutdown_timeout;
        let deadline = Instant::now() + budget;
        let drained = self.drain(&mut in_flight, &consumer, budget).await;
        drop(watchdog);
        self.readiness.consuming.store(false, Ordering::Relaxed);
        self.metrics.ready.set(0);
        let left = deadline.saturating_duration_since(Instant::now());
        info!(budget_left = ?left, "shutting down: flushing the producer and leaving the group");
        if !close_within(producer, consumer, left).await {
            warn!(
                budget = ?budget,
                "the producer's flush and leaving the group did not finish within processing.shutdown_timeout; \
                 exiting without waiting (the group reassigns this worker's partitions after session.timeout.ms; \
                 anything not committed to the store is replayed from its offsets)"
            );
        }
        match (consumed, drained) {
            (Err(e), Err(d)) => {
                warn!(error = %d, "the batch in flight could not be finished either");
                Err(e)
            }
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// The loop: poll, process, hand the batch to a produce-and-commit task,
    /// and poll the next while it runs. Returns with at most one batch in
    /// flight, left in `in_flight` for [`Worker::drain`].
    async fn consume(
        &mut self,
        consumer: &InputConsumer,
        mut events: tokio::sync::mpsc::UnboundedReceiver<PartitionEvent>,
        producer: &Arc<OutputProducer>,
        in_flight: &mut Option<InFlight>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let cfg = self.config.clone();
        tokio::pin!(shutdown);
        let mut last_housekeeping = Instant::now();
        loop {
            if in_flight.as_ref().is_some_and(|f| f.task.is_finished()) {
                self.finish(in_flight, consumer).await?;
            }
            if last_housekeeping.elapsed() > Duration::from_secs(5) {
                last_housekeeping = Instant::now();
                // RocksDB point reads: off the async workers.
                tokio::task::block_in_place(|| self.housekeeping(consumer));
            }
            let batch = tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                b = consumer.next_batch(cfg.processing.batch_max_records, cfg.processing.batch_max_wait) => b,
            };
            let mut partition_events = Vec::new();
            while let Ok(ev) = events.try_recv() {
                partition_events.push(ev);
            }
            if !partition_events.is_empty() {
                // The rebalance callback waited for the batch in flight
                // before revoking; assigned partitions load committed state.
                if !self.finish_unless(in_flight, consumer, &mut shutdown).await? {
                    return Ok(());
                }
                for ev in partition_events {
                    self.on_partition_event(ev)?;
                }
            }
            let records = match batch {
                Ok(r) => r,
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, "consumer error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Records of partitions revoked since they were fetched belong to
            // their next owner, which starts from the store's offsets.
            let records: Vec<InputRecord> =
                records.into_iter().filter(|r| self.partitions.contains_key(&r.partition)).collect();
            let records = self.handed.keep_new(records);
            let live = cfg.processing.live_clock;
            if records.is_empty() && !live {
                continue;
            }
            let started = Instant::now();
            let mut processed = {
                let _span = info_span!("batch", records = records.len()).entered();
                tokio::task::block_in_place(|| self.process(&records, live))?
            };
            let processing = started.elapsed();
            if processed.commits.is_empty() && processed.outputs.is_empty() {
                continue;
            }
            // One batch in flight: this one is produced after the last is committed.
            if !self.finish_unless(in_flight, consumer, &mut shutdown).await? {
                return Ok(());
            }
            self.in_flight.set(&processed.commits);
            let commits = std::mem::take(&mut processed.commits);
            let outputs = std::mem::take(&mut processed.outputs);
            let settle = SettleOnDrop(self.in_flight.offsets.clone());
            let (producer, store, metrics, clock, progress) =
                (producer.clone(), self.store.clone(), self.metrics.clone(), self.clock.clone(), self.progress.clone());
            let task = tokio::spawn(async move {
                let _settle = settle;
                let handed_over = Instant::now();
                deliver(&producer, &metrics, &progress, &outputs).await?;
                drop(outputs);
                progress.committing();
                let committed = tokio::task::spawn_blocking(move || -> Result<(), cohort_store::StoreError> {
                    for b in &commits {
                        store.commit(b)?;
                    }
                    Ok(())
                })
                .await;
                progress.committed();
                committed??;
                // Not counting the wait for the batch before it to commit
                // (this batch's processing did overlap that batch's produce).
                Ok(Committed { at: clock.now(), batch_duration: processing + handed_over.elapsed() })
            });
            *in_flight = Some(InFlight { task, processed });
        }
    }

    /// Takes ownership of `partitions` as an assignment would, without Kafka
    /// (benchmarks, offline replays and tests).
    pub fn assign(&mut self, topic: &str, partitions: &[i32]) -> anyhow::Result<()> {
        let parts =
            partitions.iter().map(|p| (TopicPartition { topic: topic.to_string(), partition: *p }, None)).collect();
        self.on_partition_event(PartitionEvent::Assigned(parts))
    }

    /// Processes records and commits the result to the store without a
    /// broker: everything a batch does except producing. Returns the output
    /// records the batch would have produced (outputs, dead letters, changelog).
    pub fn process_offline(&mut self, records: &[InputRecord]) -> anyhow::Result<Vec<OutputRecord>> {
        let processed = self.process(records, false)?;
        for b in &processed.commits {
            if let Err(e) = self.store.commit(b) {
                self.forget_hot_states();
                return Err(e.into());
            }
        }
        Ok(processed.outputs)
    }

    /// After a batch that will not be committed: every partition processed
    /// before the failure put states the store never got into its hot
    /// states, so a caller that goes on must read the store's.
    fn forget_hot_states(&mut self) {
        for rt in self.partitions.values_mut() {
            rt.hot.clear();
        }
    }

    fn on_partition_event(&mut self, ev: PartitionEvent) -> anyhow::Result<()> {
        match ev {
            PartitionEvent::Assigned(parts) => {
                self.metrics.rebalances.with_label_values(&["assigned"]).inc();
                let partitions: BTreeSet<i32> = parts.iter().map(|(p, _)| p.partition).collect();
                for p in partitions {
                    if self.partitions.contains_key(&p) {
                        continue;
                    }
                    self.metrics.restoring_partitions.inc();
                    let timers = self.store.partition_timers(p as u32)?;
                    let mut rt = PartitionRuntime {
                        watermark: Watermark::new(
                            CoreDuration::from_millis(self.config.processing.allowed_lateness.as_millis() as i64),
                            self.load_watermark(p)?,
                        ),
                        tables: self.load_tables(p)?,
                        tables_dirty: false,
                        timers: Timers::default(),
                        hot: HotStates::default(),
                    };
                    for t in timers {
                        rt.timers.set(&t.customer, Some(t.due));
                    }
                    info!(partition = p, timers = rt.timers.len(), "partition ready");
                    self.partitions.insert(p, rt);
                    self.metrics.restoring_partitions.dec();
                }
            }
            PartitionEvent::Revoked(parts) => {
                self.metrics.rebalances.with_label_values(&["revoked"]).inc();
                let still: BTreeSet<i32> = parts.iter().map(|p| p.partition).collect();
                for p in still {
                    self.partitions.remove(&p);
                    // Their lag series go with the watchdog's next refresh.
                    let _ = self.metrics.partition_watermark.remove_label_values(&[&p.to_string()]);
                }
            }
        }
        self.progress.set_partitions(self.partitions.keys().copied().collect());
        // The hot-state budget is the worker's, split over its partitions.
        let per_partition = self.config.store.rocksdb.state_cache_bytes as usize / self.partitions.len().max(1);
        for rt in self.partitions.values_mut() {
            rt.hot.set_budget(per_partition);
        }
        let assigned = !self.partitions.is_empty();
        self.readiness.assigned.store(assigned, Ordering::Relaxed);
        self.readiness.consuming.store(assigned, Ordering::Relaxed);
        self.metrics.assigned_partitions.set(self.partitions.len() as i64);
        self.metrics.ready.set(i64::from(self.readiness.is_ready()));
        Ok(())
    }

    /// Decodes, decides and prepares everything a batch writes. Pure but for
    /// store reads.
    fn process(&mut self, records: &[InputRecord], live: bool) -> anyhow::Result<Processed> {
        let mut out = Processed::default();
        // Most batches produce fewer outputs than they have records.
        out.outputs.reserve(records.len());
        out.output_event_times.reserve(records.len());
        let mut by_partition: BTreeMap<i32, Vec<&InputRecord>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        if live {
            for p in self.partitions.keys() {
                by_partition.entry(*p).or_default();
            }
        }
        let now = self.clock.now();
        let skew = CoreDuration::from_millis(self.config.processing.max_future_skew.as_millis() as i64);
        let mut scratch = std::mem::take(&mut self.scratch);
        for (partition, recs) in by_partition {
            let Some(mut rt) = self.partitions.remove(&partition) else { continue };
            let result = self.process_partition(partition, &mut rt, &recs, now, skew, live, &mut scratch, &mut out);
            self.partitions.insert(partition, rt);
            if result.is_err() {
                self.scratch = scratch;
                self.forget_hot_states();
                return result.map(|()| out);
            }
        }
        self.scratch = scratch;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn process_partition(
        &self,
        partition: i32,
        rt: &mut PartitionRuntime,
        recs: &[&InputRecord],
        now: Timestamp,
        skew: CoreDuration,
        live: bool,
        scratch: &mut Scratch,
        out: &mut Processed,
    ) -> anyhow::Result<()> {
        let topics = &self.out_topics;
        let Scratch { events, states } = scratch;
        // Left from a batch that failed half-way.
        events.clear();
        states.clear();
        // Decode and validate; bad records become dead letters.
        events.reserve(recs.len());
        let mut next_offsets: BTreeMap<&str, i64> = BTreeMap::new();
        for (i, r) in recs.iter().enumerate() {
            next_offsets.insert(&r.topic, r.offset + 1);
            out.stats.records += 1;
            *out.stats.by_topic.entry(r.topic.clone()).or_default() += 1;
            let Some(kind) = self.kinds.get(r.topic.as_ref()).copied() else { continue };
            let rec = cohort_codec::Record {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
            };
            let event = match self.decoder.decode(kind, &rec) {
                Ok(ev) => ev,
                Err(e) => {
                    self.metrics.decode_errors.with_label_values(&[e.reason()]).inc();
                    self.dead_letter(r, e.reason(), &e.to_string(), out);
                    continue;
                }
            };
            if event.customer.starts_with('\u{0}') {
                self.dead_letter(r, "invalid_key", "customer ids may not start with a NUL byte (reserved)", out);
                continue;
            }
            if let Err(e) = event.validate_with_skew(now, skew) {
                self.dead_letter(r, e.reason(), &e.to_string(), out);
                continue;
            }
            events.push((event, i));
        }

        // Load the states the events touch: from the hot states, the rest
        // in one multi-get.
        {
            let (hits, misses) = (rt.hot.hits, rt.hot.misses);
            // The events' customers, and those whose timers this batch can
            // fire: at most those due by the watermark its events (and the
            // wall clock) would reach, so timers need no store read of their own.
            let mut horizon = rt.watermark;
            for (e, _) in events.iter() {
                horizon.observe(e.time);
            }
            if live {
                horizon.observe_wall_clock(now);
            }
            let horizon = horizon.current();
            let due: Vec<Arc<str>> = rt.timers.due_by(horizon);
            // Hot states first; the rest, each once, from one multi-get.
            let mut missed: foldhash::HashSet<&str> = Default::default();
            for c in events.iter().map(|(e, _)| e.customer.as_str()).chain(due.iter().map(|c| &**c)) {
                if states.contains_key(c) || missed.contains(c) {
                    continue;
                }
                match rt.hot.take(c) {
                    Some((customer, state, charge)) => {
                        states.insert(customer, (state, false, charge));
                    }
                    None => {
                        missed.insert(c);
                    }
                }
            }
            // In key order, as RocksDB's multi-get wants them.
            let mut missing: Vec<&str> = missed.into_iter().collect();
            missing.sort_unstable();
            let loaded = self.read_states(partition, &missing);
            for (c, res) in missing.iter().zip(loaded) {
                let (state, charge) = self.decode_state(partition, res)?;
                states.insert(c.to_string(), (state, false, charge));
            }
            self.metrics.state_cache_hits.inc_by(rt.hot.hits - hits);
            self.metrics.state_cache_misses.inc_by(rt.hot.misses - misses);
        }

        let engine = &*self.engine;
        let watermark_before = rt.watermark.current();
        let mut delta = TimerDelta::default();
        let mut forgotten: Vec<String> = Vec::new();
        for (event, i) in events.iter() {
            let rec = recs[*i];
            self.fire_due_timers(partition, rt, states, &mut delta, out)?;
            // Every event's customer was loaded above (an absent one as an
            // empty state) and nothing removes one.
            let entry = states.get_mut(&event.customer).expect("loaded with the batch");
            if matches!(event.kind, EventKind::Forget) {
                forgotten.push(event.customer.clone());
            }
            let decision = apply(&mut entry.0, Input::Event(event), &rt.tables.context(engine));
            if decision.duplicate {
                self.dead_letter(
                    rec,
                    dlq::reason::DUPLICATE_EVENT_ID,
                    &format!("event id {} was already processed for this customer", event.id),
                    out,
                );
                continue;
            }
            rt.tables.observe(event);
            rt.tables_dirty |= matches!(event.kind, EventKind::Purchase(_) | EventKind::OfferOutcome(_));
            entry.1 = true;
            if decision.forget {
                *entry.0 = CustomerState::default();
                rt.set_timer(&event.customer, None, &mut delta);
            } else {
                rt.set_timer(&event.customer, decision.next_timer, &mut delta);
            }
            for o in decision.outputs {
                out.output_event_times.push(event.time);
                self.output(o, out)?;
            }
            rt.watermark.observe(event.time);
        }
        if live {
            rt.watermark.observe_wall_clock(now);
        }
        self.fire_due_timers(partition, rt, states, &mut delta, out)?;
        self.metrics
            .partition_watermark
            .with_label_values(&[&partition.to_string()])
            .set(rt.watermark.current().as_millis().max(0) / 1000);

        // Changelog and the store batch.
        let mut batch = Batch { partition: partition as u32, ..Default::default() };
        for (customer, (state, dirty, charge)) in states.drain() {
            if !dirty {
                rt.hot.put(customer, state, charge);
                continue;
            }
            let gone = forgotten.contains(&customer) && *state == CustomerState::default();
            let bytes = if gone { None } else { Some(Bytes::from(cohort_core::encode::encode(&state))) };
            out.outputs.push(OutputRecord {
                topic: topics.changelog.clone(),
                key: Some(customer.clone().into_bytes()),
                value: bytes.as_deref().map(<[u8]>::to_vec),
                headers: Vec::new(),
                timestamp: None,
            });
            if let Some(b) = &bytes {
                rt.hot.put(customer.clone(), state, hot::charge(b.len()));
            }
            batch.states.push((customer, bytes));
        }
        if rt.watermark.current() != watermark_before {
            let bytes = rt.watermark.current().as_millis().to_be_bytes().to_vec();
            out.outputs.push(OutputRecord {
                topic: topics.changelog.clone(),
                key: Some(changelog_key(KEY_WATERMARK, partition).into_bytes()),
                value: Some(bytes.clone()),
                headers: Vec::new(),
                timestamp: None,
            });
            batch.states.push((KEY_WATERMARK.to_string(), Some(bytes.into())));
        }
        if rt.tables_dirty {
            rt.tables_dirty = false;
            for (key, bytes) in
                [(KEY_POPULARITY, rt.tables.popularity.encode()), (KEY_PROPENSITY, rt.tables.propensity.encode())]
            {
                out.outputs.push(OutputRecord {
                    topic: topics.changelog.clone(),
                    key: Some(changelog_key(key, partition).into_bytes()),
                    value: Some(bytes.clone()),
                    headers: Vec::new(),
                    timestamp: None,
                });
                batch.states.push((key.to_string(), Some(bytes.into())));
            }
        }
        // Keys are unique (one entry per customer or table), so unstable is exact.
        batch.states.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let (set, clear) = delta.finish(&rt.timers);
        rt.timers.compact();
        batch.timers_set = set;
        batch.timers_clear = clear;
        for (topic, next) in next_offsets {
            batch.input_offsets.push(TopicOffset {
                topic: topic.to_string(),
                partition: partition as u32,
                next_offset: next,
            });
            out.kafka_offsets.push((TopicPartition { topic: topic.to_string(), partition }, next));
        }
        if !batch.states.is_empty()
            || !batch.timers_set.is_empty()
            || !batch.timers_clear.is_empty()
            || !batch.input_offsets.is_empty()
        {
            out.commits.push(batch);
        }
        Ok(())
    }

    /// The partition's watermark as last committed, or the beginning of time.
    fn load_watermark(&self, partition: i32) -> anyhow::Result<Timestamp> {
        let bytes =
            self.store.get(partition as u32, KEY_WATERMARK).map_err(|e| anyhow!("reading the watermark: {e}"))?;
        Ok(match bytes.as_deref().map(<[u8; 8]>::try_from) {
            Some(Ok(b)) => Timestamp(i64::from_be_bytes(b)),
            Some(Err(_)) => {
                warn!(partition, "stored watermark has the wrong length; starting from the beginning of time");
                Timestamp::MIN
            }
            None => Timestamp::MIN,
        })
    }

    /// The partition's learned tables as last committed, or empty ones.
    fn load_tables(&self, partition: i32) -> anyhow::Result<Tables> {
        let mut tables = Tables::default();
        let get = |key: &str| self.store.get(partition as u32, key).map_err(|e| anyhow!("reading {key:?}: {e}"));
        if let Some(b) = get(KEY_POPULARITY)? {
            match cohort_core::offer::Popularity::decode(&b) {
                Ok(p) => tables.popularity = p,
                Err(e) => warn!(partition, error = %e, "undecodable popularity table; relearning it"),
            }
        }
        if let Some(b) = get(KEY_PROPENSITY)? {
            match cohort_core::offer::Propensity::decode(&b) {
                Ok(p) => tables.propensity = p,
                Err(e) => warn!(partition, error = %e, "undecodable propensity table; relearning it"),
            }
        }
        Ok(tables)
    }

    fn fire_due_timers(
        &self,
        partition: i32,
        rt: &mut PartitionRuntime,
        states: &mut States,
        delta: &mut TimerDelta,
        out: &mut Processed,
    ) -> anyhow::Result<()> {
        let engine = &*self.engine;
        while let Some((due, customer)) = rt.pop_due(rt.watermark.current(), delta) {
            if !states.contains_key(&*customer) {
                // Normally prefetched with the batch's events; a timer set
                // and due within this batch is already in `states` too.
                if let Some((c, state, charge)) = rt.hot.take(&customer) {
                    states.insert(c, (state, false, charge));
                } else {
                    let res = self.read_states(partition, &[&customer]).pop().unwrap_or(Ok(None));
                    let (state, charge) = self.decode_state(partition, res)?;
                    states.insert(customer.to_string(), (state, false, charge));
                }
            }
            let Some(entry) = states.get_mut(&*customer) else { continue };
            let decision = apply(&mut entry.0, Input::Timer { customer: &customer, due }, &rt.tables.context(engine));
            entry.1 = true;
            out.stats.timers_fired += 1;
            rt.set_timer(&customer, decision.next_timer, delta);
            for o in decision.outputs {
                out.output_event_times.push(due);
                self.output(o, out)?;
            }
        }
        Ok(())
    }

    /// Customers' stored bytes, one result per customer: the batch in
    /// flight's where it wrote them, the store's otherwise.
    fn read_states(&self, partition: i32, customers: &[&str]) -> Vec<Result<Option<Bytes>, cohort_store::StoreError>> {
        let Some(in_flight) = self.in_flight.states.get(&partition) else {
            return self.store.get_many(partition as u32, customers);
        };
        let mut out: Vec<Option<Result<Option<Bytes>, cohort_store::StoreError>>> =
            customers.iter().map(|c| in_flight.get(*c).map(|b| Ok(b.clone()))).collect();
        let missing: Vec<&str> = customers.iter().zip(&out).filter(|(_, r)| r.is_none()).map(|(c, _)| *c).collect();
        let mut loaded = self.store.get_many(partition as u32, &missing).into_iter();
        for slot in out.iter_mut().filter(|r| r.is_none()) {
            *slot = loaded.next();
        }
        // get_many answers every key it is given, so no slot is left empty.
        out.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    /// A loaded state, decoded, with what it costs in the hot states.
    fn decode_state(
        &self,
        partition: i32,
        res: Result<Option<cohort_store::Bytes>, cohort_store::StoreError>,
    ) -> anyhow::Result<(Box<CustomerState>, usize)> {
        match res {
            Ok(None) => Ok((Box::default(), hot::charge(0))),
            Ok(Some(bytes)) => match cohort_core::encode::decode(&bytes) {
                Ok(s) => Ok((Box::new(s), hot::charge(bytes.len()))),
                Err(e) => {
                    // A corrupt record must not stop its partition: the
                    // customer restarts from an empty state, loudly.
                    warn!(partition, error = %e, "undecodable customer state; starting it afresh");
                    self.metrics.decode_errors.with_label_values(&["corrupt_state"]).inc();
                    Ok((Box::default(), hot::charge(0)))
                }
            },
            Err(e) if e.class() == cohort_store::ErrorClass::BadData => {
                warn!(partition, error = %e, "corrupt customer record; starting it afresh");
                self.metrics.decode_errors.with_label_values(&["corrupt_state"]).inc();
                Ok((Box::default(), hot::charge(0)))
            }
            Err(e) => Err(anyhow!("reading customer state: {e}")),
        }
    }

    fn dead_letter(&self, rec: &InputRecord, reason: &'static str, detail: &str, out: &mut Processed) {
        warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, reason, "record sent to dlq");
        out.stats.dlq.push(reason);
        out.outputs.push(dlq::dead_letter(&self.config.topics.dlq, rec, reason, detail));
    }

    fn output(&self, o: Output, out: &mut Processed) -> anyhow::Result<()> {
        let topics = &self.out_topics;
        let rec = match o {
            Output::SegmentChanged(s) => {
                for e in &s.entered {
                    count(&mut out.stats.entries, e);
                }
                for e in &s.exited {
                    count(&mut out.stats.exits, e);
                }
                // Encoded first: the customer and id then move into the key
                // and header without a copy.
                let value = self.encoder.encode_segment_changed(&s)?;
                OutputRecord {
                    topic: topics.segment_changes.clone(),
                    key: Some(s.customer.into_bytes()),
                    value: Some(value),
                    headers: vec![
                        (HEADER_TYPE.into(), (&b"segment_changed"[..]).into()),
                        (HEADER_ID.into(), s.id.into_bytes().into()),
                    ],
                    timestamp: Some(s.time.as_millis()),
                }
            }
            Output::NextBestOffer(n) => {
                let value = self.encoder.encode_next_best_offer(&n)?;
                let label = n.offer.or(n.holdout_offer).unwrap_or_default();
                out.stats.offers.push((label, n.holdout));
                OutputRecord {
                    topic: topics.next_best_offers.clone(),
                    key: Some(n.customer.into_bytes()),
                    value: Some(value),
                    headers: vec![
                        (HEADER_TYPE.into(), (&b"next_best_offer"[..]).into()),
                        (HEADER_ID.into(), n.id.into_bytes().into()),
                    ],
                    timestamp: Some(n.time.as_millis()),
                }
            }
            Output::Forgotten(f) => OutputRecord {
                topic: topics.segment_changes.clone(),
                key: Some(f.customer.into_bytes()),
                value: None,
                headers: vec![
                    (HEADER_TYPE.into(), (&b"forgotten"[..]).into()),
                    (HEADER_FORGOTTEN.into(), (&b"true"[..]).into()),
                    (HEADER_ID.into(), f.id.into_bytes().into()),
                ],
                timestamp: Some(f.time.as_millis()),
            },
        };
        out.outputs.push(rec);
        Ok(())
    }

    /// Waits for the batch in flight, if any, to be acknowledged and
    /// committed, then makes the advisory Kafka commit and records its metrics.
    /// Cancel-safe: dropped while it waits, the batch stays in `in_flight`.
    async fn finish(&mut self, in_flight: &mut Option<InFlight>, consumer: &InputConsumer) -> anyhow::Result<()> {
        let Some(f) = in_flight.as_mut() else { return Ok(()) };
        let result = (&mut f.task).await;
        let f = in_flight.take().expect("the batch awaited is in flight");
        self.finished(f.processed, result, consumer)
    }

    /// [`Worker::finish`], unless `shutdown` completes first (false): the
    /// batch then stays in flight for [`Worker::drain`]. A batch whose
    /// outputs cannot be delivered (the broker away) retries until then, so
    /// SIGTERM must not wait behind it.
    async fn finish_unless<S: Future<Output = ()>>(
        &mut self,
        in_flight: &mut Option<InFlight>,
        consumer: &InputConsumer,
        shutdown: &mut std::pin::Pin<&mut S>,
    ) -> anyhow::Result<bool> {
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => Ok(false),
            r = self.finish(in_flight, consumer) => r.map(|()| true),
        }
    }

    /// [`Worker::finish`] on the way out: the batch in flight gets `timeout`,
    /// then is abandoned (its task aborted; if its store commit had begun,
    /// some of its partitions' writes may land, each partition's atomically)
    /// and what is not committed is replayed from the store's offsets on
    /// restart.
    async fn drain(
        &mut self,
        in_flight: &mut Option<InFlight>,
        consumer: &InputConsumer,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match tokio::time::timeout(timeout, self.finish(in_flight, consumer)).await {
            Ok(result) => result,
            Err(_) => {
                // `finish` is cancel-safe: the batch is still in `in_flight`.
                if let Some(f) = in_flight.take() {
                    f.task.abort();
                }
                Err(anyhow!(
                    "the batch in flight was not acknowledged and committed within {timeout:?}; \
                     it is replayed from the store's offsets on restart"
                ))
            }
        }
    }

    fn finished(
        &mut self,
        processed: Processed,
        result: Result<anyhow::Result<Committed>, tokio::task::JoinError>,
        consumer: &InputConsumer,
    ) -> anyhow::Result<()> {
        self.in_flight.clear();
        let committed = result.context("the batch's produce-and-commit task")??;
        // Only partitions still assigned: a revoked one's next owner may have
        // committed further already, and this would move it back.
        let assigned: BTreeSet<TopicPartition> = consumer.assignment().unwrap_or_default().into_iter().collect();
        let offsets: Vec<(TopicPartition, i64)> =
            processed.kafka_offsets.iter().filter(|(tp, _)| assigned.contains(tp)).cloned().collect();
        if let Err(e) = consumer.commit_advisory(&offsets) {
            debug!(error = %e, "advisory offset commit failed");
        }
        self.record_metrics(&processed, &committed);
        Ok(())
    }

    fn record_metrics(&self, p: &Processed, committed: &Committed) {
        let m = &self.metrics;
        m.batch_records.observe(p.stats.records as f64);
        for (topic, n) in &p.stats.by_topic {
            m.input_records.with_label_values(&[topic.as_ref()]).inc_by(*n);
        }
        m.batch_duration.observe(committed.batch_duration.as_secs_f64());
        m.timers_fired.inc_by(p.stats.timers_fired);
        for reason in &p.stats.dlq {
            m.dlq_records.with_label_values(&[reason]).inc();
        }
        for (s, n) in &p.stats.entries {
            m.segment_entries.with_label_values(&[s]).inc_by(*n as u64);
            m.segment_population.with_label_values(&[s]).add(*n);
        }
        for (s, n) in &p.stats.exits {
            m.segment_exits.with_label_values(&[s]).inc_by(*n as u64);
            m.segment_population.with_label_values(&[s]).sub(*n);
        }
        for (offer, holdout) in &p.stats.offers {
            m.offers_decided.with_label_values(&[offer.as_str(), if *holdout { "true" } else { "false" }]).inc();
        }
        for t in &p.output_event_times {
            let secs = committed.at.since(*t).as_millis().max(0) as f64 / 1000.0;
            m.event_to_output_latency.observe(secs);
        }
    }

    /// Re-commits the store's offsets to Kafka. Asks the broker nothing and
    /// waits for nothing (the commit is asynchronous): lag, watermarks and
    /// the store's gauges are the watchdog's (`crate::liveness`).
    fn housekeeping(&self, consumer: &InputConsumer) {
        let mut stored = Vec::new();
        for p in self.partitions.keys() {
            for topic in self.config.topics.inputs() {
                let tp = TopicPartition { topic: topic.to_string(), partition: *p };
                if let Some(next) = self.store.input_offset(topic, *p as u32).ok().flatten() {
                    stored.push((tp, next));
                }
            }
        }
        // Again, from the store: an asynchronous commit that failed (during a
        // rebalance, say) is otherwise only repaired by the partition's next
        // batch, and an idle partition would show lag it does not have.
        if let Err(e) = consumer.commit_advisory(&stored) {
            debug!(error = %e, "advisory offset commit failed");
        }
    }
}

/// Flushes the producer and leaves the group on a thread of their own, for
/// at most `budget`: with the broker down or unresponsive librdkafka's
/// consumer close waits for a LeaveGroup (and the rebalance it triggers)
/// that may never be answered. True if both finished in time; otherwise
/// the thread is left behind and the process exits without it.
async fn close_within(producer: Arc<OutputProducer>, consumer: InputConsumer, budget: Duration) -> bool {
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
    use cohort_core::event::Event;

    fn open(dir: &std::path::Path) -> Worker {
        let mut config = Config::default();
        config.rules.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
        config.store.path = dir.join("store");
        config.processing.live_clock = false;
        config.processing.max_future_skew = std::time::Duration::from_secs(3650 * 86_400);
        let clock = Arc::new(FixedClock(Timestamp(i64::MAX / 4)));
        let mut worker = Worker::open(config, Metrics::new().expect("metrics"), Arc::new(Readiness::default()), clock)
            .expect("open");
        worker.assign("clickstream", &[0, 1]).expect("assign");
        worker
    }

    fn store_offsets(worker: &Worker) -> StoreOffsets {
        StoreOffsets {
            store: worker.store.clone(),
            in_flight: worker.in_flight.offsets.clone(),
            revoke_timeout: Duration::from_secs(30),
        }
    }

    /// The partition the traffic puts a customer on.
    fn partition_of(customer: &str) -> i32 {
        i32::from(customer.bytes().last().unwrap_or(0) % 2)
    }

    /// cohort-loadgen traffic over few customers on two partitions, so
    /// consecutive batches share most of them: `batches` batches of `size`
    /// records, some customers forgotten along the way, and batch 3 without
    /// clicks (it commits no clickstream offset).
    fn traffic(batches: usize, size: usize) -> Vec<Vec<InputRecord>> {
        let load = cohort_loadgen::Config {
            customers: 50,
            seed: 7,
            forget_share: 0.1,
            forget_within: CoreDuration::from_days(3),
            ..Default::default()
        };
        let mut gen = cohort_loadgen::Generator::new(load).expect("loadgen");
        let encoder = Encoder::new(Format::Json, Arc::new(Registry::builtin()));
        let mut offset = 0;
        (0..batches)
            .map(|i| {
                let events: Vec<Event> = gen.by_ref().take(size).collect();
                events
                    .iter()
                    .filter(|e| i != 3 || !matches!(e.kind, EventKind::Click(_)))
                    .map(|e| {
                        offset += 1;
                        let topic = match e.kind {
                            EventKind::Click(_) => "clickstream",
                            EventKind::Purchase(_) => "purchases",
                            EventKind::ProfileUpdate(_) | EventKind::Forget => "customer-profiles",
                            EventKind::OfferOutcome(_) => "offer-outcomes",
                        };
                        InputRecord {
                            topic: Arc::from(topic),
                            partition: partition_of(&e.customer),
                            offset,
                            timestamp: None,
                            key: Some(e.customer.clone().into_bytes()),
                            value: encoder.encode_event(e).expect("encode"),
                            headers: Vec::new(),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// A batch's output records in a fixed order: changelog records come in
    /// the batch's hash-map order, which differs between two workers.
    fn sorted(mut records: Vec<OutputRecord>) -> Vec<OutputRecord> {
        records.sort_by(|a, b| (&a.topic, &a.key, &a.value).cmp(&(&b.topic, &b.key, &b.value)));
        records
    }

    /// Every key of both partitions and its bytes, as the store has them.
    fn stored(worker: &Worker, customers: &[String]) -> Vec<(i32, String, Option<Bytes>)> {
        let mut out = Vec::new();
        for partition in [0, 1] {
            let keys: Vec<&str> = customers.iter().map(String::as_str).collect();
            let values = worker.store.get_many(partition as u32, &keys);
            for (k, v) in customers.iter().zip(values) {
                out.push((partition, k.clone(), v.expect("read")));
            }
        }
        out
    }

    /// Where the store (with the batch in flight over it) says each
    /// partition's clickstream resumes: after the last click of the batches
    /// so far, on that partition.
    fn clicks_resume(batches: &[Vec<InputRecord>], partition: i32) -> Option<i64> {
        batches
            .iter()
            .flatten()
            .rev()
            .find(|r| &*r.topic == "clickstream" && r.partition == partition)
            .map(|r| r.offset + 1)
    }

    /// What the run loop does: batch N+1 is processed while N is produced
    /// and not yet committed. With the hot states dropped in between (as if
    /// evicted), N+1 can only find N's states in the in-flight overlay; it
    /// must decide exactly what the serial loop decides, forgotten customers
    /// (erased states in the overlay) included.
    #[test]
    fn a_batch_processed_while_the_last_is_in_flight_decides_as_if_it_were_committed() {
        let batches = traffic(6, 300);
        let customers: Vec<String> = {
            let mut c: Vec<String> = batches
                .iter()
                .flatten()
                .map(|r| String::from_utf8(r.key.clone().expect("keyed")).expect("utf-8"))
                .collect();
            c.sort();
            c.dedup();
            c.extend([KEY_WATERMARK, KEY_POPULARITY, KEY_PROPENSITY].map(String::from));
            c
        };
        assert!(customers.len() < 300, "few customers, so batches share them");
        let forgets = batches.iter().flatten().filter(|r| r.value.is_none()).count();
        assert!(forgets > 0, "the traffic forgets some customers");
        assert!(batches.iter().flatten().any(|r| r.partition == 1), "both partitions have traffic");

        let serial_dir = tempfile::tempdir().expect("tempdir");
        let mut serial = open(serial_dir.path());
        let serial_outputs: Vec<Vec<OutputRecord>> =
            batches.iter().map(|b| sorted(serial.process_offline(b).expect("batch"))).collect();

        let dir = tempfile::tempdir().expect("tempdir");
        let mut pipelined = open(dir.path());
        let mut previous: Option<Processed> = None;
        let mut outputs = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            pipelined.forget_hot_states();
            let processed = pipelined.process(b, false).expect("batch");
            if let Some(p) = previous.take() {
                for c in &p.commits {
                    pipelined.store.commit(c).expect("commit");
                }
                pipelined.in_flight.clear();
            }
            pipelined.in_flight.set(&processed.commits);
            // The rebalance callback would seek where the batch in flight ends.
            let offsets = store_offsets(&pipelined);
            for partition in [0, 1] {
                assert_eq!(
                    offsets.next_offset("clickstream", partition),
                    clicks_resume(&batches[..=i], partition),
                    "batch {i}, partition {partition}"
                );
            }
            outputs.push(sorted(processed.outputs.clone()));
            previous = Some(processed);
        }
        for c in &previous.expect("a last batch").commits {
            pipelined.store.commit(c).expect("commit");
        }
        pipelined.in_flight.clear();

        assert_eq!(outputs.len(), serial_outputs.len());
        for (i, (p, s)) in outputs.iter().zip(&serial_outputs).enumerate() {
            assert_eq!(p, s, "batch {i}'s outputs (decisions and changelog)");
        }
        assert!(serial_outputs.iter().skip(1).all(|o| !o.is_empty()), "every batch decides something");
        let tombstones = serial_outputs.iter().flatten().filter(|o| o.value.is_none()).count();
        assert!(tombstones > 0, "forgets write changelog tombstones");
        assert_eq!(stored(&pipelined, &customers), stored(&serial, &customers));
        let offsets = store_offsets(&pipelined);
        for partition in [0, 1] {
            assert_eq!(offsets.next_offset("clickstream", partition), clicks_resume(&batches, partition));
        }
    }

    /// A revocation waits for the batch in flight on the revoked partitions
    /// to settle, and does not wait for one that has nothing in flight.
    #[test]
    fn revoking_a_partition_waits_until_its_batch_in_flight_settles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut worker = open(dir.path());
        let batches = traffic(1, 200);
        let processed = worker.process(&batches[0], false).expect("batch");
        worker.in_flight.set(&processed.commits);
        let p0 = TopicPartition { topic: "clickstream".into(), partition: 0 };
        let p7 = TopicPartition { topic: "clickstream".into(), partition: 7 };

        // Nothing of partition 7 is in flight: no wait.
        let offsets = Arc::new(store_offsets(&worker));
        offsets.before_revoke(std::slice::from_ref(&p7));

        let revoking = {
            let offsets = offsets.clone();
            std::thread::spawn(move || offsets.before_revoke(&[p0]))
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!revoking.is_finished(), "the revocation returned with partition 0's batch still in flight");
        let settle = SettleOnDrop(worker.in_flight.offsets.clone());
        for c in &processed.commits {
            worker.store.commit(c).expect("commit");
        }
        drop(settle);
        revoking.join().expect("the revocation returns once the batch settles");
        assert_eq!(offsets.next_offset("clickstream", 0), clicks_resume(&batches, 0), "from the store now");

        // An idle partition's timer decisions (live clock) commit no input
        // offset; its revocation waits for them too.
        worker.in_flight.set(&[Batch { partition: 1, ..Batch::default() }]);
        let p1 = TopicPartition { topic: "clickstream".into(), partition: 1 };
        let revoking = {
            let offsets = offsets.clone();
            std::thread::spawn(move || offsets.before_revoke(&[p1]))
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!revoking.is_finished(), "the revocation returned with partition 1's timer batch in flight");
        worker.in_flight.clear();
        revoking.join().expect("the revocation returns once the batch settles");
    }

    #[test]
    fn records_fetched_again_after_a_revoke_and_reassign_are_dropped_in_this_poll_or_a_later_one() {
        let rec = |partition: i32, offset: i64| InputRecord {
            topic: Arc::from("clickstream"),
            partition,
            offset,
            timestamp: None,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        let offsets = |records: Vec<InputRecord>| -> Vec<(i32, i64)> {
            records.iter().map(|r| (r.partition, r.offset)).collect()
        };
        let mut handed = Handed::default();
        // Partition 0 fetched 10..=12, revoked, re-assigned at 10 and fetched 10..=13, in one poll.
        let poll = vec![
            rec(0, 10),
            rec(1, 5),
            rec(0, 11),
            rec(0, 12),
            rec(0, 10),
            rec(0, 11),
            rec(1, 6),
            rec(0, 12),
            rec(0, 13),
        ];
        assert_eq!(offsets(handed.keep_new(poll)), vec![(0, 10), (1, 5), (0, 11), (0, 12), (1, 6), (0, 13)]);
        // Re-assigned at 11 during that poll: 11..=13 come again in the next one, then 14.
        let poll = vec![rec(0, 11), rec(0, 12), rec(1, 7), rec(0, 13), rec(0, 14)];
        assert_eq!(offsets(handed.keep_new(poll)), vec![(1, 7), (0, 14)]);
        // Another topic's partition 0 is its own sequence.
        let other = InputRecord { topic: Arc::from("purchases"), ..rec(0, 3) };
        assert_eq!(offsets(handed.keep_new(vec![other])), vec![(0, 3)]);
    }
}
