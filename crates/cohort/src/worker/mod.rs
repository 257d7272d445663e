//! The worker: Kafka in, decisions out.
//!
//! One loop per process, for every batch (docs/architecture.md, "Data flow
//! of one batch"):
//!
//! ```text
//! poll batch ─> decode (codec) ─> load states (store) ─> partition step:
//! events and due timers (core) ─> produce outputs, dead letters and changelog ─>
//! await acks ─> commit {states, timers, partition metadata} (store) ─> advisory
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
//! exactly where its outputs do (a partition that comes back resumes there,
//! after restoring from the changelog whatever other members wrote
//! meanwhile: `restore`, README "Scaling"). The
//! advisory Kafka commit that follows covers only partitions still
//! assigned. Records fetched again after an eager revoke and re-assign are
//! not processed twice ([`Handed`]).
//!
//! Backpressure is structural: at most one batch is unacknowledged while
//! one more is processed, so input is never consumed faster than outputs are
//! accepted, and librdkafka's prefetch is bounded by its own queue settings.
//!
//! What a batch decides, partition by partition, is cohort-core's
//! [`PartitionTask::step`](cohort_core::partition::PartitionTask::step):
//! the interleaving of events and timers, the watermark, the learned tables
//! and the segment populations live there, and where batch boundaries fall
//! never changes what is decided. In live mode an idle partition's watermark
//! also follows the injected [`Clock`].
//!
//! The worker's roles, one module each: this one (the run loop), `batch`
//! (decode, load, step, records), `inflight` (the one-batch-in-flight
//! protocol), `positions`, `partitions` (ownership, populations), `rules`
//! (switching rules, re-evaluation), `records` and `telemetry`. See docs/architecture.md.

mod batch;
mod inflight;
mod partitions;
mod positions;
mod records;
mod restore;
mod rules;
mod telemetry;

pub use records::{HEADER_FORGOTTEN, HEADER_ID, HEADER_TYPE};

use crate::config::{Config, StartFrom, WireFormat};
use crate::http::Readiness;
use crate::liveness::{Progress, Watchdog, WatchdogParts};
use crate::metrics::Metrics;
use crate::reload::{RulesFollower, RulesWatcher, SharedEngine};
use anyhow::{anyhow, Context as _};
use batch::Scratch;
use cohort_codec::{Decoder, Encoder, Format, InputKind, Registry};
use cohort_core::engine::Engine;
use cohort_core::partition::TaskSettings;
use cohort_core::time::{Duration as CoreDuration, Timestamp};
use cohort_kafka::consumer::ConsumerSettings;
use cohort_kafka::{
    ChangelogReader, InputConsumer, InputRecord, OutputProducer, OutputRecord, PartitionEvent, StartPosition,
    TopicPartition,
};
use cohort_store::Store;
use foldhash::HashMap;
use inflight::{
    close_within, deliver, set_changelog_positions, split_markers, Committed, InFlight, InFlightWrites, SettleOnDrop,
    StoreOffsets,
};
use partitions::PartitionRuntime;
use positions::Handed;
use records::{OutTopics, Processed};
use restore::{RestoreSettings, Restorer};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use telemetry::{BatchCommitted, Telemetry, OUTPUT_ERRORS_LABEL};
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
/// Everything the worker needs, built by [`Worker::open`].
pub struct Worker {
    config: Config,
    engine: Arc<Engine>,
    store: Arc<Store>,
    decoder: Decoder,
    encoder: Encoder,
    telemetry: Telemetry,
    readiness: Arc<Readiness>,
    /// What the loop waits for, read by the watchdog (`crate::liveness`).
    progress: Arc<Progress>,
    clock: Arc<dyn Clock>,
    /// How partitions' time behaves (lateness, future skew).
    task_settings: TaskSettings,
    partitions: BTreeMap<i32, PartitionRuntime>,
    /// Input topic name → what it carries.
    kinds: HashMap<String, InputKind>,
    /// What the batch in flight (produced, not yet committed) writes.
    in_flight: InFlightWrites,
    /// How far each input partition has been handed to processing.
    handed: Handed,
    out_topics: OutTopics,
    /// Per-batch buffers kept between batches.
    scratch: Scratch,
    /// The restore thread; `None` offline (no broker).
    restorer: Option<Restorer>,
    /// Assigned partitions being restored, with their input topic-partitions
    /// (paused until then).
    restoring: BTreeMap<i32, Vec<TopicPartition>>,
    /// The engine in force as the admin API sees it (`rules`).
    shared_engine: SharedEngine,
    /// New rules read from the rules file (`rules`).
    rules_watcher: RulesWatcher,
    /// The text of the rules in force.
    rules_text: String,
    /// The version of the rules file as last read and compiled
    /// (`cohort_rules_file_in_force`).
    file_version: String,
    /// With `rules.topic`: the group's rules as published there.
    rules_follower: Option<RulesFollower>,
    /// With `rules.topic`: a reader of it for an assignment that cannot
    /// wait for the follower (`rules::group_rules_for`).
    rules_reader: Option<ChangelogReader>,
    /// With `rules.topic`: the offset after the last record decided on
    /// (`rules::newer_topic_rules`).
    rules_offset: i64,
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
    read_rules(path).map(|(rules, _)| rules)
}

