//! What the worker's end-to-end tests share: topics with a unique prefix on
//! a real broker, a config file, the `cohort` binary as a child process, and
//! typed events encoded by the codec exactly as a producer would send them.

#![allow(dead_code)]

use cohort_codec::{Encoder, Format, Registry};
use cohort_core::event::{Event, EventKind};
use cohort_e2e::{consume_until, create_topic, unique_name, Record};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A record to produce: key and value (`None`: a tombstone).
pub type RawRecord = (Vec<u8>, Option<Vec<u8>>);

/// The header [`Deployment::produce_raw`] puts on every record, as a
/// producer's tracing header would be: dead letters must carry it on.
pub const RAW_HEADER: (&str, &[u8]) = ("x-trace", b"raw-1");

pub const INPUTS: [&str; 4] = ["clickstream", "purchases", "customer-profiles", "offer-outcomes"];
pub const OUTPUTS: [&str; 4] = ["segment-changes", "next-best-offers", "cohort-dlq", "cohort-changelog"];

/// One isolated deployment: its own topics, consumer group, store and rules.
pub struct Deployment {
    pub bootstrap: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub partitions: i32,
    encoder: Encoder,
}

impl Deployment {
    /// Creates the topics (inputs with `partitions` partitions) and writes a
    /// config; `extra` is appended to the `[processing]` section.
    pub async fn new(bootstrap: &str, partitions: i32, rules: &str, extra_processing: &str) -> Deployment {
        Self::with_format(bootstrap, partitions, rules, extra_processing, Format::Json).await
    }

    /// Like [`Deployment::new`] with inputs in `format`. Confluent Avro uses
    /// schema ids 1 to 4 for the click, purchase, profile and outcome schemas.
    pub async fn with_format(
        bootstrap: &str,
        partitions: i32,
        rules: &str,
        extra_processing: &str,
        format: Format,
    ) -> Deployment {
        let prefix = unique_name("e2e");
        for t in INPUTS.iter().chain(OUTPUTS.iter()) {
            create_topic(bootstrap, &format!("{prefix}-{t}"), partitions).await.expect("create topic");
        }
        Self::configured(bootstrap, prefix, partitions, rules, extra_processing, format)
    }

    /// Like [`Deployment::new`] on librdkafka's mock cluster (JSON inputs),
    /// which has no CreateTopics: the topics are created through its API.
    pub fn on_mock_cluster<C: ClientContext>(
        cluster: &MockCluster<'_, C>,
        partitions: i32,
        rules: &str,
        extra_processing: &str,
    ) -> Deployment {
        let prefix = unique_name("e2e");
        for t in INPUTS.iter().chain(OUTPUTS.iter()) {
            cluster.create_topic(&format!("{prefix}-{t}"), partitions, 1).expect("create a topic on the mock cluster");
        }
        Self::configured(&cluster.bootstrap_servers(), prefix, partitions, rules, extra_processing, Format::Json)
    }

