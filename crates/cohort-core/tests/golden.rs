//! Golden scenarios: every `tests/golden/*.yaml` except `rules.yaml` is a
//! story (events at instants, clock advances) and the exact outputs the
//! engine must produce, one line per output.
//!
//! Scenario format:
//!
//! ```yaml
//! description: what the story shows
//! rules: rules.yaml                 # relative to tests/golden
//! start: 2024-03-04T09:00:00Z       # instants below are relative to it ("+1h30m") or absolute
//! lateness: 1d                      # optional: the partition's allowed lateness (default 0)
//! popular:                          # optional: seed the partition's popularity table
//!   - { product: kb-1, category: keto, orders: 5 }
//! steps:
//!   - at: +0s
//!     customer: c1                  # default c1
//!     click: { kind: add_to_cart, product: kb-1, category: keto, price: 24.5 }
//!   - at: +2h
//!     purchase: { total: 24.5, items: [{ product: kb-1, category: keto, quantity: 1, unit_price: 24.5 }] }
//!   - at: +3h
//!     profile: { birth_date: 1990-03-15, country: DE, region: Bavaria, consent: { email: true } }
//!   - at: +4h
//!     outcome: { offer: winback_20, outcome: converted }   # answers the customer's last decision
//!   - at: +5h
//!     forget: true
//!   - at: +6h
//!     id: e-1                       # optional: the event id (default <customer>-e<step>)
//!     click: { kind: page_view }
//!   - advance: +91d                 # fire every timer due up to then, in order
//! expect:
//!   - c1 +1h segments +cart_abandoner (timer)
//!   - c1 +1h offer cart_reminder_10 via email products [kb-2] (timer cart_abandoned)
//!   - c1 +2h holdout winback_20 (event segment_entered:lapsed)
//!   - c1 +6h rejected duplicate_event_id   # an event the partition refused
//! ```
//!
//! The scenario runs through the worker's partition step
//! (`cohort_core::partition`), one event per batch, with zero lateness
//! unless `lateness` says otherwise: before each event, timers due at or
//! before its instant minus the lateness fire, earliest first, then the
//! event's own customer's timers due at or before its instant. Each state
//! written is also checked to survive an encode / decode roundtrip, and no
//! two outputs of a scenario may share an id. On a mismatch the test prints
//! the actual lines.

