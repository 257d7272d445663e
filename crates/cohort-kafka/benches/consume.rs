//! What a consumed record costs the thread that polls it, before any
//! decoding: [`InputConsumer::next_batch`] and reading each record's key and
//! value, as the worker does, against librdkafka's mock cluster on loopback.
//!
//! Two ways of reading the same records, alternated in one run on fresh
//! consumer groups:
//!
//! - **borrowed**: the worker's path, each record borrowing the fetched
//!   message (headers left unparsed);
//! - **copied**: each record copied out with its headers
//!   ([`InputRecord::into_owned`]), which is what the consumer did for every
//!   record before it handed out borrowed ones.
//!
//! `cargo bench -p cohort-kafka --bench consume` prints the polling
//! thread's CPU per record (its run time from `/proc/thread-self/schedstat`,
//! librdkafka's own threads not included) and the ratio. `CONSUME_RECORDS`
//! (200,000) records of `CONSUME_VALUE_BYTES` (300) bytes, no headers, as
//! `cohort loadgen` writes them, over 16 partitions: the mock cluster keeps
//! at most 5 MiB (and 100,000 records) per partition and drops the oldest.

use cohort_kafka::consumer::ConsumerSettings;
use cohort_kafka::{EmbeddedBroker, InputConsumer, InputRecord, OffsetSource, OutputProducer, OutputRecord};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "consume-bench";
const PARTITIONS: i32 = 16;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// No stored offsets: every partition starts at the beginning.
struct FromStart;

impl OffsetSource for FromStart {
    fn next_offset(&self, _topic: &str, _partition: i32) -> Option<i64> {
        None
    }
}

/// This thread's time on a CPU so far, in seconds.
fn thread_cpu_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = text.split_whitespace().next().and_then(|v| v.parse().ok()).expect("run time");
    ns as f64 / 1e9
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Borrowed,
    Copied,
}

/// Reads every record with a fresh group; returns the polling thread's CPU
/// per record in µs.
async fn read_all(bootstrap: &str, records: usize, mode: Mode, round: usize) -> anyhow::Result<f64> {
    let settings = ConsumerSettings {
        bootstrap: bootstrap.to_string(),
        group_id: format!("consume-bench-{round}"),
        topics: vec![TOPIC.to_string()],
        properties: BTreeMap::new(),
        start: Default::default(),
        hold_assigned: false,
    };
    let (consumer, _events) = InputConsumer::new(&settings, Arc::new(FromStart))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut read = 0usize;
    let mut bytes = 0usize;
    let mut cpu = 0.0;
    while read < records {
        anyhow::ensure!(Instant::now() < deadline, "only {read} of {records} records read in 300 s");
        // Timed per non-empty batch, its poll included (the same for both
        // ways); the empty polls while the group forms are not counted.
        let before = thread_cpu_secs();
        let batch = consumer.next_batch(10_000, Duration::from_millis(50)).await?;
        if batch.is_empty() {
            continue;
        }
        match mode {
            Mode::Borrowed => {
                // Collected, as the worker does before it processes them.
                let records: Vec<InputRecord<'_>> = batch.records().collect();
                for r in &records {
                    bytes += r.key.as_deref().map_or(0, <[u8]>::len) + r.value.as_deref().map_or(0, <[u8]>::len);
                    read += 1;
                }
                drop(black_box(records));
            }
            Mode::Copied => {
                let owned: Vec<InputRecord<'static>> = batch.records().map(InputRecord::into_owned).collect();
                for r in &owned {
                    bytes += r.key.as_deref().map_or(0, <[u8]>::len) + r.value.as_deref().map_or(0, <[u8]>::len);
                    read += 1;
                }
                drop(black_box(owned));
            }
        }
        drop(batch);
        cpu += thread_cpu_secs() - before;
    }
    black_box(bytes);
    consumer.close();
    Ok(cpu / read as f64 * 1e6)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let records = if quick { 2_000 } else { env("CONSUME_RECORDS", 200_000) };
    let value_bytes = env("CONSUME_VALUE_BYTES", 300);
    let rounds = if quick { 1 } else { env("CONSUME_ROUNDS", 3) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let broker = EmbeddedBroker::start(1)?;
    broker.create_topic(TOPIC, PARTITIONS)?;
    anyhow::ensure!(
        records.div_ceil(PARTITIONS as usize) * (value_bytes + 64) < 5 << 20,
        "{records} records of {value_bytes} bytes overflow the mock cluster's 5 MiB per partition"
    );
    let bootstrap = broker.bootstrap();
    rt.block_on(async {
        let producer = OutputProducer::new(&bootstrap, &BTreeMap::new())?;
        let value = vec![b'x'; value_bytes];
        for chunk in (0..records).collect::<Vec<_>>().chunks(10_000) {
            let batch: Vec<OutputRecord> = chunk
                .iter()
                .map(|i| OutputRecord {
                    topic: TOPIC.into(),
                    key: Some(format!("c-{}", i % 20_000).into_bytes()),
                    value: Some(value.clone()),
                    headers: Vec::new(),
                    timestamp: None,
                    partition: None,
                })
                .collect();
            producer.send_all(&batch).await?;
        }
        anyhow::Ok(())
    })?;
    let mut borrowed = Vec::new();
    let mut copied = Vec::new();
    for round in 0..rounds {
        // Each way goes first in every other round.
        let order = if round % 2 == 0 { [Mode::Borrowed, Mode::Copied] } else { [Mode::Copied, Mode::Borrowed] };
        for mode in order {
            let us = rt.block_on(read_all(&bootstrap, records, mode, round * 2 + (mode == Mode::Copied) as usize))?;
            match mode {
                Mode::Borrowed => borrowed.push(us),
                Mode::Copied => copied.push(us),
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let show = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(" / ");
    println!(
        "consume: {records} records of {value_bytes} bytes, polling thread CPU per record: borrowed {} µs, \
         copied {} µs",
        show(&borrowed),
        show(&copied)
    );
    let (b, c) = (median(&mut borrowed), median(&mut copied));
    println!("consume: medians borrowed {b:.3} µs, copied {c:.3} µs: copied / borrowed = {:.2}", c / b);
    Ok(())
}
