use super::*;
use crate::engine::EngineSettings;
use crate::event::{Click, ClickKind, LineItem, OfferOutcome, Outcome, Purchase};
use crate::rules::RuleSet;
use proptest::prelude::*;

const START: i64 = 1_709_542_800_000; // 2024-03-04T09:00:00Z
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
const CUSTOMERS: [&str; 4] = ["ana", "ben", "cem", "dia"];

fn engine() -> Engine {
    let rules = RuleSet::from_yaml("rules.yaml", include_str!("../../tests/golden/rules.yaml")).expect("rules");
    Engine::new(rules, EngineSettings::default())
}

fn settings() -> TaskSettings {
    TaskSettings { allowed_lateness: Duration::from_mins(5), max_future_skew: Duration::from_hours(1) }
}

#[derive(Clone, Debug)]
enum Kind {
    View(u8),
    Add(u8),
    Buy(u32),
    Outcome(bool),
    Forget,
    /// Sends the event `n` inputs back again (same id).
    Resend(usize),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (0..4u8).prop_map(Kind::View),
        3 => (0..4u8).prop_map(Kind::Add),
        2 => (100..50_000u32).prop_map(Kind::Buy),
        1 => any::<bool>().prop_map(Kind::Outcome),
        1 => Just(Kind::Forget),
        1 => (1..6usize).prop_map(Kind::Resend),
    ]
}

/// Time moves forward by `gap`, or back by up to 10 minutes (late events).
fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![5 => 0..(30 * MIN), 2 => 0..(3 * DAY), 1 => -(10 * MIN)..0]
}

fn events(spec: &[(usize, i64, Kind)]) -> Vec<Event> {
    let mut t = START;
    let mut out: Vec<Event> = Vec::new();
    for (i, (c, gap, k)) in spec.iter().enumerate() {
        t += gap;
        let customer = CUSTOMERS[*c].to_string();
        let kind = match k {
            Kind::Resend(back) => match out.len().checked_sub(*back).map(|j| out[j].clone()) {
                Some(e) => {
                    out.push(e);
                    continue;
                }
                None => EventKind::Click(Click::new(ClickKind::PageView)),
            },
            Kind::View(p) => {
                let mut k = Click::new(ClickKind::ProductView);
                k.product_id = Some(format!("p{p}"));
                k.category = Some(["keto", "vegan", "snacks", "gluten-free"][*p as usize].into());
                EventKind::Click(k)
            }
            Kind::Add(p) => {
                let mut k = Click::new(ClickKind::AddToCart);
                k.product_id = Some(format!("p{p}"));
                k.price = Some(12.0);
                EventKind::Click(k)
            }
            Kind::Buy(cents) => EventKind::Purchase(Purchase {
                order_id: format!("o{i}"),
                items: vec![LineItem {
                    product_id: format!("p{}", cents % 4),
                    category: Some("vegan".into()),
                    quantity: 1,
                    unit_price: f64::from(*cents) / 100.0,
                }],
                total: f64::from(*cents) / 100.0,
                currency: "EUR".into(),
                channel: None,
            }),
            Kind::Outcome(converted) => EventKind::OfferOutcome(OfferOutcome {
                offer_id: "winback_20".into(),
                decision_id: String::new(),
                outcome: if *converted { Outcome::Converted } else { Outcome::Dismissed },
                channel: None,
            }),
            Kind::Forget => EventKind::Forget,
        };
        out.push(Event { id: format!("{customer}-{i}"), customer, time: Timestamp(t), kind });
    }
    out
}

