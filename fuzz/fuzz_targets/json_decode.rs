//! JSON: every input record and both output records.
//!
//! Input: one selector byte (record and Kafka key, see `cohort_fuzz::split`)
//! then the JSON document. Checks:
//! - decoding never panics and every error has a stable reason;
//! - a decoded record re-encodes as JSON, and that decodes to the same
//!   record;
//! - it also encodes as Avro, and that decodes to the same record (the two
//!   formats read the same schemas into the same types).
#![no_main]

use cohort_codec::Format;
use cohort_fuzz::{decode_and_roundtrip, decoder, encoder, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((target, key, value)) = split(data) else { return };
    let json = decoder(Format::Json);
    let as_json = decode_and_roundtrip(&json, target, key, value, &encoder(Format::Json), &json);
    let as_avro = decode_and_roundtrip(&json, target, key, value, &encoder(Format::Avro), &decoder(Format::Avro));
    assert_eq!(as_json, as_avro);
});
