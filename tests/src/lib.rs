//! The harness that cohort's end-to-end tests share.
//!
//! Every end-to-end test talks to a real Kafka-protocol broker on loopback:
//!
//! - `make test` starts one tansu broker (see `scripts/with-broker.sh`) and
//!   exports its address as [`BROKER_ENV`]; [`TestBroker::shared`] uses it.
//! - Without that variable, a test starts its own tansu process when the
//!   `tansu` binary is on PATH (or named by [`TANSU_BIN_ENV`]), and otherwise
//!   fails with a message that says to run `make test`. It never skips.
//! - Tests that stop and restart the broker start a private one with
//!   [`Tansu::start`].
//!
//! tansu keeps its data in PostgreSQL by default: a private cluster on
//! 127.0.0.1 (`scripts/pg.sh`, started here when it does not run yet), one
//! database per broker, copied from a template that holds tansu's schema, so
//! brokers never share state and a restarted broker finds its own data.
//! `COHORT_TEST_STORAGE=sqlite` ([`STORAGE_ENV`]) selects tansu's sqlite
//! engine instead (a file in the broker's directory), which tansu 0.6.0 can
//! fail to restart on after a long run (`idempotent_message_check: more or
//! less than one row`).
//!
//! Every test names its own topics with [`unique_name`] so tests run in
//! parallel against one broker. Waiting is done by polling until a condition
//! holds or a deadline passes ([`consume_until`]), never by fixed sleeps.
//!
//! tansu 0.6.0 does not auto-create topics, so tests create them explicitly
//! with [`TestBroker::create_topic`].

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The address (`host:port`) of the broker that `make test` started.
pub const BROKER_ENV: &str = "COHORT_TEST_BROKER";
/// Path to the tansu binary, when it is not on PATH as `tansu`.
pub const TANSU_BIN_ENV: &str = "TANSU_BIN";
/// The storage a tansu broker started here uses: `postgres` (the default)
/// or `sqlite`. `scripts/with-broker.sh` reads it too.
pub const STORAGE_ENV: &str = "COHORT_TEST_STORAGE";

/// tansu's storage engine for a broker started here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A database of its own in the private PostgreSQL cluster of
    /// `scripts/pg.sh`; survives restarts on its own data.
    Postgres,
    /// A sqlite file in the broker's directory, its header table indexed.
    Sqlite,
}

impl Storage {
    /// [`STORAGE_ENV`], or postgres when it is unset or empty.
    pub fn from_env() -> Result<Storage> {
        Self::from_env_or(Storage::Postgres)
    }

    /// [`STORAGE_ENV`], or `default` when it is unset or empty (the
    /// benchmarks default to sqlite, on which their published figures were
    /// measured).
    pub fn from_env_or(default: Storage) -> Result<Storage> {
        match std::env::var(STORAGE_ENV).unwrap_or_default().trim() {
            "" => Ok(default),
            "postgres" => Ok(Storage::Postgres),
            "sqlite" => Ok(Storage::Sqlite),
            other => bail!("{STORAGE_ENV}={other:?}: expected postgres or sqlite"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Storage::Postgres => "postgres",
            Storage::Sqlite => "sqlite",
        }
    }
}

/// A broker the tests can reach: the shared one from `make test`, or a
/// private tansu process owned by this value.
pub struct TestBroker {
    bootstrap: String,
    own: Option<Tansu>,
}

impl TestBroker {
    /// The broker `make test` started, or a private tansu when run outside
    /// `make test` with tansu installed. Panics with instructions otherwise.
    pub fn shared() -> TestBroker {
        if let Ok(addr) = std::env::var(BROKER_ENV) {
            if !addr.trim().is_empty() {
                return TestBroker { bootstrap: addr, own: None };
            }
        }
        match Tansu::start() {
            Ok(t) => TestBroker { bootstrap: t.bootstrap(), own: Some(t) },
            Err(e) => panic!(
                "no test broker: {BROKER_ENV} is unset and tansu could not be started ({e:#}).\n\
                 Run the end-to-end tests with `make test`, which installs and starts tansu."
            ),
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The private broker process, when this value owns one.
    pub fn process(&mut self) -> Option<&mut Tansu> {
        self.own.as_mut()
    }

    /// Creates a topic and waits until its partitions have leaders.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        create_topic(&self.bootstrap, name, partitions).await
    }
}

/// A tansu broker process with storage of its own (see [`Storage`]) and a
/// directory for its log (and its sqlite file). Dropping it kills the
/// process, removes the directory and drops its database.
pub struct Tansu {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    storage: Storage,
    /// The `--storage-engine` URL.
    url: String,
    /// The PostgreSQL database this broker owns, dropped with it.
    database: Option<String>,
}

impl Tansu {
    /// Starts a new broker with the storage [`STORAGE_ENV`] names (postgres
    /// by default) on a free loopback port, and waits until it answers.
    pub fn start() -> Result<Tansu> {
        Self::start_with(Storage::from_env()?)
    }

