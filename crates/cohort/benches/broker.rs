//! Through the broker: the real `cohort run` worker against a private tansu
//! broker on loopback (sqlite storage, as in the figures of
//! docs/benchmarks.md; `COHORT_TEST_STORAGE=postgres` for the tests'
//! postgres engine), compared with a plain rdkafka consumer reading the
//! same records in the same run.
//!
//! 1. Loads `BROKER_EVENTS` cohort-loadgen events (Avro, keyed by customer,
//!    each on its input topic; one partition per topic) before measuring.
//! 2. Throughput: a plain rdkafka `BaseConsumer` (fresh group, earliest)
//!    reads them; then the worker (fresh group and store, default processing
//!    settings) processes them from the beginning. Both are timed from their
//!    group's assignment to the last record read (plain) or committed
//!    (worker, from its /metrics). The ratio worker/plain is the figure
//!    (goal 0.5).
//! 3. Latency: fresh events stamped with the wall clock, sent at half the
//!    worker's measured rate for `BROKER_LATENCY_SECS`; a consumer on
//!    `segment-changes` and `next-best-offers` takes receive time minus the
//!    output's `time` (the cause event's time) for every output caused by
//!    one of those events. When the worker does not keep up, once more at a
//!    quarter of its rate.
//! 4. The broker alone at the same rate: the same kind of events, read back
//!    from the input topics by a plain consumer (the latency floor).
//! 5. The plain consumer reads the loaded records again after the worker has
//!    stopped, to show the run-to-run spread.
//! 6. The worker's outputs alone: records it wrote, re-produced in batches of
//!    its mean output per batch with its own producer, each batch awaited as
//!    the worker awaits its batch: the broker's share of a batch.
//!
//! Every consumer uses `fetch.wait.max.ms = BROKER_FETCH_WAIT_MS` (10): tansu
//! holds every fetch for (half) its max wait even when it has records. On
//! sqlite the bench adds an index to tansu's header table
//! (`BROKER_TANSU_HEADER_INDEX=0` leaves it out): see [`index_tansu_headers`];
//! on postgres the table's primary key serves that lookup.
//!
//! `cargo bench --workspace --bench broker` prints the figures; nothing is
//! asserted. Set `BROKER_EVENTS`, `BROKER_CUSTOMERS`, `BROKER_LATENCY_SECS`;
//! `BROKER_CONSUMER_PROPS="k=v,k=v"` adds librdkafka properties to every
//! consumer (e.g. `queued.min.messages=2000` to limit prefetching);
//! `BROKER_TRACE=1` prints the worker's metrics at every scrape to stderr.
//! Under `cargo test --benches` it does a tiny run, or skips when tansu is
//! not installed.

mod common;

use anyhow::{anyhow, bail, Context as _};
use cohort_codec::{Decoder, Encoder, Format, Registry};
use cohort_core::engine::CauseKind;
use cohort_core::event::{Event, EventKind};
use cohort_core::time::{Duration as SimDuration, Timestamp};
use cohort_e2e::{create_topic, Storage, Tansu};
use common::{cpu_secs, find_tansu_pid};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INPUTS: [&str; 4] = ["clickstream", "purchases", "customer-profiles", "offer-outcomes"];
const OUTPUTS: [&str; 4] = ["segment-changes", "next-best-offers", "cohort-dlq", "cohort-changelog"];
/// How often the worker's /metrics is read while it runs.
const POLL: Duration = Duration::from_millis(50);

