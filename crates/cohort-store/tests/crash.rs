//! Crash consistency: a writer process is killed with SIGKILL in the middle
//! of committing batches, several times over the same directory; every
//! reopen must show the offsets, states and timers of one single batch.
//!
//! The writer is this test binary itself, re-executed with `--exact` and an
//! environment variable that turns the test into the writer.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const TEST_NAME: &str = "sigkill_during_commits_reopens_consistent";
const CHILD_DIR_ENV: &str = "COHORT_STORE_CRASH_WRITER_DIR";
const CHILD_MARKER_ENV: &str = "COHORT_STORE_CRASH_WRITER_MARKER";
const PARTITION: u32 = 9;
const CUSTOMERS: usize = 400;
const ROUNDS: usize = 6;

/// Kills the writer if the parent test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_during_commits_reopens_consistent() {
    if let (Ok(dir), Ok(marker)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_MARKER_ENV)) {
        writer(Path::new(&dir), Path::new(&marker));
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    let ids = customers(CUSTOMERS);
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    let mut last = -1;
    for round in 0..ROUNDS {
        let marker = tmp.path().join(format!("started-{round}"));
        let child = Command::new(std::env::current_exe().expect("current exe"))
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &store_dir)
            .env(CHILD_MARKER_ENV, &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let mut child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !marker.exists() {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                panic!("writer exited before committing: {status}");
            }
            assert!(Instant::now() < deadline, "writer did not start within 60s");
            std::thread::sleep(Duration::from_millis(5));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 600));
        child.0.kill().expect("SIGKILL writer");
        let status = child.0.wait().expect("wait");
        assert!(!status.success(), "writer was killed, not finished: {status}");

        let store = open(&store_dir);
        let n = assert_consistent(&store, PARTITION, &ids);
        assert!(n > last, "round {round}: stored batch {n} is not after {last}");
        eprintln!("round {round}: killed after batch {n}");
        last = n;
    }
}

/// The child: continue from the stored batch, commit for ever (until killed,
/// or 120 s as a safety net), create the marker after the first commit.
fn writer(dir: &Path, marker: &Path) {
    let store = open(dir);
    let ids = customers(CUSTOMERS);
    let first = assert_consistent(&store, PARTITION, &ids) + 1;
    let stop = Instant::now() + Duration::from_secs(120);
    let mut n = first;
    while Instant::now() < stop {
        store.commit(&crash_batch(PARTITION, n, &ids)).expect("commit");
        if n == first {
            std::fs::write(marker, b"started").expect("marker");
        }
        n += 1;
    }
}
