//! A rules change over a store of stored customers, without a broker: how
//! long `cohort preview` takes over it, and how fast the worker's
//! background re-evaluation goes on one thread (store scan, state loads,
//! re-evaluation, encoding and the store commits of the customers that
//! change, their changelog records built as for producing).
//!
//! `cargo test --release --workspace --bench rules_change -- --bench`
//! (`RULES_CUSTOMERS`, default 1,000,000; `RULES_STATE_CACHE_MIB` for the
//! hot states' budget, 256 MiB by default). The store is filled through the
//! worker's own path first: one click or purchase per customer, then as
//! many Zipf-skewed events from cohort-loadgen again. The change is the
//! e2e test's: a new segment, a threshold moved, a segment removed.

mod common;

use cohort::config::{Config, WireFormat};
use cohort::http::Readiness;
use cohort::metrics::Metrics;
use cohort::worker::{FixedClock, Worker};
use cohort_core::rules::RuleSet;
use cohort_core::time::Timestamp;
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RULES: &str = include_str!("../../../deploy/rules.yaml");

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One slice of the background re-evaluation: its own symbol, for
/// callgrind's `--toggle-collect='*reevaluation_slice*'` (instructions per
/// customer, which do not move with the machine's load).
#[inline(never)]
fn reevaluation_slice(worker: &mut Worker) -> anyhow::Result<Vec<cohort_kafka::OutputRecord>> {
    worker.process_offline(&[])
}

fn candidate() -> String {
    RULES
        .replace("when: product_views.7d >= 10 && orders.30d == 0", "when: product_views.7d >= 3 && orders.30d == 0")
        .replace("  - name: dach\n    when: profile.country in [\"DE\", \"AT\", \"CH\"]\n", "")
        .replace("segments:\n", "segments:\n  - name: browsers\n    when: product_views.30d >= 2\n")
}

fn main() -> anyhow::Result<()> {
    cohort::memory::disable_transparent_huge_pages();
    let quick = !std::env::args().any(|a| a == "--bench");
    let customers = if quick { 2_000 } else { env("RULES_CUSTOMERS", 1_000_000) };
    let batch = 10_000;
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.rules.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
    config.store.path = dir.path().join("store");
    // The hot states' budget (`store.rocksdb.state_cache_bytes`): with
    // 1,000,000 customers most are read from the store's scan, not from
    // the hot states; a small budget shows that path at a smaller size.
    if let Ok(mib) = std::env::var("RULES_STATE_CACHE_MIB") {
        config.store.rocksdb.state_cache_bytes = mib.parse::<u64>()? << 20;
    }
    config.format.input = WireFormat::Avro;
    config.format.output = WireFormat::Avro;
    config.processing.max_future_skew = std::time::Duration::from_secs(3650 * 86_400);
    config.rules.watch_interval = std::time::Duration::ZERO;
    config.rules.reevaluation_slice = env("RULES_SLICE", 5_000);
    let clock = Arc::new(FixedClock(Timestamp(i64::MAX / 4)));
    let mut worker = Worker::open(config.clone(), Metrics::new()?, Arc::new(Readiness::default()), clock)?;
    worker.assign("clickstream", &[0])?;
    let mut records = common::Records::avro();

    // Fill: every customer gets a state, then Zipf-skewed traffic on top.
    let load = cohort_loadgen::Config { customers: customers as u32, seed: 7, ..Default::default() };
    let mut gen = cohort_loadgen::Generator::new(load)?;
    let started = Instant::now();
    common::fill_every_customer(&mut worker, &mut gen, &mut records, customers, batch)?;
    let mut n = customers;
    while n < 2 * customers {
        let evs: Vec<_> = gen.by_ref().take(batch.min(2 * customers - n)).collect();
        n += evs.len();
        worker.process_offline(&records.of(&evs))?;
    }
    let store = worker.store();
    // The fill's flushes and compactions run on RocksDB's threads: let them
    // finish, so that they do not share the cores with what is measured.
    store.wait_for_background_work()?;
    let stored = store.iter_partition_states(0).count();
    eprintln!("fill: {n} events, {stored} customers stored, {:.1}s", started.elapsed().as_secs_f64());
    if let Some(meta) = store.partition_meta(0)? {
        // A switch with offers on `rules_changed` keeps a second copy of
        // the tables in every metadata record until it is done.
        let tables = meta.tables.popularity.encode().len() + meta.tables.propensity.encode().len();
        println!("rules_change: metadata record {} bytes, of which learned tables {tables}", meta.encode().len());
    }

    // Preview, as `cohort preview` runs it (all cores).
    let text = candidate();
    let engine = cohort::preview::candidate("candidate.yaml", &text)?;
    let current = RuleSet::from_yaml("rules.yaml", RULES).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let preview = cohort::preview::preview_store(&store, &current, &engine, None, 5)?;
    let preview_secs = t.elapsed().as_secs_f64();
    println!(
        "rules_change: preview of {} customers in {preview_secs:.2}s = {:.0} customers/s ({} threads); {} would change",
        preview.customers,
        preview.customers as f64 / preview_secs,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        preview.changed,
    );

    // The preview's table, the segments it changes only.
    for line in preview.table().lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let changes = cells.get(3..5).is_some_and(|c| c.iter().any(|x| x.parse::<u64>().is_ok_and(|n| n > 0)));
        if line.starts_with("rules ") || line.starts_with("segment ") || changes {
            println!("rules_change: | {line}");
        }
    }

    // The switch and the background re-evaluation, slice after slice, on
    // this one thread.
    let rules = RuleSet::from_yaml("candidate.yaml", &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (t, thread0) = (Instant::now(), common::cpu_secs_of("/proc/thread-self/stat"));
    worker.use_rules(rules);
    let (mut slices, mut outputs, mut changes) = (0usize, 0usize, 0usize);
    while worker.reevaluating() {
        for o in reevaluation_slice(&mut worker)? {
            outputs += 1;
            changes += usize::from(&*o.topic == "segment-changes");
        }
        slices += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = common::cpu_secs_of("/proc/thread-self/stat") - thread0;
    println!(
        "rules_change: re-evaluated {stored} customers in {secs:.2}s = {:.0} customers/s on one thread \
         ({:.2} us of its CPU per customer, {:.0}/s if it had a core to itself); {slices} slices, \
         {changes} segment changes, {outputs} output records incl. changelog",
        stored as f64 / secs,
        cpu / stored as f64 * 1e6,
        stored as f64 / cpu,
    );
    assert_eq!(changes as u64, preview.changed, "the switch changes what the preview said");
    Ok(())
}
