//! The whole per-event path without a broker, on one core: Avro (or JSON) decode,
//! state load from RocksDB (through the hot-state cache), apply with the
//! example rules (22 segments, 11 offers), output and changelog encoding,
//! and the atomic store commit. Zipf-skewed traffic from cohort-loadgen over
//! 1,000,000 customers by default.
//!
//! `cargo bench --workspace --bench pipeline` prints events/s, CPU per
//! event and the working set. Before anything is measured, every customer
//! is given a state through the worker's own path (`PIPELINE_FILL=0`: not;
//! the store then holds only the customers the warm-up touched), the worker
//! is reopened on that store (hot states and block cache empty, as after a
//! restart), and `PIPELINE_WARMUP` events (default: as many as measured)
//! warm it. Set `PIPELINE_CUSTOMERS`, `PIPELINE_EVENTS` and
//! `PIPELINE_BATCH` (records per batch, 10,000 as the worker's default) to
//! change the size, `PIPELINE_STATE_CACHE_MIB` for the hot states' budget
//! (`store.rocksdb.state_cache_bytes`, 256 MiB by default),
//! `PIPELINE_FORMAT=json` for JSON inputs and outputs (Avro by default; the
//! broker soak and `make bench-peers` use JSON). `PIPELINE_PREPARED=DIR` keeps the filled store in DIR
//! and reuses it on later runs of the same size (for valgrind, below).
//!
//! Instructions and cache misses per event, which do not move with the
//! VM's load: only the measured batches run inside `measured_batch`, so
//!
//! ```sh
//! PIPELINE_PREPARED=/tmp/pipeline-1m PIPELINE_CUSTOMERS=1000000 PIPELINE_EVENTS=60000 BENCH --bench  # prepares, natively
//! PIPELINE_PREPARED=/tmp/pipeline-1m PIPELINE_CUSTOMERS=1000000 PIPELINE_EVENTS=60000 \
//!   valgrind --tool=callgrind --cache-sim=yes --toggle-collect='*measured_batch*' BENCH --bench
//! ```
//!
//! counts them (divide by `PIPELINE_EVENTS`).

mod common;

use cohort::config::{Config, WireFormat};
use cohort::http::Readiness;
use cohort::metrics::Metrics;
use cohort::worker::{FixedClock, Worker};
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

