//! [`Store`]: the RocksDB handle and every operation on it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use cohort_core::time::Timestamp;
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamily, ColumnFamilyDescriptor, CompactOptions,
    DBRecoveryMode, FlushOptions, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use crate::config::StoreConfig;
use crate::envelope::{self, EnvelopeError, OLDEST_RECORD_VERSION, RECORD_VERSION};
use crate::error::display_key;
use crate::keys::*;
use crate::stats::{CfStats, StoreStats};
use crate::StoreError;
use cohort_core::partition::PartitionMeta;

/// The layout version of a store directory this build writes. Bumped when
/// key layouts or column families change incompatibly; a store with a higher
/// version is refused at open.
pub const STORE_FORMAT_VERSION: u32 = 2;

/// A column family and an inclusive key range to compact (`None` = unbounded).
type PurgeRange = (&'static str, Option<Vec<u8>>, Option<Vec<u8>>);

/// Kafka partitions are non-negative `i32`s.
const MAX_PARTITION: u32 = i32::MAX as u32;

pub use cohort_core::timers::Timer;

/// Everything one processed batch changes, committed atomically by
/// [`Store::commit`]: after a crash either all of it or none of it is there.
///
/// Applied in this order, so later entries win: `states`, `timers_clear`,
/// `timers_set`, `meta`. Moving a customer's timer is a clear of the old due
/// time plus a set of the new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The Kafka partition the states and timers belong to.
    pub partition: u32,
    /// New state bytes per customer (core's encoding). `None` deletes the
    /// customer's state and every timer it has in this partition: that is how
    /// a forget arriving on the stream is committed.
    pub states: Vec<(String, Option<Bytes>)>,
    pub timers_set: Vec<Timer>,
    pub timers_clear: Vec<Timer>,
    /// The partition's new metadata record ([`PartitionMeta::encode`]):
    /// its next input offsets, watermark, tables and populations, which
    /// must change together with the states they describe.
    pub meta: Option<Bytes>,
}

/// Store-wide metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Always [`STORE_FORMAT_VERSION`] on an open store.
    pub store_format_version: u32,
    /// The version of core's state encoding last written, set by the worker.
    pub state_encoding_version: Option<u32>,
    /// The version of the rules the states were last evaluated with.
    pub rules_version: Option<String>,
}

/// A customer as stored, for `cohort inspect` and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub partition: u32,
    /// State bytes in core's encoding, envelope stripped; `None` if the
    /// customer only has timers in this partition.
    pub state: Option<Bytes>,
    /// Envelope version the state was stored with (older ones are upgraded on read).
    pub record_version: Option<u8>,
    /// Due times of the customer's timers, ascending.
    pub timers: Vec<Timestamp>,
}

/// What [`Store::forget`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetReport {
    /// Partitions that held a state or timers of the customer.
    pub partitions: Vec<u32>,
    pub states_deleted: u64,
    pub timers_deleted: u64,
}

/// cohort's local state: customer states, timers and offsets in RocksDB.
///
/// All methods take `&self` and block; share it in an `Arc` and call it from
/// `spawn_blocking` or a dedicated thread.
pub struct Store {
    path: PathBuf,
    config: StoreConfig,
    block_cache: Cache,
    /// `None` only after a reopen in [`Store::purge`] failed.
    db: RwLock<Option<DB>>,
    write_opts: WriteOptions,
    corrupt_records: AtomicU64,
    commits: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::CorruptMetadata {
        path: db.path().to_path_buf(),
        key: "column_families",
        reason: format!("column family {name} is not open"),
    })
}

fn check_partition(partition: u32) -> Result<(), StoreError> {
    if partition > MAX_PARTITION {
        return Err(StoreError::InvalidArgument(format!("partition {partition} is outside Kafka's 0..=2^31-1")));
    }
    Ok(())
}

fn db_options(config: &StoreConfig) -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_background_jobs(config.max_background_jobs as i32);
    // SOBT: smooth writeback instead of bursts at file close.
    o.set_bytes_per_sync(1 << 20);
    o.set_db_write_buffer_size(config.total_write_buffer_bytes as usize);
    // With several column families a WAL is kept until every family that
    // wrote to it has flushed; the offsets and meta families are tiny and
    // would pin WALs for ever without this cap (RocksDB wiki, Column Families).
    o.set_max_total_wal_size(4 * config.write_buffer_bytes);
    // A torn tail after a crash is cut at the last complete batch: the
    // recovered store is always a prefix of the committed batches.
    o.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    // Recycled WAL files keep old bytes, forgotten customers included.
    o.set_recycle_log_file_num(0);
    o.set_log_level(config.info_log_level.to_rocks());
    o.set_keep_log_file_num(2);
    o.set_stats_dump_period_sec(0);
    // One writer (the worker's commit); needed for the timer families'
    // vector memtables, which do not support concurrent inserts.
    o.set_allow_concurrent_memtable_write(false);
    o
}

