//! Engine throughput: realistic events (mostly clicks, some purchases,
//! Zipf-skewed customers and products) applied against the example rules
//! (22 segments, 11 offers), one core, states in memory; and the state
//! encoding of a busy and a typical customer. System allocator; see
//! `engine_mimalloc` for the allocator the `cohort` binary uses.
//!
//! Run: `cargo bench -p cohort-core --bench engine`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    common::bench(c, "");
}

criterion_group!(benches, bench);
criterion_main!(benches);
