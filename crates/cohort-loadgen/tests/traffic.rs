//! Properties of the generated traffic that the engine's tests, demo and
//! benchmarks rely on.

use cohort_core::event::{ClickKind, Event, EventKind, Outcome};
use cohort_core::time::Duration;
use cohort_loadgen::{Category, Config, Generator, Shard};
use std::collections::{HashMap, HashSet};

fn run(config: Config, days: i64) -> (Generator, Vec<Event>) {
    let end = config.start + Duration::from_days(days);
    let mut g = Generator::new(config).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| g.next_before(end)).collect();
    (g, events)
}

fn small() -> Config {
    Config { customers: 2_000, products: 1_000, ..Config::default() }
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let a: Vec<Event> = Generator::new(small()).unwrap().take(30_000).collect();
    let b: Vec<Event> = Generator::new(small()).unwrap().take(30_000).collect();
    assert_eq!(a, b);
    let c: Vec<Event> = Generator::new(Config { seed: 43, ..small() }).unwrap().take(30_000).collect();
    assert_ne!(a[..100], c[..100]);
    assert!(c[0].id.starts_with("lg43."), "{}", c[0].id);
}

#[test]
fn events_are_time_ordered_valid_and_uniquely_identified() {
    let (_, events) = run(small(), 20);
    assert!(events.len() > 50_000, "{}", events.len());
    assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
    let mut ids = HashSet::new();
    let mut orders = HashSet::new();
    for e in &events {
        if let Err(err) = e.validate(e.time) {
            panic!("{e:?} is invalid: {err}");
        }
        assert!(ids.insert(e.id.as_str()), "duplicate id {}", e.id);
        if let EventKind::Purchase(p) = &e.kind {
            assert!(orders.insert(p.order_id.clone()), "duplicate order {}", p.order_id);
            let sum: f64 = p.items.iter().map(|i| f64::from(i.quantity) * i.unit_price).sum();
            assert!((sum - p.total).abs() < 0.01 && !p.items.is_empty(), "{p:?}");
        }
    }
    let kinds: HashSet<&str> = events.iter().map(|e| e.kind_name()).collect();
    for k in ["click", "purchase", "profile_update", "offer_outcome"] {
        assert!(kinds.contains(k), "no {k} events");
    }
}

#[test]
fn next_before_stops_at_the_bound_without_losing_events() {
    let start = small().start;
    let mut g = Generator::new(small()).unwrap();
    let mut split: Vec<Event> = Vec::new();
    for day in 1..=3 {
        let end = start + Duration::from_days(day);
        split.extend(std::iter::from_fn(|| g.next_before(end)));
        assert!(split.last().unwrap().time < end);
    }
    let end = start + Duration::from_days(3);
    let whole: Vec<Event> = Generator::new(small()).unwrap().take_while(|e| e.time < end).collect();
    assert!(split == whole);
}

#[test]
fn every_customer_starts_with_a_full_profile() {
    let (g, events) = run(small(), 10);
    let mut seen = HashSet::new();
    let mut updates = 0;
    for e in &events {
        let first = seen.insert(e.customer.clone());
        if let EventKind::ProfileUpdate(p) = &e.kind {
            if first {
                assert!(p.country.is_some() && p.income_band.is_some() && p.consent.email.is_some(), "{p:?}");
            } else {
                updates += 1;
            }
        } else {
            assert!(!first, "first event of {} is not a profile: {e:?}", e.customer);
        }
    }
    assert!(seen.len() > 1_000, "{}", seen.len());
    assert!(updates > 0);
    assert!(seen.iter().all(|c| g.population().by_id(c).is_some()));
}

#[test]
fn a_tenth_of_the_customers_make_most_of_the_traffic() {
    let (_, events) = run(small(), 30);
    let mut per_customer: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *per_customer.entry(e.customer.as_str()).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_customer.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top: usize = counts[..200].iter().sum(); // 10% of 2,000
    let share = top as f64 / events.len() as f64;
    assert!(share > 0.5, "top 10% of customers produce {share:.2} of events");
    assert!(share < 0.9, "top 10% of customers produce {share:.2} of events");
}

