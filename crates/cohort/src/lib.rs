//! The `cohort` worker as a library: configuration, metrics, the HTTP
//! endpoints and the processing loop, so end-to-end tests can run a worker
//! in-process as well as the binary.

pub mod check;
pub mod config;
pub mod demo;
pub mod dlq;
mod hot;
pub mod http;
pub mod inspect;
pub mod liveness;
pub mod loadgen_cmd;
pub mod memory;
pub mod metrics;
pub mod preview;
pub mod reload;
pub mod secrets;
pub mod worker;
