//! What the benchmark harnesses share.

/// CPU seconds (user + system) from a `/proc/.../stat` file: a process's
/// (`/proc/PID/stat`, all its threads) or the calling thread's
/// (`/proc/thread-self/stat`).
pub fn cpu_secs_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(end) = stat.rfind(')') else { return 0.0 };
    let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here; in USER_HZ (1/100 s).
    (field(11) + field(12)) as f64 / 100.0
}

/// CPU seconds (user + system, all threads) of process `pid` so far.
#[allow(dead_code)] // not every harness watches another process
pub fn cpu_secs(pid: u32) -> f64 {
    cpu_secs_of(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of each kind of thread of process `pid` so far, by thread
/// name without its trailing digits (`rdk:broker111` counts as `rdk:broker`),
/// largest first. Threads that have ended are not counted.
#[allow(dead_code)] // not every harness watches another process
pub fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut by_name: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    for t in tasks.flatten() {
        let dir = t.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim().trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').to_string();
        *by_name.entry(name).or_default() += cpu_secs_of(&dir.join("stat").to_string_lossy());
    }
    let mut v: Vec<(String, f64)> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// The process id of the tansu broker serving `bootstrap`, from /proc.
#[allow(dead_code)] // not every harness runs a broker
pub fn find_tansu_pid(bootstrap: &str) -> Option<u32> {
    let url = format!("tcp://{bootstrap}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("tansu") && cmd.contains(&url) {
                return Some(pid);
            }
        }
    }
    None
}

/// Events as the input records a worker reads, Avro- or JSON-encoded, on
/// partition 0 with consecutive offsets; each event on its kind's topic.
#[allow(dead_code)] // not every harness processes offline
pub struct Records {
    encoder: cohort_codec::Encoder,
    offset: i64,
}

#[allow(dead_code)]
impl Records {
    pub fn avro() -> Records {
        Records::new(cohort_codec::Format::Avro)
    }

    pub fn new(format: cohort_codec::Format) -> Records {
        let registry = std::sync::Arc::new(cohort_codec::Registry::builtin());
        Records { encoder: cohort_codec::Encoder::new(format, registry), offset: 0 }
    }

    /// Offsets go on as if `n` records had been made.
    pub fn skip(&mut self, n: usize) {
        self.offset += n as i64;
    }

    pub fn of(&mut self, events: &[cohort_core::event::Event]) -> Vec<cohort_kafka::InputRecord<'static>> {
        use cohort_core::event::EventKind;
        events
            .iter()
            .map(|e| {
                self.offset += 1;
                let topic = match e.kind {
                    EventKind::Purchase(_) => "purchases",
                    EventKind::ProfileUpdate(_) | EventKind::Forget => "customer-profiles",
                    EventKind::OfferOutcome(_) => "offer-outcomes",
                    EventKind::Click(_) => "clickstream",
                };
                cohort_kafka::InputRecord {
                    topic: std::sync::Arc::from(topic),
                    partition: 0,
                    offset: self.offset,
                    timestamp: Some(e.time.as_millis()),
                    key: Some(e.customer.clone().into_bytes().into()),
                    value: self.encoder.encode_event(e).ok().flatten().map(Into::into),
                    headers: Default::default(),
                }
            })
            .collect()
    }
}

/// Gives each of cohort-loadgen's `customers` customers a state through
/// the worker's own path: the generator's next `customers` events, each
/// renamed to the next customer in turn (with cohort-loadgen's ids, so its
/// later traffic lands on these customers), in batches of `batch`.
#[allow(dead_code)]
pub fn fill_every_customer(
    worker: &mut cohort::worker::Worker,
    gen: &mut cohort_loadgen::Generator,
    records: &mut Records,
    customers: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let width = customers.to_string().len().max(6);
    let mut n = 0usize;
    while n < customers {
        let mut evs: Vec<cohort_core::event::Event> = gen.by_ref().take(batch.min(customers - n)).collect();
        for e in &mut evs {
            e.customer = format!("c-{:0width$}", n + 1);
            e.id = format!("fill-{n}");
            n += 1;
        }
        worker.process_offline(&records.of(&evs))?;
    }
    Ok(())
}

/// Bytes of the files under `p`.
#[allow(dead_code)]
pub fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            total += if path.is_dir() { dir_bytes(&path) } else { e.metadata().map(|m| m.len()).unwrap_or(0) };
        }
    }
    total
}

/// `read_bytes` of /proc/self/io: what this process read from the storage
/// device (page-cache hits excluded).
#[allow(dead_code)]
pub fn device_read_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("read_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}
