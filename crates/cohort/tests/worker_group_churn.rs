//! Three workers, one SIGKILLed mid-stream and one joining later: together
//! their outputs and final customer states equal one worker's. Partitions
//! move twice (to the survivor when the killed member's session expires,
//! then to the late joiner) and are restored from the changelog each time,
//! including a batch the killed worker may have left half-written there.
//!
//! On librdkafka's mock cluster, hosted in this test process and reached by
//! the worker processes over loopback: after a member is SIGKILLed, tansu
//! 0.6.0's group coordinator has been seen to keep the dead member as the
//! group's leader, so the group never rebalances there. The mock cluster's
//! coordinator expires it after `session.timeout.ms` as Kafka's does.

mod common;

use common::{
    assert_same_customer_states, http_get, outputs_by_decision, profiles_then_clicks, sample, Deployment, WorkerProcess,
};
use rdkafka::mocking::MockCluster;
use std::time::{Duration, Instant};

const RULES: &str = include_str!("../../../deploy/rules.yaml");
const EVENTS: usize = 9_000;

/// Waits until `worker` logs `needle` `times` times.
fn wait_logged(worker: &mut WorkerProcess, needle: &str, times: usize, deadline: Duration) {
    let until = Instant::now() + deadline;
    while worker.log_text().matches(needle).count() < times {
        worker.assert_running();
        assert!(Instant::now() < until, "no {times}x {needle:?} within {deadline:?}:\n{}", worker.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the worker owns `partitions` partitions, all restored.
fn wait_owning(worker: &mut WorkerProcess, partitions: f64, deadline: Duration) {
    let http = worker.http_addr(Duration::from_secs(30));
    let until = Instant::now() + deadline;
    loop {
        let metrics = http_get(&http, "/metrics").unwrap_or_default();
        let assigned = sample(&metrics, "cohort_consumer_assigned_partitions");
        let restoring = sample(&metrics, "cohort_consumer_restoring_partitions");
        if assigned == Some(partitions) && restoring == Some(0.0) {
            return;
        }
        worker.assert_running();
        assert!(
            Instant::now() < until,
            "not owning {partitions} restored partitions within {deadline:?} ({assigned:?} assigned, {restoring:?} restoring):\n{}",
            worker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_killed_one_late_end_as_one_worker() {
    let reference_cluster = MockCluster::new(1).expect("a mock cluster");
    let cluster = MockCluster::new(1).expect("a mock cluster");
    let reference = Deployment::on_mock_cluster(&reference_cluster, 4, RULES, "");
    let d = Deployment::on_mock_cluster(&cluster, 4, RULES, "");
    let (profiles, clicks) = profiles_then_clicks(47, EVENTS);
    let (first, rest) = clicks.split_at(clicks.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);

    // Profiles processed before any click is produced: across input topics
    // the order in which a worker reads records depends on fetching, and a
    // click decided before its customer's profile decides otherwise.
    for dep in [&reference, &d] {
        dep.produce(&profiles).await;
    }
    let mut one = reference.start_worker("reference");
    let mut a = d.start_worker("a");
    let mut b = d.start_member("b");
    reference.wait_caught_up(Duration::from_secs(300), &mut one).await;
    d.wait_caught_up(Duration::from_secs(300), &mut a).await;
    for dep in [&reference, &d] {
        dep.produce(first).await;
    }
    wait_logged(&mut a, "partition ready", 1, Duration::from_secs(120));
    wait_logged(&mut b, "partition ready", 1, Duration::from_secs(120));

    // a dies mid-stream: killed while the second third is being processed.
    let changelog = d.read_all("cohort-changelog").await.len();
    reference.produce(second).await;
    d.produce(second).await;
    let _ = d.read("cohort-changelog", Duration::from_secs(120), |r| r.len() >= changelog + 100).await;
    a.kill();
    // b takes a's partitions once a's session expires, restoring them.
    wait_owning(&mut b, 4.0, Duration::from_secs(180));

    // c joins late and takes some partitions over from b.
    let mut c = d.start_member("c");
    wait_owning(&mut c, 2.0, Duration::from_secs(180));
    reference.produce(third).await;
    d.produce(third).await;

    reference.wait_caught_up(Duration::from_secs(300), &mut one).await;
    d.wait_caught_up(Duration::from_secs(300), &mut b).await;
    c.assert_running();
    assert!(
        c.log_text().contains("partition restored from the changelog"),
        "c restored what it took:\n{}",
        c.log_tail()
    );

    // Compared by decision: output ids derive from each deployment's own
    // input topics (README, "Guarantees").
    for topic in ["segment-changes", "next-best-offers"] {
        let want = outputs_by_decision(&reference.read_all(topic).await);
        let got = outputs_by_decision(&d.read_all(topic).await);
        assert!(!want.is_empty(), "the traffic produces {topic}");
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            // The first affected customer's decisions in both, to show where
            // the histories part.
            let first = missing.first().or(extra.first()).expect("one");
            let customer = serde_json::from_str::<serde_json::Value>(first)
                .ok()
                .and_then(|v| v.get("customer").and_then(|c| c.as_str()).map(str::to_string));
            let of = |m: &std::collections::BTreeMap<String, String>| -> Vec<String> {
                let tag = format!("\"customer\":{:?}", customer.clone().unwrap_or_default());
                m.keys().filter(|k| k.contains(&tag)).cloned().collect()
            };
            panic!(
                "{topic}: the churn lost {} decisions and invented {}; customer {customer:?}:\none worker:\n{}\n\
                 churned group:\n{}",
                missing.len(),
                extra.len(),
                of(&want).join("\n"),
                of(&got).join("\n")
            );
        }
    }
    assert_same_customer_states(&reference, &d).await;
    assert!(c.terminate().success());
    assert!(b.terminate().success());
    assert!(one.terminate().success());
}