/// librdkafka properties for every consumer.
type Props = Vec<(String, String)>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn topic_of(e: &Event) -> &'static str {
    match e.kind {
        EventKind::Click(_) => "clickstream",
        EventKind::Purchase(_) => "purchases",
        EventKind::ProfileUpdate(_) | EventKind::Forget => "customer-profiles",
        EventKind::OfferOutcome(_) => "offer-outcomes",
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let events = if quick { 3_000 } else { env("BROKER_EVENTS", 200_000) };
    let customers = if quick { 1_000 } else { env("BROKER_CUSTOMERS", 100_000) };
    let latency_secs = if quick { 2 } else { env("BROKER_LATENCY_SECS", 15) };
    // tansu answers a fetch only after half its max wait (the whole wait
    // below 250 ms) even when it has records, where Kafka answers at once;
    // librdkafka's default of 500 ms would time tansu's sleep, not cohort.
    let fetch_wait_ms = env("BROKER_FETCH_WAIT_MS", 10) as u64;
    // Every consumer (plain, worker, observers) gets these librdkafka
    // properties; BROKER_CONSUMER_PROPS="k=v,k=v" adds to them.
    let mut props: Props = vec![("fetch.wait.max.ms".into(), fetch_wait_ms.to_string())];
    for kv in std::env::var("BROKER_CONSUMER_PROPS").unwrap_or_default().split(',').filter(|s| !s.trim().is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("BROKER_CONSUMER_PROPS: `{kv}` is not k=v"))?;
        props.push((k.trim().to_string(), v.trim().to_string()));
    }
    let index_headers = env("BROKER_TANSU_HEADER_INDEX", 1) != 0;
    let started = Instant::now();

    let storage = Storage::from_env_or(Storage::Sqlite)?;
    let tansu = match Tansu::start_with(storage) {
        Ok(t) => t,
        Err(e) if quick => {
            println!("broker: skipped, no tansu broker ({e:#})");
            return Ok(());
        }
        Err(e) => return Err(e.context("starting tansu (run `make test` once to install it)")),
    };
    let bootstrap = tansu.bootstrap();
    let tansu_pid = find_tansu_pid(&bootstrap);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        for t in INPUTS.iter().chain(OUTPUTS.iter()) {
            create_topic(&bootstrap, t, 1).await?;
        }
        anyhow::Ok(())
    })?;
    let indexed = match storage {
        Storage::Postgres => Ok(()),
        Storage::Sqlite if index_headers => index_tansu_headers(tansu.data_dir()),
        Storage::Sqlite => Err(anyhow!("BROKER_TANSU_HEADER_INDEX=0")),
    };
    println!(
        "broker: tansu 0.6.0 ({}) on {bootstrap}; topics {} and {} with 1 partition each; every consumer with \
         {}; {}",
        storage.name(),
        INPUTS.join(", "),
        OUTPUTS.join(", "),
        props.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
        match &indexed {
            Ok(()) if storage == Storage::Postgres => {
                "tansu's header table served by its primary key (topition, offset_id, k)".to_string()
            }
            Ok(()) => "index added on tansu's header table (topition, offset_id)".to_string(),
            Err(e) => format!(
                "tansu's header table NOT indexed ({e:#}): every record served scans every stored header, and the \
                 worker's outputs carry two each, so figures degrade as outputs accumulate"
            ),
        }
    );

    // Traffic: cohort-loadgen's Zipf mix, its event times moved so that the
    // last loaded event is a minute old (the latency phase continues at the
    // wall clock, without a jump that would fire every timer at once).
    let registry = Arc::new(Registry::builtin());
    let encoder = Encoder::new(Format::Avro, registry.clone());
    let mut gen = traffic(customers, events)?;
    let loaded: Vec<Event> = gen.by_ref().take(events).collect();
    let span = loaded.last().map(|l| l.time.since(loaded[0].time).as_millis()).unwrap_or(0);
    let t = Instant::now();
    let producer = cohort_e2e::producer(&bootstrap, Duration::from_secs(120))?;
    rt.block_on(async {
        let mut pending = Vec::new();
        for ev in &loaded {
            let value = encoder.encode_event(ev)?;
            let mut rec = FutureRecord::to(topic_of(ev)).key(ev.customer.as_bytes()).timestamp(ev.time.as_millis());
            if let Some(v) = &value {
                rec = rec.payload(v.as_slice());
            }
            pending.push(producer.send_result(rec).map_err(|(e, _)| anyhow!("enqueueing: {e}"))?);
            if pending.len() >= 10_000 {
                for f in pending.drain(..) {
                    f.await?.map_err(|(e, _)| anyhow!("delivery: {e}"))?;
                }
            }
        }
        for f in pending {
            f.await?.map_err(|(e, _)| anyhow!("delivery: {e}"))?;
        }
        anyhow::Ok(())
    })?;
    let load_secs = t.elapsed().as_secs_f64();
    let ends = high_watermarks(&bootstrap, &INPUTS)?;
    let per_topic: Vec<String> = INPUTS.iter().map(|t| format!("{t} {}", thousands(ends[*t] as f64))).collect();
    println!(
        "broker: loaded {} events ({} customers, {:.1} h of event time, Avro; {}) in {load_secs:.1}s = {} rec/s produced (acks=all, idempotent, linger 5ms)",
        thousands(events as f64),
        thousands(customers as f64),
        span as f64 / 3_600_000.0,
        per_topic.join(", "),
        thousands(events as f64 / load_secs),
    );
    drop(loaded);

    // 1. The plain consumer.
    let plain1 = plain_consume(&bootstrap, &ends, &props, tansu_pid)?;
    println!("broker: plain rdkafka consumer (before the worker): {}", plain1.describe("this consumer"));

    // 2. The worker, from the beginning.
    let dir = tempfile::Builder::new().prefix("cohort-bench-broker-").tempdir()?;
    let http_port = free_port()?;
    let config = write_config(dir.path(), &bootstrap, http_port, &props)?;
    let mut worker = WorkerProcess::start(&config, &dir.path().join("worker.log"))?;
    let cpu = Cpu::start(tansu_pid, worker.pid());
    let metrics_addr = format!("127.0.0.1:{http_port}");
    let w = measure_worker(&mut worker, &metrics_addr, events as f64, cpu)?;
    println!("broker: cohort worker: {}", w.describe());
    println!("broker: cohort worker, where the time went: {}", w.breakdown());
    let mut sent_so_far = 0.0;

    // 3. Latency at half the worker's rate; when it does not keep up there,
    // once more at a quarter, for a latency the worker can sustain.
    let length = Duration::from_secs(latency_secs as u64);
    let half = (w.steady_rate / 2.0).max(10.0);
    let mut phases = Vec::new();
    for (label, rate) in [("half", half), ("a quarter of", half / 2.0)] {
        let watch = Watch::Worker { worker: &mut worker, metrics: &metrics_addr, already: events as f64 + sent_so_far };
        let p =
            paced(&rt, &producer, &bootstrap, &mut gen, &encoder, &registry, rate, length, &props, tansu_pid, watch)?;
        println!("broker: cohort worker's event-to-output latency at {label} its rate: {}", p.describe());
        sent_so_far += p.sent as f64;
        let kept_up = p.kept_up();
        phases.push((label, p));
        if kept_up || quick {
            break;
        }
    }
    let status = worker.terminate()?;
    println!("broker: the worker's log: {}", worker.log_summary());

    // 4. The broker alone at the same rate: the same kind of events read back
    // from the input topics by a plain consumer.
    let floor = paced(
        &rt,
        &producer,
        &bootstrap,
        &mut gen,
        &encoder,
        &registry,
        half,
        length,
        &props,
        tansu_pid,
        Watch::Broker,
    )?;
    println!(
        "broker: the broker alone (plain consumer of the input topics) at half the worker's rate: {}",
        floor.describe()
    );

    // 5. The plain consumer again, on the same records.
    let plain2 = plain_consume(&bootstrap, &ends, &props, tansu_pid)?;
    println!(
        "broker: plain rdkafka consumer (after the worker stopped, {status}): {}",
        plain2.describe("this consumer")
    );

    // 6. The broker's share of a worker batch: its outputs produced alone.
    let replay = replay_outputs(&rt, &bootstrap, &w.outputs_per_batch(), if quick { 2 } else { 10 })?;
    let batch_ms = 1000.0 * w.batch_busy_secs / w.batches.max(1.0);
    println!(
        "broker: the worker's outputs alone, re-produced with its producer: {}; the worker's batches took {batch_ms:.0} ms \
         (decode, rules, produce and await, commit), so producing its outputs is about {:.0}% of a batch",
        replay.describe(),
        100.0 * replay.mean_ms() / batch_ms.max(1e-9),
    );

    let plain = (plain1.steady_rate + plain2.steady_rate) / 2.0;
    let plain_total = (plain1.total_rate + plain2.total_rate) / 2.0;
    println!(
        "broker: plain rdkafka consumer {} rec/s (mean of {} and {}); cohort worker {} rec/s; ratio {:.2} (goal 0.5) \
         [with start-up and group join: plain {} rec/s, worker {} rec/s, ratio {:.2}]",
        thousands(plain),
        thousands(plain1.steady_rate),
        thousands(plain2.steady_rate),
        thousands(w.steady_rate),
        w.steady_rate / plain,
        thousands(plain_total),
        thousands(w.total_rate),
        w.total_rate / plain_total,
    );
    // Per input record: tansu serving it (from the plain consumer's rate),
    // tansu taking the worker's outputs for it (from the replay), and the
    // worker's own CPU (all its threads, over its whole run).
    let read_us = 1e6 / plain.max(1e-9);
    let write_us = 1000.0 * replay.mean_ms() / (w.tp.records / w.batches.max(1.0)).max(1.0);
    let cpu_us = 1e6 * w.tp.cpu.reader * w.tp.total_secs / w.tp.records.max(1.0);
    println!(
        "broker: per input record (estimate, as if tansu served one request at a time and the worker did nothing \
         while it waited): tansu reading it {read_us:.0} us + tansu writing its outputs {write_us:.0} us + the \
         worker's CPU {cpu_us:.0} us = {} rec/s predicted, {} measured; tansu's two parts alone would cap the worker \
         at {} rec/s, a ratio of {:.2}",
        thousands(1e6 / (read_us + write_us + cpu_us)),
        thousands(w.steady_rate),
        thousands(1e6 / (read_us + write_us)),
        read_us / (read_us + write_us),
    );
    for (label, p) in &phases {
        println!(
            "broker: event-to-output latency at {} events/s ({label} the worker's rate): {}",
            thousands(p.achieved_rate),
            p.summary()
        );
    }
    println!(
        "broker: the broker alone at {} events/s (send to a plain consumer's receipt): {}",
        thousands(floor.achieved_rate),
        floor.summary()
    );
    println!("broker: whole run {:.1}s", started.elapsed().as_secs_f64());
    drop(tansu);
    Ok(())
}

