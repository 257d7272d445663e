//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;

use cohort_core::partition::PartitionMeta;
use cohort_core::time::Timestamp;
use cohort_store::{Batch, Bytes, Store, StoreConfig, Timer};

pub const TOPIC: &str = "clickstream";
pub const CHANGELOG: &str = "cohort-changelog";

/// A small config so tests run fast and exercise flushes.
pub fn test_config() -> StoreConfig {
    StoreConfig {
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 1 << 20,
        total_write_buffer_bytes: 16 << 20,
        max_background_jobs: 2,
        ..StoreConfig::default()
    }
}

pub fn open(path: &Path) -> Store {
    Store::open(path, &test_config()).expect("open store")
}

pub fn timer(customer: &str, due: i64) -> Timer {
    Timer { customer: customer.to_owned(), due: Timestamp::from_millis(due) }
}

/// A partition metadata record with these next input offsets and changelog position.
pub fn meta(offsets: &[(&str, i64)], changelog_next: Option<i64>) -> Option<Bytes> {
    let meta = PartitionMeta {
        next_offsets: offsets.iter().map(|(t, o)| (t.to_string(), *o)).collect(),
        changelog_next,
        ..PartitionMeta::default()
    };
    Some(meta.encode().into())
}

/// The partition's committed changelog position.
pub fn changelog_next(store: &Store, partition: u32) -> Option<i64> {
    store.partition_meta(partition).expect("meta").and_then(|m| m.changelog_next)
}

/// The state batch `n` writes for `customer`: derived from both, of varying length.
pub fn state_for(n: i64, customer: &str) -> Vec<u8> {
    let len = 16 + (n as usize * 7 + customer.len() * 13) % 900;
    let mut out = format!("batch={n};customer={customer};").into_bytes();
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ customer.len() as u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

/// Batch `n` of the crash tests: every customer gets `state_for(n, c)`, its
/// timer moves from due `n - 1` to due `n`, and the input offset becomes `n + 1`.
pub fn crash_batch(partition: u32, n: i64, customers: &[String]) -> Batch {
    Batch {
        partition,
        states: customers.iter().map(|c| (c.clone(), Some(state_for(n, c).into()))).collect(),
        timers_set: customers.iter().map(|c| timer(c, n)).collect(),
        timers_clear: if n > 0 { customers.iter().map(|c| timer(c, n - 1)).collect() } else { Vec::new() },
        meta: meta(&[(TOPIC, n + 1)], Some(n * 10)),
    }
}

pub fn customers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cust-{i:05}")).collect()
}

/// Checks that the store holds exactly what the batch matching its stored
/// offset wrote. Returns that batch number (-1 if nothing was committed).
pub fn assert_consistent(store: &Store, partition: u32, customers: &[String]) -> i64 {
    let Some(next) = store.input_offset(TOPIC, partition).expect("offset") else {
        let ids: Vec<&str> = customers.iter().map(String::as_str).collect();
        for r in store.get_many(partition, &ids) {
            assert_eq!(r.expect("read"), None, "state without offset");
        }
        return -1;
    };
    let n = next - 1;
    assert_eq!(changelog_next(store, partition), Some(n * 10));
    let ids: Vec<&str> = customers.iter().map(String::as_str).collect();
    for (c, r) in customers.iter().zip(store.get_many(partition, &ids)) {
        let got = r.expect("read").unwrap_or_else(|| panic!("{c} missing at batch {n}"));
        assert_eq!(&got[..], &state_for(n, c)[..], "{c} differs from batch {n}");
    }
    let timers = store.partition_timers(partition).expect("timers");
    assert_eq!(timers.len(), customers.len(), "one timer per customer at batch {n}");
    assert!(timers.iter().all(|t| t.due.as_millis() == n), "timers of batch {n}: {:?}", &timers[..3.min(timers.len())]);
    n
}

/// Opens the store directory with plain RocksDB, every column family.
pub fn raw_db(path: &Path) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, path).expect("list cfs");
    rocksdb::DB::open_cf(&opts, path, cfs).expect("raw open")
}
