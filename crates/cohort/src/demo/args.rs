//! `cohort demo`'s options and their parsers (speeds, wall and simulated durations).

use super::view::group_digits;
use cohort_core::time::{Duration as SimDuration, MS_PER_DAY};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `cohort demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the traffic runs once the worker has joined its group
    /// (e.g. 60s, 5m, 1h); 0 runs until Ctrl-C.
    #[arg(long, default_value = "60s", value_parser = parse_wall_duration)]
    pub duration: Duration,
    /// Simulated time per wall-clock second: `3d` (the default) lets three
    /// days pass every second, so abandoned carts (1h) show at once and
    /// lapsed customers (90 days without a purchase) within about 40 s.
    /// A plain factor such as `3600x` works too.
    #[arg(long, default_value = "3d", value_parser = parse_speed)]
    pub speed: Speed,
    /// Customers in the generated population. Each produces about
    /// 1.6 × sessions-per-day × speed-in-days events per wall second.
    #[arg(long, default_value_t = 1_000)]
    pub customers: u32,
    /// Mean visits per customer per simulated day, before the activity skew.
    #[arg(long, default_value_t = 0.25)]
    pub sessions_per_day: f64,
    /// Mean simulated time until a lapsing customer (a fifth of them) stops
    /// buying; lapsed is 90 days after their last purchase.
    #[arg(long, default_value = "10d", value_parser = parse_sim_duration)]
    pub lapse_after: SimDuration,
    /// The generator's seed: same seed, same traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Partitions of every topic on the embedded broker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub partitions: i32,
    /// Where to serve /metrics, /healthz, /readyz and /admin/customers/{id}
    /// (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// The rules file [default: deploy/rules.yaml of this checkout].
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Print plain lines every second even when stdout is a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// How much faster than the wall clock simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed(pub f64);

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_sec_ms = self.0 * 1000.0;
        let human = if per_sec_ms >= MS_PER_DAY as f64 {
            format!("{:.3} days", per_sec_ms / MS_PER_DAY as f64)
        } else if per_sec_ms >= 3_600_000.0 {
            format!("{:.3} hours", per_sec_ms / 3_600_000.0)
        } else {
            format!("{:.3} s", per_sec_ms / 1000.0)
        };
        let human = human.replace(".000", "");
        write!(f, "{human} per second ({}x)", group_digits(self.0.round() as u64))
    }
}

pub(super) fn parse_speed(s: &str) -> Result<Speed, String> {
    let s = s.trim();
    let factor = if let Some(x) = s.strip_suffix('x') {
        x.trim()
            .parse::<f64>()
            .map_err(|_| format!("`{s}`: expected a factor such as 3600x or a duration such as 3d"))?
    } else {
        parse_ms(s)? as f64 / 1000.0
    };
    if !(factor.is_finite() && factor > 0.0) {
        return Err(format!("`{s}`: the speed must be positive"));
    }
    Ok(Speed(factor))
}

pub(super) fn parse_wall_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_millis(parse_ms(s)? as u64))
}

pub(super) fn parse_sim_duration(s: &str) -> Result<SimDuration, String> {
    let ms = parse_ms(s)?;
    if ms <= 0 {
        return Err(format!("`{s}`: must be longer than 0"));
    }
    Ok(SimDuration::from_millis(ms))
}

/// `500ms`, `20s`, `5m`, `2h`, `3d`, `1w`, or a decimal such as `1.5d`.
pub(super) fn parse_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}`: expected a number and a unit such as 20s, 5m, 3d"))?;
    let unit_ms = match unit.trim() {
        "ms" => 1.0,
        "s" | "sec" | "secs" => 1_000.0,
        "m" | "min" | "mins" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => MS_PER_DAY as f64,
        "w" | "week" | "weeks" => 7.0 * MS_PER_DAY as f64,
        "" => return Err(format!("`{s}`: add a unit (ms, s, m, h, d, w)")),
        other => return Err(format!("`{s}`: unknown unit `{other}` (ms, s, m, h, d, w)")),
    };
    let ms = n * unit_ms;
    if !ms.is_finite() || ms < 0.0 || ms > i64::MAX as f64 / 2.0 {
        return Err(format!("`{s}`: out of range"));
    }
    Ok(ms.round() as i64)
}
