//! cohort's customer state in RocksDB, committed atomically with consumed offsets.
//!
//! The worker loads the states of a batch's customers ([`Store::get_many`]),
//! applies the batch in core, produces the outputs, and then commits one
//! [`Batch`] ([`Store::commit`]): the new states, timer changes and the next
//! input and changelog offsets in a single RocksDB `WriteBatch`. After a crash
//! at any point the store reopens with offsets and states from the same
//! batch, so replaying from the stored offsets gives exactly-once state.
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
//! - [`store`]: [`Store`], the operations (commit, multi-get, due timers,
//!   drop partition, forget, inspect, metadata, stats).
//! - `cache`: the hot-customer cache, bounded in bytes, written through by commits.
//! - [`config`]: [`StoreConfig`], serde, with RocksDB tuning defaults.
//! - [`stats`]: [`StoreStats`], plain figures for the metrics layer.
//! - [`error`]: [`StoreError`], classified retryable / fatal / bad data.
//!
//! All calls block (RocksDB I/O); async callers use `spawn_blocking`.
//!
//! This crate must not depend on Kafka (rdkafka), on an async runtime
//! (tokio), or on core's state types: it stores bytes, and only
//! `cohort_core::time::Timestamp` crosses the boundary.

mod cache;
pub mod config;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod stats;
pub mod store;

pub use config::{Compression, InfoLogLevel, StoreConfig};
pub use error::{ErrorClass, StoreError};
pub use stats::{CacheStats, CfStats, StoreStats};
pub use store::{
    Batch, ForgetReport, Inspection, Metadata, PartitionStates, Store, Timer, TopicOffset, STORE_FORMAT_VERSION,
};

pub use bytes::Bytes;
