//! A broker outage end to end: the only broker is killed with SIGKILL while
//! the worker is mid-stream, stays down for 30 seconds, and is restarted on
//! the same data. The worker must stay alive (and answer /healthz) through
//! the outage and commit nothing while it cannot be acknowledged (stall),
//! resume by itself soon after the broker is back, and emit every output an
//! uninterrupted worker emits (duplicates only with identical ids and
//! contents), ending with the same customer states and dead letters; then
//! stop cleanly on SIGTERM.
//!
//! The worker under test runs on a private tansu broker the test can kill;
//! the uninterrupted reference runs at the same time on the shared broker.
//! Traffic comes in two phases, one input topic each (profiles with consent,
//! then clicks), as in `worker_recovery.rs`, so per partition both workers
//! see events in the same order whatever the batch boundaries. The outage
//! starts during the clicks; the rest of the clicks are produced after the
//! broker is back.

mod common;

use cohort_core::event::{Event, EventKind};
use cohort_e2e::{Record, Tansu, TestBroker};
use cohort_loadgen::{Config as LoadConfig, Generator};
use common::{assert_same_customer_states, decision_key, http_get, outputs_by_decision, Deployment, WorkerProcess};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const RULES: &str = include_str!("../../../deploy/rules.yaml");
const CLICKS: usize = 12_000;
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// How soon after the broker's restart the worker must have caught up with
/// what was produced before the outage.
const RESUME_WITHIN: Duration = Duration::from_secs(25);
/// Generous: the test machine is small and shared.
const DEADLINE: Duration = Duration::from_secs(120);

/// Profiles (with consent, so offers are decided) and clicks, as two phases.
fn traffic() -> (Vec<Event>, Vec<Event>) {
    let config = LoadConfig { customers: 300, seed: 23, ..LoadConfig::default() };
    let events: Vec<Event> = Generator::new(config).expect("loadgen config").take(CLICKS * 2).collect();
    let profiles = events.iter().filter(|e| matches!(e.kind, EventKind::ProfileUpdate(_))).cloned().collect();
    let clicks = events.into_iter().filter(|e| matches!(e.kind, EventKind::Click(_))).take(CLICKS).collect();
    (profiles, clicks)
}

/// Each dead letter's reason and source (topic without the deployment's
/// prefix, partition, offset).
async fn dead_letters(d: &Deployment) -> BTreeSet<[String; 4]> {
    let h = |r: &Record, k: &str| String::from_utf8_lossy(r.header(k).unwrap_or_default()).into_owned();
    let prefix = format!("{}-", d.prefix);
    d.read_all("cohort-dlq")
        .await
        .iter()
        .map(|r| {
            let topic = h(r, "cohort.dlq.topic");
            [
                h(r, "cohort.dlq.reason"),
                topic.strip_prefix(&prefix).unwrap_or(&topic).to_string(),
                h(r, "cohort.dlq.partition"),
                h(r, "cohort.dlq.offset"),
            ]
        })
        .collect()
}

/// The number of records in the deployment's clickstream topic (the sum
/// of its partitions' high watermarks).
fn clickstream_end(d: &Deployment) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = cohort_e2e::consumer_config(&d.bootstrap).create().expect("probe consumer");
    (0..d.partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(&d.topic("clickstream"), p, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("watermarks of clickstream/{p}: {e}"));
            high
        })
        .sum()
}

