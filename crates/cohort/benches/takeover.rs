//! A partition holding `TAKEOVER_CUSTOMERS` (1,000,000) customers changes
//! owner: how long until the new owner is ready, with a warm standby and
//! with an empty store, in one run.
//!
//! A private tansu broker (sqlite, as the other broker benchmarks;
//! `COHORT_TEST_STORAGE=postgres` for the tests' engine) holds one partition
//! per topic. Not librdkafka's mock cluster: it keeps at most 5 MB or 100,000
//! records per partition (`rdkafka_mock.c`), dropping older ones, so it
//! cannot hold a changelog of a million customers.
//!
//! 1. One full profile per customer goes to `customer-profiles`, and worker
//!    A (`restore.standby_replicas = 1`) processes them all: every customer
//!    has a state in A's store and in the changelog.
//! 2. Worker B joins with `standby_replicas = 1`. Whichever of the two owns
//!    the partition, the other follows its changelog into its own store.
//! 3. Warm takeover: the owner gets SIGTERM (it leaves the group) and the
//!    time is taken from then until the follower owns the partition, has
//!    restored it and `/readyz` answers 200. Its log says how many records
//!    that restore read: the ones written since the standby last caught up.
//! 4. Cold takeover: the new owner gets SIGTERM too, and worker C, with an
//!    empty store and no standby, joins and restores the whole partition;
//!    timed from C's start to the same readiness.
//!
//! Each takeover's time is split in two: from the SIGTERM (or the new
//! worker's start) until the worker reports the partition assigned, which
//! is the group protocol's and the broker's part, and from then until it is
//! ready, which is the worker's. The workers run with
//! `heartbeat.interval.ms = 500` (librdkafka's default is 3000): a member
//! learns of a rebalance at its next heartbeat. The session time-out stays
//! at its default (45 s): a busy tansu answering heartbeats late must not
//! expire a live member.
//!
//! Prints the times and the restore lines of each takeover. Nothing is
//! asserted about speed; it fails if a worker exits or a step takes longer
//! than `TAKEOVER_DEADLINE_SECS` (900).
//!
//! `cargo bench -p cohort --bench takeover` (part of `make bench`); under
//! `cargo test --benches` it runs with 5,000 customers, and
//! `cargo test --release --workspace --bench takeover -- --bench` runs the
//! full one with the release build.

mod common;

use anyhow::{bail, Context as _};
use cohort_codec::{Encoder, Format, Registry};
use cohort_core::event::{ConsentUpdate, Event, EventKind, ProfileUpdate};
use cohort_core::time::Timestamp;
use cohort_e2e::{create_topic, Storage, Tansu};
use cohort_kafka::{OutputProducer, OutputRecord};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPICS: [&str; 8] = [
    "clickstream",
    "purchases",
    "customer-profiles",
    "offer-outcomes",
    "segment-changes",
    "next-best-offers",
    "cohort-dlq",
    "cohort-changelog",
];
const COUNTRIES: [&str; 6] = ["DE", "FR", "GB", "US", "ES", "IT"];
const TIERS: [&str; 3] = ["bronze", "silver", "gold"];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("takeover: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let quick = !std::env::args().any(|a| a == "--bench");
    let customers = env("TAKEOVER_CUSTOMERS", if quick { 5_000 } else { 1_000_000 });
    let deadline = Duration::from_secs(env("TAKEOVER_DEADLINE_SECS", 900));
    let cohort = env!("CARGO_BIN_EXE_cohort");
    let storage = Storage::from_env_or(Storage::Sqlite)?;
    let broker = Tansu::start_with(storage).context("starting tansu (make test's setup installs it)")?;
    let bootstrap = broker.bootstrap();
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        for t in TOPICS {
            create_topic(&bootstrap, t, 1).await?;
        }
        anyhow::Ok(())
    })?;
    let dir = tempfile::Builder::new().prefix("cohort-takeover-").tempdir()?;

    let loaded = Instant::now();
    produce_profiles(&bootstrap, customers)?;
    println!(
        "takeover: {customers} customer profiles (JSON, 1 partition) produced to tansu ({}) in {:.1?}",
        storage.name(),
        loaded.elapsed()
    );

    let started = Instant::now();
    let mut a = Worker::start(cohort, dir.path(), &bootstrap, "a", 1)?;
    a.wait_for(deadline, "processing every profile", |m| {
        input_records(m) >= customers as f64 && sample(m, "cohort_consumer_restoring_partitions") == Some(0.0)
    })?;
    let cpu = common::cpu_secs(a.child.id());
    println!(
        "takeover: worker a processed {customers} profiles in {:.1?} ({:.0} events/s, {:.1} µs of CPU each)",
        started.elapsed(),
        customers as f64 / started.elapsed().as_secs_f64(),
        cpu * 1e6 / customers as f64
    );

    let joined = Instant::now();
    let b = Worker::start(cohort, dir.path(), &bootstrap, "b", 1)?;
    let (mut owner, mut follower) = settle(a, b, deadline)?;
    println!(
        "takeover: {} owns the partition, {} follows it as a standby ({:.1?} after b joined; {} standby records)",
        owner.name,
        follower.name,
        joined.elapsed(),
        standby_records(&follower.metrics())
    );

    // Warm takeover.
    let lines_before = follower.restore_lines();
    let t0 = Instant::now();
    owner.terminate();
    let assigned = follower.wait_assigned(deadline)?;
    follower.wait_for(deadline, "taking the partition over", ready_owner)?;
    let warm = t0.elapsed();
    let (warm_rebalance, warm_ready) = (assigned - t0, warm - (assigned - t0));
    let warm_line = follower.restore_line_after(lines_before);
    println!(
        "takeover: warm standby {} assigned {:.2?} after the owner's SIGTERM, ready {:.2?} after that \
         ({warm:.2?} in all); {warm_line}",
        follower.name, warm_rebalance, warm_ready,
    );

    // Cold takeover: an empty store, nothing followed.
    follower.terminate();
    let t0 = Instant::now();
    let mut c = Worker::start(cohort, dir.path(), &bootstrap, "c", 0)?;
    let c_assigned = c.wait_assigned(deadline)?;
    c.wait_for(deadline, "restoring the whole partition", ready_owner)?;
    let cold = t0.elapsed();
    let (cold_rebalance, cold_ready) = (c_assigned - t0, cold - (c_assigned - t0));
    let cold_line = c.restore_line_after(0);
    println!(
        "takeover: empty store c assigned {:.2?} after its start, ready {:.2?} after that ({cold:.2?} in all); \
         {cold_line}",
        cold_rebalance, cold_ready
    );
    println!(
        "takeover: a partition of {customers} customers, from assignment to ready: warm standby {:.2} s, empty \
         store {:.2} s (ratio {:.1}); the group's rebalance before that: {:.2} s and {:.2} s (tansu, \
         heartbeat.interval.ms = 500)",
        warm_ready.as_secs_f64(),
        cold_ready.as_secs_f64(),
        cold_ready.as_secs_f64() / warm_ready.as_secs_f64().max(1e-3),
        warm_rebalance.as_secs_f64(),
        cold_rebalance.as_secs_f64(),
    );
    c.terminate();
    drop(broker);
    Ok(())
}