/// A generator whose `events` first events end about a minute before now.
fn traffic(customers: usize, events: usize) -> anyhow::Result<cohort_loadgen::Generator> {
    let config =
        |start: Timestamp| cohort_loadgen::Config { customers: customers as u32, seed: 1, start, ..Default::default() };
    let probe_start = Timestamp(now_ms()) - SimDuration::from_days(365);
    let mut probe = cohort_loadgen::Generator::new(config(probe_start)).map_err(|e| anyhow!("loadgen: {e}"))?;
    let last = probe.by_ref().take(events).last().map(|e| e.time).unwrap_or(probe_start);
    let span = last.since(probe_start);
    let start = Timestamp(now_ms()) - span - SimDuration::from_millis(60_000);
    cohort_loadgen::Generator::new(config(start)).map_err(|e| anyhow!("loadgen: {e}"))
}

/// tansu 0.6.0's sqlite schema has no index on `header (topition, offset_id)`,
/// and it looks up every record's headers when serving a fetch: each record
/// served scans the whole header table. cohort's outputs carry two headers
/// each, so without the index the worker's own output slows its input fetches
/// (and the observers') more with every batch, until nothing moves. Kafka
/// keeps headers inside the record batch; the index makes tansu cost about
/// the same per record whatever was written before.
fn index_tansu_headers(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("sqlite3")
        .arg(dir.join("tansu.db"))
        .arg("create index if not exists cohort_bench_header on header (topition, offset_id);")
        .stdout(Stdio::null())
        .status()
        .context("running the sqlite3 command-line tool")?;
    if !status.success() {
        bail!("sqlite3 exited with {status}");
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn write_config(dir: &Path, bootstrap: &str, http_port: u16, props: &Props) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let group = format!("cohort-bench-{}", now_ms());
    // Everything but the broker, the store, the port, JSON logs (to read the
    // assignment's time) and the consumer's fetch wait is the worker's
    // default: batches of up to 10,000 records or 50 ms, live clock on.
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"

[format]
input = "avro"
output = "avro"
schemas_dir = "{schemas}"

[rules]
path = "{rules}"

[store]
path = "{store}"

[http]
listen = "127.0.0.1:{http_port}"

[log]
format = "json"
level = "info,librdkafka=warn"

[kafka.consumer_properties]
{consumer_properties}
"#,
        consumer_properties = props.iter().map(|(k, v)| format!("{k:?} = {v:?}\n")).collect::<String>(),
        schemas = root.join("schemas").display(),
        rules = root.join("deploy/rules.yaml").display(),
        store = dir.join("store").display(),
    );
    let path = dir.join("cohort.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn high_watermarks(bootstrap: &str, topics: &[&str]) -> anyhow::Result<HashMap<String, i64>> {
    let probe: BaseConsumer = cohort_e2e::consumer_config(bootstrap).create()?;
    let mut out = HashMap::new();
    for t in topics {
        let (_, high) = probe.fetch_watermarks(t, 0, Duration::from_secs(10))?;
        out.insert(t.to_string(), high);
    }
    Ok(out)
}

// ---------------------------------------------------------------- CPU time

/// Machine-wide CPU time from /proc/stat, in seconds: (busy, iowait, CPUs).
fn machine_secs() -> (f64, f64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    let f: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0.0)).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy / 100.0, at(4) / 100.0, cpus)
}

/// CPU use of the parties, and of the whole machine, over a window.
struct Cpu {
    tansu: Option<u32>,
    reader: u32,
    start: (f64, f64, f64, (f64, f64, usize)),
}

