//! Errors. A [`DecodeError`] is always bad input (the record goes to the
//! DLQ); [`RegistryError`] is a configuration error found at start-up
//! (fatal); [`EncodeError`] is a missing schema id (configuration) or a bug.

use crate::schema::RecordType;
use thiserror::Error;

/// Why a record could not be turned into an event. Every variant is bad
/// input: the worker sends the original record to the DLQ with
/// [`DecodeError::reason`] and carries on.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum DecodeError {
    /// The value is larger than the decoder's limit.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    /// A null value (tombstone) on a topic where it means nothing; only
    /// `customer-profiles` gives it a meaning (forget).
    #[error("null value on a {topic_kind} topic")]
    NullValue { topic_kind: &'static str },
    /// Confluent wire format: fewer than the 5 header bytes.
    #[error("value of {len} bytes is too short for the Confluent header (magic byte and schema id)")]
    TruncatedHeader { len: usize },
    /// Confluent wire format: the first byte is not 0.
    #[error("magic byte is {0:#04x}, expected 0x00 (Confluent wire format)")]
    BadMagicByte(u8),
    /// Confluent wire format: the schema id is not in the configured map.
    #[error("schema id {0} is not configured")]
    UnknownSchemaId(u32),
    /// The writer schema is a different record than this topic carries (or
    /// not readable with its reader schema).
    #[error("schema id {schema_id} ({found}) cannot be read as {expected}")]
    SchemaMismatch { schema_id: u32, found: String, expected: &'static str },
    /// The Avro bytes do not decode with the writer schema.
    #[error("undecodable Avro: {0}")]
    Undecodable(String),
    /// The value is not JSON, or not a JSON object.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A required field is missing (JSON).
    #[error("required field `{0}` is missing")]
    MissingField(String),
    /// A field has the wrong type or an impossible value (an unknown enum
    /// symbol in JSON, a negative age, a non-existent date).
    #[error("field `{field}`: {problem}")]
    InvalidField { field: String, problem: String },
    /// The Kafka key is not UTF-8.
    #[error("Kafka key is not UTF-8")]
    InvalidKey,
    /// Neither the Kafka key nor the payload names the customer.
    #[error("no customer id in key or payload")]
    MissingCustomerId,
    /// The key and the payload name different customers: co-partitioning
    /// would put this customer's events on the wrong worker.
    #[error("customer id in payload ({payload:?}) differs from the Kafka key ({key:?})")]
    CustomerIdMismatch { key: String, payload: String },
    /// A tombstone whose record has no timestamp, so the forget has no time.
    #[error("tombstone without a Kafka timestamp")]
    MissingTimestamp,
}

impl DecodeError {
    /// Every reason [`DecodeError::reason`] can return, to pre-register
    /// metric label values.
    pub const REASONS: [&'static str; 14] = [
        "oversized",
        "null_value",
        "truncated_header",
        "bad_magic_byte",
        "unknown_schema_id",
        "schema_mismatch",
        "undecodable",
        "invalid_json",
        "missing_field",
        "invalid_field",
        "invalid_key",
        "missing_customer_id",
        "customer_id_mismatch",
        "missing_timestamp",
    ];

    /// A short stable label: the DLQ reason header and the `reason` metric
    /// label. Bounded set, never data from the record; never rename one.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::NullValue { .. } => "null_value",
            DecodeError::TruncatedHeader { .. } => "truncated_header",
            DecodeError::BadMagicByte(_) => "bad_magic_byte",
            DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            DecodeError::SchemaMismatch { .. } => "schema_mismatch",
            DecodeError::Undecodable(_) => "undecodable",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::InvalidKey => "invalid_key",
            DecodeError::MissingCustomerId => "missing_customer_id",
            DecodeError::CustomerIdMismatch { .. } => "customer_id_mismatch",
            DecodeError::MissingTimestamp => "missing_timestamp",
        }
    }
}

/// A schema that does not parse, or a writer/reader pair that Avro's
/// resolution rules cannot reconcile.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum SchemaError {
    #[error("{0}")]
    Parse(String),
    #[error("recursive type {0} is not supported")]
    Recursive(String),
    #[error("reference to undefined type {0}")]
    UnknownReference(String),
    #[error("incompatible: {0}")]
    Incompatible(String),
}

/// A problem with the schemas directory or the schema id map: fatal at
/// start-up, with the file it is about.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Schema { path: String, source: SchemaError },
    #[error("schema id {id} ({path}) is a {found} that the {expected} reader cannot read: {source}")]
    Incompatible { id: u32, path: String, found: String, expected: &'static str, source: SchemaError },
    #[error("schema id {id} is configured twice")]
    DuplicateId { id: u32 },
}

/// Why a record could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// Confluent wire format needs a schema id for the record's current
    /// schema; map one in the config (`{id -> <full name>.avsc}`).
    #[error("no schema id is configured for {name}", name = .0.full_name())]
    NoSchemaId(RecordType),
    /// The value does not fit the schema: a bug in the codec's mapping.
    #[error("{0:?} does not fit its schema: {1}")]
    Mismatch(RecordType, String),
}
