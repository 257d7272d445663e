//! Plain figures for the metrics layer: RocksDB properties and the store's counters.

/// One column family's RocksDB properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CfStats {
    pub name: &'static str,
    /// `rocksdb.live-sst-files-size`: SST bytes of the current version.
    pub live_sst_bytes: u64,
    /// `rocksdb.total-sst-files-size`: all SST bytes, including files still
    /// pinned by iterators or waiting for deletion.
    pub total_sst_bytes: u64,
    /// `rocksdb.cur-size-all-mem-tables`: active and unflushed immutable memtables.
    pub memtable_bytes: u64,
    /// `rocksdb.size-all-mem-tables`: the above plus flushed memtables still pinned.
    pub memtable_pinned_bytes: u64,
    /// `rocksdb.estimate-pending-compaction-bytes`.
    pub pending_compaction_bytes: u64,
    /// `rocksdb.estimate-num-keys`: an estimate (deletes and overwrites skew it).
    pub estimated_keys: u64,
}

/// A snapshot of the store's figures. Counters end in `_total`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Sums over the column families.
    pub live_sst_bytes: u64,
    pub total_sst_bytes: u64,
    pub memtable_bytes: u64,
    pub memtable_pinned_bytes: u64,
    pub pending_compaction_bytes: u64,
    /// Estimated number of customer states (the `states` family only).
    pub estimated_customers: u64,
    /// `rocksdb.is-write-stopped`: commits are blocked until compaction catches up.
    pub write_stopped: bool,
    /// `rocksdb.actual-delayed-write-rate`: bytes/s commits are throttled to; 0 = not delayed.
    pub delayed_write_rate: u64,
    pub running_compactions: u64,
    pub running_flushes: u64,
    pub block_cache_usage_bytes: u64,
    pub block_cache_capacity_bytes: u64,
    /// Records that failed to decode (checksum, truncation, unknown version).
    pub corrupt_records_total: u64,
    pub commits_total: u64,
    pub column_families: Vec<CfStats>,
}

impl StoreStats {
    /// Commits are stalled or throttled by RocksDB.
    pub fn write_stall(&self) -> bool {
        self.write_stopped || self.delayed_write_rate > 0
    }

    pub(crate) fn add(&mut self, cf: &CfStats) {
        self.live_sst_bytes += cf.live_sst_bytes;
        self.total_sst_bytes += cf.total_sst_bytes;
        self.memtable_bytes += cf.memtable_bytes;
        self.memtable_pinned_bytes += cf.memtable_pinned_bytes;
        self.pending_compaction_bytes += cf.pending_compaction_bytes;
        if cf.name == crate::keys::CF_STATES {
            self.estimated_customers = cf.estimated_keys;
        }
    }
}

/// Where the calling thread's reads were served, counted by RocksDB's
/// per-thread perf context from [`ThreadReads::start`] on: for benchmarks
/// that report a working set (hot states aside, the worker reads states on
/// its processing thread). Counting costs a few per cent of a read.
pub struct ThreadReads {
    context: rocksdb::perf::PerfContext,
}

/// What [`ThreadReads::counts`] reports. A point read touches a filter, an
/// index and a data block; index and filter blocks live in the block cache,
/// so block reads are nearly all data blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Blocks found in the block cache (data, index and filter).
    pub block_cache_hits: u64,
    /// Blocks read from files: the OS page cache or the device.
    pub block_reads: u64,
    pub block_read_bytes: u64,
    /// Reads that looked in a memtable (each point read does, first).
    pub memtable_lookups: u64,
}

impl ThreadReads {
    /// Starts counting this thread's reads.
    pub fn start() -> ThreadReads {
        rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::EnableCount);
        let mut context = rocksdb::perf::PerfContext::default();
        context.reset();
        ThreadReads { context }
    }

    /// The counts since [`ThreadReads::start`], on this thread.
    pub fn counts(&self) -> ReadCounts {
        use rocksdb::perf::PerfMetric;
        ReadCounts {
            block_cache_hits: self.context.metric(PerfMetric::BlockCacheHitCount),
            block_reads: self.context.metric(PerfMetric::BlockReadCount),
            block_read_bytes: self.context.metric(PerfMetric::BlockReadByte),
            memtable_lookups: self.context.metric(PerfMetric::GetFromMemtableCount),
        }
    }
}

impl std::fmt::Debug for ThreadReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadReads").field("counts", &self.counts()).finish()
    }
}
