//! The adapters against real Kafka-protocol brokers: librdkafka's in-process
//! mock cluster and the tansu broker that `make test` starts.

use cohort_e2e::{consume_until, unique_name, TestBroker};
use cohort_kafka::consumer::ConsumerSettings;
use cohort_kafka::{
    EmbeddedBroker, InputConsumer, InputRecord, OffsetSource, OutputProducer, OutputRecord, PartitionEvent,
    StartPosition, TopicPartition,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORDS: usize = 200;

/// Stored offsets, as cohort's store would hold them.
struct Stored(HashMap<(String, i32), i64>);

impl OffsetSource for Stored {
    fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(&(topic.to_string(), partition)).copied()
    }
}

fn record(topic: &str, i: usize) -> OutputRecord {
    OutputRecord {
        topic: topic.into(),
        key: Some(format!("customer-{}", i % 37).into_bytes()),
        value: Some(format!("v{i}").into_bytes()),
        headers: vec![("cohort-test".into(), b"1".to_vec().into())],
        timestamp: None,
        partition: None,
    }
}

async fn read_all(c: &InputConsumer, expected: usize, deadline: Duration) -> Vec<InputRecord<'static>> {
    let until = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < expected {
        assert!(Instant::now() < until, "only {} of {expected} records arrived within {deadline:?}", got.len());
        match c.next_batch(50, Duration::from_millis(500)).await {
            Ok(batch) => {
                assert!(batch.len() <= 50, "a batch is bounded by its count");
                got.extend(batch.records().map(InputRecord::into_owned));
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("consumer: {e}"),
        }
    }
    got
}

/// Produces records to a 2-partition `topic` (created by the caller), stores
/// an offset for partition 0 only, and checks that the consumer starts
/// partition 0 at the stored offset and partition 1 at the beginning.
async fn assignment_seeks_to_stored_offsets(bootstrap: &str, topic: &str) {
    let producer = OutputProducer::new(bootstrap, &BTreeMap::new()).expect("producer");
    let records: Vec<OutputRecord> = (0..RECORDS).map(|i| record(topic, i)).collect();
    producer.send_all(&records).await.expect("produce");

    // How many records partition 0 holds, read by a plain consumer.
    let all = consume_until(bootstrap, &[topic], Duration::from_secs(60), |r| r.len() >= RECORDS).await.expect("count");
    let p0 = all.iter().filter(|r| r.partition == 0).count();
    assert!(p0 > 10 && p0 < RECORDS, "keys spread over both partitions; partition 0 holds {p0}");
    let stored_p0 = (p0 / 2) as i64;

    let offsets = Stored([((topic.to_string(), 0), stored_p0)].into_iter().collect());
    let settings = ConsumerSettings {
        bootstrap: bootstrap.to_string(),
        group_id: unique_name("adapters-group"),
        topics: vec![topic.to_string()],
        properties: BTreeMap::new(),
        start: StartPosition::Earliest,
        hold_assigned: false,
    };
    let (consumer, mut events) = InputConsumer::new(&settings, Arc::new(offsets)).expect("consumer");
    let expected = RECORDS - stored_p0 as usize;
    let got = read_all(&consumer, expected, Duration::from_secs(60)).await;

    assert_eq!(got.iter().filter(|r| r.partition == 0).map(|r| r.offset).min(), Some(stored_p0));
    assert_eq!(got.iter().filter(|r| r.partition == 1).map(|r| r.offset).min(), Some(0));
    assert_eq!(got.len(), expected, "nothing before the stored offset is re-read");
    assert!(got.iter().all(|r| r.header_is("cohort-test", b"1")), "headers survive");
    // Nothing left to read: the batch ends when its wait is over, empty.
    let rest = tokio::time::timeout(Duration::from_secs(60), consumer.next_batch(50, Duration::from_millis(200)))
        .await
        .expect("next_batch returns once its wait is over")
        .expect("no consumer error");
    assert_eq!(rest.len(), 0, "no record was produced after those read");

    match events.try_recv() {
        Ok(PartitionEvent::Assigned(mut parts)) => {
            parts.sort();
            assert_eq!(
                parts,
                vec![
                    (TopicPartition { topic: topic.to_string(), partition: 0 }, Some(stored_p0)),
                    (TopicPartition { topic: topic.to_string(), partition: 1 }, None),
                ]
            );
        }
        other => panic!("expected an assignment event, got {other:?}"),
    }
    consumer.close();
}

trait HeaderIs {
    fn header_is(&self, key: &str, value: &[u8]) -> bool;
}

