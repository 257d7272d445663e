//! Partitions that move between workers are restored from the changelog,
//! not replayed from the inputs (README "Scaling"). On tansu (the shared
//! test broker, PostgreSQL storage): its group coordinator copes with
//! members that leave cleanly (SIGTERM), which is all these tests do.
//!
//! - A worker with an empty store takes over every partition of a stopped
//!   one: it restores them, processes no input record below the stopped
//!   worker's offsets (`cohort_input_records_total`), and the pair ends with
//!   the outputs and states of one uninterrupted worker. A customer
//!   forgotten just before the move is absent from the new owner's store.
//! - With a warm standby, the survivor of a clean stop restores nothing on
//!   takeover: its standby had caught up.
//! - A worker SIGKILLed in the middle of a restore restarts and completes
//!   it: its store ends with exactly the changelog's latest states.

mod common;

use cohort_core::event::{Event, EventKind};
use cohort_e2e::TestBroker;
use common::{
    assert_same_customer_states, http_get, http_status, outputs_by_decision, profiles_then_clicks, sample, Deployment,
    WorkerProcess, INPUTS,
};
use std::time::{Duration, Instant};

const RULES: &str = include_str!("../../../deploy/rules.yaml");
const EVENTS: usize = 6_000;

/// The sum of `cohort_input_records_total` over the inputs.
fn inputs_processed(d: &Deployment, http: &str) -> f64 {
    INPUTS.iter().map(|t| d.records_committed(http, t).unwrap_or(0.0)).sum()
}

fn restored_records(http: &str, kind: &str) -> f64 {
    let text = http_get(http, "/metrics").unwrap_or_default();
    sample(&text, &format!("cohort_restore_records_total{{kind=\"{kind}\"}}")).unwrap_or(0.0)
}

