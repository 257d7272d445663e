//! Plain Avro: every input record and both output records.
//!
//! Input: one selector byte (record and Kafka key, see `cohort_fuzz::split`)
//! then the Avro datum. Checks:
//! - decoding never panics, and every error is a typed `DecodeError` with a
//!   stable reason;
//! - the direct decoder (tried first for inputs) never changes an answer:
//!   the same datum framed under a Confluent schema id that only the
//!   generic decoder reads gives the same event or the same error;
//! - a decoded record re-encodes, and that decodes to the same record.
#![no_main]

use cohort_codec::Format;
use cohort_fuzz::{decode_and_roundtrip, decode_shown, decoder, encoder, generic_id, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((target, key, datum)) = split(data) else { return };
    let plain = decoder(Format::Avro);
    let direct_first = decode_and_roundtrip(&plain, target, key, datum, &encoder(Format::Avro), &plain);

    let mut framed = Vec::with_capacity(5 + datum.len());
    framed.push(0);
    framed.extend_from_slice(&generic_id(target.record_type()).to_be_bytes());
    framed.extend_from_slice(datum);
    let generic_only = decode_shown(&decoder(Format::ConfluentAvro), target, key, &framed);
    assert_eq!(direct_first, generic_only, "plain Avro and the generic decoder disagree");
});
