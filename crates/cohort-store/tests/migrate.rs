//! A store written by store format 1 (b416652's worker: partition metadata
//! as NUL-prefixed keys in `states`, offsets in families of their own) is
//! migrated to format 2 when opened. The fixture in
//! `tests/fixtures/store-v1` was written by `write_store_v1.rs.txt` there,
//! and its `manifest.json` records what format 1 held.

mod common;

use cohort_store::keys::{CF_LEGACY_CHANGELOG_OFFSETS, CF_LEGACY_INPUT_OFFSETS, CF_PARTITIONS};
use cohort_store::{Store, STORE_FORMAT_VERSION};
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn a_format_1_store_is_migrated_on_open_with_exact_populations() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    copy_dir(&fixture().join("store"), &path);
    let cfs_before = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("list");
    assert!(cfs_before.iter().any(|c| c == CF_LEGACY_INPUT_OFFSETS), "the fixture is format 1: {cfs_before:?}");

    for open_round in 0..2 {
        let store = open(&path);
        assert_eq!(store.metadata().expect("metadata").store_format_version, STORE_FORMAT_VERSION);
        assert_eq!(store.partitions().expect("partitions"), vec![0, 1]);
        for p in [0u32, 1] {
            let want = &manifest[p.to_string()];
            let meta = store.partition_meta(p).expect("meta").expect("a metadata record per partition");
            assert_eq!(Some(meta.watermark.as_millis()), want["watermark"].as_i64(), "partition {p} watermark");
            let offsets: BTreeMap<String, i64> = serde_json::from_value(want["next_offsets"].clone()).expect("offsets");
            assert_eq!(meta.next_offsets, offsets, "partition {p} offsets");
            assert_eq!(
                store.input_offset("clickstream", p).expect("offset"),
                offsets.get("clickstream").copied(),
                "partition {p}"
            );
            let populations: BTreeMap<String, u64> =
                serde_json::from_value(want["populations"].clone()).expect("populations");
            assert_eq!(meta.populations, populations, "partition {p} populations");
            assert_eq!(
                Some(meta.tables.popularity.encode().len() as u64),
                want["popularity_bytes"].as_u64(),
                "partition {p} popularity table kept"
            );
            assert_eq!(
                Some(meta.tables.propensity.encode().len() as u64),
                want["propensity_bytes"].as_u64(),
                "partition {p} propensity table kept"
            );
            // The states family holds customers only now.
            let customers: Vec<String> = store.iter_partition_states(p).map(|r| r.expect("state").0).collect();
            assert_eq!(Some(customers.len() as u64), want["customers"].as_u64(), "partition {p}");
            assert!(customers.iter().all(|c| !c.starts_with('\u{0}')), "partition {p}: {customers:?}");
            // ... and the populations are a count over them.
            let mut counted: BTreeMap<String, u64> = BTreeMap::new();
            for r in store.iter_partition_states(p) {
                let state = cohort_core::encode::decode(&r.expect("state").1).expect("decodes");
                for m in state.segments {
                    *counted.entry(m.segment).or_default() += 1;
                }
            }
            assert_eq!(counted, meta.populations, "partition {p}, open {open_round}");
            assert!(!store.partition_timers(p).expect("timers").is_empty(), "partition {p} timers kept");
        }
        drop(store);
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("list");
        assert!(cfs.iter().any(|c| c == CF_PARTITIONS), "{cfs:?}");
        assert!(
            !cfs.iter().any(|c| c == CF_LEGACY_INPUT_OFFSETS || c == CF_LEGACY_CHANGELOG_OFFSETS),
            "format 1's offset families are dropped: {cfs:?}"
        );
    }
}

#[test]
fn a_store_of_a_newer_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        drop(store);
    }
    {
        let db = raw_db(dir.path());
        let meta = db.cf_handle(cohort_store::keys::CF_META).expect("meta family");
        db.put_cf(meta, cohort_store::keys::META_STORE_FORMAT_VERSION, (STORE_FORMAT_VERSION + 1).to_be_bytes())
            .expect("put");
    }
    let err = Store::open(dir.path(), &test_config()).expect_err("a newer store must be refused");
    let msg = err.to_string();
    assert!(msg.contains(&(STORE_FORMAT_VERSION + 1).to_string()), "{msg}");
    let db = raw_db(dir.path());
    let meta = db.cf_handle(cohort_store::keys::CF_META).expect("meta family");
    let v = db.get_cf(meta, cohort_store::keys::META_STORE_FORMAT_VERSION).expect("get").expect("version");
    assert_eq!(v, (STORE_FORMAT_VERSION + 1).to_be_bytes().to_vec(), "untouched");
}