/// One full profile per customer, `c-0000001` ..., a day ago.
fn produce_profiles(bootstrap: &str, customers: u64) -> anyhow::Result<()> {
    let encoder = Encoder::new(Format::Json, Arc::new(Registry::builtin()));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let time = Timestamp(now - 86_400_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let producer = OutputProducer::new(bootstrap, &Default::default())?;
        // Sent 10,000 at a time, each lot acknowledged before the next.
        let mut lot = Vec::with_capacity(10_000);
        for i in 0..customers {
            let customer = format!("c-{:07}", i + 1);
            let profile = ProfileUpdate {
                age: Some(18 + (i % 60) as u32),
                gender: Some(if i % 2 == 0 { "f" } else { "m" }.to_string()),
                income_band: Some(["low", "middle", "high"][(i % 3) as usize].to_string()),
                country: Some(COUNTRIES[(i % 6) as usize].to_string()),
                city: Some(format!("city-{}", i % 500)),
                interests: Some(vec!["running".to_string(), "books".to_string()]),
                consent: ConsentUpdate { email: Some(true), sms: Some(i % 3 == 0), push: Some(true), web: Some(true) },
                loyalty_tier: Some(TIERS[(i % 3) as usize].to_string()),
                ..ProfileUpdate::default()
            };
            let ev = Event {
                id: format!("profile-{i}"),
                customer: customer.clone(),
                time,
                kind: EventKind::ProfileUpdate(profile),
            };
            let rec = OutputRecord {
                topic: "customer-profiles".into(),
                key: Some(customer.into_bytes()),
                value: encoder.encode_event(&ev)?,
                headers: Vec::new(),
                timestamp: Some(time.as_millis()),
                partition: None,
            };
            lot.push(rec);
            if lot.len() == lot.capacity() {
                producer.send_all(&lot).await?;
                lot.clear();
            }
        }
        producer.send_all(&lot).await?;
        anyhow::Ok(())
    })
}

