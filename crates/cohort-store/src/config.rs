//! Store configuration: the hot-customer cache and RocksDB tuning.
//!
//! Every default is a named function saying where it comes from. The
//! RocksDB sources cited are its wiki pages "Setup Options and Basic Tuning"
//! (SOBT) and "RocksDB Tuning Guide" (RTG), and `include/rocksdb/options.h`.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Block compression for SST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub(crate) fn to_rocks(self) -> rocksdb::DBCompressionType {
        match self {
            Compression::None => rocksdb::DBCompressionType::None,
            Compression::Snappy => rocksdb::DBCompressionType::Snappy,
            Compression::Lz4 => rocksdb::DBCompressionType::Lz4,
            Compression::Zstd => rocksdb::DBCompressionType::Zstd,
        }
    }
}

/// How much RocksDB writes to its own `LOG` file in the store directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfoLogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    /// Only the options header at open.
    Header,
}

impl InfoLogLevel {
    pub(crate) fn to_rocks(self) -> rocksdb::LogLevel {
        match self {
            InfoLogLevel::Debug => rocksdb::LogLevel::Debug,
            InfoLogLevel::Info => rocksdb::LogLevel::Info,
            InfoLogLevel::Warn => rocksdb::LogLevel::Warn,
            InfoLogLevel::Error => rocksdb::LogLevel::Error,
            InfoLogLevel::Fatal => rocksdb::LogLevel::Fatal,
            InfoLogLevel::Header => rocksdb::LogLevel::Header,
        }
    }
}

/// Store configuration (`[store]` in `cohort.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct StoreConfig {
    /// Bytes of recently active customers' decoded states the worker keeps
    /// in memory across batches (keys, values and bookkeeping counted),
    /// split over its partitions; 0 keeps none. The store itself caches no
    /// states: RocksDB's block cache serves the rest.
    #[serde(default = "default_state_cache_bytes")]
    pub state_cache_bytes: u64,
    /// RocksDB block cache for data, index and filter blocks.
    #[serde(default = "default_block_cache_bytes")]
    pub block_cache_bytes: u64,
    /// Bloom filter bits per key on point-lookup column families (states,
    /// offsets, metadata); 0 disables the filters.
    #[serde(default = "default_bloom_bits_per_key")]
    pub bloom_bits_per_key: f64,
    /// Compression of every level but the last.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Compression of the last level, which holds ~90% of the data.
    #[serde(default = "default_bottommost_compression")]
    pub bottommost_compression: Compression,
    /// Size of one memtable of the states column family.
    #[serde(default = "default_write_buffer_bytes")]
    pub write_buffer_bytes: u64,
    /// Memtables per column family before writes stall.
    #[serde(default = "default_max_write_buffers")]
    pub max_write_buffers: u32,
    /// Cap on memtable memory across all column families; 0 = no cap.
    #[serde(default = "default_total_write_buffer_bytes")]
    pub total_write_buffer_bytes: u64,
    /// Threads for flushes and compactions together.
    #[serde(default = "default_max_background_jobs")]
    pub max_background_jobs: u32,
    /// Target size of an SST file at level 1.
    #[serde(default = "default_target_file_bytes")]
    pub target_file_bytes: u64,
    /// Level-0 files that start a compaction into level 1 (RocksDB's
    /// `level0_file_num_compaction_trigger`); writes slow down at 3x and stop
    /// at 5x this many (never below RocksDB's 20 and 36). More files per
    /// compaction rewrite level 1 less often, at the cost of more files for
    /// a point read that misses the caches to check (one Bloom probe each).
    #[serde(default = "default_level0_compaction_trigger")]
    pub level0_compaction_trigger: u32,
    /// Sync the WAL on every commit. Off by default: a process crash loses
    /// nothing (the WAL is in the page cache), a machine crash loses at most
    /// the last commits, which replay from Kafka.
    #[serde(default = "default_sync_writes")]
    pub sync_writes: bool,
    /// RocksDB's own `LOG` verbosity. `warn` and above never print keys in
    /// normal operation, which keeps forgotten customer ids out of the store
    /// directory; `info` logs manual compaction ranges, which contain keys.
    #[serde(default = "default_info_log_level")]
    pub info_log_level: InfoLogLevel,
    /// Rewrite every SST file at least this often (seconds; 0 = never), so
    /// deleted customers are purged from disk within a bounded time even
    /// without an explicit [`Store::purge`](crate::Store::purge).
    #[serde(default = "default_periodic_compaction_secs")]
    pub periodic_compaction_secs: u64,
}