/// Runs `evs` in batches cut at `cuts` (indexes), then lets the wall clock
/// pass `until`; returns every output, the states, the metadata and the
/// rejected events' positions.
fn run(
    engine: &Engine,
    evs: &[Event],
    cuts: &[usize],
    until: Timestamp,
) -> (Vec<Decided>, BTreeMap<String, CustomerState>, PartitionMeta, Vec<usize>) {
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings()));
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (evs.len() + 1)).collect();
    bounds.extend([0, evs.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let (mut outputs, mut rejected) = (Vec::new(), Vec::new());
    for w in bounds.windows(2) {
        let out = m.step(engine, &evs[w[0]..w[1]], Timestamp(START), false);
        outputs.extend(out.outputs);
        rejected.extend(out.rejected.iter().map(|(tag, _)| w[0] + tag));
    }
    outputs.extend(m.step(engine, &[], until, true).outputs);
    (outputs, m.states, m.task.meta(), rejected)
}

fn count_populations(states: &BTreeMap<String, CustomerState>) -> BTreeMap<String, u64> {
    let mut n = BTreeMap::new();
    for s in states.values() {
        for m in &s.segments {
            *n.entry(m.segment.clone()).or_default() += 1;
        }
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any split of the same inputs into batches decides the same outputs
    /// (same ids, same order), the same states, tables, watermark and
    /// populations, and rejects the same duplicates; and the populations
    /// always equal a count over the states.
    #[test]
    fn batch_boundaries_change_nothing(
        spec in prop::collection::vec((0..CUSTOMERS.len(), gap(), kind()), 1..80),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let engine = engine();
        let evs = events(&spec);
        let until = Timestamp(START + 400 * DAY);
        let whole = run(&engine, &evs, &[], until);
        let split = run(&engine, &evs, &cuts, until);
        let one_by_one = run(&engine, &evs, &(0..evs.len()).collect::<Vec<_>>(), until);
        for other in [&split, &one_by_one] {
            prop_assert_eq!(&whole.0, &other.0);
            prop_assert_eq!(&whole.1, &other.1);
            prop_assert_eq!(&whole.2, &other.2);
            prop_assert_eq!(&whole.3, &other.3);
        }
        prop_assert_eq!(&whole.2.populations, &count_populations(&whole.1));
    }
}

/// Runs `evs` whole up to `cut`, then "crashes": a new task is built from
/// the committed metadata, timers and states (what a restart or a restore
/// reads), and the rest is decided by it. Returns every output.
fn run_restored(engine: &Engine, evs: &[Event], cut: usize, until: Timestamp) -> Vec<Decided> {
    let cut = cut % (evs.len() + 1);
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings()));
    let mut outputs = m.step(engine, &evs[..cut], Timestamp(START), false).outputs;
    let timers = m.task.pending_timers();
    let mut restored = InMemory::new(PartitionTask::new(0, m.task.meta(), timers, settings()));
    restored.states = m.states.clone();
    outputs.extend(restored.step(engine, &evs[cut..], Timestamp(START), false).outputs);
    outputs.extend(restored.step(engine, &[], until, true).outputs);
    outputs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No two outputs ever share an id, over random traffic with forgets
    /// and event ids re-sent near and far (beyond the duplicate window),
    /// and a restart from the committed state at any point re-decides with
    /// the same ids.
    #[test]
    fn output_ids_are_unique_and_stable_across_restores(
        spec in prop::collection::vec((0..CUSTOMERS.len(), gap(), kind_with_far_resends()), 1..120),
        cut in any::<usize>(),
    ) {
        let engine = engine();
        let evs = events(&spec);
        let until = Timestamp(START + 400 * DAY);
        let (outputs, ..) = run(&engine, &evs, &[], until);
        let mut seen: BTreeMap<&str, &Output> = BTreeMap::new();
        for d in &outputs {
            if let Some(earlier) = seen.insert(d.output.id(), &d.output) {
                prop_assert!(false, "id {} shared by {:?} and {:?}", d.output.id(), earlier, d.output);
            }
        }
        let restored = run_restored(&engine, &evs, cut, until);
        prop_assert_eq!(&outputs, &restored);
    }
}

/// [`kind`], with re-sends up to 40 inputs back: far beyond a customer's
/// 16 remembered ids, so a re-sent id is decided again.
fn kind_with_far_resends() -> impl Strategy<Value = Kind> {
    prop_oneof![8 => kind(), 2 => (16..100usize).prop_map(Kind::Resend)]
}

