//! The worker's configuration: built-in defaults, then a TOML file, then
//! `COHORT__*` environment variables (`COHORT__KAFKA__GROUP_ID=x` sets
//! `kafka.group_id`). Unknown keys are refused. [`Config::validate`] checks
//! what the types cannot, without I/O.
//!
//! Errors name the file, the line and what was expected, because a worker
//! that starts with a typo in its config does the wrong thing quietly.
//!
//! [`Config::to_masked_toml`] renders a configuration back as TOML that
//! [`Config::from_toml`] reads, with secrets masked (`cohort check-config`).

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The prefix of environment overrides; `__` separates nested keys.
pub const ENV_PREFIX: &str = "COHORT__";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub topics: Topics,
    #[serde(default)]
    pub format: FormatConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub processing: ProcessingConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Where a partition with no stored offset starts: `earliest` replays
    /// history into state (Kafka Streams' default for a new application).
    #[serde(default)]
    pub start_from: StartFrom,
    /// librdkafka properties passed through to every client, e.g.
    /// `"security.protocol" = "SASL_SSL"`, `"sasl.mechanisms" = "SCRAM-SHA-512"`.
    /// Values are strings to librdkafka; a TOML number or bool is taken as
    /// its text (`"linger.ms" = 5`).
    #[serde(default, deserialize_with = "property_values")]
    pub properties: BTreeMap<String, String>,
    /// Extra properties for the consumer only.
    #[serde(default, deserialize_with = "property_values")]
    pub consumer_properties: BTreeMap<String, String>,
    /// Extra properties for the producer only.
    #[serde(default, deserialize_with = "property_values")]
    pub producer_properties: BTreeMap<String, String>,
}

/// A librdkafka property value: a string, or a TOML number or bool as its
/// text. Anything else is refused without quoting the value (it may be a
/// password).
fn property_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, toml::Value> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "librdkafka property `{k}` must be a string, a number or a bool"
                    )))
                }
            };
            Ok((k, text))
        })
        .collect()
}

/// Kafka's conventional local listener.
fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}
fn default_group_id() -> String {
    "cohort".into()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: default_bootstrap(),
            group_id: default_group_id(),
            start_from: StartFrom::default(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

/// Every topic cohort reads or writes, renamable. Defaults are README's
/// "Topics and records" table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub clickstream: String,
    pub purchases: String,
    pub profiles: String,
    pub offer_outcomes: String,
    pub segment_changes: String,
    pub next_best_offers: String,
    pub dlq: String,
    pub changelog: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            clickstream: "clickstream".into(),
            purchases: "purchases".into(),
            profiles: "customer-profiles".into(),
            offer_outcomes: "offer-outcomes".into(),
            segment_changes: "segment-changes".into(),
            next_best_offers: "next-best-offers".into(),
            dlq: "cohort-dlq".into(),
            changelog: "cohort-changelog".into(),
        }
    }
}

