//! The demo's live view and summary: snapshots of the worker's metrics,
//! redrawn every second, and the numbers' formatting.

use super::Shared;
use crate::metrics::Metrics;
use cohort_core::time::{Timestamp, MS_PER_DAY};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// Counters and gauges read from the worker's metrics registry.
#[derive(Default, Clone)]
pub(super) struct Snapshot {
    pub(super) consumed: BTreeMap<String, f64>,
    pub(super) produced: BTreeMap<String, u64>,
    pub(super) outputs: BTreeMap<String, f64>,
    pub(super) population: BTreeMap<String, f64>,
    pub(super) entries: BTreeMap<String, f64>,
    pub(super) exits: BTreeMap<String, f64>,
    /// (offer, holdout) → decisions.
    pub(super) offers: BTreeMap<(String, bool), f64>,
    pub(super) timers_fired: f64,
    pub(super) batched: f64,
    pub(super) dlq: f64,
    pub(super) lag: f64,
}

impl Snapshot {
    pub(super) fn take(metrics: &Metrics, shared: &Shared) -> Snapshot {
        let mut s = Snapshot {
            produced: shared.produced.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ..Snapshot::default()
        };
        for family in metrics.registry.gather() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_string()).unwrap_or_default()
                };
                let counter = m.get_counter().get_value();
                let gauge = m.get_gauge().get_value();
                match family.name() {
                    "cohort_input_records_total" => {
                        s.consumed.insert(label("topic"), counter);
                    }
                    "cohort_output_records_total" => {
                        s.outputs.insert(label("topic"), counter);
                    }
                    "cohort_segment_population_customers" => {
                        s.population.insert(label("segment"), gauge);
                    }
                    "cohort_segment_entries_total" => {
                        s.entries.insert(label("segment"), counter);
                    }
                    "cohort_segment_exits_total" => {
                        s.exits.insert(label("segment"), counter);
                    }
                    "cohort_offers_decided_total" => {
                        s.offers.insert((label("offer"), label("holdout") == "true"), counter);
                    }
                    // Records the worker processed, for when it does not
                    // count cohort_input_records_total per topic.
                    "cohort_batch_size_records" => s.batched += m.get_histogram().get_sample_sum(),
                    "cohort_timers_fired_total" => s.timers_fired = counter,
                    "cohort_dlq_records_total" => s.dlq += counter,
                    "cohort_consumer_lag_records" => s.lag += gauge,
                    _ => {}
                }
            }
        }
        s
    }

    pub(super) fn total_consumed(&self) -> f64 {
        let by_topic: f64 = self.consumed.values().sum();
        if by_topic > 0.0 {
            by_topic
        } else {
            self.batched
        }
    }

    pub(super) fn total_produced(&self) -> u64 {
        self.produced.values().sum()
    }

    pub(super) fn offer(&self, id: &str) -> (f64, f64) {
        let sent = self.offers.get(&(id.to_string(), false)).copied().unwrap_or(0.0);
        let held = self.offers.get(&(id.to_string(), true)).copied().unwrap_or(0.0);
        (sent, held)
    }
}

pub(super) fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

/// The live view and the summary.
pub(super) struct View {
    pub(super) segments: Vec<String>,
    pub(super) offers: Vec<(String, f64)>,
    pub(super) tty: bool,
    pub(super) duration: Duration,
    pub(super) http: SocketAddr,
    pub(super) expected_rate: f64,
    pub(super) frames: u64,
}

impl View {
    pub(super) fn new(
        segments: Vec<String>,
        offers: Vec<(String, f64)>,
        tty: bool,
        duration: Duration,
        http: SocketAddr,
        expected_rate: f64,
    ) -> View {
        View { segments, offers, tty, duration, http, expected_rate, frames: 0 }
    }