fn cf_options(name: &str, config: &StoreConfig, block_cache: &Cache) -> Options {
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(block_cache);
    // SOBT: 16 KiB blocks, index and filters in the block cache so memory is bounded.
    t.set_block_size(16 << 10);
    t.set_cache_index_and_filter_blocks(true);
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Timers are only ever range-scanned: a point-lookup filter would be dead weight.
    if config.bloom_bits_per_key > 0.0 && name != CF_TIMERS && name != CF_TIMER_INDEX {
        t.set_bloom_filter(config.bloom_bits_per_key, false);
    }
    // A state load is a point lookup in a data block of the block cache.
    // By default it binary-searches the block's restart points and then
    // reads up to 16 entries one after another, a cache line or more each
    // (a state is ~300 bytes): a hash index over the block's keys and a
    // restart point at every key find the entry in one probe. It costs
    // ~6% more bytes on disk (no shared key prefixes, ~5 bytes of index per
    // key, so the block cache holds ~6% fewer states); at 1,000,000
    // customers it saved 1-9% of the CPU per event (docs/benchmarks.md,
    // "Session 23"). A block of more than 253 keys (tiny states) or a hash
    // collision falls back to the binary search. Scans read the same entries.
    if name == CF_STATES {
        t.set_block_restart_interval(1);
        t.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
    }
    let mut o = Options::default();
    o.set_block_based_table_factory(&t);
    o.set_compression_type(config.compression.to_rocks());
    o.set_bottommost_compression_type(config.bottommost_compression.to_rocks());
    o.set_level_compaction_dynamic_level_bytes(true);
    o.set_periodic_compaction_seconds(config.periodic_compaction_secs);
    o.set_target_file_size_base(config.target_file_bytes);
    let l0 = config.level0_compaction_trigger as i32;
    o.set_level_zero_file_num_compaction_trigger(l0);
    o.set_level_zero_slowdown_writes_trigger((3 * l0).max(20));
    o.set_level_zero_stop_writes_trigger((5 * l0).max(36));
    o.set_max_write_buffer_number(config.max_write_buffers as i32);
    // Timers are written on nearly every event (a moved timer is a delete and
    // a put, in two families) and read only when a partition is assigned or a
    // customer forgotten. A skip list memtable pays a random-position search
    // (cache misses at every level) per write: in the pipeline benchmark that
    // was most of the commit. A vector memtable appends and sorts once, when
    // it is flushed or (rarely) iterated.
    if name == CF_TIMERS || name == CF_TIMER_INDEX {
        o.set_memtable_factory(rocksdb::MemtableFactory::Vector);
    }
    // Most state loads miss the memtables (the state was written before
    // their last flush, or never): a bloom filter over the memtable's keys
    // answers those without a search of its skip list.
    if name == CF_STATES && config.bloom_bits_per_key > 0.0 {
        o.set_memtable_whole_key_filtering(true);
        o.set_memtable_prefix_bloom_ratio(0.02);
    }
    let write_buffer = match name {
        CF_STATES => config.write_buffer_bytes,
        CF_TIMERS | CF_TIMER_INDEX => (config.write_buffer_bytes / 4).max(1 << 20),
        _ => 4 << 20,
    };
    o.set_write_buffer_size(write_buffer as usize);
    o
}

/// Opens the RocksDB database with every column family it has.
fn open_db(path: &Path, config: &StoreConfig, block_cache: &Cache) -> Result<DB, StoreError> {
    let db_opts = db_options(config);
    let existing = if path.join("CURRENT").exists() {
        DB::list_cf(&db_opts, path).map_err(|e| StoreError::rocks("list_cf", e))?
    } else {
        Vec::new()
    };
    check_format_read_only(path, &existing, &db_opts)?;
    let mut descriptors: Vec<ColumnFamilyDescriptor> =
        ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, config, block_cache))).collect();
    // Families of a newer format: opened so RocksDB lets us in, never used.
    for name in existing {
        if name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !ALL_CFS.contains(&name.as_str()) {
            descriptors.push(ColumnFamilyDescriptor::new(name, Options::default()));
        }
    }
    DB::open_cf_descriptors(&db_opts, path, descriptors).map_err(|e| StoreError::rocks("open", e))
}

fn parse_format_version(path: &Path, bytes: &[u8]) -> Result<u32, StoreError> {
    let raw: [u8; 4] = bytes.try_into().map_err(|_| StoreError::CorruptMetadata {
        path: path.to_path_buf(),
        key: "store_format_version",
        reason: format!("expected 4 bytes, found {}", bytes.len()),
    })?;
    Ok(u32::from_be_bytes(raw))
}

fn refuse_newer(path: &Path, found: u32) -> Result<(), StoreError> {
    if found > STORE_FORMAT_VERSION {
        return Err(StoreError::NewerFormat { path: path.to_path_buf(), found, supported: STORE_FORMAT_VERSION });
    }
    if found == 0 {
        return Err(StoreError::CorruptMetadata {
            path: path.to_path_buf(),
            key: "store_format_version",
            reason: "version 0 was never written".into(),
        });
    }
    Ok(())
}

/// Reads the format version without writing anything, so a store of a newer
/// cohort is refused before this build's RocksDB options touch it.
fn check_format_read_only(path: &Path, existing_cfs: &[String], opts: &Options) -> Result<(), StoreError> {
    if !existing_cfs.iter().any(|n| n == CF_META) {
        return Ok(());
    }
    let db =
        DB::open_cf_for_read_only(opts, path, [CF_META], false).map_err(|e| StoreError::rocks("open_read_only", e))?;
    let meta = cf(&db, CF_META)?;
    if let Some(bytes) = db.get_pinned_cf(meta, META_STORE_FORMAT_VERSION).map_err(|e| StoreError::rocks("get", e))? {
        refuse_newer(path, parse_format_version(path, &bytes)?)?;
    }
    Ok(())
}

