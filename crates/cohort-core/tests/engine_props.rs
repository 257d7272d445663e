//! Property tests for the engine: replays are deterministic, and timers
//! make evaluating only at events and timer instants exactly as good as
//! evaluating all the time.

use cohort_core::engine::{apply, customer_timer, Engine, EngineSettings, Input, Origin, Output, Tables};
use cohort_core::event::{Click, ClickKind, ConsentUpdate, Date, Event, EventKind, LineItem, ProfileUpdate, Purchase};
use cohort_core::partition::{InMemory, PartitionMeta, PartitionTask, TaskSettings};
use cohort_core::rules::RuleSet;
use cohort_core::state::CustomerState;
use cohort_core::time::{Duration, Timestamp, MS_PER_DAY};
use proptest::prelude::*;
use std::collections::BTreeMap;

const START: i64 = 1_709_542_800_000; // 2024-03-04T09:00:00Z
const HOUR: i64 = 3_600_000;
const CATS: [&str; 4] = ["keto", "vegan", "gluten-free", "snacks"];

/// Where the `i`th event of a test was read.
fn origin(i: usize) -> Origin<'static> {
    Origin { topic: "clickstream", partition: 0, offset: i as i64 }
}

fn engine() -> Engine {
    let text = include_str!("golden/rules.yaml");
    let rules = RuleSet::from_yaml("rules.yaml", text).expect("example rules load");
    Engine::new(rules, EngineSettings::default())
}

#[derive(Clone, Debug)]
enum Step {
    View(usize),
    Add(usize),
    Remove(usize),
    Buy(usize, u32),
    Profile(u8, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..CATS.len()).prop_map(Step::View),
        2 => (0..CATS.len()).prop_map(Step::Add),
        1 => (0..CATS.len()).prop_map(Step::Remove),
        2 => (0..CATS.len(), 100..80_000u32).prop_map(|(c, cents)| Step::Buy(c, cents)),
        1 => (1..13u8, any::<bool>()).prop_map(|(m, e)| Step::Profile(m, e)),
    ]
}

fn events(customer: &str, steps: &[(i64, Step)]) -> Vec<Event> {
    let mut t = START;
    steps
        .iter()
        .enumerate()
        .map(|(i, (gap, s))| {
            t += gap;
            let kind = match s {
                Step::View(c) => {
                    let mut k = Click::new(ClickKind::ProductView);
                    k.category = Some(CATS[*c].into());
                    k.product_id = Some(format!("p{c}"));
                    EventKind::Click(k)
                }
                Step::Add(c) => {
                    let mut k = Click::new(ClickKind::AddToCart);
                    k.category = Some(CATS[*c].into());
                    k.product_id = Some(format!("p{c}"));
                    k.price = Some(12.0);
                    EventKind::Click(k)
                }
                Step::Remove(c) => {
                    let mut k = Click::new(ClickKind::RemoveFromCart);
                    k.product_id = Some(format!("p{c}"));
                    EventKind::Click(k)
                }
                Step::Buy(c, cents) => EventKind::Purchase(Purchase {
                    order_id: format!("o{i}"),
                    items: vec![LineItem {
                        product_id: format!("p{c}"),
                        category: Some(CATS[*c].into()),
                        quantity: 1,
                        unit_price: f64::from(*cents) / 100.0,
                    }],
                    total: f64::from(*cents) / 100.0,
                    currency: "EUR".into(),
                    channel: None,
                }),
                Step::Profile(month, email) => EventKind::ProfileUpdate(ProfileUpdate {
                    birth_date: Some(Date { year: 1994, month: *month, day: 15 }),
                    country: Some("DE".into()),
                    region: Some("Bavaria".into()),
                    consent: ConsentUpdate { email: Some(*email), web: Some(true), ..Default::default() },
                    ..Default::default()
                }),
            };
            Event { id: format!("{customer}-{i}"), customer: customer.into(), time: Timestamp(t), kind }
        })
        .collect()
}

/// Runs events through the worker's own partition step (zero lateness, in
/// event-time order), then lets the clock pass `until`. Returns every output
/// and the final states.
fn run(engine: &Engine, evs: &[Event], until: Timestamp) -> (Vec<Output>, BTreeMap<String, CustomerState>) {
    let mut sorted = evs.to_vec();
    sorted.sort_by_key(|e| e.time);
    let settings = TaskSettings { allowed_lateness: Duration::ZERO, max_future_skew: Duration::ZERO };
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings));
    let mut outputs: Vec<Output> =
        m.step(engine, &sorted, until, false).outputs.into_iter().map(|d| d.output).collect();
    outputs.extend(m.step(engine, &[], until, true).outputs.into_iter().map(|d| d.output));
    (outputs, m.states)
}

/// Segment membership over time from SegmentChanged outputs: (instant, set).
fn history(outputs: &[Output]) -> Vec<(Timestamp, Vec<String>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::SegmentChanged(s) => Some((s.time, s.segments.clone())),
            _ => None,
        })
        .collect()
}

