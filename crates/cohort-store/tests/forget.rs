//! Forgetting a customer erases its id and data from every file of the store
//! directory: SSTs, WAL, MANIFEST, LOG, OPTIONS.

mod common;

use std::path::Path;

use cohort_store::{Batch, ForgetReport, Store};
use common::*;

const TARGET: &str = "forget-me-7f3a9c51";
const MARKER: &[u8] = b"PRIVATE-DATA-e41d8cd98f00";

fn target_state(version: u8) -> Vec<u8> {
    let mut state = MARKER.to_vec();
    state.extend_from_slice(&[version; 300]);
    state.extend_from_slice(MARKER);
    state
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read file");
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

fn commit_others(store: &Store, round: i64, ids: &[String]) {
    for p in [0, 1, 2] {
        store.commit(&crash_batch(p, round, ids)).expect("commit others");
    }
}

#[test]
fn forget_erases_the_customer_from_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let ids = customers(500);
    // Several versions of the target in two partitions, spread over flushed
    // and compacted SSTs, a memtable and the live WAL.
    for round in 0..6i64 {
        commit_others(&store, round, &ids);
        for p in [1, 2] {
            store
                .commit(&Batch {
                    partition: p,
                    states: vec![(TARGET.into(), Some(target_state(round as u8).into()))],
                    timers_set: vec![timer(TARGET, 1_000 + round)],
                    ..Batch::default()
                })
                .expect("commit target");
        }
        match round {
            1 => store.compact().expect("compact"),
            3 => store.flush().expect("flush"),
            _ => {}
        }
    }
    assert!(!files_containing(dir.path(), TARGET.as_bytes()).is_empty(), "the test must start with the id on disk");
    assert!(!files_containing(dir.path(), MARKER).is_empty());

    let report = store.forget(TARGET).expect("forget");
    assert_eq!(report, ForgetReport { partitions: vec![1, 2], states_deleted: 2, timers_deleted: 12 });

    assert_eq!(files_containing(dir.path(), TARGET.as_bytes()), Vec::<String>::new(), "id left on disk");
    assert_eq!(files_containing(dir.path(), MARKER), Vec::<String>::new(), "data left on disk");
    assert_eq!(store.inspect(TARGET).expect("inspect"), vec![]);
    for p in [1, 2] {
        assert_eq!(store.get(p, TARGET).expect("get"), None);
        assert!(store.partition_timers(p).expect("timers").iter().all(|t| t.customer != TARGET));
    }
    // Everyone else is intact and the store keeps working.
    for p in [0, 1, 2] {
        assert_eq!(assert_consistent(&store, p, &ids), 5);
    }
    commit_others(&store, 6, &ids);
    assert_eq!(assert_consistent(&store, 1, &ids), 6);
    drop(store);
    let store = open(dir.path());
    assert_eq!(assert_consistent(&store, 2, &ids), 6);
    assert_eq!(store.forget(TARGET).expect("forget again"), ForgetReport::default());
}

#[test]
fn stream_deletes_are_erased_by_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let ids = customers(200);
    commit_others(&store, 0, &ids);
    store
        .commit(&Batch {
            partition: 0,
            states: vec![(TARGET.into(), Some(target_state(1).into()))],
            timers_set: vec![timer(TARGET, 5)],
            ..Batch::default()
        })
        .expect("commit");
    store.flush().expect("flush");
    commit_others(&store, 1, &ids);
    // A forget arriving on the stream: the worker commits a delete.
    store.commit(&Batch { partition: 0, states: vec![(TARGET.into(), None)], ..Batch::default() }).expect("delete");
    assert_eq!(store.inspect(TARGET).expect("inspect"), vec![]);
    store.purge().expect("purge");
    assert_eq!(files_containing(dir.path(), TARGET.as_bytes()), Vec::<String>::new());
    assert_eq!(files_containing(dir.path(), MARKER), Vec::<String>::new());
    assert_eq!(assert_consistent(&store, 0, &ids), 1);
}