#[test]
fn product_popularity_is_skewed_within_categories() {
    let (g, events) = run(small(), 20);
    let mut views: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        if let EventKind::Click(c) = &e.kind {
            if c.kind == ClickKind::ProductView {
                *views.entry(c.product_id.as_deref().unwrap()).or_default() += 1;
            }
        }
    }
    let fashion = Category::parse("fashion").unwrap();
    let ranked: Vec<usize> = g
        .catalog()
        .in_category(fashion)
        .iter()
        .map(|&p| views.get(g.catalog().product(p).id.as_str()).copied().unwrap_or(0))
        .collect();
    let total: usize = ranked.iter().sum();
    let top: usize = ranked[..ranked.len() / 10].iter().sum();
    assert!(top as f64 > 0.4 * total as f64, "top 10% of fashion products get {top} of {total} views");
}

#[test]
fn baskets_stay_in_the_customers_categories() {
    let (g, events) = run(small(), 20);
    let (mut items, mut preferred, mut orders, mut coherent) = (0, 0, 0, 0);
    for e in &events {
        if let EventKind::Purchase(p) = &e.kind {
            let persona = &g.population().by_id(&e.customer).unwrap().persona;
            let hits = p
                .items
                .iter()
                .filter(|i| persona.prefers(Category::parse(i.category.as_deref().unwrap()).unwrap()))
                .count();
            items += p.items.len();
            preferred += hits;
            orders += 1;
            if hits * 2 > p.items.len() {
                coherent += 1;
            }
        }
    }
    assert!(orders > 1_000, "{orders}");
    let share = preferred as f64 / items as f64;
    assert!(share > 0.8, "only {share:.2} of purchased items are in preferred categories");
    let share = coherent as f64 / orders as f64;
    assert!(share > 0.8, "only {share:.2} of orders are mostly in preferred categories");
}

/// Replays cart events per session: the share of sessions that end with
/// items in the cart and no order.
fn abandoned_share(events: &[Event], include: impl Fn(&Event) -> bool) -> (f64, usize) {
    let mut carts: HashMap<String, (HashMap<String, i32>, bool)> = HashMap::new();
    let mut current: HashMap<&str, String> = HashMap::new();
    for e in events.iter().filter(|e| include(e)) {
        match &e.kind {
            EventKind::Click(c) => {
                let s = c.session_id.clone().unwrap();
                current.insert(&e.customer, s.clone());
                let (cart, _) = carts.entry(s).or_default();
                let p = c.product_id.clone().unwrap_or_default();
                match c.kind {
                    ClickKind::AddToCart => *cart.entry(p).or_default() += c.quantity.unwrap(),
                    ClickKind::RemoveFromCart => {
                        cart.remove(&p);
                    }
                    _ => {}
                }
            }
            EventKind::Purchase(_) => carts.get_mut(&current[e.customer.as_str()]).unwrap().1 = true,
            _ => {}
        }
    }
    let with_items: Vec<bool> =
        carts.values().filter(|(cart, _)| cart.values().any(|&q| q > 0)).map(|&(_, bought)| bought).collect();
    let abandoned = with_items.iter().filter(|&&b| !b).count();
    (abandoned as f64 / with_items.len() as f64, with_items.len())
}

#[test]
fn the_configured_share_of_carts_is_abandoned() {
    // Without lapsers and offers (which force or forbid orders) the share
    // is exactly the configured one, up to sampling noise.
    let cfg = Config { lapse_share: 0.0, offers: vec![], abandon_share: 0.6, ..small() };
    let (_, events) = run(cfg, 20);
    let (share, carts) = abandoned_share(&events, |_| true);
    assert!(carts > 3_000, "{carts}");
    assert!((share - 0.6).abs() < 0.03, "{share:.3} of {carts} carts abandoned, configured 0.6");

    // With the defaults, active customers abandon close to 70%.
    let (g, events) = run(small(), 20);
    let pop = g.population();
    let (share, carts) = abandoned_share(&events, |e| !pop.by_id(&e.customer).unwrap().persona.is_lapsed(e.time));
    assert!((share - 0.7).abs() < 0.04, "{share:.3} of {carts} carts abandoned, configured 0.7");
}

