//! Schema evolution: records written with other compatible writer schemas
//! decode with cohort's reader schemas; incompatible ones are refused at
//! load, not per record.

mod common;

use apache_avro::types::Value;
use apache_avro::{to_avro_datum, Schema};
use cohort_codec::{check_compatible, Decoder, Format, InputKind, Registry, RegistryError};
use cohort_core::event::{Channel, ClickKind, EventKind, Geo};
use common::*;
use std::sync::Arc;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(name)).unwrap()
}

fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(datum);
    v
}

fn registry_with(id: u32, file: &str) -> Arc<Registry> {
    let mut reg = Registry::load(&schemas_dir(), IDS).unwrap();
    reg.register(id, &fixture(file), file).unwrap();
    Arc::new(reg)
}

#[test]
fn older_writer_decodes_with_defaults_for_new_fields() {
    let reg = registry_with(7, "ClickEvent.r0.avsc");
    let writer = Schema::parse_str(&fixture("ClickEvent.r0.avsc")).unwrap();
    let null = || Value::Union(0, Box::new(Value::Null));
    let s = |x: &str| Value::Union(1, Box::new(Value::String(x.into())));
    let datum = to_avro_datum(
        &writer,
        Value::Record(vec![
            ("id".into(), s("e-old")),
            ("customer".into(), s("c1")),
            ("time".into(), Value::TimestampMillis(T.0)),
            ("kind".into(), Value::Enum(1, "product_view".into())),
            ("product_id".into(), s("sku-1")),
            ("category".into(), null()),
            ("price".into(), Value::Union(1, Box::new(Value::Float(2.5)))),
            ("quantity".into(), null()),
            ("page".into(), null()),
            ("search_query".into(), null()),
            ("channel".into(), Value::Union(1, Box::new(Value::Enum(4, "push".into())))),
            ("device".into(), s("android")),
        ]),
    )
    .unwrap();
    let dec = Decoder::new(Format::ConfluentAvro, reg);
    let bytes = framed(7, &datum);
    let ev = dec.decode(InputKind::Click, &record(Some(b"c1"), Some(&bytes))).unwrap();
    assert_eq!(ev.id, "e-old");
    let EventKind::Click(c) = ev.kind else { panic!("not a click") };
    assert_eq!(c.kind, ClickKind::ProductView);
    assert_eq!(c.price, Some(2.5), "float promoted to double");
    assert_eq!(c.channel, Some(Channel::Push));
    assert_eq!(c.device.as_deref(), Some("android"));
    // Added later, filled from the reader's defaults:
    assert_eq!(c.geo, Geo::default());
    assert_eq!(c.campaign, None);
    assert_eq!(c.session_id, None);
}

#[test]
fn newer_writer_with_unknown_fields_and_symbols_decodes() {
    let reg = registry_with(8, "ClickEvent.future.avsc");
    let writer = Schema::parse_str(&fixture("ClickEvent.future.avsc")).unwrap();
    let datum = to_avro_datum(
        &writer,
        Value::Record(vec![
            ("time".into(), Value::Long(T.0)),
            ("kind".into(), Value::Enum(0, "page_view".into())),
            ("referrer".into(), Value::Union(1, Box::new(Value::String("https://x".into())))),
            (
                "tags".into(),
                Value::Map([("a".to_string(), Value::Array(vec![Value::String("b".into())]))].into_iter().collect()),
            ),
            ("customer".into(), Value::String("c2".into())),
            ("channel".into(), Value::Union(1, Box::new(Value::Enum(7, "kiosk".into())))),
            ("price".into(), Value::Union(1, Box::new(Value::Double(3.0)))),
        ]),
    )
    .unwrap();
    let dec = Decoder::new(Format::ConfluentAvro, reg);
    let bytes = framed(8, &datum);
    let ev = dec.decode(InputKind::Click, &record(None, Some(&bytes))).unwrap();
    assert_eq!(ev.customer, "c2");
    assert_eq!(ev.id, "clickstream:3:42", "no id in the writer schema: derived from the offset");
    let EventKind::Click(c) = ev.kind else { panic!("not a click") };
    assert_eq!(c.channel, Some(Channel::Other), "unknown symbol reads as the enum default");
    assert_eq!(c.price, Some(3.0));
}

#[test]
fn incompatible_writer_is_refused_at_load() {
    let mut reg = Registry::builtin();
    let err = reg.register(9, &fixture("ClickEvent.incompatible.avsc"), "ClickEvent.incompatible.avsc").unwrap_err();
    assert!(matches!(err, RegistryError::Incompatible { id: 9, .. }), "{err}");
    assert!(err.to_string().contains("kind"), "{err}");
    assert!(check_compatible(&fixture("ClickEvent.incompatible.avsc"), InputKind::Click).is_err());
    assert!(check_compatible(&fixture("ClickEvent.r0.avsc"), InputKind::Click).is_ok());
}

/// Our resolution agrees with apache-avro's compatibility checker, except
/// where the checker is stricter than the Avro spec: it ignores enum
/// defaults (Avro 1.9+), so it refuses a writer with a new channel symbol
/// that the spec (and the Java implementation) reads as `other`.
#[test]
fn compatibility_agrees_with_apache_avro() {
    use apache_avro::schema_compatibility::SchemaCompatibility;
    let reader = Schema::parse_str(cohort_codec::RecordType::ClickEvent.schema_text()).unwrap();
    for (f, theirs_expected) in
        [("ClickEvent.r0.avsc", true), ("ClickEvent.incompatible.avsc", false), ("ClickEvent.future.avsc", false)]
    {
        let writer = Schema::parse_str(&fixture(f)).unwrap();
        let theirs = SchemaCompatibility::can_read(&writer, &reader).is_ok();
        assert_eq!(theirs, theirs_expected, "{f}");
        let ours = check_compatible(&fixture(f), InputKind::Click).is_ok();
        let ours_expected = f != "ClickEvent.incompatible.avsc";
        assert_eq!(ours, ours_expected, "{f}");
    }
}

#[test]
fn unknown_writer_record_on_a_topic_is_a_schema_mismatch() {
    let reg = registry();
    let enc = cohort_codec::Encoder::new(Format::ConfluentAvro, reg.clone());
    let purchase = sample_events().into_iter().find(|e| matches!(e.kind, EventKind::Purchase(_))).unwrap();
    let bytes = enc.encode_event(&purchase).unwrap().unwrap();
    let err =
        Decoder::new(Format::ConfluentAvro, reg).decode(InputKind::Click, &record(None, Some(&bytes))).unwrap_err();
    assert_eq!(err.reason(), "schema_mismatch");
}