impl HeaderIs for InputRecord<'_> {
    fn header_is(&self, key: &str, value: &[u8]) -> bool {
        self.headers.to_vec().iter().any(|(k, v)| k == key && v == value)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_assignment_seeks_to_stored_offsets() {
    let broker = EmbeddedBroker::start(1).expect("mock cluster");
    let topic = unique_name("adapters-mock");
    broker.create_topic(&topic, 2).expect("create topic");
    assignment_seeks_to_stored_offsets(&broker.bootstrap(), &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_assignment_seeks_to_stored_offsets() {
    let broker = TestBroker::shared();
    let topic = unique_name("adapters-tansu");
    broker.create_topic(&topic, 2).await.expect("create topic");
    assignment_seeks_to_stored_offsets(broker.bootstrap(), &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_produced_with_their_key() {
    let broker = TestBroker::shared();
    let topic = unique_name("adapters-tombstone");
    broker.create_topic(&topic, 1).await.expect("create topic");
    let producer = OutputProducer::new(broker.bootstrap(), &BTreeMap::new()).expect("producer");
    let records = vec![
        OutputRecord { timestamp: Some(1_700_000_000_000), ..record(&topic, 1) },
        OutputRecord { value: None, ..record(&topic, 1) },
    ];
    // send_all returns once every delivery report is in: both are acknowledged.
    producer.send_all(&records).await.expect("produce");
    let got =
        consume_until(broker.bootstrap(), &[&topic], Duration::from_secs(60), |r| r.len() >= 2).await.expect("consume");
    assert_eq!(got[0].value.as_deref(), Some(&b"v1"[..]));
    assert_eq!(got[1].value, None, "a record without a value is a tombstone");
    assert_eq!(got[1].key, got[0].key);
}

/// A caller that waits for its records does not wait for `linger.ms`: the
/// producer flushes what is queued. With a linger of two minutes, both
/// `send_all` and `send` then `wait` are acknowledged long before it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_records_sends_them_without_waiting_for_the_linger() {
    let broker = EmbeddedBroker::start(1).expect("mock cluster");
    let topic = unique_name("adapters-linger");
    broker.create_topic(&topic, 2).expect("create topic");
    let linger = Duration::from_secs(120);
    let props = BTreeMap::from([("linger.ms".to_string(), linger.as_millis().to_string())]);
    let producer = OutputProducer::new(&broker.bootstrap(), &props).expect("producer");
    let bound = linger / 2;

    let records: Vec<OutputRecord> = (0..RECORDS).map(|i| record(&topic, i)).collect();
    let delivered = tokio::time::timeout(bound, producer.send_all(&records))
        .await
        .unwrap_or_else(|_| panic!("send_all waited {bound:?}: for the linger of {linger:?}"))
        .expect("produce");
    assert_eq!(delivered.len(), RECORDS);
    let partitions: std::collections::BTreeSet<i32> = delivered.iter().map(|d| d.partition).collect();
    assert_eq!(partitions.len(), 2, "both partitions were written: {partitions:?}");

    let one = producer.send(&record(&topic, RECORDS)).await.expect("enqueue");
    let at = tokio::time::timeout(bound, producer.wait(one))
        .await
        .unwrap_or_else(|_| panic!("wait waited {bound:?}: for the linger of {linger:?}"))
        .expect("acknowledged");
    assert!(at.offset >= 0);
}

/// `send_all` queues at most one produce request's worth per topic at a
/// time: with requests of 10,000 bytes, 1,000 records of ~150 bytes go in
/// 20 or more rounds, each sent at once (the linger is two minutes), and
/// still every record is written once, each partition's in the order given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_in_rounds_keeps_every_partitions_order() {
    let broker = EmbeddedBroker::start(1).expect("mock cluster");
    let topic = unique_name("adapters-rounds");
    broker.create_topic(&topic, 3).expect("create topic");
    let linger = Duration::from_secs(120);
    let props = BTreeMap::from([
        ("batch.size".to_string(), "10000".to_string()),
        ("linger.ms".to_string(), linger.as_millis().to_string()),
    ]);
    let producer = OutputProducer::new(&broker.bootstrap(), &props).expect("producer");
    let records: Vec<OutputRecord> = (0..1_000)
        .map(|i| OutputRecord { value: Some(format!("{i:0>100}").into_bytes()), ..record(&topic, i) })
        .collect();
    let delivered = tokio::time::timeout(linger / 2, producer.send_all(&records))
        .await
        .unwrap_or_else(|_| panic!("a round waited for the linger of {linger:?}"))
        .expect("produce");
    assert_eq!(delivered.len(), records.len());
    let mut last: HashMap<i32, i64> = HashMap::new();
    for (i, d) in delivered.iter().enumerate() {
        if let Some(prev) = last.insert(d.partition, d.offset) {
            assert!(
                d.offset > prev,
                "record {i} written at {d:?}, before the record before it in its partition ({prev})"
            );
        }
    }
    assert_eq!(last.len(), 3, "all three partitions were written");
}