#[test]
fn a_customers_own_due_timer_fires_before_its_event_whatever_the_watermark() {
    // Lateness 1 day: ben's click 2 h after ana's add leaves the watermark
    // before her cart's abandonment (1 h after the add). Ana's own click
    // 3 h after the add proves that her hour has passed: her timer fires
    // first, stamped with its due time and the cause `timer`, then her click.
    let engine = engine();
    let settings = TaskSettings { allowed_lateness: Duration::from_days(1), ..settings() };
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings));
    let mut add = Click::new(ClickKind::AddToCart);
    add.product_id = Some("p1".into());
    add.price = Some(10.0);
    let view = || EventKind::Click(Click::new(ClickKind::PageView));
    let evs = [
        Event { id: "a1".into(), customer: "ana".into(), time: Timestamp(START), kind: EventKind::Click(add) },
        Event { id: "b1".into(), customer: "ben".into(), time: Timestamp(START + 120 * MIN), kind: view() },
        Event { id: "a2".into(), customer: "ana".into(), time: Timestamp(START + 180 * MIN), kind: view() },
    ];
    let out = m.step(&engine, &evs, Timestamp(START), false);
    let ana: Vec<(crate::engine::CauseKind, Timestamp)> = out
        .outputs
        .iter()
        .filter_map(|d| match &d.output {
            Output::SegmentChanged(s) if s.customer == "ana" => Some((s.cause.kind, d.cause_time)),
            Output::NextBestOffer(n) if n.customer == "ana" => Some((n.cause.kind, d.cause_time)),
            _ => None,
        })
        .collect();
    let timer =
        ana.iter().position(|(k, t)| *k == crate::engine::CauseKind::Timer && *t == Timestamp(START + 60 * MIN));
    let last_event = ana.iter().rposition(|(k, _)| *k == crate::engine::CauseKind::Event);
    assert!(timer.is_some(), "ana's timer fired at its due time: {ana:?}");
    assert!(timer < last_event, "before her own click: {ana:?}");
    assert_eq!(out.timers_fired, 1);
    assert!(m.task.watermark() < Timestamp(START + 60 * MIN), "the watermark did not pass it");
}

#[test]
fn timers_due_before_an_event_fire_before_it() {
    // ana's cart is abandoned an hour after her add; ben's event two hours
    // later proves that hour has passed (lateness 0): ana's timer fires
    // first, stamped with its due time.
    let engine = engine();
    let settings = TaskSettings { allowed_lateness: Duration::ZERO, ..settings() };
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings));
    let mut add = Click::new(ClickKind::AddToCart);
    add.product_id = Some("p1".into());
    add.price = Some(10.0);
    let e1 = Event { id: "a1".into(), customer: "ana".into(), time: Timestamp(START), kind: EventKind::Click(add) };
    let e2 = Event {
        id: "b1".into(),
        customer: "ben".into(),
        time: Timestamp(START + 120 * MIN),
        kind: EventKind::Click(Click::new(ClickKind::PageView)),
    };
    let out = m.step(&engine, &[e1, e2], Timestamp(START), false);
    let who: Vec<(&str, Timestamp)> = out
        .outputs
        .iter()
        .map(|d| match &d.output {
            Output::SegmentChanged(s) => (s.customer.as_str(), d.cause_time),
            Output::NextBestOffer(n) => (n.customer.as_str(), d.cause_time),
            Output::Forgotten(f) => (f.customer.as_str(), d.cause_time),
        })
        .collect();
    let first_ben = who.iter().position(|(c, _)| *c == "ben").expect("ben decided");
    let ana_timer = who.iter().position(|(c, t)| *c == "ana" && *t == Timestamp(START + 60 * MIN));
    assert!(ana_timer.is_some_and(|i| i < first_ben), "ana's timer before ben's event: {who:?}");
    assert_eq!(out.timers_fired, 1);
}

#[test]
fn a_step_commits_offsets_watermark_and_populations_in_its_metadata() {
    let engine = engine();
    let mut task = PartitionTask::new(3, PartitionMeta::default(), [], settings());
    let mut states = BatchStates::default();
    let ev = Event {
        id: "a1".into(),
        customer: "ana".into(),
        time: Timestamp(START),
        kind: EventKind::Click(Click::new(ClickKind::PageView)),
    };
    states.insert("ana".into(), Box::default(), 0);
    let events = [(ev, 7)];
    let input = StepInput {
        events: &events,
        positions: &[("clickstream", 10)],
        next_offsets: &[("clickstream", 11)],
        now: Timestamp(START),
        live: false,
        reevaluate: None,
    };
    let out = task.step(&engine, input, &mut states);
    let meta = PartitionMeta::decode(out.meta.as_deref().expect("metadata written")).expect("decodes");
    assert_eq!(meta.next_offsets.get("clickstream"), Some(&11));
    assert_eq!(meta.watermark, Timestamp(START - 5 * MIN));
    assert_eq!(meta, task.meta());
    assert_eq!(out.writes.len(), 1);
    let s = states.get("ana").expect("kept");
    assert!(s.changed() && s.encoded_len() == out.writes[0].bytes.as_ref().map(Vec::len));
    for seg in &s.state.segments {
        assert_eq!(meta.populations.get(&seg.segment), Some(&1), "{}", seg.segment);
    }
    // Nothing new: nothing to commit.
    let input = StepInput {
        events: &[],
        positions: &[],
        next_offsets: &[("clickstream", 11)],
        now: Timestamp(START),
        live: false,
        reevaluate: None,
    };
    assert!(task.step(&engine, input, &mut BatchStates::default()).is_empty());
}

