//! librdkafka's log lines and global errors, routed to `tracing`.
//!
//! rdkafka's default context logs every global error at ERROR. While a
//! broker is down, librdkafka reports each failed reconnect (one per
//! `reconnect.backoff` step, per broker, per client): 3-4 ERROR lines a
//! second in tests/worker_broker_outage.rs, for a condition the worker rides
//! out on its own (it stalls and resumes, and `/readyz` and the lag metrics
//! show it). Connection-level errors are therefore WARN, and after the first
//! one at most one line per [`QUIET_PERIOD`] says how many were left out, as
//! the Java client's "Connection to node … could not be established" warnings
//! do. Every other error stays ERROR.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// At most one connection-error line per this period, per client.
pub const QUIET_PERIOD: Duration = Duration::from_secs(30);

/// Whether a global error is about reaching brokers (expected while one
/// restarts; the client retries on its own).
pub fn is_connection_error(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::BrokerNotAvailable
        )
    )
}

/// Admits the first line and then one per period; counts what it holds back.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    /// `Some(n)` when a line may be written now, `n` being how many were held
    /// back since the last one; `None` to stay quiet.
    pub fn admit(&mut self, now: Instant, period: Duration) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < period => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// The log half of a client context, shared by cohort's consumer and producer.
#[derive(Debug, Default)]
pub struct KafkaLog {
    connection_errors: Mutex<RateLimit>,
}

impl KafkaLog {
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            // "FAIL": a broker connection failed or closed; librdkafka retries.
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error
                if fac == "FAIL" =>
            {
                self.connection_trouble(&format!("{fac}: {message}"))
            }
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                error!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => warn!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Debug => debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    pub fn error(&self, err: KafkaError, reason: &str) {
        if is_connection_error(&err) {
            self.connection_trouble(&format!("{err}: {reason}"));
        } else {
            error!(error = %err, reason, "librdkafka error");
        }
    }

    fn connection_trouble(&self, what: &str) {
        let admitted = self.connection_errors.lock().map(|mut r| r.admit(Instant::now(), QUIET_PERIOD));
        match admitted {
            Ok(Some(0)) | Err(_) => warn!(error = what, "cannot reach the Kafka cluster; retrying"),
            Ok(Some(held_back)) => {
                warn!(error = what, similar_since_last = held_back, "cannot reach the Kafka cluster; retrying")
            }
            Ok(None) => debug!(error = what, "cannot reach the Kafka cluster; retrying"),
        }
    }
}

/// The producer's context: logging, and delivery reports (see `producer`).
#[derive(Debug, Default)]
pub struct ProducerContext {
    log: KafkaLog,
}

impl rdkafka::ClientContext for ProducerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_passes_then_one_per_period_with_the_count_held_back() {
        let mut r = RateLimit::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(r.admit(t0, QUIET_PERIOD), Some(0));
        for i in 1..=4 {
            assert_eq!(r.admit(t0 + s * i, QUIET_PERIOD), None, "at {i} s");
        }
        assert_eq!(r.admit(t0 + QUIET_PERIOD, QUIET_PERIOD), Some(4));
        assert_eq!(r.admit(t0 + QUIET_PERIOD + s, QUIET_PERIOD), None);
        assert_eq!(r.admit(t0 + QUIET_PERIOD * 3, QUIET_PERIOD), Some(1));
    }

    #[test]
    fn connection_errors_are_told_apart_from_others() {
        assert!(is_connection_error(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(is_connection_error(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!is_connection_error(&KafkaError::Global(RDKafkaErrorCode::Authentication)));
        assert!(!is_connection_error(&KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed)));
    }
}
