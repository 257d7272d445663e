//! The input consumer: a consumer group over the co-partitioned input topics
//! that seeks every newly assigned partition to the offset cohort's store
//! holds, and hands out records in batches, borrowed from the fetched
//! messages (nothing is copied until a record needs to outlive its batch).
//!
//! Why the store's offsets and not Kafka's: the store commits a batch's
//! states and the next offsets in one atomic write, so its offsets are the
//! only ones that always match the state. Kafka's committed offsets are
//! written afterwards, for lag monitoring, and may be behind after a crash.

use crate::client_config;
use crate::error::KafkaAdapterError;
use crate::health::ClientHealth;
use crate::logging::KafkaLog;
use futures_core::Stream;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Where cohort keeps its own record of how far each input partition has been
/// processed. Called from inside the rebalance callback.
pub trait OffsetSource: Send + Sync + 'static {
    /// The offset of the next record to process, or `None` when this worker
    /// has never processed the partition. It must be quick (a RocksDB point
    /// read is).
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64>;

    /// Called before `parts` are given up: returns once what was processed
    /// from them is durable (or the implementation gives up waiting), so
    /// nothing of them is produced after they are released and the stored
    /// offsets match what was produced. The group waits for it, within the
    /// rebalance timeout. By default it returns at once.
    fn before_revoke(&self, parts: &[TopicPartition]) {
        let _ = parts;
    }
}

/// Where to start a partition that the store has no offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// From the oldest retained record: every customer's history is replayed
    /// into state. The default, as Kafka Streams does for a new application.
    #[default]
    Earliest,
    /// From new records only: faster to start, but state begins empty.
    Latest,
}

/// A change of the partitions this worker owns, in the order librdkafka
/// reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionEvent {
    /// Newly owned partitions, each already positioned at its start offset
    /// (`None`: the store had none and [`StartPosition`] applied).
    Assigned(Vec<(TopicPartition, Option<i64>)>),
    /// Partitions no longer owned. Records of these partitions that are
    /// already in a batch may still be processed: their results are committed
    /// with their offsets, so the next owner continues from there.
    Revoked(Vec<TopicPartition>),
}

/// One consumed record. Read from the broker ([`Fetched::records`]) it
/// borrows the fetched message: its key and value are not copied, and its
/// headers are parsed only when asked for (a dead letter carries them).
/// Built by hand (tests, offline replays) it owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord<'a> {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp in ms since the epoch, when the broker has one.
    pub timestamp: Option<i64>,
    pub key: Option<Cow<'a, [u8]>>,
    pub value: Option<Cow<'a, [u8]>>,
    pub headers: InputHeaders<'a>,
}

impl InputRecord<'_> {
    /// The same record owning its bytes and headers.
    pub fn into_owned(self) -> InputRecord<'static> {
        InputRecord {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(|k| Cow::Owned(k.into_owned())),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
            headers: match self.headers {
                InputHeaders::Owned(h) => InputHeaders::Owned(h),
                borrowed => InputHeaders::Owned(borrowed.to_vec()),
            },
        }
    }
}

/// A record's headers: owned, or still in the fetched message, where
/// librdkafka parses them on first access (an allocation per record even
/// when there are none, so only the records that need them pay for it).
#[derive(Clone)]
pub enum InputHeaders<'a> {
    Owned(Vec<(String, Vec<u8>)>),
    Message(&'a BorrowedMessage<'a>),
}

impl Default for InputHeaders<'_> {
    fn default() -> Self {
        InputHeaders::Owned(Vec::new())
    }
}

impl From<Vec<(String, Vec<u8>)>> for InputHeaders<'_> {
    fn from(headers: Vec<(String, Vec<u8>)>) -> Self {
        InputHeaders::Owned(headers)
    }
}

