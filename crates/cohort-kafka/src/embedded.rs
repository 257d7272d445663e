//! An in-process Kafka-protocol broker: librdkafka's mock cluster. It
//! implements produce, fetch, consumer groups and offsets, which is all the
//! demo and the fast tests need. It has no CreateTopics admin call, so topics
//! are created here.

use crate::error::KafkaAdapterError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A mock cluster that lives as long as this value.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers on loopback.
    pub fn start(brokers: i32) -> Result<EmbeddedBroker, KafkaAdapterError> {
        Ok(EmbeddedBroker { cluster: MockCluster::new(brokers)? })
    }

    /// The `bootstrap.servers` value clients use to reach it.
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates a topic with `partitions` partitions (replication factor 1).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaAdapterError> {
        Ok(self.cluster.create_topic(name, partitions, 1)?)
    }
}
