//! A partition's pending timers: at most one per customer, found by
//! customer and taken in due order.
//!
//! Nearly every event moves its customer's timer, and many timers share a
//! due time (rules that change at a day boundary), so the due-order index
//! breaks ties on a fixed hash of the customer id before the id itself: its
//! comparisons are of integers, and the string is only compared on the
//! entry itself or on a hash collision. Timers due at the same instant are
//! taken in that hash order, the same in every run.

use cohort_core::time::Timestamp;
use foldhash::{HashMap, HashMapExt};
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

/// A fixed seed, so the order of simultaneous timers does not depend on the
/// process (foldhash's default is seeded per process).
const TIE_SEED: u64 = 0x636f_686f_7274_7469;

fn tie(customer: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(TIE_SEED).hash_one(customer)
}

#[derive(Default)]
pub(crate) struct Timers {
    /// Due order. The customer `Arc` is shared with `due_of`: moving a timer
    /// allocates nothing.
    by_due: BTreeSet<(Timestamp, u64, Arc<str>)>,
    due_of: HashMap<Arc<str>, Timestamp>,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers { by_due: BTreeSet::new(), due_of: HashMap::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.due_of.len()
    }

    /// The customer's pending timer.
    pub(crate) fn get(&self, customer: &str) -> Option<Timestamp> {
        self.due_of.get(customer).copied()
    }

    /// Sets (or with `None` clears) the customer's timer. When that changes
    /// anything, returns the customer's id and the timer it had before.
    pub(crate) fn set(&mut self, customer: &str, due: Option<Timestamp>) -> Option<(Arc<str>, Option<Timestamp>)> {
        let Some((id, &old)) = self.due_of.get_key_value(customer) else {
            let due = due?;
            let id: Arc<str> = Arc::from(customer);
            self.by_due.insert((due, tie(customer), id.clone()));
            self.due_of.insert(id.clone(), due);
            return Some((id, None));
        };
        if Some(old) == due {
            return None;
        }
        let h = tie(customer);
        let id = id.clone();
        let indexed = self.by_due.remove(&(old, h, id.clone()));
        debug_assert!(indexed, "both indexes hold every timer");
        match due {
            // A move: the customer keeps its entry (and its `Arc`).
            Some(due) => {
                self.by_due.insert((due, h, id.clone()));
                *self.due_of.get_mut(customer).expect("just found") = due;
            }
            None => {
                self.due_of.remove(customer);
            }
        }
        Some((id, Some(old)))
    }

    /// Removes and returns the earliest timer due at or before `watermark`.
    pub(crate) fn pop_due(&mut self, watermark: Timestamp) -> Option<(Timestamp, Arc<str>)> {
        if self.by_due.first()?.0 > watermark {
            return None;
        }
        let (due, _, id) = self.by_due.pop_first()?;
        self.due_of.remove(&id);
        Some((due, id))
    }

    /// The customers whose timers are due at or before `horizon`, in due order.
    pub(crate) fn due_by(&self, horizon: Timestamp) -> impl Iterator<Item = &Arc<str>> {
        self.by_due.iter().take_while(move |(due, _, _)| *due <= horizon).map(|(_, _, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_clears_and_pops_in_due_order() {
        let mut t = Timers::new();
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
        assert_eq!(t.due_by(Timestamp(10)).map(|c| c.to_string()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t.pop_due(Timestamp(4)), None);
        assert_eq!(t.pop_due(Timestamp(10)).map(|(d, c)| (d, c.to_string())), Some((Timestamp(5), "a".into())));
        assert_eq!(t.pop_due(Timestamp(10)).map(|(d, c)| (d, c.to_string())), Some((Timestamp(10), "b".into())));
        assert_eq!((t.pop_due(Timestamp(i64::MAX)), t.len()), (None, 0));
    }

    #[test]
    fn simultaneous_timers_keep_one_order_through_any_moves() {
        // Many customers due at one instant, set in two different orders
        // and moved on the way: both indexes agree with a plain map, and
        // the instant's timers pop in the same order either way.
        let ids: Vec<(usize, String)> = (0..2_000).map(|i| (i, format!("c-{i:05}"))).collect();
        let day = Timestamp(86_400_000);
        let run = |order: &mut dyn Iterator<Item = &(usize, String)>| {
            let mut t = Timers::new();
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
}