/// Writes the format version of a new store, refuses a newer one, migrates
/// an older one (`crate::migrate`), and refuses a non-empty store without
/// one (something else wrote it).
fn init_format(db: &mut DB, path: &Path) -> Result<(), StoreError> {
    let meta = cf(db, CF_META)?;
    let found = db.get_pinned_cf(meta, META_STORE_FORMAT_VERSION).map_err(|e| StoreError::rocks("get", e))?;
    match found.map(|bytes| parse_format_version(path, &bytes)).transpose()? {
        Some(version) => {
            refuse_newer(path, version)?;
            if version == 1 {
                crate::migrate::v1_to_v2(db, path)
            } else {
                crate::migrate::drop_legacy_families(db, path)
            }
        }
        None => {
            for name in PARTITIONED_CFS {
                let mut it = db.raw_iterator_cf(cf(db, name)?);
                it.seek_to_first();
                if it.valid() {
                    return Err(StoreError::CorruptMetadata {
                        path: path.to_path_buf(),
                        key: "store_format_version",
                        reason: format!("missing, but column family {name} holds data"),
                    });
                }
                it.status().map_err(|e| StoreError::rocks("scan", e))?;
            }
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.put_cf_opt(meta, META_STORE_FORMAT_VERSION, STORE_FORMAT_VERSION.to_be_bytes(), &opts)
                .map_err(|e| StoreError::rocks("put", e))
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// Refuses a store written by a newer format ([`StoreError::NewerFormat`])
    /// without modifying it.
    pub fn open(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Store, StoreError> {
        config.validate()?;
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::Fs { path: path.clone(), source })?;
        let block_cache = Cache::new_lru_cache(config.block_cache_bytes as usize);
        let mut db = open_db(&path, config, &block_cache)?;
        init_format(&mut db, &path)?;
        // Only after RocksDB's LOCK is held: another process that has this
        // store open may be ingesting from that directory.
        crate::restore::remove_ingest_files(&path)?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.sync_writes);
        Ok(Store {
            path,
            config: config.clone(),
            block_cache,
            db: RwLock::new(Some(db)),
            write_opts,
            corrupt_records: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        })
    }

    /// Opens the store in `path` that another process (a running worker)
    /// holds, read-only, as a RocksDB secondary instance whose own files
    /// (its info log) go to `scratch`. It sees the store as of the moment
    /// it opened: every batch the worker had committed by then, each whole
    /// (a batch is one atomic write), and nothing later. Writing to it
    /// fails. A store of a newer format is refused; one of an older format
    /// must first be opened by this build's worker (which migrates it).
    pub fn open_secondary(
        path: impl AsRef<Path>,
        scratch: impl AsRef<Path>,
        config: &StoreConfig,
    ) -> Result<Store, StoreError> {
        config.validate()?;
        let path = path.as_ref().to_path_buf();
        let scratch = scratch.as_ref().to_path_buf();
        let mut db_opts = db_options(config);
        db_opts.create_if_missing(false);
        // Every table file is opened now, so files the worker's compactions
        // delete later stay readable.
        db_opts.set_max_open_files(-1);
        let existing = DB::list_cf(&db_opts, &path).map_err(|e| StoreError::rocks("list_cf", e))?;
        check_format_read_only(&path, &existing, &db_opts)?;
        let block_cache = Cache::new_lru_cache(config.block_cache_bytes as usize);
        let descriptors = || -> Vec<ColumnFamilyDescriptor> {
            existing
                .iter()
                .filter(|name| name.as_str() != rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
                .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name, config, &block_cache)))
                .collect()
        };
        // The worker may delete a WAL, MANIFEST or table file while the
        // secondary reads it during its opening: that fails the opening, and
        // a new one finds the current files.
        let mut attempt = 0;
        let db = loop {
            match DB::open_cf_descriptors_as_secondary(&db_opts, &path, &scratch, descriptors()) {
                Ok(db) => break db,
                Err(e)
                    if attempt < 4
                        && matches!(e.kind(), rocksdb::ErrorKind::NotFound | rocksdb::ErrorKind::IOError) =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
                }
                Err(e) => return Err(StoreError::rocks("open_as_secondary", e)),
            }
        };
        let meta = cf(&db, CF_META)?;
        match db.get_pinned_cf(meta, META_STORE_FORMAT_VERSION).map_err(|e| StoreError::rocks("get", e))? {
            Some(bytes) if parse_format_version(&path, &bytes)? == STORE_FORMAT_VERSION => {}
            found => {
                let found = match found {
                    Some(b) => format!("format {}", parse_format_version(&path, &b)?),
                    None => "no format version".into(),
                };
                return Err(StoreError::CorruptMetadata {
                    path,
                    key: "store_format_version",
                    reason: format!(
                        "{found} (this build reads a store it does not hold only in format {STORE_FORMAT_VERSION}; \
                         start this build's worker on it first)"
                    ),
                });
            }
        }
        Ok(Store {
            path,
            config: config.clone(),
            block_cache,
            db: RwLock::new(Some(db)),
            write_opts: WriteOptions::default(),
            corrupt_records: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        })
    }

    /// True if opening failed because another process holds the store
    /// (RocksDB's `LOCK` file): a worker is running on it.
    pub fn is_held_elsewhere(error: &StoreError) -> bool {
        // RocksDB's messages: "While lock file: <dir>/LOCK: Resource
        // temporarily unavailable" (another process), "lock hold by current
        // process" (this one).
        matches!(error, StoreError::Io { op: "open", source } | StoreError::Engine { op: "open", source }
            if source.as_ref().contains("While lock file") || source.as_ref().contains("lock hold by current process"))
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options column family `name` is opened with, for SST files
    /// written outside RocksDB ([`Store::restore_ingest`]): the same block
    /// size, filters and compression as the family's own flushes.
    pub(crate) fn cf_options(&self, name: &str) -> Options {
        cf_options(name, &self.config, &self.block_cache)
    }

    fn read_db(&self) -> RwLockReadGuard<'_, Option<DB>> {
        // Nothing panics while holding the write lock half-way through a
        // change of `Option<DB>`, so a poisoned lock still holds a valid value.
        self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_db(&self) -> RwLockWriteGuard<'_, Option<DB>> {
        self.db.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed { path: self.path.clone(), reason: "a reopen after purge failed".into() }
    }

    pub(crate) fn with_db<T>(&self, f: impl FnOnce(&DB) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self.read_db().as_ref() {
            Some(db) => f(db),
            None => Err(self.closed()),
        }
    }

    /// Commits one processed batch atomically (one RocksDB `WriteBatch`):
    /// states, timer changes and offsets become visible and durable together.
    /// On error nothing was written.
    ///
    /// Commits of different partitions may run concurrently; commits of one
    /// partition must be sequential (as the worker's per-partition loop
    /// does), or the metadata could go back to the older of two.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let p = batch.partition;
        check_partition(p)?;
        for t in batch.timers_set.iter().chain(&batch.timers_clear) {
            if t.customer.len() > usize::from(u16::MAX) {
                return Err(StoreError::InvalidArgument(format!(
                    "customer id of {} bytes is too long for a timer (max {})",
                    t.customer.len(),
                    u16::MAX
                )));
            }
        }
        self.with_db(|db| {
            let (states, timers, index) = (cf(db, CF_STATES)?, cf(db, CF_TIMERS)?, cf(db, CF_TIMER_INDEX)?);
            // Room for every state with its key and envelope, so the batch's
            // buffer is allocated once instead of doubling (and copying) ~10 times.
            let state_bytes: usize =
                batch.states.iter().map(|(c, s)| c.len() + s.as_ref().map_or(0, |s| s.len()) + 32).sum();
            let mut wb = WriteBatch::with_capacity_bytes(state_bytes + 64 * (batch.timers_set.len() + 8));
            let mut key = Vec::new();
            let mut sealed = Vec::new();
            // In key order: the memtable's skip list then finds each insert
            // position from the previous one instead of searching from the top.
            // Stable, so of two updates to one customer the later still wins.
            let mut order: Vec<usize> = (0..batch.states.len()).collect();
            if !batch.states.is_sorted_by(|a, b| a.0 <= b.0) {
                order.sort_by(|&a, &b| batch.states[a].0.cmp(&batch.states[b].0));
            }
            for (customer, state) in order.iter().map(|&i| &batch.states[i]) {
                write_state_key(&mut key, p, customer);
                match state {
                    Some(bytes) => {
                        envelope::seal_into(&mut sealed, bytes);
                        wb.put_cf(states, &key, &sealed);
                    }
                    None => {
                        wb.delete_cf(states, &key);
                        for due in customer_timers(db, p, customer)? {
                            wb.delete_cf(timers, timer_key(p, due, customer));
                            if let Some(k) = timer_index_key(p, customer, due) {
                                wb.delete_cf(index, k);
                            }
                        }
                    }
                }
            }
            for t in &batch.timers_clear {
                wb.delete_cf(timers, timer_key(p, t.due, &t.customer));
                if let Some(k) = timer_index_key(p, &t.customer, t.due) {
                    wb.delete_cf(index, k);
                }
            }
            for t in &batch.timers_set {
                wb.put_cf(timers, timer_key(p, t.due, &t.customer), b"");
                if let Some(k) = timer_index_key(p, &t.customer, t.due) {
                    wb.put_cf(index, k, b"");
                }
            }
            if let Some(meta) = &batch.meta {
                envelope::seal_into(&mut sealed, meta);
                wb.put_cf(cf(db, CF_PARTITIONS)?, partition_prefix(p), &sealed);
            }
            db.write_opt(wb, &self.write_opts).map_err(|e| StoreError::rocks("commit", e))?;
            Ok(())
        })?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The states of `customers` in `partition`, in the same order, with
    /// one batched RocksDB multi-get. (The worker keeps recently active
    /// customers decoded in memory and asks only for the others.)
    ///
    /// A record that does not decode is an `Err` for that customer only (and
    /// counted in [`StoreStats::corrupt_records_total`]); the others are
    /// returned normally.
    pub fn get_many(&self, partition: u32, customers: &[&str]) -> Vec<Result<Option<Bytes>, StoreError>> {
        if customers.is_empty() {
            return Vec::new();
        }
        let guard = self.read_db();
        let Some(db) = guard.as_ref() else {
            return customers.iter().map(|_| Err(self.closed())).collect();
        };
        let states = match cf(db, CF_STATES) {
            Ok(states) => states,
            Err(e) => {
                let msg = e.to_string();
                return customers
                    .iter()
                    .map(|_| {
                        Err(StoreError::CorruptMetadata {
                            path: self.path.clone(),
                            key: "column_families",
                            reason: msg.clone(),
                        })
                    })
                    .collect();
            }
        };
        let keys: Vec<Vec<u8>> = customers.iter().map(|c| state_key(partition, c)).collect();
        // Keys share the partition prefix, so they are in order when the
        // customers are; RocksDB then skips sorting them.
        let sorted = customers.is_sorted();
        let results = db.batched_multi_get_cf(states, &keys, sorted);
        let mut corrupt = 0;
        let out = keys
            .iter()
            .zip(results)
            .map(|(key, result)| match result {
                Ok(None) => Ok(None),
                Ok(Some(record)) => match self.open_record(CF_STATES, key, &record) {
                    Ok((_, payload)) => Ok(Some(Bytes::copy_from_slice(payload))),
                    Err(e) => {
                        corrupt += 1;
                        Err(e)
                    }
                },
                Err(e) => Err(StoreError::rocks("multi_get", e)),
            })
            .collect();
        if corrupt > 0 {
            self.corrupt_records.fetch_add(corrupt, Ordering::Relaxed);
        }
        out
    }

    /// One customer's state; see [`Store::get_many`].
    pub fn get(&self, partition: u32, customer: &str) -> Result<Option<Bytes>, StoreError> {
        self.get_many(partition, &[customer]).pop().unwrap_or(Ok(None))
    }

    fn open_record<'r>(&self, cf: &'static str, key: &[u8], record: &'r [u8]) -> Result<(u8, &'r [u8]), StoreError> {
        let customer = || display_key(key.get(PARTITION_LEN..).unwrap_or(key));
        match envelope::open(record) {
            Ok(opened) => Ok((opened.version, opened.payload)),
            Err(EnvelopeError::Corrupt(reason)) => Err(StoreError::CorruptRecord { cf, key: customer(), reason }),
            Err(EnvelopeError::Unsupported(found)) => Err(StoreError::UnsupportedRecordVersion {
                cf,
                key: customer(),
                found,
                oldest: OLDEST_RECORD_VERSION,
                newest: RECORD_VERSION,
            }),
        }
    }

    /// The partition's metadata record as last committed, `None` for a
    /// partition never committed. A record that does not decode is a
    /// [`StoreError::CorruptRecord`] (the partition cannot resume safely).
    pub fn partition_meta(&self, partition: u32) -> Result<Option<PartitionMeta>, StoreError> {
        self.with_db(|db| self.meta_in(db, partition))
    }

    fn meta_in(&self, db: &DB, partition: u32) -> Result<Option<PartitionMeta>, StoreError> {
        {
            let key = partition_prefix(partition);
            let Some(record) =
                db.get_pinned_cf(cf(db, CF_PARTITIONS)?, key).map_err(|e| StoreError::rocks("get", e))?
            else {
                return Ok(None);
            };
            let decoded = self
                .open_record(CF_PARTITIONS, &key, &record)
                .and_then(|(_, payload)| {
                    PartitionMeta::decode(payload).map_err(|e| StoreError::CorruptRecord {
                        cf: CF_PARTITIONS,
                        key: format!("partition {partition}"),
                        reason: e.to_string(),
                    })
                })
                .inspect_err(|_| {
                    self.corrupt_records.fetch_add(1, Ordering::Relaxed);
                })?;
            Ok(Some(decoded))
        }
    }

    /// The next offset to consume from `topic`/`partition`, as last committed
    /// (from the partition's metadata record).
    pub fn input_offset(&self, topic: &str, partition: u32) -> Result<Option<i64>, StoreError> {
        Ok(self.partition_meta(partition)?.and_then(|m| m.next_offsets.get(topic).copied()))
    }

    /// Every timer of `partition`, earliest first: what a partition task
    /// starts from when the partition is assigned. A timer key that does not
    /// decode is skipped and counted as corrupt rather than stopping the
    /// partition.
    pub fn partition_timers(&self, partition: u32) -> Result<Vec<Timer>, StoreError> {
        self.with_db(|db| {
            let mut opts = ReadOptions::default();
            let (lower, upper) = partition_range(partition);
            opts.set_iterate_lower_bound(lower.to_vec());
            opts.set_iterate_upper_bound(upper.to_vec());
            let mut it = db.raw_iterator_cf_opt(cf(db, CF_TIMERS)?, opts);
            it.seek_to_first();
            let mut out = Vec::new();
            while let Some(key) = it.key() {
                match parse_timer_key(key).and_then(|(_, due, c)| Some((due, std::str::from_utf8(c).ok()?))) {
                    Some((due, customer)) => out.push(Timer { due, customer: customer.to_owned() }),
                    None => {
                        self.corrupt_records.fetch_add(1, Ordering::Relaxed);
                    }
                }
                it.next();
            }
            it.status().map_err(|e| StoreError::rocks("scan", e))?;
            Ok(out)
        })
    }

    /// The partitions this store holds anything for, ascending.
    pub fn partitions(&self) -> Result<Vec<u32>, StoreError> {
        self.with_db(|db| Ok(partitions_in(db)?.into_iter().collect()))
    }

    /// Deletes everything of `partition` (states, timers, metadata) in one
    /// atomic batch of range deletes, e.g. when a rebalance moved it away.
    /// Space is reclaimed by later compactions.
    pub fn drop_partition(&self, partition: u32) -> Result<(), StoreError> {
        check_partition(partition)?;
        self.with_db(|db| {
            let (start, end) = partition_range(partition);
            let mut wb = WriteBatch::default();
            for name in PARTITIONED_CFS {
                wb.delete_range_cf(cf(db, name)?, start, end);
            }
            db.write_opt(wb, &self.write_opts).map_err(|e| StoreError::rocks("drop_partition", e))
        })?;
        Ok(())
    }

    /// Every state of `partition` in key order, read in chunks of 1,024 (for
    /// shipping a partition or checking a restore). Each chunk is consistent;
    /// commits between chunks may or may not be seen.
    pub fn iter_partition_states(&self, partition: u32) -> PartitionStates<'_> {
        PartitionStates {
            store: self,
            partition,
            next_key: Some(partition_prefix(partition).to_vec()),
            buffer: Vec::new(),
        }
    }

    /// Up to `limit` customers of `partition` after `after` in key order
    /// (`""`: from the first) with their states, and whether they are the
    /// last ones: what a re-evaluation after a rules change walks through,
    /// slice by slice, in one pass over the keys. A record that does not
    /// open comes as its error, in its place.
    pub fn states_after(
        &self,
        partition: u32,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<ScannedState>, bool), StoreError> {
        let mut out = Vec::with_capacity(limit.min(ITER_CHUNK * 16));
        let complete = self.for_states_after(partition, after, limit, |customer, state| {
            out.push((customer.to_owned(), state.map(Bytes::copy_from_slice)));
            Ok::<(), StoreError>(())
        })??;
        Ok((out, complete))
    }

    /// [`Store::states_after`] without copying: `f` is given each customer
    /// and its state's payload (or the error its record gives), borrowed
    /// from the scan for the call. The outer error is the store's, the
    /// inner one the first `f` returned (which ends the scan). `f` runs
    /// under the store's read lock: it must not call back into the store,
    /// and a reopen (`forget`) waits for the scan.
    pub fn for_states_after<E>(
        &self,
        partition: u32,
        after: &str,
        limit: usize,
        mut f: impl FnMut(&str, Result<&[u8], StoreError>) -> Result<(), E>,
    ) -> Result<Result<bool, E>, StoreError> {
        self.with_db(|db| {
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(partition_range(partition).1.to_vec());
            let mut it = db.raw_iterator_cf_opt(cf(db, CF_STATES)?, opts);
            let after_key = state_key(partition, after);
            it.seek(&after_key);
            if it.key() == Some(&after_key[..]) {
                it.next();
            }
            let mut n = 0;
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                if n == limit {
                    return Ok(Ok(false));
                }
                let Ok(customer) = std::str::from_utf8(&key[PARTITION_LEN.min(key.len())..]) else {
                    return Err(StoreError::CorruptRecord {
                        cf: CF_STATES,
                        key: display_key(key),
                        reason: "customer id is not UTF-8".into(),
                    });
                };
                let state = self.open_record(CF_STATES, key, value).map(|(_, payload)| payload);
                if state.is_err() {
                    self.corrupt_records.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(e) = f(customer, state) {
                    return Ok(Err(e));
                }
                n += 1;
                it.next();
            }
            it.status().map_err(|e| StoreError::rocks("scan", e))?;
            Ok(Ok(true))
        })
    }

    /// Deletes a customer's states and timers in every partition the store
    /// holds, then purges them from disk: flush, compaction of the deleted
    /// keys down to the last level, and a reopen so RocksDB writes a fresh
    /// MANIFEST (the old one can name the key as a file boundary). After it
    /// returns, neither the id nor the data is in any file of the store
    /// directory. Blocks other callers during the reopen only.
    ///
    /// Partitions removed with [`Store::drop_partition`] are not searched:
    /// their range tombstones hide the data, and [`Store::purge`] (or
    /// periodic compaction) erases it from disk.
    pub fn forget(&self, customer: &str) -> Result<ForgetReport, StoreError> {
        let (report, purge_keys) = self.with_db(|db| {
            let mut report = ForgetReport::default();
            // Inclusive ranges to compact. The whole timers family is
            // compacted too: timers of a customer deleted earlier (from the
            // stream) can no longer be found through the index, and the
            // family is small (a key per customer, empty values).
            let mut purge_keys: Vec<PurgeRange> = vec![(CF_TIMERS, None, None)];
            let mut wb = WriteBatch::default();
            let (states, timers, index) = (cf(db, CF_STATES)?, cf(db, CF_TIMERS)?, cf(db, CF_TIMER_INDEX)?);
            for p in partitions_in(db)? {
                let mut found = false;
                let key = state_key(p, customer);
                if let Some(record) = db.get_pinned_cf(states, &key).map_err(|e| StoreError::rocks("get", e))? {
                    wb.delete_cf(states, &key);
                    report.states_deleted += 1;
                    found = true;
                    // The customer leaves its segments' populations in the
                    // same write (a record that does not decode counted in none).
                    let segments = self
                        .open_record(CF_STATES, &key, &record)
                        .ok()
                        .and_then(|(_, payload)| cohort_core::encode::decode(payload).ok().map(|s| s.segments));
                    if let (Some(segments), Some(mut meta)) = (segments, self.meta_in(db, p)?) {
                        for m in segments {
                            if let Some(n) = meta.populations.get_mut(&m.segment) {
                                *n = n.saturating_sub(1);
                                if *n == 0 {
                                    meta.populations.remove(&m.segment);
                                }
                            }
                        }
                        let mut sealed = Vec::new();
                        envelope::seal_into(&mut sealed, &meta.encode());
                        wb.put_cf(cf(db, CF_PARTITIONS)?, partition_prefix(p), &sealed);
                    }
                }
                purge_keys.push((CF_STATES, Some(key.clone()), Some(key)));
                if let Some(prefix) = timer_index_prefix(p, customer) {
                    let end = prefix_successor(&prefix);
                    purge_keys.push((CF_TIMER_INDEX, Some(prefix), end));
                }
                for due in customer_timers(db, p, customer)? {
                    wb.delete_cf(timers, timer_key(p, due, customer));
                    if let Some(ik) = timer_index_key(p, customer, due) {
                        wb.delete_cf(index, &ik);
                    }
                    report.timers_deleted += 1;
                    found = true;
                }
                if found {
                    report.partitions.push(p);
                }
            }
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(wb, &opts).map_err(|e| StoreError::rocks("forget", e))?;
            Ok((report, purge_keys))
        })?;
        self.purge_keys(&purge_keys)?;
        Ok(report)
    }

    /// Erases deleted data from disk: flushes every memtable (so no WAL holds
    /// it), compacts every column family fully, and reopens RocksDB (so the
    /// MANIFEST is rewritten). Run it after deletes that arrived on the
    /// stream; [`Store::forget`] does the same for its keys only.
    pub fn purge(&self) -> Result<(), StoreError> {
        self.compact()?;
        self.reopen()
    }

    fn purge_keys(&self, ranges: &[PurgeRange]) -> Result<(), StoreError> {
        self.with_db(|db| {
            flush_all(db)?;
            let mut opts = CompactOptions::default();
            opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
            for (name, start, end) in ranges {
                db.compact_range_cf_opt(cf(db, name)?, start.as_ref(), end.as_ref(), &opts);
            }
            Ok(())
        })?;
        self.reopen()
    }

    /// Flushes every memtable and compacts every column family to the last
    /// level, dropping deleted records. Expensive: rewrites the whole store.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.with_db(|db| {
            flush_all(db)?;
            let mut opts = CompactOptions::default();
            opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
            for name in ALL_CFS {
                db.compact_range_cf_opt(cf(db, name)?, None::<&[u8]>, None::<&[u8]>, &opts);
            }
            Ok(())
        })
    }

    /// Waits until RocksDB has no flush or compaction queued or running: the
    /// store has caught up with the writes so far. For benchmarks and tests;
    /// it can wait a long time while other threads keep writing.
    pub fn wait_for_background_work(&self) -> Result<(), StoreError> {
        self.with_db(|db| {
            let opts = rocksdb::WaitForCompactOptions::default();
            db.wait_for_compact(&opts).map_err(|e| StoreError::rocks("wait_for_compact", e))
        })
    }

    /// Flushes every memtable to SST files (waiting for it).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.with_db(flush_all)
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.write_db();
        // Close first: RocksDB's LOCK allows one open handle per directory.
        drop(guard.take());
        match open_db(&self.path, &self.config, &self.block_cache)
            .and_then(|mut db| init_format(&mut db, &self.path).map(|()| db))
        {
            Ok(db) => {
                *guard = Some(db);
                Ok(())
            }
            Err(e) => Err(StoreError::Closed { path: self.path.clone(), reason: format!("reopen failed: {e}") }),
        }
    }

    /// A customer as stored, in every partition that holds it (normally one).
    pub fn inspect(&self, customer: &str) -> Result<Vec<Inspection>, StoreError> {
        self.with_db(|db| {
            let states = cf(db, CF_STATES)?;
            let mut out = Vec::new();
            for p in partitions_in(db)? {
                let key = state_key(p, customer);
                let record = db.get_pinned_cf(states, &key).map_err(|e| StoreError::rocks("get", e))?;
                let (state, record_version) = match record {
                    Some(record) => {
                        let (version, payload) = self.open_record(CF_STATES, &key, &record)?;
                        (Some(Bytes::copy_from_slice(payload)), Some(version))
                    }
                    None => (None, None),
                };
                let timers = customer_timers(db, p, customer)?;
                if state.is_some() || !timers.is_empty() {
                    out.push(Inspection { partition: p, state, record_version, timers });
                }
            }
            Ok(out)
        })
    }

    /// Store-wide metadata.
    pub fn metadata(&self) -> Result<Metadata, StoreError> {
        self.with_db(|db| {
            let meta = cf(db, CF_META)?;
            let get = |k: &[u8]| db.get_cf(meta, k).map_err(|e| StoreError::rocks("get", e));
            let bad = |key: &'static str, reason: String| StoreError::CorruptMetadata {
                path: self.path.clone(),
                key,
                reason,
            };
            let store_format_version = match get(META_STORE_FORMAT_VERSION)? {
                Some(v) => parse_format_version(&self.path, &v)?,
                None => return Err(bad("store_format_version", "missing".into())),
            };
            let state_encoding_version = match get(META_STATE_ENCODING_VERSION)? {
                Some(v) => Some(u32::from_be_bytes(
                    v.as_slice().try_into().map_err(|_| bad("state_encoding_version", format!("{} bytes", v.len())))?,
                )),
                None => None,
            };
            let rules_version = match get(META_RULES_VERSION)? {
                Some(v) => Some(String::from_utf8(v).map_err(|e| bad("rules_version", e.to_string()))?),
                None => None,
            };
            Ok(Metadata { store_format_version, state_encoding_version, rules_version })
        })
    }

    /// Records the state encoding and rules versions (`None` removes one).
    /// `store_format_version` is the store's own and must not change.
    pub fn set_metadata(&self, metadata: &Metadata) -> Result<(), StoreError> {
        if metadata.store_format_version != STORE_FORMAT_VERSION {
            return Err(StoreError::InvalidArgument(format!(
                "store_format_version is {} and cannot be set to {}",
                STORE_FORMAT_VERSION, metadata.store_format_version
            )));
        }
        self.with_db(|db| {
            let meta = cf(db, CF_META)?;
            let mut wb = WriteBatch::default();
            match metadata.state_encoding_version {
                Some(v) => wb.put_cf(meta, META_STATE_ENCODING_VERSION, v.to_be_bytes()),
                None => wb.delete_cf(meta, META_STATE_ENCODING_VERSION),
            }
            match &metadata.rules_version {
                Some(v) => wb.put_cf(meta, META_RULES_VERSION, v.as_bytes()),
                None => wb.delete_cf(meta, META_RULES_VERSION),
            }
            db.write_opt(wb, &self.write_opts).map_err(|e| StoreError::rocks("set_metadata", e))
        })
    }

    /// RocksDB's figures, for the metrics layer.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        self.with_db(|db| {
            let int = |name: &str| -> Result<u64, StoreError> {
                Ok(db.property_int_value(name).map_err(|e| StoreError::rocks("property", e))?.unwrap_or(0))
            };
            let mut stats = StoreStats {
                write_stopped: int("rocksdb.is-write-stopped")? != 0,
                delayed_write_rate: int("rocksdb.actual-delayed-write-rate")?,
                running_compactions: int("rocksdb.num-running-compactions")?,
                running_flushes: int("rocksdb.num-running-flushes")?,
                block_cache_usage_bytes: self.block_cache.get_usage() as u64,
                block_cache_capacity_bytes: self.config.block_cache_bytes,
                corrupt_records_total: self.corrupt_records.load(Ordering::Relaxed),
                commits_total: self.commits.load(Ordering::Relaxed),
                ..StoreStats::default()
            };
            for name in ALL_CFS {
                let handle = cf(db, name)?;
                let int = |prop: &str| -> Result<u64, StoreError> {
                    Ok(db
                        .property_int_value_cf(handle, prop)
                        .map_err(|e| StoreError::rocks("property", e))?
                        .unwrap_or(0))
                };
                let cf_stats = CfStats {
                    name,
                    live_sst_bytes: int("rocksdb.live-sst-files-size")?,
                    total_sst_bytes: int("rocksdb.total-sst-files-size")?,
                    memtable_bytes: int("rocksdb.cur-size-all-mem-tables")?,
                    memtable_pinned_bytes: int("rocksdb.size-all-mem-tables")?,
                    pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes")?,
                    estimated_keys: int("rocksdb.estimate-num-keys")?,
                };
                stats.add(&cf_stats);
                stats.column_families.push(cf_stats);
            }
            Ok(stats)
        })
    }

    /// Syncs the WAL and closes the store. Dropping the store also closes it;
    /// this only adds the fsync.
    pub fn close(self) -> Result<(), StoreError> {
        self.with_db(|db| db.flush_wal(true).map_err(|e| StoreError::rocks("flush_wal", e)))
    }
}