/// One measured batch: its own symbol, for callgrind's `--toggle-collect`.
#[inline(never)]
fn measured_batch(worker: &mut Worker, batch: &[InputRecord<'_>]) -> anyhow::Result<Vec<cohort_kafka::OutputRecord>> {
    worker.process_offline(batch)
}

fn main() -> anyhow::Result<()> {
    // As the `cohort` binary does.
    let no_thp = cohort::memory::disable_transparent_huge_pages();
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let customers = if quick { 2_000 } else { env("PIPELINE_CUSTOMERS", 1_000_000) };
    let events = if quick { 5_000 } else { env("PIPELINE_EVENTS", 1_000_000) };
    let warmup = if quick { 5_000 } else { env("PIPELINE_WARMUP", events) };
    let fill = env("PIPELINE_FILL", 1) != 0;
    let batch = env("PIPELINE_BATCH", 10_000);
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.rules.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
    config.store.path = dir.path().join("store");
    // The hot states' budget (`store.rocksdb.state_cache_bytes`), to see
    // how the per-event cost depends on it.
    if let Ok(mib) = std::env::var("PIPELINE_STATE_CACHE_MIB") {
        config.store.rocksdb.state_cache_bytes = mib.parse::<u64>()? << 20;
    }
    // Inputs and outputs in one format: Avro by default, `PIPELINE_FORMAT=json`
    // for the encoding the broker soak and `make bench-peers` use.
    let (wire, codec) = match std::env::var("PIPELINE_FORMAT").as_deref() {
        Err(_) | Ok("avro") => (WireFormat::Avro, cohort_codec::Format::Avro),
        Ok("json") => (WireFormat::Json, cohort_codec::Format::Json),
        Ok(other) => anyhow::bail!("PIPELINE_FORMAT: `{other}` is not avro or json"),
    };
    config.format.input = wire;
    config.format.output = wire;
    config.format.schemas_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    config.processing.max_future_skew = std::time::Duration::from_secs(3650 * 86_400);
    let load = cohort_loadgen::Config { customers: customers as u32, seed: 1, ..Default::default() };
    let mut gen = cohort_loadgen::Generator::new(load)?;
    let clock = Arc::new(FixedClock(Timestamp(i64::MAX / 4)));
    let metrics = Metrics::new()?;
    let open = |config: &Config| -> anyhow::Result<Worker> {
        let mut worker = Worker::open(config.clone(), metrics.clone(), Arc::new(Readiness::default()), clock.clone())?;
        worker.assign("clickstream", &[0])?;
        Ok(worker)
    };
    let mut records = common::Records::new(codec);

    // Fill: every customer gets a state, or a store filled earlier is reused.
    let started = Instant::now();
    if fill {
        // Keyed by the rules too: a store filled under other rules would be
        // re-evaluated inside the measured phase.
        let rules = std::fs::read_to_string(&config.rules.path)?;
        let version = cohort_core::rules::RuleSet::from_yaml("rules.yaml", &rules)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .version()
            .to_owned();
        let prepared = std::env::var_os("PIPELINE_PREPARED").map(|p| {
            std::path::PathBuf::from(p).join(format!("filled-{customers}-batch-{batch}-rules-{version}-{codec:?}"))
        });
        match prepared.as_ref().filter(|p| p.join("CURRENT").exists()) {
            Some(p) => {
                copy_dir(p, &config.store.path)?;
                // The generator and offsets go on where the fill left them.
                gen.by_ref().take(customers).for_each(drop);
                records.skip(customers);
                eprintln!("fill: reused {}", p.display());
            }
            None => {
                let mut worker = open(&config)?;
                common::fill_every_customer(&mut worker, &mut gen, &mut records, customers, batch)?;
                drop(worker);
                if let Some(p) = &prepared {
                    copy_dir(&config.store.path, p)?;
                }
                eprintln!("fill: {customers} customers given a state in {:.1}s", started.elapsed().as_secs_f64());
            }
        }
    }

    // Reopened (hot states and block cache empty, as after a restart), then
    // warmed up.
    let mut worker = open(&config)?;
    let started = Instant::now();
    let mut warm = 0usize;
    while warm < warmup {
        let evs: Vec<_> = gen.by_ref().take(batch.min(warmup - warm)).collect();
        warm += evs.len();
        worker.process_offline(&records.of(&evs))?;
    }
    eprintln!("warm-up: {warm} events, {:.1}s", started.elapsed().as_secs_f64());

    // Measure: pre-encode the traffic so only the worker's path is timed.
    let mut batches = Vec::new();
    let mut n = 0;
    while n < events {
        let evs: Vec<_> = gen.by_ref().take(batch.min(events - n)).collect();
        n += evs.len();
        batches.push(records.of(&evs));
    }
    let (hits0, misses0) = (metrics.state_cache_hits.get(), metrics.state_cache_misses.get());
    let device0 = common::device_read_bytes();
    // RocksDB's per-read counting (`PIPELINE_READ_COUNTS=0`: off, to see
    // what it costs).
    let reads = (env("PIPELINE_READ_COUNTS", 1) != 0).then(cohort_store::ThreadReads::start);
    let (t, thread0, process0) =
        (Instant::now(), common::cpu_secs_of("/proc/thread-self/stat"), common::cpu_secs_of("/proc/self/stat"));
    let mut outputs = 0usize;
    let mut by_topic: std::collections::BTreeMap<String, usize> = Default::default();
    for b in &batches {
        for o in measured_batch(&mut worker, b)? {
            outputs += 1;
            *by_topic.entry(o.topic.to_string()).or_default() += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let thread_cpu = common::cpu_secs_of("/proc/thread-self/stat") - thread0;
    let process_cpu = common::cpu_secs_of("/proc/self/stat") - process0;
    let rocks = reads.as_ref().map(|r| r.counts()).unwrap_or_default();
    let device = common::device_read_bytes() - device0;
    let (hits, misses) = (metrics.state_cache_hits.get() - hits0, metrics.state_cache_misses.get() - misses0);

    let with_state = worker.store().iter_partition_states(0).count();
    let store_bytes = common::dir_bytes(&config.store.path);
    println!(
        "pipeline: {n} events in {secs:.2}s = {:.0} events/s on one thread ({outputs} output records incl. changelog)",
        n as f64 / secs,
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
    let loads = (hits + misses).max(1) as f64;
    let per = |x: u64| x as f64 / misses.max(1) as f64;
    println!(
        "pipeline: working set: {with_state} of {customers} customers with state, store {:.1} MiB on disk \
         ({:.0} bytes/customer); of {} state loads {:.1}% from the hot states, {:.1}% from RocksDB, which per \
         load found {:.2} blocks in the block cache (data, index, filter) and read {:.2} from files \
         ({:.1} KiB: OS page cache or device); {:.1} MiB read from the device",
        store_bytes as f64 / (1 << 20) as f64,
        store_bytes as f64 / with_state.max(1) as f64,
        hits + misses,
        hits as f64 / loads * 100.0,
        misses as f64 / loads * 100.0,
        per(rocks.block_cache_hits),
        per(rocks.block_reads),
        per(rocks.block_read_bytes) / 1024.0,
        device as f64 / (1 << 20) as f64,
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

/// `cp -a`: a store directory, whole, to `to` (which must not exist),
/// through a temporary name so that an interrupted copy is never taken
/// for a prepared store.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    let parent = to.parent().ok_or_else(|| anyhow::anyhow!("{} has no parent", to.display()))?;
    std::fs::create_dir_all(parent)?;
    let partial = parent.join(format!(".partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(&partial).status()?;
    anyhow::ensure!(status.success(), "cp -a {} {} failed", from.display(), partial.display());
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&partial, to)?;
    Ok(())
}
