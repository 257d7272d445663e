//! cohort-store benchmarks: commit throughput, reads through the block cache, and
//! disk bytes per customer.
//!
//! `CARGO_TARGET_DIR=/root/.cache/cohort/target cargo bench -p cohort-store --bench store`
//!
//! States are 1 KiB payloads shaped like an encoded customer state: half
//! pseudo-random bytes (ids, timestamps, counters), half low-entropy
//! structure (small integers, repeated field tags), so compression figures
//! are neither best nor worst case.

use std::time::{Duration, Instant};

// The `cohort` binary's allocator, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cohort_core::partition::PartitionMeta;
use cohort_core::time::Timestamp;
use cohort_store::{Batch, Compression, Store, StoreConfig, Timer};
use criterion::{black_box, BatchSize, Criterion, Throughput};

const BATCH: usize = 1_000;
const STATE_BYTES: usize = 1_024;
const CUSTOMERS: usize = 200_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn customer(i: usize) -> String {
    format!("customer-{i:08}")
}

fn state(rng: &mut Rng, version: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATE_BYTES);
    out.extend_from_slice(&version.to_le_bytes());
    while out.len() < STATE_BYTES {
        let r = rng.next();
        out.extend_from_slice(&r.to_le_bytes()[..4]);
        out.extend_from_slice(&[0x08, (r >> 60) as u8, 0x10, 0x00]);
    }
    out.truncate(STATE_BYTES);
    out
}

fn batch(rng: &mut Rng, n: u64, with_timers: bool) -> Batch {
    let start = (n as usize * BATCH) % CUSTOMERS;
    let states =
        (0..BATCH).map(|i| (customer((start + i) % CUSTOMERS), Some(state(rng, n).into()))).collect::<Vec<_>>();
    let (timers_set, timers_clear) = if with_timers {
        let set = states.iter().map(|(c, _)| Timer { due: Timestamp::from_millis(n as i64 + 1), customer: c.clone() });
        let clear = states.iter().map(|(c, _)| Timer { due: Timestamp::from_millis(n as i64), customer: c.clone() });
        (set.collect(), clear.collect())
    } else {
        (Vec::new(), Vec::new())
    };
    Batch {
        partition: 0,
        states,
        timers_set,
        timers_clear,
        meta: Some(
            PartitionMeta {
                next_offsets: [("clickstream".to_string(), n as i64 + 1)].into_iter().collect(),
                changelog_next: Some(n as i64),
                ..PartitionMeta::default()
            }
            .encode()
            .into(),
        ),
    }
}

/// Store settings compared in one run: the default (no compression, level-0
/// compactions from 8 files) first, then the alternatives it was chosen over.
fn commit_configs() -> Vec<(&'static str, StoreConfig)> {
    let default = StoreConfig::default();
    let mut configs = vec![("default", default.clone())];
    if std::env::var_os("STORE_BENCH_DEFAULT_ONLY").is_none() {
        configs.push((
            "lz4_zstd_bottom",
            StoreConfig { compression: Compression::Lz4, bottommost_compression: Compression::Zstd, ..default.clone() },
        ));
        configs.push((
            "lz4",
            StoreConfig { compression: Compression::Lz4, bottommost_compression: Compression::Lz4, ..default.clone() },
        ));
        configs.push(("rocksdb_l0_4", StoreConfig { level0_compaction_trigger: 4, ..default }));
    }
    configs
}

fn bench_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30).measurement_time(Duration::from_secs(10));
    for (config_name, config) in commit_configs() {
        for with_timers in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path(), &config).expect("open");
            let mut rng = Rng(0x5EED);
            let mut n = 0u64;
            let what = if with_timers { "1000x1KiB_states_timers_offsets_wal" } else { "1000x1KiB_states_offsets_wal" };
            group.bench_function(format!("{what}/{config_name}"), |b| {
                b.iter_batched(
                    || {
                        n += 1;
                        batch(&mut rng, n, with_timers)
                    },
                    |batch| store.commit(&batch).expect("commit"),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn bench_reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_many");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30).measurement_time(Duration::from_secs(5));
    let ids: Vec<String> = (0..BATCH * 20).map(customer).collect();
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreConfig::default()).expect("open");
        let mut rng = Rng(7);
        for chunk in ids.chunks(BATCH) {
            let states = chunk.iter().map(|c| (c.clone(), Some(state(&mut rng, 1).into()))).collect();
            store.commit(&Batch { partition: 0, states, ..Batch::default() }).expect("commit");
        }
        store.flush().expect("flush");
        let mut round = 0usize;
        let name = "1000_rocksdb_block_cache";
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    round = (round + 1) % 20;
                    ids[round * BATCH..(round + 1) * BATCH].iter().map(String::as_str).collect::<Vec<_>>()
                },
                |keys| black_box(store.get_many(0, &keys)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Writes `CUSTOMERS` states with a timer each, compacts, and prints bytes per customer.
fn report_disk_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &StoreConfig::default()).expect("open");
    let mut rng = Rng(11);
    let start = Instant::now();
    for (n, first) in (0..CUSTOMERS).step_by(BATCH).enumerate() {
        let mut b = batch(&mut rng, n as u64, true);
        b.timers_clear.clear();
        for (i, (c, _)) in b.states.iter_mut().enumerate() {
            *c = customer(first + i);
        }
        for (i, t) in b.timers_set.iter_mut().enumerate() {
            t.customer = customer(first + i);
        }
        store.commit(&b).expect("commit");
    }
    let load = start.elapsed();
    store.compact().expect("compact");
    let stats = store.stats().expect("stats");
    let dir_bytes: u64 = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let per = |bytes: u64| bytes as f64 / CUSTOMERS as f64;
    println!(
        "disk: {CUSTOMERS} customers x {STATE_BYTES} B state + 1 timer, loaded in {load:.2?}, after full compaction: \
         live SST {:.0} B/customer, whole directory {:.0} B/customer ({} bytes)",
        per(stats.live_sst_bytes),
        per(dir_bytes),
        dir_bytes
    );
    for cf in &stats.column_families {
        println!("disk:   {:<18} live SST {:>12} B", cf.name, cf.live_sst_bytes);
    }
}

