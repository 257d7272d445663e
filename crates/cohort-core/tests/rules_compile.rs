//! The example rules file compiles and evaluates as documented.

mod rules_support;

use cohort_core::rules::{Channel, FlagField, RuleSet, SegmentSet, TextField, Trigger};
use cohort_core::time::{Duration, Timestamp};
use rules_support::{ts, Ev, FakeFacts, DAY, HOUR};

const EXAMPLE: &str = r#"version: 1
settings: { affinity_half_life: 30d, session_gap: 30m }
segments:
  - name: cart_abandoner
    description: Added to cart, no purchase within an hour
    when: cart.items > 0 && since(cart.last_added) >= 1h
  - name: lapsed
    when: orders.lifetime > 0 && since(last_purchase) >= 90d
  - name: vip
    group: value_tier          # at most one segment per group: lowest priority number wins
    priority: 1
    when: spend.365d >= 1000
  - name: regular
    group: value_tier
    priority: 2
    when: orders.365d >= 1
  - name: keto
    when: affinity("keto") >= 0.6
  - name: dach
    when: profile.country in ["DE", "AT", "CH"] && "cooking" in profile.interests
offers:
  - id: winback_20
    eligible: in_segment("lapsed") && consent.email
    value: 20.0
    lever: 1.0
    channels: [email]
    cap: { max: 1, per: 30d }
    cooldown: 7d
    holdout: 0.1
    prior: { alpha: 1, beta: 20 }
    triggers: [segment_entered]
  - id: cart_nudge
    eligible: in_segment("cart_abandoner") && offers_sent("cart_nudge", 7d) < 2
    channels: [push, email]
    triggers: [cart_abandoned, "segment_entered:cart_abandoner"]
"#;

fn names(rules: &RuleSet, set: &SegmentSet) -> Vec<String> {
    set.iter().map(|i| rules.segments()[i].name.clone()).collect()
}

#[test]
fn example_compiles_with_all_attributes() {
    let rules = RuleSet::from_yaml("rules.yaml", EXAMPLE).expect("example compiles");
    assert_eq!(rules.file_version(), 1);
    assert!(rules.version().starts_with("1-") && rules.version().len() == 18, "{}", rules.version());
    let again = RuleSet::from_yaml("other.yaml", EXAMPLE).expect("compiles");
    assert_eq!(rules.version(), again.version(), "the hash depends on content only");
    let edited = RuleSet::from_yaml("rules.yaml", &EXAMPLE.replace("0.6", "0.7")).expect("compiles");
    assert_ne!(rules.version(), edited.version());

    let segs: Vec<_> = rules.segments().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(segs, ["cart_abandoner", "lapsed", "vip", "regular", "keto", "dach"]);
    let vip = &rules.segments()[2];
    assert_eq!((vip.group.as_deref(), vip.priority), (Some("value_tier"), Some(1)));
    assert!(rules.segments()[0].time_dependent);
    assert!(rules.depends_on_time());
    let timeless = RuleSet::from_yaml("t.yaml", "version: 1\nsegments:\n  - name: a\n    when: orders.lifetime > 2\n")
        .expect("compiles");
    assert!(!timeless.depends_on_time());
    assert!(!rules.segments()[5].time_dependent);
    assert_eq!(rules.settings().affinity_half_life, Duration::from_days(30));

    let w = &rules.offers()[0];
    assert_eq!(w.id, "winback_20");
    assert_eq!((w.value, w.lever, w.holdout), (20.0, 1.0, 0.1));
    assert_eq!(w.channels, vec![Channel::Email]);
    assert_eq!(w.cap.map(|c| (c.max, c.per)), Some((1, Duration::from_days(30))));
    assert_eq!(w.cooldown, Some(Duration::from_days(7)));
    assert_eq!((w.prior.alpha, w.prior.beta), (1.0, 20.0));
    let lapsed: SegmentSet = [1].into_iter().collect();
    assert_eq!(w.triggers, vec![Trigger::SegmentEntered(lapsed)]);
    let c = &rules.offers()[1];
    assert_eq!((c.value, c.lever, c.holdout, c.cap, c.cooldown), (1.0, 1.0, 0.0, None, None));
    assert_eq!(c.triggers, vec![Trigger::CartAbandoned, Trigger::SegmentEntered([0].into_iter().collect())]);
}

