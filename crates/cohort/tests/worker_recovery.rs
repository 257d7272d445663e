//! Crash recovery end to end: a worker killed with SIGKILL mid-stream and
//! restarted emits every output an uninterrupted worker emits (duplicates
//! only with identical ids and contents) and ends with the same customer
//! states.
//!
//! Both workers read the same generated traffic from their own topics, in
//! two phases, one input topic each: the customers' profiles (with consent,
//! so offers are decided), then their clicks. Per partition a worker then sees
//! events in one order whatever the batch boundaries, which is what makes
//! "the same outputs" well defined (across input topics the order of two
//! records depends on fetching; see README, "Guarantees"). The crash happens
//! during the clicks.

mod common;

use cohort_e2e::TestBroker;
use common::{assert_same_customer_states, outputs_by_decision, profiles_then_clicks, Deployment};
use std::time::Duration;

const RULES: &str = include_str!("../../../deploy/rules.yaml");
const EVENTS: usize = 12_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_recovers_to_the_same_outputs_and_states() {
    let broker = TestBroker::shared();
    let (profiles, clicks) = profiles_then_clicks(11, EVENTS);
    let reference = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let crashed = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    reference.produce(&profiles).await;
    crashed.produce(&profiles).await;
    let mut ref_worker = reference.start_worker("reference");
    let mut worker = crashed.start_worker("first");
    reference.wait_caught_up(Duration::from_secs(120), &mut ref_worker).await;
    crashed.wait_caught_up(Duration::from_secs(120), &mut worker).await;
    let changelog_before = crashed.read_all("cohort-changelog").await.len();
    reference.produce(&clicks).await;
    crashed.produce(&clicks).await;
    // Let it commit part of the stream, then kill it without warning.
    let _ = crashed.read("cohort-changelog", Duration::from_secs(120), |r| r.len() >= changelog_before + 300).await;
    worker.kill();
    let mut worker = crashed.start_worker("restarted");

    ref_worker_wait(&reference, &mut ref_worker).await;
    crashed.wait_caught_up(Duration::from_secs(300), &mut worker).await;

    for topic in ["segment-changes", "next-best-offers"] {
        let want = reference.read_all(topic).await;
        let want_decisions = outputs_by_decision(&want);
        let got = crashed.read_all(topic).await;
        let got_decisions = outputs_by_decision(&got);
        assert!(!want_decisions.is_empty(), "the traffic produces {topic}");
        let missing: Vec<&String> = want_decisions.keys().filter(|k| !got_decisions.contains_key(*k)).collect();
        let extra: Vec<&String> = got_decisions.keys().filter(|k| !want_decisions.contains_key(*k)).collect();
        for decision in missing.iter().take(3) {
            let v: serde_json::Value = serde_json::from_str(decision).unwrap_or_default();
            eprintln!("missing {topic}: {v}");
            let customer = v["customer"].as_str().unwrap_or_default().to_string();
            for r in got.iter().filter(|r| r.key_str() == customer) {
                let g: serde_json::Value =
                    serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).unwrap_or_default();
                eprintln!("   crashed run has for {customer}: {g}");
            }
        }
        assert!(
            missing.is_empty(),
            "{topic}: {} outputs lost across the crash, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(3)]
        );
        assert!(extra.is_empty(), "{topic}: {} outputs the uninterrupted run never emitted", extra.len());
        eprintln!(
            "{topic}: {} outputs, {} records after the crash ({} duplicates)",
            want_decisions.len(),
            got.len(),
            got.len() - got_decisions.len()
        );
    }

    assert_same_customer_states(&reference, &crashed).await;
    assert!(worker.terminate().success());
    assert!(ref_worker.terminate().success());
}

async fn ref_worker_wait(d: &Deployment, w: &mut common::WorkerProcess) {
    d.wait_caught_up(Duration::from_secs(300), w).await;
}
