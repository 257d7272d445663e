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