/// CPU seconds (user + system) this process has used, all threads included.
fn process_cpu_secs() -> f64 {
    cpu_secs("/proc/self/stat")
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_secs() -> f64 {
    cpu_secs("/proc/thread-self/stat")
}

/// Bytes this process has sent toward the disk (`write_bytes` of
/// `/proc/self/io`: the WAL, flushes and compactions, counted when written
/// into the page cache).
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).expect("/proc stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line, in clock ticks (100 Hz on Linux).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// Commit cost that does not depend on how busy the machine is: the CPU
/// time of every thread (committing thread, RocksDB flushes and compactions)
/// per update, including the compaction debt left when the last commit
/// returns. Wall-clock throughput on a shared 2-core machine swings with
/// the load; CPU per update does not, and bounds the sustainable rate:
/// one core sustains at most 1 / (CPU per update) updates per second.
fn report_commit_cost() {
    const WARM: u64 = 200; // every customer once
    const MEASURED: u64 = 400; // every customer twice more
    for (config_name, config) in commit_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &config).expect("open");
        let mut rng = Rng(0xC0575);
        for n in 0..WARM {
            store.commit(&batch(&mut rng, n, false)).expect("commit");
        }
        store.wait_for_background_work().expect("wait");
        let batches: Vec<Batch> = (WARM..WARM + MEASURED).map(|n| batch(&mut rng, n, false)).collect();
        let (cpu0, t0, fg0, io0) = (process_cpu_secs(), Instant::now(), thread_cpu_secs(), written_bytes());
        for b in &batches {
            store.commit(b).expect("commit");
        }
        let (wall, fg1) = (t0.elapsed(), thread_cpu_secs());
        store.wait_for_background_work().expect("wait");
        let cpu2 = process_cpu_secs();
        let written = (written_bytes() - io0) as f64;
        let disk = store.stats().expect("stats").live_sst_bytes as f64 / CUSTOMERS as f64;
        let updates = (MEASURED as usize * BATCH) as f64;
        let per_update_us = (cpu2 - cpu0) / updates * 1e6;
        println!(
            "commit cost {config_name:<15} {:>6.2} us CPU/update, all threads incl. compaction debt \
             ({:>5.2} us in the committing thread); one core sustains {:>7.0} updates/s; \
             wall {:>7.0} updates/s; live SST {:>5.0} B/customer; {:>5.0} B written to disk per update \
             (WAL, flushes, compactions)",
            per_update_us,
            (fg1 - fg0) / updates * 1e6,
            1e6 / per_update_us,
            updates / wall.as_secs_f64(),
            disk,
            written / updates,
        );
    }
}

