//! What a client last heard from the cluster, taken from librdkafka's own
//! statistics (`statistics.interval.ms`), so that watching lag and broker
//! contact never costs a request.
//!
//! Why not ask the broker: a watermark query (ListOffsets) travels on the
//! connection that carries the fetch. A broker that answers in order (tansu
//! does) holds it behind the fetch in flight; the query times out,
//! librdkafka drops the connection and the fetch with it, and the cycle
//! repeats — a worker that read nothing for minutes. On any broker the same
//! synchronous queries block whoever makes them while the broker is slow.
//! The statistics already carry each partition's high watermark (from the
//! last fetch response) and each broker connection's time since its last
//! response.

use rdkafka::statistics::Statistics;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The consumer's last statistics, reduced to what the worker watches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthSnapshot {
    /// When these statistics were received.
    pub at: Option<Instant>,
    /// How long before `at` the brokers this client fetches from last
    /// answered: the longest silence among them (every one must answer for
    /// every partition to be fetched), or among all brokers when it fetches
    /// from none yet. `None` when one of them has not answered on its
    /// current connection yet (librdkafka's `rxidle` is -1 then, also
    /// right after a reconnect).
    pub silent_for: Option<Duration>,
    /// When those brokers last answered: `at - silent_for`, or, while that
    /// is unknown, the last answer an earlier snapshot saw (see
    /// [`ClientHealth::update`]). `None` when no broker has answered yet.
    pub last_response: Option<Instant>,
    /// The consumer group's state as librdkafka names it (`up` when joined).
    pub group_state: String,
    /// The group join state (`steady` when assigned and consuming).
    pub join_state: String,
    /// (topic, partition) → high watermark from the last fetch response.
    pub high_watermarks: BTreeMap<(String, i32), i64>,
}

impl HealthSnapshot {
    /// Reduces librdkafka's statistics.
    pub fn from_statistics(stats: &Statistics, at: Instant) -> HealthSnapshot {
        let idle = |rxidle: i64| (rxidle >= 0).then(|| Duration::from_micros(rxidle as u64));
        // The brokers that serve this client's partitions. Logical brokers
        // (the group coordinator's, nodeid -1) carry no partitions.
        let fetching: Vec<Option<Duration>> =
            stats.brokers.values().filter(|b| !b.toppars.is_empty()).map(|b| idle(b.rxidle)).collect();
        let silent_for = if fetching.is_empty() {
            stats.brokers.values().filter_map(|b| idle(b.rxidle)).min()
        } else if fetching.iter().any(Option::is_none) {
            // A partition leader that never answered is the longest silence.
            None
        } else {
            fetching.into_iter().flatten().max()
        };
        let mut high_watermarks = BTreeMap::new();
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // -1 is librdkafka's "internal UA" partition; unknown offsets are negative.
                if *p >= 0 && part.hi_offset >= 0 {
                    high_watermarks.insert((topic.clone(), *p), part.hi_offset);
                }
            }
        }
        let (group_state, join_state) =
            stats.cgrp.as_ref().map(|g| (g.state.clone(), g.join_state.clone())).unwrap_or_default();
        let last_response = silent_for.and_then(|d| at.checked_sub(d));
        HealthSnapshot { at: Some(at), silent_for, last_response, group_state, join_state, high_watermarks }
    }
}

/// Shared between a client's context (which writes it on every statistics
/// callback) and whoever watches the worker.
#[derive(Debug, Default)]
pub struct ClientHealth {
    snapshot: Mutex<HealthSnapshot>,
}

impl ClientHealth {
    /// Takes new statistics. A broker that has reconnected and not answered
    /// yet has no silence to report: the last answer seen before still
    /// stands (without it, a 3 s broker restart read as a silence since
    /// the worker's start).
    pub fn update(&self, stats: &Statistics) {
        self.update_at(stats, Instant::now())
    }

    fn update_at(&self, stats: &Statistics, at: Instant) {
        let mut snap = HealthSnapshot::from_statistics(stats, at);
        let mut current = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snap.last_response = snap.last_response.max(current.last_response);
        *current = snap;
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: &str) -> Statistics {
        serde_json::from_str(json).expect("statistics JSON")
    }

