//! Rules benchmarks: compiling a generated 100-segment file (start-up and
//! `cohort validate`), and evaluating 20 segments and 10 offers against one
//! customer (the per-event hot path), plus the timer computation.
//!
//! `CARGO_TARGET_DIR=/root/.cache/cohort/target-core cargo bench -p cohort-core --bench rules_compile`

use cohort_core::rules::{
    CivilDate, Facts, FlagField, NumField, RuleSet, SegmentSet, SetField, TextField, TimeField, Window,
};
use cohort_core::time::{Duration, Timestamp};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const NOW: Timestamp = Timestamp(1_750_000_000_000);

/// A customer whose facts are plain fields: measures the rules, not a
/// state implementation.
struct Customer {
    nums: [f64; 8],
    instants: [Option<Timestamp>; 5],
    country: &'static str,
    interests: [&'static str; 2],
    flags: [bool; 4],
}

fn win(w: Window) -> usize {
    w as usize
}

impl Facts for Customer {
    fn number(&self, f: NumField, _now: Timestamp) -> f64 {
        match f {
            NumField::Orders(w) => self.nums[win(w)],
            NumField::Spend(w) => self.nums[win(w)] * 80.0,
            NumField::PageViews(w) | NumField::ProductViews(w) | NumField::Sessions(w) => self.nums[win(w)] * 7.0,
            NumField::Aov => self.nums[5],
            NumField::CartItems => self.nums[6],
            NumField::CartValue => self.nums[7],
        }
    }
    fn next_window_change(&self, f: NumField, now: Timestamp) -> Option<Timestamp> {
        match f {
            NumField::Orders(Window::D30) | NumField::Spend(Window::D30) => Some(now + Duration::from_days(3)),
            _ => None,
        }
    }
    fn instant(&self, f: TimeField) -> Option<Timestamp> {
        self.instants[f as usize]
    }
    fn text(&self, f: TextField) -> Option<&str> {
        match f {
            TextField::Country => Some(self.country),
            _ => None,
        }
    }
    fn set_contains(&self, _f: SetField, value: &str) -> bool {
        self.interests.contains(&value)
    }
    fn flag(&self, f: FlagField) -> bool {
        self.flags[f as usize]
    }
    fn affinity(&self, category: &str, now: Timestamp) -> f64 {
        let base = if category == "keto" { 0.8 } else { 0.2 };
        base * (-(now.as_millis() - NOW.as_millis()) as f64 / Duration::from_days(30).as_millis() as f64).exp2()
    }
    fn birth_date(&self) -> Option<CivilDate> {
        Some(CivilDate { year: 1988, month: 7, day: 14 })
    }
    fn declared_age(&self) -> Option<u32> {
        None
    }
    fn offers_sent(&self, _offer: &str, _window: Duration, _now: Timestamp) -> u32 {
        1
    }
    fn next_offers_sent_change(&self, _offer: &str, _window: Duration, now: Timestamp) -> Option<Timestamp> {
        Some(now + Duration::from_days(2))
    }
}

fn customer() -> Customer {
    Customer {
        nums: [1.0, 3.0, 5.0, 12.0, 20.0, 74.0, 2.0, 61.0],
        instants: [
            Some(NOW - Duration::from_mins(90)),
            Some(NOW - Duration::from_days(12)),
            Some(NOW - Duration::from_days(700)),
            Some(NOW - Duration::from_days(900)),
            Some(NOW - Duration::from_mins(5)),
        ],
        country: "DE",
        interests: ["cooking", "running"],
        flags: [true, false, true, true],
    }
}

const TEMPLATES: [&str; 10] = [
    "cart.items > 0 && since(cart.last_added) >= 1h",
    "orders.lifetime > 0 && since(last_purchase) >= 90d",
    "spend.365d >= 1000",
    "affinity(\"keto\") >= 0.6",
    "profile.country in [\"DE\", \"AT\", \"CH\"] && \"cooking\" in profile.interests",
    "orders.30d >= 2 || (aov > 50 && consent.email)",
    "birthday_within(7d) && consent.email",
    "profile.age >= 30 && profile.age < 45 && page_views.7d > 10",
    "!(sessions.30d > 3) && since(last_seen) < 14d",
    "product_views.7d >= 5 && orders.7d == 0",
];

fn rules_file(segments: usize, offers: usize) -> String {
    let mut s = String::from("version: 1\nsegments:\n");
    for i in 0..segments {
        s.push_str(&format!("  - name: seg_{i}\n    description: generated segment {i}\n"));
        if i % 10 == 2 {
            s.push_str(&format!("    group: tier_{}\n    priority: {i}\n", i / 30));
        }
        let when = if i >= 10 && i % 5 == 0 {
            format!("in_segment(\"seg_{}\") && {}", i - 7, TEMPLATES[i % TEMPLATES.len()])
        } else {
            TEMPLATES[i % TEMPLATES.len()].to_string()
        };
        s.push_str(&format!("    when: '{when}'\n"));
    }
    s.push_str("offers:\n");
    for i in 0..offers {
        s.push_str(&format!(
            "  - id: offer_{i}\n    eligible: in_segment(\"seg_{}\") && consent.email && offers_sent(\"offer_{i}\", 7d) < 3\n    \
             value: {}.0\n    channels: [email, push]\n    cap: {{ max: 2, per: 30d }}\n",
            (i * 3) % segments,
            10 + i
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let big = rules_file(100, 20);
    c.bench_function("compile 100 segments + 20 offers", |b| {
        b.iter(|| RuleSet::from_yaml("bench.yaml", black_box(&big)).map(|r| r.segments().len()))
    });

    let rules = match RuleSet::from_yaml("bench.yaml", &rules_file(20, 10)) {
        Ok(r) => r,
        Err(e) => panic!("bench rules must compile: {e}"),
    };
    let cust = customer();
    let mut set = SegmentSet::new();
    c.bench_function("evaluate 20 segments", |b| {
        b.iter(|| {
            rules.evaluate_segments(black_box(&cust), NOW, &mut set);
            set
        })
    });
    rules.evaluate_segments(&cust, NOW, &mut set);
    c.bench_function("evaluate 20 segments + 10 offers", |b| {
        b.iter(|| {
            rules.evaluate_segments(black_box(&cust), NOW, &mut set);
            (0..rules.offers().len()).filter(|&i| rules.offer_eligible(i, &cust, &set, NOW)).count()
        })
    });
    c.bench_function("evaluate_with_next_flip 20 segments + 10 offers", |b| {
        b.iter(|| rules.evaluate_with_next_flip(black_box(&cust), NOW, &mut set))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