impl Cpu {
    fn start(tansu: Option<u32>, reader: u32) -> Cpu {
        let me = std::process::id();
        Cpu {
            tansu,
            reader,
            start: (tansu.map(cpu_secs).unwrap_or(0.0), cpu_secs(reader), cpu_secs(me), machine_secs()),
        }
    }
    /// Cores used over `wall` seconds.
    fn cores(&self, wall: f64) -> CpuUse {
        let wall = wall.max(1e-9);
        let tansu = (self.tansu.map(cpu_secs).unwrap_or(0.0) - self.start.0) / wall;
        let reader = (cpu_secs(self.reader) - self.start.1) / wall;
        let me = std::process::id();
        let bench = if self.reader == me { 0.0 } else { (cpu_secs(me) - self.start.2) / wall };
        let (busy, iowait, cpus) = machine_secs();
        let busy = (busy - self.start.3 .0) / wall;
        CpuUse {
            tansu,
            reader,
            busy,
            others: (busy - tansu - reader - bench).max(0.0),
            iowait: (iowait - self.start.3 .1) / wall,
            cpus,
        }
    }
}

/// Cores used over a window.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    tansu: f64,
    /// The consumer measured: the worker process, or this one.
    reader: f64,
    /// The whole machine, and the part of it that is neither tansu, the
    /// reader nor this process: other people's builds and tests.
    busy: f64,
    others: f64,
    iowait: f64,
    cpus: usize,
}

impl CpuUse {
    fn describe(&self, reader: &str) -> String {
        format!(
            "CPU: tansu {:.2} cores, {reader} {:.2}; machine {:.2} of {} cores busy, {:.2} of them other processes, iowait {:.2}",
            self.tansu, self.reader, self.busy, self.cpus, self.others, self.iowait
        )
    }
}

// ---------------------------------------------------------- plain consumer

struct Throughput {
    records: f64,
    /// From the group's assignment to the last record read (plain) or
    /// committed (worker).
    steady_secs: f64,
    steady_rate: f64,
    /// From creating the client (or starting the process) to the last record.
    total_secs: f64,
    total_rate: f64,
    /// Cores used by tansu and by the reader, from start to end.
    cpu: CpuUse,
}

impl Throughput {
    fn new(records: f64, steady_secs: f64, total_secs: f64, cpu: CpuUse) -> Throughput {
        Throughput {
            records,
            steady_secs,
            steady_rate: records / steady_secs.max(1e-9),
            total_secs,
            total_rate: records / total_secs.max(1e-9),
            cpu,
        }
    }
    fn describe(&self, reader: &str) -> String {
        format!(
            "{} rec/s ({} records, {:.2}s from the group's assignment to the last record; {:.2}s and {} rec/s with start-up \
             and group join); {}",
            thousands(self.steady_rate),
            thousands(self.records),
            self.steady_secs,
            self.total_secs,
            thousands(self.total_rate),
            self.cpu.describe(reader),
        )
    }
}

/// Remembers when the group assigned partitions.
#[derive(Default)]
struct AssignedAt(std::sync::Mutex<Option<Instant>>);

impl rdkafka::ClientContext for AssignedAt {}

impl rdkafka::consumer::ConsumerContext for AssignedAt {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance {
            if tpl.count() > 0 {
                if let Ok(mut at) = self.0.lock() {
                    at.get_or_insert_with(Instant::now);
                }
            }
        }
    }
}

/// Reads every input record below `ends` with a fresh group from the earliest
/// offset, with the worker's consumer settings (librdkafka defaults but the
/// fetch wait, auto commit off), touching each key and value.
fn plain_consume(
    bootstrap: &str,
    ends: &HashMap<String, i64>,
    props: &Props,
    tansu: Option<u32>,
) -> anyhow::Result<Throughput> {
    let created = Instant::now();
    let cpu = Cpu::start(tansu, std::process::id());
    let mut config = cohort_kafka::client_config(bootstrap, &BTreeMap::new());
    for (k, v) in props {
        config.set(k, v);
    }
    let consumer: BaseConsumer<AssignedAt> = config
        .set("group.id", format!("plain-{}", now_ms()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "range")
        .set("auto.offset.reset", "earliest")
        .create_with_context(AssignedAt::default())?;
    let topics: Vec<&str> = ends.keys().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let total: i64 = ends.values().sum();
    let mut done: HashMap<&str, bool> = ends.iter().map(|(t, e)| (t.as_str(), *e == 0)).collect();
    let mut count = 0i64;
    let mut bytes = 0usize;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done.values().all(|d| *d) {
        if Instant::now() > deadline {
            bail!("plain consumer: {count} of {total} records after 600s");
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("plain consumer: {e}");
                continue;
            }
        };
        let end = ends.get(m.topic()).copied().unwrap_or(0);
        if m.offset() < end {
            count += 1;
            bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
        }
        if m.offset() + 1 >= end {
            if let Some(d) = done.get_mut(m.topic()) {
                *d = true;
            }
        }
    }
    let last = Instant::now();
    std::hint::black_box(bytes);
    let assigned = consumer.context().0.lock().ok().and_then(|a| *a).ok_or_else(|| anyhow!("no assignment seen"))?;
    consumer.unsubscribe();
    let window = last.duration_since(assigned).as_secs_f64();
    let total_secs = last.duration_since(created).as_secs_f64();
    Ok(Throughput::new(count as f64, window, total_secs, cpu.cores(total_secs)))
}

// ------------------------------------------------------------------ worker

/// `cohort run` as a child process; killed when dropped.
struct WorkerProcess {
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

impl WorkerProcess {
    fn start(config: &Path, log: &Path) -> anyhow::Result<WorkerProcess> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting cohort run")?;
        Ok(WorkerProcess { child: Some(child), log: log.to_path_buf(), started })
    }