impl InputHeaders<'_> {
    /// Every header, in the record's order (a header without a value as
    /// an empty one).
    pub fn to_vec(&self) -> Vec<(String, Vec<u8>)> {
        match self {
            InputHeaders::Owned(h) => h.clone(),
            InputHeaders::Message(m) => m
                .headers()
                .map(|h| {
                    h.iter().map(|hd| (hd.key.to_string(), hd.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for InputHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl PartialEq for InputHeaders<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_vec() == other.to_vec()
    }
}

impl Eq for InputHeaders<'_> {}

/// A batch of fetched messages, held (not copied) until the batch is
/// processed; [`Fetched::records`] reads them.
pub struct Fetched<'c> {
    messages: Vec<BorrowedMessage<'c>>,
    topic_names: &'c [Arc<str>],
}

impl Fetched<'_> {
    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether nothing arrived within the batch's wait.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The batch's records, in the order fetched, borrowing the messages.
    pub fn records(&self) -> impl Iterator<Item = InputRecord<'_>> + '_ {
        self.messages.iter().map(|m| {
            let name = m.topic();
            let topic =
                self.topic_names.iter().find(|t| t.as_ref() == name).cloned().unwrap_or_else(|| Arc::from(name));
            InputRecord {
                topic,
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                key: m.key().map(Cow::Borrowed),
                value: m.payload().map(Cow::Borrowed),
                headers: InputHeaders::Message(m),
            }
        })
    }
}

/// The rdkafka context that turns rebalance callbacks into seeks and events.
pub struct CohortConsumerContext {
    offsets: Arc<dyn OffsetSource>,
    start: StartPosition,
    events: mpsc::UnboundedSender<PartitionEvent>,
    log: KafkaLog,
    health: Arc<ClientHealth>,
    hold_assigned: bool,
}

impl ClientContext for CohortConsumerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message)
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.health.update(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
}

impl ConsumerContext for CohortConsumerContext {
    /// Kafka commits are advisory (lag monitoring): a failed one loses
    /// nothing and the worker re-commits from its store every few seconds,
    /// but a lag graph that stops moving should have a reason in the log.
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        let Err(e) = result else { return };
        // A commit that crosses a rebalance is refused by design; the next
        // one, from the store, follows the new assignment.
        let rebalancing = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::RebalanceInProgress
                    | RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::NoOffset
            )
        );
        if rebalancing {
            debug!(error = %e, partitions = offsets.count(), "advisory offset commit refused during a rebalance");
        } else {
            warn!(error = %e, partitions = offsets.count(), "advisory offset commit failed; retried from the store");
        }
    }

    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), rdkafka::consumer::RebalanceProtocol::Cooperative);
        let parts: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition { topic: e.topic().to_string(), partition: e.partition() })
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assigned = Vec::with_capacity(parts.len());
                for p in parts {
                    let stored = self.offsets.next_offset(&p.topic, p.partition);
                    let offset = match (stored, self.start) {
                        (Some(o), _) => Offset::Offset(o),
                        (None, StartPosition::Earliest) => Offset::Beginning,
                        (None, StartPosition::Latest) => Offset::End,
                    };
                    if let Err(e) = tpl.set_partition_offset(&p.topic, p.partition, offset) {
                        warn!(topic = %p.topic, partition = p.partition, error = %e, "could not set start offset");
                    }
                    assigned.push((p, stored));
                }
                let result = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if result.is_ok() && self.hold_assigned {
                    if let Err(e) = consumer.pause(tpl) {
                        warn!(error = %e, "could not pause newly assigned partitions before their restore");
                    }
                }
                match result {
                    Ok(()) => {
                        info!(partitions = assigned.len(), cooperative, "partitions assigned");
                        let _ = self.events.send(PartitionEvent::Assigned(assigned));
                    }
                    Err(e) => warn!(error = %e, "assign failed"),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.offsets.before_revoke(&parts);
                let result = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = result {
                    warn!(error = %e, "unassign failed");
                }
                info!(partitions = parts.len(), cooperative, "partitions revoked");
                let _ = self.events.send(PartitionEvent::Revoked(parts));
            }
            other => {
                warn!(error = ?other, "rebalance error; dropping the assignment");
                self.offsets.before_revoke(&parts);
                let result = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = result {
                    warn!(error = %e, "unassign failed");
                }
                let _ = self.events.send(PartitionEvent::Revoked(parts));
            }
        }
    }
}

