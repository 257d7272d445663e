//! The `cohort` command: the worker, the demo and the admin commands.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use cohort::config::{Config, LogFormat};
use cohort::http::{self, AdminError, CustomerLookup, Readiness};
use cohort::metrics::Metrics;
use cohort::worker::{self, Clock, SystemClock, Worker};
use cohort_core::engine::{Engine, EngineSettings};
use cohort_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

// mimalloc instead of glibc malloc: the per-event path allocates and frees
// many small strings and ~1 KiB state buffers, where glibc's free and
// consolidation took ~30% of a profile (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Real-time customer segmentation and next-best-offer decisions on Kafka.
///
/// cohort reads clickstream, purchase, profile and offer-outcome topics, keeps
/// one state record per customer in RocksDB, re-evaluates segment rules on
/// every event and when time passes, and publishes segment changes and
/// next-best-offers back to Kafka.
///
/// Configuration comes from a TOML file (see deploy/cohort.toml for every key)
/// and COHORT__SECTION__KEY environment variables, which win over the file.
#[derive(Debug, Parser)]
#[command(name = "cohort", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker: join the consumer group, process events, serve
    /// /metrics, /healthz and /readyz. Stops cleanly on SIGTERM or Ctrl-C
    /// (finishes the batch, commits, leaves the group).
    Run {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE", env = "COHORT_CONFIG")]
        config: PathBuf,
    },
    /// Run everything in one process on an embedded broker with generated
    /// traffic and a live view (what `make run` does).
    Demo(cohort::demo::DemoArgs),
    /// Generate realistic synthetic traffic (profiles, sessions, carts,
    /// purchases, lapsing customers, offer outcomes; Zipf-skewed) and write
    /// it to Kafka or to a file. Deterministic for a seed.
    Loadgen(cohort::loadgen_cmd::LoadgenArgs),
    /// Check a rules file: parse, type-check and compile it, then list its
    /// segments and offers. Errors name the file, line and column.
    Validate {
        /// The rules YAML file.
        rules: PathBuf,
    },
    /// Check a configuration file (and the COHORT__* environment), the rules
    /// file and schemas it names and its librdkafka properties, without
    /// connecting to anything; print the effective configuration as TOML
    /// that `run --config` accepts, secrets masked as "<redacted>". Exits
    /// non-zero, naming the file (and line:column), if anything is wrong.
    CheckConfig {
        /// The TOML configuration file; only defaults and environment if omitted.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print one customer's state, segments, windowed counts and timers as
    /// JSON, from the local store (the worker must be stopped: RocksDB allows
    /// one process; on a running worker use GET /admin/customers/ID).
    Inspect {
        /// The customer id (the Kafka key).
        customer: String,
        #[arg(long, short, value_name = "FILE", env = "COHORT_CONFIG")]
        config: PathBuf,
        /// Also explain every segment (each atom of its condition with the
        /// value read, the next instant it can flip) and every offer
        /// (eligible or not, what stops it, its score).
        #[arg(long)]
        explain: bool,
    },
    /// Evaluate a candidate rules file over a worker's store without
    /// producing or writing anything: per segment, the customers in it now
    /// and under the candidate, entries, exits and sample customers, decided
    /// exactly as a switch to the candidate would decide them. A store a
    /// running worker holds is read through a RocksDB secondary instance, as
    /// of the moment the command starts.
    Preview {
        /// The candidate rules file.
        candidate: PathBuf,
        #[arg(long, short, value_name = "FILE", env = "COHORT_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Sample customers shown per segment, entering and exiting.
        #[arg(long, default_value_t = 5)]
        samples: usize,
    },
    /// Erase a customer. By default this produces a forget request (a null
    /// value keyed by the customer) to the profiles topic, so the worker
    /// that owns the customer erases its state and timers, writes a changelog
    /// tombstone and announces it on segment-changes. With --local, erases
    /// from a stopped worker's store directly and compacts it so the id is
    /// gone from every file.
    Forget {
        /// The customer id (the Kafka key).
        customer: String,
        #[arg(long, short, value_name = "FILE", env = "COHORT_CONFIG")]
        config: PathBuf,
        /// Erase from the local store instead of sending a forget request.
        #[arg(long)]
        local: bool,
    },
}

fn main() -> std::process::ExitCode {
    cohort::memory::disable_transparent_huge_pages();
    match command(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // An rdkafka error may quote a property's value: no secret of the
            // loaded configuration is printed (see cohort::secrets).
            eprintln!("Error: {}", cohort::secrets::redact(&format!("{e:?}")));
            std::process::ExitCode::FAILURE
        }
    }
}