pub(crate) fn flush_all(db: &DB) -> Result<(), StoreError> {
    // One family at a time (what `flush_cfs` does without atomic flush);
    // once every family has flushed, no WAL holds data older than the flush.
    let mut opts = FlushOptions::default();
    opts.set_wait(true);
    for name in ALL_CFS {
        db.flush_cf_opt(cf(db, name)?, &opts).map_err(|e| StoreError::rocks("flush", e))?;
    }
    if let Some(default) = db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME) {
        db.flush_cf_opt(default, &opts).map_err(|e| StoreError::rocks("flush", e))?;
    }
    Ok(())
}

/// Due times of `customer`'s timers in `partition`, from the reverse index.
pub(crate) fn customer_timers(db: &DB, partition: u32, customer: &str) -> Result<Vec<Timestamp>, StoreError> {
    let Some(prefix) = timer_index_prefix(partition, customer) else { return Ok(Vec::new()) };
    let mut opts = ReadOptions::default();
    if let Some(end) = prefix_successor(&prefix) {
        opts.set_iterate_upper_bound(end);
    }
    let mut it = db.raw_iterator_cf_opt(cf(db, CF_TIMER_INDEX)?, opts);
    it.seek(&prefix);
    let mut out = Vec::new();
    while let Some(key) = it.key() {
        if !key.starts_with(&prefix) {
            break;
        }
        if let Some(due) = parse_timer_index_due(key, prefix.len()) {
            out.push(due);
        }
        it.next();
    }
    it.status().map_err(|e| StoreError::rocks("scan", e))?;
    Ok(out)
}

