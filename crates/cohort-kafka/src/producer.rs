//! The output producer: idempotent, acks=all, awaited before the store
//! commits. A replayed batch re-sends the same records with the same ids, so
//! downstream consumers deduplicate on the id: at-least-once delivery with
//! idempotency keys.
//!
//! Records linger (`linger.ms`, 100 by default, as in Kafka Streams) until
//! the caller waits for them: [`OutputProducer::send_all`] and
//! [`OutputProducer::wait`] then flush, so a worker's batch leaves in one
//! produce request per partition as soon as it is all queued. With a short
//! linger instead, librdkafka cut a batch that took longer than the linger
//! to queue into many small requests; once a partition had five in flight
//! (the idempotent producer's limit) and more were due, its broker thread
//! polled without sleeping until an acknowledgement came back: through a
//! slow broker that was half of the worker's CPU (docs/benchmarks.md,
//! "Session 14").

use crate::client_config;
use crate::error::KafkaAdapterError;
use crate::logging::ProducerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

/// cohort's `linger.ms`: how long a record waits for others to share its
/// produce request when nobody waits for it. Kafka Streams uses the same.
pub const DEFAULT_LINGER_MS: u64 = 100;

/// A record header: name and value, borrowed when they are constants.
pub type OutputHeader = (Cow<'static, str>, Cow<'static, [u8]>);

/// A record to produce, owned. The topic is shared and constant headers are
/// borrowed, so that the worker's many records cost as few allocations as
/// their keys and values need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    /// `None` produces a tombstone (compacted topics delete the key).
    pub value: Option<Vec<u8>>,
    pub headers: Vec<OutputHeader>,
    /// The record timestamp in ms since the epoch; the broker's clock when `None`.
    pub timestamp: Option<i64>,
    /// The partition to write to; `None`: the partitioner's choice by key
    /// (librdkafka's default, murmur2-compatible with the Java client's).
    pub partition: Option<i32>,
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A send in flight; await it with [`OutputProducer::wait`].
pub struct Pending(DeliveryFuture);

/// The producer of segment changes, offers, dead letters and the changelog.
#[derive(Clone)]
pub struct OutputProducer {
    inner: FutureProducer<ProducerContext>,
    /// Asks the flushing thread to send what is queued now.
    flush: SyncSender<()>,
}

impl OutputProducer {
    /// Creates an idempotent producer with acks=all. `properties` are
    /// librdkafka settings applied after cohort's defaults.
    pub fn new(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<OutputProducer, KafkaAdapterError> {
        let mut config = client_config(bootstrap, &BTreeMap::new());
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", DEFAULT_LINGER_MS.to_string())
            // A broker may be away for minutes (a rolling restart); the
            // worker stalls rather than drops outputs.
            .set("message.timeout.ms", "300000")
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in properties {
            config.set(k, v);
        }
        let inner: FutureProducer<ProducerContext> =
            config.create_with_context(ProducerContext::default()).map_err(KafkaAdapterError::Config)?;
        let (flush, requests) = std::sync::mpsc::sync_channel(1);
        let flushing = inner.clone();
        std::thread::Builder::new()
            .name("cohort-flush".into())
            .spawn(move || flush_on_request(&flushing, &requests))
            .map_err(|e| KafkaAdapterError::Config(KafkaError::ClientCreation(format!("flush thread: {e}"))))?;
        Ok(OutputProducer { inner, flush })
    }

    /// Asks for everything queued to be sent without waiting for
    /// `linger.ms`. Returns at once.
    pub fn send_now(&self) {
        // Full: a request is already waiting to be served. Disconnected:
        // the thread could not flush (it only ends with the producer).
        let _ = self.flush.try_send(());
    }

    /// Enqueues a record. When librdkafka's queue is full this waits for room
    /// (the producer drains as the broker acknowledges), so callers get
    /// backpressure instead of an error.
    pub async fn send(&self, rec: &OutputRecord) -> Result<Pending, KafkaAdapterError> {
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
            for (k, v) in &rec.headers {
                headers = headers.insert(Header { key: k, value: Some(&**v) });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&rec.topic).headers(headers);
            if let Some(k) = &rec.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &rec.value {
                record = record.payload(v.as_slice());
            }
            if let Some(ts) = rec.timestamp {
                record = record.timestamp(ts);
            }
            if let Some(p) = rec.partition {
                record = record.partition(p);
            }
            match self.inner.send_result(record) {
                Ok(f) => return Ok(Pending(f)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits for one send's acknowledgement: where the record was written.
    /// What is queued is sent at once ([`OutputProducer::send_now`]).
    pub async fn wait(&self, pending: Pending) -> Result<Delivered, KafkaAdapterError> {
        self.send_now();
        match pending.0.await {
            Ok(Ok(d)) => Ok(Delivered { partition: d.partition, offset: d.offset }),
            Ok(Err((e, _))) => Err(e.into()),
            Err(_) => Err(KafkaAdapterError::Cancelled),
        }
    }

    /// Sends all records and waits until every one is acknowledged. Returns
    /// where each was written, in the order of `records`.
    pub async fn send_all(&self, records: &[OutputRecord]) -> Result<Vec<Delivered>, KafkaAdapterError> {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            pending.push(self.send(r).await?);
        }
        self.send_now();
        let mut delivered = Vec::with_capacity(pending.len());
        for p in pending {
            delivered.push(self.wait(p).await?);
        }
        Ok(delivered)
    }

    /// Records handed to the producer and not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// Waits until everything queued is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaAdapterError> {
        Ok(self.inner.flush(timeout)?)
    }
}

/// The flushing thread: on each request, holds librdkafka's flush (which
/// sends queued records without waiting for `linger.ms`) until nothing is
/// left in flight. rdkafka's own `flush` calls `rd_kafka_flush` with no
/// timeout and polls between calls, so the linger is lifted only for an
/// instant, too short for the broker threads to notice. Exits when every
/// [`OutputProducer`] clone is gone.
fn flush_on_request(producer: &FutureProducer<ProducerContext>, requests: &Receiver<()>) {
    /// One `rd_kafka_flush` call; the loop checks for the end between calls.
    const SLICE_MS: i32 = 100;
    while requests.recv().is_ok() {
        while producer.in_flight_count() > 0 {
            #[allow(unsafe_code)]
            // SAFETY: the handle is valid while `producer` lives, and
            // rd_kafka_flush may be called from any thread. With delivery
            // reports as events (rdkafka's mode) it only waits, serving no
            // queue that the producer's polling thread serves.
            unsafe {
                rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), SLICE_MS);
            }
            if matches!(requests.try_recv(), Err(TryRecvError::Disconnected)) {
                return;
            }
        }
    }
}