fn command(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            // The runtime and the SIGTERM handler first: from here on SIGTERM
            // means a clean stop, even while the config loads and the store opens.
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let (shutdown, hup) = {
                let _in_runtime = rt.enter();
                // SIGHUP too: one during the store's open is kept, not fatal.
                (shutdown_signal(), sighup()?)
            };
            let config = load_config(Some(&config))?;
            // A property librdkafka refuses, named without its value.
            cohort::check::check_librdkafka_properties(&config)?;
            init_tracing(&config);
            let result = rt.block_on(run(config, shutdown, hup));
            // The worker has spent its shutdown budget; a blocking task still
            // running (a store read for the admin API) must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }
        Command::Demo(args) => cohort::demo::run(args),
        Command::Loadgen(args) => cohort::loadgen_cmd::run(args, SystemClock.now()).map(|_| ()),
        Command::Validate { rules } => {
            let set = worker::load_rules(&rules)?;
            println!("{}: valid, rules version {}", rules.display(), set.version());
            println!("{} segments:", set.segments().len());
            for s in set.segments() {
                let group = s
                    .group
                    .as_deref()
                    .map(|g| format!(" [group {g}, priority {}]", s.priority.unwrap_or_default()))
                    .unwrap_or_default();
                println!("  {}{group}", s.name);
            }
            println!("{} offers:", set.offers().len());
            for o in set.offers() {
                println!("  {} (value {}, lever {}, holdout {})", o.id, o.value, o.lever, o.holdout);
            }
            Ok(())
        }
        Command::CheckConfig { config } => {
            let c = load_config(config.as_deref())?;
            let checked = cohort::check::check(&c)?;
            let source = config.as_deref().map_or("the defaults".to_string(), |p| p.display().to_string());
            println!("# The effective configuration: {source} and the COHORT__* environment, checked by");
            println!("# `cohort check-config`; secret librdkafka properties read \"{}\".", cohort::secrets::REDACTED);
            println!(
                "# Rules {}: version {}, {} segments, {} offers.",
                c.rules.path.display(),
                checked.rules_version,
                checked.segments,
                checked.offers
            );
            print!("{}", c.to_masked_toml().context("rendering the configuration as TOML")?);
            Ok(())
        }
        Command::Inspect { customer, config, explain } => {
            let config = load_config(Some(&config))?;
            let engine = Engine::new(worker::load_rules(&config.rules.path)?, EngineSettings::default());
            let store = Store::open(&config.store.path, &config.store.rocksdb)
                .with_context(|| format!("opening the store at {}", config.store.path.display()))?;
            match cohort::inspect::lookup(
                &store,
                &engine,
                &customer,
                config.processing.live_clock.then(|| SystemClock.now()),
                explain,
            )? {
                Some(doc) => {
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                    Ok(())
                }
                None => bail!("customer {customer:?} is not in the store at {}", config.store.path.display()),
            }
        }
        Command::Preview { candidate, config, json, samples } => {
            let config = load_config(Some(&config))?;
            let text = std::fs::read_to_string(&candidate)
                .with_context(|| format!("{}: cannot read the candidate rules", candidate.display()))?;
            let engine = cohort::preview::candidate(&candidate.display().to_string(), &text)?;
            let current = worker::load_rules(&config.rules.path)?;
            let path = &config.store.path;
            // A running worker holds its store: read it through a RocksDB
            // secondary instance instead, as of this moment.
            let scratch = tempfile::tempdir().context("creating a directory for the secondary instance")?;
            let store = match Store::open(path, &config.store.rocksdb) {
                Err(e) if Store::is_held_elsewhere(&e) => {
                    eprintln!(
                        "note: a running worker holds the store at {}; reading it through a RocksDB secondary \
                         instance, as of now (POST the candidate to the worker's /admin/preview for its partitions \
                         as it runs)",
                        path.display()
                    );
                    Store::open_secondary(path, scratch.path(), &config.store.rocksdb)
                        .with_context(|| format!("opening the store at {} as a secondary instance", path.display()))?
                }
                opened => opened.with_context(|| format!("opening the store at {}", path.display()))?,
            };
            let preview = cohort::preview::preview_store(&store, &current, &engine, None, samples)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&preview)?);
            } else {
                print!("{}", preview.table());
            }
            Ok(())
        }
        Command::Forget { customer, config, local } => {
            let config = load_config(Some(&config))?;
            if local {
                let store = Store::open(&config.store.path, &config.store.rocksdb)
                    .with_context(|| format!("opening the store at {}", config.store.path.display()))?;
                let report = store.forget(&customer)?;
                store.compact()?;
                println!(
                    "erased {customer:?} from {}: {} state(s), {} timer(s) in partitions {:?}",
                    config.store.path.display(),
                    report.states_deleted,
                    report.timers_deleted,
                    report.partitions
                );
                println!("note: the changelog topic still holds its state until a forget request is processed; run without --local too.");
                return Ok(());
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut props = config.kafka.properties.clone();
                props.extend(config.kafka.producer_properties.clone());
                let producer = cohort_kafka::OutputProducer::new(&config.kafka.bootstrap_servers, &props)?;
                let rec = cohort_kafka::OutputRecord {
                    topic: config.topics.profiles.as_str().into(),
                    key: Some(customer.clone().into_bytes()),
                    value: None,
                    headers: vec![("cohort.forget".into(), (&b"requested"[..]).into())],
                    timestamp: Some(SystemClock.now().as_millis()),
                    partition: None,
                };
                producer.send_all(std::slice::from_ref(&rec)).await?;
                println!(
                    "forget request for {customer:?} written to {}; the owning worker erases it and announces it on {}",
                    config.topics.profiles, config.topics.segment_changes
                );
                anyhow::Ok(())
            })
        }
    }
}

