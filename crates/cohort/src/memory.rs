//! Process-wide memory settings, applied before the worker allocates much.

/// Stops the kernel from backing this process's memory with transparent
/// huge pages, unless `MIMALLOC_ALLOW_THP` is set (then mimalloc's own
/// setting applies). Returns whether they were turned off.
///
/// mimalloc asks for huge pages (`madvise(MADV_HUGEPAGE)`) for its arenas,
/// so every first touch of a 2 MiB region faults in and zeroes all of it.
/// The worker's batches allocate fresh hash tables and output buffers, and
/// zeroing huge pages was 19% of the processing thread in the pipeline
/// benchmark; without them the per-event path is x1.13 faster
/// (docs/benchmarks.md). Databases built on RocksDB commonly run without
/// them for the same reason and for steadier latency. Processes this one
/// starts (the demo's broker, a test's) inherit the setting.
pub fn disable_transparent_huge_pages() -> bool {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return false;
    }
    set_thp_disabled()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_thp_disabled() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a
    // flag of this process's address space; no memory is read or written.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn set_thp_disabled() -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The kernel reports the flag in /proc/self/status (Linux 4.15+).
    fn thp_enabled() -> Option<bool> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
        Some(line.split_whitespace().nth(1)? == "1")
    }

    #[test]
    fn turning_huge_pages_off_is_seen_by_the_kernel() {
        // The flag is the process's: this test binary keeps it off, which
        // changes no other test's result.
        assert!(super::set_thp_disabled(), "prctl(PR_SET_THP_DISABLE) failed");
        assert_eq!(thp_enabled(), Some(false), "/proc/self/status THP_enabled after the prctl");
    }
}
