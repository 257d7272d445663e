//! The stored customer state (`cohort_core::encode`), as read from RocksDB
//! and the changelog topic.
//!
//! Input: the state record (format version byte, then the fields). Checks:
//! - decoding never panics (nor allocates beyond what the input can hold)
//!   and returns a typed `DecodeError`;
//! - a decoded state re-encodes to bytes that decode to an equal state, and
//!   encoding that gives the same bytes again (the encoding is canonical).
#![no_main]

use cohort_core::encode::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(state) => {
            let bytes = encode(&state);
            let again = decode(&bytes).unwrap_or_else(|e| panic!("re-encoded state does not decode: {e}"));
            assert_eq!(again, state, "re-encoded state decodes differently");
            assert_eq!(encode(&again), bytes, "encoding is not canonical");
        }
    }
});
