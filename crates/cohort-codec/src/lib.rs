//! cohort-codec: Kafka record bytes to cohort events, and outputs to bytes.
//!
//! Three wire formats, chosen once per deployment ([`Format`]): plain Avro
//! binary, Avro in the Confluent wire format (magic byte 0, 4-byte schema
//! id, datum), and JSON with the Avro schemas' field names. The schemas are
//! the `.avsc` files in the workspace's `schemas/` directory (the contract
//! with producers and consumers, documented in `docs/schemas.md`); they are
//! compiled into the binary as reader schemas for inputs and writer schemas
//! for outputs.
//!
//! Layout:
//! - [`schema`]: the compiled schema tree and the list of records;
//! - `avro`: Avro schema resolution (writer vs reader), a zero-copy binary
//!   decoder driven by a plan compiled once per schema pair, the encoder;
//! - `json`: JSON against the same schemas;
//! - [`registry`]: Confluent schema ids to writer schemas (from config and
//!   the schemas directory), compatibility checked at load;
//! - `records`: decoded values to `cohort-core` types and back;
//! - `direct`: clicks in cohort's own schema straight to core types, the
//!   hot path; anything it does not accept goes the generic way;
//! - `json_input`, `json_output`: the same for JSON inputs and outputs;
//! - [`codec`]: the public [`Decoder`] and [`Encoder`];
//! - [`output`]: the engine output types the codec encodes (re-exported).
//!
//! Every decode failure is a [`DecodeError`] with a stable
//! [`DecodeError::reason`] (the DLQ reason header and metric label).
//!
//! This crate depends on `cohort-core` and on no I/O library: no tokio,
//! rdkafka or rocksdb. It never reads the clock.

mod avro;
pub mod codec;
mod direct;
pub mod error;
mod json;
mod json_direct;
mod json_input;
mod json_output;
pub mod output;
#[cfg(test)]
mod pick;
mod records;
pub mod registry;
pub mod schema;

pub use codec::{
    derived_event_id, split_confluent, Decoder, Encoder, Format, Record, DEFAULT_MAX_VALUE_BYTES, UNREAD_CLICK_FIELDS,
};
pub use error::{DecodeError, EncodeError, RegistryError, SchemaError};
pub use output::{Cause, CauseKind, NextBestOffer, OfferScores, SegmentChanged};
pub use registry::{check_compatible, Registry};
pub use schema::{InputKind, RecordType};
