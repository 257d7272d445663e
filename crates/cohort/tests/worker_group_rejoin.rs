//! A worker rejoins its consumer group by itself after the broker has been
//! silent past the group's session timeout, on librdkafka's mock cluster.
//!
//! `worker_broker_pause.rs` freezes tansu, whose 0.6.0 group coordinator can
//! keep the expired member as the group's leader until the broker restarts,
//! so there the worker can only say that it waits for its group. The mock
//! cluster's coordinator behaves as Kafka's: it expires a member that stops
//! heartbeating and lets the next JoinGroup form a new generation. Here,
//! twice in one run, the broker goes silent for three session timeouts:
//!
//! 1. unresponsive: every answer held back by 30 s of round-trip time
//!    (connections stay open, requests are taken and not answered, as with
//!    a broker in a long GC pause);
//! 2. unreachable: the broker down, its connections closed and new ones
//!    refused, so the coordinator expires the worker's membership.
//!
//! After each, the worker must get a new assignment and consume again within
//! [`REJOIN_WITHIN`] with no restart of anything, and at the end its outputs
//! and customer states must equal those of an undisturbed worker on a second
//! mock cluster: nothing lost, nothing different. Waits are on progress
//! (a status, a count, a log line), except the outage itself, which is the
//! scenario.

mod common;

use common::{
    assert_same_customer_states, http_get, http_status, outputs_by_decision, profiles_then_clicks, Deployment,
    WorkerProcess,
};
use rdkafka::mocking::MockCluster;
use std::time::{Duration, Instant};

const RULES: &str = include_str!("../../../deploy/rules.yaml");
/// Generous: the test machine is small and shared.
const DEADLINE: Duration = Duration::from_secs(120);
/// The test configs' `session.timeout.ms` (see `common`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// How long each outage lasts: well past the session timeout.
const OUTAGE: Duration = Duration::from_secs(18);
/// How long after the broker is back the worker must be consuming again.
const REJOIN_WITHIN: Duration = Duration::from_secs(60);
const _: () = assert!(OUTAGE.as_secs() >= 3 * SESSION_TIMEOUT.as_secs());
/// Every mock broker (the clusters here have one).
const ALL_BROKERS: i32 = -1;

