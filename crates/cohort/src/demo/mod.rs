//! `cohort demo`: everything in one process on an embedded broker.
//!
//! - librdkafka's mock cluster ([`cohort_kafka::EmbeddedBroker`]) with every
//!   topic of README's "Topics and records" table, `--partitions` partitions each;
//! - the worker ([`crate::worker::Worker`]) with the example rules, a store in
//!   a temporary directory and an accelerated [`Clock`];
//! - the load generator, producing to the input topics every
//!   [`TICK`] everything whose simulated time has passed;
//! - a watcher that reads `segment-changes` and `next-best-offers` back from
//!   the broker, to measure wall-clock latency and count timer-driven entries;
//! - `/metrics`, `/healthz`, `/readyz` and `/admin/customers/{id}` on
//!   `--listen`;
//! - a live view, redrawn every second, and a summary at the end.
//!
//! Simulated time starts a year before the real now, so every event is in
//! the past, and runs `--speed` times faster than the wall clock: with the
//! default (3 simulated days per second) an abandoned cart (one hour) shows
//! within the second and a lapsed customer (90 days without a purchase)
//! within about 40 seconds.

use crate::config::Config;
use crate::http::{self, CustomerLookup, Readiness};
use crate::metrics::Metrics;
use crate::worker::{self, Clock, Worker};
use anyhow::{anyhow, bail, Context as _};
use cohort_codec::{CauseKind, Decoder, Encoder, Format, Registry};
use cohort_core::event::{Event, EventKind};
use cohort_core::time::{Duration as SimDuration, Timestamp, MS_PER_DAY};
use cohort_kafka::{EmbeddedBroker, OutputProducer, OutputRecord};
use cohort_store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod args;
mod view;

pub use args::{DemoArgs, Speed};
use view::*;

/// How often the load generator's sender wakes up and produces everything
/// whose simulated time has passed.
pub const TICK: Duration = Duration::from_millis(50);

/// Simulated time: frozen at `sim0` until [`AccelClock::start`], then
/// `sim0 + wall elapsed × speed`.
#[derive(Debug)]
pub struct AccelClock {
    sim0: Timestamp,
    speed: f64,
    started: OnceLock<Instant>,
}

impl AccelClock {
    pub fn new(sim0: Timestamp, speed: f64) -> AccelClock {
        AccelClock { sim0, speed, started: OnceLock::new() }
    }

    /// Lets simulated time run from now on (only the first call counts).
    pub fn start(&self) -> Instant {
        *self.started.get_or_init(Instant::now)
    }

    /// The wall instant at which simulated time reaches `t` (`None` before
    /// the clock started).
    pub fn wall_at(&self, t: Timestamp) -> Option<Instant> {
        let started = *self.started.get()?;
        let secs = (t.as_millis() - self.sim0.as_millis()) as f64 / 1000.0 / self.speed;
        if secs >= 0.0 {
            started.checked_add(Duration::from_secs_f64(secs))
        } else {
            started.checked_sub(Duration::from_secs_f64(-secs))
        }
    }
}

