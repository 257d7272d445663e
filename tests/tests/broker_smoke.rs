//! Proves the end-to-end harness against a real broker: keyed records
//! produced to a 4-partition topic arrive exactly once in a consumer group,
//! and a broker killed mid-stream and restarted on its sqlite file loses
//! nothing.

use cohort_e2e::{consume_with, consumer, producer, send_all, unique_name, Record, Tansu, TestBroker};
use std::collections::HashMap;
use std::time::Duration;

const RECORDS: usize = 10_000;
const PARTITIONS: i32 = 4;

fn records(run: &str, n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("customer-{}", i % 997), format!("{run}:{i}"))).collect()
}

/// How often each value arrived; fails on anything that was never produced.
fn tally(produced: &[(String, String)], got: &[Record]) -> HashMap<String, usize> {
    let keys: HashMap<&str, &str> = produced.iter().map(|(k, v)| (v.as_str(), k.as_str())).collect();
    let mut seen = HashMap::new();
    for r in got {
        let v = r.value_str();
        let k = keys.get(v).unwrap_or_else(|| panic!("unexpected record {v:?}"));
        assert_eq!(*k, r.key_str(), "record {v} arrived with the wrong key");
        *seen.entry(v.to_string()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_arrive_exactly_once_in_a_consumer_group() {
    let broker = TestBroker::shared();
    let topic = unique_name("smoke");
    broker.create_topic(&topic, PARTITIONS).await.expect("create topic");

    let produced = records("once", RECORDS);
    let p = producer(broker.bootstrap(), Duration::from_secs(60)).expect("producer");
    send_all(&p, &topic, produced.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).await.expect("produce");

    let group = unique_name("smoke-group");
    let c = consumer(broker.bootstrap(), &group, &[&topic]).expect("consumer");
    let got = consume_with(&c, Duration::from_secs(120), |r| r.len() >= RECORDS).await.expect("consume");

    let seen = tally(&produced, &got);
    assert_eq!(seen.len(), RECORDS, "every record arrives");
    assert!(seen.values().all(|&n| n == 1), "no record arrives twice");

    // Same key, same partition: the contract cohort's co-partitioning relies on.
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    for r in &got {
        let p = *partition_of.entry(r.key_str()).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {} seen on two partitions", r.key_str());
    }
    let used: std::collections::HashSet<i32> = got.iter().map(|r| r.partition).collect();
    assert_eq!(used.len(), PARTITIONS as usize, "keys spread over all partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_and_restarted_loses_nothing() {
    let mut tansu = Tansu::start().expect("a private tansu (is it installed? run `make test`)");
    let bootstrap = tansu.bootstrap();
    let topic = unique_name("smoke-restart");
    cohort_e2e::create_topic(&bootstrap, &topic, PARTITIONS).await.expect("create topic");

    let produced = records("restart", RECORDS);
    let (first, second) = produced.split_at(RECORDS / 2);
    let p = producer(&bootstrap, Duration::from_secs(120)).expect("producer");
    send_all(&p, &topic, first.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
        .await
        .expect("produce the first half");

    // Read part of the first half, so the consumer group is mid-stream when the broker dies.
    let group = unique_name("smoke-restart-group");
    let c = consumer(&bootstrap, &group, &[&topic]).expect("consumer");
    let mut got =
        consume_with(&c, Duration::from_secs(120), |r| r.len() >= RECORDS / 4).await.expect("consume before the crash");

    tansu.kill().expect("kill broker");
    // The producer keeps sending while the broker is down; its retries carry
    // the second half over the restart.
    let sending = tokio::spawn({
        let p = p.clone();
        let topic = topic.clone();
        let second = second.to_vec();
        async move { send_all(&p, &topic, second.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes()))).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    tansu.restart().unwrap_or_else(|e| panic!("restart broker: {e:#}\n{}", tansu.log_tail()));
    sending.await.expect("join").expect("produce the second half across the restart");

    let mut distinct: std::collections::HashSet<String> = got.iter().map(|r| r.value_str().to_string()).collect();
    let mut counted = 0;
    let rest = consume_with(&c, Duration::from_secs(180), |r| {
        for rec in &r[counted..] {
            distinct.insert(rec.value_str().to_string());
        }
        counted = r.len();
        distinct.len() >= RECORDS
    })
    .await
    .unwrap_or_else(|e| panic!("consume after the restart: {e:#}\n{}", tansu.log_tail()));
    got.extend(rest);

    let seen = tally(&produced, &got);
    let missing: Vec<&String> = produced.iter().map(|(_, v)| v).filter(|v| !seen.contains_key(*v)).collect();
    assert!(
        missing.is_empty(),
        "{} records lost across the restart, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}