#[test]
fn evaluates_segments_groups_and_offers() {
    let rules = RuleSet::from_yaml("rules.yaml", EXAMPLE).expect("compiles");
    let now = ts(400 * DAY);
    let mut f = FakeFacts {
        events: vec![
            (ts(300 * DAY), Ev::Purchase(600.0)),
            (ts(301 * DAY), Ev::Purchase(600.0)),
            (now - Duration::from_hours(2), Ev::CartAdd(30.0)),
        ],
        texts: vec![(TextField::Country, "DE".into())],
        interests: vec!["cooking".into()],
        flags: vec![FlagField::ConsentEmail],
        affinities: vec![("keto".into(), 0.9, now)],
        half_life: Duration::from_days(30),
        ..Default::default()
    };
    f.apply_until(now);
    let mut out = SegmentSet::new();
    rules.evaluate_segments(&f, now, &mut out);
    // lapsed: last purchase 99 days ago; vip wins value_tier over regular.
    assert_eq!(names(&rules, &out), ["cart_abandoner", "lapsed", "vip", "keto", "dach"]);
    assert!(rules.offer_eligible(0, &f, &out, now));
    assert!(rules.offer_eligible(1, &f, &out, now));
    assert!(!rules.offer_eligible(7, &f, &out, now));

    // Without spend the customer falls to `regular`; without email consent no winback.
    f.events[0].1 = Ev::Purchase(10.0);
    f.flags.clear();
    rules.evaluate_segments(&f, now, &mut out);
    assert_eq!(names(&rules, &out), ["cart_abandoner", "lapsed", "regular", "keto", "dach"]);
    assert!(!rules.offer_eligible(0, &f, &out, now));

    // Timers: keto falls below 0.6 after 30d * log2(0.9 / 0.6) = 17.5 days; the
    // purchases leave the 365d window at day 665; nothing earlier.
    let next = rules.next_flip(&f, now).expect("a timer");
    let keto_drop = now.as_millis() + (30.0 * DAY as f64 * (0.9f64 / 0.6).log2()) as i64;
    assert!(next.as_millis() <= keto_drop && next.as_millis() > keto_drop - 10, "{next:?} vs {keto_drop}");
}

#[test]
fn cart_abandoner_timer_fires_an_hour_after_the_add() {
    let rules = RuleSet::from_yaml("rules.yaml", EXAMPLE).expect("compiles");
    let added = ts(10 * DAY);
    let mut f = FakeFacts { events: vec![(added, Ev::CartAdd(5.0))], ..Default::default() };
    f.apply_until(added);
    assert_eq!(rules.next_flip(&f, added), Some(added + Duration::from_hours(1)));
    let mut out = SegmentSet::new();
    rules.evaluate_segments(&f, added + Duration::from_millis(HOUR - 1), &mut out);
    assert!(out.is_empty());
    rules.evaluate_segments(&f, added + Duration::from_hours(1), &mut out);
    assert_eq!(names(&rules, &out), ["cart_abandoner"]);
    // Empty cart: the `since` part alone sets no timer.
    let empty = FakeFacts::default();
    assert_eq!(rules.next_flip(&empty, added), None);
    let _ = Timestamp::MAX;
}

#[test]
fn docs_list_every_field_and_function() {
    let docs = include_str!("../../../docs/rules.md");
    for f in cohort_core::rules::catalogue::fields() {
        assert!(docs.contains(&format!("`{}`", f.path)), "docs/rules.md does not mention field `{}`", f.path);
    }
    for f in cohort_core::rules::catalogue::FUNCTIONS {
        assert!(docs.contains(&format!("`{}(", f.name)), "docs/rules.md does not mention function `{}`", f.name);
    }
    let module_docs = include_str!("../src/rules/mod.rs");
    for key in ["affinity_half_life", "session_gap", "priority", "cooldown", "holdout", "prior", "triggers", "cap"] {
        assert!(docs.contains(&format!("`{key}`")), "docs/rules.md does not document `{key}`");
        assert!(module_docs.contains(key), "rules/mod.rs does not document `{key}`");
    }
}