    /// When the worker's consumer was assigned partitions, from its JSON log.
    fn assigned_at(&self) -> Option<Instant> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line = text.lines().find(|l| l.contains("partitions assigned"))?;
        let ts = line.split("\"timestamp\":\"").nth(1)?.split('"').next()?;
        let ago = now_ms() - parse_rfc3339_ms(ts)?;
        Instant::now().checked_sub(Duration::from_millis(ago.max(0) as u64))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                bail!("worker exited with {status}; its log:\n{}", self.log_tail());
            }
        }
        Ok(())
    }

    /// SIGTERM, and waits for the clean exit.
    fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self.child.take().ok_or_else(|| anyhow!("worker not running"))?;
        Command::new("kill").args(["-TERM", &c.id().to_string()]).status()?;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > until {
                let _ = c.kill();
                bail!("worker did not stop within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many warnings and errors the worker logged, and the first few.
    fn log_summary(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> =
            text.lines().filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\"")).collect();
        let mut firsts: Vec<String> = Vec::new();
        for l in &bad {
            let msg = l.split("\"message\":\"").nth(1).and_then(|m| m.split('"').next()).unwrap_or(l).to_string();
            if !firsts.contains(&msg) && firsts.len() < 5 {
                firsts.push(msg);
            }
        }
        if bad.is_empty() {
            "no warnings or errors".into()
        } else {
            format!("{} warnings or errors, e.g. {}", bad.len(), firsts.join(" | "))
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GET /metrics from the worker; `None` until it listens.
fn scrape(addr: &str) -> Option<Metrics> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let mut series = HashMap::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<f64>() {
                series.insert(name.to_string(), v);
            }
        }
    }
    Some(Metrics(series))
}

/// One scrape: series (name with labels) to value.
#[derive(Clone, Default)]
struct Metrics(HashMap<String, f64>);

impl Metrics {
    /// The sum over every series of metric `name`.
    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() == name || (k.starts_with(name) && k[name.len()..].starts_with('{')))
            .map(|(_, v)| v)
            .sum::<f64>()
            + 0.0 // an empty f64 sum is -0.0
    }
    /// A series of `name` whose labels include `label`.
    fn with_label(&self, name: &str, label: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(name) && k[name.len()..].starts_with('{') && k.contains(label))
            .map(|(_, v)| v)
            .sum::<f64>()
            + 0.0
    }
    fn input(&self) -> f64 {
        self.sum("cohort_input_records_total")
    }
    /// The smallest bucket bound of histogram `name` holding quantile `q` of
    /// the observations between `before` and `self`.
    fn quantile_since(&self, before: &Metrics, name: &str, q: f64) -> String {
        let bucket = format!("{name}_bucket");
        let mut bounds: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(&bucket))
            .filter_map(|(k, v)| {
                let le = k.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, v - before.0.get(k).copied().unwrap_or(0.0)))
            })
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = bounds.last().map(|b| b.1).unwrap_or(0.0);
        if total <= 0.0 {
            return "n/a".into();
        }
        for (le, c) in &bounds {
            if *c >= q * total {
                return if le.is_finite() { format!("≤ {:.0} ms", le * 1000.0) } else { "> 30 s".into() };
            }
        }
        "n/a".into()
    }
}

struct WorkerRun {
    tp: Throughput,
    steady_rate: f64,
    total_rate: f64,
    /// Seconds from spawning the process to the group's assignment.
    assigned_after: f64,
    batches: f64,
    batch_busy_secs: f64,
    outputs: Metrics,
    /// Records per second in each quarter of the window.
    quarters: [f64; 4],
}

