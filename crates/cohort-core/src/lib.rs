//! cohort-core: the pure domain of cohort.
//!
//! Given a customer's state, an input (an event or a timer firing), the
//! current instant and the compiled rules, decide the new state, the outputs
//! and the next timer. Everything that can be decided without Kafka or
//! RocksDB is decided here and tested here.
//!
//! This crate must not depend on any I/O library (no tokio, rdkafka, rocksdb)
//! and never reads the system clock: time is always a parameter.

pub mod encode;
pub mod engine;
pub mod event;
pub mod hash;
pub mod offer;
pub mod partition;
pub mod preview;
pub mod rules;
pub mod state;
pub mod time;
pub mod timers;
pub mod view;
pub mod watermark;
pub mod window;
