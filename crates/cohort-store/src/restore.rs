//! Writing a partition restored from the changelog: in bulk, without the
//! write-ahead log, and durable only at the end.
//!
//! A restore writes many states in large write batches with the WAL off
//! (measured in docs/benchmarks.md, "Restore"), then [`Store::restore_finish`]
//! flushes the memtables to SST files and only then writes the partition's
//! metadata record, with the WAL. A crash before that record is written
//! loses at most the unflushed part of the restore and leaves the old
//! metadata record (or none): the next restore starts again from the old
//! changelog position and re-applies what was lost. States are whole values,
//! so applying a record twice changes nothing.
//!
//! [`Store::restore_ingest`] writes a chunk as SST files that RocksDB
//! ingests instead (no memtable, no flush). The worker does not use it:
//! measured against `restore_write` (docs/benchmarks.md, "Session 12"),
//! with 32 MiB chunks it reaches a durable end 1.1-1.4x sooner, but with the
//! chunks in changelog order (each spanning the partition's key range) it
//! leaves more compaction behind and is no faster once that has run, and
//! with smaller chunks (a standby's round, a restore's last chunk) it is
//! several times slower.

use crate::envelope;
use crate::keys::*;
use crate::store::{cf, customer_timers, flush_all, Store};
use crate::StoreError;
use bytes::Bytes;
use cohort_core::time::Timestamp;
use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter, WriteBatch, WriteOptions, DB};
use std::path::Path;

/// The directory, under the store's, where [`Store::restore_ingest`] builds
/// its SST files: one subdirectory per partition, removed when the chunk is
/// ingested. Inside the store's directory so that RocksDB can move the files
/// in with a hard link (same file system) instead of copying them.
const INGEST_DIR: &str = "restore-ingest";

/// One customer as the changelog last had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub customer: String,
    /// `None`: a tombstone (forgotten); the customer and its timers go.
    pub state: Option<Bytes>,
    /// Its pending timer, if any.
    pub timer: Option<Timestamp>,
}

