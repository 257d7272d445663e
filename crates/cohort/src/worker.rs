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
//! restart replays both from the store's offsets. A rebalance first waits
//! for the batch in flight, so partitions are released and loaded committed.
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
use crate::metrics::Metrics;
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
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, info_span, warn};

/// Where "now" comes from. The worker reads wall-clock time only through
/// this, so tests and the demo (an accelerated clock) control it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
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
    clock: Arc<dyn Clock>,
    partitions: BTreeMap<i32, PartitionRuntime>,
    /// Input topic name → what it carries.
    kinds: HashMap<String, InputKind>,
    /// What the batch in flight (produced, not yet committed) writes.
    in_flight: InFlightWrites,
}

/// The states and input offsets of the batch in flight: read before the
/// store's, which does not have them until the batch commits.
#[derive(Default)]
struct InFlightWrites {
    /// Partition → customer (or reserved key) → its new bytes (`None`: erased).
    states: HashMap<i32, HashMap<String, Option<Bytes>>>,
    /// (topic, partition) → next offset, for the rebalance callback's seeks.
    offsets: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl InFlightWrites {
    fn set(&mut self, commits: &[Batch]) {
        self.states.clear();
        let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        offsets.clear();
        for b in commits {
            let partition = b.partition as i32;
            let states = self.states.entry(partition).or_default();
            states.extend(b.states.iter().map(|(k, v)| (k.clone(), v.clone())));
            offsets.extend(b.input_offsets.iter().map(|o| ((o.topic.clone(), partition), o.next_offset)));
        }
    }

    /// After the batch committed: the store has it all.
    fn clear(&mut self) {
        self.states.clear();
        self.offsets.lock().unwrap_or_else(|e| e.into_inner()).clear();
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
    /// Pending timers, by due time, and each customer's one pending timer.
    /// Both hold the same `Arc<str>` per customer: moving a timer, which
    /// nearly every event does, allocates nothing.
    timers: BTreeSet<(Timestamp, Arc<str>)>,
    timer_of: HashMap<Arc<str>, Timestamp>,
    /// Decoded states of recently active customers (see [`crate::hot`]).
    hot: HotStates,
}

impl PartitionRuntime {
    fn set_timer(&mut self, customer: &str, due: Option<Timestamp>, delta: &mut TimerDelta) {
        let old = self.timer_of.get(customer).copied();
        if old == due {
            return;
        }
        delta.touch(customer, old);
        let id = match self.timer_of.remove_entry(customer) {
            Some((id, old)) => {
                self.timers.remove(&(old, id.clone()));
                id
            }
            None => Arc::from(customer),
        };
        if let Some(due) = due {
            self.timers.insert((due, id.clone()));
            self.timer_of.insert(id, due);
        }
    }

    /// The earliest pending timer due at or before the watermark.
    fn pop_due(&mut self, watermark: Timestamp, delta: &mut TimerDelta) -> Option<(Timestamp, Arc<str>)> {
        let first = self.timers.first()?;
        if first.0 > watermark {
            return None;
        }
        let (due, id) = self.timers.pop_first()?;
        delta.touch(&id, Some(due));
        self.timer_of.remove(&id);
        Some((due, id))
    }
}

/// Each customer's timer as it was when the batch first touched it; the
/// store is told only the difference to its timer at the end of the batch.
/// (A timer cleared and set again within one batch must survive.)
#[derive(Default)]
struct TimerDelta {
    initial: HashMap<String, Option<Timestamp>>,
}

impl TimerDelta {
    fn touch(&mut self, customer: &str, due: Option<Timestamp>) {
        if !self.initial.contains_key(customer) {
            self.initial.insert(customer.to_string(), due);
        }
    }

    /// `(timers to set, timers to clear)`, given the timers at the end of the batch.
    fn finish(self, now: &HashMap<Arc<str>, Timestamp>) -> (Vec<Timer>, Vec<Timer>) {
        let mut set = Vec::new();
        let mut clear = Vec::new();
        for (customer, before) in self.initial {
            let after = now.get(customer.as_str()).copied();
            if before == after {
                continue;
            }
            if let Some(due) = before {
                clear.push(Timer { due, customer: customer.clone() });
            }
            if let Some(due) = after {
                set.push(Timer { due, customer });
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

/// Produces every record of the batch and waits for all acknowledgements,
/// retrying the whole set while the broker is away (ids are stable, so a
/// resend is a duplicate consumers can drop).
async fn deliver(producer: &OutputProducer, metrics: &Metrics, outputs: &[OutputRecord]) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        metrics.output_in_flight.set(outputs.len() as i64);
        match producer.send_all(outputs).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() => {
                attempt += 1;
                metrics.output_errors.with_label_values(&["all"]).inc();
                let backoff = Duration::from_millis((100u64 << attempt.min(6)).min(5_000));
                warn!(error = %e, attempt, ?backoff, "producing the batch failed; retrying");
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    metrics.output_in_flight.set(0);
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
    in_flight: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl OffsetSource for StoreOffsets {
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = in_flight.get(&(topic.to_string(), partition)) {
            return Some(*next);
        }
        match self.store.input_offset(topic, partition as u32) {
            Ok(o) => o,
            Err(e) => {
                warn!(topic, partition, error = %e, "cannot read stored offset; starting per start_from");
                None
            }
        }
    }
}

/// The batch's customers: state, changed by the batch, hot-state charge.
type States = HashMap<String, (CustomerState, bool, usize)>;

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
        Ok(Worker {
            config,
            engine,
            store,
            decoder,
            encoder,
            metrics,
            readiness,
            clock,
            partitions: BTreeMap::new(),
            kinds,
            in_flight: InFlightWrites::default(),
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
    /// commits, and leaves the group.
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
        let offsets = StoreOffsets { store: self.store.clone(), in_flight: self.in_flight.offsets.clone() };
        let (consumer, mut events) = InputConsumer::new(&settings, Arc::new(offsets))?;
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

        tokio::pin!(shutdown);
        let mut last_housekeeping = Instant::now();
        let mut in_flight: Option<InFlight> = None;
        loop {
            if in_flight.as_ref().is_some_and(|f| f.task.is_finished()) {
                self.finish(&mut in_flight, &consumer).await?;
            }
            if last_housekeeping.elapsed() > Duration::from_secs(5) {
                last_housekeeping = Instant::now();
                // Broker round trips and RocksDB property reads: off the async workers.
                tokio::task::block_in_place(|| self.housekeeping(&consumer));
            }
            let batch = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                b = consumer.next_batch(cfg.processing.batch_max_records, cfg.processing.batch_max_wait) => b,
            };
            let mut partition_events = Vec::new();
            while let Ok(ev) = events.try_recv() {
                partition_events.push(ev);
            }
            if !partition_events.is_empty() {
                // Released partitions leave with their last batch committed;
                // assigned ones load committed state.
                self.finish(&mut in_flight, &consumer).await?;
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
            let live = cfg.processing.live_clock;
            if records.is_empty() && !live {
                continue;
            }
            let started = Instant::now();
            let mut processed = {
                let _span = info_span!("batch", records = records.len()).entered();
                tokio::task::block_in_place(|| self.process(&records, live))?
            };
            if processed.commits.is_empty() && processed.outputs.is_empty() {
                continue;
            }
            // One batch in flight: this one is produced after the last is committed.
            self.finish(&mut in_flight, &consumer).await?;
            self.in_flight.set(&processed.commits);
            let commits = std::mem::take(&mut processed.commits);
            let outputs = std::mem::take(&mut processed.outputs);
            let (producer, store, metrics, clock) =
                (producer.clone(), self.store.clone(), self.metrics.clone(), self.clock.clone());
            let task = tokio::spawn(async move {
                deliver(&producer, &metrics, &outputs).await?;
                drop(outputs);
                tokio::task::spawn_blocking(move || -> Result<(), cohort_store::StoreError> {
                    for b in &commits {
                        store.commit(b)?;
                    }
                    Ok(())
                })
                .await??;
                Ok(Committed { at: clock.now(), batch_duration: started.elapsed() })
            });
            in_flight = Some(InFlight { task, processed });
        }
        self.finish(&mut in_flight, &consumer).await?;
        info!("shutting down: leaving the group");
        producer.flush(cfg.processing.shutdown_timeout).ok();
        consumer.close();
        self.readiness.consuming.store(false, Ordering::Relaxed);
        Ok(())
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
                        timers: BTreeSet::new(),
                        timer_of: HashMap::new(),
                        hot: HotStates::default(),
                    };
                    for t in timers {
                        let id: Arc<str> = Arc::from(t.customer);
                        rt.timer_of.insert(id.clone(), t.due);
                        rt.timers.insert((t.due, id));
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
                    let label = p.to_string();
                    let _ = self.metrics.partition_watermark.remove_label_values(&[&label]);
                    for t in self.config.topics.inputs() {
                        let _ = self.metrics.consumer_lag_records.remove_label_values(&[t, &label]);
                    }
                }
            }
        }
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
        for (partition, recs) in by_partition {
            let Some(mut rt) = self.partitions.remove(&partition) else { continue };
            let result = self.process_partition(partition, &mut rt, &recs, now, skew, live, &mut out);
            self.partitions.insert(partition, rt);
            if result.is_err() {
                self.forget_hot_states();
            }
            result?;
        }
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
        out: &mut Processed,
    ) -> anyhow::Result<()> {
        let topics = &self.config.topics;
        // Decode and validate; bad records become dead letters.
        let mut events: Vec<(Event, &InputRecord)> = Vec::with_capacity(recs.len());
        let mut next_offsets: BTreeMap<&str, i64> = BTreeMap::new();
        for r in recs {
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
            events.push((event, r));
        }

        // Load the states the events touch: from the hot states, the rest
        // in one multi-get.
        let mut states: States = HashMap::new();
        {
            let (hits, misses) = (rt.hot.hits, rt.hot.misses);
            let mut wanted: Vec<&str> = events.iter().map(|(e, _)| e.customer.as_str()).collect();
            // And the customers whose timers this batch can fire: at most
            // those due by the watermark its events (and the wall clock)
            // would reach, so timers need no store read of their own.
            let mut horizon = rt.watermark;
            for (e, _) in &events {
                horizon.observe(e.time);
            }
            if live {
                horizon.observe_wall_clock(now);
            }
            let horizon = horizon.current();
            let due: Vec<Arc<str>> =
                rt.timers.iter().take_while(|(due, _)| *due <= horizon).map(|(_, c)| c.clone()).collect();
            wanted.extend(due.iter().map(|c| &**c));
            wanted.sort_unstable();
            wanted.dedup();
            wanted.retain(|c| match rt.hot.take(c) {
                Some((customer, state, charge)) => {
                    states.insert(customer, (state, false, charge));
                    false
                }
                None => true,
            });
            let loaded = self.read_states(partition, &wanted);
            for (c, res) in wanted.iter().zip(loaded) {
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
        for (event, rec) in &events {
            self.fire_due_timers(partition, rt, &mut states, &mut delta, out)?;
            let entry = states
                .entry(event.customer.clone())
                .or_insert_with(|| (CustomerState::default(), false, hot::charge(0)));
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
                entry.0 = CustomerState::default();
                rt.set_timer(&event.customer, None, &mut delta);
            } else {
                rt.set_timer(&event.customer, decision.next_timer, &mut delta);
            }
            for o in &decision.outputs {
                out.output_event_times.push(event.time);
                self.output(o, out)?;
            }
            rt.watermark.observe(event.time);
        }
        if live {
            rt.watermark.observe_wall_clock(now);
        }
        self.fire_due_timers(partition, rt, &mut states, &mut delta, out)?;
        self.metrics
            .partition_watermark
            .with_label_values(&[&partition.to_string()])
            .set(rt.watermark.current().as_millis().max(0) / 1000);

        // Changelog and the store batch.
        let mut batch = Batch { partition: partition as u32, ..Default::default() };
        for (customer, (state, dirty, charge)) in states {
            if !dirty {
                rt.hot.put(customer, state, charge);
                continue;
            }
            let gone = forgotten.contains(&customer) && state == CustomerState::default();
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
        batch.states.sort_by(|a, b| a.0.cmp(&b.0));
        let (set, clear) = delta.finish(&rt.timer_of);
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
            for o in &decision.outputs {
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
    ) -> anyhow::Result<(CustomerState, usize)> {
        match res {
            Ok(None) => Ok((CustomerState::default(), hot::charge(0))),
            Ok(Some(bytes)) => match cohort_core::encode::decode(&bytes) {
                Ok(s) => Ok((s, hot::charge(bytes.len()))),
                Err(e) => {
                    // A corrupt record must not stop its partition: the
                    // customer restarts from an empty state, loudly.
                    warn!(partition, error = %e, "undecodable customer state; starting it afresh");
                    self.metrics.decode_errors.with_label_values(&["corrupt_state"]).inc();
                    Ok((CustomerState::default(), hot::charge(0)))
                }
            },
            Err(e) if e.class() == cohort_store::ErrorClass::BadData => {
                warn!(partition, error = %e, "corrupt customer record; starting it afresh");
                self.metrics.decode_errors.with_label_values(&["corrupt_state"]).inc();
                Ok((CustomerState::default(), hot::charge(0)))
            }
            Err(e) => Err(anyhow!("reading customer state: {e}")),
        }
    }

    fn dead_letter(&self, rec: &InputRecord, reason: &'static str, detail: &str, out: &mut Processed) {
        warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, reason, "record sent to dlq");
        out.stats.dlq.push(reason);
        out.outputs.push(dlq::dead_letter(&self.config.topics.dlq, rec, reason, detail));
    }

    fn output(&self, o: &Output, out: &mut Processed) -> anyhow::Result<()> {
        let topics = &self.config.topics;
        let rec = match o {
            Output::SegmentChanged(s) => {
                for e in &s.entered {
                    *out.stats.entries.entry(e.clone()).or_default() += 1;
                }
                for e in &s.exited {
                    *out.stats.exits.entry(e.clone()).or_default() += 1;
                }
                OutputRecord {
                    topic: topics.segment_changes.clone(),
                    key: Some(s.customer.clone().into_bytes()),
                    value: Some(self.encoder.encode_segment_changed(s)?),
                    headers: vec![
                        (HEADER_TYPE.into(), b"segment_changed".to_vec()),
                        (HEADER_ID.into(), s.id.clone().into_bytes()),
                    ],
                    timestamp: Some(s.time.as_millis()),
                }
            }
            Output::NextBestOffer(n) => {
                let label = n.offer.clone().or_else(|| n.holdout_offer.clone()).unwrap_or_default();
                out.stats.offers.push((label, n.holdout));
                OutputRecord {
                    topic: topics.next_best_offers.clone(),
                    key: Some(n.customer.clone().into_bytes()),
                    value: Some(self.encoder.encode_next_best_offer(n)?),
                    headers: vec![
                        (HEADER_TYPE.into(), b"next_best_offer".to_vec()),
                        (HEADER_ID.into(), n.id.clone().into_bytes()),
                    ],
                    timestamp: Some(n.time.as_millis()),
                }
            }
            Output::Forgotten(f) => OutputRecord {
                topic: topics.segment_changes.clone(),
                key: Some(f.customer.clone().into_bytes()),
                value: None,
                headers: vec![
                    (HEADER_TYPE.into(), b"forgotten".to_vec()),
                    (HEADER_FORGOTTEN.into(), b"true".to_vec()),
                    (HEADER_ID.into(), f.id.clone().into_bytes()),
                ],
                timestamp: Some(f.time.as_millis()),
            },
        };
        out.outputs.push(rec);
        Ok(())
    }

    /// Waits for the batch in flight, if any, to be acknowledged and
    /// committed, then makes the advisory Kafka commit and records its metrics.
    async fn finish(&mut self, in_flight: &mut Option<InFlight>, consumer: &InputConsumer) -> anyhow::Result<()> {
        let Some(f) = in_flight.take() else { return Ok(()) };
        let committed = f.task.await.context("the batch's produce-and-commit task")??;
        self.in_flight.clear();
        if let Err(e) = consumer.commit_advisory(&f.processed.kafka_offsets) {
            debug!(error = %e, "advisory offset commit failed");
        }
        self.record_metrics(&f.processed, &committed);
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

    fn housekeeping(&self, consumer: &InputConsumer) {
        let m = &self.metrics;
        if let Ok(stats) = self.store.stats() {
            m.store_size_bytes.set(stats.live_sst_bytes as i64);
            m.store_memtable_bytes.set(stats.memtable_bytes as i64);
            m.store_pending_compaction_bytes.set(stats.pending_compaction_bytes as i64);
            m.store_write_stalled.set(i64::from(stats.write_stopped || stats.delayed_write_rate > 0));
        }
        let mut stored = Vec::new();
        for p in self.partitions.keys() {
            for topic in self.config.topics.inputs() {
                let tp = TopicPartition { topic: topic.to_string(), partition: *p };
                let next = self.store.input_offset(topic, *p as u32).ok().flatten();
                if let Ok(high) = consumer.high_watermark(&tp, Duration::from_millis(500)) {
                    let lag = (high - next.unwrap_or(0)).max(0);
                    m.consumer_lag_records.with_label_values(&[topic, &p.to_string()]).set(lag);
                }
                if let Some(next) = next {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::event::Event;

    struct Fixed(Timestamp);
    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            self.0
        }
    }

    fn open(dir: &std::path::Path) -> Worker {
        let mut config = Config::default();
        config.rules.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
        config.store.path = dir.join("store");
        config.processing.live_clock = false;
        config.processing.max_future_skew = std::time::Duration::from_secs(3650 * 86_400);
        let clock = Arc::new(Fixed(Timestamp(i64::MAX / 4)));
        let mut worker = Worker::open(config, Metrics::new().expect("metrics"), Arc::new(Readiness::default()), clock)
            .expect("open");
        worker.assign("clickstream", &[0]).expect("assign");
        worker
    }

    /// cohort-loadgen traffic over few customers, so consecutive batches
    /// share most of them: `batches` batches of `size` records.
    fn traffic(batches: usize, size: usize) -> Vec<Vec<InputRecord>> {
        let load = cohort_loadgen::Config { customers: 50, seed: 7, ..Default::default() };
        let mut gen = cohort_loadgen::Generator::new(load).expect("loadgen");
        let encoder = Encoder::new(Format::Json, Arc::new(Registry::builtin()));
        let mut offset = 0;
        (0..batches)
            .map(|_| {
                let events: Vec<Event> = gen.by_ref().take(size).collect();
                events
                    .iter()
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
                            partition: 0,
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

    /// Every key of partition 0 and its bytes, as the store has them.
    fn stored(worker: &Worker, customers: &[String]) -> Vec<(String, Option<Bytes>)> {
        let keys: Vec<&str> = customers.iter().map(String::as_str).collect();
        let values = worker.store.get_many(0, &keys);
        customers.iter().cloned().zip(values.into_iter().map(|v| v.expect("read"))).collect()
    }

    /// What the run loop does: batch N+1 is processed while N is produced
    /// and not yet committed. With the hot states dropped in between (as if
    /// evicted), N+1 can only find N's states in the in-flight overlay; it
    /// must decide exactly what the serial loop decides.
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

        let serial_dir = tempfile::tempdir().expect("tempdir");
        let mut serial = open(serial_dir.path());
        let serial_outputs: Vec<Vec<OutputRecord>> =
            batches.iter().map(|b| sorted(serial.process_offline(b).expect("batch"))).collect();

        let dir = tempfile::tempdir().expect("tempdir");
        let mut pipelined = open(dir.path());
        let mut previous: Option<Processed> = None;
        let mut outputs = Vec::new();
        for b in &batches {
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
            let offsets =
                StoreOffsets { store: pipelined.store.clone(), in_flight: pipelined.in_flight.offsets.clone() };
            let last_click = b.iter().rev().find(|r| &*r.topic == "clickstream").map(|r| r.offset + 1);
            assert_eq!(offsets.next_offset("clickstream", 0), last_click);
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
        assert_eq!(stored(&pipelined, &customers), stored(&serial, &customers));
        let offsets = StoreOffsets { store: pipelined.store.clone(), in_flight: pipelined.in_flight.offsets.clone() };
        let last_click = batches.iter().flatten().rev().find(|r| &*r.topic == "clickstream").map(|r| r.offset + 1);
        assert_eq!(offsets.next_offset("clickstream", 0), last_click);
    }
}
