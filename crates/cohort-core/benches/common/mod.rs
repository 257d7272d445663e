//! The engine benchmark's workload and cases, shared by the `engine` bench
//! (the system allocator) and `engine_mimalloc` (mimalloc, the `cohort`
//! binary's global allocator).

use cohort_core::encode::{decode, encode, encode_into};
use cohort_core::engine::{apply, Engine, EngineSettings, Input, Origin, Tables};
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, Event, EventKind, LineItem, ProfileUpdate, Purchase,
};
use cohort_core::rules::RuleSet;
use cohort_core::state::CustomerState;
use cohort_core::time::Timestamp;
use criterion::{BatchSize, Criterion, Throughput};
use std::hint::black_box;

const CUSTOMERS: usize = 20_000;
const PRODUCTS: usize = 5_000;
const CATEGORIES: [&str; 12] = [
    "keto",
    "vegan",
    "gluten-free",
    "snacks",
    "drinks",
    "bakery",
    "pantry",
    "dairy",
    "frozen",
    "produce",
    "meat",
    "baby",
];
const EVENTS: usize = 200_000;
const START: i64 = 1_709_542_800_000; // 2024-03-04T09:00:00Z

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over `n` ranks by inverse CDF.
struct Zipf(Vec<f64>);
impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for x in &mut cdf {
            *x /= acc;
        }
        Zipf(cdf)
    }
    fn sample(&self, r: &mut Rng) -> usize {
        let u = r.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

fn traffic() -> Vec<Event> {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let customers = Zipf::new(CUSTOMERS, 1.05);
    let products = Zipf::new(PRODUCTS, 1.1);
    let mut t = START;
    (0..EVENTS)
        .map(|i| {
            t += (r.next() % 800) as i64; // ~200k events over ~22 hours
            let c = customers.sample(&mut r);
            let p = products.sample(&mut r);
            let cat = CATEGORIES[p % CATEGORIES.len()];
            let roll = r.next() % 1000;
            let click = |kind: ClickKind| {
                let mut k = Click::new(kind);
                k.channel = Some(Channel::Web);
                if kind != ClickKind::PageView || roll % 2 == 0 {
                    k.product_id = Some(format!("sku-{p:05}"));
                    k.category = Some(cat.to_owned());
                    k.price = Some(3.5 + (p % 40) as f64);
                }
                EventKind::Click(k)
            };
            let kind = match roll {
                0..=549 => click(ClickKind::PageView),
                550..=819 => click(ClickKind::ProductView),
                820..=879 => click(ClickKind::Search),
                880..=939 => click(ClickKind::AddToCart),
                940..=954 => click(ClickKind::RemoveFromCart),
                955..=964 => click(ClickKind::CheckoutStarted),
                965..=989 => EventKind::Purchase(Purchase {
                    order_id: format!("o-{i}"),
                    items: (0..1 + roll % 3)
                        .map(|k| LineItem {
                            product_id: format!("sku-{:05}", (p + k as usize * 7) % PRODUCTS),
                            category: Some(CATEGORIES[(p + k as usize) % CATEGORIES.len()].to_owned()),
                            quantity: 1 + (k % 2) as i32,
                            unit_price: 4.0 + (p % 30) as f64,
                        })
                        .collect(),
                    total: 25.0 + (p % 90) as f64,
                    currency: "EUR".into(),
                    channel: Some(Channel::Web),
                }),
                _ => EventKind::ProfileUpdate(ProfileUpdate {
                    country: Some("DE".into()),
                    region: Some(if c % 3 == 0 { "Bavaria" } else { "Berlin" }.into()),
                    age: Some(18 + (c % 60) as u32),
                    consent: ConsentUpdate { email: Some(c % 4 != 0), web: Some(true), ..Default::default() },
                    ..Default::default()
                }),
            };
            Event { id: format!("ev-{i}"), customer: format!("cust-{c:06}"), time: Timestamp(t), kind }
        })
        .collect()
}

/// This thread's CPU time (Linux `/proc/thread-self/schedstat`, first field:
/// nanoseconds on a CPU); `None` elsewhere.
fn thread_cpu_time() -> Option<std::time::Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

/// Where the `i`th event was read (one partition of one topic).
fn origin(i: usize) -> Origin<'static> {
    Origin { topic: "clickstream", partition: 0, offset: i as i64 }
}

