//! Generates events as fast as possible and prints the rate; run it under
//! `perf stat -e task-clock` on a busy machine to get events per CPU-second.
//!
//! `cargo run --release -p cohort-loadgen --example throughput -- [customers] [events]`

use cohort_loadgen::{Config, Generator};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("a number"));
    let customers = args.next().unwrap_or(10_000) as u32;
    let events = args.next().unwrap_or(5_000_000);
    let mut gen = Generator::new(Config { customers, products: 5_000, ..Config::default() }).expect("valid config");
    // Past the start-up transient, like the criterion bench.
    for _ in 0..100_000 {
        black_box(gen.next());
    }
    let t0 = Instant::now();
    for _ in 0..events {
        black_box(gen.next());
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{customers} customers: {events} events in {secs:.2}s wall = {:.0} events/s", events as f64 / secs);
}
