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

use crate::envelope;
use crate::keys::*;
use crate::store::{cf, customer_timers, flush_all, Store};
use crate::StoreError;
use bytes::Bytes;
use cohort_core::time::Timestamp;
use rocksdb::{WriteBatch, WriteOptions};

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
    /// these customers (a restore into an emptied partition).
    pub fn restore_write(&self, partition: u32, entries: &[Restored], replace_timers: bool) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.with_db(|db| {
            let (states, timers, index) = (cf(db, CF_STATES)?, cf(db, CF_TIMERS)?, cf(db, CF_TIMER_INDEX)?);
            let bytes: usize =
                entries.iter().map(|e| e.customer.len() + e.state.as_ref().map_or(0, Bytes::len) + 48).sum();
            let mut wb = WriteBatch::with_capacity_bytes(bytes + 64 * entries.len());
            let mut key = Vec::new();
            let mut sealed = Vec::new();
            for e in entries {
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