    /// A trimmed librdkafka statistics document: one learned broker that
    /// leads both partitions, the bootstrap broker, the coordinator.
    const STATS: &str = r#"{
        "name": "c", "client_id": "c", "type": "consumer", "ts": 1, "time": 1, "age": 1,
        "replyq": 0, "msg_cnt": 0, "msg_size": 0, "msg_max": 0, "msg_size_max": 0,
        "tx": 0, "tx_bytes": 0, "rx": 0, "rx_bytes": 0, "txmsgs": 0, "txmsg_bytes": 0,
        "rxmsgs": 0, "rxmsg_bytes": 0, "simple_cnt": 0, "metadata_cache_cnt": 1,
        "brokers": {
            "127.0.0.1:9092/1": {"name": "127.0.0.1:9092/1", "nodeid": 1, "nodename": "127.0.0.1:9092",
                "source": "learned", "state": "UP", "stateage": 1, "outbuf_cnt": 0, "outbuf_msg_cnt": 0,
                "waitresp_cnt": 1, "waitresp_msg_cnt": 0, "tx": 9, "txbytes": 9, "txerrs": 0,
                "txretries": 0, "txidle": 100, "req_timeouts": 0, "rx": 9, "rxbytes": 9, "rxerrs": 0,
                "rxcorriderrs": 0, "rxpartial": 0, "rxidle": 7000000, "req": {}, "zbuf_grow": 0,
                "buf_grow": 0, "toppars": {"clicks-0": {"topic": "clicks", "partition": 0},
                "clicks-1": {"topic": "clicks", "partition": 1}}},
            "GroupCoordinator": {"name": "GroupCoordinator", "nodeid": -1, "nodename": "127.0.0.1:9092",
                "source": "logical", "state": "UP", "stateage": 1, "outbuf_cnt": 0, "outbuf_msg_cnt": 0,
                "waitresp_cnt": 0, "waitresp_msg_cnt": 0, "tx": 9, "txbytes": 9, "txerrs": 0,
                "txretries": 0, "txidle": 100, "req_timeouts": 0, "rx": 9, "rxbytes": 9, "rxerrs": 0,
                "rxcorriderrs": 0, "rxpartial": 0, "rxidle": 200000, "req": {}, "zbuf_grow": 0,
                "buf_grow": 0, "toppars": {}}
        },
        "topics": {
            "clicks": {"topic": "clicks", "age": 1, "metadata_age": 1,
                "batchsize": {"min":0,"max":0,"avg":0,"sum":0,"cnt":0,"stddev":0,"hdrsize":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0},
                "batchcnt": {"min":0,"max":0,"avg":0,"sum":0,"cnt":0,"stddev":0,"hdrsize":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0},
                "partitions": {
                    "0": {"partition": 0, "broker": 1, "leader": 1, "desired": true, "unknown": false,
                        "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0,
                        "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "active", "query_offset": 0,
                        "next_offset": 10, "app_offset": 10, "stored_offset": -1001, "committed_offset": 10,
                        "eof_offset": -1001, "lo_offset": 0, "hi_offset": 42, "ls_offset": 42,
                        "consumer_lag": 32, "consumer_lag_stored": -1, "txmsgs": 0, "txbytes": 0,
                        "rxmsgs": 10, "rxbytes": 100, "msgs": 10, "rx_ver_drops": 0, "msgs_inflight": 0,
                        "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0},
                    "1": {"partition": 1, "broker": 1, "leader": 1, "desired": true, "unknown": false,
                        "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0,
                        "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "offset-query", "query_offset": 0,
                        "next_offset": -1001, "app_offset": -1001, "stored_offset": -1001, "committed_offset": -1001,
                        "eof_offset": -1001, "lo_offset": -1001, "hi_offset": -1001, "ls_offset": -1001,
                        "consumer_lag": -1, "consumer_lag_stored": -1, "txmsgs": 0, "txbytes": 0,
                        "rxmsgs": 0, "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0, "msgs_inflight": 0,
                        "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0}
                }}
        },
        "cgrp": {"state": "up", "stateage": 1, "join_state": "steady", "rebalance_age": 1,
            "rebalance_cnt": 1, "rebalance_reason": "", "assignment_size": 2}
    }"#;

    #[test]
    fn the_partition_leaders_silence_counts_and_unknown_watermarks_are_left_out() {
        let at = Instant::now();
        let s = HealthSnapshot::from_statistics(&stats(STATS), at);
        // The leader has been silent 7 s; the coordinator answered 0.2 s ago
        // but serves no partition, so it does not hide the leader's silence.
        assert_eq!(s.silent_for, Some(Duration::from_secs(7)));
        assert_eq!(s.last_response, at.checked_sub(Duration::from_secs(7)));
        assert_eq!(s.high_watermarks, BTreeMap::from([(("clicks".to_string(), 0), 42)]));
        assert_eq!((s.group_state.as_str(), s.join_state.as_str()), ("up", "steady"));
    }

    #[test]
    fn without_partitions_any_brokers_answer_counts() {
        let mut st = stats(STATS);
        for b in st.brokers.values_mut() {
            b.toppars.clear();
        }
        let s = HealthSnapshot::from_statistics(&st, Instant::now());
        assert_eq!(s.silent_for, Some(Duration::from_millis(200)));
    }

    #[test]
    fn a_leader_that_never_answered_leaves_no_last_response() {
        let mut st = stats(STATS);
        st.brokers.get_mut("127.0.0.1:9092/1").expect("broker").rxidle = -1;
        let s = HealthSnapshot::from_statistics(&st, Instant::now());
        assert_eq!(s.silent_for, None);
        assert_eq!(s.last_response, None);
    }

    #[test]
    fn a_reconnected_broker_that_has_not_answered_yet_keeps_the_last_answer_seen() {
        let h = ClientHealth::default();
        let t0 = Instant::now();
        h.update_at(&stats(STATS), t0);
        let before = h.snapshot().last_response.expect("an answer 7 s before");
        // The broker restarted: its new connection has received nothing yet.
        let mut st = stats(STATS);
        st.brokers.get_mut("127.0.0.1:9092/1").expect("broker").rxidle = -1;
        h.update_at(&st, t0 + Duration::from_secs(4));
        let s = h.snapshot();
        assert_eq!(s.silent_for, None);
        assert_eq!(s.last_response, Some(before), "not 'never', not the start");
        // It answers again: the newer answer wins.
        st.brokers.get_mut("127.0.0.1:9092/1").expect("broker").rxidle = 100_000;
        h.update_at(&st, t0 + Duration::from_secs(6));
        assert_eq!(h.snapshot().last_response, Some(t0 + Duration::from_secs(6) - Duration::from_millis(100)));
    }

    #[test]
    fn shared_health_keeps_the_latest_statistics() {
        let h = ClientHealth::default();
        assert_eq!(h.snapshot(), HealthSnapshot::default());
        h.update(&stats(STATS));
        assert!(h.snapshot().at.is_some());
    }
}
