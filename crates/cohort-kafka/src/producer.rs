//! The output producer: idempotent, acks=all, awaited before the store
//! commits. A replayed batch re-sends the same records with the same ids, so
//! downstream consumers deduplicate on the id: at-least-once delivery with
//! idempotency keys.

use crate::client_config;
use crate::error::KafkaAdapterError;
use crate::logging::ProducerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
}

impl OutputProducer {
    /// Creates an idempotent producer with acks=all. `properties` are
    /// librdkafka settings applied after cohort's defaults.
    pub fn new(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<OutputProducer, KafkaAdapterError> {
        let mut config = client_config(bootstrap, &BTreeMap::new());
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // A broker may be away for minutes (a rolling restart); the
            // worker stalls rather than drops outputs.
            .set("message.timeout.ms", "300000")
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in properties {
            config.set(k, v);
        }
        let inner: FutureProducer<ProducerContext> =
            config.create_with_context(ProducerContext::default()).map_err(KafkaAdapterError::Config)?;
        Ok(OutputProducer { inner })
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
    pub async fn wait(&self, pending: Pending) -> Result<Delivered, KafkaAdapterError> {
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
