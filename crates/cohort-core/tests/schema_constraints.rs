//! Every input field whose schema doc says "Must not be negative" or "Must
//! not be empty" is enforced: a field named here with a negative (or empty)
//! value fails `Event::validate` with that field and the documented reason.
//! The list of fields is read from the `doc`s in `schemas/`, so a constraint
//! added to a schema fails this test until it is enforced and listed below.

use cohort_core::event::{
    Click, ClickKind, Event, EventKind, LineItem, OfferOutcome, Outcome, ProfileUpdate, Purchase,
};
use cohort_core::time::Timestamp;
use serde_json::Value;
use std::collections::BTreeSet;

const NOW: Timestamp = Timestamp(1_700_000_000_000);
const INPUTS: [&str; 4] = ["ClickEvent", "PurchaseEvent", "CustomerProfile", "OfferOutcome"];

fn schema(name: &str) -> Value {
    let path = format!("{}/../../schemas/io.cohort.v1.{name}.avsc", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read schema")).expect("schema is JSON")
}

/// `(Record.path.to.field, doc)` of every field, nested records included
/// (an array of records contributes `items.<field>`, as the validation names it).
fn fields(prefix: &str, record: &Value, out: &mut Vec<(String, String)>) {
    for f in record["fields"].as_array().expect("fields") {
        let path = format!("{prefix}.{}", f["name"].as_str().expect("name"));
        out.push((path.clone(), f["doc"].as_str().unwrap_or_default().to_string()));
        let mut types = vec![&f["type"]];
        if let Some(union) = f["type"].as_array() {
            types = union.iter().collect();
        }
        for t in types {
            if t["type"] == "record" {
                fields(&path, t, out);
            }
            if t["type"] == "array" && t["items"]["type"] == "record" {
                fields(&path, &t["items"], out);
            }
        }
    }
}

fn event(kind: EventKind) -> Event {
    Event { id: "e".into(), customer: "c".into(), time: NOW, kind }
}

fn click(f: impl FnOnce(&mut Click)) -> Event {
    let mut c = Click::new(ClickKind::AddToCart);
    f(&mut c);
    event(EventKind::Click(c))
}

fn purchase(f: impl FnOnce(&mut Purchase)) -> Event {
    let mut p = Purchase {
        order_id: "o".into(),
        items: vec![LineItem { product_id: "p".into(), category: None, quantity: 1, unit_price: 2.0 }],
        total: 2.0,
        currency: "EUR".into(),
        channel: None,
    };
    f(&mut p);
    event(EventKind::Purchase(p))
}

#[test]
fn every_documented_non_negative_or_non_empty_field_is_validated() {
    let mut all = Vec::new();
    for name in INPUTS {
        fields(name, &schema(name), &mut all);
    }
    let constrained: BTreeSet<String> = all
        .iter()
        .filter(|(_, doc)| {
            doc.contains("not negative") || doc.contains("not be negative") || doc.contains("not be empty")
        })
        .map(|(path, _)| path.clone())
        .collect();

    // (schema field, an event breaking its constraint, the field the
    // rejection names, its reason). `None`: the type enforces it.
    let enforced: Vec<(&str, Option<Event>, &str, &str)> = vec![
        ("ClickEvent.price", Some(click(|c| c.price = Some(-1.0))), "price", "negative_value"),
        ("ClickEvent.quantity", Some(click(|c| c.quantity = Some(-1))), "quantity", "negative_value"),
        ("PurchaseEvent.order_id", Some(purchase(|p| p.order_id.clear())), "order_id", "empty_field"),
        (
            "PurchaseEvent.items.quantity",
            Some(purchase(|p| p.items[0].quantity = -1)),
            "items.quantity",
            "negative_value",
        ),
        (
            "PurchaseEvent.items.unit_price",
            // The case: a negative line with a positive total.
            Some(purchase(|p| p.items[0].unit_price = -2.0)),
            "items.unit_price",
            "negative_value",
        ),
        ("PurchaseEvent.total", Some(purchase(|p| p.total = -0.5)), "total", "negative_value"),
        (
            "OfferOutcome.offer_id",
            Some(event(EventKind::OfferOutcome(OfferOutcome {
                offer_id: String::new(),
                decision_id: "d".into(),
                outcome: Outcome::Clicked,
                channel: None,
            }))),
            "offer_id",
            "empty_field",
        ),
        // `ProfileUpdate::age` is a u32: the codec refuses a negative age as
        // `invalid_field` before an event exists (cohort-codec tests/errors.rs).
        ("CustomerProfile.age", None, "age", "invalid_field"),
    ];
    let listed: BTreeSet<String> = enforced.iter().map(|(path, ..)| path.to_string()).collect();
    assert_eq!(listed, constrained, "the fields the schema docs constrain are exactly those checked here");

    for (path, ev, field, reason) in enforced {
        let Some(ev) = ev else {
            let _: Option<u32> = ProfileUpdate::default().age;
            continue;
        };
        let err = ev.validate(NOW).expect_err(path);
        assert_eq!(err.reason(), reason, "{path}: {err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{path}: the detail names the field: {err}");
    }
}
