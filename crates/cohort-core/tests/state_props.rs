//! Property tests for customer state: windowed counts equal a brute-force
//! recount, the encoding roundtrips, and state stays bounded.

use cohort_core::encode::{decode, decode_into, encode};
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, Date, Event, EventKind, LineItem, ProfileUpdate, Purchase,
};
use cohort_core::rules::{Facts, NumField, Window};
use cohort_core::state::{CustomerState, Membership, OfferSend, SegmentBits, StateSettings};
use cohort_core::time::{Duration, Timestamp, MS_PER_DAY};
use cohort_core::view::CustomerView;
use proptest::prelude::*;

const BASE: i64 = 1_704_067_200_000; // 2024-01-01
const CATS: [&str; 5] = ["keto", "vegan", "gluten-free", "snacks", "drinks"];

#[derive(Clone, Debug)]
enum Step {
    Page,
    Product(usize),
    Add(usize, i32),
    Remove(usize),
    Buy(usize, u32),
    Profile(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Page),
        3 => (0..CATS.len()).prop_map(Step::Product),
        2 => (0..CATS.len(), 0..4i32).prop_map(|(c, q)| Step::Add(c, q)),
        1 => (0..CATS.len()).prop_map(Step::Remove),
        2 => (0..CATS.len(), 0..50_000u32).prop_map(|(c, cents)| Step::Buy(c, cents)),
        1 => any::<bool>().prop_map(Step::Profile),
    ]
}

/// Gaps between events: mostly seconds to minutes, sometimes days, sometimes
/// negative (a late event).
fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0..600_000i64,
        2 => 0..(4 * 3_600_000i64),
        2 => 0..(40 * MS_PER_DAY),
        1 => -(3 * MS_PER_DAY)..0i64,
    ]
}

fn build(steps: &[(i64, Step)]) -> Vec<Event> {
    let mut t = BASE;
    steps
        .iter()
        .enumerate()
        .map(|(i, (g, s))| {
            t = (t + g).max(BASE);
            let kind = match s {
                Step::Page => EventKind::Click(Click::new(ClickKind::PageView)),
                Step::Product(c) => {
                    let mut k = Click::new(ClickKind::ProductView);
                    k.category = Some(CATS[*c].into());
                    k.product_id = Some(format!("p{c}"));
                    EventKind::Click(k)
                }
                Step::Add(c, q) => {
                    let mut k = Click::new(ClickKind::AddToCart);
                    k.category = Some(CATS[*c].into());
                    k.product_id = Some(format!("p{c}"));
                    k.price = Some(2.5);
                    k.quantity = Some(*q);
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
                    channel: Some(Channel::Web),
                }),
                Step::Profile(yes) => EventKind::ProfileUpdate(ProfileUpdate {
                    birth_date: Some(Date { year: 1990, month: 5, day: 17 }),
                    country: Some("de".into()),
                    interests: Some(vec!["Cooking".into(), "running".into()]),
                    consent: ConsentUpdate { email: Some(*yes), ..Default::default() },
                    ..Default::default()
                }),
            };
            Event { id: format!("e{i}"), customer: "c".into(), time: Timestamp(t), kind }
        })
        .collect()
}

/// The brute-force model: every counted occurrence with its time, using the
/// same definitions as the state (sessions: activity more than the gap after
/// the latest activity so far; windows: the event's time within
/// `(now - N days, now]`, to the millisecond).
#[derive(Default)]
struct Brute {
    occurrences: Vec<(i64, NumField, i64)>, // (time, which field with Lifetime window, amount)
}

