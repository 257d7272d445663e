//! The evaluation the engine uses ([`Plan`], [`Cond`]) against the tree
//! walker it replaced ([`eval::eval`], [`eval::analyse`] on the compiled
//! [`Expr`]s): random rules over every kind of atom, random customers built
//! by folding random events, both with and without precomputed window sums.
//! Same segments, same eligibility, same next instant, to the millisecond.

use super::eval::{self, Next, SegNext, Segs};
use super::{Facts, RuleSet, SegmentSet};
use crate::event::{Click, ClickKind, ConsentUpdate, Date, Event, EventKind, LineItem, ProfileUpdate, Purchase};
use crate::state::{CustomerState, OfferSend, StateSettings};
use crate::time::{Duration, Timestamp, MS_PER_DAY};
use crate::view::CustomerView;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const OPS: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];
const COUNTERS: [&str; 5] = ["orders", "spend", "page_views", "product_views", "sessions"];
const WINDOWS: [&str; 5] = ["7d", "30d", "90d", "365d", "lifetime"];
const INSTANTS: [&str; 5] = ["cart.last_added", "last_purchase", "first_purchase", "first_seen", "last_seen"];
const CATS: [&str; 4] = ["keto", "vegan", "snacks", "baby"];

fn atom(r: &mut Rng, earlier: &[String]) -> String {
    let op = *r.pick(&OPS);
    match r.below(17) {
        0 | 1 => format!("{}.{} {op} {}", r.pick(&COUNTERS), r.pick(&WINDOWS), r.range(0, 6)),
        2 => format!("{} {op} {}.{}", r.range(0, 300), r.pick(&COUNTERS), r.pick(&WINDOWS)),
        3 => format!("{} {op} {}", r.pick(&["aov", "cart.items", "cart.value"]), r.range(0, 80)),
        4 | 5 => format!("since({}) {op} {}m", r.pick(&INSTANTS), r.range(0, 60 * 24 * 40)),
        6 => format!("affinity(\"{}\") {op} 0.{}", r.pick(&CATS), r.range(0, 99)),
        7 => match r.below(3) {
            0 => format!("0.{} {op} affinity(\"{}\")", r.range(0, 99), r.pick(&CATS)),
            1 => format!("affinity(\"{}\") {op} affinity(\"{}\")", r.pick(&CATS), r.pick(&CATS)),
            _ => format!("affinity(\"{}\") {op} orders.7d", r.pick(&CATS)),
        },
        8 => match r.below(2) {
            0 => format!("profile.age {op} {}", r.range(18, 70)),
            _ => format!("{} {op} profile.age", r.range(18, 70)),
        },
        9 => match r.below(2) {
            0 => format!("birthday_within({}d)", r.range(0, 40)),
            _ => "birthday_this_month()".to_string(),
        },
        10 => match r.below(4) {
            0 => format!("profile.country {} \"{}\"", r.pick(&["==", "!="]), r.pick(&["DE", "AT", "FR"])),
            1 => format!("\"{}\" == profile.region", r.pick(&["Bavaria", "Berlin"])),
            2 => "profile.country in [\"DE\", \"AT\", \"CH\"]".to_string(),
            _ => format!("\"{}\" in profile.interests", r.pick(&["fitness", "running", "cooking"])),
        },
        11 => format!("consent.{}", r.pick(&["email", "sms", "push", "web"])),
        12 => format!("offers_sent(\"o1\", {}h) {op} {}", r.range(1, 500), r.range(0, 3)),
        13 => format!("since(last_purchase) {op} since(first_seen)"),
        14 => format!("last_purchase {op} first_seen"),
        15 if !earlier.is_empty() => format!("in_segment(\"{}\")", r.pick(earlier)),
        _ => (*r.pick(&["true", "false", "cart.items > 0"])).to_string(),
    }
}

fn condition(r: &mut Rng, earlier: &[String], depth: u32) -> String {
    if depth == 0 || r.below(100) < 30 {
        return atom(r, earlier);
    }
    match r.below(5) {
        0 | 1 => {
            let n = r.range(2, 5);
            let parts: Vec<String> = (0..n).map(|_| condition(r, earlier, depth - 1)).collect();
            format!("({})", parts.join(" && "))
        }
        2 | 3 => {
            let n = r.range(2, 5);
            let parts: Vec<String> = (0..n).map(|_| condition(r, earlier, depth - 1)).collect();
            format!("({})", parts.join(" || "))
        }
        _ => match r.below(2) {
            0 => format!("!({})", condition(r, earlier, depth - 1)),
            _ => format!("({}) == ({})", condition(r, earlier, depth - 1), condition(r, earlier, depth - 1)),
        },
    }
}