    /// Starts a new broker with `storage` on a free loopback port.
    pub fn start_with(storage: Storage) -> Result<Tansu> {
        let bin = tansu_bin()?;
        let dir = tempfile::Builder::new().prefix("cohort-tansu-").tempdir()?;
        let port = free_port()?;
        let (url, database) = match storage {
            // tansu resolves the sqlite path relative to its working directory.
            Storage::Sqlite => ("sqlite://tansu.db".to_string(), None),
            Storage::Postgres => {
                let name = pg::new_database_name();
                (pg::create_database(&name)?, Some(name))
            }
        };
        let mut t = Tansu { bin, port, dir, child: None, storage, url, database };
        t.spawn()?;
        Ok(t)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's directory: its log, and its sqlite file with [`Storage::Sqlite`].
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the broker with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("killing tansu")?;
            c.wait().context("waiting for tansu")?;
        }
        Ok(())
    }

    /// Freezes the broker with SIGSTOP: its sockets stay open and nothing
    /// is answered, as with a broker stuck in a long GC pause or a host
    /// that stopped scheduling it.
    pub fn pause(&mut self) -> Result<()> {
        self.signal("STOP")
    }

    /// Thaws a broker frozen by [`Tansu::pause`] (SIGCONT).
    pub fn resume(&mut self) -> Result<()> {
        self.signal("CONT")
    }

    fn signal(&mut self, name: &str) -> Result<()> {
        let c = self.child.as_ref().ok_or_else(|| anyhow!("tansu is not running"))?;
        let status = Command::new("kill").arg(format!("-{name}")).arg(c.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -{name} {} failed: {status}", c.id());
        }
        Ok(())
    }

    /// Starts the broker again on the same port and the same storage (its
    /// database, or its sqlite file).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("broker.log"))?;
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &self.url])
            // tansu reads these when set; the tests' broker never exports
            // telemetry anywhere, nor takes its settings from the caller.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("CLUSTER_ID")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return match self.storage {
                    Storage::Sqlite => index_headers(self.dir.path()),
                    // The header table's primary key (topition, offset_id, k)
                    // serves tansu's per-record header lookup on postgres.
                    Storage::Postgres => Ok(()),
                };
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "tansu ({}) exited at start with {status} (a binary without the {} engine? \
                         scripts/setup.sh builds one with both); log: {}",
                        self.bin.display(),
                        self.storage.name(),
                        self.log_tail()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("tansu did not listen on port {} within 30s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.kill();
        if let Some(db) = self.database.take() {
            // Best effort: `scripts/pg.sh start` drops what a killed run left.
            if let Err(e) = pg::drop_database(&db) {
                eprintln!("tansu harness: dropping database {db}: {e:#}");
            }
        }
    }
}