#[test]
fn admit_refuses_reserved_keys_and_invalid_events() {
    let mut ev = Event {
        id: "a1".into(),
        customer: "\u{0}cohort.partition/0".into(),
        time: Timestamp(START),
        kind: EventKind::Click(Click::new(ClickKind::PageView)),
    };
    assert_eq!(admit(&ev, Timestamp(START), &settings()).map_err(|r| r.reason), Err(reason::INVALID_KEY));
    ev.customer = "ana".into();
    assert_eq!(admit(&ev, Timestamp(START), &settings()), Ok(()));
    ev.time = Timestamp(START + 2 * 3_600_000);
    assert!(admit(&ev, Timestamp(START), &settings()).is_err(), "beyond the future skew");
}

/// The golden rules changed the way a marketer changes them: the VIP
/// threshold moved from 1000 to 100, `keto` (and its offer) removed, a
/// time-dependent segment `browsed` added.
fn engine_v2() -> Engine {
    let rules = RuleSet::from_yaml("rules-v2.yaml", &rules_v2()).expect("rules v2");
    Engine::new(rules, EngineSettings::default())
}

fn rules_v2() -> String {
    include_str!("../../tests/golden/rules.yaml")
        .replace("when: spend.365d >= 1000", "when: spend.365d >= 100")
        .replace("  - name: keto\n    when: affinity(\"keto\") >= 0.5\n", "")
        .replace(
            "  - id: keto_bundle\n    eligible: in_segment(\"keto\")\n",
            "  - id: keto_bundle\n    eligible: in_segment(\"vegan\")\n",
        )
        .replace("segments:\n", "segments:\n  - name: browsed\n    when: product_views.7d >= 1\n")
}

/// v2 with an offer that a rules change sends: to customers a switch puts
/// in `browsed` or `vip`.
fn engine_v3() -> Engine {
    let text = rules_v2()
        + "  - id: launch\n    eligible: in_segment(\"browsed\") || in_segment(\"vip\")\n    value: 4\n    \
           channels: [email, web]\n    triggers: [rules_changed]\n";
    let rules = RuleSet::from_yaml("rules-v3.yaml", &text).expect("rules v3");
    Engine::new(rules, EngineSettings::default())
}

/// Every customer consents to email at `START`, then `evs`: offers can be sent.
fn consenting(evs: Vec<Event>) -> Vec<Event> {
    let consent = crate::event::ConsentUpdate { email: Some(true), ..Default::default() };
    CUSTOMERS
        .iter()
        .map(|c| Event {
            id: format!("consent-{c}"),
            customer: c.to_string(),
            time: Timestamp(START),
            kind: EventKind::ProfileUpdate(crate::event::ProfileUpdate { consent, ..Default::default() }),
        })
        .chain(evs)
        .collect()
}

/// Runs `evs` under `v1` in one batch, switches to `v2`, and re-evaluates
/// in slices of `slice` customers; returns the re-evaluation's outputs and
/// the partition after it.
fn switched(v1: &Engine, v2: &Engine, evs: &[Event], slice: usize) -> (Vec<Decided>, InMemory) {
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings()));
    m.step(v1, evs, Timestamp(START), false);
    assert!(m.switch_rules(v2), "a partition with customers re-evaluates them");
    let mut outputs = Vec::new();
    while let Some(out) = m.reevaluate(v2, slice) {
        assert!(out.meta.is_some(), "every slice commits its progress");
        outputs.extend(out.outputs);
    }
    (outputs, m)
}