/// A restore of `RESTORE_STATES` (default 1,000,000) 1 KiB states into an
/// empty partition, with a timer each, in chunks of `RESTORE_CHUNK_BYTES`
/// (default 32 MiB, the worker's default `restore.max_memory_bytes / 2`),
/// measured in one run:
///
/// - `restore_write` (one write batch per chunk, WAL off), then
///   `restore_finish` (flush, then the metadata record);
/// - `restore_ingest` (an SST file per column family and chunk, ingested),
///   then `restore_finish`;
/// - the same with the WAL on (`commit`, what the batch path does), then a flush.
///
/// The first two twice: with the chunks in key order (customer ids
/// ascending, so no chunk overlaps another: the best case for ingestion,
/// whose files then go straight to the last level), and in a shuffled
/// order, as a changelog of customers hashed to partitions delivers them
/// (every chunk spans the whole key range, so ingested files overlap and
/// land in upper levels). Wall time from the first write to a durable end,
/// the same until RocksDB's background compactions have settled too, CPU
/// of every thread, bytes written to disk per state, and the compaction
/// debt and write stall the partition's first commits would meet.
fn report_restore() {
    let n: usize = std::env::var("RESTORE_STATES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let chunk_bytes: usize = std::env::var("RESTORE_CHUNK_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(32 << 20);
    let per_chunk = (chunk_bytes / (STATE_BYTES + 64)).max(1);
    let mut rng = Rng(0x5E570);
    let all: Vec<cohort_store::Restored> = (0..n)
        .map(|i| cohort_store::Restored {
            customer: customer(i),
            state: Some(state(&mut rng, i as u64).into()),
            timer: Some(Timestamp::from_millis(1_700_000_000_000 + i as i64)),
        })
        .collect();
    let mut shuffled = all.clone(); // the states' bytes are shared
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let in_chunks = |entries: &[cohort_store::Restored]| -> Vec<Vec<cohort_store::Restored>> {
        entries.chunks(per_chunk).map(<[_]>::to_vec).collect()
    };
    let (key_order, shuffled) = (in_chunks(&all), in_chunks(&shuffled));
    drop(all);
    let meta = PartitionMeta::default().encode();
    #[derive(Clone, Copy, PartialEq)]
    enum Way {
        Write,
        Ingest,
        Commit,
    }
    let runs = [
        ("key order", &key_order, Way::Write, "restore_write (WAL off) + restore_finish"),
        ("key order", &key_order, Way::Ingest, "restore_ingest (SST) + restore_finish"),
        ("key order", &key_order, Way::Commit, "commit (WAL on) + flush"),
        ("shuffled", &shuffled, Way::Write, "restore_write (WAL off) + restore_finish"),
        ("shuffled", &shuffled, Way::Ingest, "restore_ingest (SST) + restore_finish"),
    ];
    let mut durable_rate = Vec::new();
    for (order, chunks, way, name) in runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreConfig::default()).expect("open");
        let (cpu0, io0, t0) = (process_cpu_secs(), written_bytes(), Instant::now());
        for chunk in chunks.iter() {
            match way {
                Way::Write => store.restore_write(0, chunk, false).expect("restore_write"),
                Way::Ingest => store.restore_ingest(0, chunk, false).expect("restore_ingest"),
                Way::Commit => {
                    let batch = Batch {
                        partition: 0,
                        states: chunk.iter().map(|r| (r.customer.clone(), r.state.clone())).collect(),
                        timers_set: chunk
                            .iter()
                            .map(|r| Timer { due: r.timer.expect("a timer"), customer: r.customer.clone() })
                            .collect(),
                        timers_clear: Vec::new(),
                        meta: None,
                    };
                    store.commit(&batch).expect("commit");
                }
            }
        }
        let written = t0.elapsed();
        if way == Way::Commit {
            store.flush().expect("flush");
        } else {
            store.restore_finish(0, &meta).expect("restore_finish");
        }
        let (wall, cpu) = (t0.elapsed(), process_cpu_secs() - cpu0);
        // What the next commits would meet: compaction debt, stalls.
        let debt = store.stats().expect("stats");
        store.wait_for_background_work().expect("wait");
        let (settled, disk) = (t0.elapsed(), (written_bytes() - io0) as f64);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "restore {order:<9} {name:<42} {n} states of {STATE_BYTES} B: {:>9.0} states/s to a durable end \
             ({:>9.0} states/s written before the flush, {:>9.0} states/s with compactions settled), \
             {:.2} us CPU/state (all threads, to the durable end), {:>5.0} B written to disk/state; \
             at the durable end {:>5.0} MB of compaction pending, commits {}",
            rate(wall),
            rate(written),
            rate(settled),
            cpu / n as f64 * 1e6,
            disk / n as f64,
            debt.pending_compaction_bytes as f64 / 1e6,
            if debt.write_stopped {
                "stopped"
            } else if debt.delayed_write_rate > 0 {
                "delayed"
            } else {
                "not stalled"
            },
        );
        durable_rate.push((order, way, rate(wall), rate(settled)));
        let restored = store.iter_partition_states(0).count();
        assert_eq!(restored, n, "every state restored");
    }
    for order in ["key order", "shuffled"] {
        let find = |way| durable_rate.iter().find(|r| r.0 == order && r.1 == way).map(|r| (r.2, r.3));
        if let (Some(write), Some(ingest)) = (find(Way::Write), find(Way::Ingest)) {
            println!(
                "restore {order:<9} restore_ingest / restore_write: {:.2}x to a durable end, {:.2}x with compactions settled",
                ingest.0 / write.0,
                ingest.1 / write.1
            );
        }
    }
}

fn main() {
    // `STORE_BENCH=restore`: only the restore figures (they need no criterion run).
    if std::env::var("STORE_BENCH").as_deref() == Ok("restore") {
        report_restore();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_commit(&mut c);
    bench_reads(&mut c);
    c.final_summary();
    report_commit_cost();
    report_disk_bytes();
    report_restore();
}