/// What the worker says about itself, for failure messages.
fn worker_state(http: &str, worker: &WorkerProcess) -> String {
    let readyz = http_status(http, "/readyz").map(|(c, b)| format!("{c} {}", b.trim()));
    let stalls: Vec<String> = http_get(http, "/metrics")
        .map(|m| {
            m.lines()
                .filter(|l| l.starts_with("cohort_worker_stall_seconds{") || l.starts_with("cohort_worker_ready "))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    format!("/readyz: {readyz:?}\n{}\nits log:\n{}", stalls.join("\n"), worker.log_tail())
}

/// How many times the worker has logged a new assignment.
fn assignments(worker: &WorkerProcess) -> usize {
    worker.log_text().lines().filter(|l| l.contains("partitions assigned")).count()
}

/// Polls `/readyz` until its status is `code`.
fn wait_readyz(http: &str, code: u16, worker: &mut WorkerProcess, what: &str) {
    let until = Instant::now() + DEADLINE;
    loop {
        worker.assert_running();
        if http_status(http, "/readyz").is_some_and(|(c, _)| c == code) {
            return;
        }
        assert!(
            Instant::now() < until,
            "/readyz did not answer {code} ({what}) within {DEADLINE:?}:\n{}",
            worker_state(http, worker)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the worker has committed `want` clicks, at most `within`.
async fn wait_clicks(
    d: &Deployment,
    http: &str,
    worker: &mut WorkerProcess,
    want: usize,
    within: Duration,
    what: &str,
) {
    let from = Instant::now();
    loop {
        worker.assert_running();
        let got = d.records_committed(http, "clickstream").unwrap_or(0.0);
        if got >= want as f64 {
            eprintln!("{what}: {want} clicks committed after {:?}", from.elapsed());
            return;
        }
        assert!(
            from.elapsed() < within,
            "{what}: {got} of {want} clicks committed after {within:?}; the worker:\n{}",
            worker_state(http, worker)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rejoins_its_group_after_the_broker_was_silent_past_the_session_timeout_and_loses_nothing() {
    let reference_cluster = MockCluster::new(1).expect("a mock cluster");
    let cluster = MockCluster::new(1).expect("a mock cluster");
    let (profiles, clicks) = profiles_then_clicks(37, 6_000);
    let third = clicks.len() / 3;
    let phases = [&clicks[..third], &clicks[third..2 * third], &clicks[2 * third..]];
    let extra = "stall_timeout = \"5s\"\n";
    let reference = Deployment::on_mock_cluster(&reference_cluster, 2, RULES, extra);
    let d = Deployment::on_mock_cluster(&cluster, 2, RULES, extra);
    reference.produce(&profiles).await;
    d.produce(&profiles).await;
    let mut ref_worker = reference.start_worker("reference");
    let mut worker = d.start_worker("disturbed");
    let http = worker.http_addr(DEADLINE);
    reference.wait_caught_up(DEADLINE, &mut ref_worker).await;
    d.wait_caught_up(DEADLINE, &mut worker).await;
    reference.produce(&clicks).await;
    d.produce(phases[0]).await;
    wait_clicks(&d, &http, &mut worker, third, DEADLINE, "before the first outage").await;
    wait_readyz(&http, 200, &mut worker, "ready before the outages");

    let mut committed = third;
    for (round, (outage, next)) in ["unresponsive", "unreachable"].into_iter().zip(&phases[1..]).enumerate() {
        let assigned_before = assignments(&worker);
        let log_before = worker.log_text().lines().count();
        match outage {
            "unresponsive" => cluster.broker_round_trip_time(ALL_BROKERS, Duration::from_secs(30)),
            _ => cluster.broker_down(ALL_BROKERS),
        }
        .expect("silence the mock broker");
        let silent_at = Instant::now();
        wait_readyz(&http, 503, &mut worker, &format!("not ready while the broker is {outage}"));
        eprintln!("round {round}: /readyz 503 {:?} after the broker became {outage}", silent_at.elapsed());
        while silent_at.elapsed() < OUTAGE {
            worker.assert_running();
            assert_eq!(http_get(&http, "/healthz").as_deref(), Some("ok\n"), "/healthz answers during the outage");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match outage {
            "unresponsive" => cluster.broker_round_trip_time(ALL_BROKERS, Duration::ZERO),
            _ => cluster.broker_up(ALL_BROKERS),
        }
        .expect("restore the mock broker");
        let back_at = Instant::now();
        d.produce(next).await;
        committed += next.len();
        wait_clicks(&d, &http, &mut worker, committed, REJOIN_WITHIN, &format!("after the broker was {outage}")).await;
        assert!(
            assignments(&worker) > assigned_before,
            "consuming again after the broker was {outage} means a new assignment (a rejoined group):\n{}",
            worker_state(&http, &worker)
        );
        wait_readyz(&http, 200, &mut worker, &format!("ready again after the broker was {outage}"));
        eprintln!("round {round}: consuming and ready {:?} after the broker came back", back_at.elapsed());
        // What the worker said about it: the stall, the lost and new assignment.
        for line in worker.log_text().lines().skip(log_before).filter(|l| {
            ["partitions assigned", "partitions revoked", "rebalance", "no progress", "progress again"]
                .iter()
                .any(|w| l.contains(w))
        }) {
            eprintln!("round {round}:   {line}");
        }
    }
    assert_eq!(committed, clicks.len());

    // Nothing lost, nothing different: the undisturbed run's outputs and states.
    reference.wait_caught_up(DEADLINE, &mut ref_worker).await;
    d.wait_caught_up(DEADLINE, &mut worker).await;
    for topic in ["segment-changes", "next-best-offers"] {
        let want = outputs_by_decision(&reference.read_all(topic).await);
        let got = outputs_by_decision(&d.read_all(topic).await);
        assert!(!want.is_empty(), "the traffic produces {topic}");
        assert_eq!(got.len(), want.len(), "{topic}: the same outputs");
        for decision in want.keys() {
            assert!(got.contains_key(decision), "{topic}: output {decision} missing or different");
        }
    }
    assert_same_customer_states(&reference, &d).await;
    assert!(worker.terminate().success());
    assert!(ref_worker.terminate().success());
}
