//! A partition's pending timers: at most one per customer, found by
//! customer and taken in due order.
//!
//! Nearly every event moves its customer's timer, so a move must be cheap.
//! The due order is a binary min-heap with lazy deletion: a move pushes the
//! new entry and leaves the old one in place, stale; an entry is live while
//! the customer's current due (`due_of`) equals it, and stale ones are
//! skipped when popped. A new due is usually later than most pending ones,
//! so the push stays near the bottom of the heap: a move costs two map
//! lookups and a few comparisons, where an ordered tree cost two searches
//! with a cache miss per level. [`Timers::compact`], called between
//! batches, rebuilds the heap from `due_of` once stale entries outnumber
//! live ones.
//!
//! Many timers share a due time (rules that change at a day boundary), so
//! ties break on a hash of the customer id (FNV-1a, written here so that it
//! never changes with a dependency) before the id itself: comparisons are of
//! integers, and timers due at the same instant are taken in the same order
//! by every build and run.

use crate::time::Timestamp;
use foldhash::HashMap;
use std::sync::Arc;

/// FNV-1a, 64 bits.
fn tie(customer: &str) -> u64 {
    customer.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

type Entry = (Timestamp, u64, Arc<str>);

/// A customer's timer: fire `customer` once the partition's watermark reaches `due`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub due: Timestamp,
    pub customer: String,
}

/// A partition's pending timers (see the module doc).
#[derive(Default)]
pub struct Timers {
    /// A binary min-heap in array form (the children of `i` are `2i + 1`
    /// and `2i + 2`), with stale entries (see the module doc). The customer
    /// `Arc` is shared with `due_of`: a move allocates nothing.
    heap: Vec<Entry>,
    /// Each customer's one pending timer: what makes a heap entry live.
    due_of: HashMap<Arc<str>, Timestamp>,
}

impl Timers {
    pub fn len(&self) -> usize {
        self.due_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due_of.is_empty()
    }