impl Brute {
    fn from(events: &[Event], gap: Duration) -> Brute {
        let mut b = Brute::default();
        let mut last: Option<i64> = None;
        for e in events {
            let t = e.time.as_millis();
            let active = matches!(e.kind, EventKind::Click(_) | EventKind::Purchase(_));
            if active {
                if last.is_none_or(|l| t > l + gap.as_millis()) {
                    b.occurrences.push((t, NumField::Sessions(Window::Lifetime), 1));
                }
                last = Some(last.map_or(t, |l| l.max(t)));
            }
            match &e.kind {
                EventKind::Click(c) if c.kind == ClickKind::PageView => {
                    b.occurrences.push((t, NumField::PageViews(Window::Lifetime), 1))
                }
                EventKind::Click(c) if c.kind == ClickKind::ProductView => {
                    b.occurrences.push((t, NumField::ProductViews(Window::Lifetime), 1))
                }
                EventKind::Purchase(p) => {
                    b.occurrences.push((t, NumField::Orders(Window::Lifetime), 1));
                    b.occurrences.push((t, NumField::Spend(Window::Lifetime), (p.total * 100.0).round() as i64));
                }
                _ => {}
            }
        }
        b
    }

    fn value(&self, f: NumField, now: i64) -> f64 {
        let (base, w) = match f {
            NumField::Orders(w) => (NumField::Orders(Window::Lifetime), w),
            NumField::Spend(w) => (NumField::Spend(Window::Lifetime), w),
            NumField::PageViews(w) => (NumField::PageViews(Window::Lifetime), w),
            NumField::ProductViews(w) => (NumField::ProductViews(Window::Lifetime), w),
            NumField::Sessions(w) => (NumField::Sessions(Window::Lifetime), w),
            _ => unreachable!(),
        };
        let sum: i64 = self
            .occurrences
            .iter()
            .filter(|(_, k, _)| *k == base)
            .filter(|(t, _, _)| match w.length() {
                None => true,
                Some(len) => *t > now - len.as_millis() && *t <= now,
            })
            .map(|(_, _, a)| *a)
            .sum();
        if matches!(base, NumField::Spend(_)) {
            sum as f64 / 100.0
        } else {
            sum as f64
        }
    }
}

