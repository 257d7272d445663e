//! `cohort loadgen`: realistic synthetic traffic from cohort-loadgen, written
//! to Kafka (JSON or Avro, keyed by customer, each event to its input topic)
//! or to a file as JSON lines.

use crate::config::{Config, Topics};
use anyhow::{anyhow, bail, Context};
use cohort_codec::{Encoder, Format, Registry};
use cohort_core::event::{Event, EventKind};
use cohort_core::time::{Duration as SimDuration, Timestamp};
use cohort_kafka::{OutputProducer, OutputRecord};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `cohort loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Kafka bootstrap servers to produce to (topic names from --config, or the defaults).
    #[arg(long, conflicts_with = "out")]
    pub bootstrap: Option<String>,
    /// Write JSON lines `{"topic", "key", "value"}` to this file instead ("-": stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A worker config whose [topics] and [kafka.properties] to use.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Value encoding on Kafka: json or avro (plain Avro with cohort's schemas).
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Customers in the simulated population.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u32,
    /// Events to write, then stop.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Events per second of wall time; 0 writes as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seed: the same seed gives the same traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Days of simulated history before now at which the traffic starts
    /// (event times stay in the past, where a worker accepts them).
    #[arg(long, default_value_t = 365)]
    pub days_ago: i64,
}

fn topic_of<'a>(ev: &Event, t: &'a Topics) -> &'a str {
    match ev.kind {
        EventKind::Click(_) => &t.clickstream,
        EventKind::Purchase(_) => &t.purchases,
        EventKind::ProfileUpdate(_) | EventKind::Forget => &t.profiles,
        EventKind::OfferOutcome(_) => &t.offer_outcomes,
    }
}

/// Runs the command; returns the number of events written.
pub fn run(args: LoadgenArgs, now: Timestamp) -> anyhow::Result<u64> {
    let config = Config::load(args.config.as_deref(), std::env::vars()).map_err(|e| anyhow!("{e}"))?;
    let format = match args.format.as_str() {
        "json" => Format::Json,
        "avro" => Format::Avro,
        other => bail!("--format {other}: expected json or avro"),
    };
    let load = cohort_loadgen::Config {
        customers: args.customers,
        seed: args.seed,
        start: now - SimDuration::from_days(args.days_ago),
        ..cohort_loadgen::Config::default()
    };
    let generator = cohort_loadgen::Generator::new(load).map_err(|e| anyhow!("load generator: {e}"))?;
    let encoder = Encoder::new(format, Arc::new(Registry::builtin()));
    let events = generator.take(args.events as usize);
    let started = Instant::now();
    let pace = |i: u64| {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    };
    let mut n = 0u64;
    match (&args.bootstrap, &args.out) {
        (Some(bootstrap), _) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let producer = OutputProducer::new(bootstrap, &config.kafka.properties)?;
                let mut pending = Vec::new();
                for ev in events {
                    pace(n);
                    let rec = OutputRecord {
                        topic: topic_of(&ev, &config.topics).into(),
                        key: Some(ev.customer.clone().into_bytes()),
                        value: encoder.encode_event(&ev)?,
                        headers: Vec::new(),
                        timestamp: Some(ev.time.as_millis()),
                        partition: None,
                    };
                    pending.push(producer.send(&rec).await?);
                    n += 1;
                    if pending.len() >= 10_000 {
                        for p in pending.drain(..) {
                            producer.wait(p).await?;
                        }
                    }
                }
                for p in pending {
                    producer.wait(p).await?;
                }
                anyhow::Ok(())
            })?;
        }
        (None, Some(path)) => {
            if format != Format::Json {
                bail!("--out writes JSON lines; use --format json (Avro goes to Kafka with --bootstrap)");
            }
            let mut w: Box<dyn Write> = if path.as_os_str() == "-" {
                Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
            } else {
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
                ))
            };
            for ev in events {
                pace(n);
                let value: serde_json::Value = match encoder.encode_event(&ev)? {
                    Some(bytes) => serde_json::from_slice(&bytes)?,
                    None => serde_json::Value::Null,
                };
                let line =
                    serde_json::json!({"topic": topic_of(&ev, &config.topics), "key": ev.customer, "value": value});
                writeln!(w, "{line}")?;
                n += 1;
            }
            w.flush()?;
        }
        (None, None) => bail!("say where to write: --bootstrap HOST:PORT (Kafka) or --out FILE"),
    }
    eprintln!("loadgen: {n} events in {:.1}s", started.elapsed().as_secs_f64());
    Ok(n)
}
