//! Decoded states of a partition's recently active customers, kept across
//! batches so that a hot customer is neither read from the store nor decoded
//! again for every batch it appears in (with Zipf-skewed traffic, most of a
//! batch's customers were in a recent one).
//!
//! The cache always agrees with the store once the batch in hand commits:
//! states are taken out for a batch and put back after it is processed, a
//! batch that fails to deliver or commit stops the worker (and the cache
//! with it), and a revoked partition drops its cache with its runtime.
//!
//! Two generations approximate LRU without bookkeeping on hits: states go
//! into `young`; when `young` holds half the budget, `old` is dropped and
//! `young` becomes `old`. A state used again is taken out of whichever
//! generation holds it and put back into `young`. A re-evaluation slice after
//! a rules change judges its customers on their stored bytes, not here; one
//! the change moves is removed (`remove`, not counted as a use) and goes
//! through the batch like any other, so a scan over every customer does not
//! push out the busy ones.
//!
//! States are boxed: a batch moves each one out of the cache and back, and a
//! `CustomerState` is over 700 bytes inline. The two tables swap roles at a
//! generation change instead of being rebuilt, so a full cache neither
//! rehashes nor faults in fresh pages for its tables again.

use cohort_core::state::CustomerState;
use foldhash::HashMap;

/// Bytes charged for a cached state: its encoded size times this, plus
/// [`ENTRY_OVERHEAD`]. Decoded states hold their windows, sets and maps in
/// separate allocations; `hot::tests::charge_covers_the_decoded_size` checks
/// this bound against the allocator's count.
pub const DECODED_PER_ENCODED_BYTE: usize = 4;
/// Bytes charged per entry on top of the state: key, map slot, allocator slack.
pub const ENTRY_OVERHEAD: usize = 256;

/// What a state costs in the cache, from its encoded size.
pub fn charge(encoded_len: usize) -> usize {
    encoded_len * DECODED_PER_ENCODED_BYTE + ENTRY_OVERHEAD
}

#[derive(Default)]
pub struct HotStates {
    young: HashMap<String, (Box<CustomerState>, usize)>,
    old: HashMap<String, (Box<CustomerState>, usize)>,
    young_bytes: usize,
    old_bytes: usize,
    budget: usize,
    pub hits: u64,
    pub misses: u64,
}

impl HotStates {
    #[cfg(test)]
    pub fn new(budget_bytes: usize) -> HotStates {
        HotStates { budget: budget_bytes, ..Default::default() }
    }

    /// Changes the budget (on rebalance, when the worker's budget is split
    /// over a different number of partitions); shrinks at the next `put`.
    pub fn set_budget(&mut self, budget_bytes: usize) {
        self.budget = budget_bytes;
        if budget_bytes == 0 {
            self.clear();
        }
    }

    /// Takes a customer's state out of the cache, with its charge.
    pub fn take(&mut self, customer: &str) -> Option<(String, Box<CustomerState>, usize)> {
        let found = self.remove(customer);
        self.count(found.is_some());
        found
    }

    /// [`HotStates::take`] without counting a hit or miss: for a state the
    /// batch's events and timers did not ask for (a re-evaluation slice's).
    pub fn remove(&mut self, customer: &str) -> Option<(String, Box<CustomerState>, usize)> {
        if let Some((k, (s, c))) = self.young.remove_entry(customer) {
            self.young_bytes -= c;
            Some((k, s, c))
        } else if let Some((k, (s, c))) = self.old.remove_entry(customer) {
            self.old_bytes -= c;
            Some((k, s, c))
        } else {
            None
        }
    }

    fn count(&mut self, hit: bool) {
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
    }