/// The private PostgreSQL cluster behind [`Storage::Postgres`], through
/// `scripts/pg.sh` (which `scripts/with-broker.sh` uses too).
mod pg {
    use anyhow::{anyhow, bail, Context, Result};
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh")
    }

    /// Runs `scripts/pg.sh ARGS`; its stdout, or its stderr as the error.
    fn run(args: &[&str]) -> Result<String> {
        let out = Command::new(script())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script().display()))?;
        if !out.status.success() {
            bail!(
                "scripts/pg.sh {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts the cluster once per process (reused when it already runs).
    fn started() -> Result<()> {
        static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
        STARTED
            .get_or_init(|| run(&["start"]).map(|_| ()).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!("{e}\n(scripts/setup.sh installs PostgreSQL; COHORT_TEST_STORAGE=sqlite avoids it)"))
    }

    /// `cohort_t_<pid>_<n>`: `scripts/pg.sh start` drops it once this
    /// process is gone, should the broker's drop not have run.
    pub fn new_database_name() -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        format!("cohort_t_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
    }

    /// Creates database `name` from the tansu template; its storage URL.
    pub fn create_database(name: &str) -> Result<String> {
        started()?;
        run(&["create", name])
    }

    pub fn drop_database(name: &str) -> Result<()> {
        run(&["drop", name]).map(|_| ())
    }
}

fn tansu_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var(TANSU_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("tansu");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    // Where scripts/setup.sh installs it.
    let root = match (std::env::var_os("TANSU_ROOT"), std::env::var_os("COHORT_CACHE")) {
        (Some(root), _) => PathBuf::from(root),
        (None, Some(cache)) => PathBuf::from(cache).join("tansu"),
        (None, None) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/cohort/tansu"),
    };
    let cached = root.join("bin/tansu");
    if cached.is_file() {
        return Ok(cached);
    }
    Err(anyhow!("tansu is not on PATH and {TANSU_BIN_ENV} is unset; run `make test`"))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed), nanos % 1_000_000_000)
}

/// Base client configuration for a broker on loopback.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        // tansu advertises 127.0.0.1; IPv4 avoids a resolver round trip.
        .set("broker.address.family", "v4");
    c
}

/// [`client_config`] for a consumer (or a probe that reads offsets).
///
/// It reads uncommitted: tansu 0.6.0 answers ListOffsets(latest) under
/// read_committed, librdkafka's default, with a query that PostgreSQL
/// before 16 rejects ("subquery in FROM must have an alias"), and Debian 12
/// ships PostgreSQL 15; so every end-offset query (`fetch_watermarks`)
/// failed on the postgres engine. No test produces transactionally, so
/// both levels read the same records.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("isolation.level", "read_uncommitted");
    c
}