/// `later` as events after the last of `evs`: fresh ids, times moved on.
fn after_the_last(evs: &[Event], mut later: Vec<Event>) -> Vec<Event> {
    let last = evs.iter().map(|e| e.time.as_millis()).max().unwrap_or(START);
    for (i, e) in later.iter_mut().enumerate() {
        e.id = format!("later-{i}");
        e.time = Timestamp(e.time.as_millis() - START + last);
    }
    later
}

/// A switch from `v1` to `v` after `evs`, re-evaluated two ways: every
/// slice before the `later` events (`first`, ending as `a`); and one slice,
/// the events, a crash and a restart from the committed metadata, the rest
/// of the slices (`second`, ending as `restarted`). `resumed` is false if
/// the restart switched anew instead of resuming.
struct TwoWays {
    first: Vec<Decided>,
    a: InMemory,
    second: Vec<Decided>,
    restarted: InMemory,
    resumed: bool,
}

fn two_ways(v1: &Engine, v: &Engine, evs: &[Event], later: &[Event], slice: usize) -> TwoWays {
    let (mut first, mut a) = switched(v1, v, evs, usize::MAX);
    first.extend(a.step(v, later, Timestamp(START), false).outputs);
    let mut b = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings()));
    b.step(v1, evs, Timestamp(START), false);
    b.switch_rules(v);
    let mut second = b.reevaluate(v, slice).expect("pending").outputs;
    second.extend(b.step(v, later, Timestamp(START), false).outputs);
    let mut restarted = InMemory::new(PartitionTask::new(0, b.task.meta(), b.task.pending_timers(), settings()));
    restarted.states = b.states.clone();
    let resumed = !restarted.switch_rules(v) || restarted.task.reevaluation_after().is_some();
    while let Some(out) = restarted.reevaluate(v, slice) {
        second.extend(out.outputs);
    }
    TwoWays { first, a, second, restarted, resumed }
}