/// Reads `short` from the beginning until every id in `want` is present.
async fn read_until_decisions(d: &Deployment, short: &str, want: &BTreeSet<String>, w: &mut WorkerProcess) {
    let mut missing = want.clone();
    let mut seen = 0;
    let started = Instant::now();
    let res = cohort_e2e::consume_until(&d.bootstrap, &[&d.topic(short)], DEADLINE, |recs| {
        for r in &recs[seen..] {
            missing.remove(&decision_key(r));
        }
        seen = recs.len();
        missing.is_empty()
    })
    .await;
    w.assert_running();
    match res {
        Ok(_) => eprintln!("{short}: all {} expected outputs present after {:?}", want.len(), started.elapsed()),
        Err(e) => panic!(
            "{short}: {} of {} outputs of the uninterrupted run still missing after the outage ({e:#}); worker log:\n{}",
            missing.len(),
            want.len(),
            w.log_tail()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_for_30s_stalls_the_worker_which_then_resumes_without_loss() {
    let test_started = Instant::now();
    let shared = TestBroker::shared();
    let mut broker = Tansu::start().expect("start a private tansu");
    let (profiles, clicks) = traffic();
    let (first_clicks, rest_clicks) = clicks.split_at(clicks.len() * 5 / 6);

    let reference = Deployment::new(shared.bootstrap(), 2, RULES, "").await;
    let outage = Deployment::new(&broker.bootstrap(), 2, RULES, "").await;
    reference.produce(&profiles).await;
    outage.produce(&profiles).await;
    let mut ref_worker = reference.start_worker("reference");
    let mut worker = outage.start_worker("outage");
    let http = worker.http_addr(DEADLINE);
    reference.wait_caught_up(DEADLINE, &mut ref_worker).await;
    outage.wait_caught_up(DEADLINE, &mut worker).await;

    // The reference gets every click at once and is never interrupted.
    reference.produce(&clicks).await;
    let t = Instant::now();
    outage.produce(first_clicks).await;
    eprintln!("produced {} clicks in {:?}", first_clicks.len(), t.elapsed());
    // Mid-stream: kill the broker as soon as the worker has committed a few
    // batches of clicks (/metrics counts records once their batch is committed).
    let until = Instant::now() + DEADLINE;
    let read_before_kill = loop {
        worker.assert_running();
        let n = outage.records_committed(&http, "clickstream").unwrap_or(0.0);
        if n >= 200.0 {
            break n;
        }
        assert!(Instant::now() < until, "the worker read no clicks within {DEADLINE:?}:\n{}", worker.log_tail());
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    broker.kill().expect("kill the broker");
    let down_at = Instant::now();
    eprintln!(
        "broker killed (SIGKILL) {:?} into the test, once the worker had committed {read_before_kill} of {} clicks",
        test_started.elapsed(),
        first_clicks.len()
    );

    // The outage: the worker must stay up and keep answering /healthz, and
    // stall: commit nothing while no output can be acknowledged.
    let mut probes = 0;
    let mut stalled_at = None;
    while down_at.elapsed() < OUTAGE {
        worker.assert_running();
        assert_eq!(
            http_get(&http, "/healthz").as_deref(),
            Some("ok\n"),
            "/healthz stopped answering {:?} into the broker outage; worker log:\n{}",
            down_at.elapsed(),
            worker.log_tail()
        );
        probes += 1;
        if stalled_at.is_none() && down_at.elapsed() >= Duration::from_secs(2) {
            stalled_at = outage.records_committed(&http, "clickstream");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    worker.assert_running();
    let stalled_at = stalled_at.expect("/metrics answers during the outage");
    let read_at_end = outage.records_committed(&http, "clickstream").expect("/metrics answers during the outage");
    eprintln!(
        "outage over: {probes} health probes answered; clicks committed 2s into the outage {stalled_at}, at its end {read_at_end}"
    );
    assert!(
        stalled_at < first_clicks.len() as f64,
        "the worker had finished all {} clicks before the broker went down: the test did not catch it mid-stream",
        first_clicks.len()
    );
    assert_eq!(
        read_at_end,
        stalled_at,
        "the worker committed clicks while the broker was down (outputs unacknowledged?); log:\n{}",
        worker.log_tail()
    );

    broker.restart().expect("restart the broker on the same data");
    let up_at = Instant::now();
    // The broker kept every acknowledged input record (else a failure below
    // would be the broker's, not the worker's).
    assert_eq!(clickstream_end(&outage), first_clicks.len() as i64, "the restarted broker lost input records");
    outage.produce(rest_clicks).await;
    eprintln!("broker back; the rest of the clicks produced {:?} later", up_at.elapsed());
    // Resumes promptly: librdkafka reconnects within its backoff (up to 10s)
    // and the worker then works off its backlog in about a second; the slack
    // is for a loaded machine. (Each consumer error queued during the outage
    // used to cost a 200ms retry pause: about 40s here.)
    let resumed = loop {
        worker.assert_running();
        if outage.records_committed(&http, "clickstream").is_some_and(|n| n >= first_clicks.len() as f64) {
            break up_at.elapsed();
        }
        assert!(up_at.elapsed() < DEADLINE, "the worker did not resume within {DEADLINE:?}:\n{}", worker.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("the clicks produced before the outage were all committed {resumed:?} after the broker's restart");
    assert!(
        resumed < RESUME_WITHIN,
        "the worker took {resumed:?} after the broker's restart to process what it held before the outage; log:\n{}",
        worker.log_tail()
    );

    // Resumed: every output of the uninterrupted run arrives.
    reference.wait_caught_up(DEADLINE, &mut ref_worker).await;
    let mut want = BTreeMap::new();
    for topic in ["segment-changes", "next-best-offers"] {
        let by_decision = outputs_by_decision(&reference.read_all(topic).await);
        assert!(!by_decision.is_empty(), "the traffic produces {topic}");
        let decisions: BTreeSet<String> = by_decision.keys().cloned().collect();
        read_until_decisions(&outage, topic, &decisions, &mut worker).await;
        want.insert(topic, by_decision);
    }
    // Every input processed and committed; then compare everything.
    outage.wait_caught_up(DEADLINE, &mut worker).await;
    for (topic, want) in &want {
        let records = outage.read_all(topic).await;
        let got = outputs_by_decision(&records);
        let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(extra.is_empty(), "{topic}: {} outputs the uninterrupted run never emitted: {extra:?}", extra.len());
        for decision in want.keys() {
            assert!(got.contains_key(decision), "{topic}: output {decision} missing from the outage run");
        }
        eprintln!(
            "{topic}: {} outputs, {} records with the outage ({} duplicates)",
            want.len(),
            records.len(),
            records.len() - got.len()
        );
    }
    assert_same_customer_states(&reference, &outage).await;
    // Dead letters: the same input records, for the same reasons.
    assert_eq!(
        dead_letters(&outage).await,
        dead_letters(&reference).await,
        "dead letters differ from the uninterrupted run"
    );

    worker.assert_running();
    let status = worker.terminate();
    assert!(status.success(), "worker exited with {status} on SIGTERM after the outage");
    assert!(ref_worker.terminate().success());
    eprintln!("done in {:?}", test_started.elapsed());
}
