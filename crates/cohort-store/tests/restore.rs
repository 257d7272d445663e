//! Restores written two ways, `restore_write` (a write batch without the
//! WAL) and `restore_ingest` (SST files ingested), read back through the
//! store's public API.

mod common;

use cohort_core::partition::PartitionMeta;
use cohort_core::time::Timestamp;
use cohort_store::{Batch, Bytes, Inspection, Restored, Store, Timer};
use common::*;

const P: u32 = 2;
/// A partition the restores never touch.
const OTHER: u32 = 3;

#[derive(Clone, Copy, Debug)]
enum Way {
    WriteBatch,
    Ingest,
}

fn restore(store: &Store, way: Way, partition: u32, chunk: &[Restored], replace_timers: bool) {
    match way {
        Way::WriteBatch => store.restore_write(partition, chunk, replace_timers).expect("restore_write"),
        Way::Ingest => store.restore_ingest(partition, chunk, replace_timers).expect("restore_ingest"),
    }
}

fn restored(customer: &str, state: Option<&str>, timer: Option<i64>) -> Restored {
    Restored {
        customer: customer.into(),
        state: state.map(|s| Bytes::from(s.as_bytes().to_vec())),
        timer: timer.map(Timestamp::from_millis),
    }
}

fn state(s: &str) -> Option<Bytes> {
    Some(Bytes::from(s.as_bytes().to_vec()))
}

/// Everything the public API reads about partitions `P` and `OTHER`.
#[derive(Debug, PartialEq)]
struct Reads {
    states: Vec<Option<Bytes>>,
    scanned: Vec<(String, Bytes)>,
    timers: Vec<Timer>,
    other_timers: Vec<Timer>,
    /// Per customer: partition, state, envelope version, and the timers
    /// found through the timer index.
    inspected: Vec<Vec<Inspection>>,
    meta: Option<PartitionMeta>,
}

const CUSTOMERS: [&str; 9] = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivan"];

fn reads(store: &Store) -> Reads {
    Reads {
        states: store.get_many(P, &CUSTOMERS).into_iter().map(|r| r.expect("get_many")).collect(),
        scanned: store.iter_partition_states(P).map(|r| r.expect("scan")).collect(),
        timers: store.partition_timers(P).expect("timers"),
        other_timers: store.partition_timers(OTHER).expect("timers"),
        inspected: CUSTOMERS.iter().map(|c| store.inspect(c).expect("inspect")).collect(),
        meta: store.partition_meta(P).expect("meta"),
    }
}

/// What the store holds before a restore over existing data: states and
/// timers in `P` (bob with two timers), and a customer in `OTHER`.
fn existing(store: &Store) {
    store
        .commit(&Batch {
            partition: P,
            states: vec![
                ("alice".into(), state("A0")),
                ("bob".into(), state("B0")),
                ("carol".into(), state("C0")),
                ("dave".into(), state("D0")),
            ],
            timers_set: vec![timer("alice", 50), timer("bob", 60), timer("bob", 70), timer("carol", 80)],
            meta: meta(&[(TOPIC, 5)], Some(4)),
            ..Batch::default()
        })
        .expect("commit");
    store
        .commit(&Batch {
            partition: OTHER,
            states: vec![("erin".into(), state("E-other"))],
            timers_set: vec![timer("erin", 90)],
            ..Batch::default()
        })
        .expect("commit");
}

/// Two chunks: a replaced timer (alice), a tombstone of a customer with
/// timers (bob), a restored timer equal to the existing one (carol), a
/// customer in both chunks whose timer moves (frank), a customer restored
/// then deleted by the next chunk (gina), a tombstone of a customer never
/// seen (hank), a timer dropped (dave).
fn chunks() -> [Vec<Restored>; 2] {
    [
        vec![
            restored("alice", Some("A1"), Some(100)),
            restored("bob", None, None),
            restored("frank", Some("F1"), Some(110)),
            restored("gina", Some("G1"), Some(120)),
            restored("ivan", Some("I1"), None),
        ],
        vec![
            restored("frank", Some("F2"), Some(130)),
            restored("gina", None, None),
            restored("carol", Some("C2"), Some(80)),
            restored("hank", None, None),
            restored("dave", Some("D2"), None),
        ],
    ]
}

/// Runs the restore of [`chunks`] one way; returns the reads after
/// `restore_finish` and again after a reopen.
fn run(way: Way, over_existing: bool, replace_timers: bool) -> (Reads, Reads) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    if over_existing {
        existing(&store);
    }
    for chunk in chunks() {
        restore(&store, way, P, &chunk, replace_timers);
    }
    let meta = PartitionMeta { changelog_next: Some(42), ..PartitionMeta::default() }.encode();
    store.restore_finish(P, &meta).expect("restore_finish");
    let finished = reads(&store);
    drop(store);
    let reopened = reads(&open(dir.path()));
    (finished, reopened)
}