/// Loads the configuration and remembers its secrets, so that no log line
/// or error message of this process prints them.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = Config::load(path, std::env::vars()).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    cohort::secrets::remember(&config);
    Ok(config)
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(cohort::secrets::RedactingStderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

struct AdminLookup {
    store: Arc<Store>,
    engine: cohort::reload::SharedEngine,
    clock: Arc<dyn Clock>,
    /// `processing.live_clock`: customers are read at the clock's time, not
    /// their partition's.
    live: bool,
    progress: Arc<cohort::liveness::Progress>,
}

impl CustomerLookup for AdminLookup {
    fn customer_json(&self, customer: &str, explain: bool) -> Result<Option<String>, String> {
        let doc = cohort::inspect::lookup(
            &self.store,
            &self.engine.get(),
            customer,
            self.live.then(|| self.clock.now()),
            explain,
        )
        .map_err(|e| format!("{e:#}"))?;
        doc.map(|d| serde_json::to_string_pretty(&d)).transpose().map_err(|e| e.to_string())
    }

    fn preview(&self, candidate: &str, samples: usize, table: bool) -> Result<String, AdminError> {
        let engine =
            cohort::preview::candidate("candidate", candidate).map_err(|e| AdminError::BadRequest(format!("{e:#}")))?;
        let owned = self.progress.state().partitions.into_iter().map(|p| p as u32).collect();
        let current = self.engine.get();
        let preview = cohort::preview::preview_store(&self.store, current.rules(), &engine, Some(owned), samples)
            .map_err(|e| AdminError::Failed(format!("{e:#}")))?;
        Ok(if table { preview.table() } else { serde_json::to_string_pretty(&preview).unwrap_or_default() })
    }
}

/// SIGHUP makes the worker read its rules file now (README, "Changing the
/// rules"). Installed when the process starts; signals are queued on the
/// returned channel until the worker is there to take them.
fn sighup() -> anyhow::Result<std::sync::mpsc::Receiver<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(rx)
}

/// Hands SIGHUPs to the worker's rules watcher.
fn reload_on_sighup(hup: std::sync::mpsc::Receiver<()>, wake: std::sync::mpsc::Sender<()>) {
    std::thread::spawn(move || {
        for () in hup {
            tracing::info!("SIGHUP: reading the rules file");
            if wake.send(()).is_err() {
                return;
            }
        }
    });
}

async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    hup: std::sync::mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    metrics.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let readiness = Arc::new(Readiness::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let worker = Worker::open(config.clone(), metrics.clone(), readiness.clone(), clock.clone())?;
    let lookup = Arc::new(AdminLookup {
        store: worker.store(),
        engine: worker.shared_engine(),
        clock,
        live: config.processing.live_clock,
        progress: worker.progress(),
    });
    reload_on_sighup(hup, worker.rules_waker());
    let addr: std::net::SocketAddr = config.http.listen.parse()?;
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound, http_task) = http::serve(addr, metrics, readiness, Some(lookup), async {
        let _ = stop_http_rx.await;
    })
    .await
    .with_context(|| format!("binding http.listen {addr}"))?;
    tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
    let result = worker.run(shutdown).await;
    let _ = stop_http_tx.send(());
    // Graceful: requests under way are answered, but a scraper's open
    // connection does not hold the exit.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), http_task).await;
    result
}

/// Completes on SIGTERM or Ctrl-C. The SIGTERM handler is installed when
/// this is called, not when the future is first polled: a SIGTERM that
/// arrives while the store opens (a pod stopped right after it started)
/// is kept and ends the worker cleanly once it runs, instead of killing
/// the process with the signal's default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutdown requested");
    }
}
