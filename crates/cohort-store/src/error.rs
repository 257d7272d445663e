//! Typed store errors, each classified as retryable, fatal or bad data.

use std::path::PathBuf;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient (busy, timed out, I/O that may succeed later): back off and retry.
    Retryable,
    /// The store cannot be used safely (corrupt files, newer format, bad
    /// config): stop the partition or the process cleanly.
    Fatal,
    /// One record or one argument is bad; other keys are unaffected. Count it,
    /// report it, and carry on (the worker rebuilds that customer from the
    /// changelog or sends the input to the DLQ).
    BadData,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed an operation for a reason that may go away (I/O error,
    /// busy, timed out, try again).
    #[error("rocksdb {op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// RocksDB failed an operation in a way that will not go away by retrying
    /// (its own checksum failed, not supported, shutting down).
    #[error("rocksdb {op} failed permanently: {source}")]
    Engine {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// One record's bytes do not decode: truncated, checksum mismatch, a
    /// malformed key. Only that key is affected.
    #[error("corrupt record in {cf} for key {key:?}: {reason}")]
    CorruptRecord { cf: &'static str, key: String, reason: String },
    /// A record written by a newer cohort (envelope version this build does
    /// not know). Refused rather than misread; other keys are unaffected.
    #[error(
        "record in {cf} for key {key:?} has envelope version {found}; this build reads versions {oldest}..={newest}"
    )]
    UnsupportedRecordVersion { cf: &'static str, key: String, found: u8, oldest: u8, newest: u8 },
    /// The store directory was written by a newer cohort.
    #[error(
        "store at {path:?} has format version {found}, newer than {supported}, the newest this build supports; \
         run a newer cohort or delete the directory and restore from the changelog"
    )]
    NewerFormat { path: PathBuf, found: u32, supported: u32 },
    /// Store metadata is missing or malformed.
    #[error("store at {path:?} has bad metadata {key}: {reason}")]
    CorruptMetadata { path: PathBuf, key: &'static str, reason: String },
    /// The store directory could not be created or read.
    #[error("file system error on {path:?}: {source}")]
    Fs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid store config: {0}")]
    Config(String),
    /// An argument the store cannot accept (partition out of Kafka's range, a
    /// customer id too long to index).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A reopen (to purge forgotten data) failed, the store is unusable.
    #[error("store at {path:?} is closed: {reason}")]
    Closed { path: PathBuf, reason: String },
}

impl StoreError {
    /// Whether to retry, stop, or skip the affected record.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Io { .. } => ErrorClass::Retryable,
            StoreError::Engine { .. }
            | StoreError::NewerFormat { .. }
            | StoreError::CorruptMetadata { .. }
            | StoreError::Config(_)
            | StoreError::Fs { .. }
            | StoreError::Closed { .. } => ErrorClass::Fatal,
            StoreError::CorruptRecord { .. }
            | StoreError::UnsupportedRecordVersion { .. }
            | StoreError::InvalidArgument(_) => ErrorClass::BadData,
        }
    }

    /// Shorthand for `class() == Retryable`.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// A bounded label for metrics (`error kind`), never containing a key.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "io",
            StoreError::Engine { .. } => "engine",
            StoreError::CorruptRecord { .. } => "corrupt_record",
            StoreError::UnsupportedRecordVersion { .. } => "unsupported_record_version",
            StoreError::NewerFormat { .. } => "newer_format",
            StoreError::CorruptMetadata { .. } => "corrupt_metadata",
            StoreError::Config(_) => "config",
            StoreError::Fs { .. } => "fs",
            StoreError::InvalidArgument(_) => "invalid_argument",
            StoreError::Closed { .. } => "closed",
        }
    }

    /// Classifies a RocksDB error by its status code.
    pub(crate) fn rocks(op: &'static str, source: rocksdb::Error) -> StoreError {
        match source.kind() {
            rocksdb::ErrorKind::IOError
            | rocksdb::ErrorKind::Busy
            | rocksdb::ErrorKind::TimedOut
            | rocksdb::ErrorKind::TryAgain
            | rocksdb::ErrorKind::Incomplete
            | rocksdb::ErrorKind::Aborted
            | rocksdb::ErrorKind::Expired => StoreError::Io { op, source },
            _ => StoreError::Engine { op, source },
        }
    }
}

/// Renders key bytes for an error message: the string if UTF-8, else escaped.
pub(crate) fn display_key(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}