fn rules(r: &mut Rng) -> RuleSet {
    let mut text = format!("version: 1\nsettings:\n  affinity_half_life: {}h\nsegments:\n", r.range(1, 24 * 60));
    let mut names: Vec<String> = Vec::new();
    let n = if r.below(10) == 0 { r.range(33, 45) } else { r.range(2, 25) };
    for i in 0..n {
        let name = format!("s{i}");
        text.push_str(&format!("  - name: {name}\n"));
        let when = if r.below(4) == 0 {
            text.push_str(&format!("    group: g{}\n    priority: {i}\n", r.below(3)));
            condition(r, &[], 3)
        } else {
            condition(r, &names, 3)
        };
        text.push_str(&format!("    when: '{}'\n", when.replace('\'', "''")));
        names.push(name);
    }
    text.push_str("offers:\n");
    for o in 0..r.range(1, 4) {
        let eligible = condition(r, &names, 2);
        text.push_str(&format!(
            "  - id: o{}\n    eligible: '{}'\n    channels: [email]\n",
            o + 1,
            eligible.replace('\'', "''")
        ));
    }
    RuleSet::from_yaml("random.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const START: i64 = 1_709_542_800_000;

fn customer(r: &mut Rng, settings: &StateSettings) -> (CustomerState, Timestamp) {
    let mut st = CustomerState::default();
    let mut t = START - r.range(0, 400) * MS_PER_DAY;
    for i in 0..r.range(0, 40) {
        t += r.range(0, 6 * MS_PER_DAY / 4);
        let cat = Some((*r.pick(&CATS)).to_string());
        let kind = match r.below(10) {
            0..=3 => {
                let kinds =
                    [ClickKind::PageView, ClickKind::ProductView, ClickKind::AddToCart, ClickKind::RemoveFromCart];
                let mut c = Click::new(*r.pick(&kinds));
                c.category = cat;
                c.product_id = Some(format!("p{}", r.below(4)));
                c.price = Some(r.range(1, 40) as f64);
                EventKind::Click(c)
            }
            4 | 5 => EventKind::Purchase(Purchase {
                order_id: format!("o{i}"),
                items: vec![LineItem {
                    product_id: format!("p{}", r.below(4)),
                    category: cat,
                    quantity: 1,
                    unit_price: 9.5,
                }],
                total: r.range(1, 40_000) as f64 / 100.0,
                currency: "EUR".into(),
                channel: None,
            }),
            6 => EventKind::ProfileUpdate(ProfileUpdate {
                birth_date: (r.below(2) == 0).then(|| Date {
                    year: r.range(1950, 2006) as i32,
                    month: r.range(1, 13) as u8,
                    day: r.range(1, 29) as u8,
                }),
                age: (r.below(2) == 0).then(|| r.range(15, 80) as u32),
                country: Some((*r.pick(&["DE", "at", "FR"])).to_string()),
                region: Some((*r.pick(&["Bavaria", "Berlin"])).to_string()),
                interests: Some(vec![(*r.pick(&["fitness", "Running", "cooking"])).to_string()]),
                consent: ConsentUpdate {
                    email: Some(r.below(2) == 0),
                    sms: Some(r.below(2) == 0),
                    ..Default::default()
                },
                ..Default::default()
            }),
            _ => {
                let time = Timestamp(t - r.range(0, 3 * 24) * 3_600_000);
                st.record_send(OfferSend {
                    decision: u128::from(r.next()),
                    offer: "o1".into(),
                    time,
                    channel: crate::event::Channel::Email,
                    holdout: false,
                    outcomes: 0,
                });
                continue;
            }
        };
        st.record(&Event { id: format!("e{i}"), customer: "c".into(), time: Timestamp(t), kind }, settings);
    }
    (st, Timestamp(t))
}

/// The evaluation as it was before [`super::program`]: the tree walker over
/// every condition, in dependency order, and every time-dependent offer.
fn reference<F: Facts + ?Sized>(rules: &RuleSet, facts: &F, now: Timestamp) -> (SegmentSet, Option<Timestamp>) {
    let mut raw = SegmentSet::new();
    let mut raw_next = vec![Next::NEVER; rules.segments.len()];
    let mut best = Next::NEVER;
    let sums = eval::sums_for(facts, now);
    for &i in &rules.order {
        let i = usize::from(i);
        let env = rules.env(facts, now, sums, Segs::Raw(&raw, &rules.membership));
        let (hit, t) = if rules.seg_timed[i] {
            eval::analyse(&rules.seg_exprs[i], &env, &SegNext { raw_next: &raw_next, membership: &rules.membership })
        } else {
            (eval::eval(&rules.seg_exprs[i], &env), Next::NEVER)
        };
        if hit {
            raw.insert(i);
        }
        raw_next[i] = t;
        best = best.min(t);
    }
    let mut out = SegmentSet::new();
    rules.membership.finalize(&raw, &mut out);
    let env = rules.env(facts, now, sums, Segs::Final(&out));
    for (e, timed) in rules.offer_exprs.iter().zip(&rules.offer_timed) {
        if *timed {
            best = best.min(eval::analyse(e, &env, &SegNext { raw_next: &raw_next, membership: &rules.membership }).1);
        }
    }
    (out, best.get())
}

fn check<F: Facts + ?Sized>(rules: &RuleSet, facts: &F, now: Timestamp, what: &str) {
    let (want_set, want_next) = reference(rules, facts, now);
    let mut got_set = SegmentSet::new();
    let got_next = rules.evaluate_with_next_flip(facts, now, &mut got_set);
    assert_eq!((got_set, got_next), (want_set, want_next), "{what} at {now:?}");
    let mut plain = SegmentSet::new();
    rules.evaluate_segments(facts, now, &mut plain);
    assert_eq!(plain, want_set, "{what}: evaluate_segments at {now:?}");
    let env = rules.env(facts, now, eval::sums_for(facts, now), Segs::Final(&want_set));
    for (i, e) in rules.offer_exprs.iter().enumerate() {
        assert_eq!(rules.offer_eligible(i, facts, &want_set, now), eval::eval(e, &env), "{what}: offer {i}");
    }
}

#[test]
fn plan_matches_the_tree_walker_on_the_example_rules() {
    // No segment reads another and no offer has a time-dependent atom of
    // its own: the engine's fastest path.
    let rules = RuleSet::from_yaml("rules.yaml", include_str!("../../tests/golden/rules.yaml")).expect("example rules");
    assert!(!rules.seg_plan.reads_segments() && rules.offer_own_timed.is_empty());
    let settings = StateSettings { affinity_half_life: rules.settings().affinity_half_life, ..Default::default() };
    let mut r = Rng(0x005e_ed0f_c0de);
    for _ in 0..400 {
        let (st, last) = customer(&mut r, &settings);
        for _ in 0..4 {
            let now = last + Duration::from_millis(r.range(0, 120 * MS_PER_DAY));
            check(&rules, &CustomerView::at(&st, &settings, now), now, "example rules with sums");
            check(&rules, &CustomerView::new(&st, &settings), now, "example rules without sums");
        }
    }
}

#[test]
fn plan_matches_the_tree_walker() {
    let settings = StateSettings::default();
    for seed in 1..=150u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let rules = rules(&mut r);
        let settings = StateSettings { affinity_half_life: rules.settings().affinity_half_life, ..settings.clone() };
        for _ in 0..12 {
            let (st, last) = customer(&mut r, &settings);
            for _ in 0..6 {
                // Mostly after the last event; sometimes before it, so that
                // some day buckets lie in the future.
                let now = if r.below(5) == 0 {
                    last - Duration::from_millis(r.range(0, 3 * MS_PER_DAY))
                } else {
                    last + Duration::from_millis(r.range(0, 60 * MS_PER_DAY))
                };
                check(&rules, &CustomerView::at(&st, &settings, now), now, &format!("seed {seed} with sums"));
                check(&rules, &CustomerView::new(&st, &settings), now, &format!("seed {seed} without sums"));
            }
        }
    }
}
