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
use cohort_core::engine::Engine;
use cohort_core::event::{Event, EventKind};
use cohort_core::time::{Duration as SimDuration, Timestamp, MS_PER_DAY};
use cohort_kafka::{EmbeddedBroker, OutputProducer, OutputRecord};
use cohort_store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the load generator's sender wakes up and produces everything
/// whose simulated time has passed.
pub const TICK: Duration = Duration::from_millis(50);

/// Options of `cohort demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the traffic runs once the worker has joined its group
    /// (e.g. 60s, 5m, 1h); 0 runs until Ctrl-C.
    #[arg(long, default_value = "60s", value_parser = parse_wall_duration)]
    pub duration: Duration,
    /// Simulated time per wall-clock second: `3d` (the default) lets three
    /// days pass every second, so abandoned carts (1h) show at once and
    /// lapsed customers (90 days without a purchase) within about 40 s.
    /// A plain factor such as `3600x` works too.
    #[arg(long, default_value = "3d", value_parser = parse_speed)]
    pub speed: Speed,
    /// Customers in the generated population. Each produces about
    /// 1.6 × sessions-per-day × speed-in-days events per wall second.
    #[arg(long, default_value_t = 1_000)]
    pub customers: u32,
    /// Mean visits per customer per simulated day, before the activity skew.
    #[arg(long, default_value_t = 0.25)]
    pub sessions_per_day: f64,
    /// Mean simulated time until a lapsing customer (a fifth of them) stops
    /// buying; lapsed is 90 days after their last purchase.
    #[arg(long, default_value = "10d", value_parser = parse_sim_duration)]
    pub lapse_after: SimDuration,
    /// The generator's seed: same seed, same traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Partitions of every topic on the embedded broker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub partitions: i32,
    /// Where to serve /metrics, /healthz, /readyz and /admin/customers/{id}
    /// (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// The rules file [default: deploy/rules.yaml of this checkout].
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Print plain lines every second even when stdout is a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// How much faster than the wall clock simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed(pub f64);

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_sec_ms = self.0 * 1000.0;
        let human = if per_sec_ms >= MS_PER_DAY as f64 {
            format!("{:.3} days", per_sec_ms / MS_PER_DAY as f64)
        } else if per_sec_ms >= 3_600_000.0 {
            format!("{:.3} hours", per_sec_ms / 3_600_000.0)
        } else {
            format!("{:.3} s", per_sec_ms / 1000.0)
        };
        let human = human.replace(".000", "");
        write!(f, "{human} per second ({}x)", group_digits(self.0.round() as u64))
    }
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    let s = s.trim();
    let factor = if let Some(x) = s.strip_suffix('x') {
        x.trim()
            .parse::<f64>()
            .map_err(|_| format!("`{s}`: expected a factor such as 3600x or a duration such as 3d"))?
    } else {
        parse_ms(s)? as f64 / 1000.0
    };
    if !(factor.is_finite() && factor > 0.0) {
        return Err(format!("`{s}`: the speed must be positive"));
    }
    Ok(Speed(factor))
}

fn parse_wall_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_millis(parse_ms(s)? as u64))
}

fn parse_sim_duration(s: &str) -> Result<SimDuration, String> {
    let ms = parse_ms(s)?;
    if ms <= 0 {
        return Err(format!("`{s}`: must be longer than 0"));
    }
    Ok(SimDuration::from_millis(ms))
}