/// Settings of the input consumer that are not librdkafka properties.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub bootstrap: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// librdkafka properties, applied after cohort's defaults.
    pub properties: BTreeMap<String, String>,
    pub start: StartPosition,
    /// Pause every newly assigned partition in the rebalance callback, before
    /// anything is fetched from it: the worker restores its state first,
    /// then seeks and resumes it ([`InputConsumer::resume`]).
    pub hold_assigned: bool,
}

/// A consumer-group member over the input topics.
pub struct InputConsumer {
    consumer: StreamConsumer<CohortConsumerContext>,
    topic_names: Vec<Arc<str>>,
    health: Arc<ClientHealth>,
}

/// How often librdkafka reports the statistics that [`InputConsumer::health`]
/// reads (high watermarks, broker contact, group state), unless the
/// `statistics.interval.ms` property says otherwise.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(2);

impl InputConsumer {
    /// Joins the group and subscribes. Rebalances arrive on the returned
    /// channel; assignment only happens while [`InputConsumer::next_batch`]
    /// is being polled.
    pub fn new(
        settings: &ConsumerSettings,
        offsets: Arc<dyn OffsetSource>,
    ) -> Result<(InputConsumer, mpsc::UnboundedReceiver<PartitionEvent>), KafkaAdapterError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut config = client_config(&settings.bootstrap, &BTreeMap::new());
        config
            .set("group.id", &settings.group_id)
            // Offsets come from cohort's store; Kafka commits are advisory and
            // made explicitly after the store commits.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // `range` keeps partition N of every co-partitioned input topic on
            // the same worker; cooperative-sticky does not guarantee that.
            .set("partition.assignment.strategy", "range")
            .set("auto.offset.reset", "earliest")
            // Lag and broker contact come from librdkafka's statistics, which
            // cost no request (see `crate::health`).
            .set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string());
        for (k, v) in &settings.properties {
            config.set(k, v);
        }
        let health = Arc::new(ClientHealth::default());
        let context = CohortConsumerContext {
            offsets,
            start: settings.start,
            events: tx,
            log: KafkaLog::default(),
            health: health.clone(),
            hold_assigned: settings.hold_assigned,
        };
        let consumer: StreamConsumer<CohortConsumerContext> =
            config.create_with_context(context).map_err(KafkaAdapterError::Config)?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let topic_names = settings.topics.iter().map(|t| Arc::from(t.as_str())).collect();
        Ok((InputConsumer { consumer, topic_names, health }, rx))
    }

    /// Waits up to `max_wait` for records and returns at most `max_records`.
    /// Returns as soon as the batch is full; an empty batch means nothing
    /// arrived in time. A client error is returned only when no record was
    /// read (otherwise it is logged and the partial batch returned).
    ///
    /// Lost broker connections ([`is_connection_error`]) are not returned:
    /// librdkafka reconnects by itself, and these errors pile up in its queue
    /// while the caller is not polling (a worker waiting for acks through a
    /// broker outage queues hundreds). Returned one per call, each would cost
    /// the caller a retry delay after the broker is back; skipped, they cost
    /// nothing and polling goes on until `max_wait`.
    pub async fn next_batch(&self, max_records: usize, max_wait: Duration) -> Result<Fetched<'_>, KafkaAdapterError> {
        let mut out = Vec::with_capacity(max_records.min(4096));
        // One message stream (one waker slot in rdkafka) and one timer for
        // the whole batch: records already fetched are taken without a
        // timer armed; the timer is polled only while the queue is empty.
        let mut stream = self.consumer.stream();
        let until = tokio::time::Instant::now() + max_wait;
        let mut deadline = std::pin::pin!(tokio::time::sleep_until(until));
        // The wait bounds the batch, also while records keep coming (a
        // re-evaluation under way asks for batches of 1 ms).
        while out.len() < max_records && tokio::time::Instant::now() < until {
            let next = std::future::poll_fn(|cx| match Pin::new(&mut stream).poll_next(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => deadline.as_mut().poll(cx).map(|()| None),
            })
            .await;
            match next {
                None => break,
                Some(Ok(m)) => out.push(m),
                Some(Err(e)) if is_connection_error(&e) => {
                    // The client context has already logged it.
                    debug!(error = %e, "broker connection error; librdkafka reconnects by itself");
                }
                Some(Err(e)) => {
                    if out.is_empty() {
                        return Err(e.into());
                    }
                    warn!(error = %e, "consumer error after a partial batch");
                    break;
                }
            }
        }
        Ok(Fetched { messages: out, topic_names: &self.topic_names })
    }

    /// Stops fetching these partitions (backpressure); their position is kept.
    pub fn pause(&self, parts: &[TopicPartition]) -> Result<(), KafkaAdapterError> {
        Ok(self.consumer.pause(&tpl(parts))?)
    }

    /// Resumes partitions paused by [`InputConsumer::pause`].
    pub fn resume(&self, parts: &[TopicPartition]) -> Result<(), KafkaAdapterError> {
        Ok(self.consumer.resume(&tpl(parts))?)
    }

    /// Moves a partition's position, e.g. after restoring its state.
    pub fn seek(&self, part: &TopicPartition, next_offset: i64, timeout: Duration) -> Result<(), KafkaAdapterError> {
        Ok(self.consumer.seek(&part.topic, part.partition, Offset::Offset(next_offset), timeout)?)
    }

    /// Commits offsets to Kafka, asynchronously, for lag monitoring only.
    pub fn commit_advisory(&self, next_offsets: &[(TopicPartition, i64)]) -> Result<(), KafkaAdapterError> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (p, o) in next_offsets {
            list.add_partition_offset(&p.topic, p.partition, Offset::Offset(*o))?;
        }
        Ok(self.consumer.commit(&list, CommitMode::Async)?)
    }

    /// The partitions currently assigned to this member.
    pub fn assignment(&self) -> Result<Vec<TopicPartition>, KafkaAdapterError> {
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| TopicPartition { topic: e.topic().to_string(), partition: e.partition() })
            .collect())
    }

    /// What the consumer last heard from the cluster (high watermarks,
    /// broker contact, group state), updated from librdkafka's statistics
    /// while the consumer is polled. Reading it costs no request.
    pub fn health(&self) -> Arc<ClientHealth> {
        self.health.clone()
    }

    /// Leaves the consumer group (the next owner of these partitions gets them
    /// without waiting for a session timeout).
    pub fn close(self) {
        self.consumer.unsubscribe();
        drop(self.consumer);
    }
}

/// Whether a consumer error only reports a lost or unreachable broker
/// connection, which librdkafka recovers from by itself (it reconnects with
/// backoff, then re-fetches from the current positions): informational, as
/// librdkafka documents non-fatal consumer errors to be.
pub fn is_connection_error(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

fn tpl(parts: &[TopicPartition]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for p in parts {
        list.add_partition(&p.topic, p.partition);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_broker_connections_are_connection_errors_and_others_are_not() {
        for code in [RDKafkaErrorCode::AllBrokersDown, RDKafkaErrorCode::BrokerTransportFailure] {
            assert!(is_connection_error(&KafkaError::MessageConsumption(code)), "{code:?}");
        }
        // A fatal error, a missing topic or a partition EOF is not one.
        assert!(!is_connection_error(&KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!is_connection_error(&KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)));
        assert!(!is_connection_error(&KafkaError::PartitionEOF(0)));
    }
}
