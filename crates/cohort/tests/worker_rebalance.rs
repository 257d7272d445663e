//! Scaling out mid-stream: a second worker joins the group while the first
//! is processing, takes over half the partitions (its own, empty store
//! restores them from the changelog, README "Scaling"), and together they
//! emit every output a single uninterrupted worker emits, with the same
//! contents, and end with the same customer states.
//!
//! The first worker gives its partitions up in the rebalance only once its
//! batch in flight is committed: it must not log that it revoked with a
//! batch still uncommitted.

mod common;

use cohort_e2e::TestBroker;
use common::{assert_same_customer_states, outputs_by_decision, profiles_then_clicks, Deployment};
use std::time::Duration;

const RULES: &str = include_str!("../../../deploy/rules.yaml");
const EVENTS: usize = 12_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_mid_stream_takes_partitions_over_without_losing_or_changing_outputs() {
    let broker = TestBroker::shared();
    let (profiles, clicks) = profiles_then_clicks(23, EVENTS);
    let reference = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let scaled = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    reference.produce(&profiles).await;
    scaled.produce(&profiles).await;
    let mut ref_worker = reference.start_worker("reference");
    let mut first = scaled.start_worker("first");
    scaled.wait_caught_up(Duration::from_secs(120), &mut first).await;
    let changelog_before = scaled.read_all("cohort-changelog").await.len();
    reference.produce(&clicks).await;
    // Half the clicks, then a second member joins while the first is busy
    // with them; the rest once the group has rebalanced, so both workers
    // have input left after it.
    let (early, late) = clicks.split_at(clicks.len() / 2);
    scaled.produce(early).await;
    let _ = scaled.read("cohort-changelog", Duration::from_secs(120), |r| r.len() >= changelog_before + 300).await;
    let mut second = scaled.start_member("second");
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while !(second.log_text().contains("partition ready") && first.log_text().contains("partitions revoked")) {
        first.assert_running();
        second.assert_running();
        assert!(std::time::Instant::now() < until, "no rebalance within 120s:\n{}", second.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scaled.produce(late).await;

    reference.wait_caught_up(Duration::from_secs(300), &mut ref_worker).await;
    scaled.wait_caught_up(Duration::from_secs(300), &mut first).await;
    second.assert_running();

    assert!(
        !first.log_text().contains("not committed yet"),
        "the first worker revoked with its batch in flight uncommitted:\n{}",
        first.log_tail()
    );

    for topic in ["segment-changes", "next-best-offers"] {
        let want = outputs_by_decision(&reference.read_all(topic).await);
        let got_records = scaled.read_all(topic).await;
        let got = outputs_by_decision(&got_records);
        assert!(!want.is_empty(), "the traffic produces {topic}");
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        assert_eq!(missing, 0, "{topic}: outputs lost in the rebalance");
        assert_eq!(extra, 0, "{topic}: outputs a single worker never emitted");
        eprintln!(
            "{topic}: {} outputs, {} records with two workers ({} duplicates: the second replays its partitions)",
            want.len(),
            got_records.len(),
            got_records.len() - got.len()
        );
    }
    // Records fetched again after the rebalance are not processed twice: no
    // event of the scaled run is dead-lettered as a duplicate event id.
    let duplicates = |records: Vec<cohort_e2e::Record>| {
        records.iter().filter(|r| r.header("cohort.dlq.reason") == Some(b"duplicate_event_id".as_slice())).count()
    };
    let want = duplicates(reference.read_all("cohort-dlq").await);
    let got = duplicates(scaled.read_all("cohort-dlq").await);
    assert_eq!(got, want, "events dead-lettered as duplicates with two workers against one");
    assert_same_customer_states(&reference, &scaled).await;
    assert!(second.terminate().success(), "second stops cleanly:\n{}", second.log_tail());
    assert!(first.terminate().success(), "first stops cleanly:\n{}", first.log_tail());
    assert!(ref_worker.terminate().success(), "ref_worker stops cleanly:\n{}", ref_worker.log_tail());
}