impl Clock for AccelClock {
    fn now(&self) -> Timestamp {
        match self.started.get() {
            None => self.sim0,
            Some(t) => Timestamp(self.sim0.as_millis() + (t.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64),
        }
    }
}

/// What the sender and the output watcher share with the live view.
#[derive(Default)]
struct Shared {
    /// Events produced, by input topic.
    produced: Mutex<BTreeMap<String, u64>>,
    /// For each sender tick: the simulated bound (events before it were
    /// sent) and the wall instant the sends were handed to the producer.
    ticks: Mutex<VecDeque<(Timestamp, Instant)>>,
    /// Wall latencies (ms) observed since the last view refresh, and all of them.
    latency_window: Mutex<Vec<f64>>,
    latency_all: Mutex<Vec<f64>>,
    /// Segment entries caused by a timer (time passing, no event), by segment.
    timer_entries: Mutex<BTreeMap<String, u64>>,
    /// Output records read back from the broker.
    outputs_seen: AtomicU64,
    stop_sender: AtomicBool,
    stop_watcher: AtomicBool,
}

impl Shared {
    /// When the input for an output at simulated time `t` was handed to the
    /// producer: the first tick whose bound is past `t`.
    fn produced_at(&self, t: Timestamp) -> Option<Instant> {
        let ticks = self.ticks.lock().unwrap_or_else(|e| e.into_inner());
        let i = ticks.partition_point(|(bound, _)| *bound <= t);
        ticks.get(i).map(|(_, w)| *w)
    }
}

/// Runs the demo until its duration passes or Ctrl-C.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,librdkafka=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

fn default_rules() -> PathBuf {
    let here = PathBuf::from("deploy/rules.yaml");
    if here.is_file() {
        return here;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rules.yaml"))
}

struct DemoLookup {
    store: Arc<Store>,
    engine: crate::reload::SharedEngine,
    clock: Arc<AccelClock>,
}

impl CustomerLookup for DemoLookup {
    fn customer_json(&self, customer: &str, explain: bool) -> Result<Option<String>, String> {
        let doc = crate::inspect::lookup(&self.store, &self.engine.get(), customer, Some(self.clock.now()), explain)
            .map_err(|e| format!("{e:#}"))?;
        doc.map(|d| serde_json::to_string_pretty(&d)).transpose().map_err(|e| e.to_string())
    }
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    let rules_path = args.rules.clone().unwrap_or_else(default_rules);
    let rules = worker::load_rules(&rules_path)?;
    let segment_names: Vec<String> = rules.segments().iter().map(|s| s.name.clone()).collect();
    let offer_names: Vec<(String, f64)> = rules.offers().iter().map(|o| (o.id.clone(), o.holdout)).collect();

    // The broker and its topics.
    let broker = EmbeddedBroker::start(1).context("starting the embedded broker (librdkafka mock cluster)")?;
    let mut config = Config::default();
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.group_id = "cohort-demo".into();
    let t = config.topics.clone();
    for topic in [
        &t.clickstream,
        &t.purchases,
        &t.profiles,
        &t.offer_outcomes,
        &t.segment_changes,
        &t.next_best_offers,
        &t.dlq,
        &t.changelog,
    ] {
        broker.create_topic(topic, args.partitions).with_context(|| format!("creating topic {topic}"))?;
    }

    // The worker's configuration.
    let store_dir = tempfile::Builder::new().prefix("cohort-demo-").tempdir().context("creating a temporary store")?;
    config.rules.path = rules_path.clone();
    config.store.path = store_dir.path().join("store");
    config.processing.live_clock = true;
    // The worker validates event times against the accelerated clock, which
    // is what matters; the real clock may lag it by months.
    config.processing.max_future_skew = Duration::from_secs(3650 * 86_400);
    // Inputs reach the worker up to a few hundred wall milliseconds after
    // their simulated time (the sender's tick, the producer, the consumer's
    // batch), which at 3 days a second is hours of simulated time. A second
    // of wall time as allowed lateness keeps timers (cart abandoned, lapsed)
    // from firing before the events that would have prevented them arrive.
    config.processing.allowed_lateness = Duration::from_secs_f64(args.speed.0.max(60.0));
    config.http.listen = args.listen.to_string();
    config.validate("<demo>").map_err(|e| anyhow!("{e}"))?;

    let now_ms = crate::worker::SystemClock.now().as_millis();
    let sim0 = Timestamp((now_ms - 365 * MS_PER_DAY).div_euclid(MS_PER_DAY) * MS_PER_DAY);
    let clock = Arc::new(AccelClock::new(sim0, args.speed.0));
    let metrics = Metrics::new()?;
    metrics.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let readiness = Arc::new(Readiness::default());
    let worker = Worker::open(config.clone(), metrics.clone(), readiness.clone(), clock.clone())?;

    // HTTP.
    let lookup = Arc::new(DemoLookup { store: worker.store(), engine: worker.shared_engine(), clock: clock.clone() });
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound, http_task) = match http::serve(args.listen, metrics.clone(), readiness.clone(), Some(lookup), async {
        let _ = stop_http_rx.await;
    })
    .await
    {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot serve /metrics on {}: the address is already in use (another cohort, or a Prometheus \
             exporter?). Pass --listen with another address, e.g. `cohort demo --listen 127.0.0.1:0` for \
             any free port.",
            args.listen
        ),
        Err(e) => return Err(anyhow!(e)).with_context(|| format!("serving /metrics on {}", args.listen)),
    };

    // The load generator.
    let mut lg = cohort_loadgen::Config {
        customers: args.customers,
        seed: args.seed,
        start: sim0,
        sessions_per_customer_day: args.sessions_per_day,
        lapse_after: args.lapse_after,
        ..cohort_loadgen::Config::default()
    };
    lg.pacing = cohort_loadgen::Pacing::Accelerated { factor: args.speed.0 };
    let generator = cohort_loadgen::Generator::new(lg).map_err(|e| anyhow!("load generator: {e}"))?;
    let expected_rate =
        args.customers as f64 * args.sessions_per_day * cohort_loadgen::EVENTS_PER_SESSION / 86_400.0 * args.speed.0;

