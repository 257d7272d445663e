//! cohort-kafka: the rdkafka adapters cohort's worker is built on.
//!
//! - [`consumer::InputConsumer`] reads the co-partitioned input topics in a
//!   consumer group, in batches bounded by count and time. On every
//!   assignment it seeks each partition to the offset cohort's own store
//!   holds (an [`OffsetSource`]), not to Kafka's committed offset: Kafka
//!   commits are advisory, for lag monitoring. Rebalances arrive as
//!   [`PartitionEvent`]s on a channel.
//! - [`producer::OutputProducer`] is an idempotent producer (acks=all) whose
//!   sends are awaited before the store commits, and which reports when its
//!   queue is full so the worker can pause input (backpressure).
//! - [`changelog::ChangelogReader`] reads a changelog partition back in
//!   bounded chunks, outside any group (restores and standbys).
//! - [`embedded::EmbeddedBroker`] is librdkafka's in-process mock cluster,
//!   for the demo and fast tests.
//!
//! Nothing here knows about customers, events or segments; this crate must
//! not depend on cohort-core, the codec or the store.

pub mod changelog;
pub mod consumer;
pub mod embedded;
pub mod error;
pub mod health;
pub mod logging;
pub mod producer;

pub use changelog::{ChangelogReader, ChangelogRecord, ReadEnd};
pub use consumer::{
    Fetched, InputConsumer, InputHeaders, InputRecord, OffsetSource, PartitionEvent, StartPosition, TopicPartition,
};
pub use embedded::EmbeddedBroker;
pub use error::KafkaAdapterError;
pub use health::{ClientHealth, HealthSnapshot};
pub use producer::{Delivered, OutputHeader, OutputProducer, OutputRecord};

use rdkafka::config::ClientConfig;
use std::collections::BTreeMap;

/// Builds an rdkafka config from `bootstrap` and pass-through librdkafka
/// properties (SASL, SSL and any other `librdkafka` setting), applied last so
/// users can override cohort's defaults.
pub fn client_config(bootstrap: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    // The Java client's default (librdkafka's is 10 s): after a broker
    // restart the worker reconnects within a second or two instead of up to
    // 10 s later (measured in tests/worker_broker_outage.rs: 9-13 s to resume).
    c.set("reconnect.backoff.max.ms", "1000");
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}