impl WorkerRun {
    fn describe(&self) -> String {
        format!(
            "{} (the end is the first scrape of /metrics, every {} ms, that counts every record committed; partitions \
             were assigned {:.2}s after the process started); by quarters of the window {} rec/s",
            self.tp.describe("worker"),
            POLL.as_millis(),
            self.assigned_after,
            self.quarters.map(thousands).join(" / "),
        )
    }
    /// Mean output records per batch, by output topic.
    fn outputs_per_batch(&self) -> Vec<(&'static str, usize)> {
        ["segment-changes", "next-best-offers", "cohort-changelog", "cohort-dlq"]
            .into_iter()
            .map(|t| {
                let n = self.outputs.with_label("cohort_output_records_total", &format!("topic=\"{t}\""));
                (t, (n / self.batches.max(1.0)).round() as usize)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn breakdown(&self) -> String {
        let m = &self.outputs;
        let d = |name: &str| m.sum(name);
        let out = |t: &str| m.with_label("cohort_output_records_total", &format!("topic=\"{t}\""));
        format!(
            "{:.0} batches of {:.0} records on average; batches' durations add up to {:.0}% of the window (decode, state, rules, produce and await acks, store commit; \
             {:.1} ms per batch; over 100% as one batch is produced and committed while the next is processed); outputs per input record: segment-changes {:.2}, next-best-offers {:.2}, changelog {:.2}, dlq {:.3}; \
             timers fired {:.0}; state cache hit ratio {}",
            self.batches,
            self.tp.records / self.batches.max(1.0),
            100.0 * self.batch_busy_secs / self.tp.steady_secs.max(1e-9),
            1000.0 * self.batch_busy_secs / self.batches.max(1.0),
            out("segment-changes") / self.tp.records,
            out("next-best-offers") / self.tp.records,
            out("cohort-changelog") / self.tp.records,
            out("cohort-dlq") / self.tp.records,
            d("cohort_timers_fired_total"),
            {
                let h = d("cohort_state_cache_hits_total");
                let mi = d("cohort_state_cache_misses_total");
                if h + mi > 0.0 { format!("{:.2}", h / (h + mi)) } else { "n/a (housekeeping updates it every 5 s)".into() }
            },
        )
    }
}

/// Waits until the worker's committed input (its metrics count records after
/// the store commit) reaches `records`. The window starts when the worker's
/// consumer was assigned its partitions (its log says when), as the plain
/// consumer's does.
fn measure_worker(worker: &mut WorkerProcess, addr: &str, records: f64, cpu: Cpu) -> anyhow::Result<WorkerRun> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut progress: Vec<(Instant, f64)> = Vec::new();
    loop {
        worker.check_running()?;
        if Instant::now() > deadline {
            bail!("worker did not finish {records} records in 30 minutes; its log:\n{}", worker.log_tail());
        }
        std::thread::sleep(POLL);
        let Some(m) = scrape(addr) else { continue };
        let n = m.input();
        progress.push((Instant::now(), n));
        if std::env::var_os("BROKER_TRACE").is_some() {
            eprintln!(
                "trace {:.2}s input {n} batches {} busy {:.2}s timers {} outputs {} dlq {} lag {}",
                worker.started.elapsed().as_secs_f64(),
                m.sum("cohort_batch_duration_seconds_count"),
                m.sum("cohort_batch_duration_seconds_sum"),
                m.sum("cohort_timers_fired_total"),
                m.sum("cohort_output_records_total"),
                m.sum("cohort_dlq_records_total"),
                m.sum("cohort_consumer_lag_records"),
            );
        }
        if n >= records {
            let end = Instant::now();
            let assigned =
                worker.assigned_at().ok_or_else(|| anyhow!("no `partitions assigned` in the worker's log"))?;
            let steady = end.duration_since(assigned).as_secs_f64();
            let total = end.duration_since(worker.started).as_secs_f64();
            let tp = Throughput::new(n, steady, total, cpu.cores(total));
            return Ok(WorkerRun {
                steady_rate: tp.steady_rate,
                total_rate: tp.total_rate,
                assigned_after: assigned.duration_since(worker.started).as_secs_f64(),
                tp,
                batches: m.sum("cohort_batch_duration_seconds_count"),
                batch_busy_secs: m.sum("cohort_batch_duration_seconds_sum"),
                outputs: m,
                quarters: quarters(&progress, assigned, end),
            });
        }
    }
}

/// The rate in each quarter of `from..to`, from (instant, count) samples; the
/// count at a boundary is that of the last sample before it.
fn quarters(progress: &[(Instant, f64)], from: Instant, to: Instant) -> [f64; 4] {
    let span = to.duration_since(from).as_secs_f64() / 4.0;
    let at = |t: Instant| progress.iter().take_while(|(i, _)| *i <= t).last().map_or(0.0, |(_, n)| *n);
    let edge = |k: u32| from + Duration::from_secs_f64(span * f64::from(k));
    [0, 1, 2, 3].map(|k| (at(edge(k + 1)) - at(edge(k))) / span.max(1e-9))
}

/// `2026-11-23T18:40:01.123456Z` as milliseconds since the epoch.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    let days = cohort_core::time::days_from_civil(y as i32, mo as u8, da as u8);
    Some(days * 86_400_000 + (h * 3600 + mi * 60) * 1000 + (sec * 1000.0) as i64)
}

// ------------------------------------------------- the worker's output alone

/// What producing one batch's outputs costs on its own.
struct Replay {
    batches: usize,
    records_per_batch: usize,
    headers_per_batch: usize,
    bytes_per_batch: usize,
    composition: String,
    /// Per batch, send to the last acknowledgement, in ms, sorted.
    millis: Vec<f64>,
}

impl Replay {
    fn mean_ms(&self) -> f64 {
        self.millis.iter().sum::<f64>() / self.millis.len().max(1) as f64
    }
    fn describe(&self) -> String {
        format!(
            "{} batches of {} records ({}; {} headers, {:.0} KiB), each awaited as the worker awaits its batch: \
             mean {:.0} ms, min {:.0} ms, max {:.0} ms per batch",
            self.batches,
            self.records_per_batch,
            self.composition,
            self.headers_per_batch,
            self.bytes_per_batch as f64 / 1024.0,
            self.mean_ms(),
            self.millis.first().copied().unwrap_or(0.0),
            self.millis.last().copied().unwrap_or(0.0),
        )
    }
}

/// Re-produces records the worker wrote (its real keys, values and headers),
/// in batches of its mean output per batch, to fresh topics, with the
/// worker's producer (cohort-kafka's `OutputProducer`, same settings) and its
/// way of delivering: send the batch, await every acknowledgement. No
/// consuming, no processing: the broker's share of a batch.
fn replay_outputs(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    per_batch: &[(&str, usize)],
    batches: usize,
) -> anyhow::Result<Replay> {
    // Read batches + 1 batches' worth of each topic from its beginning.
    let reader: BaseConsumer = cohort_kafka::client_config(bootstrap, &BTreeMap::new())
        .set("group.id", format!("replay-{}", now_ms()))
        .set("enable.auto.commit", "false")
        .create()?;
    let ends = high_watermarks(bootstrap, &per_batch.iter().map(|(t, _)| *t).collect::<Vec<_>>())?;
    let mut want: HashMap<String, usize> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (t, n) in per_batch {
        let n = (*n * (batches + 1)).min(ends[*t].max(0) as usize);
        if n > 0 {
            want.insert(t.to_string(), n);
            tpl.add_partition_offset(t, 0, Offset::Beginning)?;
        }
    }
    reader.assign(&tpl)?;
    let mut got: HashMap<String, Vec<cohort_kafka::OutputRecord>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while want.iter().any(|(t, n)| got.get(t).map_or(0, Vec::len) < *n) {
        if Instant::now() > deadline {
            bail!("reading the worker's outputs back took over 120s");
        }
        let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) else { continue };
        let topic = m.topic().to_string();
        if got.get(&topic).map_or(0, Vec::len) >= want.get(&topic).copied().unwrap_or(0) {
            continue;
        }
        let headers = m
            .headers()
            .map(|h| {
                use rdkafka::message::Headers;
                h.iter()
                    .map(|hd| (hd.key.to_string().into(), hd.value.map(<[u8]>::to_vec).unwrap_or_default().into()))
                    .collect()
            })
            .unwrap_or_default();
        got.entry(topic.clone()).or_default().push(cohort_kafka::OutputRecord {
            topic: format!("replay-{topic}").into(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
            partition: None,
        });
    }
    drop(reader);
    let producer = cohort_kafka::OutputProducer::new(bootstrap, &BTreeMap::new())?;
    let mut batch_of = |b: usize| -> Vec<cohort_kafka::OutputRecord> {
        let mut out = Vec::new();
        for (t, n) in per_batch {
            if let Some(recs) = got.get_mut(*t) {
                out.extend(recs.iter().skip(b * n).take(*n).cloned());
            }
        }
        out
    };
    let mut millis = Vec::new();
    let first = batch_of(0);
    rt.block_on(async {
        for (t, _) in per_batch {
            create_topic(bootstrap, &format!("replay-{t}"), 1).await?;
        }
        // Batch 0 warms the producer up (connection, producer id, metadata).
        producer.send_all(&first).await?;
        for b in 1..=batches {
            let batch = batch_of(b);
            let t = Instant::now();
            producer.send_all(&batch).await?;
            millis.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::Ok(())
    })?;
    millis.sort_by(f64::total_cmp);
    Ok(Replay {
        batches,
        records_per_batch: first.len(),
        headers_per_batch: first.iter().map(|r| r.headers.len()).sum(),
        bytes_per_batch: first
            .iter()
            .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
            .sum(),
        composition: per_batch.iter().map(|(t, n)| format!("{n} {t}")).collect::<Vec<_>>().join(", "),
        millis,
    })
}

// ----------------------------------------------------------------- latency

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[i64], q: f64) -> String {
    if sorted.is_empty() {
        return "n/a".into();
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].to_string()
}

/// Whose latency a paced phase measures.
enum Watch<'a> {
    /// The worker's: outputs on the decision topics, against the event time
    /// of the input that caused them. `already`: input records the worker
    /// has committed before the phase.
    Worker { worker: &'a mut WorkerProcess, metrics: &'a str, already: f64 },
    /// The broker's alone: the same kind of events read back from the input
    /// topics by a plain consumer.
    Broker,
}