    let tty = std::io::stdout().is_terminal() && !args.plain;
    println!(
        "cohort demo: {} customers, {} segments and {} offers from {}, {} partitions per topic on an embedded broker ({})",
        group_digits(args.customers as u64),
        segment_names.len(),
        offer_names.len(),
        rules_path.display(),
        args.partitions,
        broker.bootstrap()
    );
    println!("simulated clock: starts {}, runs {}", fmt_sim(sim0), args.speed);
    println!("serving http://{bound}/metrics (also /healthz, /readyz, /admin/customers/c-000001)");
    println!("waiting for the worker to join its consumer group...");

    // The worker.
    let (stop_worker_tx, stop_worker_rx) = tokio::sync::oneshot::channel::<()>();
    let mut worker_task = tokio::spawn(worker.run(async {
        let _ = stop_worker_rx.await;
    }));

    // Ctrl-C: the first stops the demo cleanly, a second one exits at once.
    let interrupted = Arc::new(tokio::sync::Notify::new());
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.notify_one();
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\ninterrupted twice: exiting without a summary");
                    std::process::exit(130);
                }
            }
        });
    }

    let ready_by = Instant::now() + Duration::from_secs(60);
    let mut worker_result: Option<anyhow::Result<()>> = None;
    while !readiness.is_ready() {
        tokio::select! {
            r = &mut worker_task => { worker_result = Some(r.map_err(|e| anyhow!(e)).and_then(|r| r)); break; }
            _ = interrupted.notified() => {
                let _ = stop_worker_tx.send(());
                let _ = (&mut worker_task).await;
                let _ = stop_http_tx.send(());
                println!("interrupted before the worker was ready");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if Instant::now() > ready_by {
            bail!("the worker did not join its consumer group on the embedded broker within 60 s");
        }
    }
    if let Some(r) = worker_result {
        r?;
        bail!("the worker stopped before it was ready");
    }

    // Simulated time starts now; so does the traffic.
    let shared = Arc::new(Shared::default());
    let wall0 = clock.start();
    let sender = {
        let producer = OutputProducer::new(&config.kafka.bootstrap_servers, &BTreeMap::new())?;
        let encoder = Encoder::new(Format::Json, Arc::new(Registry::builtin()));
        let topics = config.topics.clone();
        let (clock, shared) = (clock.clone(), shared.clone());
        tokio::spawn(send_loop(generator, producer, encoder, topics, clock, shared))
    };
    let watcher = {
        let (bootstrap, topics, clock, shared) =
            (config.kafka.bootstrap_servers.clone(), config.topics.clone(), clock.clone(), shared.clone());
        let partitions = args.partitions;
        let lateness = config.processing.allowed_lateness;
        tokio::task::spawn_blocking(move || watch_outputs(&bootstrap, &topics, partitions, &clock, lateness, &shared))
    };

    // The live view, until --duration, Ctrl-C or a failure.
    let mut view = View::new(segment_names, offer_names, tty, args.duration, bound, expected_rate);
    let mut prev = Snapshot::take(&metrics, &shared);
    let mut prev_at = Instant::now();
    let mut refresh =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let deadline = (!args.duration.is_zero()).then(|| wall0 + args.duration);
    let mut stopped_by = "--duration";
    let mut failure: Option<anyhow::Error> = None;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = refresh.tick() => {
                let snap = Snapshot::take(&metrics, &shared);
                let secs = prev_at.elapsed().as_secs_f64();
                prev_at = Instant::now();
                let window = std::mem::take(&mut *shared.latency_window.lock().unwrap_or_else(|e| e.into_inner()));
                view.frame(&prev, &snap, secs, window, wall0.elapsed(), clock.now());
                prev = snap;
            }
            _ = until_deadline => break,
            _ = interrupted.notified() => { stopped_by = "Ctrl-C"; break; }
            r = &mut worker_task => {
                let r = r.map_err(|e| anyhow!(e)).and_then(|r| r);
                failure = Some(match r { Err(e) => e.context("the worker failed"), Ok(()) => anyhow!("the worker stopped unexpectedly") });
                break;
            }
        }
        if sender.is_finished() {
            failure = Some(anyhow!("the load generator's sender stopped"));
            break;
        }
    }
    let traffic_wall = wall0.elapsed();
    let sim_end = clock.now();

    // Stop the traffic, then the worker (it finishes its batch and commits),
    // then read the last outputs back.
    shared.stop_sender.store(true, Ordering::Relaxed);
    let sender_result = sender.await;
    if failure.is_none() {
        let _ = stop_worker_tx.send(());
        match tokio::time::timeout(config.processing.shutdown_timeout + Duration::from_secs(5), &mut worker_task).await
        {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failure = Some(e.context("the worker failed while stopping")),
            Ok(Err(e)) => failure = Some(anyhow!(e)),
            Err(_) => failure = Some(anyhow!("the worker did not stop within its shutdown timeout")),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.stop_watcher.store(true, Ordering::Relaxed);
    let watcher_result = watcher.await;
    let _ = stop_http_tx.send(());
    let _ = http_task.await;

    let end = Snapshot::take(&metrics, &shared);
    view.summary(&end, traffic_wall, sim0, sim_end, stopped_by, &shared);
    drop(broker);
    drop(store_dir);

    if let Some(e) = failure {
        return Err(e);
    }
    match sender_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context("the load generator's sender failed")),
        Err(e) => return Err(anyhow!(e)),
    }
    match watcher_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.context("reading the outputs back failed")),
        Err(e) => Err(anyhow!(e)),
    }
}

