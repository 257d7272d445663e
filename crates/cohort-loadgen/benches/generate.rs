//! Generation throughput: how many events per second one core produces.
//!
//! `cargo bench -p cohort-loadgen --bench generate`

use cohort_loadgen::{Config, Generator};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const EVENTS: u64 = 100_000;

fn generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("loadgen");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(20);
    for customers in [10_000u32, 100_000, 1_000_000] {
        let config = Config { customers, products: 5_000, ..Config::default() };
        // One generator per size, warmed up past the first sessions, and
        // advanced by EVENTS per iteration: steady state, not start-up.
        let mut gen = Generator::new(config).expect("valid config");
        for _ in 0..EVENTS {
            black_box(gen.next());
        }
        group.bench_function(format!("{customers}_customers"), |b| {
            b.iter(|| {
                for _ in 0..EVENTS {
                    black_box(gen.next());
                }
            })
        });
    }
    group.bench_function("build_10k_customers", |b| {
        b.iter_batched(
            || Config { customers: 10_000, ..Config::default() },
            |cfg| black_box(Generator::new(cfg).expect("valid config")),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, generate);
criterion_main!(benches);