use cohort_core::encode::decode;
use cohort_core::engine::{CauseKind, Engine, EngineSettings, Output, Tables};
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, Date, Event, EventKind, Geo, LineItem, OfferOutcome, Outcome,
    ProfileUpdate, Purchase,
};
use cohort_core::partition::{InMemory, PartitionMeta, PartitionTask, TaskSettings};
use cohort_core::rules::RuleSet;
use cohort_core::time::{timestamp_of_date, Duration, Timestamp};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    rules: String,
    start: String,
    lateness: Option<String>,
    #[serde(default)]
    popular: Vec<Popular>,
    steps: Vec<Step>,
    expect: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Popular {
    product: String,
    category: String,
    orders: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: Option<String>,
    advance: Option<String>,
    customer: Option<String>,
    id: Option<String>,
    click: Option<ClickSpec>,
    purchase: Option<PurchaseSpec>,
    profile: Option<ProfileSpec>,
    outcome: Option<OutcomeSpec>,
    forget: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClickSpec {
    kind: String,
    product: Option<String>,
    category: Option<String>,
    price: Option<f64>,
    quantity: Option<i32>,
    country: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseSpec {
    total: f64,
    #[serde(default)]
    items: Vec<ItemSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemSpec {
    product: String,
    category: Option<String>,
    quantity: i32,
    unit_price: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConsentSpec {
    email: Option<bool>,
    sms: Option<bool>,
    push: Option<bool>,
    web: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSpec {
    birth_date: Option<String>,
    age: Option<u32>,
    gender: Option<String>,
    country: Option<String>,
    region: Option<String>,
    city: Option<String>,
    interests: Option<Vec<String>>,
    consent: Option<ConsentSpec>,
    loyalty_tier: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeSpec {
    offer: String,
    outcome: String,
}

/// `+1d2h30m`, `-5m`, or `2024-03-04T09:00:00Z`.
fn instant(spec: &str, start: Timestamp) -> Timestamp {
    let spec = spec.trim();
    if let Some(rest) = spec.strip_prefix('+') {
        return Timestamp(start.as_millis() + duration_ms(rest));
    }
    if let Some(rest) = spec.strip_prefix('-') {
        return Timestamp(start.as_millis() - duration_ms(rest));
    }
    absolute(spec)
}

fn duration_ms(s: &str) -> i64 {
    let mut total = 0i64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            1
        } else {
            match c {
                'w' => 7 * 86_400_000,
                'd' => 86_400_000,
                'h' => 3_600_000,
                'm' => 60_000,
                's' => 1_000,
                _ => panic!("bad duration `{s}`"),
            }
        };
        total += num.parse::<i64>().unwrap_or_else(|_| panic!("bad duration `{s}`")) * unit;
        num.clear();
    }
    assert!(num.is_empty(), "duration `{s}` lacks a unit");
    total
}

fn absolute(s: &str) -> Timestamp {
    // YYYY-MM-DDTHH:MM:SSZ
    let p = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap_or_else(|_| panic!("bad instant `{s}`"));
    let day = timestamp_of_date(p(0, 4) as i32, p(5, 7) as u8, p(8, 10) as u8);
    Timestamp(day.as_millis() + p(11, 13) * 3_600_000 + p(14, 16) * 60_000 + p(17, 19) * 1_000)
}

fn date(s: &str) -> Date {
    let p = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap_or_else(|_| panic!("bad date `{s}`"));
    Date { year: p(0, 4) as i32, month: p(5, 7) as u8, day: p(8, 10) as u8 }
}

fn rel(t: Timestamp, start: Timestamp) -> String {
    let mut ms = t.as_millis() - start.as_millis();
    let sign = if ms < 0 { "-" } else { "+" };
    ms = ms.abs();
    if ms == 0 {
        return "+0s".into();
    }
    let mut out = String::from(sign);
    for (unit, len) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

fn click_kind(s: &str) -> ClickKind {
    match s {
        "page_view" => ClickKind::PageView,
        "product_view" => ClickKind::ProductView,
        "search" => ClickKind::Search,
        "add_to_cart" => ClickKind::AddToCart,
        "remove_from_cart" => ClickKind::RemoveFromCart,
        "checkout_started" => ClickKind::CheckoutStarted,
        other => panic!("unknown click kind `{other}`"),
    }
}

fn outcome(s: &str) -> Outcome {
    Outcome::ALL.into_iter().find(|o| o.as_str() == s).unwrap_or_else(|| panic!("unknown outcome `{s}`"))
}

fn render(o: &Output, start: Timestamp) -> String {
    let cause = |kind: CauseKind, trigger: &Option<String>| {
        let k = match kind {
            CauseKind::Event => "event",
            CauseKind::Timer => "timer",
            CauseKind::RulesChanged => "rules_changed",
        };
        match trigger {
            Some(t) => format!("({k} {t})"),
            None => format!("({k})"),
        }
    };
    match o {
        Output::SegmentChanged(s) => {
            let mut parts: Vec<String> = s.entered.iter().map(|x| format!("+{x}")).collect();
            parts.extend(s.exited.iter().map(|x| format!("-{x}")));
            format!(
                "{} {} segments {} {}",
                s.customer,
                rel(s.time, start),
                parts.join(" "),
                cause(s.cause.kind, &s.cause.trigger)
            )
        }
        Output::NextBestOffer(n) => {
            if n.holdout {
                format!(
                    "{} {} holdout {} {}",
                    n.customer,
                    rel(n.time, start),
                    n.holdout_offer.as_deref().unwrap_or("?"),
                    cause(n.cause.kind, &n.cause.trigger)
                )
            } else {
                format!(
                    "{} {} offer {} via {} products [{}] {}",
                    n.customer,
                    rel(n.time, start),
                    n.offer.as_deref().unwrap_or("?"),
                    n.channel.map_or("?", Channel::as_str),
                    n.products.join(", "),
                    cause(n.cause.kind, &n.cause.trigger)
                )
            }
        }
        Output::Forgotten(f) => format!("{} {} forgotten", f.customer, rel(f.time, start)),
    }
}

/// A scenario's partition, driven through the worker's own partition step
/// (`cohort_core::partition`), with zero lateness: before each event, every
/// timer due at or before its instant fires.
struct World {
    engine: Engine,
    partition: InMemory,
    last_decision: BTreeMap<String, String>,
    lines: Vec<String>,
    ids: HashSet<String>,
    start: Timestamp,
}

impl World {
    /// One step of the partition: `events` at `now` (an `advance` is a step
    /// without events whose wall clock carries the watermark to `now`).
    fn step(&mut self, events: &[Event], now: Timestamp) {
        let out = self.partition.step(&self.engine, events, now, events.is_empty());
        for w in &out.writes {
            if let Some(bytes) = &w.bytes {
                assert_eq!(
                    decode(bytes).as_ref(),
                    Ok(&self.partition.states[&w.customer]),
                    "state must survive an encoding roundtrip"
                );
            }
        }
        for d in &out.outputs {
            let o = &d.output;
            assert!(self.ids.insert(o.id().to_owned()), "duplicate output id {}", o.id());
            if let Output::NextBestOffer(n) = o {
                self.last_decision.insert(n.customer.clone(), n.id.clone());
            }
            self.lines.push(render(o, self.start));
        }
        for (i, r) in &out.rejected {
            let e = &events[*i];
            self.lines.push(format!("{} {} rejected {}", e.customer, rel(e.time, self.start), r.reason));
        }
    }
}

fn run_scenario(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sc: Scenario = marked_yaml::from_yaml(0, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    let rules_path = path.with_file_name(&sc.rules);
    let rules_text = std::fs::read_to_string(&rules_path).map_err(|e| format!("{}: {e}", rules_path.display()))?;
    let rules = RuleSet::from_yaml(&sc.rules, &rules_text).map_err(|e| e.to_string())?;
    let start = absolute(&sc.start);
    let mut tables = Tables::default();
    for (i, p) in sc.popular.iter().enumerate() {
        for k in 0..p.orders {
            tables.popularity.record(&Purchase {
                order_id: format!("seed-{i}-{k}"),
                items: vec![LineItem {
                    product_id: p.product.clone(),
                    category: Some(p.category.clone()),
                    quantity: 1,
                    unit_price: 1.0,
                }],
                total: 1.0,
                currency: "EUR".into(),
                channel: None,
            });
        }
    }
    let lateness = sc.lateness.as_deref().map_or(Duration::ZERO, |l| Duration::from_millis(duration_ms(l)));
    let settings = TaskSettings { allowed_lateness: lateness, max_future_skew: Duration::ZERO };
    let task = PartitionTask::new(0, PartitionMeta { tables, ..PartitionMeta::default() }, [], settings);
    let mut w = World {
        engine: Engine::new(rules, EngineSettings::default()),
        partition: InMemory::new(task),
        last_decision: BTreeMap::new(),
        lines: Vec::new(),
        ids: HashSet::new(),
        start,
    };
    for (i, step) in sc.steps.iter().enumerate() {
        if let Some(a) = &step.advance {
            w.step(&[], instant(a, start));
            continue;
        }
        let at = instant(step.at.as_deref().ok_or_else(|| format!("step {i} has neither `at` nor `advance`"))?, start);
        let customer = step.customer.clone().unwrap_or_else(|| "c1".into());
        let kind = if let Some(c) = &step.click {
            let mut k = Click::new(click_kind(&c.kind));
            k.product_id = c.product.clone();
            k.category = c.category.clone();
            k.price = c.price;
            k.quantity = c.quantity;
            k.channel = Some(Channel::Web);
            k.geo = Geo { country: c.country.clone(), region: c.region.clone(), city: None };
            EventKind::Click(k)
        } else if let Some(p) = &step.purchase {
            EventKind::Purchase(Purchase {
                order_id: format!("order-{i}"),
                items: p
                    .items
                    .iter()
                    .map(|it| LineItem {
                        product_id: it.product.clone(),
                        category: it.category.clone(),
                        quantity: it.quantity,
                        unit_price: it.unit_price,
                    })
                    .collect(),
                total: p.total,
                currency: "EUR".into(),
                channel: Some(Channel::Web),
            })
        } else if let Some(p) = &step.profile {
            let c = p.consent.as_ref();
            EventKind::ProfileUpdate(ProfileUpdate {
                birth_date: p.birth_date.as_deref().map(date),
                age: p.age,
                gender: p.gender.clone(),
                income_band: None,
                education: None,
                country: p.country.clone(),
                region: p.region.clone(),
                city: p.city.clone(),
                interests: p.interests.clone(),
                consent: ConsentUpdate {
                    email: c.and_then(|c| c.email),
                    sms: c.and_then(|c| c.sms),
                    push: c.and_then(|c| c.push),
                    web: c.and_then(|c| c.web),
                },
                loyalty_tier: p.loyalty_tier.clone(),
            })
        } else if let Some(o) = &step.outcome {
            EventKind::OfferOutcome(OfferOutcome {
                offer_id: o.offer.clone(),
                decision_id: w.last_decision.get(&customer).cloned().unwrap_or_default(),
                outcome: outcome(&o.outcome),
                channel: None,
            })
        } else if step.forget == Some(true) {
            EventKind::Forget
        } else {
            return Err(format!("step {i} has no event"));
        };
        let id = step.id.clone().unwrap_or_else(|| format!("{customer}-e{i}"));
        let ev = Event { id, customer: customer.clone(), time: at, kind };
        ev.validate(at).map_err(|e| format!("step {i}: invalid event: {e}"))?;
        w.step(&[ev], at);
    }
    if w.lines != sc.expect {
        let mut msg = format!("{}: {}\n--- expected\n", path.display(), sc.description);
        for l in &sc.expect {
            msg.push_str(&format!("  - {l}\n"));
        }
        msg.push_str("--- actual\n");
        for l in &w.lines {
            msg.push_str(&format!("  - {l}\n"));
        }
        return Err(msg);
    }
    Ok(())
}

#[test]
fn golden_scenarios() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rules")))
        .collect();
    files.sort();
    let failures: Vec<String> = files.iter().filter_map(|f| run_scenario(f).err()).collect();
    assert!(failures.is_empty(), "{} of {} scenarios failed:\n{}", failures.len(), files.len(), failures.join("\n"));
    assert!(files.len() >= 10, "expected at least 10 golden scenarios, found {}", files.len());
}