    /// Writes the config and rules of a deployment whose topics exist.
    fn configured(
        bootstrap: &str,
        prefix: String,
        partitions: i32,
        rules: &str,
        extra_processing: &str,
        format: Format,
    ) -> Deployment {
        let dir = tempfile::Builder::new().prefix("cohort-e2e-").tempdir().expect("tempdir");
        std::fs::write(dir.path().join("rules.yaml"), rules).expect("write rules");
        let config = dir.path().join("cohort.toml");
        let text = format!(
            r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{prefix}-group"

[kafka.consumer_properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[topics]
clickstream = "{prefix}-clickstream"
purchases = "{prefix}-purchases"
profiles = "{prefix}-customer-profiles"
offer_outcomes = "{prefix}-offer-outcomes"
segment_changes = "{prefix}-segment-changes"
next_best_offers = "{prefix}-next-best-offers"
dlq = "{prefix}-cohort-dlq"
changelog = "{prefix}-cohort-changelog"

[rules]
path = "{rules}"

[store]
path = "{store}"

[http]
listen = "127.0.0.1:0"

[log]
level = "info,librdkafka=warn"

{format_section}

[processing]
live_clock = false
batch_max_records = 200
batch_max_wait = "50ms"
allowed_lateness = "1m"
{extra_processing}
"#,
            format_section = format_section(format),
            rules = dir.path().join("rules.yaml").display(),
            store = dir.path().join("store").display(),
        );
        std::fs::write(&config, text).expect("write config");
        let encoder = Encoder::new(format, Arc::new(registry(format)));
        Deployment { bootstrap: bootstrap.to_string(), prefix, dir, config, partitions, encoder }
    }

    /// The records of input topic `short` the worker at `http` has processed
    /// and committed, from its /metrics (counted once their batch is
    /// committed to the store); `None` when /metrics does not answer.
    pub fn records_committed(&self, http: &str, short: &str) -> Option<f64> {
        let text = http_get(http, "/metrics")?;
        Some(sample(&text, &format!("cohort_input_records_total{{topic=\"{}\"}}", self.topic(short))).unwrap_or(0.0))
    }

    /// Adds a librdkafka consumer property to this deployment's config.
    pub fn set_consumer_property(&self, key: &str, value: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let section = "[kafka.consumer_properties]\n";
        assert!(text.contains(section), "the config has a consumer properties section");
        let text = text.replacen(section, &format!("{section}{key:?} = {value:?}\n"), 1);
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn topic(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// The input topic an event belongs on.
    pub fn topic_of(&self, ev: &Event) -> String {
        self.topic(match ev.kind {
            EventKind::Click(_) => "clickstream",
            EventKind::Purchase(_) => "purchases",
            EventKind::ProfileUpdate(_) | EventKind::Forget => "customer-profiles",
            EventKind::OfferOutcome(_) => "offer-outcomes",
        })
    }

    /// The JSON bytes a producer would send for `ev` (`None`: a forget, a null value).
    pub fn encode(&self, ev: &Event) -> Option<Vec<u8>> {
        self.encoder.encode_event(ev).expect("encode event")
    }

    /// Produces events, keyed by customer, each to its topic, in order.
    pub async fn produce(&self, events: &[Event]) {
        let mut by_topic: BTreeMap<String, Vec<RawRecord>> = BTreeMap::new();
        for ev in events {
            by_topic.entry(self.topic_of(ev)).or_default().push((ev.customer.clone().into_bytes(), self.encode(ev)));
        }
        for (topic, recs) in by_topic {
            self.produce_raw(&topic, recs).await;
        }
    }

    /// Produces raw records (`None` value: a tombstone).
    pub async fn produce_raw(&self, topic: &str, records: Vec<RawRecord>) {
        let p = cohort_kafka::OutputProducer::new(&self.bootstrap, &BTreeMap::new()).expect("producer");
        let recs: Vec<cohort_kafka::OutputRecord> = records
            .into_iter()
            .map(|(k, v)| cohort_kafka::OutputRecord {
                topic: topic.into(),
                key: Some(k),
                value: v,
                headers: vec![(RAW_HEADER.0.into(), RAW_HEADER.1.to_vec().into())],
                timestamp: None,
                partition: None,
            })
            .collect();
        p.send_all(&recs).await.expect("produce");
    }

    /// Starts `cohort run` on this deployment's config.
    pub fn start_worker(&self, name: &str) -> WorkerProcess {
        WorkerProcess::start(&self.config, &self.dir.path().join(format!("{name}.log")))
    }

    /// Another member of this deployment's group: the same config with a
    /// store of its own, as a second machine would have.
    pub fn start_member(&self, name: &str) -> WorkerProcess {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let store = self.dir.path().join("store");
        let own = self.dir.path().join(format!("store-{name}"));
        let text = text.replace(&format!("path = \"{}\"", store.display()), &format!("path = \"{}\"", own.display()));
        assert!(text.contains(&own.display().to_string()), "the config names its store path");
        let config = self.dir.path().join(format!("cohort-{name}.toml"));
        std::fs::write(&config, text).expect("write config");
        WorkerProcess::start(&config, &self.dir.path().join(format!("{name}.log")))
    }

    /// Reads `short` topic from the beginning until `done` holds.
    pub async fn read(&self, short: &str, deadline: Duration, done: impl FnMut(&[Record]) -> bool) -> Vec<Record> {
        consume_until(&self.bootstrap, &[&self.topic(short)], deadline, done)
            .await
            .unwrap_or_else(|e| panic!("reading {short}: {e:#}"))
    }

    /// Every record currently in `short` topic.
    pub async fn read_all(&self, short: &str) -> Vec<Record> {
        cohort_e2e::consume_to_end(&self.bootstrap, &self.topic(short), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("reading {short}: {e:#}"))
    }

    /// Waits until the worker's group has committed every input partition to
    /// its end: everything produced so far is processed and committed (Kafka
    /// commits follow the store commit).
    pub async fn wait_caught_up(&self, deadline: Duration, worker: &mut WorkerProcess) {
        let until = Instant::now() + deadline;
        let probe: BaseConsumer = cohort_e2e::consumer_config(&self.bootstrap)
            .set("group.id", format!("{}-group", self.prefix))
            .create()
            .expect("probe consumer");
        loop {
            worker.assert_running();
            let mut behind = 0i64;
            let mut tpl = TopicPartitionList::new();
            for t in INPUTS {
                for p in 0..self.partitions {
                    tpl.add_partition(&self.topic(t), p);
                }
            }
            let committed = probe.committed_offsets(tpl, Timeout::After(Duration::from_secs(5)));
            match committed {
                Ok(c) => {
                    // A partition whose end cannot be read (a busy broker
                    // timing out) is not known to be caught up: it used to
                    // count as empty, so a phase could start while the
                    // worker was still reading the previous one.
                    let mut unknown = false;
                    for e in c.elements() {
                        let high = match probe.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5)) {
                            Ok((_, high)) => high,
                            Err(err) => {
                                eprintln!("end of {}/{}: {err}", e.topic(), e.partition());
                                unknown = true;
                                continue;
                            }
                        };
                        let done = match e.offset() {
                            Offset::Offset(o) => o,
                            _ => 0,
                        };
                        behind += (high - done).max(0);
                    }
                    if behind == 0 && !unknown {
                        return;
                    }
                }
                Err(e) => eprintln!("committed offsets: {e}"),
            }
            assert!(
                Instant::now() < until,
                "worker still {behind} records behind after {deadline:?}; its log:\n{}",
                worker.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `cohort run` as a child process. Dropped: killed.
pub struct WorkerProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl WorkerProcess {
    pub fn start(config: &Path, log: &Path) -> WorkerProcess {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start cohort run");
        WorkerProcess { child: Some(child), log: log.to_path_buf() }
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(30)).0
    }

    /// SIGTERM; waits up to `limit` for the exit and says how long it took.
    pub fn terminate_within(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("worker running");
        let sent = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return (s, sent.elapsed());
            }
            if sent.elapsed() > limit {
                let _ = c.kill();
                let _ = c.wait();
                panic!("worker did not stop within {limit:?} of SIGTERM; its log:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("worker exited with {status}; its log:\n{}", self.log_tail());
            }
        }
    }

    /// The address the worker's HTTP server bound (`http.listen` is port 0
    /// in these configs), read from its start-up log line.
    pub fn http_addr(&mut self, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            self.assert_running();
            let text = self.log_text();
            let found = text.lines().filter(|l| l.contains("serving /metrics")).find_map(|l| {
                let rest = &l[l.find("bound=")? + "bound=".len()..];
                let addr: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                addr.contains(':').then_some(addr)
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < until, "worker logged no HTTP address within {deadline:?}:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The whole log, colours stripped.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The log's first lines (a start-up error) and its last ones.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() <= 50 {
            return lines.join("\n");
        }
        format!("{}\n...\n{}", lines[..10].join("\n"), lines[lines.len() - 40..].join("\n"))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `text` without ANSI colour sequences (the human log format may colour fields).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// GET `path` on `addr` with a plain HTTP/1.0 request; the body of a 200 answer.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    http_status(addr, path).and_then(|(code, body)| (code == 200).then_some(body))
}

/// GET `path` on `addr`: the status code and body, whatever the status.
pub fn http_status(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    if !status.starts_with("HTTP/1.") {
        return None;
    }
    let code = status.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// POST `body` to `path` on `addr`: the status code and the answer's body.
pub fn http_post(addr: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, answer) = raw.split_once("\r\n\r\n")?;
    let code = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, answer.to_string()))
}

/// The value of one sample of a Prometheus text exposition, such as
/// `cohort_input_records_total{topic="x"}`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// Output records by their `cohort.id` header; fails if one id carries two
/// different contents (a replay must re-emit identical outputs).
pub fn outputs_by_id(records: &[Record]) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for r in records {
        let id = String::from_utf8(r.header("cohort.id").expect("output id header").to_vec()).expect("utf-8 id");
        let value = r.value.clone().unwrap_or_default();
        if let Some(prev) = m.insert(id.clone(), value.clone()) {
            assert_eq!(prev, value, "output {id} was emitted twice with different contents");
        }
    }
    m
}

/// An output's decision without its id. Output ids derive from the input
/// records' topics (README, "Guarantees"), and each deployment has topics
/// of its own, so two deployments agree on decisions, not on ids.
pub fn decision_key(r: &Record) -> String {
    match r.value.as_deref() {
        None => format!("forgotten {}", r.key_str()),
        Some(v) => {
            let mut json: serde_json::Value = serde_json::from_slice(v).expect("outputs are JSON");
            if let Some(m) = json.as_object_mut() {
                m.remove("id");
            }
            json.to_string()
        }
    }
}

/// One deployment's outputs by decision ([`decision_key`]), each once:
/// fails if one id carries two different contents (a replay must re-emit
/// identical outputs) or two ids the same decision.
pub fn outputs_by_decision(records: &[Record]) -> BTreeMap<String, String> {
    outputs_by_id(records);
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for r in records {
        let id = String::from_utf8(r.header("cohort.id").expect("output id header").to_vec()).expect("utf-8 id");
        if let Some(other) = m.insert(decision_key(r), id.clone()) {
            assert_eq!(other, id, "outputs {other} and {id} are the same decision");
        }
    }
    m
}

/// The last value per key of a (changelog) topic's records.
pub fn latest_per_key(records: &[Record]) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut m = BTreeMap::new();
    for r in records {
        m.insert(r.key_str().to_string(), r.value.clone());
    }
    m
}

/// The schemas directory of this repository.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// Confluent schema ids the tests' producers use.
pub const SCHEMA_IDS: [(u32, &str); 4] = [
    (1, "io.cohort.v1.ClickEvent.avsc"),
    (2, "io.cohort.v1.PurchaseEvent.avsc"),
    (3, "io.cohort.v1.CustomerProfile.avsc"),
    (4, "io.cohort.v1.OfferOutcome.avsc"),
];

fn registry(format: Format) -> Registry {
    match format {
        Format::ConfluentAvro => Registry::load(&schemas_dir(), SCHEMA_IDS).expect("registry"),
        _ => Registry::builtin(),
    }
}

fn format_section(format: Format) -> String {
    match format {
        Format::Json => String::new(),
        Format::Avro => "[format]\ninput = \"avro\"\n".into(),
        Format::ConfluentAvro => {
            let mut s = format!(
                "[format]\ninput = \"confluent-avro\"\nschemas_dir = \"{}\"\n\n[format.schema_ids]\n",
                schemas_dir().display()
            );
            for (id, file) in SCHEMA_IDS {
                s.push_str(&format!("{id} = \"{file}\"\n"));
            }
            s
        }
    }
}

/// Asserts that `other` ends with the same customer states as `reference`:
/// the last changelog record per key, every key compared, the partitions'
/// metadata records (watermark, learned tables, positions, populations;
/// keyed per partition, see `cohort_core::partition::changelog_key`) included. (They once shared one key for
/// all partitions, so the last record was whichever partition wrote last and
/// a disturbed run's "watermark" could be a day behind the reference's.)
///
/// A metadata record names each deployment's own input topics, so those are
/// compared decoded, with the topics' deployment prefix taken off.
pub async fn assert_same_customer_states(reference: &Deployment, other: &Deployment) {
    let want_states = latest_per_key(&reference.read_all("cohort-changelog").await);
    let got_states = latest_per_key(&other.read_all("cohort-changelog").await);
    assert_eq!(got_states.len(), want_states.len(), "the same customers have state");
    for (key, state) in &want_states {
        if key.starts_with('\u{0}') {
            let meta = |d: &Deployment, v: Option<&Option<Vec<u8>>>| {
                let bytes = v.cloned().flatten().unwrap_or_else(|| panic!("no metadata record {key:?}"));
                let mut m = cohort_core::partition::PartitionMeta::decode(&bytes).expect("a metadata record");
                let prefix = format!("{}-", d.prefix);
                m.next_offsets = m
                    .next_offsets
                    .into_iter()
                    .map(|(t, o)| (t.strip_prefix(&prefix).unwrap_or(&t).to_string(), o))
                    .collect();
                m
            };
            assert_eq!(
                meta(other, got_states.get(key)),
                meta(reference, Some(state)),
                "partition metadata {key:?} differs from the uninterrupted run"
            );
            continue;
        }
        // Incarnations and remembered offer decisions are ids, which
        // derive from each deployment's own topics: compared without them.
        let decoded = |bytes: Option<&Option<Vec<u8>>>| {
            bytes.cloned().flatten().map(|b| {
                let mut st = cohort_core::encode::decode(&b).expect("a customer state");
                st.incarnation = 0;
                for send in &mut st.offers {
                    send.decision = 0;
                }
                st
            })
        };
        assert_eq!(
            decoded(got_states.get(key)),
            decoded(Some(state)),
            "final state of {key:?} differs from the uninterrupted run"
        );
    }
}

/// Profiles (with consent, so offers are decided), then clicks: one input
/// topic per phase, so a worker sees each partition's events in one order
/// whatever the batch boundaries (across input topics the order of two
/// records depends on fetching; see README, "Guarantees"). `events` clicks
/// over 400 customers.
pub fn profiles_then_clicks(seed: u64, events: usize) -> (Vec<Event>, Vec<Event>) {
    let config = cohort_loadgen::Config { customers: 400, seed, ..cohort_loadgen::Config::default() };
    let all: Vec<Event> = cohort_loadgen::Generator::new(config).expect("loadgen config").take(events * 2).collect();
    let profiles = all.iter().filter(|e| matches!(e.kind, EventKind::ProfileUpdate(_))).cloned().collect();
    let clicks = all.into_iter().filter(|e| matches!(e.kind, EventKind::Click(_))).take(events).collect();
    (profiles, clicks)
}
