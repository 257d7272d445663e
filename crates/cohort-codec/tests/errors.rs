//! Every way a record can fail to decode yields a typed error with a
//! stable reason, and every reason is reachable.

mod common;

use cohort_codec::{DecodeError, Decoder, Encoder, Format, InputKind, Record};
use cohort_core::event::{EventKind, ProfileUpdate};
use common::*;
use std::collections::BTreeSet;

fn click_bytes(format: Format) -> Vec<u8> {
    Encoder::new(format, registry()).encode_event(&sample_events()[0]).unwrap().unwrap()
}

fn decode(format: Format, kind: InputKind, key: Option<&[u8]>, value: Option<&[u8]>) -> DecodeError {
    Decoder::new(format, registry()).decode(kind, &record(key, value)).unwrap_err()
}

/// (case, error) for every failure we know how to provoke.
fn cases() -> Vec<(&'static str, DecodeError)> {
    let avro = click_bytes(Format::Avro);
    let confluent = click_bytes(Format::ConfluentAvro);
    let purchase = Encoder::new(Format::ConfluentAvro, registry()).encode_event(&sample_events()[2]).unwrap().unwrap();
    let mut bad_magic = confluent.clone();
    bad_magic[0] = 1;
    let mut unknown_id = confluent.clone();
    unknown_id[4] = 99;
    let mut trailing = avro.clone();
    trailing.push(0);
    let mut bad_utf8 = avro.clone();
    // "id" is ["null","string"]: byte 0 = branch 1 (2), then length, then bytes.
    bad_utf8[2] = 0xff;
    let neg_age = {
        let ev = event(EventKind::ProfileUpdate(ProfileUpdate::default()));
        let mut b = Encoder::new(Format::Json, registry()).encode_event(&ev).unwrap().unwrap();
        let mut j: serde_json::Value = serde_json::from_slice(&b).unwrap();
        j["age"] = serde_json::json!(-3);
        b = serde_json::to_vec(&j).unwrap();
        b
    };
    let bad_date = br#"{"time": 1700000000123, "birth_date": 2147483647}"#.to_vec();
    let k = Some(&b"cust-7"[..]);
    let c = InputKind::Click;
    vec![
        (
            "oversized",
            Decoder::new(Format::Avro, registry())
                .with_max_value_bytes(10)
                .decode(c, &record(k, Some(&avro)))
                .unwrap_err(),
        ),
        ("null value on clickstream", decode(Format::Avro, c, k, None)),
        ("short confluent header", decode(Format::ConfluentAvro, c, k, Some(&confluent[..3]))),
        ("bad magic byte", decode(Format::ConfluentAvro, c, k, Some(&bad_magic))),
        ("unknown schema id", decode(Format::ConfluentAvro, c, k, Some(&unknown_id))),
        ("purchase schema on clickstream", decode(Format::ConfluentAvro, c, k, Some(&purchase))),
        ("truncated avro", decode(Format::Avro, c, k, Some(&avro[..avro.len() - 3]))),
        ("trailing bytes", decode(Format::Avro, c, k, Some(&trailing))),
        ("invalid utf-8 in a string", decode(Format::Avro, c, k, Some(&bad_utf8))),
        ("bad union index", decode(Format::Avro, c, k, Some(&[8]))),
        (
            "huge array length",
            decode(Format::Avro, InputKind::Purchase, k, Some(&[0, 0, 2, 4, b'o', b'1', 0xfe, 0xff, 0xff, 0xff, 0x0f])),
        ),
        ("empty avro", decode(Format::Avro, c, k, Some(&[]))),
        ("not json", decode(Format::Json, c, k, Some(b"{\"time\": "))),
        ("json array", decode(Format::Json, c, k, Some(b"[1, 2]"))),
        ("json without time", decode(Format::Json, c, k, Some(br#"{"kind": "search"}"#))),
        ("unknown click kind", decode(Format::Json, c, k, Some(br#"{"time": 1, "kind": "teleport"}"#))),
        ("price as string", decode(Format::Json, c, k, Some(br#"{"time": 1, "kind": "search", "price": "9"}"#))),
        ("negative age", decode(Format::Json, InputKind::Profile, k, Some(&neg_age))),
        ("impossible birth date", decode(Format::Json, InputKind::Profile, k, Some(&bad_date))),
        ("key not utf-8", decode(Format::Avro, c, Some(b"\xff\xfe"), Some(&avro))),
        ("no customer anywhere", decode(Format::Json, c, None, Some(br#"{"time": 1, "kind": "search"}"#))),
        (
            "empty key, empty customer",
            decode(Format::Json, c, Some(b""), Some(br#"{"time": 1, "kind": "search", "customer": ""}"#)),
        ),
        ("key differs from payload", decode(Format::Avro, c, Some(b"someone-else"), Some(&avro))),
        ("tombstone without timestamp", {
            let r = Record { timestamp: None, ..record(k, None) };
            Decoder::new(Format::Avro, registry()).decode(InputKind::Profile, &r).unwrap_err()
        }),
        ("tombstone without key", decode(Format::Avro, InputKind::Profile, None, None)),
    ]
}

#[test]
fn each_failure_has_the_expected_reason() {
    let expected = [
        ("oversized", "oversized"),
        ("null value on clickstream", "null_value"),
        ("short confluent header", "truncated_header"),
        ("bad magic byte", "bad_magic_byte"),
        ("unknown schema id", "unknown_schema_id"),
        ("purchase schema on clickstream", "schema_mismatch"),
        ("truncated avro", "undecodable"),
        ("trailing bytes", "undecodable"),
        ("invalid utf-8 in a string", "undecodable"),
        ("bad union index", "undecodable"),
        ("huge array length", "undecodable"),
        ("empty avro", "undecodable"),
        ("not json", "invalid_json"),
        ("json array", "invalid_json"),
        ("json without time", "missing_field"),
        ("unknown click kind", "invalid_field"),
        ("price as string", "invalid_field"),
        ("negative age", "invalid_field"),
        ("impossible birth date", "invalid_field"),
        ("key not utf-8", "invalid_key"),
        ("no customer anywhere", "missing_customer_id"),
        ("empty key, empty customer", "missing_customer_id"),
        ("key differs from payload", "customer_id_mismatch"),
        ("tombstone without timestamp", "missing_timestamp"),
        ("tombstone without key", "missing_customer_id"),
    ];
    let cases = cases();
    assert_eq!(cases.len(), expected.len());
    for ((case, err), (want_case, want)) in cases.iter().zip(expected) {
        assert_eq!(*case, want_case);
        assert_eq!(err.reason(), want, "{case}: {err}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn every_reason_is_tested_and_listed() {
    let seen: BTreeSet<&str> = cases().iter().map(|(_, e)| e.reason()).collect();
    let listed: BTreeSet<&str> = DecodeError::REASONS.into_iter().collect();
    assert_eq!(seen, listed);
}

#[test]
fn errors_say_what_is_wrong() {
    let e = decode(Format::Json, InputKind::Click, None, Some(br#"{"time": 1, "kind": "teleport"}"#));
    assert!(e.to_string().contains("kind"), "{e}");
    let e = decode(Format::Avro, InputKind::Click, Some(b"x"), Some(&click_bytes(Format::Avro)));
    assert!(e.to_string().contains("someone") || e.to_string().contains("\"x\""), "{e}");
}

/// Random bytes never panic, whatever the format.
#[test]
fn garbage_never_panics() {
    let reg = registry();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = click_bytes(Format::Avro);
    for format in [Format::Avro, Format::ConfluentAvro, Format::Json] {
        let dec = Decoder::new(format, reg.clone());
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if format == Format::Avro && next() % 2 == 0 {
                // Mutate a valid record instead: deeper paths.
                bytes = valid.clone();
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            for kind in InputKind::ALL {
                let _ = dec.decode(kind, &record(Some(b"cust-7"), Some(&bytes)));
            }
        }
    }
}
