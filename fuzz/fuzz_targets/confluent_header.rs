//! Confluent wire format: the 5-byte header, then the schema id's plan.
//!
//! Input: one selector byte (record and Kafka key, see `cohort_fuzz::split`)
//! then the whole Kafka value (magic byte, schema id, datum). The registry
//! has cohort's schemas (twice, under two ids each) and two evolved
//! ClickEvent writer schemas, so schema resolution (defaults, skipped
//! fields, promotions, enum mapping) is exercised too. Checks:
//! - `split_confluent` accepts exactly the values with 5 or more bytes and
//!   magic byte 0, returns the big-endian id and the rest, and otherwise
//!   says which of the two things is wrong;
//! - decoding never panics and every error has a stable reason;
//! - cohort's own schema id (direct decoder first) and the same schema
//!   under another id (generic decoder only) give the same answer;
//! - a decoded record re-encodes, and that decodes to the same record.
#![no_main]

use cohort_codec::{split_confluent, DecodeError, Format};
use cohort_fuzz::{builtin_id, decode_and_roundtrip, decode_shown, decoder, encoder, generic_id, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((target, key, value)) = split(data) else { return };
    let header = split_confluent(value);
    match &header {
        Ok((id, datum)) => {
            assert!(value.len() >= 5 && value[0] == 0, "{value:?}");
            assert_eq!(*id, u32::from_be_bytes([value[1], value[2], value[3], value[4]]));
            assert_eq!(*datum, &value[5..]);
        }
        Err(DecodeError::TruncatedHeader { len }) => {
            assert!(value.len() < 5);
            assert_eq!(*len, value.len());
        }
        Err(DecodeError::BadMagicByte(b)) => {
            assert!(value.len() >= 5);
            assert_ne!(*b, 0);
            assert_eq!(*b, value[0]);
        }
        Err(e) => panic!("split_confluent: unexpected error {e:?}"),
    }

    let dec = decoder(Format::ConfluentAvro);
    let shown = decode_and_roundtrip(&dec, target, key, value, &encoder(Format::ConfluentAvro), &dec);

    let rt = target.record_type();
    if let Ok((id, datum)) = header {
        if id == builtin_id(rt) {
            let mut framed = Vec::with_capacity(value.len());
            framed.push(0);
            framed.extend_from_slice(&generic_id(rt).to_be_bytes());
            framed.extend_from_slice(datum);
            assert_eq!(shown, decode_shown(&dec, target, key, &framed), "direct and generic decoders disagree");
        }
    }
});
