//! The output producer's own threads: delivery reports reach their senders
//! through the delivery thread, and both of the producer's threads end with
//! its last clone. A test binary of its own, so that no other test's
//! producer is alive while the threads are counted.

use cohort_e2e::unique_name;
use cohort_kafka::{EmbeddedBroker, OutputProducer, OutputRecord};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The producer's threads alive in this process.
fn producer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| matches!(name.trim(), "cohort-delivery" | "cohort-flush"))
        .count()
}

fn record(topic: &str, i: usize, partition: i32) -> OutputRecord {
    OutputRecord {
        topic: topic.into(),
        key: Some(format!("customer-{i}").into_bytes()),
        value: Some(format!("v{i}").into_bytes()),
        headers: vec![("cohort-test".into(), b"1".to_vec().into())],
        timestamp: None,
        partition: Some(partition),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_reports_reach_their_senders_and_the_threads_end_with_the_producer() {
    let broker = EmbeddedBroker::start(1).expect("mock cluster");
    let topic = unique_name("producer-threads");
    broker.create_topic(&topic, 2).expect("create topic");
    assert_eq!(producer_threads(), 0);
    // Without the reports of successful records nothing could be awaited.
    let only_errors = BTreeMap::from([("delivery.report.only.error".to_string(), "true".to_string())]);
    let refused = OutputProducer::new(&broker.bootstrap(), &only_errors).err().expect("refused");
    assert!(refused.to_string().contains("delivery.report.only.error"), "{refused}");
    assert_eq!(producer_threads(), 0);
    let producer = OutputProducer::new(&broker.bootstrap(), &BTreeMap::new()).expect("producer");
    let clone = producer.clone();
    // A thread takes its name once it runs.
    wait_for_threads(2, "started").await;

    // Every record's report comes back, to its own sender: partition 1's
    // records at offsets 0, 1, 2, ... in the order sent, as partition 0's.
    let bound = Duration::from_secs(60);
    for round in 0..3 {
        let records: Vec<_> = (0..500).map(|i| record(&topic, i, (i % 2) as i32)).collect();
        let delivered = tokio::time::timeout(bound, producer.send_all(&records))
            .await
            .unwrap_or_else(|_| panic!("round {round}: no delivery reports within {bound:?}"))
            .expect("produce");
        for (i, d) in delivered.iter().enumerate() {
            assert_eq!(d.partition, (i % 2) as i32, "round {round}, record {i}");
            assert_eq!(d.offset, (round * 250 + i / 2) as i64, "round {round}, record {i}");
        }
    }

    // A record that cannot be written is an error for its sender (at once,
    // or in its delivery report), not an acknowledgement.
    let nowhere = record(&topic, 0, 5);
    match producer.send(&nowhere).await {
        Err(e) => assert!(e.to_string().to_lowercase().contains("partition"), "{e}"),
        Ok(pending) => {
            let outcome = tokio::time::timeout(bound, producer.wait(pending)).await.expect("a delivery report");
            assert!(outcome.is_err(), "a record for partition 5 of a 2-partition topic was acknowledged: {outcome:?}");
        }
    }

    // The threads outlive one clone, and end with the last.
    drop(producer);
    let one = clone.send(&record(&topic, 1, 0)).await.expect("enqueue");
    assert_eq!(clone.wait(one).await.expect("acknowledged").offset, 750);
    drop(clone);
    wait_for_threads(0, "ended with the producer").await;
}

/// Waits (at most 30 s) until `n` of the producer's threads are alive.
async fn wait_for_threads(n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer_threads() != n {
        assert!(
            Instant::now() < deadline,
            "{} producer threads alive after 30 s, not {n}: not {what}",
            producer_threads()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