#[test]
fn lapsers_stop_purchasing_but_still_browse_now_and_then() {
    let cfg = Config { lapse_after: Duration::from_days(10), ..small() };
    let (g, events) = run(cfg, 40);
    let pop = g.population();
    let (mut before, mut clicks_after) = (0, 0);
    for e in &events {
        let persona = &pop.by_id(&e.customer).unwrap().persona;
        let Some(lapse_at) = persona.lapse_at else { continue };
        match &e.kind {
            EventKind::Purchase(p) => {
                assert!(e.time < lapse_at, "{} bought {} after lapsing", e.customer, p.order_id);
                before += 1;
            }
            EventKind::Click(_) if e.time >= lapse_at => clicks_after += 1,
            _ => {}
        }
    }
    assert!(before > 100, "{before}");
    assert!(clicks_after > 100, "{clicks_after}");
}

#[test]
fn offers_convert_better_in_their_audience() {
    let cfg = Config { customers: 5_000, offer_share: 0.5, ..small() };
    let (g, events) = run(cfg, 30);
    let keto = Category::parse("keto").unwrap();
    // (delivered, converted) for keto shoppers and for everyone else
    let mut stats = [(0u32, 0u32); 2];
    let mut outcomes = HashMap::new();
    for e in &events {
        if let EventKind::OfferOutcome(o) = &e.kind {
            *outcomes.entry(o.outcome).or_insert(0u32) += 1;
            if o.offer_id != "keto_bundle" {
                continue;
            }
            let who = usize::from(!g.population().by_id(&e.customer).unwrap().persona.prefers(keto));
            match o.outcome {
                Outcome::Delivered => stats[who].0 += 1,
                Outcome::Converted => stats[who].1 += 1,
                _ => {}
            }
        }
    }
    for o in Outcome::ALL {
        assert!(outcomes.get(&o).copied().unwrap_or(0) > 0, "no {o:?} outcomes");
    }
    let rate = |(d, c): (u32, u32)| f64::from(c) / f64::from(d.max(1));
    let (keto_rate, other_rate) = (rate(stats[0]), rate(stats[1]));
    assert!(stats[0].0 > 200 && stats[1].0 > 1_000, "{stats:?}");
    assert!(keto_rate > 0.2 && other_rate < 0.05, "keto {keto_rate:.3}, others {other_rate:.3}");
    let keto_customer = g.population().customers().iter().find(|c| c.persona.prefers(keto)).unwrap();
    assert_eq!(g.conversion_rate("keto_bundle", &keto_customer.id, g.now()), Some(0.30));
}

#[test]
fn shards_together_are_the_whole() {
    let mut all: Vec<Event> = run(small(), 5).1;
    let mut parts: Vec<Event> =
        (0..3).flat_map(|index| run(Config { shard: Some(Shard { index, count: 3 }), ..small() }, 5).1).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    parts.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all.len(), parts.len());
    assert!(all == parts);
}

#[test]
fn the_event_rate_follows_the_config() {
    let mut cfg = small();
    cfg.set_events_per_second(0.5); // 3.4 sessions per customer per day
    let expected = cfg.events_per_second();
    let (_, events) = run(cfg, 10);
    let measured = events.len() as f64 / (10.0 * 86_400.0);
    assert!((measured / expected - 1.0).abs() < 0.2, "{measured:.3} events/s, expected {expected:.3}");
}

#[test]
fn birthdays_fall_in_every_month() {
    let g = Generator::new(small()).unwrap();
    let mut months = HashSet::new();
    let start_year = g.config().start.civil().0;
    for c in g.population().customers() {
        if let Some(d) = c.profile.birth_date {
            months.insert(d.month);
            assert!((17..=81).contains(&(start_year - d.year)));
        }
    }
    assert_eq!(months.len(), 12);
}

#[test]
fn forgotten_customers_are_never_seen_again() {
    let cfg = Config { forget_share: 0.05, forget_within: Duration::from_days(10), ..small() };
    let (_, events) = run(cfg, 20);
    let mut forgotten = HashSet::new();
    for e in &events {
        assert!(!forgotten.contains(&e.customer), "{} seen after being forgotten: {e:?}", e.customer);
        if e.kind == EventKind::Forget {
            forgotten.insert(e.customer.clone());
        }
    }
    assert!(forgotten.len() > 30, "{}", forgotten.len());
    // Off by default, and turning it on leaves everyone else's traffic alone.
    let (_, plain) = run(small(), 20);
    assert!(plain.iter().all(|e| e.kind != EventKind::Forget));
    let kept = |evs: &[Event]| evs.iter().filter(|e| !forgotten.contains(&e.customer)).cloned().collect::<Vec<_>>();
    assert!(kept(&plain) == kept(&events));
}