    pub(super) fn frame(
        &mut self,
        prev: &Snapshot,
        now: &Snapshot,
        secs: f64,
        window: Vec<f64>,
        elapsed: Duration,
        sim: Timestamp,
    ) {
        self.frames += 1;
        let secs = secs.max(1e-3);
        let rate = |a: f64, b: f64| ((b - a) / secs).max(0.0);
        let (p50, p99) = (percentile(&window, 0.50), percentile(&window, 0.99));
        let lat = match (p50, p99) {
            (Some(a), Some(b)) => format!("p50 {} p99 {}", fmt_ms(a), fmt_ms(b)),
            _ => "no outputs this second".to_string(),
        };
        let consumed_rate = rate(prev.total_consumed(), now.total_consumed());
        let produced_rate = rate(prev.total_produced() as f64, now.total_produced() as f64);
        let timers_rate = rate(prev.timers_fired, now.timers_fired);
        let elapsed_s = elapsed.as_secs();
        let of = if self.duration.is_zero() {
            "until Ctrl-C".to_string()
        } else {
            format!("of {}", fmt_clock(self.duration.as_secs()))
        };

        if !self.tty {
            // Plain lines: one block a second, greppable, for logs and tests.
            let mut out = String::new();
            let _ = writeln!(
                out,
                "[{}] sim {} | events/s in {:.0} (produced {:.0}) | timers/s {:.0} | latency {} | dlq {:.0} | lag {:.0}",
                fmt_clock(elapsed_s),
                fmt_sim(sim),
                consumed_rate,
                produced_rate,
                timers_rate,
                lat,
                now.dlq,
                now.lag
            );
            let mut pops: Vec<(&String, f64)> = self.segments.iter().map(|s| (s, get(&now.population, s))).collect();
            pops.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            let pops: Vec<String> = pops
                .iter()
                .map(|(s, n)| {
                    let e = rate(get(&prev.entries, s), get(&now.entries, s));
                    let x = rate(get(&prev.exits, s), get(&now.exits, s));
                    format!("{s}={n:.0}(+{e:.0}/-{x:.0})")
                })
                .collect();
            let _ = writeln!(out, "  segments: {}", pops.join(" "));
            let offers: Vec<String> = self
                .offers
                .iter()
                .map(|(id, _)| {
                    let (s, h) = now.offer(id);
                    let (ps, ph) = prev.offer(id);
                    format!("{id}={:.0}/s({})", rate(ps + ph, s + h), holdout_pct(s, h))
                })
                .collect();
            let _ = writeln!(out, "  offers: {}", offers.join(" "));
            print!("{out}");
            let _ = std::io::stdout().flush();
            return;
        }

        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push_str("\x1b[K\n");
        };
        line(
            &mut out,
            format!(
                "\x1b[1mcohort demo\x1b[0m  {} {}  simulated {}  /metrics on http://{}/metrics",
                fmt_clock(elapsed_s),
                of,
                fmt_sim(sim),
                self.http
            ),
        );
        line(&mut out, String::new());
        let inputs: Vec<String> = now
            .produced
            .iter()
            .map(|(t, v)| {
                let before = prev.produced.get(t).copied().unwrap_or(0) as f64;
                format!("{t} {}", group_digits(rate(before, *v as f64) as u64))
            })
            .collect();
        line(
            &mut out,
            format!(
                "events/s    {:>7}  processed; produced {} (expected ~{}): {}",
                group_digits(consumed_rate as u64),
                group_digits(produced_rate as u64),
                group_digits(self.expected_rate as u64),
                inputs.join(", ")
            ),
        );
        let outputs: Vec<String> = now
            .outputs
            .iter()
            .filter(|(t, _)| !t.contains("changelog"))
            .map(|(t, v)| format!("{t} {}", group_digits(rate(get(&prev.outputs, t), *v) as u64)))
            .collect();
        line(&mut out, format!("outputs/s   {}", outputs.join(", ")));
        line(
            &mut out,
            format!(
                "timers/s    {:>7}  (time-based re-evaluations: abandoned carts, at risk, lapsed, ...)",
                group_digits(timers_rate as u64)
            ),
        );
        line(&mut out, format!("latency     {lat}  (wall clock, input produced -> output readable on Kafka)"));
        line(
            &mut out,
            format!(
                "dlq         {:>7}    consumer lag {} records",
                group_digits(now.dlq as u64),
                group_digits(now.lag as u64)
            ),
        );
        line(&mut out, String::new());
        line(&mut out, format!("\x1b[1m{:<22}{:>10}{:>9}{:>9}\x1b[0m", "segment", "customers", "in/s", "out/s"));
        let mut pops: Vec<(&String, f64)> = self.segments.iter().map(|s| (s, get(&now.population, s))).collect();
        pops.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        for (s, n) in pops {
            line(
                &mut out,
                format!(
                    "{:<22}{:>10}{:>9}{:>9}",
                    s,
                    group_digits(n.max(0.0) as u64),
                    group_digits(rate(get(&prev.entries, s), get(&now.entries, s)) as u64),
                    group_digits(rate(get(&prev.exits, s), get(&now.exits, s)) as u64)
                ),
            );
        }
        line(&mut out, String::new());
        line(&mut out, format!("\x1b[1m{:<22}{:>10}{:>9}{:>10}\x1b[0m", "offer", "decided/s", "total", "holdout"));
        for (id, configured) in &self.offers {
            let (s, h) = now.offer(id);
            let (ps, ph) = prev.offer(id);
            line(
                &mut out,
                format!(
                    "{:<22}{:>10}{:>9}{:>10}{}",
                    id,
                    group_digits(rate(ps + ph, s + h) as u64),
                    group_digits((s + h) as u64),
                    holdout_pct(s, h),
                    if *configured > 0.0 {
                        format!("  (configured {:.0}%)", configured * 100.0)
                    } else {
                        String::new()
                    }
                ),
            );
        }
        line(&mut out, String::new());
        line(&mut out, "Ctrl-C stops and prints a summary.".to_string());
        out.push_str("\x1b[J");
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(b"\x1b[H");
        if self.frames == 1 {
            let _ = stdout.write_all(b"\x1b[2J\x1b[H");
        }
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    pub(super) fn summary(
        &self,
        end: &Snapshot,
        wall: Duration,
        sim0: Timestamp,
        sim_end: Timestamp,
        stopped_by: &str,
        shared: &Shared,
    ) {
        let secs = wall.as_secs_f64().max(1e-3);
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(out, "=== cohort demo summary ===");
        let _ = writeln!(
            out,
            "stopped by {stopped_by} after {:.1} s of traffic; simulated {} to {} ({:.1} days)",
            wall.as_secs_f64(),
            fmt_sim(sim0),
            fmt_sim(sim_end),
            sim_end.since(sim0).as_millis() as f64 / MS_PER_DAY as f64
        );
        let produced: Vec<String> = end.produced.iter().map(|(t, n)| format!("{t} {}", group_digits(*n))).collect();
        let _ = writeln!(
            out,
            "events produced {} ({}); processed {} = {} events/s",
            group_digits(end.total_produced()),
            produced.join(", "),
            group_digits(end.total_consumed() as u64),
            group_digits((end.total_consumed() / secs) as u64)
        );
        let outputs: Vec<String> =
            end.outputs.iter().map(|(t, n)| format!("{t} {}", group_digits(*n as u64))).collect();
        let _ = writeln!(out, "outputs: {}", outputs.join(", "));
        let _ = writeln!(
            out,
            "timers fired {}; dead letters {}",
            group_digits(end.timers_fired as u64),
            group_digits(end.dlq as u64)
        );
        let all = shared.latency_all.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (percentile(&all, 0.5), percentile(&all, 0.99), all.iter().copied().reduce(f64::max)) {
            (Some(a), Some(b), Some(c)) => {
                let _ = writeln!(
                    out,
                    "latency (wall clock, input produced -> output readable on Kafka, {} outputs): p50 {} p99 {} max {}",
                    group_digits(all.len() as u64),
                    fmt_ms(a),
                    fmt_ms(b),
                    fmt_ms(c)
                );
            }
            _ => {
                let _ = writeln!(out, "latency: no outputs were read back");
            }
        }
        let timer_entries = shared.timer_entries.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<22}{:>10}{:>10}{:>10}{:>10}", "segment", "customers", "entries", "exits", "by timer");
        let mut pops: Vec<(&String, f64)> = self.segments.iter().map(|s| (s, get(&end.population, s))).collect();
        pops.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        for (s, n) in pops {
            let _ = writeln!(
                out,
                "{:<22}{:>10}{:>10}{:>10}{:>10}",
                s,
                group_digits(n.max(0.0) as u64),
                group_digits(get(&end.entries, s) as u64),
                group_digits(get(&end.exits, s) as u64),
                group_digits(timer_entries.get(s.as_str()).copied().unwrap_or(0))
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<22}{:>10}{:>10}{:>10}", "offer", "decided", "sent", "holdout");
        for (id, _) in &self.offers {
            let (s, h) = end.offer(id);
            let _ = writeln!(
                out,
                "{:<22}{:>10}{:>10}{:>10}",
                id,
                group_digits((s + h) as u64),
                group_digits(s as u64),
                holdout_pct(s, h)
            );
        }
        let entered: Vec<String> = timer_entries.iter().map(|(s, n)| format!("{s} {}", group_digits(*n))).collect();
        let _ = writeln!(
            out,
            "\nentered by a timer (time passing, no event): {}",
            if entered.is_empty() { "none".to_string() } else { entered.join(", ") }
        );
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

pub(super) fn holdout_pct(sent: f64, held: f64) -> String {
    if sent + held <= 0.0 {
        "-".to_string()
    } else {
        format!("{:.1}%", held / (sent + held) * 100.0)
    }
}

/// The `q` quantile of `samples` (nearest rank), `None` when empty.
pub(super) fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

pub(super) fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub(super) fn fmt_clock(secs: u64) -> String {
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

/// `2025-03-14 06:00` (UTC).
pub(super) fn fmt_sim(t: Timestamp) -> String {
    let (y, m, d) = t.civil();
    let in_day = t.as_millis().rem_euclid(MS_PER_DAY) / 60_000;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", in_day / 60, in_day % 60)
}

/// `12,345`.
pub(super) fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
