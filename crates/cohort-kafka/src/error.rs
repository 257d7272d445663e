//! Errors of the Kafka adapters, classified so the worker knows whether to
//! back off and retry or to stop cleanly.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum KafkaAdapterError {
    /// A setting librdkafka refused. Fatal: fix the configuration.
    #[error("invalid Kafka client configuration: {0}")]
    Config(#[source] KafkaError),
    /// An error from the client or the broker.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The producer's delivery was cancelled (the producer was dropped).
    #[error("delivery cancelled: the producer shut down")]
    Cancelled,
}

impl KafkaAdapterError {
    /// Whether waiting and trying again can succeed (a broker restarting, a
    /// full queue, a timeout), as opposed to an error that needs a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            KafkaAdapterError::Config(_) | KafkaAdapterError::Cancelled => false,
            KafkaAdapterError::Kafka(e) => match e.rdkafka_error_code() {
                Some(code) => !matches!(
                    code,
                    RDKafkaErrorCode::Fatal
                        | RDKafkaErrorCode::InvalidConfig
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed
                        | RDKafkaErrorCode::SaslAuthenticationFailed
                        | RDKafkaErrorCode::Authentication
                        | RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::UnknownTopic
                ),
                None => true,
            },
        }
    }
}
