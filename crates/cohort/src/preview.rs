//! `cohort preview` and `POST /admin/preview`: a candidate rules file
//! evaluated over a store's customers without producing or writing
//! anything (cohort-core's [`Preview`] decides each customer exactly as a
//! switch would).
//!
//! Partitions are read in parallel, one thread per core, each in key order
//! with its own decoder; a state that does not decode is counted and
//! skipped, as the worker would reset it.

use anyhow::{anyhow, Context as _};
use cohort_core::engine::{Engine, EngineSettings};
use cohort_core::preview::Preview;
use cohort_core::rules::RuleSet;
use cohort_store::Store;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Compiles a candidate rules text, refusing it with `name:line:column`.
pub fn candidate(name: &str, text: &str) -> anyhow::Result<Engine> {
    let rules = RuleSet::from_yaml(name, text).map_err(|e| anyhow!("{e}"))?;
    Ok(Engine::new(rules, EngineSettings::default()))
}

/// The preview of `candidate` against `current` over `partitions` of
/// `store` (every partition the store holds if `None`).
pub fn preview_store(
    store: &Store,
    current: &RuleSet,
    candidate: &Engine,
    partitions: Option<Vec<u32>>,
    samples: usize,
) -> anyhow::Result<Preview> {
    let partitions = match partitions {
        Some(p) => p,
        None => store.partitions().context("listing the store's partitions")?,
    };
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(partitions.len().max(1));
    let results: Vec<anyhow::Result<Preview>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Preview::new(current, candidate.rules(), samples);
                    while let Some(&p) = partitions.get(next.fetch_add(1, Ordering::Relaxed)) {
                        mine.merge(preview_partition(store, current, candidate, p, samples)?);
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a preview thread panicked")))).collect()
    });
    let mut all = Preview::new(current, candidate.rules(), samples);
    for r in results {
        all.merge(r?);
    }
    Ok(all)
}

fn preview_partition(
    store: &Store,
    current: &RuleSet,
    candidate: &Engine,
    partition: u32,
    samples: usize,
) -> anyhow::Result<Preview> {
    let mut preview = Preview::new(current, candidate.rules(), samples);
    let Some(meta) =
        store.partition_meta(partition).with_context(|| format!("reading partition {partition}'s metadata"))?
    else {
        return Ok(preview);
    };
    for item in store.iter_partition_states(partition) {
        let Ok((customer, bytes)) = item else { continue };
        let Ok(state) = cohort_core::encode::decode(&bytes) else { continue };
        preview.add(candidate, &customer, state, meta.watermark, &meta.tables);
    }
    Ok(preview)
}