/// 256 MiB: at ~1 KiB per state, the ~250k hottest customers of a worker;
/// sized by us for the Zipf-skewed traffic of the loadgen.
pub fn default_state_cache_bytes() -> u64 {
    256 << 20
}
/// 256 MiB: SOBT recommends a block cache of about a third of the memory
/// budget; cohort's budget per worker is ~1 GiB with the state cache.
pub fn default_block_cache_bytes() -> u64 {
    256 << 20
}
/// 10 bits per key, ~1% false positives: SOBT's recommended Bloom setting.
pub fn default_bloom_bits_per_key() -> f64 {
    10.0
}
/// None, as Kafka Streams' RocksDB stores (RocksDBStore.java). cohort
/// rewrites every active customer's state on each batch, so compaction CPU,
/// not disk, is what a 2-core worker runs out of: `report_commit_cost` in
/// `benches/store.rs` measured 6.7-7.2 us of CPU per 1 KiB update (all
/// threads, compaction included) uncompressed, 9.9-13.9 us with LZ4 and
/// 15.6-20.7 us with ZSTD on the last level (SOBT's advice for saving
/// space). Set `lz4` where disk matters more than CPU.
pub fn default_compression() -> Compression {
    Compression::None
}
/// None: see [`default_compression`].
pub fn default_bottommost_compression() -> Compression {
    Compression::None
}
/// 64 MiB: RocksDB's default `write_buffer_size` (options.h).
pub fn default_write_buffer_bytes() -> u64 {
    64 << 20
}
/// 4: RTG suggests more than RocksDB's default of 2 for write-heavy loads, so
/// a flush in progress does not stall commits.
pub fn default_max_write_buffers() -> u32 {
    4
}
/// 512 MiB: bounds memtables of all column families together (options.h
/// `db_write_buffer_size`), twice the states memtables at the defaults above.
pub fn default_total_write_buffer_bytes() -> u64 {
    512 << 20
}
/// 4: SOBT's example sets 6 for 8+ cores; cohort runs on 2-4 core pods.
pub fn default_max_background_jobs() -> u32 {
    4
}
/// 64 MiB: RocksDB's default `target_file_size_base` (options.h).
pub fn default_target_file_bytes() -> u64 {
    64 << 20
}
/// 8, RocksDB's is 4. `report_commit_cost` in `benches/store.rs`, the two
/// alternated twice on an idle machine: 2,570 against 3,094 bytes written to
/// disk per 1 KiB update, 3.70-3.85 against 4.15-4.55 us of CPU per update
/// (all threads). Commits on this machine are bound by the disk's write
/// bandwidth, so bytes written are what sets the sustained rate.
pub fn default_level0_compaction_trigger() -> u32 {
    8
}
/// false: see the field's docs; Kafka Streams also commits RocksDB without fsync.
pub fn default_sync_writes() -> bool {
    false
}
/// warn: see the field's docs.
pub fn default_info_log_level() -> InfoLogLevel {
    InfoLogLevel::Warn
}
/// 7 days: within GDPR's one-month deadline for erasure with margin;
/// RocksDB's own default for leveled compaction is 30 days (options.h).
pub fn default_periodic_compaction_secs() -> u64 {
    7 * 24 * 3600
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            state_cache_bytes: default_state_cache_bytes(),
            block_cache_bytes: default_block_cache_bytes(),
            bloom_bits_per_key: default_bloom_bits_per_key(),
            compression: default_compression(),
            bottommost_compression: default_bottommost_compression(),
            write_buffer_bytes: default_write_buffer_bytes(),
            max_write_buffers: default_max_write_buffers(),
            total_write_buffer_bytes: default_total_write_buffer_bytes(),
            max_background_jobs: default_max_background_jobs(),
            target_file_bytes: default_target_file_bytes(),
            level0_compaction_trigger: default_level0_compaction_trigger(),
            sync_writes: default_sync_writes(),
            info_log_level: default_info_log_level(),
            periodic_compaction_secs: default_periodic_compaction_secs(),
        }
    }
}

impl StoreConfig {
    /// Checks ranges without touching the disk.
    pub fn validate(&self) -> Result<(), StoreError> {
        let err = |msg: String| Err(StoreError::Config(msg));
        if !(0.0..=64.0).contains(&self.bloom_bits_per_key) {
            return err(format!("bloom_bits_per_key must be within 0..=64, got {}", self.bloom_bits_per_key));
        }
        if self.write_buffer_bytes < (1 << 20) {
            return err(format!("write_buffer_bytes must be at least 1 MiB, got {}", self.write_buffer_bytes));
        }
        if self.max_write_buffers < 2 {
            return err(format!("max_write_buffers must be at least 2, got {}", self.max_write_buffers));
        }
        if !(1..=256).contains(&self.max_background_jobs) {
            return err(format!("max_background_jobs must be within 1..=256, got {}", self.max_background_jobs));
        }
        if self.target_file_bytes < (1 << 20) {
            return err(format!("target_file_bytes must be at least 1 MiB, got {}", self.target_file_bytes));
        }
        if !(1..=64).contains(&self.level0_compaction_trigger) {
            return err(format!(
                "level0_compaction_trigger must be within 1..=64, got {}",
                self.level0_compaction_trigger
            ));
        }
        for (name, value) in [
            ("state_cache_bytes", self.state_cache_bytes),
            ("block_cache_bytes", self.block_cache_bytes),
            ("write_buffer_bytes", self.write_buffer_bytes),
            ("total_write_buffer_bytes", self.total_write_buffer_bytes),
            ("target_file_bytes", self.target_file_bytes),
        ] {
            if usize::try_from(value).is_err() {
                return err(format!("{name} = {value} does not fit this platform's address space"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StoreConfig::default().validate().expect("defaults validate");
    }

    #[test]
    fn bad_values_are_rejected() {
        let cfg = StoreConfig { max_write_buffers: 1, ..StoreConfig::default() };
        assert!(matches!(cfg.validate(), Err(StoreError::Config(m)) if m.contains("max_write_buffers")));
        let cfg = StoreConfig { bloom_bits_per_key: -1.0, ..StoreConfig::default() };
        assert!(cfg.validate().is_err());
        let cfg = StoreConfig { level0_compaction_trigger: 0, ..StoreConfig::default() };
        assert!(matches!(cfg.validate(), Err(StoreError::Config(m)) if m.contains("level0_compaction_trigger")));
    }
}