/// Every [`TICK`]: produce everything the generator has before simulated now.
async fn send_loop(
    mut generator: cohort_loadgen::Generator,
    producer: OutputProducer,
    encoder: Encoder,
    topics: crate::config::Topics,
    clock: Arc<AccelClock>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    while !shared.stop_sender.load(Ordering::Relaxed) {
        interval.tick().await;
        let bound = clock.now();
        let mut pending = Vec::new();
        while let Some(ev) = generator.next_before(bound) {
            let rec = record_of(&ev, &encoder, &topics)?;
            *counts.entry(rec.topic.to_string()).or_default() += 1;
            pending.push(producer.send(&rec).await?);
        }
        shared.ticks.lock().unwrap_or_else(|e| e.into_inner()).push_back((bound, Instant::now()));
        for p in pending {
            producer.wait(p).await?;
        }
        shared.produced.lock().unwrap_or_else(|e| e.into_inner()).clone_from(&counts);
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// The input record a producer would send for `ev`, keyed by customer.
fn record_of(ev: &Event, encoder: &Encoder, topics: &crate::config::Topics) -> anyhow::Result<OutputRecord> {
    let topic = match ev.kind {
        EventKind::Click(_) => &topics.clickstream,
        EventKind::Purchase(_) => &topics.purchases,
        EventKind::ProfileUpdate(_) | EventKind::Forget => &topics.profiles,
        EventKind::OfferOutcome(_) => &topics.offer_outcomes,
    };
    let value = encoder.encode_event(ev).map_err(|e| anyhow!("encoding event {}: {e}", ev.id))?;
    let headers = if value.is_none() { vec![("cohort.forget".into(), (&b"requested"[..]).into())] } else { Vec::new() };
    Ok(OutputRecord {
        topic: topic.as_str().into(),
        key: Some(ev.customer.clone().into_bytes()),
        value,
        headers,
        timestamp: Some(ev.time.as_millis()),
        partition: None,
    })
}

/// Reads `segment-changes` and `next-best-offers` back from the broker: the
/// wall time from an input being handed to the producer (or, for a change
/// caused by time passing, from the simulated clock passing its due time plus
/// the allowed lateness) to its output being readable by a consumer.
fn watch_outputs(
    bootstrap: &str,
    topics: &crate::config::Topics,
    partitions: i32,
    clock: &AccelClock,
    lateness: Duration,
    shared: &Shared,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = cohort_kafka::client_config(bootstrap, &BTreeMap::new())
        .set("group.id", "cohort-demo-watch")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("creating the output watcher")?;
    let mut tpl = TopicPartitionList::new();
    for topic in [&topics.segment_changes, &topics.next_best_offers] {
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let decoder = Decoder::new(Format::Json, Arc::new(Registry::builtin()));
    let lateness = SimDuration::from_millis(lateness.as_millis() as i64);
    while !shared.stop_watcher.load(Ordering::Relaxed) {
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "output watcher");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let seen = Instant::now();
        shared.outputs_seen.fetch_add(1, Ordering::Relaxed);
        let Some(value) = m.payload() else { continue };
        let is_offer = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == worker::HEADER_TYPE).and_then(|h| h.value))
            .map(|v| v == b"next_best_offer")
            .unwrap_or(m.topic() == topics.next_best_offers);
        let (time, kind) = if is_offer {
            match decoder.decode_next_best_offer(value) {
                Ok(o) => (o.time, o.cause.kind),
                Err(_) => continue,
            }
        } else {
            match decoder.decode_segment_changed(value) {
                Ok(s) => {
                    if s.cause.kind == CauseKind::Timer {
                        let mut by = shared.timer_entries.lock().unwrap_or_else(|e| e.into_inner());
                        for seg in &s.entered {
                            *by.entry(seg.clone()).or_default() += 1;
                        }
                    }
                    (s.time, s.cause.kind)
                }
                Err(_) => continue,
            }
        };
        let since = match kind {
            CauseKind::Timer => clock.wall_at(time + lateness),
            _ => shared.produced_at(time),
        };
        if let Some(since) = since {
            let ms = seen.saturating_duration_since(since).as_secs_f64() * 1000.0;
            shared.latency_window.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
            shared.latency_all.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