/// `500ms`, `20s`, `5m`, `2h`, `3d`, `1w`, or a decimal such as `1.5d`.
fn parse_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}`: expected a number and a unit such as 20s, 5m, 3d"))?;
    let unit_ms = match unit.trim() {
        "ms" => 1.0,
        "s" | "sec" | "secs" => 1_000.0,
        "m" | "min" | "mins" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => MS_PER_DAY as f64,
        "w" | "week" | "weeks" => 7.0 * MS_PER_DAY as f64,
        "" => return Err(format!("`{s}`: add a unit (ms, s, m, h, d, w)")),
        other => return Err(format!("`{s}`: unknown unit `{other}` (ms, s, m, h, d, w)")),
    };
    let ms = n * unit_ms;
    if !ms.is_finite() || ms < 0.0 || ms > i64::MAX as f64 / 2.0 {
        return Err(format!("`{s}`: out of range"));
    }
    Ok(ms.round() as i64)
}

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
    engine: Arc<Engine>,
    clock: Arc<AccelClock>,
}

impl CustomerLookup for DemoLookup {
    fn customer_json(&self, customer: &str) -> Result<Option<String>, String> {
        let found = self.store.inspect(customer).map_err(|e| e.to_string())?;
        let Some(first) = found.into_iter().find(|i| i.state.is_some()) else { return Ok(None) };
        let Some(bytes) = &first.state else { return Ok(None) };
        let state = cohort_core::encode::decode(bytes).map_err(|e| format!("decoding {customer}: {e}"))?;
        let doc = crate::inspect::customer_json(
            customer,
            first.partition,
            &state,
            &first.timers,
            &self.engine,
            self.clock.now(),
        );
        serde_json::to_string_pretty(&doc).map(Some).map_err(|e| e.to_string())
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
    let lookup = Arc::new(DemoLookup { store: worker.store(), engine: worker.engine(), clock: clock.clone() });
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

/// Counters and gauges read from the worker's metrics registry.
#[derive(Default, Clone)]
struct Snapshot {
    consumed: BTreeMap<String, f64>,
    produced: BTreeMap<String, u64>,
    outputs: BTreeMap<String, f64>,
    population: BTreeMap<String, f64>,
    entries: BTreeMap<String, f64>,
    exits: BTreeMap<String, f64>,
    /// (offer, holdout) → decisions.
    offers: BTreeMap<(String, bool), f64>,
    timers_fired: f64,
    batched: f64,
    dlq: f64,
    lag: f64,
}

impl Snapshot {
    fn take(metrics: &Metrics, shared: &Shared) -> Snapshot {
        let mut s = Snapshot {
            produced: shared.produced.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ..Snapshot::default()
        };
        for family in metrics.registry.gather() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_string()).unwrap_or_default()
                };
                let counter = m.get_counter().get_value();
                let gauge = m.get_gauge().get_value();
                match family.name() {
                    "cohort_input_records_total" => {
                        s.consumed.insert(label("topic"), counter);
                    }
                    "cohort_output_records_total" => {
                        s.outputs.insert(label("topic"), counter);
                    }
                    "cohort_segment_population_customers" => {
                        s.population.insert(label("segment"), gauge);
                    }
                    "cohort_segment_entries_total" => {
                        s.entries.insert(label("segment"), counter);
                    }
                    "cohort_segment_exits_total" => {
                        s.exits.insert(label("segment"), counter);
                    }
                    "cohort_offers_decided_total" => {
                        s.offers.insert((label("offer"), label("holdout") == "true"), counter);
                    }
                    // Records the worker processed, for when it does not
                    // count cohort_input_records_total per topic.
                    "cohort_batch_size_records" => s.batched += m.get_histogram().get_sample_sum(),
                    "cohort_timers_fired_total" => s.timers_fired = counter,
                    "cohort_dlq_records_total" => s.dlq += counter,
                    "cohort_consumer_lag_records" => s.lag += gauge,
                    _ => {}
                }
            }
        }
        s
    }

    fn total_consumed(&self) -> f64 {
        let by_topic: f64 = self.consumed.values().sum();
        if by_topic > 0.0 {
            by_topic
        } else {
            self.batched
        }
    }

    fn total_produced(&self) -> u64 {
        self.produced.values().sum()
    }

    fn offer(&self, id: &str) -> (f64, f64) {
        let sent = self.offers.get(&(id.to_string(), false)).copied().unwrap_or(0.0);
        let held = self.offers.get(&(id.to_string(), true)).copied().unwrap_or(0.0);
        (sent, held)
    }
}

fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

/// The live view and the summary.
struct View {
    segments: Vec<String>,
    offers: Vec<(String, f64)>,
    tty: bool,
    duration: Duration,
    http: SocketAddr,
    expected_rate: f64,
    frames: u64,
}

impl View {
    fn new(
        segments: Vec<String>,
        offers: Vec<(String, f64)>,
        tty: bool,
        duration: Duration,
        http: SocketAddr,
        expected_rate: f64,
    ) -> View {
        View { segments, offers, tty, duration, http, expected_rate, frames: 0 }
    }

    fn frame(
        &mut self,
        prev: &Snapshot,
        now: &Snapshot,
        secs: f64,
        window: Vec<f64>,
        elapsed: Duration,
        sim: Timestamp,
    ) {
        self.frames += 1;
        let secs = secs.max(1e-3);
        let rate = |a: f64, b: f64| ((b - a) / secs).max(0.0);
        let (p50, p99) = (percentile(&window, 0.50), percentile(&window, 0.99));
        let lat = match (p50, p99) {
            (Some(a), Some(b)) => format!("p50 {} p99 {}", fmt_ms(a), fmt_ms(b)),
            _ => "no outputs this second".to_string(),
        };
        let consumed_rate = rate(prev.total_consumed(), now.total_consumed());
        let produced_rate = rate(prev.total_produced() as f64, now.total_produced() as f64);
        let timers_rate = rate(prev.timers_fired, now.timers_fired);
        let elapsed_s = elapsed.as_secs();
        let of = if self.duration.is_zero() {
            "until Ctrl-C".to_string()
        } else {
            format!("of {}", fmt_clock(self.duration.as_secs()))
        };

        if !self.tty {
            // Plain lines: one block a second, greppable, for logs and tests.
            let mut out = String::new();
            let _ = writeln!(
                out,
                "[{}] sim {} | events/s in {:.0} (produced {:.0}) | timers/s {:.0} | latency {} | dlq {:.0} | lag {:.0}",
                fmt_clock(elapsed_s),
                fmt_sim(sim),
                consumed_rate,
                produced_rate,
                timers_rate,
                lat,
                now.dlq,
                now.lag
            );
            let mut pops: Vec<(&String, f64)> = self.segments.iter().map(|s| (s, get(&now.population, s))).collect();
            pops.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            let pops: Vec<String> = pops
                .iter()
                .map(|(s, n)| {
                    let e = rate(get(&prev.entries, s), get(&now.entries, s));
                    let x = rate(get(&prev.exits, s), get(&now.exits, s));
                    format!("{s}={n:.0}(+{e:.0}/-{x:.0})")
                })
                .collect();
            let _ = writeln!(out, "  segments: {}", pops.join(" "));
            let offers: Vec<String> = self
                .offers
                .iter()
                .map(|(id, _)| {
                    let (s, h) = now.offer(id);
                    let (ps, ph) = prev.offer(id);
                    format!("{id}={:.0}/s({})", rate(ps + ph, s + h), holdout_pct(s, h))
                })
                .collect();
            let _ = writeln!(out, "  offers: {}", offers.join(" "));
            print!("{out}");
            let _ = std::io::stdout().flush();
            return;
        }

        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push_str("\x1b[K\n");
        };
        line(
            &mut out,
            format!(
                "\x1b[1mcohort demo\x1b[0m  {} {}  simulated {}  /metrics on http://{}/metrics",
                fmt_clock(elapsed_s),
                of,
                fmt_sim(sim),
                self.http
            ),
        );
        line(&mut out, String::new());
        let inputs: Vec<String> = now
            .produced
            .iter()
            .map(|(t, v)| {
                let before = prev.produced.get(t).copied().unwrap_or(0) as f64;
                format!("{t} {}", group_digits(rate(before, *v as f64) as u64))
            })
            .collect();
        line(
            &mut out,
            format!(
                "events/s    {:>7}  processed; produced {} (expected ~{}): {}",
                group_digits(consumed_rate as u64),
                group_digits(produced_rate as u64),
                group_digits(self.expected_rate as u64),
                inputs.join(", ")
            ),
        );
        let outputs: Vec<String> = now
            .outputs
            .iter()
            .filter(|(t, _)| !t.contains("changelog"))
            .map(|(t, v)| format!("{t} {}", group_digits(rate(get(&prev.outputs, t), *v) as u64)))
            .collect();
        line(&mut out, format!("outputs/s   {}", outputs.join(", ")));
        line(
            &mut out,
            format!(
                "timers/s    {:>7}  (time-based re-evaluations: abandoned carts, at risk, lapsed, ...)",
                group_digits(timers_rate as u64)
            ),
        );
        line(&mut out, format!("latency     {lat}  (wall clock, input produced -> output readable on Kafka)"));
        line(
            &mut out,
            format!(
                "dlq         {:>7}    consumer lag {} records",
                group_digits(now.dlq as u64),
                group_digits(now.lag as u64)
            ),
        );
        line(&mut out, String::new());
        line(&mut out, format!("\x1b[1m{:<22}{:>10}{:>9}{:>9}\x1b[0m", "segment", "customers", "in/s", "out/s"));
        let mut pops: Vec<(&String, f64)> = self.segments.iter().map(|s| (s, get(&now.population, s))).collect();
        pops.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        for (s, n) in pops {
            line(
                &mut out,
                format!(
                    "{:<22}{:>10}{:>9}{:>9}",
                    s,
                    group_digits(n.max(0.0) as u64),
                    group_digits(rate(get(&prev.entries, s), get(&now.entries, s)) as u64),
                    group_digits(rate(get(&prev.exits, s), get(&now.exits, s)) as u64)
                ),
            );
        }
        line(&mut out, String::new());
        line(&mut out, format!("\x1b[1m{:<22}{:>10}{:>9}{:>10}\x1b[0m", "offer", "decided/s", "total", "holdout"));
        for (id, configured) in &self.offers {
            let (s, h) = now.offer(id);
            let (ps, ph) = prev.offer(id);
            line(
                &mut out,
                format!(
                    "{:<22}{:>10}{:>9}{:>10}{}",
                    id,
                    group_digits(rate(ps + ph, s + h) as u64),
                    group_digits((s + h) as u64),
                    holdout_pct(s, h),
                    if *configured > 0.0 {
                        format!("  (configured {:.0}%)", configured * 100.0)
                    } else {
                        String::new()
                    }
                ),
            );
        }
        line(&mut out, String::new());
        line(&mut out, "Ctrl-C stops and prints a summary.".to_string());
        out.push_str("\x1b[J");
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(b"\x1b[H");
        if self.frames == 1 {
            let _ = stdout.write_all(b"\x1b[2J\x1b[H");
        }
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    fn summary(
        &self,
        end: &Snapshot,
        wall: Duration,
        sim0: Timestamp,
        sim_end: Timestamp,
        stopped_by: &str,
        shared: &Shared,
    ) {
        let secs = wall.as_secs_f64().max(1e-3);
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(out, "=== cohort demo summary ===");
        let _ = writeln!(
            out,
            "stopped by {stopped_by} after {:.1} s of traffic; simulated {} to {} ({:.1} days)",
            wall.as_secs_f64(),
            fmt_sim(sim0),
            fmt_sim(sim_end),
            sim_end.since(sim0).as_millis() as f64 / MS_PER_DAY as f64
        );
        let produced: Vec<String> = end.produced.iter().map(|(t, n)| format!("{t} {}", group_digits(*n))).collect();
        let _ = writeln!(
            out,
            "events produced {} ({}); processed {} = {} events/s",
            group_digits(end.total_produced()),
            produced.join(", "),
            group_digits(end.total_consumed() as u64),
            group_digits((end.total_consumed() / secs) as u64)
        );
        let outputs: Vec<String> =
            end.outputs.iter().map(|(t, n)| format!("{t} {}", group_digits(*n as u64))).collect();
        let _ = writeln!(out, "outputs: {}", outputs.join(", "));
        let _ = writeln!(
            out,
            "timers fired {}; dead letters {}",
            group_digits(end.timers_fired as u64),
            group_digits(end.dlq as u64)
        );
        let all = shared.latency_all.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (percentile(&all, 0.5), percentile(&all, 0.99), all.iter().copied().reduce(f64::max)) {
            (Some(a), Some(b), Some(c)) => {
                let _ = writeln!(
                    out,
                    "latency (wall clock, input produced -> output readable on Kafka, {} outputs): p50 {} p99 {} max {}",
                    group_digits(all.len() as u64),
                    fmt_ms(a),
                    fmt_ms(b),
                    fmt_ms(c)
                );
            }
            _ => {
                let _ = writeln!(out, "latency: no outputs were read back");
            }
        }
        let timer_entries = shared.timer_entries.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<22}{:>10}{:>10}{:>10}{:>10}", "segment", "customers", "entries", "exits", "by timer");
        let mut pops: Vec<(&String, f64)> = self.segments.iter().map(|s| (s, get(&end.population, s))).collect();
        pops.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        for (s, n) in pops {
            let _ = writeln!(
                out,
                "{:<22}{:>10}{:>10}{:>10}{:>10}",
                s,
                group_digits(n.max(0.0) as u64),
                group_digits(get(&end.entries, s) as u64),
                group_digits(get(&end.exits, s) as u64),
                group_digits(timer_entries.get(s.as_str()).copied().unwrap_or(0))
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<22}{:>10}{:>10}{:>10}", "offer", "decided", "sent", "holdout");
        for (id, _) in &self.offers {
            let (s, h) = end.offer(id);
            let _ = writeln!(
                out,
                "{:<22}{:>10}{:>10}{:>10}",
                id,
                group_digits((s + h) as u64),
                group_digits(s as u64),
                holdout_pct(s, h)
            );
        }
        let entered: Vec<String> = timer_entries.iter().map(|(s, n)| format!("{s} {}", group_digits(*n))).collect();
        let _ = writeln!(
            out,
            "\nentered by a timer (time passing, no event): {}",
            if entered.is_empty() { "none".to_string() } else { entered.join(", ") }
        );
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

fn holdout_pct(sent: f64, held: f64) -> String {
    if sent + held <= 0.0 {
        "-".to_string()
    } else {
        format!("{:.1}%", held / (sent + held) * 100.0)
    }
}

/// The `q` quantile of `samples` (nearest rank), `None` when empty.
fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn fmt_clock(secs: u64) -> String {
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

/// `2025-03-14 06:00` (UTC).
fn fmt_sim(t: Timestamp) -> String {
    let (y, m, d) = t.civil();
    let in_day = t.as_millis().rem_euclid(MS_PER_DAY) / 60_000;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", in_day / 60, in_day % 60)
}

/// `12,345`.
fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_and_durations_parse() {
        assert_eq!(parse_speed("3d").unwrap(), Speed(259_200.0));
        assert_eq!(parse_speed("3600x").unwrap(), Speed(3_600.0));
        assert_eq!(parse_speed("1h").unwrap(), Speed(3_600.0));
        assert!(parse_speed("0x").is_err());
        assert!(parse_speed("fast").is_err());
        assert_eq!(parse_wall_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_wall_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_wall_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_wall_duration("20").unwrap_err().contains("unit"));
        assert_eq!(parse_sim_duration("10d").unwrap(), SimDuration::from_days(10));
        assert_eq!(Speed(259_200.0).to_string(), "3 days per second (259,200x)");
    }

    #[test]
    fn the_accelerated_clock_is_frozen_until_started_then_runs_fast() {
        let c = AccelClock::new(Timestamp(1_000_000), 1_000.0);
        assert_eq!(c.now(), Timestamp(1_000_000));
        assert!(c.wall_at(Timestamp(2_000_000)).is_none());
        let w0 = c.start();
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.now().as_millis() >= 1_000_000 + 20_000);
        assert_eq!(c.wall_at(Timestamp(1_000_000)), Some(w0));
        assert_eq!(c.wall_at(Timestamp(2_000_000)), Some(w0 + Duration::from_secs(1)));
    }

    #[test]
    fn formatting() {
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(group_digits(12), "12");
        assert_eq!(percentile(&[5.0, 1.0, 3.0, 2.0, 4.0], 0.5), Some(3.0));
        assert_eq!(percentile(&[5.0, 1.0, 3.0, 2.0, 4.0], 0.99), Some(5.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(
            fmt_sim(cohort_core::time::timestamp_of_date(2025, 3, 14) + SimDuration::from_hours(6)),
            "2025-03-14 06:00"
        );
        assert_eq!(holdout_pct(95.0, 5.0), "5.0%");
    }
}
