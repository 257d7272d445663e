//! Decode and encode throughput per record.
//!
//! Run: `cargo bench -p cohort-codec --bench codec`
//! (figures in docs/benchmarks.md, section "cohort-codec").

use apache_avro::types::Value;
use cohort_codec::{
    Cause, CauseKind, Decoder, Encoder, Format, InputKind, NextBestOffer, OfferScores, Record, Registry, SegmentChanged,
};
use cohort_core::event::*;
use cohort_core::time::Timestamp;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

const T: Timestamp = Timestamp(1_700_000_000_123);

fn registry() -> Arc<Registry> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let ids = [
        (1u32, "io.cohort.v1.ClickEvent.avsc"),
        (2, "io.cohort.v1.PurchaseEvent.avsc"),
        (5, "io.cohort.v1.SegmentChanged.avsc"),
        (6, "io.cohort.v1.NextBestOffer.avsc"),
    ];
    let mut reg = Registry::load(&dir, ids).expect("registry");
    let old =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ClickEvent.r0.avsc"))
            .expect("fixture");
    reg.register(7, &old, "ClickEvent.r0.avsc").expect("old writer");
    Arc::new(reg)
}

/// A typical product view: the shape most of the click stream has.
fn click() -> Event {
    let mut c = Click::new(ClickKind::ProductView);
    c.product_id = Some("sku-004217".into());
    c.category = Some("snacks/keto".into());
    c.price = Some(4.99);
    c.page = Some("/p/sku-004217".into());
    c.channel = Some(Channel::Web);
    c.device = Some("mobile".into());
    c.session_id = Some("s-7f3a9c".into());
    Event { id: "evt-0000000001".into(), customer: "cust-0012345".into(), time: T, kind: EventKind::Click(c) }
}

fn purchase() -> Event {
    let items = (0..3)
        .map(|i| LineItem {
            product_id: format!("sku-00{i}217"),
            category: Some("snacks/keto".into()),
            quantity: 1 + i,
            unit_price: 4.99,
        })
        .collect();
    Event {
        id: "evt-0000000002".into(),
        customer: "cust-0012345".into(),
        time: T,
        kind: EventKind::Purchase(Purchase {
            order_id: "o-99812".into(),
            items,
            total: 29.94,
            currency: "EUR".into(),
            channel: Some(Channel::Web),
        }),
    }
}

fn rec<'a>(value: &'a [u8]) -> Record<'a> {
    Record {
        topic: "clickstream",
        partition: 0,
        offset: 1,
        timestamp: Some(T.0),
        key: Some(b"cust-0012345"),
        value: Some(value),
    }
}

fn bench_decode(c: &mut Criterion) {
    let reg = registry();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for format in [Format::Avro, Format::ConfluentAvro, Format::Json] {
        let enc = Encoder::new(format, reg.clone());
        let dec = Decoder::new(format, reg.clone());
        let bytes = enc.encode_event(&click()).unwrap().unwrap();
        g.bench_function(format!("click/{format}"), |b| {
            b.iter(|| dec.decode(InputKind::Click, &rec(black_box(&bytes))).unwrap())
        });
        let bytes = enc.encode_event(&purchase()).unwrap().unwrap();
        g.bench_function(format!("purchase_3_items/{format}"), |b| {
            b.iter(|| dec.decode(InputKind::Purchase, &rec(black_box(&bytes))).unwrap())
        });
    }
    // A click written with an older writer schema (id 7): full resolution.
    let writer = apache_avro::Schema::parse_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ClickEvent.r0.avsc"))
            .unwrap(),
    )
    .unwrap();
    let null = || Value::Union(0, Box::new(Value::Null));
    let s = |x: &str| Value::Union(1, Box::new(Value::String(x.into())));
    let datum = apache_avro::to_avro_datum(
        &writer,
        Value::Record(vec![
            ("id".into(), s("evt-0000000001")),
            ("customer".into(), s("cust-0012345")),
            ("time".into(), Value::TimestampMillis(T.0)),
            ("kind".into(), Value::Enum(1, "product_view".into())),
            ("product_id".into(), s("sku-004217")),
            ("category".into(), s("snacks/keto")),
            ("price".into(), Value::Union(1, Box::new(Value::Float(4.99)))),
            ("quantity".into(), null()),
            ("page".into(), s("/p/sku-004217")),
            ("search_query".into(), null()),
            ("channel".into(), Value::Union(1, Box::new(Value::Enum(0, "web".into())))),
            ("device".into(), s("mobile")),
        ]),
    )
    .unwrap();
    let mut framed = vec![0, 0, 0, 0, 7];
    framed.extend_from_slice(&datum);
    let dec = Decoder::new(Format::ConfluentAvro, reg.clone());
    g.bench_function("click_older_writer/confluent-avro", |b| {
        b.iter(|| dec.decode(InputKind::Click, &rec(black_box(&framed))).unwrap())
    });
    // For comparison: apache-avro's generic decode of the same click to a
    // `Value` (no mapping to core types).
    let schema = apache_avro::Schema::parse_str(cohort_codec::RecordType::ClickEvent.schema_text()).unwrap();
    let bytes = Encoder::new(Format::Avro, reg.clone()).encode_event(&click()).unwrap().unwrap();
    g.bench_function("click/apache-avro-from_avro_datum", |b| {
        b.iter(|| apache_avro::from_avro_datum(&schema, &mut black_box(&bytes[..]), None).unwrap())
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let reg = registry();
    let sc = SegmentChanged {
        id: "clickstream:0:1:sc".into(),
        customer: "cust-0012345".into(),
        time: T,
        entered: vec!["cart_abandoner".into()],
        exited: vec![],
        segments: vec!["cart_abandoner".into(), "keto".into(), "vip".into()],
        cause: Cause { kind: CauseKind::Timer, event_id: None, trigger: None },
        rules_version: "7".into(),
    };
    let nbo = NextBestOffer {
        id: "clickstream:0:1:nbo".into(),
        customer: "cust-0012345".into(),
        time: T,
        offer: Some("winback_20".into()),
        holdout_offer: None,
        channel: Some(Channel::Email),
        scores: OfferScores { propensity: 0.06, context_weight: 1.0, value: 20.0, lever: 1.0, total: 1.2 },
        products: (0..5).map(|i| format!("sku-00{i}217")).collect(),
        holdout: false,
        cause: Cause { kind: CauseKind::Event, event_id: Some("evt-1".into()), trigger: Some("cart_abandoned".into()) },
        rules_version: "7".into(),
    };
    let ev = click();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    for format in [Format::Avro, Format::ConfluentAvro, Format::Json] {
        let enc = Encoder::new(format, reg.clone());
        g.bench_function(format!("segment_changed/{format}"), |b| {
            b.iter_batched_ref(
                || Vec::with_capacity(256),
                |buf| enc.encode_segment_changed_into(black_box(&sc), buf).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("next_best_offer/{format}"), |b| {
            b.iter_batched_ref(
                || Vec::with_capacity(256),
                |buf| enc.encode_next_best_offer_into(black_box(&nbo), buf).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("click_event/{format}"), |b| b.iter(|| enc.encode_event(black_box(&ev)).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