/// Creates a topic with the admin API and waits until its metadata shows all
/// partitions. A topic whose name ends in `changelog` is created compacted
/// (`cleanup.policy=compact`), as cohort requires of its changelog.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    if name.ends_with("changelog") {
        topic = topic.set("cleanup.policy", "compact");
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &opts).await.context("create_topics")?;
    for r in results {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("creating topic {t}: {code}");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = admin.inner().fetch_metadata(Some(name), Timeout::After(Duration::from_secs(5)));
        if let Ok(md) = md {
            if let Some(t) = md.topics().iter().find(|t| t.name() == name) {
                if t.error().is_none() && t.partitions().len() == partitions as usize {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("topic {name} did not show {partitions} partitions within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An idempotent producer (acks=all) that retries through broker restarts
/// for up to `delivery_timeout`.
pub fn producer(bootstrap: &str, delivery_timeout: Duration) -> Result<FutureProducer> {
    Ok(client_config(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
        .create()?)
}

/// Produces keyed records and waits until every one is acknowledged.
pub async fn produce_keyed<K, V>(bootstrap: &str, topic: &str, records: impl IntoIterator<Item = (K, V)>) -> Result<()>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let p = producer(bootstrap, Duration::from_secs(60))?;
    send_all(&p, topic, records).await
}

/// Sends records through `p` and awaits all acknowledgements.
pub async fn send_all<K, V>(p: &FutureProducer, topic: &str, records: impl IntoIterator<Item = (K, V)>) -> Result<()>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut pending = Vec::new();
    for (k, v) in records {
        let rec = FutureRecord::to(topic).key(k.as_ref()).payload(v.as_ref());
        let fut = p.send_result(rec).map_err(|(e, _)| anyhow!("enqueueing to {topic}: {e}"))?;
        pending.push(fut);
        if pending.len() >= 10_000 {
            for f in pending.drain(..) {
                f.await?.map_err(|(e, _)| anyhow!("delivery to {topic}: {e}"))?;
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| anyhow!("delivery to {topic}: {e}"))?;
    }
    Ok(())
}

/// One consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn key_str(&self) -> &str {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).unwrap_or("")
    }
    pub fn value_str(&self) -> &str {
        self.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
}

/// A consumer in `group`, reading `topics` from the earliest offset.
pub fn consumer(bootstrap: &str, group: &str, topics: &[&str]) -> Result<StreamConsumer> {
    let c: StreamConsumer = consumer_config(bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("session.timeout.ms", "10000")
        .create()?;
    c.subscribe(topics)?;
    Ok(c)
}

/// Reads from `consumer` until `done(records so far)` holds, failing when
/// `deadline` passes first. Returns every record read.
pub async fn consume_with<F>(consumer: &StreamConsumer, deadline: Duration, mut done: F) -> Result<Vec<Record>>
where
    F: FnMut(&[Record]) -> bool,
{
    let until = Instant::now() + deadline;
    let mut out = Vec::new();
    while !done(&out) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("deadline of {deadline:?} passed after {} records", out.len());
        }
        match tokio::time::timeout(left.min(Duration::from_secs(1)), consumer.recv()).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                // Transient errors (a broker restarting) are retried until the deadline.
                eprintln!("consume_with: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Ok(m)) => out.push(owned(&m)),
        }
    }
    Ok(out)
}

/// Subscribes a fresh consumer group to `topics` and reads until `done`
/// holds or `deadline` passes.
pub async fn consume_until<F>(bootstrap: &str, topics: &[&str], deadline: Duration, done: F) -> Result<Vec<Record>>
where
    F: FnMut(&[Record]) -> bool,
{
    let group = unique_name("consume-until");
    let c = consumer(bootstrap, &group, topics)?;
    consume_with(&c, deadline, done).await
}

fn owned<M: Message>(m: &M) -> Record {
    let headers = m
        .headers()
        .map(|h| h.iter().map(|hd| (hd.key.to_string(), hd.value.map(|v| v.to_vec()).unwrap_or_default())).collect())
        .unwrap_or_default();
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().map(|v| v.to_vec()),
        headers,
    }
}

/// Reads every record currently in `topic`: consumes until each partition's
/// position reaches the high watermark it had when this was called.
pub async fn consume_to_end(bootstrap: &str, topic: &str, deadline: Duration) -> Result<Vec<Record>> {
    use rdkafka::consumer::BaseConsumer;
    let probe: BaseConsumer = consumer_config(bootstrap).create()?;
    let md = probe.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10)))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut ends = std::collections::HashMap::new();
    for p in partitions {
        let (_, high) = probe.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
    }
    let total: i64 = ends.values().sum();
    if total == 0 {
        return Ok(Vec::new());
    }
    consume_until(bootstrap, &[topic], deadline, |r| {
        let mut last: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
        for rec in r {
            let e = last.entry(rec.partition).or_insert(-1);
            *e = (*e).max(rec.offset);
        }
        ends.iter().all(|(p, high)| *high == 0 || last.get(p).is_some_and(|o| *o + 1 >= *high))
    })
    .await
}

/// tansu 0.6.0 scans its whole header table for every record a fetch serves,
/// and every cohort output carries headers: without an index a test broker
/// slows down as tests write to it until fetches time out (seen: a worker fed
/// 150 events/s stalled within 3 minutes). Required, as in
/// scripts/with-broker.sh: a broker that cannot be indexed is an error, not
/// a slower broker.
fn index_headers(dir: &Path) -> Result<()> {
    let db = dir.join("tansu.db");
    let sql = "create index if not exists cohort_test_header on header (topition, offset_id); \
               select count(*) from sqlite_master where type = 'index' and name = 'cohort_test_header';";
    // tansu creates its tables as it starts; retry until the index exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match Command::new("sqlite3").arg(&db).arg(sql).stdin(Stdio::null()).output() {
            Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "1" => return Ok(()),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => bail!("running sqlite3 to index tansu's header table: {e} (scripts/setup.sh installs it)"),
        };
        if Instant::now() > deadline {
            bail!("could not index tansu's header table in {}: {last}", db.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