    /// Every pending timer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Timestamp)> + '_ {
        self.due_of.iter().map(|(c, &due)| (&**c, due))
    }

    /// The customer's pending timer.
    pub fn get(&self, customer: &str) -> Option<Timestamp> {
        self.due_of.get(customer).copied()
    }

    /// Sets (or with `None` clears) the customer's timer. When that changes
    /// anything, returns the customer's id and the timer it had before.
    pub fn set(&mut self, customer: &str, due: Option<Timestamp>) -> Option<(Arc<str>, Option<Timestamp>)> {
        let (id, old) = match self.due_of.get_key_value(customer) {
            Some((_, &old)) if Some(old) == due => return None,
            Some((id, &old)) => (id.clone(), Some(old)),
            None => (Arc::from(due.map(|_| customer)?), None),
        };
        match due {
            Some(due) => {
                self.push((due, tie(customer), id.clone()));
                match self.due_of.get_mut(customer) {
                    Some(slot) => *slot = due,
                    None => {
                        self.due_of.insert(id.clone(), due);
                    }
                }
            }
            None => {
                self.due_of.remove(customer);
            }
        }
        Some((id, old))
    }

    /// Rebuilds the heap from the live timers if stale entries outnumber
    /// them. Between batches, so that the O(live) rebuild never lands on one
    /// event; amortised, it is a constant cost per move.
    pub fn compact(&mut self) {
        if self.heap.len() > 2 * self.due_of.len() + 64 {
            self.heap = self.due_of.iter().map(|(id, &due)| (due, tie(id), id.clone())).collect();
            self.heap.sort_unstable();
        }
    }

    fn is_live(&self, (due, _, id): &Entry) -> bool {
        self.due_of.get(id) == Some(due)
    }

    /// Removes and returns the earliest timer due at or before `watermark`.
    pub fn pop_due(&mut self, watermark: Timestamp) -> Option<(Timestamp, Arc<str>)> {
        loop {
            let top = self.heap.first()?;
            if top.0 > watermark {
                return None;
            }
            let live = self.is_live(top);
            let (due, _, id) = self.pop()?;
            if live {
                self.due_of.remove(&id);
                return Some((due, id));
            }
        }
    }

    /// Removes and returns `customer`'s timer if it is due at or before
    /// `by`, whatever the watermark: the customer's own event at `by`
    /// proves that its time has come. Its heap entry is left stale.
    pub fn take_due(&mut self, customer: &str, by: Timestamp) -> Option<(Timestamp, Arc<str>)> {
        let (id, &due) = self.due_of.get_key_value(customer)?;
        if due > by {
            return None;
        }
        let id = id.clone();
        self.due_of.remove(customer);
        Some((due, id))
    }

    /// The customers whose timers are due at or before `horizon`, in no
    /// particular order (a customer may appear twice). Visits only the part
    /// of the heap that is due, not the whole.
    pub fn due_by(&self, horizon: Timestamp) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            let Some(e) = self.heap.get(i) else { continue };
            if e.0 > horizon {
                // Its descendants are due no earlier.
                continue;
            }
            if self.is_live(e) {
                out.push(e.2.clone());
            }
            stack.extend([2 * i + 1, 2 * i + 2]);
        }
        out
    }

    fn push(&mut self, e: Entry) {
        self.heap.push(e);
        let mut i = self.heap.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent] <= self.heap[i] {
                break;
            }
            self.heap.swap(parent, i);
            i = parent;
        }
    }

    fn pop(&mut self) -> Option<Entry> {
        let last = self.heap.len().checked_sub(1)?;
        self.heap.swap(0, last);
        let top = self.heap.pop();
        let n = self.heap.len();
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < n && self.heap[l] < self.heap[least] {
                least = l;
            }
            if r < n && self.heap[r] < self.heap[least] {
                least = r;
            }
            if least == i {
                return top;
            }
            self.heap.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_clears_and_pops_in_due_order() {
        let mut t = Timers::default();
        assert_eq!(t.set("a", Some(Timestamp(30))).map(|(id, old)| (id.to_string(), old)), Some(("a".into(), None)));
        assert!(t.set("a", Some(Timestamp(30))).is_none(), "unchanged");
        assert!(t.set("z", None).is_none(), "nothing to clear");
        t.set("b", Some(Timestamp(10)));
        t.set("c", Some(Timestamp(20)));
        let (_, old) = t.set("a", Some(Timestamp(5))).expect("moved");
        assert_eq!(old, Some(Timestamp(30)));
        let (_, old) = t.set("c", None).expect("cleared");
        assert_eq!(old, Some(Timestamp(20)));
        assert_eq!((t.len(), t.get("a"), t.get("c")), (2, Some(Timestamp(5)), None));
        let mut due: Vec<String> = t.due_by(Timestamp(10)).iter().map(|c| c.to_string()).collect();
        due.sort();
        assert_eq!(due, ["a", "b"]);
        assert_eq!(t.pop_due(Timestamp(4)), None);
        assert_eq!(t.pop_due(Timestamp(10)).map(|(d, c)| (d, c.to_string())), Some((Timestamp(5), "a".into())));
        assert_eq!(t.pop_due(Timestamp(10)).map(|(d, c)| (d, c.to_string())), Some((Timestamp(10), "b".into())));
        assert_eq!((t.pop_due(Timestamp(i64::MAX)), t.len()), (None, 0));
    }

    #[test]
    fn the_tie_hash_is_fnv_1a() {
        // Pinned: the order of simultaneous timers must not change between builds.
        assert_eq!(tie(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(tie("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn simultaneous_timers_keep_one_order_through_any_moves() {
        // Many customers due at one instant, set in two different orders
        // and moved on the way: both indexes agree with a plain map, and
        // the instant's timers pop in the same order either way.
        let ids: Vec<(usize, String)> = (0..2_000).map(|i| (i, format!("c-{i:05}"))).collect();
        let day = Timestamp(86_400_000);
        let run = |order: &mut dyn Iterator<Item = &(usize, String)>| {
            let mut t = Timers::default();
            let mut model = std::collections::BTreeMap::new();
            for (k, (i, id)) in order.enumerate() {
                t.set(id, Some(Timestamp(k as i64)));
                t.set(id, Some(day));
                model.insert(id.clone(), day);
                if i % 3 == 0 {
                    t.set(id, None);
                    model.remove(id);
                }
            }
            for (id, due) in &model {
                assert_eq!(t.get(id), Some(*due));
            }
            assert_eq!(t.len(), model.len());
            let popped: Vec<String> = std::iter::from_fn(|| t.pop_due(day)).map(|(_, c)| c.to_string()).collect();
            assert_eq!(t.len(), 0);
            popped
        };
        let forward = run(&mut ids.iter());
        assert_eq!(forward.len(), 1_333);
        assert_eq!(forward, run(&mut ids.iter().rev()));
    }

    #[test]
    fn stale_entries_stay_bounded_and_never_fire() {
        // 300 customers each moved 100 times back and forth over a small set
        // of due times, some cleared: the heap stays within its bound, and
        // what is due and what pops equal a plain map's answer, once each.
        let mut t = Timers::default();
        let mut model = std::collections::BTreeMap::new();
        for round in 0..100i64 {
            for c in 0..300i64 {
                let id = format!("c-{c}");
                let due = if (c + round) % 17 == 0 { None } else { Some(Timestamp((c * 7 + round * 13) % 50)) };
                t.set(&id, due);
                match due {
                    Some(d) => model.insert(id, d),
                    None => model.remove(&id),
                };
            }
            // Between batches.
            t.compact();
            assert!(t.heap.len() <= 2 * t.len() + 64, "heap {} for {} timers", t.heap.len(), t.len());
            assert!(t.heap.iter().enumerate().skip(1).all(|(i, e)| t.heap[(i - 1) / 2] <= *e), "heap order");
        }
        let horizon = Timestamp(20);
        let mut due: Vec<String> = t.due_by(horizon).iter().map(|c| c.to_string()).collect();
        due.sort();
        due.dedup();
        let mut expected: Vec<String> = model.iter().filter(|(_, d)| **d <= horizon).map(|(c, _)| c.clone()).collect();
        expected.sort();
        assert_eq!(due, expected);
        let mut popped: Vec<(Timestamp, String)> =
            std::iter::from_fn(|| t.pop_due(horizon)).map(|(d, c)| (d, c.to_string())).collect();
        assert!(popped.windows(2).all(|w| w[0].0 <= w[1].0), "due order");
        popped.sort();
        let mut expected: Vec<(Timestamp, String)> =
            model.iter().filter(|(_, d)| **d <= horizon).map(|(c, d)| (*d, c.clone())).collect();
        expected.sort();
        assert_eq!(popped, expected, "each live timer once, no stale one");
        assert_eq!(t.len(), model.len() - expected.len());
    }
}