impl Store {
    /// Writes restored customers of `partition` in one write batch, without
    /// the WAL (see the module doc). With `replace_timers` each customer's
    /// existing timers are found and removed first (a restore over states
    /// this store already has); without, the partition must hold none of
    /// these customers (a restore into an emptied partition, first chunk).
    /// A customer given more than once counts with its last entry only (the
    /// earlier ones' timers would otherwise stay behind).
    pub fn restore_write(&self, partition: u32, entries: &[Restored], replace_timers: bool) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            last.insert(e.customer.as_str(), i);
        }
        self.with_db(|db| {
            let (states, timers, index) = (cf(db, CF_STATES)?, cf(db, CF_TIMERS)?, cf(db, CF_TIMER_INDEX)?);
            let bytes: usize =
                entries.iter().map(|e| e.customer.len() + e.state.as_ref().map_or(0, Bytes::len) + 48).sum();
            let mut wb = WriteBatch::with_capacity_bytes(bytes + 64 * entries.len());
            let mut key = Vec::new();
            let mut sealed = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                if last.get(e.customer.as_str()) != Some(&i) {
                    continue;
                }
                if replace_timers || e.state.is_none() {
                    for due in customer_timers(db, partition, &e.customer)? {
                        wb.delete_cf(timers, timer_key(partition, due, &e.customer));
                        if let Some(k) = timer_index_key(partition, &e.customer, due) {
                            wb.delete_cf(index, k);
                        }
                    }
                }
                write_state_key(&mut key, partition, &e.customer);
                match &e.state {
                    Some(state) => {
                        envelope::seal_into(&mut sealed, state);
                        wb.put_cf(states, &key, &sealed);
                        if let Some(due) = e.timer {
                            wb.put_cf(timers, timer_key(partition, due, &e.customer), b"");
                            if let Some(k) = timer_index_key(partition, &e.customer, due) {
                                wb.put_cf(index, k, b"");
                            }
                        }
                    }
                    None => wb.delete_cf(states, &key),
                }
            }
            let mut opts = WriteOptions::default();
            opts.disable_wal(true);
            db.write_opt(wb, &opts).map_err(|e| StoreError::rocks("restore", e))
        })
    }

    /// Writes restored customers of `partition` like [`Store::restore_write`],
    /// but as SST files that RocksDB ingests whole: one file per column
    /// family, written sorted with `SstFileWriter`, moved into the store
    /// (not copied) and placed in the lowest level where no older data
    /// overlaps it. A chunk that overlaps no earlier one (a restore in key
    /// order) goes to the last level, so its bytes reach the disk once;
    /// chunks read from a changelog overlap each other, and their files land
    /// in level 0 to be compacted like flushed memtables. Each call costs a
    /// file per column family, its sync and a MANIFEST update: for small
    /// chunks far more than a write batch (see the module doc).
    ///
    /// Reads afterwards are those of `restore_write` with the same
    /// arguments, with one difference: when a customer appears more than
    /// once in `entries`, only its last entry is written (an SST file holds
    /// each key once), so the timer of an earlier entry is not left behind
    /// as it is by `restore_write`. A tombstone is a delete in the file.
    /// A later call overrides an earlier one: an ingested file that
    /// overlaps existing keys gets a sequence number newer than all of them.
    ///
    /// `replace_timers` is as for `restore_write`: the customer's existing
    /// timers (read from the store first) go into the files as deletes.
    ///
    /// Each column family is ingested on its own (RocksDB's C API has no
    /// ingestion into several families at once): a crash in between leaves
    /// the chunk partly applied, as a crash leaves `restore_write`'s
    /// unflushed memtables, and the restore starts again from the old
    /// metadata record. Ingested files are durable when this returns;
    /// [`Store::restore_finish`] still writes the metadata record.
    pub fn restore_ingest(&self, partition: u32, entries: &[Restored], replace_timers: bool) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let dir = self.path().join(INGEST_DIR).join(partition.to_string());
        // Left over if an earlier call for this partition was cut short.
        remove_dir_if_present(&dir)?;
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Fs { path: dir.clone(), source })?;
        let ingested = self.with_db(|db| self.ingest_chunk(db, &dir, partition, entries, replace_timers));
        // RocksDB moved the files it took; this removes the directory and
        // whatever an error left in it.
        let removed = remove_dir_if_present(&dir);
        ingested.and(removed)
    }

    fn ingest_chunk(
        &self,
        db: &DB,
        dir: &Path,
        partition: u32,
        entries: &[Restored],
        replace_timers: bool,
    ) -> Result<(), StoreError> {
        let latest = latest_per_customer(entries);
        // `true`: a put, `false`: a delete.
        let mut timers: Vec<(Vec<u8>, bool)> = Vec::with_capacity(latest.len());
        let mut index: Vec<(Vec<u8>, bool)> = Vec::with_capacity(latest.len());
        for e in &latest {
            if replace_timers || e.state.is_none() {
                for due in customer_timers(db, partition, &e.customer)? {
                    timers.push((timer_key(partition, due, &e.customer), false));
                    if let Some(k) = timer_index_key(partition, &e.customer, due) {
                        index.push((k, false));
                    }
                }
            }
            if let (Some(_), Some(due)) = (&e.state, e.timer) {
                timers.push((timer_key(partition, due, &e.customer), true));
                if let Some(k) = timer_index_key(partition, &e.customer, due) {
                    index.push((k, true));
                }
            }
        }
        let mut files = Vec::with_capacity(3);
        for (name, ops) in [(CF_TIMERS, timers), (CF_TIMER_INDEX, index)] {
            let ops = sorted_ops(ops);
            if ops.is_empty() {
                // RocksDB refuses to write an SST file without entries.
                continue;
            }
            let path = dir.join(format!("{name}.sst"));
            write_sst(&self.sst_options(name), &path, |w| {
                for (key, put) in &ops {
                    if *put {
                        w.put(key, b"")?;
                    } else {
                        w.delete(key)?;
                    }
                }
                Ok(())
            })?;
            files.push((name, path));
        }
        let path = dir.join(format!("{CF_STATES}.sst"));
        let (mut key, mut sealed) = (Vec::new(), Vec::new());
        write_sst(&self.sst_options(CF_STATES), &path, |w| {
            for e in &latest {
                write_state_key(&mut key, partition, &e.customer);
                match &e.state {
                    Some(state) => {
                        envelope::seal_into(&mut sealed, state);
                        w.put(&key, &sealed)?;
                    }
                    None => w.delete(&key)?,
                }
            }
            Ok(())
        })?;
        files.push((CF_STATES, path));
        let mut opts = IngestExternalFileOptions::default();
        opts.set_move_files(true);
        for (name, path) in files {
            db.ingest_external_file_cf_opts(cf(db, name)?, &opts, vec![path])
                .map_err(|e| StoreError::rocks("restore_ingest", e))?;
        }
        Ok(())
    }

    /// Options for an SST file of column family `name`: the family's own
    /// (block size, filters, compression), and writeback started every MiB
    /// (as the store's own files do, see `db_options`) so that the disk
    /// writes one file while the next is being built, instead of all of a
    /// 32 MiB file at the sync when it is ingested.
    fn sst_options(&self, name: &str) -> Options {
        let mut options = self.cf_options(name);
        options.set_bytes_per_sync(1 << 20);
        options
    }

    /// Ends a restore of `partition`: flushes what [`Store::restore_write`]
    /// wrote to SST files, then writes the metadata record `meta` (with the
    /// WAL, synced). Until it returns, the partition's old metadata record
    /// stands.
    pub fn restore_finish(&self, partition: u32, meta: &[u8]) -> Result<(), StoreError> {
        self.with_db(|db| {
            flush_all(db)?;
            let mut sealed = Vec::new();
            envelope::seal_into(&mut sealed, meta);
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.put_cf_opt(cf(db, CF_PARTITIONS)?, partition_prefix(partition), &sealed, &opts)
                .map_err(|e| StoreError::rocks("restore_finish", e))
        })
    }
}

