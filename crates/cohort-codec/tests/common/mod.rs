//! Sample records and registries shared by the integration tests.
#![allow(dead_code)]

use cohort_codec::{Cause, CauseKind, NextBestOffer, OfferScores, Record, Registry, SegmentChanged};
use cohort_core::event::*;
use cohort_core::time::Timestamp;
use std::path::PathBuf;
use std::sync::Arc;

pub const T: Timestamp = Timestamp(1_700_000_000_123);

pub fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Schema ids as a deployment would configure them.
pub const IDS: [(u32, &str); 6] = [
    (101, "io.cohort.v1.ClickEvent.avsc"),
    (102, "io.cohort.v1.PurchaseEvent.avsc"),
    (103, "io.cohort.v1.CustomerProfile.avsc"),
    (104, "io.cohort.v1.OfferOutcome.avsc"),
    (105, "io.cohort.v1.SegmentChanged.avsc"),
    (106, "io.cohort.v1.NextBestOffer.avsc"),
];

pub fn registry() -> Arc<Registry> {
    Arc::new(Registry::load(&schemas_dir(), IDS).expect("registry loads"))
}

pub fn record<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Record<'a> {
    Record { topic: "clickstream", partition: 3, offset: 42, timestamp: Some(T.0), key, value }
}

pub fn event(kind: EventKind) -> Event {
    Event { id: "ev-1".into(), customer: "cust-7".into(), time: T, kind }
}

pub fn full_click() -> Click {
    Click {
        kind: ClickKind::AddToCart,
        product_id: Some("sku-1".into()),
        category: Some("keto".into()),
        price: Some(12.5),
        quantity: Some(2),
        page: Some("/p/sku-1".into()),
        search_query: Some("almond flour".into()),
        channel: Some(Channel::App),
        device: Some("ios".into()),
        geo: Geo { country: Some("DE".into()), region: Some("BY".into()), city: Some("München".into()) },
        campaign: Some("spring".into()),
        session_id: Some("s-9".into()),
    }
}

/// One event of every input kind, with every optional field filled, plus
/// minimal ones with every optional field empty.
pub fn sample_events() -> Vec<Event> {
    vec![
        event(EventKind::Click(full_click())),
        event(EventKind::Click(Click::new(ClickKind::PageView))),
        event(EventKind::Purchase(Purchase {
            order_id: "o-1".into(),
            items: vec![
                LineItem { product_id: "sku-1".into(), category: Some("keto".into()), quantity: 2, unit_price: 12.5 },
                LineItem { product_id: "sku-2".into(), category: None, quantity: 1, unit_price: 0.99 },
            ],
            total: 25.99,
            currency: "EUR".into(),
            channel: Some(Channel::Web),
        })),
        event(EventKind::Purchase(Purchase {
            order_id: "o-2".into(),
            items: vec![],
            total: 10.0,
            currency: "USD".into(),
            channel: None,
        })),
        event(EventKind::ProfileUpdate(ProfileUpdate {
            birth_date: Some(Date { year: 1985, month: 7, day: 14 }),
            age: Some(40),
            gender: Some("f".into()),
            income_band: Some("high".into()),
            education: Some("master".into()),
            country: Some("NL".into()),
            region: Some("NH".into()),
            city: Some("Amsterdam".into()),
            interests: Some(vec!["running".into(), "keto".into()]),
            consent: ConsentUpdate { email: Some(true), sms: Some(false), push: None, web: Some(true) },
            loyalty_tier: Some("gold".into()),
        })),
        event(EventKind::ProfileUpdate(ProfileUpdate { interests: Some(vec![]), ..Default::default() })),
        event(EventKind::OfferOutcome(OfferOutcome {
            offer_id: "winback_20".into(),
            decision_id: "nbo-1".into(),
            outcome: Outcome::Converted,
            channel: Some(Channel::Email),
        })),
        event(EventKind::OfferOutcome(OfferOutcome {
            offer_id: "winback_20".into(),
            decision_id: "nbo-2".into(),
            outcome: Outcome::Dismissed,
            channel: None,
        })),
    ]
}

pub fn kind_of(e: &Event) -> cohort_codec::InputKind {
    match e.kind {
        EventKind::Click(_) => cohort_codec::InputKind::Click,
        EventKind::Purchase(_) => cohort_codec::InputKind::Purchase,
        EventKind::ProfileUpdate(_) | EventKind::Forget => cohort_codec::InputKind::Profile,
        EventKind::OfferOutcome(_) => cohort_codec::InputKind::OfferOutcome,
    }
}

pub fn segment_changed() -> SegmentChanged {
    SegmentChanged {
        id: "sc-clickstream:3:42".into(),
        customer: "cust-7".into(),
        time: T,
        entered: vec!["cart_abandoner".into()],
        exited: vec![],
        segments: vec!["cart_abandoner".into(), "vip".into()],
        cause: Cause { kind: CauseKind::Timer, event_id: None, trigger: Some("cart_abandoned".into()) },
        rules_version: "3".into(),
    }
}

pub fn next_best_offer() -> NextBestOffer {
    NextBestOffer {
        id: "nbo-1".into(),
        customer: "cust-7".into(),
        time: T,
        offer: Some("winback_20".into()),
        holdout_offer: None,
        channel: Some(Channel::Email),
        scores: OfferScores { propensity: 0.06, context_weight: 1.0, value: 20.0, lever: 1.0, total: 1.2 },
        products: vec!["sku-1".into(), "sku-3".into()],
        holdout: false,
        cause: Cause {
            kind: CauseKind::Event,
            event_id: Some("ev-1".into()),
            trigger: Some("segment_entered:lapsed".into()),
        },
        rules_version: "3".into(),
    }
}

/// A decision for a customer in the control group.
pub fn held_out_offer() -> NextBestOffer {
    NextBestOffer {
        offer: None,
        holdout_offer: Some("winback_20".into()),
        channel: None,
        products: vec![],
        holdout: true,
        ..next_best_offer()
    }
}