impl Topics {
    /// The co-partitioned input topics, in a fixed order.
    pub fn inputs(&self) -> [&str; 4] {
        [&self.clickstream, &self.purchases, &self.profiles, &self.offer_outcomes]
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// JSON with the Avro schemas' field names.
    #[default]
    Json,
    /// Avro binary, no framing; the schemas in `schemas_dir`.
    Avro,
    /// Confluent wire format: magic byte 0, a 4-byte schema id, Avro binary.
    ConfluentAvro,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FormatConfig {
    pub input: WireFormat,
    pub output: WireFormat,
    pub schemas_dir: PathBuf,
    /// Confluent schema ids and the `.avsc` file (in `schemas_dir`) each
    /// names: `1 = "io.cohort.v1.ClickEvent.avsc"`. (TOML keys are strings;
    /// [`FormatConfig::schema_id_list`] parses them.)
    pub schema_ids: BTreeMap<String, String>,
}

impl FormatConfig {
    /// The schema ids as numbers; `validate` has checked every key.
    pub fn schema_id_list(&self) -> Vec<(u32, String)> {
        self.schema_ids.iter().filter_map(|(k, v)| k.trim().parse().ok().map(|id| (id, v.clone()))).collect()
    }
}

impl Default for FormatConfig {
    fn default() -> Self {
        FormatConfig {
            input: WireFormat::Json,
            output: WireFormat::Json,
            schemas_dir: PathBuf::from("schemas"),
            schema_ids: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub path: PathBuf,
    /// How often the file is checked for a change (SIGHUP checks at once);
    /// `0s`: only on SIGHUP.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// Stored customers one partition re-evaluates per batch after a rules
    /// change (README, "Changing the rules").
    pub reevaluation_slice: usize,
    /// A topic (one partition, compacted) through which a group converges
    /// on one rules version: a changed file is published there and every
    /// worker switches to what it reads. Empty: each worker follows its own
    /// file.
    pub topic: String,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            path: PathBuf::from("deploy/rules.yaml"),
            watch_interval: Duration::from_secs(2),
            reevaluation_slice: 5_000,
            topic: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// The RocksDB directory; one per worker, on a persistent volume.
    pub path: PathBuf,
    /// RocksDB tuning and the hot-state cache; see cohort-store's `StoreConfig`.
    pub rocksdb: cohort_store::StoreConfig,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { path: PathBuf::from("data/cohort"), rocksdb: cohort_store::StoreConfig::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// A batch closes at this many records...
    pub batch_max_records: usize,
    /// ...or after this long, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub batch_max_wait: Duration,
    /// The watermark trails the highest event time by this much.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Events stamped further than this in the future go to the DLQ.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Records larger than this go to the DLQ unread.
    pub max_record_bytes: usize,
    /// Advance idle partitions' watermarks with the wall clock, so time-based
    /// segments (lapsed, cart abandoned) fire without new events.
    pub live_clock: bool,
    /// How long SIGTERM waits for the batch to finish and commit; also how
    /// long giving up a partition in a rebalance waits for the batch in flight.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long the worker may wait on the same thing (the broker's answers
    /// to fetches, output acknowledgements, the consumer group, a store
    /// commit) before `/readyz` says not ready and a WARN names the wait.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            // The count bound caps a batch's memory and, at full speed, how
            // often touched states are written; latency is bounded by the
            // wait below (at 200 K events/s, 10,000 records take 50 ms to
            // arrive). A Zipf-skewed customer active several times in a batch
            // is encoded, written and put in the changelog once per batch:
            // 10,000 costs ~15% less CPU per event than 2,000
            // (docs/benchmarks.md).
            batch_max_records: 10_000,
            batch_max_wait: Duration::from_millis(50),
            allowed_lateness: Duration::from_secs(60),
            max_future_skew: Duration::from_secs(3_600),
            // Kafka's default message.max.bytes.
            max_record_bytes: 1_048_588,
            live_clock: true,
            // Kubernetes' default terminationGracePeriodSeconds is 30s.
            shutdown_timeout: Duration::from_secs(25),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Restoring partitions from the changelog, and warm standbys (README "Scaling").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreConfig {
    /// 0: restore a partition only when it is assigned. 1 or more: also keep
    /// every changelog partition this worker does not own caught up in its
    /// store (a warm standby), so a takeover restores only the last seconds.
    /// (Every worker with standbys on follows every partition it does not
    /// own; choosing N of them per partition is not built yet.)
    pub standby_replicas: u32,
    /// How often a standby catches up with the changelog.
    #[serde(with = "humantime_serde")]
    pub standby_interval: Duration,
    /// A restore holds at most about this much of the changelog in memory:
    /// what librdkafka prefetches and one write batch to the store.
    pub max_memory_bytes: usize,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            standby_replicas: 0,
            standby_interval: Duration::from_secs(1),
            // Two halves: the fetch queue and the write batch.
            max_memory_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// /metrics, /healthz, /readyz and the admin API.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        // 9464 is the port OpenTelemetry's Prometheus exporter made customary.
        HttpConfig { listen: "127.0.0.1:9464".into() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `cohort=debug,rdkafka=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Human, level: "info".into() }
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: String, line: usize, column: usize, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: String, key: String, message: String },
}

impl Config {
    /// Loads `path` (or only the defaults when `None`) and applies `env`
    /// overrides (pass `std::env::vars()`).
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let (name, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
                (p.display().to_string(), text)
            }
            None => ("<defaults>".to_string(), String::new()),
        };
        Self::from_toml(&name, &text, env)
    }

    /// Parses `text` (named `name` in errors), then applies `env` overrides.
    pub fn from_toml(
        name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        // First the file alone, so its errors carry its own line numbers.
        let file: Config = toml::from_str(text).map_err(|e| parse_error(name, text, &e))?;
        let overrides: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        let config = if overrides.is_empty() {
            file
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error(name, text, &e))?;
            for (var, value) in &overrides {
                apply_env(&mut table, var, value)?;
            }
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
                var: overrides.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "),
                message: e.message().to_string(),
            })?
        };
        config.validate(name)?;
        Ok(config)
    }

    /// Checks what serde cannot, without I/O.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad =
            |key: &str, message: String| ConfigError::Invalid { path: name.to_string(), key: key.into(), message };
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(bad("kafka.bootstrap_servers", "must name at least one broker (host:port)".into()));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(bad("kafka.group_id", "must not be empty".into()));
        }
        let t = &self.topics;
        let all = [
            ("topics.clickstream", &t.clickstream),
            ("topics.purchases", &t.purchases),
            ("topics.profiles", &t.profiles),
            ("topics.offer_outcomes", &t.offer_outcomes),
            ("topics.segment_changes", &t.segment_changes),
            ("topics.next_best_offers", &t.next_best_offers),
            ("topics.dlq", &t.dlq),
            ("topics.changelog", &t.changelog),
        ];
        for (i, (key, topic)) in all.iter().enumerate() {
            if topic.trim().is_empty() {
                return Err(bad(key, "must not be empty".into()));
            }
            if let Some((other, _)) = all[..i].iter().find(|(_, t)| t == topic) {
                return Err(bad(key, format!("`{topic}` is also {other}; every topic must be distinct")));
            }
        }
        for (key, props) in [
            ("kafka.properties", &self.kafka.properties),
            ("kafka.consumer_properties", &self.kafka.consumer_properties),
        ] {
            for reserved in ["enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"] {
                if props.contains_key(reserved) {
                    return Err(bad(
                        key,
                        format!("`{reserved}` is set by cohort (offsets live in its store); remove it"),
                    ));
                }
            }
            // Lag, broker contact and readiness come from the consumer's statistics.
            if props.get("statistics.interval.ms").is_some_and(|v| v.trim().parse::<u64>().map_or(true, |ms| ms == 0)) {
                return Err(bad(
                    key,
                    "`statistics.interval.ms` must be a positive number of milliseconds: lag and readiness are \
                     read from the consumer's statistics (default 2000)"
                        .into(),
                ));
            }
        }
        if self.restore.max_memory_bytes < 4 << 20 {
            return Err(bad("restore.max_memory_bytes", "must be at least 4 MiB (4194304)".into()));
        }
        if self.restore.standby_interval.is_zero() {
            return Err(bad("restore.standby_interval", "must be longer than 0s".into()));
        }
        let p = &self.processing;
        if p.batch_max_records == 0 {
            return Err(bad("processing.batch_max_records", "must be at least 1".into()));
        }
        if p.stall_timeout < Duration::from_secs(1) {
            return Err(bad("processing.stall_timeout", "must be at least 1s".into()));
        }
        if self.rules.reevaluation_slice == 0 {
            return Err(bad("rules.reevaluation_slice", "must be at least 1".into()));
        }
        if p.batch_max_wait.is_zero() {
            return Err(bad("processing.batch_max_wait", "must be longer than 0s".into()));
        }
        if p.max_record_bytes < 64 {
            return Err(bad("processing.max_record_bytes", "must be at least 64 bytes".into()));
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("http.listen", format!("`{}` is not an address such as 127.0.0.1:9464", self.http.listen)));
        }
        for key in self.format.schema_ids.keys() {
            if key.trim().parse::<u32>().is_err() {
                return Err(bad(
                    "format.schema_ids",
                    format!("`{key}` is not a schema id: expected a number from 0 to 4294967295"),
                ));
            }
        }
        if matches!(self.format.input, WireFormat::ConfluentAvro) && self.format.schema_ids.is_empty() {
            return Err(bad(
                "format.schema_ids",
                "confluent-avro input needs the schema ids producers write, e.g. `[format.schema_ids] 1 = \"io.cohort.v1.ClickEvent.avsc\"`".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The configuration as TOML that [`Config::from_toml`] (and so
    /// `cohort run --config`) reads back, every secret-bearing librdkafka
    /// property masked as [`crate::secrets::REDACTED`]
    /// ([`crate::secrets::is_secret_property`]).
    pub fn to_masked_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.masked())
    }

    /// This configuration with its secrets masked.
    pub fn masked(&self) -> Config {
        let mut c = self.clone();
        for props in [&mut c.kafka.properties, &mut c.kafka.consumer_properties, &mut c.kafka.producer_properties] {
            crate::secrets::mask_properties(props);
        }
        c
    }
}

fn parse_error(name: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => line_col(text, span.start),
        None => (1, 1),
    };
    ConfigError::Parse { path: name.to_string(), line, column, message: e.message().to_string() }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// `COHORT__PROCESSING__BATCH_MAX_RECORDS=500` sets
/// `processing.batch_max_records`. Values parse as TOML scalars when they can
/// (numbers, booleans), else as strings; librdkafka properties are always
/// strings. Keys of pass-through property maps keep dots:
/// `COHORT__KAFKA__PROPERTIES__SASL.MECHANISMS=PLAIN`.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env { var: var.into(), message: "empty key segment".into() });
    }
    // A librdkafka property is text, as given: a password "007" stays "007".
    let property = path.len() == 3 && path[0] == "kafka" && path[1].ends_with("properties");
    let parsed = if property { toml::Value::String(value.to_string()) } else { parse_scalar(value) };
    let mut cur = table;
    for (i, seg) in path.iter().enumerate() {
        if i + 1 == path.len() {
            cur.insert(seg.clone(), parsed);
            return Ok(());
        }
        let next = cur.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match next {
            toml::Value::Table(t) => t,
            _ => return Err(ConfigError::Env { var: var.into(), message: format!("`{seg}` is not a section") }),
        };
    }
    Ok(())
}

fn parse_scalar(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = value.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(f) = value.parse::<f64>() {
        if value.contains('.') && !value.contains(|c: char| c.is_ascii_alphabetic()) {
            return toml::Value::Float(f);
        }
    }
    toml::Value::String(value.to_string())
}

impl fmt::Display for WireFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireFormat::Json => "json",
            WireFormat::Avro => "avro",
            WireFormat::ConfluentAvro => "confluent-avro",
        })
    }
}

#[cfg(test)]
mod tests;
