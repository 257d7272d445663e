//! Every record survives encode then decode in every format, and the Avro
//! bytes are the ones apache-avro reads and writes.

mod common;

use cohort_codec::{Decoder, Encoder, Format, InputKind, RecordType};
use common::*;

const FORMATS: [Format; 3] = [Format::Avro, Format::ConfluentAvro, Format::Json];

#[test]
fn input_events_round_trip_in_every_format() {
    let reg = registry();
    for format in FORMATS {
        let enc = Encoder::new(format, reg.clone());
        let dec = Decoder::new(format, reg.clone());
        for ev in sample_events() {
            let bytes = enc.encode_event(&ev).expect("encodes").expect("not a tombstone");
            let back = dec.decode(kind_of(&ev), &record(Some(b"cust-7"), Some(&bytes))).expect("decodes");
            assert_eq!(back, ev, "{format}");
        }
    }
}

/// The worker's decoder leaves out the click fields the engine does not
/// read, in every format on the direct path and in JSON on the generic
/// path too, and still refuses a value of the wrong type in one of them.
#[test]
fn engine_fields_only_leaves_out_what_the_engine_does_not_read() {
    use cohort_core::event::EventKind;
    let reg = registry();
    for format in FORMATS {
        let enc = Encoder::new(format, reg.clone());
        let dec = Decoder::new(format, reg.clone()).engine_fields_only();
        let mut left_out = 0;
        for ev in sample_events() {
            let bytes = enc.encode_event(&ev).expect("encodes").expect("not a tombstone");
            let back = dec.decode(kind_of(&ev), &record(Some(b"cust-7"), Some(&bytes))).expect("decodes");
            let mut expected = ev.clone();
            if let EventKind::Click(c) = &mut expected.kind {
                left_out += usize::from(c.page.is_some() && c.session_id.is_some());
                (c.page, c.search_query, c.device, c.campaign, c.session_id) = (None, None, None, None, None);
            }
            assert_eq!(back, expected, "{format}");
        }
        assert!(left_out > 0, "a sample click carries the fields");
    }
    let full = Decoder::new(Format::Json, reg.clone());
    let lean = Decoder::new(Format::Json, reg).engine_fields_only();
    let click = |dec: &Decoder, text: &[u8]| match dec.decode(InputKind::Click, &record(None, Some(text))) {
        Ok(ev) => match ev.kind {
            EventKind::Click(c) => Ok(c),
            other => panic!("not a click: {other:?}"),
        },
        Err(e) => Err(e.to_string()),
    };
    // An Avro JSON union is left to the generic path.
    let generic = br#"{"customer": "c-1", "time": 1, "kind": "page_view", "page": {"string": "/"}, "device": "tv"}"#;
    assert_eq!(click(&full, generic).expect("decodes").device.as_deref(), Some("tv"));
    let c = click(&lean, generic).expect("decodes");
    assert_eq!((c.page, c.device), (None, None));
    let wrong = br#"{"customer": "c-1", "time": 1, "kind": "page_view", "page": 5}"#;
    let refused = click(&full, wrong).expect_err("a number for a string");
    assert_eq!(click(&lean, wrong).expect_err("a number for a string"), refused);
}