#[test]
fn ingested_chunks_read_as_written_ones() {
    for over_existing in [false, true] {
        for replace_timers in [false, true] {
            let case = format!("over_existing={over_existing} replace_timers={replace_timers}");
            let (written, written_reopened) = run(Way::WriteBatch, over_existing, replace_timers);
            let (ingested, ingested_reopened) = run(Way::Ingest, over_existing, replace_timers);
            assert_eq!(ingested, written, "{case}");
            assert_eq!(ingested_reopened, written_reopened, "{case}: after a reopen");
            assert_eq!(ingested_reopened, ingested, "{case}: durable");
        }
    }
}

/// The case the worker uses for a partition it already holds, checked
/// against what it should read, not only against `restore_write`.
#[test]
fn an_ingested_restore_over_existing_states_replaces_them_and_their_timers() {
    let (r, _) = run(Way::Ingest, true, true);
    let s = |v: &str| Some(Bytes::from(v.as_bytes().to_vec()));
    // alice bob carol dave erin frank gina hank ivan
    assert_eq!(r.states, vec![s("A1"), None, s("C2"), s("D2"), None, s("F2"), None, None, s("I1")]);
    assert_eq!(r.timers, vec![timer("carol", 80), timer("alice", 100), timer("frank", 130)]);
    assert_eq!(r.other_timers, vec![timer("erin", 90)]);
    let index_timers = |c: usize| -> Vec<i64> {
        r.inspected[c]
            .iter()
            .filter(|i| i.partition == P)
            .flat_map(|i| i.timers.iter().map(|t| t.as_millis()))
            .collect()
    };
    assert_eq!(index_timers(0), vec![100], "alice");
    assert_eq!(index_timers(1), Vec::<i64>::new(), "bob");
    assert_eq!(index_timers(2), vec![80], "carol");
    assert_eq!(index_timers(3), Vec::<i64>::new(), "dave");
    assert_eq!(index_timers(5), vec![130], "frank");
    assert_eq!(
        r.inspected[4],
        vec![Inspection {
            partition: OTHER,
            state: s("E-other"),
            record_version: Some(2),
            timers: vec![Timestamp::from_millis(90)]
        }]
    );
    assert!(r.inspected[0].iter().all(|i| i.record_version == Some(2)), "sealed in the current envelope");
    assert_eq!(r.meta.and_then(|m| m.changelog_next), Some(42));
}

/// Overlapping chunks, some of them over unflushed commits: every later
/// write wins, whichever way it came in.
#[test]
fn later_ingests_override_earlier_ones_and_unflushed_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = |i: usize| format!("c{i:04}");
    let version = |i: usize, v: usize| format!("{}-v{v}", id(i));
    let chunk = |range: std::ops::Range<usize>, v: usize| -> Vec<Restored> {
        range.map(|i| restored(&id(i), Some(&version(i, v)), Some((i * 10 + v) as i64))).collect()
    };
    let mut expected: Vec<Option<(String, i64)>> = vec![None; 200];
    let mut expect = |range: std::ops::Range<usize>, v: Option<usize>| {
        for i in range {
            expected[i] = v.map(|v| (version(i, v), (i * 10 + v) as i64));
        }
    };
    // A commit left in the memtable: the ingest that overlaps it must flush it first.
    store
        .commit(&Batch {
            partition: P,
            states: (0..50).map(|i| (id(i), state(&version(i, 0)))).collect(),
            timers_set: (0..50).map(|i| timer(&id(i), (i * 10) as i64)).collect(),
            ..Batch::default()
        })
        .expect("commit");
    expect(0..50, Some(0));
    store.restore_ingest(P, &chunk(25..100, 1), true).expect("ingest");
    expect(25..100, Some(1));
    store.restore_ingest(P, &chunk(50..150, 2), true).expect("ingest");
    expect(50..150, Some(2));
    let tombstones: Vec<Restored> = (0..10).chain(140..160).map(|i| restored(&id(i), None, None)).collect();
    store.restore_ingest(P, &tombstones, true).expect("ingest");
    expect(0..10, None);
    expect(140..160, None);
    // A commit after the ingests, then one more ingest over part of it.
    store
        .commit(&Batch {
            partition: P,
            states: (90..110).map(|i| (id(i), state(&version(i, 3)))).collect(),
            timers_clear: (90..110).map(|i| timer(&id(i), (i * 10 + 2) as i64)).collect(),
            timers_set: (90..110).map(|i| timer(&id(i), (i * 10 + 3) as i64)).collect(),
            ..Batch::default()
        })
        .expect("commit");
    expect(90..110, Some(3));
    store.restore_ingest(P, &chunk(100..200, 4), true).expect("ingest");
    expect(100..200, Some(4));

    let ids: Vec<String> = (0..200).map(id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let states: Vec<Option<String>> = store
        .get_many(P, &refs)
        .into_iter()
        .map(|r| r.expect("get").map(|b| String::from_utf8(b.to_vec()).expect("utf-8")))
        .collect();
    assert_eq!(states, expected.iter().map(|e| e.as_ref().map(|(s, _)| s.clone())).collect::<Vec<_>>());
    let mut timers: Vec<Timer> =
        expected.iter().enumerate().filter_map(|(i, e)| e.as_ref().map(|(_, due)| timer(&id(i), *due))).collect();
    timers.sort_by_key(|t| t.due);
    assert_eq!(store.partition_timers(P).expect("timers"), timers);
    for (i, e) in expected.iter().enumerate() {
        let dues: Vec<i64> = store
            .inspect(&id(i))
            .expect("inspect")
            .iter()
            .flat_map(|x| x.timers.clone())
            .map(|t| t.as_millis())
            .collect();
        assert_eq!(dues, e.iter().map(|(_, due)| *due).collect::<Vec<_>>(), "{}", id(i));
    }
}

