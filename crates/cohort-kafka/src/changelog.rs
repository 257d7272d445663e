//! Reading the changelog back: a consumer outside any group that is
//! assigned one changelog partition at a time, reads a range of offsets in
//! chunks bounded by bytes, and stops at the partition's end. Restores and
//! standbys are built on it; what the records mean is the worker's business.
//!
//! Also the two questions the worker asks about the changelog topic before
//! it starts: how many partitions it has, and its `cleanup.policy`.

use crate::client_config;
use crate::error::KafkaAdapterError;
use crate::logging::KafkaLog;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// One changelog record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    pub offset: i64,
    pub key: Vec<u8>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ChangelogRecord {
    /// The value of header `name`, if the record has it.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    /// Bytes held in memory for it, roughly.
    pub fn size(&self) -> usize {
        64 + self.key.len()
            + self.value.as_ref().map_or(0, Vec::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

/// The restore consumer's context: librdkafka's logs through `tracing`.
#[derive(Default)]
pub struct ReaderContext {
    log: KafkaLog,
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
}

impl ConsumerContext for ReaderContext {}

/// A consumer of the changelog topic, in no group: it never commits, and is
/// positioned explicitly on every read.
pub struct ChangelogReader {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    /// How long one request (metadata, watermarks, a poll) may take.
    request_timeout: Duration,
}

/// Why a read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadEnd {
    /// The offset after the last record handed over (`from` if none).
    pub next: i64,
    /// Whether the partition's end (as the broker saw it) or `until` was reached.
    pub complete: bool,
}

impl ChangelogReader {
    /// `properties` are the worker's librdkafka settings; `fetch_bytes`
    /// bounds what librdkafka prefetches (`queued.max.messages.kbytes`,
    /// `fetch.max.bytes`), so a restore's memory is bounded by configuration.
    pub fn new(
        bootstrap: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        fetch_bytes: usize,
    ) -> Result<ChangelogReader, KafkaAdapterError> {
        let mut config = client_config(bootstrap, &BTreeMap::new());
        let kbytes = (fetch_bytes / 1024).max(1024);
        config
            .set("group.id", "cohort-changelog-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            // cohort writes the changelog without transactions: its end is the
            // high watermark. (tansu 0.6 on PostgreSQL also fails ListOffsets
            // under read_committed.)
            .set("isolation.level", "read_uncommitted")
            // A restore reads to an end it knows: a fetch the broker holds
            // back for more data (500 ms by default) is time lost at every
            // read's start and end.
            .set("fetch.wait.max.ms", "10")
            .set("queued.max.messages.kbytes", kbytes.to_string())
            .set("fetch.max.bytes", (kbytes * 1024).min(i32::MAX as usize).to_string())
            .set("max.partition.fetch.bytes", (kbytes * 1024).min(i32::MAX as usize).to_string());
        for (k, v) in properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer<ReaderContext> =
            config.create_with_context(ReaderContext::default()).map_err(KafkaAdapterError::Config)?;
        Ok(ChangelogReader { consumer, topic: topic.to_string(), request_timeout: Duration::from_secs(10) })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A topic's partition count (the changelog's or another's), from the
    /// broker's metadata; `None` if the topic does not exist.
    pub fn partition_count(&self, topic: &str) -> Result<Option<usize>, KafkaAdapterError> {
        let md = self.consumer.fetch_metadata(Some(topic), self.request_timeout)?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    }

    /// `(low, high)`: the first offset still held and the offset the next
    /// record will get.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaAdapterError> {
        Ok(self.consumer.fetch_watermarks(&self.topic, partition, self.request_timeout)?)
    }

    /// Reads `partition` from `from` up to `until` (exclusive) or its end,
    /// whichever comes first, handing records over in chunks of about
    /// `chunk_bytes`. Stops early when `on_chunk` breaks, or when
    /// `keep_going` says so while waiting for records (then `complete` is
    /// false). Offsets may skip (a compacted log).
    pub fn read(
        &self,
        partition: i32,
        from: i64,
        until: i64,
        chunk_bytes: usize,
        keep_going: &dyn Fn() -> bool,
        mut on_chunk: impl FnMut(Vec<ChangelogRecord>) -> ControlFlow<()>,
    ) -> Result<ReadEnd, KafkaAdapterError> {
        let mut end = ReadEnd { next: from, complete: false };
        if from >= until {
            end.complete = true;
            return Ok(end);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(from))?;
        self.consumer.assign(&tpl)?;
        let result = self.read_assigned(partition, until, chunk_bytes, keep_going, &mut on_chunk, &mut end);
        let _ = self.consumer.unassign();
        result.map(|()| end)
    }

    fn read_assigned(
        &self,
        partition: i32,
        until: i64,
        chunk_bytes: usize,
        keep_going: &dyn Fn() -> bool,
        on_chunk: &mut impl FnMut(Vec<ChangelogRecord>) -> ControlFlow<()>,
        end: &mut ReadEnd,
    ) -> Result<(), KafkaAdapterError> {
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        let mut hand_over = |chunk: &mut Vec<ChangelogRecord>, bytes: &mut usize, next: i64, end: &mut ReadEnd| {
            *bytes = 0;
            let flow = on_chunk(std::mem::take(chunk));
            end.next = next;
            flow
        };
        let mut next = end.next;
        let mut last_progress = Instant::now();
        loop {
            if next >= until {
                end.complete = true;
                break;
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {
                    if !keep_going() {
                        break;
                    }
                    // A broker that answers nothing for this long is a stall
                    // the caller should see, not a silent wait.
                    if last_progress.elapsed() > self.request_timeout * 6 {
                        return Err(KafkaAdapterError::Kafka(KafkaError::MessageConsumption(
                            rdkafka::error::RDKafkaErrorCode::RequestTimedOut,
                        )));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => {
                    end.complete = true;
                    break;
                }
                Some(Err(e)) if crate::consumer::is_connection_error(&e) => {}
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    if m.partition() != partition || m.offset() < next {
                        continue;
                    }
                    if m.offset() >= until {
                        end.complete = true;
                        break;
                    }
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|hd| (hd.key.to_string(), hd.value.map(<[u8]>::to_vec).unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let rec = ChangelogRecord {
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                    };
                    next = m.offset() + 1;
                    bytes += rec.size();
                    chunk.push(rec);
                    if bytes >= chunk_bytes && hand_over(&mut chunk, &mut bytes, next, end).is_break() {
                        return Ok(());
                    }
                }
            }
        }
        if !chunk.is_empty() {
            let _ = hand_over(&mut chunk, &mut bytes, next, end);
        }
        end.next = next;
        Ok(())
    }
}

/// A topic's `cleanup.policy` as the broker describes it; `None` when the
/// broker does not answer DescribeConfigs (librdkafka's mock cluster) or
/// does not name the setting.
pub async fn cleanup_policy(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<String>, KafkaAdapterError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap, properties).create().map_err(KafkaAdapterError::Config)?;
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let described =
        match tokio::time::timeout(timeout, admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts)).await {
            Ok(Ok(results)) => results,
            Ok(Err(_)) | Err(_) => return Ok(None),
        };
    for r in described {
        let Ok(resource) = r else { return Ok(None) };
        if let Some(entry) = resource.get("cleanup.policy") {
            return Ok(entry.value.clone());
        }
    }
    Ok(None)
}