fn by_id(outputs: &[Decided]) -> BTreeMap<String, Output> {
    outputs.iter().map(|d| (d.output.id().to_owned(), d.output.clone())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A re-evaluation leaves every customer decided under the new rules,
    /// nobody in a removed segment, the populations equal to a count over
    /// the states, and emits only `rules_changed` segment changes (no
    /// offers); and how it is sliced changes nothing it emits or commits.
    #[test]
    fn a_rules_switch_reevaluates_everyone_whatever_the_slices(
        spec in prop::collection::vec((0..CUSTOMERS.len(), gap(), kind()), 1..60),
        slice in 1..5usize,
    ) {
        let (v1, v2) = (engine(), engine_v2());
        let evs = events(&spec);
        let (outputs, m) = switched(&v1, &v2, &evs, usize::MAX);
        let (sliced, m2) = switched(&v1, &v2, &evs, slice);
        prop_assert_eq!(by_id(&outputs), by_id(&sliced));
        prop_assert_eq!(&m.states, &m2.states);
        prop_assert_eq!(m.task.meta(), m2.task.meta());
        let at = m.task.meta().rules.expect("recorded").at;
        for (c, s) in &m.states {
            // Decided under v2: re-evaluating again changes nothing.
            let mut again = s.clone();
            let tables = Tables::default();
            let input = Input::RulesChanged { customer: c, at, switch: 2 };
            let d = crate::engine::apply(&mut again, input, &tables.context(&v2));
            prop_assert!(d.outputs.is_empty(), "{} re-evaluated again: {:?}", c, d.outputs);
            prop_assert!(s.segments.iter().all(|x| x.segment != "keto"));
        }
        prop_assert_eq!(&m.task.meta().populations, &count_populations(&m.states));
        prop_assert!(m.task.meta().rules.is_some_and(|r| r.after.is_none() && r.version == v2.rules().version()));
        for d in &outputs {
            match &d.output {
                Output::SegmentChanged(s) if s.cause.kind == crate::engine::CauseKind::RulesChanged => {
                    prop_assert_eq!(&s.rules_version, v2.rules().version());
                }
                // Only a new rules' timer that is already due may follow.
                Output::SegmentChanged(s) => prop_assert_eq!(s.cause.kind, crate::engine::CauseKind::Timer),
                Output::NextBestOffer(n) => prop_assert_eq!(n.cause.kind, crate::engine::CauseKind::Timer),
                Output::Forgotten(_) => prop_assert!(false, "a re-evaluation forgets nobody"),
            }
        }
    }

    /// Judging a slice's customers before the step (the worker loads only
    /// those a re-evaluation changes, already re-evaluated, with the
    /// judgement) emits, writes and commits exactly what a step that
    /// re-evaluates every customer itself does, offers on `rules_changed`
    /// included.
    #[test]
    fn a_slice_judged_before_the_step_decides_as_the_step_would(
        spec in prop::collection::vec((0..CUSTOMERS.len(), gap(), kind()), 1..60),
        slice in 1..5usize,
        offers in any::<bool>(),
    ) {
        let v1 = engine();
        let v = if offers { engine_v3() } else { engine_v2() };
        let evs = if offers { consenting(events(&spec)) } else { events(&spec) };
        let before = || {
            let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings()));
            m.step(&v1, &evs, Timestamp(START), false);
            m
        };
        let (mut plain, mut judged) = (before(), before());
        prop_assert_eq!(plain.switch_rules(&v), judged.switch_rules(&v));
        loop {
            let (a, b) = (plain.reevaluate(&v, slice), judged.reevaluate_judged(&v, slice));
            let (Some(a), Some(b)) = (a, b) else {
                prop_assert!(plain.task.reevaluation_after().is_none() && judged.task.reevaluation_after().is_none());
                break;
            };
            prop_assert_eq!(&a.outputs, &b.outputs);
            prop_assert_eq!(&a.writes, &b.writes);
            prop_assert_eq!((&a.timers_set, &a.timers_clear), (&b.timers_set, &b.timers_clear));
            prop_assert_eq!(&a.meta, &b.meta);
        }
        prop_assert_eq!(&plain.states, &judged.states);
    }

    /// Events that reach stale customers before the background slices do
    /// re-evaluate them first, from the same state at the same instant: the
    /// same re-evaluation outputs (id and content) and the same states as
    /// slices run before the events; and a crash mid-way resumes from the
    /// committed position with the same outputs.
    #[test]
    fn events_during_a_reevaluation_and_a_crash_change_nothing_it_emits(
        spec in prop::collection::vec((0..CUSTOMERS.len(), gap(), kind()), 2..60),
        after in prop::collection::vec((0..CUSTOMERS.len(), 0..(10 * MIN), (0..4u8).prop_map(Kind::View)), 1..8),
        slice in 1..3usize,
    ) {
        let (v1, v2) = (engine(), engine_v2());
        let evs = events(&spec);
        let later = after_the_last(&evs, events(&after));
        let TwoWays { first, a, second, restarted, resumed } = two_ways(&v1, &v2, &evs, &later, slice);
        prop_assert!(resumed);
        let (x, y) = (by_id(&first), by_id(&second));
        for (id, out) in &y {
            if let Output::SegmentChanged(s) = out {
                if s.cause.kind == crate::engine::CauseKind::RulesChanged {
                    prop_assert_eq!(Some(out), x.get(id), "re-evaluation {} differs", id);
                }
            }
        }
        let rules_changed = |m: &BTreeMap<String, Output>| {
            m.values()
                .filter(|o| matches!(o, Output::SegmentChanged(s) if s.cause.kind == crate::engine::CauseKind::RulesChanged))
                .count()
        };
        prop_assert_eq!(rules_changed(&x), rules_changed(&y));
        prop_assert_eq!(&a.states, &restarted.states);
    }

    /// Offers a rules change sends (the `rules_changed` trigger) are scored
    /// with the learned tables as they were at the switch: purchases and
    /// outcomes that move the tables between slices, and a crash, change
    /// no id and no content of what the re-evaluation emits.
    #[test]
    fn offers_on_a_rules_change_do_not_depend_on_where_slices_fall(
        spec in prop::collection::vec((0..CUSTOMERS.len(), gap(), kind()), 2..60),
        after in prop::collection::vec((0..CUSTOMERS.len(), 0..(10 * MIN), kind()), 1..12),
        slice in 1..3usize,
    ) {
        let (v1, v3) = (engine(), engine_v3());
        let evs = consenting(events(&spec));
        let mut later = after_the_last(&evs, events(&after));
        for e in &mut later {
            if let EventKind::OfferOutcome(o) = &mut e.kind {
                o.offer_id = "launch".into();
            }
        }
        let TwoWays { first, second, restarted, .. } = two_ways(&v1, &v3, &evs, &later, slice);
        let by_rules_change = |outputs: &[Decided]| -> BTreeMap<String, Output> {
            outputs
                .iter()
                .filter(|d| match &d.output {
                    Output::SegmentChanged(s) => s.cause.kind == crate::engine::CauseKind::RulesChanged,
                    Output::NextBestOffer(n) => n.cause.kind == crate::engine::CauseKind::RulesChanged,
                    Output::Forgotten(_) => false,
                })
                .map(|d| (d.output.id().to_owned(), d.output.clone()))
                .collect()
        };
        prop_assert_eq!(by_rules_change(&first), by_rules_change(&second));
        prop_assert!(restarted.task.meta().rules.is_some_and(|r| r.after.is_none() && r.tables.is_none()));
    }
}

