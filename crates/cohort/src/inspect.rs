//! A customer as people read it: for `cohort inspect` and the admin API.
//! The stored state plus what the rules see at `now` (windowed counts,
//! decayed affinities) and the pending timers; with `explain`, every
//! segment's condition atom by atom and every offer's verdict
//! (`RuleSet::explain`).

use cohort_core::engine::Engine;
use cohort_core::rules::facts::{Facts, NumField, TimeField, Window};
use cohort_core::state::CustomerState;
use cohort_core::time::Timestamp;
use cohort_core::view::CustomerView;
use serde_json::{json, Map, Value};

fn window_name(w: Window) -> &'static str {
    match w {
        Window::D7 => "7d",
        Window::D30 => "30d",
        Window::D90 => "90d",
        Window::D365 => "365d",
        Window::Lifetime => "lifetime",
    }
}

fn ts(t: Option<Timestamp>) -> Value {
    t.map(|t| json!(t.as_millis())).unwrap_or(Value::Null)
}

/// The JSON document `cohort inspect` prints.
pub fn customer_json(
    customer: &str,
    partition: u32,
    state: &CustomerState,
    timers: &[Timestamp],
    engine: &Engine,
    now: Timestamp,
) -> Value {
    let view = CustomerView::at(state, engine.state_settings(), now);
    let mut windows = Map::new();
    for (name, f) in [
        ("orders", NumField::Orders as fn(Window) -> NumField),
        ("spend", NumField::Spend),
        ("page_views", NumField::PageViews),
        ("product_views", NumField::ProductViews),
        ("sessions", NumField::Sessions),
    ] {
        let mut m = Map::new();
        for w in Window::ALL {
            m.insert(window_name(w).into(), json!(view.number(f(w), now)));
        }
        windows.insert(name.into(), Value::Object(m));
    }
    let p = &state.profile;
    let affinities: Vec<Value> = state
        .affinities
        .ranked(now, engine.state_settings())
        .into_iter()
        .take(10)
        .map(|(c, a)| json!({"category": c, "affinity": (a * 1000.0).round() / 1000.0}))
        .collect();
    json!({
        "customer": customer,
        "partition": partition,
        "evaluated_at": ts(state.evaluated_at),
        "as_of": now.as_millis(),
        "segments": state.segments.iter().map(|m| json!({"segment": m.segment, "since": m.since.as_millis()})).collect::<Vec<_>>(),
        "profile": {
            "birth_date": p.birth_date.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)),
            "declared_age": p.declared_age,
            "gender": p.gender, "income_band": p.income_band, "education": p.education,
            "country": p.country, "region": p.region, "city": p.city,
            "interests": p.interests, "loyalty_tier": p.loyalty_tier,
            "consent": {"email": p.consent.email, "sms": p.consent.sms, "push": p.consent.push, "web": p.consent.web},
        },
        "activity": {
            "first_seen": ts(state.first_seen), "last_seen": ts(state.last_seen),
            "first_purchase": ts(view.instant(TimeField::FirstPurchase)),
            "last_purchase": ts(view.instant(TimeField::LastPurchase)),
            "aov": view.number(NumField::Aov, now),
        },
        "windows": windows,
        "cart": {
            "items": view.number(NumField::CartItems, now),
            "value": view.number(NumField::CartValue, now),
            "last_added": ts(view.instant(TimeField::CartLastAdded)),
        },
        "affinities": affinities,
        "offers": state.offers.iter().map(|o| json!({
            "offer": o.offer, "time": o.time.as_millis(), "channel": o.channel.as_str(), "holdout": o.holdout,
        })).collect::<Vec<_>>(),
        "timers": timers.iter().map(|t| t.as_millis()).collect::<Vec<_>>(),
        "next_flip": ts(engine.rules().next_flip(&view, now)),
    })
}

/// The customer's document from whichever partition of `store` holds it
/// ([`customer_json`]), with `"explain"` added when asked; `None` when no
/// partition has a state for it. `now`: the instant to read it at (a live
/// worker's clock); `None`: the partition's own time, its watermark or the
/// customer's last decision if later, which is where event time stands for
/// a worker without a live clock (a replay, a backfill).
pub fn lookup(
    store: &cohort_store::Store,
    engine: &Engine,
    customer: &str,
    now: Option<Timestamp>,
    explain: bool,
) -> anyhow::Result<Option<Value>> {
    let found = store.inspect(customer)?;
    let Some(first) = found.into_iter().find(|i| i.state.is_some()) else { return Ok(None) };
    let Some(bytes) = &first.state else { return Ok(None) };
    let state = cohort_core::encode::decode(bytes).map_err(|e| anyhow::anyhow!("decoding {customer}'s state: {e}"))?;
    let meta = store.partition_meta(first.partition)?.unwrap_or_default();
    let now = now.unwrap_or_else(|| meta.watermark.max(state.evaluated_at.unwrap_or(Timestamp::MIN)));
    let mut doc = customer_json(customer, first.partition, &state, &first.timers, engine, now);
    if explain {
        // Scores use the partition's learned propensities.
        doc["explain"] = explain_json(&state, engine, &meta.tables.propensity, now);
    }
    Ok(Some(doc))
}

/// Every segment's condition atom by atom, and every offer's verdict, at `now`.
pub fn explain_json(
    state: &CustomerState,
    engine: &Engine,
    propensity: &cohort_core::offer::Propensity,
    now: Timestamp,
) -> Value {
    let view = CustomerView::at(state, engine.state_settings(), now);
    let (segments, offers) = engine.rules().explain(&view, state, propensity, now);
    json!({
        "rules_version": engine.rules().version(),
        "as_of": now.as_millis(),
        "segments": segments,
        "offers": offers,
    })
}
