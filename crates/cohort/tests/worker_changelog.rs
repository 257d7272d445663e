//! The worker's changelog without a broker (`Worker::process_offline`): each
//! partition's metadata record (watermark, learned tables, positions,
//! populations) has its own key (`cohort_core::partition::changelog_key`),
//! so the latest record per key, which is what a compacted changelog keeps,
//! is every partition's last committed value.
//!
//! Under one shared key, the partition that wrote last won: with partition 1
//! a day of event time ahead of partition 0, and partition 0 writing after
//! it, the changelog's watermark was a day behind partition 1's. The
//! end-to-end recovery and outage tests saw exactly that as a watermark up
//! to a day behind the uninterrupted run's, because which partition's batch
//! is produced last depends on fetch timing.

use cohort::config::Config;
use cohort::http::Readiness;
use cohort::metrics::Metrics;
use cohort::worker::{FixedClock, Worker};
use cohort_codec::{Encoder, Format, Registry};
use cohort_core::event::{Click, ClickKind, Event, EventKind};
use cohort_core::partition::{changelog_key, PartitionMeta};
use cohort_core::time::Timestamp;
use cohort_kafka::{InputRecord, OutputRecord};
use std::collections::BTreeMap;
use std::sync::Arc;

/// 2026-03-02T09:00:00Z.
const T0: i64 = 1_772_442_000_000;
const DAY: i64 = 86_400_000;
const LATENESS: i64 = 60_000;

fn open(dir: &std::path::Path) -> Worker {
    let mut config = Config::default();
    config.rules.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
    config.store.path = dir.join("store");
    config.processing.live_clock = false;
    config.processing.allowed_lateness = std::time::Duration::from_millis(LATENESS as u64);
    let clock = Arc::new(FixedClock(Timestamp(T0 + 30 * DAY)));
    let mut worker =
        Worker::open(config, Metrics::new().expect("metrics"), Arc::new(Readiness::default()), clock).expect("open");
    worker.assign("clickstream", &[0, 1]).expect("assign");
    worker
}

/// A page view of `customer` at `time`, as partition `partition` of the
/// clickstream holds it at `offset`.
fn click(partition: i32, offset: i64, customer: &str, time: i64) -> InputRecord<'static> {
    let ev = Event {
        id: format!("c-{partition}-{offset}"),
        customer: customer.into(),
        time: Timestamp(time),
        kind: EventKind::Click(Click::new(ClickKind::PageView)),
    };
    let encoder = Encoder::new(Format::Json, Arc::new(Registry::builtin()));
    InputRecord {
        topic: Arc::from("clickstream"),
        partition,
        offset,
        timestamp: None,
        key: Some(customer.as_bytes().to_vec().into()),
        value: encoder.encode_event(&ev).expect("encode").map(Into::into),
        headers: Default::default(),
    }
}

/// The last value per key of the changelog records, in production order.
fn latest_per_key(records: &[OutputRecord]) -> BTreeMap<String, Option<Vec<u8>>> {
    records
        .iter()
        .filter(|r| &*r.topic == "cohort-changelog")
        .map(|r| (String::from_utf8(r.key.clone().expect("keyed")).expect("utf-8 key"), r.value.clone()))
        .collect()
}

/// The watermark of a changelog metadata record.
fn millis(v: &[u8]) -> i64 {
    PartitionMeta::decode(v).expect("a metadata record").watermark.as_millis()
}

/// The watermark `partition` committed to the store.
fn stored_watermark(worker: &Worker, partition: u32) -> i64 {
    worker.store().partition_meta(partition).expect("read").expect("a stored record").watermark.as_millis()
}

#[test]
fn each_partitions_watermark_has_its_own_changelog_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut worker = open(dir.path());
    let mut changelog = Vec::new();
    // Partition 1 runs a day of event time ahead; partition 0's batch is
    // produced after it (fetch timing decides this order in a real run).
    changelog.extend(worker.process_offline(&[click(1, 0, "b", T0 + DAY)]).expect("batch"));
    changelog.extend(worker.process_offline(&[click(0, 0, "a", T0)]).expect("batch"));
    // An older event moves no watermark (its record says so, with the new offset).
    let quiet = worker.process_offline(&[click(1, 1, "b", T0)]).expect("batch");
    let quiet_meta = latest_per_key(&quiet).remove(&changelog_key(1)).flatten().expect("partition 1's record");
    assert_eq!(millis(&quiet_meta), T0 + DAY - LATENESS);
    assert_eq!(PartitionMeta::decode(&quiet_meta).expect("decodes").next_offsets.get("clickstream"), Some(&2));
    changelog.extend(quiet);

    assert_eq!(stored_watermark(&worker, 0), T0 - LATENESS);
    assert_eq!(stored_watermark(&worker, 1), T0 + DAY - LATENESS);
    let latest = latest_per_key(&changelog);
    for p in [0, 1] {
        let key = changelog_key(p);
        let v = latest.get(&key).cloned().flatten().unwrap_or_else(|| panic!("no changelog record {key:?}"));
        assert_eq!(millis(&v), stored_watermark(&worker, p as u32), "partition {p}'s watermark in the changelog");
    }
    assert!(
        latest.keys().filter(|k| k.starts_with('\u{0}')).count() == 2,
        "one metadata key per partition, none shared: {:?}",
        latest.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_restarted_worker_continues_each_partitions_watermark_under_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut changelog = Vec::new();
    {
        let mut worker = open(dir.path());
        changelog.extend(worker.process_offline(&[click(0, 0, "a", T0), click(0, 1, "a", T0 + DAY)]).expect("batch"));
        changelog.extend(worker.process_offline(&[click(1, 0, "b", T0 + DAY / 2)]).expect("batch"));
    }
    // Restarted on the same store: partition 0 sees only older events (its
    // watermark stays), partition 1 moves on.
    let mut worker = open(dir.path());
    changelog.extend(worker.process_offline(&[click(0, 2, "a", T0 + 1_000)]).expect("batch"));
    changelog.extend(worker.process_offline(&[click(1, 1, "b", T0 + DAY / 2 + 5_000)]).expect("batch"));
    let latest = latest_per_key(&changelog);
    let wm = |p: i32| latest.get(&changelog_key(p)).cloned().flatten().map(|v| millis(&v));
    assert_eq!(wm(0), Some(T0 + DAY - LATENESS));
    assert_eq!(wm(1), Some(T0 + DAY / 2 + 5_000 - LATENESS));
    assert_eq!(wm(0), Some(stored_watermark(&worker, 0)));
    assert_eq!(wm(1), Some(stored_watermark(&worker, 1)));
}