/// Latencies of one paced phase.
struct Phase {
    /// (receive instant in seconds since the phase started, latency in ms)
    samples: Vec<(f64, i64)>,
    sorted: Vec<i64>,
    sent: usize,
    achieved_rate: f64,
    secs: f64,
    /// Records not yet processed (worker: committed; broker: read) when
    /// sending stopped.
    lag_at_end: f64,
    /// From the end of sending until everything was processed.
    drain_secs: f64,
    /// Outputs of the phase caused by timers (not counted in the latencies).
    timer_outputs: usize,
    /// Cores used by tansu, the reader (worker or this process) and others.
    cpu: CpuUse,
    reader: &'static str,
    /// The worker's own event-to-output histogram over the phase (p50, p99).
    worker_hist: Option<(String, String)>,
}

impl Phase {
    fn p(&self, q: f64) -> String {
        quantile(&self.sorted, q)
    }
    fn max(&self) -> String {
        self.sorted.last().map(i64::to_string).unwrap_or_else(|| "n/a".into())
    }
    /// Kept up: at most a second of traffic unprocessed when sending stopped.
    fn kept_up(&self) -> bool {
        self.lag_at_end <= self.achieved_rate.max(1.0)
    }
    fn summary(&self) -> String {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms over {} records; kept up: {}",
            self.p(0.5),
            self.p(0.99),
            self.max(),
            thousands(self.samples.len() as f64),
            if self.kept_up() { "yes" } else { "no" }
        )
    }
    fn describe(&self) -> String {
        let third = self.secs / 3.0;
        let p99_of = |from: f64, to: f64| {
            let mut v: Vec<i64> = self.samples.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, l)| *l).collect();
            v.sort_unstable();
            quantile(&v, 0.99)
        };
        let hist = match &self.worker_hist {
            Some((p50, p99)) => {
                format!(
                    "; the worker's own histogram (event time to store commit, bucket bounds): p50 {p50}, p99 {p99}"
                )
            }
            None => String::new(),
        };
        format!(
            "{} events sent in {:.1}s ({} events/s); {}; p99 by thirds of the phase {} / {} / {} ms; {} records \
             unprocessed when sending stopped, all processed {:.2}s later; {} timer outputs not counted{hist}; {}",
            thousands(self.sent as f64),
            self.secs,
            thousands(self.achieved_rate),
            self.summary(),
            p99_of(0.0, third),
            p99_of(third, 2.0 * third),
            p99_of(2.0 * third, f64::INFINITY),
            thousands(self.lag_at_end),
            self.drain_secs,
            self.timer_outputs,
            self.cpu.describe(self.reader),
        )
    }
}

