//! Through a real broker: `SOAK_EVENTS` (300,000) `cohort loadgen` events
//! on `SOAK_PARTITIONS` (4) partitions per input topic, read by `cohort run`
//! with its default settings from a private tansu broker, to lag 0; once
//! per format of `SOAK_FORMATS` (`json,avro`: inputs and outputs in that
//! encoding), each on a broker of its own.
//!
//! This is the run that used to stall: the worker read 10-16 thousand
//! records, then sat at ~1% CPU, its consume loop blocked on watermark
//! queries that tansu answered only after the fetch in flight, the query
//! timing out and librdkafka dropping the connection (and the fetch) with
//! it. Lag now comes from librdkafka's statistics, so nothing but the fetch
//! travels on that connection.
//!
//! Then (unless `SOAK_RESTORE=0`), after the first format, restore through the broker: the changelog
//! the run wrote, read by a plain consumer and restored by a worker with an
//! empty store, alternated three times (once in the quick run).
//!
//! Prints, per format: the time to load the events, the time from the
//! worker's start until every input record is committed, the longest
//! stretch without progress (no change of the committed count while lag was
//! above 0, sampled every 200 ms), the worker's CPU per event (process CPU time
//! from /proc, all threads) and its split by thread kind, the batch sizes
//! the worker saw (mean, and the share of batches of 100 records or fewer),
//! output records per event, tansu's CPU over the same run, and the
//! worker's `no progress` warnings. Fails
//! (exit 1) if the worker has not finished within `SOAK_DEADLINE_SECS` (900)
//! or stops making progress for `SOAK_STALL_SECS` (120), printing the tail
//! of its log. Nothing is asserted about speed.
//!
//! `cargo bench -p cohort --bench soak` (part of `make bench`); under
//! `cargo test --benches` it does a 3,000-event run, and
//! `cargo test --release -p cohort --bench soak -- --bench` the full one with
//! the release build. `SOAK_COHORT_BIN` names another `cohort` binary to
//! run (the same harness for a before-and-after). The broker keeps its data
//! in sqlite, as in the figures of docs/benchmarks.md;
//! `COHORT_TEST_STORAGE=postgres` runs it on the tests' postgres engine.

mod common;

use anyhow::{bail, Context as _};
use cohort_e2e::{create_topic, Storage, Tansu};
use common::cpu_secs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INPUTS: [&str; 4] = ["clickstream", "purchases", "customer-profiles", "offer-outcomes"];
const OUTPUTS: [&str; 4] = ["segment-changes", "next-best-offers", "cohort-dlq", "cohort-changelog"];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("soak: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let quick = !std::env::args().any(|a| a == "--bench");
    let events = env("SOAK_EVENTS", if quick { 3_000 } else { 300_000 });
    let partitions = env("SOAK_PARTITIONS", 4) as i32;
    let formats = std::env::var("SOAK_FORMATS").unwrap_or_else(|_| "json,avro".into());
    // SOAK_COHORT_BIN runs another build of `cohort` (an older one, to compare).
    let cohort = std::env::var("SOAK_COHORT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cohort").to_string());
    let storage = Storage::from_env_or(Storage::Sqlite)?;
    for (i, format) in formats.split(',').map(str::trim).filter(|f| !f.is_empty()).enumerate() {
        if !matches!(format, "json" | "avro") {
            bail!("SOAK_FORMATS: `{format}` is not json or avro");
        }
        // Each format on a broker of its own, so that neither reads the other's records.
        let broker = Tansu::start_with(storage).context("starting tansu (make test's setup installs it)")?;
        let dir = tempfile::Builder::new().prefix("cohort-soak-").tempdir()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        soak(&cohort, &broker, dir.path(), &rt, Soak { events, partitions, format, storage })?;
        let restore = std::env::var("SOAK_RESTORE").as_deref() != Ok("0");
        if restore && i == 0 {
            rt.block_on(restore_rounds(
                &cohort,
                &broker.bootstrap(),
                dir.path(),
                partitions,
                if quick { 1 } else { 3 },
            ))?;
        }
    }
    Ok(())
}

/// One soak run's settings.
struct Soak<'a> {
    events: u64,
    partitions: i32,
    /// `json` or `avro`: the inputs' and the outputs' encoding.
    format: &'a str,
    storage: Storage,
}