/// Waits until `worker` logs `needle` `times` times.
async fn wait_logged(worker: &mut WorkerProcess, needle: &str, times: usize, deadline: Duration) {
    let until = Instant::now() + deadline;
    while worker.log_text().matches(needle).count() < times {
        worker.assert_running();
        assert!(Instant::now() < until, "no {times}× {needle:?} within {deadline:?}:\n{}", worker.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A forget is a null value: its event time is the record's timestamp,
/// set here to the event's so that both deployments decide the same.
async fn produce_forget(d: &Deployment, forget: &Event) {
    let p = cohort_kafka::OutputProducer::new(&d.bootstrap, &Default::default()).expect("producer");
    let rec = cohort_kafka::OutputRecord {
        topic: d.topic_of(forget).into(),
        key: Some(forget.customer.clone().into_bytes()),
        value: None,
        headers: vec![],
        timestamp: Some(forget.time.as_millis()),
        partition: None,
    };
    p.send_all(std::slice::from_ref(&rec)).await.expect("produce the forget");
}

/// The same decisions, each under one id. Output ids derive from the input
/// records' topics (README, "Guarantees") and each deployment has topics of
/// its own, so two deployments are compared by decision
/// (`common::outputs_by_decision`, which also fails on an id that carries two
/// different contents).
async fn assert_same_outputs(reference: &Deployment, other: &Deployment) {
    for topic in ["segment-changes", "next-best-offers"] {
        let want = outputs_by_decision(&reference.read_all(topic).await);
        let got = outputs_by_decision(&other.read_all(topic).await);
        assert!(!want.is_empty(), "the traffic produces {topic}");
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).take(3).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).take(3).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{topic}: decisions missing {missing:?}, invented {extra:?}");
        assert_eq!(got.len(), want.len(), "{topic}: as many decisions as one worker's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_an_empty_store_restores_and_reads_no_input_twice() {
    let broker = TestBroker::shared();
    let (profiles, clicks) = profiles_then_clicks(41, EVENTS);
    // A customer forgotten while its partition moves: the forget is the
    // first worker's last input.
    let forgotten = profiles[0].customer.clone();
    let forget =
        Event { id: "forget-1".into(), customer: forgotten.clone(), time: profiles[0].time, kind: EventKind::Forget };
    let (early, late) = clicks.split_at(clicks.len() / 2);

    let reference = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let moved = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    // Profiles first, processed before any click is produced: across input
    // topics the order in which a worker reads records depends on fetching,
    // and a click decided before its customer's profile decides otherwise.
    for d in [&reference, &moved] {
        d.produce(&profiles).await;
    }
    let mut one = reference.start_worker("reference");
    let mut first = moved.start_worker("first");
    reference.wait_caught_up(Duration::from_secs(300), &mut one).await;
    moved.wait_caught_up(Duration::from_secs(300), &mut first).await;
    for d in [&reference, &moved] {
        d.produce(early).await;
    }
    // The forget once everything before it is processed: across input
    // topics the order of records is not fixed, and a click processed after
    // it would bring the customer back.
    reference.wait_caught_up(Duration::from_secs(300), &mut one).await;
    moved.wait_caught_up(Duration::from_secs(300), &mut first).await;
    for d in [&reference, &moved] {
        produce_forget(d, &forget).await;
    }
    moved.wait_caught_up(Duration::from_secs(300), &mut first).await;
    let first_http = first.http_addr(Duration::from_secs(30));
    let before_move = inputs_processed(&moved, &first_http);
    assert_eq!(before_move as usize, profiles.len() + early.len() + 1, "the first worker processed its half");
    assert!(first.terminate().success(), "the first worker stops cleanly:\n{}", first.log_tail());

    // The second worker's store is empty: everything it knows comes from the changelog.
    let mut second = moved.start_member("second");
    let http = second.http_addr(Duration::from_secs(30));
    wait_logged(&mut second, "partition restored from the changelog", 2, Duration::from_secs(120)).await;
    let restored = restored_records(&http, "active");
    assert!(restored > 0.0, "the second worker restored states:\n{}", second.log_tail());
    let customer = http_status(&http, &format!("/admin/customers/{forgotten}")).map(|(status, _)| status);
    assert_eq!(customer, Some(404), "the forgotten customer is not in the new owner's store");

    reference.produce(late).await;
    moved.produce(late).await;
    moved.wait_caught_up(Duration::from_secs(300), &mut second).await;
    reference.wait_caught_up(Duration::from_secs(300), &mut one).await;
    // No input record below the first worker's offsets was processed again.
    assert_eq!(inputs_processed(&moved, &http) as usize, late.len(), "the second worker read only what came after");
    eprintln!("restored {restored} changelog records; processed {} new input records", late.len());

    assert_same_outputs(&reference, &moved).await;
    assert_same_customer_states(&reference, &moved).await;
    assert!(second.terminate().success());
    assert!(one.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_standby_takes_over_without_restoring_what_it_followed() {
    let broker = TestBroker::shared();
    let (profiles, clicks) = profiles_then_clicks(43, EVENTS);
    let (early, late) = clicks.split_at(clicks.len() / 2);
    let standby = "\n[restore]\nstandby_replicas = 1\nstandby_interval = \"200ms\"\n";

    let reference = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let pair = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let config = std::fs::read_to_string(&pair.config).expect("read config");
    std::fs::write(&pair.config, format!("{config}{standby}")).expect("write config");
    // Profiles processed before any click is produced (see the first test).
    for d in [&reference, &pair] {
        d.produce(&profiles).await;
    }
    let mut one = reference.start_worker("reference");
    let mut a = pair.start_worker("a");
    let mut b = pair.start_member("b");
    reference.wait_caught_up(Duration::from_secs(300), &mut one).await;
    pair.wait_caught_up(Duration::from_secs(300), &mut a).await;
    for d in [&reference, &pair] {
        d.produce(early).await;
    }
    // Each owns one partition and follows the other's.
    wait_logged(&mut a, "partition ready", 1, Duration::from_secs(120)).await;
    wait_logged(&mut b, "partition ready", 1, Duration::from_secs(120)).await;
    pair.wait_caught_up(Duration::from_secs(300), &mut a).await;
    let b_http = b.http_addr(Duration::from_secs(30));
    // The standby has caught up when its count stops moving over a few of its rounds.
    let until = Instant::now() + Duration::from_secs(120);
    let mut last = -1.0;
    loop {
        let now = restored_records(&b_http, "standby");
        if now > 0.0 && now == last {
            break;
        }
        last = now;
        assert!(Instant::now() < until, "b's standby never settled:\n{}", b.log_tail());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let active_before = restored_records(&b_http, "active");
    assert!(a.terminate().success(), "a stops cleanly:\n{}", a.log_tail());
    wait_logged(&mut b, "partition ready", 2, Duration::from_secs(120)).await;
    assert_eq!(
        restored_records(&b_http, "active") - active_before,
        0.0,
        "the takeover restored records its standby already had:\n{}",
        b.log_tail()
    );

    reference.produce(late).await;
    pair.produce(late).await;
    pair.wait_caught_up(Duration::from_secs(300), &mut b).await;
    reference.wait_caught_up(Duration::from_secs(300), &mut one).await;
    assert_same_outputs(&reference, &pair).await;
    assert_same_customer_states(&reference, &pair).await;
    assert!(b.terminate().success());
    assert!(one.terminate().success());
}

/// A changelog written as a worker writes it: `customers` states in
/// partition 0 (each customer twice, the later value wins), a tombstone for
/// every tenth, then partition 0's metadata record. Returns the states the
/// store must end with.
async fn write_changelog(d: &Deployment, customers: usize) -> std::collections::BTreeMap<String, Vec<u8>> {
    use cohort_core::partition::{changelog_key, PartitionMeta};
    let p = cohort_kafka::OutputProducer::new(&d.bootstrap, &Default::default()).expect("producer");
    let topic: std::sync::Arc<str> = d.topic("cohort-changelog").into();
    let record = |key: String, value: Option<Vec<u8>>| cohort_kafka::OutputRecord {
        topic: topic.clone(),
        key: Some(key.into_bytes()),
        value,
        headers: vec![],
        timestamp: None,
        partition: Some(0),
    };
    let mut want = std::collections::BTreeMap::new();
    for round in 0..2u8 {
        for chunk in (0..customers).collect::<Vec<_>>().chunks(10_000) {
            let recs: Vec<_> = chunk
                .iter()
                .map(|i| {
                    let customer = format!("c-{i:07}");
                    let value = (round == 0 || i % 10 != 0).then(|| vec![round; 100]);
                    match &value {
                        Some(v) => want.insert(customer.clone(), v.clone()),
                        None => want.remove(&customer),
                    };
                    record(customer, value)
                })
                .collect();
            p.send_all(&recs).await.expect("produce the changelog");
        }
    }
    p.send_all(&[record(changelog_key(0), Some(PartitionMeta::default().encode()))]).await.expect("produce the meta");
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_a_restore_completes_it_with_identical_states() {
    const CUSTOMERS: usize = 60_000;
    let broker = TestBroker::shared();
    let d = Deployment::new(broker.bootstrap(), 1, RULES, "").await;
    // Small write batches, so the restore shows progress many times.
    let config = std::fs::read_to_string(&d.config).expect("read config");
    std::fs::write(&d.config, format!("{config}\n[restore]\nmax_memory_bytes = 4194304\n")).expect("write config");
    let want = write_changelog(&d, CUSTOMERS).await;
    let total = (2 * CUSTOMERS) as f64;

    let mut first = d.start_worker("first");
    let http = first.http_addr(Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let done = restored_records(&http, "active");
        if done > 0.0 && done < total {
            break;
        }
        assert!(done < total, "the restore finished before it could be interrupted; make the changelog longer");
        assert!(Instant::now() < until, "no restore progress within 120s:\n{}", first.log_tail());
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill();
    eprintln!("killed after {} of {total} records", restored_records(&http, "active"));

    let mut second = d.start_worker("second");
    wait_logged(&mut second, "partition restored from the changelog", 1, Duration::from_secs(300)).await;
    assert!(second.terminate().success(), "the restarted worker stops cleanly:\n{}", second.log_tail());
    let store = cohort_store::Store::open(d.dir.path().join("store"), &Default::default()).expect("open the store");
    let got: std::collections::BTreeMap<String, Vec<u8>> =
        store.iter_partition_states(0).map(|r| r.expect("a stored state")).map(|(c, v)| (c, v.to_vec())).collect();
    assert_eq!(got.len(), want.len(), "as many customers as the changelog's latest states");
    assert!(got == want, "the restored states differ from the changelog's latest");
}