/// Waits until one worker owns the restored partition and the other follows
/// it with a standby that has had nothing to apply and read nothing for
/// three seconds (three standby rounds): it is caught up.
fn settle(a: Worker, b: Worker, deadline: Duration) -> anyhow::Result<(Worker, Worker)> {
    let until = Instant::now() + deadline;
    let mut stable_since: Option<(Instant, f64)> = None;
    loop {
        let (ma, mb) = (a.metrics(), b.metrics());
        let pair = if ready_owner(&ma) && follows(&mb) {
            Some((&mb, 1))
        } else if ready_owner(&mb) && follows(&ma) {
            Some((&ma, 0))
        } else {
            None
        };
        match pair {
            // Mid-round the count moves only once per chunk: a round is
            // over when nothing remains to apply, too.
            Some((m, _)) if sample(m, "cohort_restore_remaining_records") != Some(0.0) => stable_since = None,
            Some((m, follower)) => {
                let read = standby_records(m);
                match stable_since {
                    Some((since, n)) if n == read && since.elapsed() >= Duration::from_secs(3) => {
                        return Ok(if follower == 1 { (a, b) } else { (b, a) });
                    }
                    Some((_, n)) if n == read => {}
                    _ => stable_since = Some((Instant::now(), read)),
                }
            }
            None => stable_since = None,
        }
        for w in [&a, &b] {
            w.assert_running()?;
        }
        if Instant::now() > until {
            bail!("no owner and caught-up standby within {deadline:?}; a:\n{}\nb:\n{}", a.tail(), b.tail());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready_owner(m: &str) -> bool {
    sample(m, "cohort_consumer_assigned_partitions") == Some(1.0)
        && sample(m, "cohort_consumer_restoring_partitions") == Some(0.0)
}

fn follows(m: &str) -> bool {
    sample(m, "cohort_consumer_assigned_partitions") == Some(0.0) && sample(m, "cohort_standby_partitions") == Some(1.0)
}

fn standby_records(m: &str) -> f64 {
    sample(m, "cohort_restore_records_total{kind=\"standby\"}").unwrap_or(0.0)
}

fn input_records(m: &str) -> f64 {
    sample(m, "cohort_input_records_total{topic=\"customer-profiles\"}").unwrap_or(0.0)
}

/// A `cohort run` process with a store and a log of its own.
struct Worker {
    name: &'static str,
    child: Child,
    http: String,
    log: PathBuf,
}

impl Worker {
    fn start(cohort: &str, dir: &Path, bootstrap: &str, name: &'static str, standbys: u32) -> anyhow::Result<Worker> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"cohort-takeover\"\n\n\
             [kafka.consumer_properties]\n\"heartbeat.interval.ms\" = \"500\"\n\n\
             [rules]\npath = \"{rules}\"\n\n[store]\npath = \"{store}\"\n\n\
             [restore]\nstandby_replicas = {standbys}\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\n[log]\nlevel = \"info,librdkafka=warn\"\nformat = \"json\"\n",
            rules = root.join("deploy/rules.yaml").display(),
            store = dir.join(format!("store-{name}")).display(),
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text)?;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(cohort)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting cohort run")?;
        Ok(Worker { name, child, http: format!("127.0.0.1:{port}"), log })
    }

    fn metrics(&self) -> String {
        get(&self.http, "/metrics").unwrap_or_default()
    }

    fn assert_running(&self) -> anyhow::Result<()> {
        let status = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let state = status.rfind(')').and_then(|i| status[i + 1..].split_whitespace().next()).unwrap_or("X");
        if state == "Z" || state == "X" {
            bail!("worker {} exited; its log:\n{}", self.name, self.tail());
        }
        Ok(())
    }

    fn wait_for(&mut self, deadline: Duration, what: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let m = self.metrics();
            if done(&m) && get_status(&self.http, "/readyz") == Some(200) {
                return Ok(());
            }
            if let Some(s) = self.child.try_wait()? {
                bail!("worker {} exited with {s} while {what}; its log:\n{}", self.name, self.tail());
            }
            if Instant::now() > until {
                bail!("worker {} not done {what} within {deadline:?}; its log:\n{}", self.name, self.tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// When the worker first reports owning the partition (restored or not).
    fn wait_assigned(&mut self, deadline: Duration) -> anyhow::Result<Instant> {
        let until = Instant::now() + deadline;
        loop {
            if sample(&self.metrics(), "cohort_consumer_assigned_partitions") == Some(1.0) {
                return Ok(Instant::now());
            }
            if let Some(s) = self.child.try_wait()? {
                bail!("worker {} exited with {s} before its assignment; its log:\n{}", self.name, self.tail());
            }
            if Instant::now() > until {
                bail!("worker {} not assigned within {deadline:?}; its log:\n{}", self.name, self.tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its log's "partition restored" lines so far.
    fn restore_lines(&self) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains("partition restored from the changelog")).count()
    }

    /// The fields of the first "partition restored" line of its log after
    /// the first `skip`.
    fn restore_line_after(&self, skip: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let Some(line) = text.lines().filter(|l| l.contains("partition restored from the changelog")).nth(skip) else {
            return "nothing to restore (its store held the changelog's last metadata record)".to_string();
        };
        let field = |name: &str| -> String {
            let Some(at) = line.find(&format!("\"{name}\":")) else { return "?".into() };
            line[at + name.len() + 3..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '"').collect()
        };
        format!(
            "its restore ({}) read {} records in {} ms",
            field("kind").trim_matches('"'),
            field("records"),
            field("took_ms")
        )
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then wait: a clean leave.
    fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    Some(raw)
}

fn get(addr: &str, path: &str) -> Option<String> {
    Some(request(addr, path)?.split_once("\r\n\r\n")?.1.to_string())
}

fn get_status(addr: &str, path: &str) -> Option<u16> {
    request(addr, path)?.split_whitespace().nth(1)?.parse().ok()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}