#[test]
fn conditions_cover_the_language() {
    let text = r#"version: 1
segments:
  - name: a
    when: '!(profile.gender == "f") && profile.age >= 18 && first_purchase < last_purchase'
  - name: b
    when: '"vegan" in profile.interests || profile.city in ["Berlin"] || consent.sms == true'
  - name: c
    when: in_segment("a") != in_segment("b") && birthday_this_month() && birthday_within(2w)
  - name: d
    when: 2 < orders.lifetime && 1h > since(last_seen)
"#;
    let rules = RuleSet::from_yaml("r.yaml", text).expect("compiles");
    let now = ts(20_000 * DAY + 10 * HOUR);
    let mut f = FakeFacts {
        events: vec![
            (ts(19_000 * DAY), Ev::Purchase(1.0)),
            (ts(19_500 * DAY), Ev::Purchase(1.0)),
            (ts(19_900 * DAY), Ev::Purchase(1.0)),
            (now - Duration::from_mins(5), Ev::PageView),
        ],
        texts: vec![(TextField::Gender, "m".into()), (TextField::City, "Berlin".into())],
        birth: Some(cohort_core::rules::CivilDate { year: 1990, month: 10, day: 5 }),
        ..Default::default()
    };
    f.apply_until(now);
    // 20000 days after the epoch is 2024-10-04: the birthday is tomorrow.
    assert_eq!(cohort_core::rules::calendar::date_of(now).day, 4);
    let mut out = SegmentSet::new();
    let next = rules.evaluate_with_next_flip(&f, now, &mut out);
    assert_eq!(names(&rules, &out), ["a", "b", "d"]);
    // d ends an hour after the last page view.
    assert_eq!(next, Some(now + Duration::from_mins(55)));
    f.texts[0].1 = "f".into();
    rules.evaluate_segments(&f, now, &mut out);
    assert_eq!(names(&rules, &out), ["b", "c", "d"]);
}

#[test]
fn empty_and_null_lists_are_allowed() {
    for text in ["version: 1\n", "version: 1\nsegments:\noffers: ~\n", "version: 1\nsegments: []\noffers: []\n"] {
        let rules = RuleSet::from_yaml("r.yaml", text).expect("compiles");
        assert!(rules.segments().is_empty() && rules.offers().is_empty());
        let mut out = SegmentSet::new();
        assert_eq!(rules.evaluate_with_next_flip(&FakeFacts::default(), ts(0), &mut out), None);
        assert!(out.is_empty());
    }
}

#[test]
fn large_rule_sets_up_to_the_limit() {
    let file = |n: usize| {
        let mut s = String::from("version: 1\nsegments:\n");
        for i in 0..n {
            let when =
                if i == 0 { "since(last_seen) >= 1h".to_string() } else { format!("in_segment(\"s{}\")", i - 1) };
            s.push_str(&format!("  - name: s{i}\n    when: '{when}'\n"));
        }
        s
    };
    let rules = RuleSet::from_yaml("r.yaml", &file(256)).expect("256 segments compile");
    let seen = ts(50 * DAY);
    let mut f = FakeFacts { events: vec![(seen, Ev::PageView)], ..Default::default() };
    f.apply_until(seen);
    let mut out = SegmentSet::new();
    // A chain of 256 segments, each true iff the previous one is: all flip together.
    assert_eq!(rules.evaluate_with_next_flip(&f, seen, &mut out), Some(seen + Duration::from_hours(1)));
    assert!(out.is_empty());
    assert_eq!(rules.evaluate_with_next_flip(&f, seen + Duration::from_hours(1), &mut out), None);
    assert_eq!(out.len(), 256);
    assert!(out.contains(255));

    let e = RuleSet::from_yaml("r.yaml", &file(257)).map(|_| ()).expect_err("257 is too many");
    assert_eq!(e.to_string(), "r.yaml:515:5: too many segments (257); at most 256");
}

#[test]
fn examples_in_the_docs_compile() {
    let docs = include_str!("../../../docs/rules.md");
    let mut blocks = 0;
    let mut rest = docs;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + 8..];
        let Some(end) = body.find("```") else { break };
        let block = &body[..end];
        if block.starts_with("version:") {
            blocks += 1;
            if let Err(e) = RuleSet::from_yaml("docs/rules.md", block) {
                panic!("example in docs/rules.md does not compile: {e}\n{block}");
            }
        }
        rest = &body[end..];
    }
    assert!(blocks >= 1, "docs/rules.md should hold a complete example");
}

#[test]
fn a_ruleset_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<RuleSet>();
    shareable::<SegmentSet>();
    shareable::<cohort_core::rules::RulesError>();
}
