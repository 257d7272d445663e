//! Bad input never stops a partition: every kind of bad record lands in the
//! dead-letter topic with its original key, value and headers and the reason
//! in a header, while the good events around it are processed.

mod common;

use cohort_codec::Format;
use cohort_core::event::{Click, ClickKind, ConsentUpdate, Event, EventKind, LineItem, ProfileUpdate, Purchase};
use cohort_core::time::Timestamp;
use cohort_e2e::{Record, TestBroker};
use common::Deployment;
use std::collections::BTreeMap;
use std::time::Duration;

const RULES: &str = include_str!("../../../deploy/rules.yaml");
/// 2026-03-02T09:00:00Z.
const T0: i64 = 1_772_442_000_000;

fn good_profile(customer: &str, minute: i64) -> Event {
    Event {
        id: format!("good-{customer}"),
        customer: customer.into(),
        time: Timestamp(T0 + minute * 60_000),
        kind: EventKind::ProfileUpdate(ProfileUpdate {
            consent: ConsentUpdate { email: Some(true), ..Default::default() },
            ..Default::default()
        }),
    }
}

fn click(id: &str, customer: &str, time: i64, price: f64, quantity: i32) -> Event {
    let mut c = Click::new(ClickKind::AddToCart);
    c.product_id = Some("kb-1".into());
    c.category = Some("keto".into());
    c.price = Some(price);
    c.quantity = Some(quantity);
    Event { id: id.into(), customer: customer.into(), time: Timestamp(time), kind: EventKind::Click(c) }
}

/// An order of one line at `unit_price` for a positive total.
fn purchase(id: &str, customer: &str, product_id: &str, unit_price: f64) -> Event {
    Event {
        id: id.into(),
        customer: customer.into(),
        time: Timestamp(T0),
        kind: EventKind::Purchase(Purchase {
            order_id: format!("o-{id}"),
            items: vec![LineItem {
                product_id: product_id.into(),
                category: Some("keto".into()),
                quantity: 2,
                unit_price,
            }],
            total: 10.0,
            currency: "EUR".into(),
            channel: None,
        }),
    }
}

fn reasons(dlq: &[Record]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in dlq {
        let reason = String::from_utf8_lossy(r.header("cohort.dlq.reason").expect("reason header")).to_string();
        *m.entry(reason).or_insert(0) += 1;
    }
    m
}