/// The last entry of each customer in `entries`, in customer order (which
/// is key order in every column family keyed by customer).
fn latest_per_customer(entries: &[Restored]) -> Vec<&Restored> {
    let mut order: Vec<&Restored> = entries.iter().collect();
    // Stable: a customer's entries keep their order, so the last one of each
    // run is the latest.
    order.sort_by(|a, b| a.customer.cmp(&b.customer));
    let mut latest: Vec<&Restored> = Vec::with_capacity(order.len());
    for e in order {
        match latest.last_mut() {
            Some(last) if last.customer == e.customer => *last = e,
            _ => latest.push(e),
        }
    }
    latest
}

/// Puts (`true`) and deletes (`false`) in strictly increasing key order, as
/// `SstFileWriter` requires, with one operation per key: a timer deleted
/// (the customer's old one) and put again (its restored one) is a put.
fn sorted_ops(mut ops: Vec<(Vec<u8>, bool)>) -> Vec<(Vec<u8>, bool)> {
    // Of equal keys the put sorts first, and `dedup_by` keeps the first.
    ops.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    ops.dedup_by(|later, first| later.0 == first.0);
    ops
}

/// Writes one SST file at `path` with the options of the column family it
/// is for; `write` adds the keys in order.
fn write_sst(
    options: &Options,
    path: &Path,
    write: impl FnOnce(&mut SstFileWriter<'_>) -> Result<(), rocksdb::Error>,
) -> Result<(), StoreError> {
    let mut writer = SstFileWriter::create(options);
    writer.open(path).map_err(|e| StoreError::rocks("restore_ingest: creating an SST file", e))?;
    write(&mut writer).map_err(|e| StoreError::rocks("restore_ingest: writing an SST file", e))?;
    writer.finish().map_err(|e| StoreError::rocks("restore_ingest: finishing an SST file", e))
}

fn remove_dir_if_present(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::Fs { path: dir.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Removes the SST files of [`Store::restore_ingest`] calls that a crash cut
/// short; called when the store is opened, before any restore runs.
pub(crate) fn remove_ingest_files(store_path: &Path) -> Result<(), StoreError> {
    remove_dir_if_present(&store_path.join(INGEST_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(customer: &str, state: Option<&'static [u8]>, timer: Option<i64>) -> Restored {
        Restored {
            customer: customer.into(),
            state: state.map(Bytes::from_static),
            timer: timer.map(Timestamp::from_millis),
        }
    }

    #[test]
    fn the_last_entry_of_each_customer_is_kept_in_customer_order() {
        let entries = [
            entry("b", Some(b"b1"), Some(1)),
            entry("a", Some(b"a1"), None),
            entry("b", None, None),
            entry("c", Some(b"c1"), None),
            entry("b", Some(b"b3"), Some(3)),
        ];
        let latest: Vec<&Restored> = latest_per_customer(&entries);
        assert_eq!(latest, vec![&entries[1], &entries[4], &entries[3]]);
    }

    #[test]
    fn a_key_both_deleted_and_put_is_put_once() {
        let ops =
            vec![(b"k2".to_vec(), false), (b"k1".to_vec(), true), (b"k2".to_vec(), true), (b"k0".to_vec(), false)];
        assert_eq!(sorted_ops(ops), vec![(b"k0".to_vec(), false), (b"k1".to_vec(), true), (b"k2".to_vec(), true)]);
        let ops = vec![(b"k".to_vec(), true), (b"k".to_vec(), false)];
        assert_eq!(sorted_ops(ops), vec![(b"k".to_vec(), true)]);
    }
}