    /// Puts a customer's current state back.
    pub fn put(&mut self, customer: String, state: Box<CustomerState>, charge: usize) {
        if charge > self.budget / 2 {
            return;
        }
        if self.young_bytes + charge > self.budget / 2 {
            // `old` is dropped and its table, emptied, becomes `young`.
            std::mem::swap(&mut self.old, &mut self.young);
            self.young.clear();
            // After the budget fell (a rebalance brought more partitions),
            // a generation holds fewer states: give back the slots.
            if self.young.capacity() > 4 * self.old.len().max(16) {
                self.young.shrink_to(self.old.len());
            }
            self.old_bytes = std::mem::replace(&mut self.young_bytes, 0);
        }
        self.young_bytes += charge;
        if let Some((_, c)) = self.young.insert(customer, (state, charge)) {
            self.young_bytes -= c;
        }
    }

    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_bytes = 0;
        self.old_bytes = 0;
    }

    /// Bytes charged for the states held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.young_bytes + self.old_bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: i64) -> Box<CustomerState> {
        Box::new(CustomerState { first_seen: Some(cohort_core::time::Timestamp(n)), ..Default::default() })
    }

    #[test]
    fn a_state_put_back_is_found_and_a_taken_one_is_gone() {
        let mut h = HotStates::new(1 << 20);
        h.put("a".into(), state(1), 100);
        let (k, s, c) = h.take("a").expect("cached");
        assert_eq!((k.as_str(), s, c), ("a", state(1), 100));
        assert!(h.take("a").is_none(), "taken out for the batch");
        assert_eq!((h.hits, h.misses, h.bytes()), (1, 1, 0));
    }

    #[test]
    fn stays_within_its_budget_and_keeps_the_most_recent() {
        let mut h = HotStates::new(10_000);
        for i in 0..1_000 {
            h.put(format!("c{i}"), state(i), 100);
            assert!(h.bytes() <= 10_000, "over budget after {i}: {}", h.bytes());
        }
        // The last half-budget's worth is always there.
        for i in 950..1_000 {
            assert!(h.take(&format!("c{i}")).is_some(), "c{i} evicted");
        }
        assert!(h.take("c0").is_none());
    }

    #[test]
    fn a_state_used_again_survives_a_generation_change() {
        // 1,000 bytes at 100 a state: "hot" and c0..c3 fill a generation,
        // c4 starts the next, and "hot" is in `old` now; using it brings it
        // back to `young`.
        let mut h = HotStates::new(1_000);
        h.put("hot".into(), state(0), 100);
        for i in 0..5 {
            h.put(format!("c{i}"), state(i), 100);
        }
        let (k, s, c) = h.take("hot").expect("still cached");
        h.put(k, s, c);
        for i in 5..9 {
            h.put(format!("c{i}"), state(i), 100);
        }
        // c0 was dropped with its generation.
        assert!(h.take("hot").is_some());
        assert!(h.take("c0").is_none());
    }

    #[test]
    fn a_generation_change_reuses_the_tables() {
        let mut h = HotStates::new(100 * 1_000);
        for i in 0..500 {
            h.put(format!("c{i}"), state(i), 100);
        }
        let grown = h.young.capacity();
        assert!(grown >= 500);
        // The next put starts a generation: the full table becomes `old`
        // and the emptied one, with its capacity, `young`.
        h.put("next".into(), state(0), 100);
        assert_eq!((h.young.len(), h.old.len()), (1, 500));
        for i in 0..500 {
            h.put(format!("d{i}"), state(i), 100);
        }
        assert!(h.young.capacity() >= grown && h.old.capacity() >= grown);
        assert_eq!(h.old.len(), 500, "the previous generation was dropped");
    }

    #[test]
    fn tables_shrink_after_the_budget_falls() {
        let mut h = HotStates::new(100 * 10_000);
        for i in 0..30_000 {
            h.put(format!("c{i}"), state(i), 100);
        }
        let big = h.young.capacity().max(h.old.capacity());
        assert!(big >= 5_000);
        h.set_budget(100 * 100);
        for i in 0..1_000 {
            h.put(format!("d{i}"), state(i), 100);
        }
        assert!(
            h.young.capacity() < big / 4 && h.old.capacity() < big / 4,
            "{} {}",
            h.young.capacity(),
            h.old.capacity()
        );
        assert!(h.bytes() <= 100 * 100);
    }

    /// Counts the calling thread's live heap bytes, so the charge can be
    /// checked against what decoded states really hold. The only unsafe code
    /// in the crate: a test allocator forwarding to the system's.
    struct Counting;
    thread_local! {
        static LIVE: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
    }
    #[allow(unsafe_code)]
    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
            LIVE.with(|c| c.set(c.get() + l.size() as isize));
            unsafe { std::alloc::System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
            LIVE.with(|c| c.set(c.get() - l.size() as isize));
            unsafe { std::alloc::System.dealloc(p, l) }
        }
    }
    #[global_allocator]
    static COUNTING: Counting = Counting;
    fn live() -> isize {
        LIVE.with(|c| c.get())
    }

    #[test]
    fn charge_covers_the_decoded_size() {
        use cohort_core::engine::{apply, Engine, Input, Origin, Tables};
        let rules_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
        let rules = crate::worker::load_rules(&rules_path).expect("rules");
        let engine = Engine::new(rules, Default::default());
        let tables = Tables::default();
        let load = cohort_loadgen::Config { customers: 2_000, seed: 7, ..Default::default() };
        let mut states: HashMap<String, CustomerState> = HashMap::default();
        for (i, e) in cohort_loadgen::Generator::new(load).expect("generator").take(100_000).enumerate() {
            let s = states.entry(e.customer.clone()).or_default();
            let origin = Origin { topic: "clickstream", partition: 0, offset: i as i64 };
            apply(s, Input::Event(&e, origin), &tables.context(&engine));
        }
        let (mut charged, mut held, mut worst) = (0usize, 0usize, 0f64);
        for s in states.values() {
            let bytes = cohort_core::encode::encode(s);
            let before = live();
            let decoded = cohort_core::encode::decode(&bytes).expect("decodes");
            let size = (live() - before) as usize
                + std::mem::size_of::<(String, (Box<CustomerState>, usize))>()
                + std::mem::size_of::<CustomerState>()
                + 40;
            drop(decoded);
            charged += charge(bytes.len());
            held += size;
            worst = worst.max(size as f64 / charge(bytes.len()) as f64);
        }
        eprintln!(
            "{} states: charged {charged} B, held {held} B ({:.2} of the charge), worst state {worst:.2}",
            states.len(),
            held as f64 / charged as f64
        );
        assert!(held <= charged, "decoded states hold {held} B but are charged {charged} B");
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count() {
        let mut h = HotStates::new(1 << 20);
        h.put("a".into(), state(1), 100);
        h.put("a".into(), state(2), 300);
        assert_eq!((h.len(), h.bytes()), (1, 300));
        h.take("a");
        assert_eq!((h.len(), h.bytes()), (0, 0));
        h.put("b".into(), state(1), 100);
        h.set_budget(0);
        assert!(h.is_empty());
        h.put("c".into(), state(1), 100);
        assert!(h.is_empty(), "a zero budget caches nothing");
    }
}
