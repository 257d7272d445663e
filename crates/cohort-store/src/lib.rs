//! cohort's customer state in RocksDB, committed atomically with consumed offsets.
//!
//! The worker loads the states of a batch's customers ([`Store::get_many`]),
//! applies the batch in core, produces the outputs, and then commits one
//! [`Batch`] ([`Store::commit`]): the new states, timer changes and the
//! partition's metadata record (next input offsets, watermark, learned
//! tables, segment populations, changelog position) in a single RocksDB
//! `WriteBatch`. After a crash at any point the store reopens with metadata
//! and states from the same batch, so replaying from the stored offsets
//! gives exactly-once state.
//!
//! States are opaque bytes here (core's versioned encoding), wrapped in the
//! store's own record envelope ([`envelope`]) with a checksum and a version
//! byte, keyed by Kafka partition and customer id.
//!
//! Layout:
//! - [`keys`]: column family names and key layouts, the one place storage
//!   names live. Every key starts with the partition (u32 BE), so a
//!   partition is a range: dropped with range deletes, iterated for restore.
//! - [`envelope`]: record envelope versions, upgrade on read, checksum.
//! - [`store`]: [`Store`], the operations (commit, multi-get, timers,
//!   partition metadata, drop partition, forget, inspect, metadata, stats).
//! - `migrate`: opening a store of format 1 migrates it to format 2.
//! - [`config`]: [`StoreConfig`], serde, with RocksDB tuning defaults.
//! - [`stats`]: [`StoreStats`], plain figures for the metrics layer.
//! - [`error`]: [`StoreError`], classified retryable / fatal / bad data.
//!
//! API at a glance (all on [`Store`], all blocking; async callers use
//! `spawn_blocking`):
//! - [`Store::open`] with a [`StoreConfig`]; refuses a newer store format.
//! - [`Store::commit`] one [`Batch`]: states (`None` deletes the customer and
//!   its timers), timer sets and clears, the partition's metadata record.
//! - [`Store::get_many`] / [`Store::get`]: states by customer, in one batched
//!   multi-get; a corrupt record is an error for its key only.
//! - [`Store::partition_meta`], [`Store::input_offset`]: where to resume.
//! - [`Store::partition_timers`]: a partition's timers, in due order.
//! - [`Store::drop_partition`], [`Store::iter_partition_states`],
//!   [`Store::partitions`]: rebalancing and restore.
//! - [`Store::restore_write`] / [`Store::restore_finish`]: a partition
//!   restored from the changelog, written in bulk without the WAL
//!   ([`restore`]); [`Store::restore_ingest`], the same as SST files
//!   ingested, measured against it and not used by the worker.
//! - [`Store::forget`]: delete a customer everywhere and erase it from disk;
//!   [`Store::purge`] erases deletes that arrived on the stream.
//! - [`Store::inspect`]: a customer's raw state bytes, partition and timers.
//! - [`Store::metadata`] / [`Store::set_metadata`], [`Store::stats`].
//!
//! This crate must not depend on Kafka (rdkafka) or on an async runtime
//! (tokio). Customer states are opaque bytes here; core's types cross the
//! boundary in three places only: `Timestamp` and `Timer`, the typed
//! [`PartitionMeta`](cohort_core::partition::PartitionMeta) record, and
//! decoding states to count segment populations when a customer is forgotten
//! or a format 1 store is migrated.

pub mod config;
pub mod envelope;
pub mod error;
pub mod keys;
mod migrate;
pub mod restore;
pub mod stats;
pub mod store;

pub use config::{Compression, InfoLogLevel, StoreConfig};
pub use error::{ErrorClass, StoreError};
pub use restore::Restored;
pub use stats::{CfStats, ReadCounts, StoreStats, ThreadReads};
pub use store::{Batch, ForgetReport, Inspection, Metadata, PartitionStates, Store, Timer, STORE_FORMAT_VERSION};

pub use bytes::Bytes;