/// [`load_rules`], and the bytes it compiled.
fn read_rules(path: &std::path::Path) -> anyhow::Result<(cohort_core::rules::RuleSet, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read rules", path.display()))?;
    let rules =
        cohort_core::rules::RuleSet::from_yaml(&path.display().to_string(), &text).map_err(|e| anyhow!("{e}"))?;
    Ok((rules, text))
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
        let (rules, text) = read_rules(&config.rules.path)?;
        metrics.rules_info.with_label_values(&[rules.version()]).set(1);
        metrics.rules_file_in_force.set(1);
        let file_version = rules.version().to_owned();
        let rules_watcher = RulesWatcher::spawn(
            config.rules.path.clone(),
            text.as_bytes(),
            config.rules.watch_interval,
            metrics.clone(),
        );
        // Series that exist before the first output or failure, so rates
        // over them are defined from the start (0, not "No data").
        metrics.output_errors.with_label_values(&[OUTPUT_ERRORS_LABEL]).inc_by(0);
        for kind in ["active", "standby"] {
            metrics.restore_records.with_label_values(&[kind]).inc_by(0);
        }
        for result in ["applied", "refused"] {
            metrics.rules_reloads.with_label_values(&[result]).inc_by(0);
        }
        let engine = Arc::new(Engine::new(rules, Default::default()));
        let shared = engine.clone();
        let store = Arc::new(
            Store::open(&config.store.path, &config.store.rocksdb)
                .with_context(|| format!("opening the store at {}", config.store.path.display()))?,
        );
        let registry = Arc::new(load_registry(&config)?);
        let decoder = Decoder::new(format_of(config.format.input), registry.clone())
            .with_max_value_bytes(config.processing.max_record_bytes)
            .engine_fields_only();
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
            dlq: t.dlq.clone(),
        };
        let millis = |d: Duration| CoreDuration::from_millis(d.as_millis() as i64);
        let task_settings = TaskSettings {
            allowed_lateness: millis(config.processing.allowed_lateness),
            max_future_skew: millis(config.processing.max_future_skew),
        };
        Ok(Worker {
            config,
            engine,
            store,
            decoder,
            encoder,
            telemetry: Telemetry::new(metrics),
            readiness,
            progress: Arc::new(Progress::new(Instant::now())),
            clock,
            task_settings,
            partitions: BTreeMap::new(),
            kinds,
            in_flight: InFlightWrites::default(),
            handed: Handed::default(),
            out_topics,
            scratch: Scratch::default(),
            restorer: None,
            restoring: BTreeMap::new(),
            shared_engine: SharedEngine::new(shared),
            rules_watcher,
            rules_text: text,
            file_version,
            rules_follower: None,
            rules_reader: None,
            rules_offset: 0,
        })
    }

    /// The store, shared with the admin API.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The compiled rules and settings in force.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// The rules in force, as they change (for the admin API).
    pub fn shared_engine(&self) -> SharedEngine {
        self.shared_engine.clone()
    }

    /// What the loop is doing and which partitions it owns (for the admin API).
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Makes the watcher read the rules file now (SIGHUP).
    pub fn rules_waker(&self) -> std::sync::mpsc::Sender<()> {
        self.rules_watcher.waker()
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
            hold_assigned: true,
        };
        let reader = ChangelogReader::new(
            &cfg.kafka.bootstrap_servers,
            &cfg.kafka.properties,
            &cfg.topics.changelog,
            cfg.restore.max_memory_bytes / 2,
        )?;
        check_changelog(&cfg, &reader).await?;
        self.restorer = Some(Restorer::spawn(
            self.store.clone(),
            reader,
            self.telemetry.metrics.clone(),
            RestoreSettings {
                chunk_bytes: cfg.restore.max_memory_bytes / 2,
                standbys: cfg.restore.standby_replicas > 0,
                standby_interval: cfg.restore.standby_interval,
            },
        )?);
        let offsets = StoreOffsets {
            store: self.store.clone(),
            in_flight: self.in_flight.offsets.clone(),
            revoke_timeout: cfg.processing.shutdown_timeout,
        };
        let (consumer, events) = InputConsumer::new(&settings, Arc::new(offsets))?;
        let mut producer_props = cfg.kafka.properties.clone();
        producer_props.extend(cfg.kafka.producer_properties.clone());
        let producer = Arc::new(OutputProducer::new(&cfg.kafka.bootstrap_servers, &producer_props)?);
        if !cfg.rules.topic.is_empty() {
            self.follow_rules_topic(&producer).await?;
        }
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
            metrics: self.telemetry.metrics.clone(),
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
        self.telemetry.metrics.ready.set(0);
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
            while let Some((p, report)) = self.restorer.as_mut().and_then(|r| r.done.try_recv().ok()) {
                // A partition its last owner switched to rules this worker
                // has not read yet: the switch comes first, between two
                // batches like any other.
                let restored = self.restoring.contains_key(&p) && report.is_ok();
                let read = if restored { tokio::task::block_in_place(|| self.group_rules_for(p)) } else { Ok(None) };
                let read = read.unwrap_or_else(|e| {
                    warn!(partition = p, error = %format!("{e:#}"), "cannot read the rules topic; the partition re-evaluates under the rules in force");
                    None
                });
                if let Some(new) = self.newer_topic_rules(read) {
                    if !self.switch_between_batches(new, in_flight, consumer, &mut shutdown).await? {
                        return Ok(());
                    }
                }
                tokio::task::block_in_place(|| self.on_restored(consumer, p, report))?;
            }
            // With a rules topic a changed file is published there, and the
            // group switches to what the topic says.
            let read = self.rules_follower.as_ref().and_then(RulesFollower::take);
            let mut new_rules = self.newer_topic_rules(read);
            if let Some((rules, text)) = self.rules_watcher.take() {
                self.file_version = rules.version().to_owned();
                self.publish_file_in_force();
                match self.rules_follower {
                    Some(_) => {
                        // Not fatal: the rules in force keep running, and
                        // the next change or SIGHUP publishes again.
                        if let Err(e) = rules::publish_rules(producer, &cfg.rules.topic, rules.version(), text).await {
                            warn!(error = %format!("{e:#}"), "the changed rules file could not be published; the rules in force keep running");
                        }
                    }
                    None => new_rules = Some((rules, text)),
                }
            }
            if let Some(new) = new_rules.filter(|(r, _)| r.version() != self.engine.rules().version()) {
                if !self.switch_between_batches(new, in_flight, consumer, &mut shutdown).await? {
                    return Ok(());
                }
            }
            // A re-evaluation under way does not wait for records.
            let wait = if self.reevaluating() { Duration::from_millis(1) } else { cfg.processing.batch_max_wait };
            if last_housekeeping.elapsed() > Duration::from_secs(5) {
                last_housekeeping = Instant::now();
                // RocksDB point reads: off the async workers.
                tokio::task::block_in_place(|| self.housekeeping(consumer));
            }
            let batch = tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                b = consumer.next_batch(cfg.processing.batch_max_records, wait) => b,
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
            let fetched = match batch {
                Ok(f) => f,
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, "consumer error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Records of partitions revoked since they were fetched belong to
            // their next owner, which starts from the store's offsets.
            // Sized up front: grown from empty, a batch of thousands of
            // records is reallocated and copied a dozen times as it grows.
            let mut records: Vec<InputRecord<'_>> = Vec::with_capacity(fetched.len());
            records.extend(fetched.records().filter(|r| self.partitions.contains_key(&r.partition)));
            let records = self.handed.keep_new(records);
            let live = cfg.processing.live_clock;
            if records.is_empty()
                && !live
                && self.partitions.values().all(|rt| rt.fence.is_empty())
                && !self.reevaluating()
            {
                continue;
            }
            let started = Instant::now();
            let mut processed = {
                let _span = info_span!("batch", records = records.len()).entered();
                tokio::task::block_in_place(|| self.process(&records, live))?
            };
            let processing = started.elapsed();
            // The records borrow librdkafka's fetched messages: released
            // before waiting for the batch in flight (a rebalance above
            // waited with them held).
            drop(records);
            drop(fetched);
            if processed.commits.is_empty() && processed.outputs.is_empty() {
                continue;
            }
            // One batch in flight: this one is produced after the last is committed.
            if !self.finish_unless(in_flight, consumer, &mut shutdown).await? {
                return Ok(());
            }
            self.in_flight.set(&processed.commits, &processed.kafka_offsets);
            let mut commits = std::mem::take(&mut processed.commits);
            let meta_records = std::mem::take(&mut processed.meta_records);
            let outputs = std::mem::take(&mut processed.outputs);
            let settle = SettleOnDrop(self.in_flight.offsets.clone());
            let (producer, store, metrics, clock, progress) = (
                producer.clone(),
                self.store.clone(),
                self.telemetry.metrics.clone(),
                self.clock.clone(),
                self.progress.clone(),
            );
            let task = tokio::spawn(async move {
                let _settle = settle;
                let handed_over = Instant::now();
                // Each partition's metadata record says "everything before me
                // is written": it goes out only once every other record of
                // the batch is acknowledged. Sent together, a worker killed
                // between the acknowledgements could leave a metadata record
                // in the changelog whose batch's outputs never arrived, and a
                // restore from it would skip them.
                let (body, markers) = split_markers(outputs, &meta_records);
                deliver(&producer, &metrics, &progress, &body).await?;
                drop(body);
                let delivered = deliver(&producer, &metrics, &progress, &markers).await?;
                set_changelog_positions(&mut commits, &meta_records, &delivered)?;
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
    pub fn process_offline(&mut self, records: &[InputRecord<'_>]) -> anyhow::Result<Vec<OutputRecord>> {
        let processed = self.process(records, false)?;
        for b in &processed.commits {
            if let Err(e) = self.store.commit(b) {
                self.forget_uncommitted();
                return Err(e.into());
            }
        }
        self.publish_populations();
        Ok(processed.outputs)
    }

    /// After a batch that will not be committed: every partition processed
    /// before the failure moved its task (watermark, timers, tables,
    /// populations, positions) and put states the store never got into its
    /// hot states, so a caller that goes on must start again from the store.
    fn forget_uncommitted(&mut self) {
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        for p in owned {
            match self.load_partition(p) {
                Ok(rt) => {
                    self.partitions.insert(p, rt);
                }
                Err(e) => {
                    warn!(partition = p, error = %e, "cannot reload the partition after a failed batch; dropping it");
                    self.partitions.remove(&p);
                }
            }
        }
        self.set_hot_budgets();
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
    /// Switches to `rules` (compiled from `text`) between two batches,
    /// with nothing in flight: every state the switch may re-evaluate is
    /// committed. False if `shutdown` completed first (nothing switched).
    async fn switch_between_batches<S: Future<Output = ()>>(
        &mut self,
        (rules, text): (cohort_core::rules::RuleSet, String),
        in_flight: &mut Option<InFlight>,
        consumer: &InputConsumer,
        shutdown: &mut std::pin::Pin<&mut S>,
    ) -> anyhow::Result<bool> {
        if !self.finish_unless(in_flight, consumer, shutdown).await? {
            return Ok(false);
        }
        self.rules_text = text;
        tokio::task::block_in_place(|| self.switch_rules(rules));
        Ok(true)
    }

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
        self.telemetry.emit(BatchCommitted { processed: &processed, committed: &committed });
        self.publish_populations();
        Ok(())
    }
    /// Re-commits the store's offsets to Kafka. Asks the broker nothing and
    /// waits for nothing (the commit is asynchronous): lag, watermarks and
    /// the store's gauges are the watchdog's (`crate::liveness`).
    fn housekeeping(&self, consumer: &InputConsumer) {
        let mut stored = Vec::new();
        for p in self.partitions.keys() {
            let Some(meta) = self.store.partition_meta(*p as u32).ok().flatten() else { continue };
            for topic in self.config.topics.inputs() {
                if let Some(next) = meta.next_offsets.get(topic) {
                    stored.push((TopicPartition { topic: topic.to_string(), partition: *p }, *next));
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

/// The changelog must be co-partitioned with the inputs (partition P of
/// every input and of the changelog belong to one worker) and compacted:
/// checked before the worker joins its group, refused with what to do. A
/// broker that does not answer yet is not a reason to stop (the worker
/// waits for it like for any outage): the check is then skipped, with a
/// warning.
async fn check_changelog(cfg: &Config, reader: &ChangelogReader) -> anyhow::Result<()> {
    let changelog = &cfg.topics.changelog;
    let counts = tokio::task::block_in_place(|| -> Result<_, cohort_kafka::KafkaAdapterError> {
        let own = reader.partition_count(changelog)?;
        let mut inputs = Vec::new();
        for t in cfg.topics.inputs() {
            inputs.push((t, reader.partition_count(t)?));
        }
        Ok((own, inputs))
    });
    let counts = match counts {
        Ok(c) => c,
        Err(e) if e.is_retryable() => {
            warn!(error = %e, "cannot check the changelog topic's partitions and cleanup.policy: the broker does not answer yet");
            return Ok(());
        }
        Err(e) => return Err(e).context("asking the broker for the changelog and input topics"),
    };
    let Some(n) = counts.0 else {
        return Err(anyhow!(
            "the changelog topic `{changelog}` (topics.changelog) does not exist: create it with as many partitions \
             as the input topics and cleanup.policy=compact (README, \"Topics and records\")"
        ));
    };
    for (topic, count) in counts.1 {
        match count {
            Some(k) if k != n => {
                return Err(anyhow!(
                    "the changelog topic `{changelog}` has {n} partitions but input topic `{topic}` has {k}: they must \
                     have the same count, so that a customer's state lives in the changelog partition of its input \
                     partition (co-partitioned)"
                ))
            }
            Some(_) => {}
            None => warn!(
                topic,
                "input topic not found yet; its partition count is checked against the changelog's when it exists"
            ),
        }
    }
    let policy = cohort_kafka::changelog::cleanup_policy(
        &cfg.kafka.bootstrap_servers,
        &cfg.kafka.properties,
        changelog,
        Duration::from_secs(5),
    )
    .await?;
    match policy {
        Some(p) if !p.split(',').any(|s| s.trim() == "compact") => Err(anyhow!(
            "the changelog topic `{changelog}` has cleanup.policy={p}: it must include `compact`, or the broker \
             deletes old states and a restore loses customers (kafka-configs --alter --add-config cleanup.policy=compact)"
        )),
        Some(_) => Ok(()),
        None => {
            warn!(topic = %changelog, "the broker does not describe the changelog's cleanup.policy; make sure it is compact");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