/// A one-line order of `euros` at `START`.
fn buy(id: &str, customer: &str, euros: f64) -> Event {
    Event {
        id: id.into(),
        customer: customer.into(),
        time: Timestamp(START),
        kind: EventKind::Purchase(Purchase {
            order_id: id.into(),
            items: vec![LineItem { product_id: "p1".into(), category: None, quantity: 1, unit_price: euros }],
            total: euros,
            currency: "EUR".into(),
            channel: None,
        }),
    }
}

#[test]
fn a_rules_switch_moves_exactly_the_customers_it_should() {
    let (v1, v2) = (engine(), engine_v2());
    let mut view = Click::new(ClickKind::ProductView);
    view.product_id = Some("p0".into());
    view.category = Some("keto".into());
    let evs = [buy("a1", "ana", 120.0), buy("b1", "ben", 1200.0), buy("c1", "cem", 50.0)];
    let evs: Vec<Event> = evs
        .into_iter()
        .chain((0..5).map(|i| Event {
            id: format!("d{i}"),
            customer: "dia".into(),
            time: Timestamp(START + i * MIN),
            kind: EventKind::Click(view.clone()),
        }))
        .collect();
    let (outputs, m) = switched(&v1, &v2, &evs, 2);
    let changes: BTreeMap<&str, (&[String], &[String])> = outputs
        .iter()
        .filter_map(|d| match &d.output {
            Output::SegmentChanged(s) => Some((s.customer.as_str(), (&s.entered[..], &s.exited[..]))),
            _ => None,
        })
        .collect();
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // ana: 120 is now VIP (was silver); ben was VIP already; cem is below
    // every tier; dia browsed (new segment) and leaves the removed `keto`.
    assert_eq!(changes.get("ana").map(|(e, x)| (e.to_vec(), x.to_vec())), Some((strs(&["vip"]), strs(&[]))));
    assert!(!changes.contains_key("ben") && !changes.contains_key("cem"), "{changes:?}");
    assert_eq!(changes.get("dia").map(|(e, x)| (e.to_vec(), x.to_vec())), Some((strs(&["browsed"]), strs(&["keto"]))));
    let pops = &m.task.meta().populations;
    assert_eq!(pops.get("vip"), Some(&2));
    assert_eq!(pops.get("keto"), None);
    assert_eq!(pops.get("browsed"), Some(&1));
    // `browsed` can end from 7 days after dia's first view on: the new
    // rules' timer (a timer may be early, never late).
    let timer = m.task.timer_of("dia").expect("the new rules set a timer");
    assert!(timer >= Timestamp(START + 7 * DAY) && timer <= Timestamp(START + 4 * MIN + 7 * DAY), "{timer:?}");
    assert!(outputs.iter().all(|d| !matches!(d.output, Output::NextBestOffer(_))), "no offer on a rules change");
}