/// Sends fresh events stamped with the wall clock at `rate` for `length`
/// through `producer` (already connected, with its producer id and the
/// topics' metadata: it loaded the data), and measures receive time minus
/// event time where `watch` says.
#[allow(clippy::too_many_arguments)]
fn paced(
    rt: &tokio::runtime::Runtime,
    producer: &FutureProducer,
    bootstrap: &str,
    gen: &mut cohort_loadgen::Generator,
    encoder: &Encoder,
    registry: &Arc<Registry>,
    rate: f64,
    length: Duration,
    props: &Props,
    tansu: Option<u32>,
    mut watch: Watch<'_>,
) -> anyhow::Result<Phase> {
    let mut before = Metrics::default();
    if let Watch::Worker { worker, metrics, already } = &mut watch {
        // Everything earlier is committed before the phase starts.
        before = loop {
            worker.check_running()?;
            if let Some(m) = scrape(metrics).filter(|m| m.input() >= *already) {
                break m;
            }
            std::thread::sleep(POLL);
        };
    }
    let (topics, reader): (&[&str], u32) = match &watch {
        Watch::Worker { worker, .. } => (&["segment-changes", "next-best-offers"], worker.pid()),
        Watch::Broker => (&INPUTS, std::process::id()),
    };
    let phase_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let observer = observe(bootstrap, topics, props, registry, phase_start, stop.clone(), seen.clone())?;
    // Let the observer connect and start fetching before the first event.
    std::thread::sleep(Duration::from_secs(1));
    let cpu = Cpu::start(tansu, reader);

    // Every 5 ms, the events due by then, stamped now.
    let total = (rate * length.as_secs_f64()).round() as usize;
    let (sent, send_secs, acks) = rt.block_on(async {
        let mut pending = Vec::with_capacity(total);
        let t0 = Instant::now();
        let mut sent = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        while sent < total {
            tick.tick().await;
            let due = ((t0.elapsed().as_secs_f64() * rate) as usize).min(total);
            while sent < due {
                let Some(mut ev) = gen.next() else { break };
                ev.time = Timestamp(now_ms());
                let value = encoder.encode_event(&ev)?;
                let mut rec =
                    FutureRecord::to(topic_of(&ev)).key(ev.customer.as_bytes()).timestamp(ev.time.as_millis());
                if let Some(v) = &value {
                    rec = rec.payload(v.as_slice());
                }
                pending.push(producer.send_result(rec).map_err(|(e, _)| anyhow!("enqueueing: {e}"))?);
                sent += 1;
            }
        }
        anyhow::Ok((sent, t0.elapsed().as_secs_f64(), pending))
    })?;
    let sent_done = Instant::now();
    let processed = |watch: &Watch<'_>| -> f64 {
        match watch {
            Watch::Worker { metrics, already, .. } => scrape(metrics).map(|m| m.input() - already).unwrap_or(0.0),
            Watch::Broker => seen.load(Ordering::Relaxed) as f64,
        }
    };
    let lag_at_end = (sent as f64 - processed(&watch)).max(0.0);
    rt.block_on(async {
        for f in acks {
            f.await?.map_err(|(e, _)| anyhow!("delivery: {e}"))?;
        }
        anyhow::Ok(())
    })?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while processed(&watch) < sent as f64 {
        if let Watch::Worker { worker, .. } = &mut watch {
            worker.check_running()?;
        }
        if Instant::now() > deadline {
            bail!("{} of {sent} records processed 300s after the end of sending", processed(&watch));
        }
        std::thread::sleep(POLL);
    }
    let drain_secs = sent_done.elapsed().as_secs_f64();
    let cpu = cpu.cores(phase_start.elapsed().as_secs_f64());
    let worker_hist = match &watch {
        Watch::Worker { metrics, .. } => {
            // Outputs are acknowledged before the commit the metrics count;
            // give the observer time to fetch the last ones.
            std::thread::sleep(Duration::from_secs(2));
            let after = scrape(metrics).unwrap_or_default();
            let name = "cohort_event_to_output_latency_seconds";
            Some((after.quantile_since(&before, name, 0.5), after.quantile_since(&before, name, 0.99)))
        }
        Watch::Broker => None,
    };
    stop.store(true, Ordering::Relaxed);
    let (samples, timer_outputs) = observer.join().map_err(|_| anyhow!("observer panicked"))?;
    let mut sorted: Vec<i64> = samples.iter().map(|(_, l)| *l).collect();
    sorted.sort_unstable();
    Ok(Phase {
        samples,
        sorted,
        sent,
        achieved_rate: sent as f64 / send_secs.max(1e-9),
        secs: send_secs,
        lag_at_end,
        drain_secs,
        timer_outputs,
        cpu,
        reader: if matches!(watch, Watch::Broker) { "the observer" } else { "worker" },
        worker_hist,
    })
}

/// (seconds since the phase started at receipt, latency in ms) per record,
/// and the count of timer-caused outputs.
type Observed = (Vec<(f64, i64)>, usize);

/// Reads `topics` from their current ends on a thread until `stop`, and
/// returns (seconds since `phase_start` at receipt, receive time minus event
/// time in ms) for every record caused by an event of the phase, counted in
/// `seen`, and the count of timer-caused outputs. Decision topics carry the
/// cause event's time in the value; input records carry it as their Kafka
/// timestamp.
fn observe(
    bootstrap: &str,
    topics: &[&str],
    props: &Props,
    registry: &Arc<Registry>,
    phase_start: Instant,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicUsize>,
) -> anyhow::Result<std::thread::JoinHandle<Observed>> {
    let ends = high_watermarks(bootstrap, topics)?;
    let mut config = cohort_kafka::client_config(bootstrap, &BTreeMap::new());
    for (k, v) in props {
        config.set(k, v);
    }
    let observer: BaseConsumer =
        config.set("group.id", format!("observer-{}", now_ms())).set("enable.auto.commit", "false").create()?;
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        tpl.add_partition_offset(t, 0, Offset::Offset(ends[*t]))?;
    }
    observer.assign(&tpl)?;
    let phase_start_ms = now_ms() - phase_start.elapsed().as_millis() as i64;
    let decoder = Decoder::new(Format::Avro, registry.clone());
    Ok(std::thread::spawn(move || {
        let mut samples = Vec::new();
        let mut timers = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(m)) = observer.poll(Duration::from_millis(100)) else { continue };
            let received = now_ms();
            let at = phase_start.elapsed().as_secs_f64();
            let (time, kind) = match m.topic() {
                "segment-changes" => match m.payload().map(|v| decoder.decode_segment_changed(v)) {
                    Some(Ok(s)) => (s.time.as_millis(), s.cause.kind),
                    _ => continue,
                },
                "next-best-offers" => match m.payload().map(|v| decoder.decode_next_best_offer(v)) {
                    Some(Ok(n)) => (n.time.as_millis(), n.cause.kind),
                    _ => continue,
                },
                _ => match m.timestamp().to_millis() {
                    Some(t) => (t, CauseKind::Event),
                    None => continue,
                },
            };
            if time < phase_start_ms {
                continue;
            }
            if kind == CauseKind::Event {
                samples.push((at, received - time));
                seen.fetch_add(1, Ordering::Relaxed);
            } else {
                timers += 1;
            }
        }
        (samples, timers)
    }))
}