fn at(h: &[(Timestamp, Vec<String>)], t: Timestamp) -> Vec<String> {
    h.iter().take_while(|(x, _)| *x <= t).last().map(|(_, s)| s.clone()).unwrap_or_default()
}

/// Evaluates at every `step` from the first event to `until`, plus at each
/// event, ignoring the timers the engine asks for.
fn dense(engine: &Engine, evs: &[Event], until: Timestamp, step: i64) -> Vec<(Timestamp, Vec<String>)> {
    let tables = Tables::default();
    let mut st = CustomerState::default();
    let mut samples = Vec::new();
    let mut i = 0;
    let mut m = evs.first().map_or(START, |e| e.time.as_millis());
    while m <= until.as_millis() {
        while i < evs.len() && evs[i].time.as_millis() <= m {
            apply(&mut st, Input::Event(&evs[i], origin(i)), &tables.context(engine));
            i += 1;
        }
        apply(&mut st, Input::Timer { customer: "c", due: Timestamp(m) }, &tables.context(engine));
        samples.push((Timestamp(m), st.segments.iter().map(|s| s.segment.clone()).collect()));
        m += step;
    }
    samples
}

fn gaps(max: i64) -> impl Strategy<Value = i64> {
    prop_oneof![3 => 0..(30 * 60_000i64), 2 => 0..(6 * HOUR), 1 => 0..max]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Replaying the same inputs from the same starting state gives the same
    /// state and the same outputs with the same ids.
    #[test]
    fn replay_gives_same_state_and_ids(
        a in prop::collection::vec((gaps(20 * MS_PER_DAY), step()), 1..40),
        b in prop::collection::vec((gaps(20 * MS_PER_DAY), step()), 1..40),
    ) {
        let engine = engine();
        let mut evs = events("ana", &a);
        evs.extend(events("ben", &b));
        let until = Timestamp(START + 400 * MS_PER_DAY);
        let (out1, st1) = run(&engine, &evs, until);
        let (out2, st2) = run(&engine, &evs, until);
        prop_assert_eq!(&st1, &st2);
        prop_assert_eq!(&out1, &out2);
        let mut ids: Vec<&str> = out1.iter().map(Output::id).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), n, "output ids are unique");
        // The same event applied to the same state yields the same ids even
        // in isolation (ids depend on the input's identity only).
        let tables = Tables::default();
        let mut s1 = CustomerState::default();
        let mut s2 = CustomerState::default();
        let d1 = apply(&mut s1, Input::Event(&evs[0], origin(0)), &tables.context(&engine));
        let d2 = apply(&mut s2, Input::Event(&evs[0], origin(0)), &tables.context(&engine));
        prop_assert_eq!(d1.outputs, d2.outputs);
        // Applying it again is a duplicate and changes nothing.
        let before = s1.clone();
        let d3 = apply(&mut s1, Input::Event(&evs[0], origin(0)), &tables.context(&engine));
        prop_assert!(d3.duplicate && d3.outputs.is_empty());
        prop_assert_eq!(s1, before);
    }

    /// The timer recomputed from a stored state equals the one `apply`
    /// returned with it.
    #[test]
    fn customer_timer_equals_apply_timer(steps in prop::collection::vec((gaps(20 * MS_PER_DAY), step()), 1..40)) {
        let engine = engine();
        let evs = events("c", &steps);
        let tables = Tables::default();
        let ctx = tables.context(&engine);
        let mut st = CustomerState::default();
        for (i, e) in evs.iter().enumerate() {
            let d = apply(&mut st, Input::Event(e, origin(i)), &ctx);
            prop_assert_eq!(customer_timer(&st, &ctx), d.next_timer);
        }
    }

    /// Over months, sampled every hour: timers catch every flip (lapsed,
    /// new customer, windows, tiers, affinity decay, birthdays).
    #[test]
    fn timers_match_hourly_evaluation(steps in prop::collection::vec((gaps(25 * MS_PER_DAY), step()), 1..25)) {
        let engine = engine();
        let evs = events("c", &steps);
        let until = Timestamp(evs.last().map_or(START, |e| e.time.as_millis()) + 120 * MS_PER_DAY);
        let (out, _) = run(&engine, &evs, until);
        let sparse = history(&out);
        for (m, want) in dense(&engine, &evs, until, HOUR) {
            prop_assert_eq!(at(&sparse, m), want, "at {:?}", m);
        }
    }

    /// Over two days, sampled every minute: the hour-scale rules (cart
    /// abandonment) flip exactly when timers say.
    #[test]
    fn timers_match_minutely_evaluation(steps in prop::collection::vec((gaps(6 * HOUR), step()), 1..25)) {
        let engine = engine();
        let evs = events("c", &steps);
        let until = Timestamp(evs.last().map_or(START, |e| e.time.as_millis()) + 2 * HOUR);
        let (out, _) = run(&engine, &evs, until);
        let sparse = history(&out);
        for (m, want) in dense(&engine, &evs, until, 60_000) {
            prop_assert_eq!(at(&sparse, m), want, "at {:?}", m);
        }
    }
}