#[test]
fn an_offer_that_lists_rules_changed_goes_to_the_customers_a_switch_moves_in() {
    let (v1, v3) = (engine(), engine_v3());
    // ana enters vip (threshold lowered), ben was vip already, cem enters nothing.
    let evs = consenting(vec![buy("a1", "ana", 120.0), buy("b1", "ben", 1200.0), buy("c1", "cem", 50.0)]);
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings()));
    m.step(&v1, &evs, Timestamp(START), false);
    let tables = m.task.tables().clone();
    assert!(m.switch_rules(&v3));
    assert_eq!(m.task.meta().rules.and_then(|r| r.tables), Some(tables), "the tables at the switch are kept");
    let mut offers = BTreeMap::new();
    while let Some(out) = m.reevaluate(&v3, 1) {
        for d in out.outputs {
            if let Output::NextBestOffer(n) = d.output {
                offers.insert(n.customer.clone(), n);
            }
        }
    }
    let ana = offers.remove("ana").expect("ana entered vip on the switch");
    assert_eq!(ana.offer.as_deref(), Some("launch"));
    assert_eq!(ana.cause.kind, crate::engine::CauseKind::RulesChanged);
    assert_eq!(ana.cause.trigger.as_deref(), Some("rules_changed:vip"));
    assert_eq!(ana.rules_version, v3.rules().version());
    assert!(offers.is_empty(), "only ana entered a segment: {offers:?}");
    assert!(m.states["ana"].offers.iter().any(|o| o.offer == "launch"), "the send is recorded");
    assert_eq!(m.task.meta().rules.and_then(|r| r.tables), None, "done: the tables are dropped");
}

#[test]
fn a_second_switch_mid_way_keeps_the_tables_of_its_own_instant() {
    let (v1, v3) = (engine(), engine_v3());
    let v4 = Engine::new(
        RuleSet::from_yaml(
            "rules-v4.yaml",
            &(rules_v2()
                + "  - id: launch\n    eligible: in_segment(\"vip\")\n    \
             channels: [email]\n    triggers: [rules_changed]\n"),
        )
        .expect("rules v4"),
        EngineSettings::default(),
    );
    let evs = consenting(events(&[(0, 0, Kind::Buy(20_000)), (1, MIN, Kind::View(0)), (2, MIN, Kind::Buy(300))]));
    let mut m = InMemory::new(PartitionTask::new(0, PartitionMeta::default(), [], settings()));
    m.step(&v1, &evs, Timestamp(START), false);
    assert!(m.switch_rules(&v3));
    m.reevaluate(&v3, 1).expect("a first slice");
    let purchase = events(&[(3, 2 * MIN, Kind::Buy(5_000))]);
    m.step(&v3, &purchase, Timestamp(START), false);
    let snapshot = |m: &InMemory| m.task.meta().rules.and_then(|r| r.tables);
    assert_ne!(snapshot(&m).as_ref(), Some(m.task.tables()), "the purchase moved the tables after the switch");
    assert!(m.switch_rules(&v4), "switched again before the first re-evaluation ended");
    assert_eq!(snapshot(&m).as_ref(), Some(m.task.tables()), "the second switch keeps the tables of its instant");
    // Restarted from the metadata record: the snapshot comes back with it.
    let restarted =
        PartitionTask::new(0, PartitionMeta::decode(&m.task.encode_meta()).expect("decodes"), [], settings());
    assert_eq!(restarted.rules_progress().and_then(|r| r.tables.as_ref()), Some(m.task.tables()));
}

#[test]
fn rules_undone_and_applied_again_at_the_same_instant_decide_with_new_ids() {
    // v2, back to v1, v2 again, with no event in between: the same customers
    // enter and leave the same segments at the same instant, and downstream
    // must not drop the third switch's changes as repeats of the first's.
    let (v1, v2) = (engine(), engine_v2());
    let evs = events(&[(0, 0, Kind::Buy(20_000)), (1, MIN, Kind::View(0)), (2, MIN, Kind::Buy(300))]);
    let (mut outputs, mut m) = switched(&v1, &v2, &evs, 2);
    for engine in [&v1, &v2] {
        assert!(m.switch_rules(engine));
        while let Some(out) = m.reevaluate(engine, 2) {
            outputs.extend(out.outputs);
        }
    }
    assert_eq!(m.task.meta().rules.map(|r| r.switch), Some(3), "three switches: v2, v1, v2");
    let mut ids = std::collections::BTreeSet::new();
    for d in &outputs {
        assert!(ids.insert(d.output.id().to_owned()), "id {} emitted twice: {:?}", d.output.id(), d.output);
    }
    assert!(outputs.len() >= 3, "each switch moved someone: {outputs:?}");
}
