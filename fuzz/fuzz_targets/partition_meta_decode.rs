//! A partition's metadata record (`cohort_core::partition::PartitionMeta`),
//! as read from the store's `partitions` column family and the changelog.
//!
//! Input: the record (format version byte, then the fields). Checks:
//! - decoding never panics (nor allocates beyond what the input can hold)
//!   and returns a typed `DecodeError`;
//! - a decoded record re-encodes to bytes that decode again, and encoding
//!   that gives the same bytes (the encoding is canonical). Bytes, not
//!   values, are compared: a learned table may hold a NaN.
#![no_main]

use cohort_core::partition::PartitionMeta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match PartitionMeta::decode(data) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(meta) => {
            let bytes = meta.encode();
            let again = PartitionMeta::decode(&bytes).unwrap_or_else(|e| panic!("re-encoded record does not decode: {e}"));
            assert_eq!(again.encode(), bytes, "encoding is not canonical");
        }
    }
});