fn windowed_fields() -> Vec<NumField> {
    let mut v = Vec::new();
    for w in Window::ALL {
        v.extend([
            NumField::Orders(w),
            NumField::Spend(w),
            NumField::PageViews(w),
            NumField::ProductViews(w),
            NumField::Sessions(w),
        ]);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn windowed_counts_equal_brute_force_recount(
        steps in prop::collection::vec((gap(), step()), 1..120),
        probes in prop::collection::vec(0..(400 * MS_PER_DAY), 1..6),
    ) {
        let settings = StateSettings::default();
        let events = build(&steps);
        let mut st = CustomerState::default();
        for e in &events {
            st.record(e, &settings);
        }
        let brute = Brute::from(&events, settings.session_gap);
        let newest = events.iter().map(|e| e.time.as_millis()).max().unwrap_or(BASE);
        for p in probes {
            let now = Timestamp(newest + p);
            let cached = CustomerView::at(&st, &settings, now);
            let plain = CustomerView::new(&st, &settings);
            for f in windowed_fields() {
                let want = brute.value(f, now.as_millis());
                prop_assert_eq!(cached.number(f, now), want, "{:?} at {:?}", f, now);
                prop_assert_eq!(plain.number(f, now), want, "{:?} at {:?}", f, now);
                // The reported next change is exact: nothing changes before
                // it, and the value differs at it.
                prop_assert_eq!(cached.next_window_change(f, now), plain.next_window_change(f, now), "{:?}", f);
                if let Some(next) = plain.next_window_change(f, now) {
                    prop_assert!(next > now);
                    prop_assert_eq!(brute.value(f, next.as_millis() - 1), want);
                    prop_assert_ne!(brute.value(f, next.as_millis()), want);
                } else {
                    prop_assert_eq!(brute.value(f, now.as_millis() + 400 * MS_PER_DAY), want);
                }
            }
        }
    }

    #[test]
    fn encoding_roundtrips(
        steps in prop::collection::vec((gap(), step()), 0..80),
        sends in prop::collection::vec((0..5usize, 0..(100 * MS_PER_DAY), any::<bool>(), any::<u128>()), 0..40),
        segs in prop::collection::btree_set("[a-z_]{1,12}", 0..10),
        fingerprint in any::<u64>(),
        bits in prop::collection::vec(any::<u8>(), 0..30),
        before in prop::collection::vec((gap(), step()), 0..80),
        before_sends in 0..40usize,
    ) {
        // A zero fingerprint means "no bitset": the set is not stored.
        let bits = if fingerprint == 0 { Vec::new() } else { bits };
        let settings = StateSettings::default();
        let mut st = CustomerState::default();
        for e in build(&steps) {
            st.record(&e, &settings);
        }
        let mut t = BASE;
        for (o, dt, h, d) in sends {
            t += dt;
            st.record_send(OfferSend {
                decision: d,
                offer: format!("offer{o}"),
                time: Timestamp(t),
                channel: Channel::ALL[o],
                holdout: h,
                outcomes: (d & 0x1f) as u8,
            });
        }
        st.segments = segs.into_iter().enumerate().map(|(i, s)| Membership { segment: s, since: Timestamp(BASE + i as i64) }).collect();
        st.segment_bits = SegmentBits { rules: fingerprint, set: bits.iter().map(|b| usize::from(*b)).collect() };
        st.evaluated_at = Some(Timestamp(t));
        st.seen_before(42);
        let bytes = encode(&st);
        prop_assert_eq!(decode(&bytes), Ok(st.clone()));
        // Decoded over another customer's state (larger or smaller in every
        // part), it reads the same: nothing of the other is left.
        let mut other = CustomerState::default();
        for e in build(&before) {
            other.record(&e, &settings);
        }
        for i in 0..before_sends {
            other.record_send(OfferSend {
                decision: i as u128,
                offer: format!("earlier-offer{i}"),
                time: Timestamp(BASE + i as i64),
                channel: Channel::Web,
                holdout: true,
                outcomes: 1,
            });
        }
        other.segments = vec![Membership { segment: "zz_earlier".into(), since: Timestamp(BASE) }];
        other.segment_bits = SegmentBits { rules: 7, set: [3usize, 9].into_iter().collect() };
        other.seen_before(7);
        other.incarnation = 99;
        prop_assert_eq!(decode_into(&bytes, &mut other), Ok(()));
        prop_assert_eq!(&other, &st);
        // Any truncation is an error, never a different state.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            if cut < bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Corrupt bytes are a typed error, never a panic: random bytes, and a
    /// valid record with one byte flipped.
    #[test]
    fn decoding_garbage_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        steps in prop::collection::vec((gap(), step()), 0..30),
        flip in any::<prop::sample::Index>(),
        with in any::<u8>(),
    ) {
        let _ = decode(&bytes);
        let mut with_version = bytes.clone();
        with_version.insert(0, 1);
        let _ = decode(&with_version);
        let settings = StateSettings::default();
        let mut st = CustomerState::default();
        for e in build(&steps) {
            st.record(&e, &settings);
        }
        let mut good = encode(&st);
        let valid = good.clone();
        let i = flip.index(good.len());
        good[i] ^= with | 1;
        // A decode into a state that fails part way leaves it fit for the
        // next decode, which overwrites all of it.
        let mut scratch = CustomerState::default();
        let _ = decode_into(&good, &mut scratch);
        prop_assert_eq!(decode_into(&valid, &mut scratch), Ok(()));
        prop_assert_eq!(&scratch, &st);
        if let Ok(other) = decode(&good) {
            // A flip the format cannot detect still decodes to a state that
            // roundtrips (varints may have been non-minimal, so compare states).
            prop_assert_eq!(decode(&encode(&other)), Ok(other));
        }
    }
}

/// A heavy customer: 100,000 events over a year (mostly clicks across many
/// categories and products, a purchase every ~25 events), a full profile,
/// offer history and twenty segments. Must encode under 12 KiB (about
/// 9 KiB: 3 KiB of it the newest 128 contributions of each counter with
/// their exact times, crate::window).
#[test]
fn heavy_customer_encodes_under_12_kib() {
    let settings = StateSettings::default();
    let mut st = CustomerState::default();
    let year = 365 * MS_PER_DAY;
    let n = 100_000i64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for i in 0..n {
        let t = Timestamp(BASE + i * year / n);
        let cat = format!("category-{:02}", rnd(40));
        let product = format!("sku-{:06}", rnd(100_000));
        let kind = match rnd(25) {
            0 => EventKind::Purchase(Purchase {
                order_id: format!("order-{i}"),
                items: (0..3)
                    .map(|k| LineItem {
                        product_id: format!("{product}-{k}"),
                        category: Some(cat.clone()),
                        quantity: 2,
                        unit_price: 19.99,
                    })
                    .collect(),
                total: 119.94,
                currency: "EUR".into(),
                channel: Some(Channel::App),
            }),
            1..=3 => {
                let mut c = Click::new(ClickKind::AddToCart);
                c.product_id = Some(product);
                c.category = Some(cat);
                c.price = Some(12.5);
                EventKind::Click(c)
            }
            4..=12 => {
                let mut c = Click::new(ClickKind::ProductView);
                c.product_id = Some(product);
                c.category = Some(cat);
                EventKind::Click(c)
            }
            _ => EventKind::Click(Click::new(ClickKind::PageView)),
        };
        st.record(&Event { id: format!("e{i}"), customer: "heavy".into(), time: t, kind }, &settings);
        st.seen_before(i as u64);
    }
    st.record(
        &Event {
            id: "profile".into(),
            customer: "heavy".into(),
            time: Timestamp(BASE + year),
            kind: EventKind::ProfileUpdate(ProfileUpdate {
                birth_date: Some(Date { year: 1985, month: 2, day: 28 }),
                gender: Some("female".into()),
                income_band: Some("50k-75k".into()),
                education: Some("university".into()),
                country: Some("DE".into()),
                region: Some("Bavaria".into()),
                city: Some("Munich".into()),
                interests: Some((0..20).map(|i| format!("interest-{i}")).collect()),
                consent: ConsentUpdate { email: Some(true), sms: Some(false), push: Some(true), web: Some(true) },
                loyalty_tier: Some("gold".into()),
                ..Default::default()
            }),
        },
        &settings,
    );
    for i in 0..100 {
        st.record_send(OfferSend {
            decision: u128::MAX - i,
            offer: format!("offer_{:02}", i % 10),
            time: Timestamp(BASE + year - (100 - i as i64) * MS_PER_DAY),
            channel: Channel::Email,
            holdout: i % 10 == 0,
            outcomes: 3,
        });
    }
    st.segments =
        (0..20).map(|i| Membership { segment: format!("segment_name_{i:02}"), since: Timestamp(BASE + i) }).collect();
    st.evaluated_at = Some(Timestamp(BASE + year));
    let bytes = encode(&st);
    assert!(bytes.len() < 12 * 1024, "heavy customer encodes to {} bytes", bytes.len());
    assert_eq!(decode(&bytes).as_ref(), Ok(&st));
    println!("heavy customer: {} bytes", bytes.len());
    // The stored format itself, byte for byte (the stable hash of the
    // encoding as written in session 18): a faster encoder must not write
    // other bytes. Without the affinities, whose weights decay through the
    // platform's `exp2` and could differ in the last bit on another libm.
    const PINNED: (usize, u64) = (8739, 0xae2d_5913_7147_40d0);
    let mut pinned = st.clone();
    pinned.affinities = Default::default();
    let bytes = encode(&pinned);
    let hash = cohort_core::hash::StableHasher::new().bytes(&bytes).finish64();
    println!("heavy customer without affinities: {} bytes, hash {hash:#018x}", bytes.len());
    assert_eq!((bytes.len(), hash), PINNED, "the heavy customer's encoding changed");
}

/// Profile text and categories are stored normalised, and rule literals
/// compared with them are normalised the same way at load (docs/rules.md,
/// "Text values"): any case or surrounding whitespace in either matches,
/// except for the city, whose case counts.
#[test]
fn text_comparisons_ignore_case_and_whitespace_as_documented() {
    use cohort_core::rules::{RuleSet, SegmentSet};
    let rules = RuleSet::from_yaml(
        "t.yaml",
        r#"version: 1
segments:
  - { name: de_upper, when: 'profile.country == "DE"' }
  - { name: de_lower, when: 'profile.country == " de "' }
  - { name: de_list, when: 'profile.country in ["at", "de"]' }
  - { name: women, when: 'profile.gender == "F"' }
  - { name: tier, when: 'profile.loyalty_tier != "Gold"' }
  - { name: cooks, when: '"Cooking" in profile.interests' }
  - { name: munich, when: 'profile.city == "München"' }
  - { name: munich_lower, when: 'profile.city == "münchen"' }
  - { name: keto, when: 'affinity("Keto") >= 0.5' }
"#,
    )
    .expect("rules load");
    let settings = StateSettings { affinity_min_evidence: 0.0, ..StateSettings::default() };
    let mut st = CustomerState::default();
    let profile = ProfileUpdate {
        country: Some(" de".into()),
        gender: Some("f ".into()),
        loyalty_tier: Some("GOLD".into()),
        city: Some(" München".into()),
        interests: Some(vec![" COOKING ".into()]),
        ..Default::default()
    };
    let t = Timestamp(BASE);
    st.record(
        &Event { id: "p".into(), customer: "c".into(), time: t, kind: EventKind::ProfileUpdate(profile) },
        &settings,
    );
    let mut view = Click::new(ClickKind::ProductView);
    view.category = Some("  KETO".into());
    st.record(&Event { id: "v".into(), customer: "c".into(), time: t, kind: EventKind::Click(view) }, &settings);
    assert_eq!(st.profile.country.as_deref(), Some("DE"));
    assert_eq!(st.profile.gender.as_deref(), Some("f"));
    assert_eq!(st.profile.city.as_deref(), Some("München"));
    assert_eq!(st.profile.interests, vec!["cooking".to_owned()]);
    let mut set = SegmentSet::new();
    rules.evaluate_segments(&CustomerView::at(&st, &settings, t), t, &mut set);
    let got: Vec<&str> = set.iter().map(|i| rules.segments()[i].name.as_str()).collect();
    assert_eq!(got, ["de_upper", "de_lower", "de_list", "women", "cooks", "munich", "keto"]);
}

/// first_seen and last_seen are activity (clicks and purchases): a profile
/// update (a CRM sync) does not move them (docs/rules.md, "Fields").
#[test]
fn first_and_last_seen_are_clicks_and_purchases_only() {
    let settings = StateSettings::default();
    let mut st = CustomerState::default();
    let at = |t: i64, kind: EventKind| Event { id: format!("e{t}"), customer: "c".into(), time: Timestamp(t), kind };
    st.record(
        &at(BASE, EventKind::ProfileUpdate(ProfileUpdate { country: Some("DE".into()), ..Default::default() })),
        &settings,
    );
    assert_eq!((st.first_seen, st.last_seen), (None, None));
    st.record(&at(BASE + 10, EventKind::Click(Click::new(ClickKind::PageView))), &settings);
    st.record(&at(BASE + 20, EventKind::ProfileUpdate(ProfileUpdate::default())), &settings);
    assert_eq!((st.first_seen, st.last_seen), (Some(Timestamp(BASE + 10)), Some(Timestamp(BASE + 10))));
}