/// Loads the events, runs the worker to lag 0, prints what it cost.
fn soak(cohort: &str, broker: &Tansu, dir: &Path, rt: &tokio::runtime::Runtime, s: Soak<'_>) -> anyhow::Result<()> {
    let Soak { events, partitions, format, storage } = s;
    let deadline = Duration::from_secs(env("SOAK_DEADLINE_SECS", 900));
    let stall_limit = Duration::from_secs(env("SOAK_STALL_SECS", 120));
    let bootstrap = broker.bootstrap();
    rt.block_on(async {
        for t in INPUTS.iter().chain(OUTPUTS.iter()) {
            create_topic(&bootstrap, t, partitions).await?;
        }
        anyhow::Ok(())
    })?;
    let (config, http_port) = write_config(dir, &bootstrap, format)?;

    let loaded = Instant::now();
    let status = Command::new(cohort)
        .args(["loadgen", "--config"])
        .arg(&config)
        .args(["--bootstrap", &bootstrap, "--events", &events.to_string(), "--customers", "20000"])
        .args(["--format", format])
        .stdout(Stdio::null())
        .status()
        .context("running cohort loadgen")?;
    if !status.success() {
        bail!("cohort loadgen exited with {status}");
    }
    let load_time = loaded.elapsed();
    println!(
        "soak: {events} loadgen events ({format}, {partitions} partitions per topic) loaded into tansu ({}) in \
         {load_time:.1?}",
        storage.name()
    );

    let tansu_pid = common::find_tansu_pid(&bootstrap);
    let tansu_before = tansu_pid.map(cpu_secs).unwrap_or(0.0);
    let log_path = dir.join("worker.log");
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let mut worker = Kill(
        Command::new(cohort)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting cohort run")?,
    );
    let http = format!("127.0.0.1:{http_port}");
    let mut last_count = -1.0;
    let mut last_change = Instant::now();
    let mut longest_stall = Duration::ZERO;
    let finished = loop {
        if let Some(s) = worker.0.try_wait()? {
            bail!("the worker exited with {s}; its log:\n{}", tail(&log_path));
        }
        let metrics = get(&http, "/metrics").unwrap_or_default();
        let count: f64 = INPUTS
            .iter()
            .filter_map(|t| sample(&metrics, &format!("cohort_input_records_total{{topic=\"{t}\"}}")))
            .sum();
        let lag: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("cohort_consumer_lag_records{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        } else {
            longest_stall = longest_stall.max(last_change.elapsed());
        }
        if count >= events as f64 && lag == 0.0 {
            break started.elapsed();
        }
        if last_change.elapsed() > stall_limit {
            bail!(
                "no progress for {stall_limit:?} at {count} of {events} records (lag {lag}); the worker's log:\n{}",
                tail(&log_path)
            );
        }
        if started.elapsed() > deadline {
            bail!("not finished within {deadline:?}: {count} of {events} records; log:\n{}", tail(&log_path));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let pid = worker.0.id();
    let cpu = cpu_secs(pid);
    let threads = common::thread_cpu(pid);
    let tansu_cpu = tansu_pid.map(cpu_secs).unwrap_or(0.0) - tansu_before;
    let metrics = get(&http, "/metrics").unwrap_or_default();
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let warnings = log_text.lines().filter(|l| l.contains("no progress:")).count();
    let timeouts = log_text.lines().filter(|l| l.contains("Timed out")).count();
    println!(
        "soak ({format}): the worker committed all {events} records with lag 0 in {finished:.1?} ({:.0} events/s); \
         longest stretch without progress {longest_stall:.1?}; worker CPU {cpu:.1} s (**{:.1} µs/event**); \
         {warnings} 'no progress' warnings, {timeouts} librdkafka request time-outs in its log",
        events as f64 / finished.as_secs_f64(),
        cpu * 1e6 / events as f64,
    );
    let split: Vec<String> = threads
        .iter()
        .filter(|(_, secs)| *secs >= 0.01)
        .map(|(name, secs)| {
            format!("{name} {:.1} µs ({:.0}%)", secs * 1e6 / events as f64, 100.0 * secs / cpu.max(1e-9))
        })
        .collect();
    println!("soak ({format}): worker CPU per event by thread: {}", split.join(", "));
    let batches = sample(&metrics, "cohort_batch_size_records_count").unwrap_or(0.0);
    let batch_records = sample(&metrics, "cohort_batch_size_records_sum").unwrap_or(0.0);
    let small = sample(&metrics, "cohort_batch_size_records_bucket{le=\"100\"}").unwrap_or(0.0);
    let outputs: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("cohort_output_records_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "soak ({format}): {batches:.0} batches of {:.0} records on average ({:.0}% of them 100 records or fewer); \
         {:.2} output records per event; tansu CPU {tansu_cpu:.1} s ({:.1} µs/event)",
        batch_records / batches.max(1.0),
        100.0 * small / batches.max(1.0),
        outputs / events as f64,
        tansu_cpu * 1e6 / events as f64,
    );
    terminate(&mut worker.0);
    Ok(())
}

/// Restore through the broker, against a plain consumer of the same
/// changelog, alternated `rounds` times in one run: a plain consumer reading
/// each changelog partition to its end ([`plain_read`]), then a `cohort run`
/// with an empty store restoring every partition (the sum of its
/// per-partition restore durations, from its log: one restore thread, one
/// partition at a time). Prints each round's rates and the ratio of the
/// medians.
async fn restore_rounds(
    cohort: &str,
    bootstrap: &str,
    dir: &Path,
    partitions: i32,
    rounds: usize,
) -> anyhow::Result<()> {
    let (mut plain, mut tuned, mut restore) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (records, plain_secs) = plain_read(bootstrap, partitions, None)?;
        let plain_rate = records as f64 / plain_secs;
        plain.push(plain_rate);
        let (tuned_records, tuned_secs) = plain_read(bootstrap, partitions, Some("10"))?;
        let tuned_rate = tuned_records as f64 / tuned_secs;
        tuned.push(tuned_rate);

        let (config, _) = write_config(dir, bootstrap, "json")?;
        let text = std::fs::read_to_string(&config)?
            .replace("/store\"", &format!("/store-restore-{round}\""))
            .replace("format = \"human\"", "")
            .replace("[log]\n", "[log]\nformat = \"json\"\n");
        let config = dir.join(format!("restore-{round}.toml"));
        std::fs::write(&config, text)?;
        let log_path = dir.join(format!("restore-{round}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut worker = Kill(
            Command::new(cohort).args(["run", "--config"]).arg(&config).stdout(log.try_clone()?).stderr(log).spawn()?,
        );
        let until = Instant::now() + Duration::from_secs(600);
        let lines = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.contains("partition restored from the changelog"))
                .map(str::to_string)
                .collect();
            if lines.len() >= partitions as usize {
                break lines;
            }
            if let Some(s) = worker.0.try_wait()? {
                bail!("the restoring worker exited with {s}; its log:\n{}", tail(&log_path));
            }
            if Instant::now() > until {
                bail!("the worker did not restore {partitions} partitions in 600 s; its log:\n{}", tail(&log_path));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        terminate(&mut worker.0);
        let field = |l: &str, name: &str| -> f64 {
            let at = l.find(&format!("\"{name}\":")).map(|i| i + name.len() + 3).unwrap_or(l.len());
            l[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap_or(0.0)
        };
        let restored: f64 = lines.iter().map(|l| field(l, "records")).sum();
        let took_ms: f64 = lines.iter().map(|l| field(l, "took_ms")).sum();
        // Per changelog record read (states and metadata records), as the
        // plain consumer counts.
        let read: f64 = lines.iter().map(|l| field(l, "to") - field(l, "from")).sum();
        let rate = read / (took_ms / 1e3).max(1e-3);
        restore.push(rate);
        println!(
            "restore round {round}: plain consumer {records} records at {plain_rate:.0}/s (with \
             fetch.wait.max.ms = 10: {tuned_rate:.0}/s); cohort restored {restored} states ({read} changelog records) \
             into an empty store in {took_ms:.0} ms at {rate:.0} records/s (ratio {:.2}; {:.2})",
            rate / plain_rate,
            rate / tuned_rate
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, t, r) = (median(&mut plain), median(&mut tuned), median(&mut restore));
    println!(
        "restore through tansu: median {r:.0} records/s against a plain consumer's {p:.0}/s: ratio {:.2} \
         (against the same consumer with the restore's fetch.wait.max.ms = 10, {t:.0}/s: ratio {:.2})",
        r / p,
        r / t
    );
    Ok(())
}

/// A plain consumer (librdkafka's defaults but `fetch_wait_ms`, no group, no
/// processing) reading
/// each changelog partition alone from its start to its end, one after the
/// other as the worker's restore thread does: the records read and the sum
/// of the per-partition times.
fn plain_read(bootstrap: &str, partitions: i32, fetch_wait_ms: Option<&str>) -> anyhow::Result<(u64, f64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let mut config = cohort_e2e::consumer_config(bootstrap);
    config.set("group.id", "soak-plain-reader").set("enable.auto.commit", "false").set("enable.partition.eof", "true");
    if let Some(ms) = fetch_wait_ms {
        config.set("fetch.wait.max.ms", ms);
    }
    let consumer: BaseConsumer = config.create()?;
    let (mut records, mut secs) = (0u64, 0.0);
    for p in 0..partitions {
        let t0 = Instant::now();
        let (_, high) = consumer.fetch_watermarks("cohort-changelog", p, Duration::from_secs(30))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("cohort-changelog", p, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    records += 1;
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => bail!("the plain consumer failed: {e}"),
                None if Instant::now() > until => bail!("the plain consumer read partition {p} for 600 s"),
                None => {}
            }
        }
        consumer.unassign()?;
        secs += t0.elapsed().as_secs_f64();
    }
    Ok((records, secs))
}

/// SIGTERM, then wait: a clean leave, which tansu's coordinator handles.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The worker's config file and the port of its /metrics.
fn write_config(dir: &Path, bootstrap: &str, format: &str) -> anyhow::Result<(std::path::PathBuf, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The worker's defaults but for the broker, the store and the port.
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"cohort-soak\"\n\n\
         [rules]\npath = \"{rules}\"\n\n[store]\npath = \"{store}\"\n\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\n[log]\nlevel = \"info,librdkafka=warn\"\n\n\
         [format]\ninput = \"{format}\"\noutput = \"{format}\"\nschemas_dir = \"{schemas}\"\n",
        schemas = root.join("schemas").display(),
        rules = root.join("deploy/rules.yaml").display(),
        store = dir.join("store").display(),
    );
    let path = dir.join("cohort.toml");
    std::fs::write(&path, text)?;
    Ok((path, port))
}

fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    Some(raw.split_once("\r\n\r\n")?.1.to_string())
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