fn customers_with_changes(changes: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = changes.iter().map(|r| r.key_str().to_string()).collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_json_input_is_dead_lettered_and_the_partition_keeps_flowing() {
    let broker = TestBroker::shared();
    let d = Deployment::new(broker.bootstrap(), 1, RULES, "max_record_bytes = 4096").await;
    let clicks = d.topic("clickstream");
    let far_future = 4_102_444_800_000; // 2100-01-01
    let before_2000 = 900_000_000_000; // 1998
    let dup = click("dup-1", "c-dup", T0, 5.0, 1);
    // (expected reason, key, value)
    let bad: Vec<(&str, common::RawRecord)> = vec![
        ("invalid_json", (b"c-bad".to_vec(), Some(b"{not json".to_vec()))),
        ("missing_customer_id", (Vec::new(), d.encode(&click("nokey", "", T0, 1.0, 1)))),
        ("time_in_future", (b"c-bad".to_vec(), d.encode(&click("future", "c-bad", far_future, 1.0, 1)))),
        ("time_too_old", (b"c-bad".to_vec(), d.encode(&click("old", "c-bad", before_2000, 1.0, 1)))),
        ("negative_value", (b"c-bad".to_vec(), d.encode(&click("neg-price", "c-bad", T0, -3.0, 1)))),
        ("negative_value", (b"c-bad".to_vec(), d.encode(&click("neg-qty", "c-bad", T0, 3.0, -2)))),
        ("oversized", (b"c-bad".to_vec(), Some(vec![b' '; 10_000]))),
        ("duplicate_event_id", (b"c-dup".to_vec(), d.encode(&dup))),
    ];
    // On the purchases topic: a negative line item with a positive total.
    let neg_line = purchase("neg-line", "c-bad", "kb-1", -5.0);
    // Accepted (docs/schemas.md, "Empty strings"): a line with a blank
    // product id, a profile with an empty country.
    let blank_product = purchase("blank-product", "c-blank-product", " ", 5.0);
    let mut blank_country = good_profile("c-blank-country", 0);
    if let EventKind::ProfileUpdate(u) = &mut blank_country.kind {
        u.country = Some(String::new());
    }
    let mut worker = d.start_worker("worker");
    // A good event before, the bad ones (and the original of the duplicate), a good event after.
    d.produce(&[good_profile("c-before", 0)]).await;
    let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![(b"c-dup".to_vec(), d.encode(&dup))];
    records.extend(bad.iter().map(|(_, r)| r.clone()));
    d.produce_raw(&clicks, records).await;
    d.produce(&[neg_line.clone(), blank_product, blank_country]).await;
    d.produce(&[good_profile("c-after", 1)]).await;
    d.wait_caught_up(Duration::from_secs(90), &mut worker).await;

    let dlq = d.read("cohort-dlq", Duration::from_secs(60), |r| r.len() > bad.len()).await;
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for (reason, _) in &bad {
        *want.entry(reason.to_string()).or_insert(0) += 1;
    }
    *want.entry("negative_value".to_string()).or_insert(0) += 1;
    assert_eq!(reasons(&dlq), want, "one dead letter per bad record, with its reason");
    let (from_clicks, from_purchases): (Vec<&Record>, Vec<&Record>) =
        dlq.iter().partition(|r| r.header("cohort.dlq.topic") == Some(clicks.as_bytes()));
    assert_eq!(from_purchases.len(), 1, "only the negative line item's purchase is dead-lettered");
    assert_eq!(from_purchases[0].value, d.encode(&neg_line), "the original purchase is kept");
    assert_eq!(
        from_purchases[0].header("cohort.dlq.detail"),
        Some(&b"field `items.unit_price` is negative"[..]),
        "the detail names the field"
    );
    for (r, (_, (key, value))) in from_clicks.iter().zip(bad.iter()) {
        assert_eq!(r.key.clone().unwrap_or_default(), *key, "the original key is kept");
        assert_eq!(r.value, *value, "the original value is kept");
        assert_eq!(r.header(common::RAW_HEADER.0), Some(common::RAW_HEADER.1), "the original headers are kept");
        assert_eq!(r.header("cohort.dlq.topic"), Some(clicks.as_bytes()));
        assert!(r.header("cohort.dlq.offset").is_some() && r.header("cohort.dlq.detail").is_some());
    }
    let changes = d.read("segment-changes", Duration::from_secs(60), |r| customers_with_changes(r).len() >= 5).await;
    assert_eq!(
        customers_with_changes(&changes),
        ["c-after", "c-before", "c-blank-country", "c-blank-product", "c-dup"].map(String::from).to_vec(),
        "the good events before and after the bad ones are processed, blank product ids and countries included"
    );
    assert!(worker.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_avro_input_with_an_unknown_schema_id_or_bad_bytes_is_dead_lettered() {
    let broker = TestBroker::shared();
    let d = Deployment::with_format(broker.bootstrap(), 1, RULES, "", Format::ConfluentAvro).await;
    let clicks = d.topic("clickstream");
    let good = d.encode(&click("avro-good", "c-avro", T0, 9.0, 1)).expect("a click has a value");
    let mut unknown_id = good.clone();
    unknown_id[1..5].copy_from_slice(&999u32.to_be_bytes());
    let bad_magic = {
        let mut v = good.clone();
        v[0] = 7;
        v
    };
    let mut garbage = good[..5].to_vec();
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let mut worker = d.start_worker("worker");
    d.produce_raw(
        &clicks,
        vec![
            (b"c-x".to_vec(), Some(unknown_id.clone())),
            (b"c-x".to_vec(), Some(bad_magic.clone())),
            (b"c-x".to_vec(), Some(garbage.clone())),
            (b"c-avro".to_vec(), Some(good)),
        ],
    )
    .await;
    d.wait_caught_up(Duration::from_secs(90), &mut worker).await;
    let dlq = d.read("cohort-dlq", Duration::from_secs(60), |r| r.len() >= 3).await;
    let got: Vec<String> = dlq
        .iter()
        .map(|r| String::from_utf8_lossy(r.header("cohort.dlq.reason").unwrap_or_default()).to_string())
        .collect();
    assert_eq!(got, vec!["unknown_schema_id", "bad_magic_byte", "undecodable"]);
    assert_eq!(dlq[0].value.as_deref(), Some(unknown_id.as_slice()));
    let changes = d.read("segment-changes", Duration::from_secs(60), |r| !r.is_empty()).await;
    assert_eq!(changes[0].key_str(), "c-avro", "the good Avro click after the bad ones is processed");
    assert!(worker.terminate().success());
}
