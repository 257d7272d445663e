//! `cohort demo` end to end: the built binary on its embedded broker, with a
//! short duration and a small population. Checks that /metrics passes
//! `promtool check metrics` while it runs, that the output shows segment
//! populations and ends with the summary, and that time alone (a timer, no
//! event) moved customers into a segment.

mod common;

use common::{http_get, sample};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PROMTOOL: &str = "/usr/bin/promtool";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

#[test]
fn demo_runs_serves_valid_metrics_and_prints_a_summary() {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: run scripts/setup.sh (or `make test`), which installs the Debian `prometheus` package"
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(["demo", "--duration", "20s", "--customers", "300", "--listen", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cohort demo");

    // Collect stdout and stderr as they come, so the pipes never fill.
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("stdout");
    let tx_out = tx.clone();
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx_out.send(line);
        }
    });
    let err = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(err).read_to_string(&mut s);
        s
    });
    drop(tx);

    // Scrape /metrics once the traffic has run for a while (the first
    // segments line means the worker is processing).
    let started = Instant::now();
    let mut stdout: Vec<String> = Vec::new();
    let mut frames = 0;
    let mut scraped: Option<String> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if line.starts_with("  segments:") {
                    frames += 1;
                }
                stdout.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if scraped.is_none() && frames >= 10 {
            scraped = http_get(&addr, "/metrics");
            assert!(http_get(&addr, "/healthz").is_some(), "/healthz answers while the demo runs");
        }
        if started.elapsed() > Duration::from_secs(150) {
            let _ = child.kill();
            panic!("cohort demo --duration 20s still running after 150 s; output so far:\n{}", stdout.join("\n"));
        }
    }
    let status = child.wait().expect("wait for cohort demo");
    let _ = out_reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let all = stdout.join("\n");
    assert!(status.success(), "cohort demo failed ({status}):\n{all}\nstderr:\n{stderr}");

    // The live view: plain lines (stdout is a pipe) with populations.
    assert!(frames >= 10, "expected a segments line every second, got {frames}:\n{all}");
    assert!(all.contains("cart_abandoner="), "populations name every segment:\n{all}");
    assert!(all.contains("offers: cart_reminder_10="), "offers are listed:\n{all}");

    // The summary ends the output.
    let summary_at = all.find("=== cohort demo summary ===").unwrap_or_else(|| panic!("no summary:\n{all}"));
    let summary = &all[summary_at..];
    assert!(summary.contains("stopped by --duration"), "{summary}");
    assert!(summary.contains("latency (wall clock"), "outputs were read back:\n{summary}");
    assert!(stdout.last().is_some_and(|l| l.starts_with("entered by a timer")), "{summary}");
    let timer_line = stdout.last().cloned().unwrap_or_default();
    assert!(
        timer_line.contains("cart_abandoner"),
        "time alone moved customers into cart_abandoner (a timer, not an event):\n{summary}"
    );

    // /metrics, as scraped mid-run, is valid Prometheus text.
    let metrics = scraped.unwrap_or_else(|| panic!("could not scrape http://{addr}/metrics during the run:\n{all}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &metrics).expect("write metrics");
    let check = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open metrics"))
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{metrics}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let abandoners = sample(&metrics, "cohort_segment_population_customers{segment=\"cart_abandoner\"}").unwrap_or(0.0);
    assert!(abandoners > 0.0, "cart abandoners mid-run (a timer-driven segment):\n{metrics}");
    let timers = sample(&metrics, "cohort_timers_fired_total").unwrap_or(0.0);
    assert!(timers > 0.0, "timers fired mid-run:\n{metrics}");
    assert!(sample(&metrics, "cohort_worker_ready").unwrap_or(0.0) == 1.0, "ready mid-run:\n{metrics}");
}