fn engine() -> Engine {
    let text = include_str!("../../tests/golden/rules.yaml");
    Engine::new(RuleSet::from_yaml("rules.yaml", text).expect("example rules load"), EngineSettings::default())
}

/// Every case; `suffix` tells the allocator's variant apart in the
/// benchmark ids (`engine`, `engine_mimalloc`).
pub fn bench(c: &mut Criterion, suffix: &str) {
    let engine = engine();
    let events = traffic();
    // Customer index per event, so the benchmark measures the engine, not a
    // map lookup (the worker's state cache is measured in cohort-store).
    let index: Vec<usize> =
        events.iter().map(|e| e.customer.trim_start_matches("cust-").parse::<usize>().unwrap_or(0)).collect();
    let mut tables = Tables::default();
    for e in &events {
        tables.observe(e);
    }

    let mut g = c.benchmark_group(format!("engine{suffix}"));
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function("apply_200k_events_20k_customers", |b| {
        b.iter_batched(
            || vec![CustomerState::default(); CUSTOMERS],
            |mut states| {
                let ctx = tables.context(&engine);
                let mut outputs = 0usize;
                for (i, (e, &ci)) in events.iter().zip(&index).enumerate() {
                    let d = apply(&mut states[ci], Input::Event(e, origin(i)), &ctx);
                    outputs += d.outputs.len();
                }
                black_box(outputs)
            },
            BatchSize::LargeInput,
        )
    });
    // The same work timed by this thread's CPU time instead of the wall
    // clock, so that other processes on a shared machine do not count.
    g.bench_function("apply_200k_events_20k_customers_cpu_time", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let mut states = vec![CustomerState::default(); CUSTOMERS];
                let ctx = tables.context(&engine);
                let start = thread_cpu_time();
                let wall = std::time::Instant::now();
                let mut outputs = 0usize;
                for (i, (e, &ci)) in events.iter().zip(&index).enumerate() {
                    outputs += apply(&mut states[ci], Input::Event(e, origin(i)), &ctx).outputs.len();
                }
                black_box(outputs);
                total += match (start, thread_cpu_time()) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => wall.elapsed(),
                };
            }
            total
        })
    });
    g.finish();

    // Warmed-up states for encoding figures: the busiest customer, and a
    // typical one (the median encoded size), which is what most loads and
    // stores of the worker see.
    let mut states = vec![CustomerState::default(); CUSTOMERS];
    let ctx = tables.context(&engine);
    for (i, (e, &ci)) in events.iter().zip(&index).enumerate() {
        apply(&mut states[ci], Input::Event(e, origin(i)), &ctx);
    }
    let mut by_size: Vec<(usize, usize)> = states.iter().enumerate().map(|(i, s)| (encode(s).len(), i)).collect();
    by_size.sort_unstable();
    let heavy = by_size.last().map(|&(_, i)| states[i].clone()).unwrap_or_default();
    let typical = by_size.get(by_size.len() / 2).map(|&(_, i)| states[i].clone()).unwrap_or_default();
    let mut g = c.benchmark_group(format!("state{suffix}"));
    g.throughput(Throughput::Elements(1));
    for (who, state) in [("busiest", &heavy), ("typical", &typical)] {
        let bytes = encode(state);
        g.bench_function(format!("encode_{who}_customer_{}_bytes", bytes.len()), |b| {
            b.iter(|| encode(black_box(state)))
        });
        let mut buf = Vec::new();
        g.bench_function(format!("encode_into_{who}_customer_{}_bytes", bytes.len()), |b| {
            b.iter(|| {
                encode_into(black_box(state), &mut buf);
                buf.len()
            })
        });
        g.bench_function(format!("decode_{who}_customer_{}_bytes", bytes.len()), |b| {
            b.iter(|| decode(black_box(&bytes)))
        });
    }
    g.finish();
}