/// `UNREAD_CLICK_FIELDS` is what the worker's decoder leaves out: each
/// field it names is kept by the full decoder and blanked by the lean one,
/// and every other field of a click is kept by both.
#[test]
fn unread_click_fields_are_exactly_those_left_out() {
    use cohort_codec::UNREAD_CLICK_FIELDS;
    use cohort_core::event::{Click, EventKind};
    type Text = fn(&Click) -> Option<&str>;
    let text_fields: [(&str, Text); 10] = [
        ("product_id", |c| c.product_id.as_deref()),
        ("category", |c| c.category.as_deref()),
        ("page", |c| c.page.as_deref()),
        ("search_query", |c| c.search_query.as_deref()),
        ("device", |c| c.device.as_deref()),
        ("campaign", |c| c.campaign.as_deref()),
        ("session_id", |c| c.session_id.as_deref()),
        ("country", |c| c.geo.country.as_deref()),
        ("region", |c| c.geo.region.as_deref()),
        ("city", |c| c.geo.city.as_deref()),
    ];
    for name in UNREAD_CLICK_FIELDS {
        assert!(text_fields.iter().any(|(n, _)| *n == name), "{name} is not a text field of a click");
    }
    let reg = registry();
    let (full, lean) = (Decoder::new(Format::Json, reg.clone()), Decoder::new(Format::Json, reg).engine_fields_only());
    for (name, get) in text_fields {
        let field = match name {
            "country" | "region" | "city" => format!(r#""geo": {{"{name}": "x"}}"#),
            _ => format!(r#""{name}": "x""#),
        };
        let text = format!(r#"{{"customer": "c-1", "time": 1, "kind": "page_view", {field}}}"#);
        let read = |dec: &Decoder| match dec.decode(InputKind::Click, &record(None, Some(text.as_bytes()))) {
            Ok(ev) => match ev.kind {
                EventKind::Click(c) => get(&c).map(str::to_owned),
                other => panic!("not a click: {other:?}"),
            },
            Err(e) => panic!("{text}: {e}"),
        };
        assert_eq!(read(&full).as_deref(), Some("x"), "the full decoder keeps {name}");
        let expected = if UNREAD_CLICK_FIELDS.contains(&name) { None } else { Some("x") };
        assert_eq!(read(&lean).as_deref(), expected, "the worker's decoder and {name}");
    }
}

#[test]
fn outputs_round_trip_in_every_format() {
    let reg = registry();
    for format in FORMATS {
        let enc = Encoder::new(format, reg.clone());
        let dec = Decoder::new(format, reg.clone());
        let sc = segment_changed();
        assert_eq!(dec.decode_segment_changed(&enc.encode_segment_changed(&sc).unwrap()).unwrap(), sc, "{format}");
        for nbo in [next_best_offer(), held_out_offer()] {
            assert_eq!(
                dec.decode_next_best_offer(&enc.encode_next_best_offer(&nbo).unwrap()).unwrap(),
                nbo,
                "{format}"
            );
        }
    }
}

#[test]
fn forget_is_a_tombstone_and_decodes_from_one() {
    let reg = registry();
    let enc = Encoder::new(Format::Avro, reg.clone());
    let ev = event(cohort_core::event::EventKind::Forget);
    assert_eq!(enc.encode_event(&ev).unwrap(), None);
    for format in FORMATS {
        let dec = Decoder::new(format, reg.clone());
        let got = dec.decode(cohort_codec::InputKind::Profile, &record(Some(b"cust-7"), None)).unwrap();
        assert_eq!(got.kind, cohort_core::event::EventKind::Forget);
        assert_eq!(got.customer, "cust-7");
        assert_eq!(got.time, T);
        assert_eq!(got.id, "clickstream:3:42");
    }
}

#[test]
fn confluent_frames_carry_the_configured_schema_id() {
    let reg = registry();
    let enc = Encoder::new(Format::ConfluentAvro, reg.clone());
    let bytes = enc.encode_segment_changed(&segment_changed()).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 105]);
    assert_eq!(reg.id_for(RecordType::ClickEvent), Some(101));
    let plain = Encoder::new(Format::Avro, reg).encode_segment_changed(&segment_changed()).unwrap();
    assert_eq!(&bytes[5..], &plain[..]);
}

#[test]
fn json_uses_the_schema_field_names() {
    let enc = Encoder::new(Format::Json, registry());
    let ev = &sample_events()[0];
    let j: serde_json::Value = serde_json::from_slice(&enc.encode_event(ev).unwrap().unwrap()).unwrap();
    assert_eq!(j["kind"], "add_to_cart");
    assert_eq!(j["time"], T.0);
    assert_eq!(j["geo"]["city"], "München");
    assert_eq!(j["channel"], "app");
    let nbo: serde_json::Value =
        serde_json::from_slice(&enc.encode_next_best_offer(&next_best_offer()).unwrap()).unwrap();
    assert_eq!(nbo["scores"]["propensity"], 0.06);
    assert_eq!(nbo["cause"]["kind"], "event");
}

#[test]
fn hand_written_json_with_defaults_and_avro_json_unions_decodes() {
    let dec = Decoder::new(Format::Json, registry());
    let v = br#"{"time": 1700000000123, "kind": "search", "search_query": {"string": "tofu"}, "extra": 1}"#;
    let ev = dec.decode(cohort_codec::InputKind::Click, &record(Some(b"c1"), Some(v))).unwrap();
    assert_eq!(ev.customer, "c1");
    assert_eq!(ev.id, "clickstream:3:42");
    match ev.kind {
        cohort_core::event::EventKind::Click(c) => {
            assert_eq!(c.search_query.as_deref(), Some("tofu"));
            assert_eq!(c.price, None);
        }
        other => panic!("{other:?}"),
    }
}

/// Our binary encoding is plain Avro: apache-avro reads what we write and
/// we read what it writes, for every schema.
#[test]
fn avro_bytes_interoperate_with_apache_avro() {
    use apache_avro::{from_avro_datum, to_avro_datum, Schema};
    let reg = registry();
    let enc = Encoder::new(Format::Avro, reg.clone());
    let dec = Decoder::new(Format::Avro, reg);
    let mut cases: Vec<(RecordType, Vec<u8>)> = sample_events()
        .iter()
        .map(|e| {
            let rt = kind_of(e).record_type();
            (rt, enc.encode_event(e).unwrap().unwrap())
        })
        .collect();
    cases.push((RecordType::SegmentChanged, enc.encode_segment_changed(&segment_changed()).unwrap()));
    cases.push((RecordType::NextBestOffer, enc.encode_next_best_offer(&next_best_offer()).unwrap()));
    cases.push((RecordType::NextBestOffer, enc.encode_next_best_offer(&held_out_offer()).unwrap()));
    for (rt, bytes) in cases {
        let schema = Schema::parse_str(rt.schema_text()).unwrap();
        let value = from_avro_datum(&schema, &mut &bytes[..], None).expect("apache-avro reads our bytes");
        let theirs = to_avro_datum(&schema, value).expect("apache-avro writes it back");
        assert_eq!(theirs, bytes, "{rt:?}: identical bytes");
    }
    // And a datum written by apache-avro from scratch decodes.
    let schema = Schema::parse_str(RecordType::OfferOutcome.schema_text()).unwrap();
    use apache_avro::types::Value;
    let v = Value::Record(vec![
        ("id".into(), Value::Union(0, Box::new(Value::Null))),
        ("customer".into(), Value::Union(1, Box::new(Value::String("c9".into())))),
        ("time".into(), Value::TimestampMillis(T.0)),
        ("offer_id".into(), Value::String("o".into())),
        ("decision_id".into(), Value::String("d".into())),
        ("outcome".into(), Value::Enum(1, "opened".into())),
        ("channel".into(), Value::Union(1, Box::new(Value::Enum(4, "push".into())))),
    ]);
    let bytes = to_avro_datum(&schema, v).unwrap();
    let ev = dec.decode(cohort_codec::InputKind::OfferOutcome, &record(None, Some(&bytes))).unwrap();
    assert_eq!(ev.customer, "c9");
    match ev.kind {
        cohort_core::event::EventKind::OfferOutcome(o) => {
            assert_eq!(o.outcome, cohort_core::event::Outcome::Opened);
            assert_eq!(o.channel, Some(cohort_core::event::Channel::Push));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn engine_outputs_encode_and_forgotten_is_a_tombstone() {
    use cohort_core::engine::{Forgotten, Output};
    let enc = Encoder::new(Format::Avro, registry());
    let dec = Decoder::new(Format::Avro, registry());
    let bytes = enc.encode_output(&Output::SegmentChanged(segment_changed())).unwrap().unwrap();
    assert_eq!(dec.decode_segment_changed(&bytes).unwrap(), segment_changed());
    let bytes = enc.encode_output(&Output::NextBestOffer(next_best_offer())).unwrap().unwrap();
    assert_eq!(dec.decode_next_best_offer(&bytes).unwrap(), next_best_offer());
    let forgotten = Output::Forgotten(Forgotten { id: "f-1".into(), customer: "cust-7".into(), time: T });
    assert_eq!(enc.encode_output(&forgotten).unwrap(), None);
}

/// Found by `fuzz/fuzz_targets/json_decode.rs`: serde_json's default float
/// parser is not always correctly rounded, so a double that cohort wrote as
/// JSON (the shortest digits that identify it) could read back one ulp off.
#[test]
fn json_doubles_read_back_exactly() {
    let reg = registry();
    let enc = Encoder::new(Format::Json, reg.clone());
    let dec = Decoder::new(Format::Json, reg.clone());

    // The minimised fuzz input (without its selector byte).
    let input = br#"{"cause":{"ev_id":"","kind":"event","trgf":"s"},"chonnel":null,"customer":"cu","holdout":true,"our":"w2","id":"nbo1","er":null,"products":[],"rules_version":"1-0ff00f","scores":{"context_weight":1.0,"lever":1.8,"propensity":5.06,"total":1.2,"value":2092372036854775807.0},"time":170}"#;
    let decoded = dec.decode_next_best_offer(input).expect("decodes");
    assert_eq!(decoded.scores.value, 2_092_372_036_854_775_807.0);
    let bytes = enc.encode_next_best_offer(&decoded).expect("encodes");
    assert_eq!(dec.decode_next_best_offer(&bytes).expect("decodes again"), decoded);

    // The same double as JSON digits, in an input record.
    let click = br#"{"id":"e-1","customer":"cust-7","time":1,"kind":"page_view","price":2.0923720368547758e18}"#;
    let ev = dec.decode(cohort_codec::InputKind::Click, &record(None, Some(click)));
    match ev.expect("decodes").kind {
        cohort_core::event::EventKind::Click(c) => {
            assert_eq!(c.price, Some("2.0923720368547758e18".parse::<f64>().unwrap()))
        }
        other => panic!("not a click: {other:?}"),
    }
}
