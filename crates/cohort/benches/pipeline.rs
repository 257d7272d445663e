//! The whole per-event path without a broker, on one core: Avro decode,
//! state load from RocksDB (through the hot-state cache), apply with the
//! example rules (22 segments, 11 offers), output and changelog encoding,
//! and the atomic store commit. Zipf-skewed traffic from cohort-loadgen over
//! 1,000,000 customers by default, after a warm-up of as many events.
//!
//! `cargo bench -p cohort --bench pipeline` prints events/s. Set
//! `PIPELINE_CUSTOMERS`, `PIPELINE_EVENTS` and `PIPELINE_BATCH` (records per
//! batch, 10,000 as the worker's default) to change the size.

mod common;

use cohort::config::{Config, WireFormat};
use cohort::http::Readiness;
use cohort::metrics::Metrics;
use cohort::worker::{FixedClock, Worker};
use cohort_codec::{Encoder, Format, Registry};
use cohort_core::event::{Event, EventKind};
use cohort_core::time::Timestamp;
use cohort_kafka::InputRecord;
use std::sync::Arc;
use std::time::Instant;

// The `cohort` binary's allocator, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // As the `cohort` binary does.
    let no_thp = cohort::memory::disable_transparent_huge_pages();
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let customers = if quick { 2_000 } else { env("PIPELINE_CUSTOMERS", 1_000_000) };
    let events = if quick { 5_000 } else { env("PIPELINE_EVENTS", 1_000_000) };
    let batch = env("PIPELINE_BATCH", 10_000);
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.rules.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
    config.store.path = dir.path().join("store");
    config.format.input = WireFormat::Avro;
    config.format.output = WireFormat::Avro;
    config.format.schemas_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    config.processing.max_future_skew = std::time::Duration::from_secs(3650 * 86_400);
    let load = cohort_loadgen::Config { customers: customers as u32, seed: 1, ..Default::default() };
    let mut gen = cohort_loadgen::Generator::new(load)?;
    let clock = Arc::new(FixedClock(Timestamp(i64::MAX / 4)));
    let mut worker = Worker::open(config.clone(), Metrics::new()?, Arc::new(Readiness::default()), clock)?;
    worker.assign("clickstream", &[0])?;
    let encoder = Encoder::new(Format::Avro, Arc::new(Registry::builtin()));
    let topic_of = |e: &Event| -> Arc<str> {
        Arc::from(match e.kind {
            EventKind::Click(_) => "clickstream",
            EventKind::Purchase(_) => "purchases",
            EventKind::ProfileUpdate(_) | EventKind::Forget => "customer-profiles",
            EventKind::OfferOutcome(_) => "offer-outcomes",
        })
    };
    let mut offset = 0i64;
    let mut to_records = |evs: &[Event]| -> Vec<InputRecord> {
        evs.iter()
            .map(|e| {
                offset += 1;
                InputRecord {
                    topic: topic_of(e),
                    partition: 0,
                    offset,
                    timestamp: Some(e.time.as_millis()),
                    key: Some(e.customer.clone().into_bytes()),
                    value: encoder.encode_event(e).ok().flatten(),
                    headers: Vec::new(),
                }
            })
            .collect()
    };

    // Warm up: as many events as the measured run, so the store holds the
    // population's state (Zipf: rarely active customers may still be absent).
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    let mut warm = 0usize;
    while warm < events {
        let evs: Vec<Event> = gen.by_ref().take(batch).collect();
        for e in &evs {
            seen.insert(e.customer.clone());
        }
        warm += evs.len();
        let recs = to_records(&evs);
        worker.process_offline(&recs)?;
    }
    let with_state = seen.len();
    eprintln!("warm-up: {warm} events, {with_state} customers with state, {:.1}s", started.elapsed().as_secs_f64());

    // Measure: pre-encode the traffic so only the worker's path is timed.
    let mut batches = Vec::new();
    let mut n = 0;
    while n < events {
        let evs: Vec<Event> = gen.by_ref().take(batch).collect();
        n += evs.len();
        batches.push(to_records(&evs));
    }
    let (t, thread0, process0) =
        (Instant::now(), common::cpu_secs_of("/proc/thread-self/stat"), common::cpu_secs_of("/proc/self/stat"));
    let mut outputs = 0usize;
    let mut by_topic: std::collections::BTreeMap<String, usize> = Default::default();
    for b in &batches {
        for o in worker.process_offline(b)? {
            outputs += 1;
            *by_topic.entry(o.topic.to_string()).or_default() += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let thread_cpu = common::cpu_secs_of("/proc/thread-self/stat") - thread0;
    let process_cpu = common::cpu_secs_of("/proc/self/stat") - process0;
    let store_bytes: u64 = walk(dir.path());
    println!(
        "pipeline: {n} events, {with_state} of {customers} customers with state, in {secs:.2}s = {:.0} events/s \
         on one thread ({outputs} output records incl. changelog; store {:.1} MiB, {:.0} bytes/customer with state)",
        n as f64 / secs,
        store_bytes as f64 / (1 << 20) as f64,
        store_bytes as f64 / with_state.max(1) as f64
    );
    // Wall time swings with whatever else the machine runs; CPU time per
    // event does not, so compare builds by these.
    println!(
        "pipeline: CPU per event {:.2} us on the processing thread ({:.0} events/s if it had a core to itself), \
         {:.2} us in all threads (RocksDB flushes and compactions included)",
        thread_cpu / n as f64 * 1e6,
        n as f64 / thread_cpu,
        process_cpu / n as f64 * 1e6
    );
    println!(
        "pipeline: outputs by topic: {}",
        by_topic.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "pipeline: transparent huge pages {} (MIMALLOC_ALLOW_THP=1 keeps them, for comparison)",
        if no_thp { "off, as in the cohort binary" } else { "left as the system and mimalloc set them" }
    );
    Ok(())
}

fn walk(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            total += if path.is_dir() { walk(&path) } else { e.metadata().map(|m| m.len()).unwrap_or(0) };
        }
    }
    total
}