/// Partitions with any key in any partitioned column family: one seek per
/// partition per family, not a scan.
fn partitions_in(db: &DB) -> Result<BTreeSet<u32>, StoreError> {
    let mut out = BTreeSet::new();
    for name in PARTITIONED_CFS {
        let mut it = db.raw_iterator_cf(cf(db, name)?);
        it.seek_to_first();
        while let Some(key) = it.key() {
            match key_partition(key) {
                Some(p) => {
                    out.insert(p);
                    match p.checked_add(1) {
                        Some(next) => it.seek(partition_prefix(next)),
                        None => break,
                    }
                }
                None => it.next(),
            }
        }
        it.status().map_err(|e| StoreError::rocks("scan", e))?;
    }
    Ok(out)
}

/// A customer and its state bytes (or why they did not open), as a scan
/// found them ([`Store::states_after`]).
pub type ScannedState = (String, Result<Bytes, StoreError>);

/// Iterator over one partition's states; see [`Store::iter_partition_states`].
pub struct PartitionStates<'a> {
    store: &'a Store,
    partition: u32,
    /// Where the next chunk starts; `None` when done.
    next_key: Option<Vec<u8>>,
    /// The current chunk, reversed so `pop` yields key order.
    buffer: Vec<Result<(String, Bytes), StoreError>>,
}