/// An SST file holds each key once, so of a customer's entries in one chunk
/// only the last is ingested, and the earlier one's timer is not left behind.
#[test]
fn a_customer_twice_in_one_chunk_is_restored_as_its_last_entry() {
    // Written both ways: the earlier entry's timer must not stay behind
    // (restore_write once left it, `alice 100` and `frank 110` here).
    for way in [Way::WriteBatch, Way::Ingest] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        existing(&store);
        let chunk = [
            restored("alice", Some("A1"), Some(100)),
            restored("frank", Some("F1"), Some(110)),
            restored("alice", Some("A2"), Some(200)),
            restored("frank", None, None),
            restored("gina", None, None),
            restored("gina", Some("G2"), Some(220)),
        ];
        for replace_timers in [false, true] {
            restore(&store, way, P, &chunk, replace_timers);
            let states: Vec<Option<Bytes>> =
                store.get_many(P, &["alice", "frank", "gina"]).into_iter().map(|r| r.expect("get")).collect();
            assert_eq!(states, vec![state("A2"), None, state("G2")], "{way:?}");
            let timers = store.partition_timers(P).expect("timers");
            let alice_old = if replace_timers { vec![] } else { vec![timer("alice", 50)] };
            let expected: Vec<Timer> = alice_old
                .into_iter()
                .chain([
                    timer("bob", 60),
                    timer("bob", 70),
                    timer("carol", 80),
                    timer("alice", 200),
                    timer("gina", 220),
                ])
                .collect();
            assert_eq!(timers, expected, "{way:?} replace_timers={replace_timers}");
        }
    }
}

/// The SST files are built in a directory under the store's, which is
/// emptied after every call, and removed at open if a crash left it.
#[test]
fn ingest_files_do_not_stay_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest_dir = dir.path().join("restore-ingest");
    {
        let store = open(dir.path());
        store.restore_ingest(P, &chunks()[0], true).expect("ingest");
        assert!(!ingest_dir.join(P.to_string()).exists());
    }
    std::fs::create_dir_all(ingest_dir.join("7")).expect("mkdir");
    std::fs::write(ingest_dir.join("7").join("states.sst"), b"half written").expect("write");
    let store = open(dir.path());
    assert!(!ingest_dir.exists(), "left-overs removed at open");
    assert_eq!(store.get(P, "alice").expect("get"), state("A1"));
}

/// A whole restore empties the partition with range deletes first
/// (`drop_partition`); states ingested after them must not be hidden by
/// them, whether the range deletes are still in the memtable or flushed.
#[test]
fn ingested_states_are_not_hidden_by_an_earlier_drop_partition() {
    for flushed in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        existing(&store);
        store.drop_partition(P).expect("drop_partition");
        if flushed {
            store.flush().expect("flush");
        }
        store.restore_ingest(P, &chunks()[0], false).expect("ingest");
        let states: Vec<Option<Bytes>> =
            store.get_many(P, &["alice", "bob", "carol", "ivan"]).into_iter().map(|r| r.expect("get")).collect();
        assert_eq!(states, vec![state("A1"), None, None, state("I1")], "flushed={flushed}");
        assert_eq!(
            store.partition_timers(P).expect("timers"),
            vec![timer("alice", 100), timer("frank", 110), timer("gina", 120)],
            "flushed={flushed}"
        );
        assert_eq!(store.partition_timers(OTHER).expect("timers"), vec![timer("erin", 90)], "flushed={flushed}");
    }
}
