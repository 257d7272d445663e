//! The `engine` benchmark with mimalloc as the global allocator, as in the
//! `cohort` binary (crates/cohort/src/main.rs), so the figures include the
//! allocator the product runs with.
//!
//! Run: `cargo bench -p cohort-core --bench engine_mimalloc`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    common::bench(c, "_mimalloc");
}

criterion_group!(benches, bench);
criterion_main!(benches);