const ITER_CHUNK: usize = 1024;

impl PartitionStates<'_> {
    fn fill(&mut self) -> Result<(), StoreError> {
        let Some(start) = self.next_key.take() else { return Ok(()) };
        let store = self.store;
        let partition = self.partition;
        let (chunk, next) = store.with_db(|db| {
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(partition_range(partition).1.to_vec());
            let mut it = db.raw_iterator_cf_opt(cf(db, CF_STATES)?, opts);
            it.seek(&start);
            let mut chunk = Vec::with_capacity(ITER_CHUNK);
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                if chunk.len() == ITER_CHUNK {
                    let next = Some(key.to_vec());
                    return Ok((chunk, next));
                }
                let item = match std::str::from_utf8(&key[PARTITION_LEN.min(key.len())..]) {
                    Ok(customer) => store
                        .open_record(CF_STATES, key, value)
                        .map(|(_, payload)| (customer.to_owned(), Bytes::copy_from_slice(payload))),
                    Err(_) => Err(StoreError::CorruptRecord {
                        cf: CF_STATES,
                        key: display_key(key),
                        reason: "customer id is not UTF-8".into(),
                    }),
                };
                if item.is_err() {
                    store.corrupt_records.fetch_add(1, Ordering::Relaxed);
                }
                chunk.push(item);
                it.next();
            }
            it.status().map_err(|e| StoreError::rocks("scan", e))?;
            Ok((chunk, None))
        })?;
        self.next_key = next;
        self.buffer = chunk;
        self.buffer.reverse();
        Ok(())
    }
}

impl Iterator for PartitionStates<'_> {
    type Item = Result<(String, Bytes), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() {
            if let Err(e) = self.fill() {
                self.next_key = None;
                return Some(Err(e));
            }
        }
        self.buffer.pop()
    }
}
