//! A fixed-size bitset of segment indexes.

use serde::{Deserialize, Serialize};

/// The most segments one rules file may define. 256 bits keep a
/// [`SegmentSet`] at 32 bytes, `Copy`, and cheap to compare and store per
/// customer.
pub const MAX_SEGMENTS: usize = 256;

/// A set of segment indexes (positions in [`super::RuleSet::segments`]).
///
/// Evaluation writes into one of these instead of a `Vec<String>`, so it
/// allocates nothing, and "what changed" is two XORs.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentSet {
    bits: [u64; MAX_SEGMENTS / 64],
}

impl SegmentSet {
    /// The empty set.
    pub const fn new() -> Self {
        SegmentSet { bits: [0; MAX_SEGMENTS / 64] }
    }

    /// Add `i`. Indexes `>= MAX_SEGMENTS` are ignored (no rules file can
    /// define them).
    #[inline]
    pub fn insert(&mut self, i: usize) {
        if i < MAX_SEGMENTS {
            self.bits[i / 64] |= 1 << (i % 64);
        }
    }

    /// Remove `i`.
    #[inline]
    pub fn remove(&mut self, i: usize) {
        if i < MAX_SEGMENTS {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Whether `i` is in the set.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        i < MAX_SEGMENTS && self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Remove everything.
    pub fn clear(&mut self) {
        self.bits = [0; MAX_SEGMENTS / 64];
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// Members in `self` but not in `other` (entered = new.difference(old)).
    pub fn difference(&self, other: &SegmentSet) -> SegmentSet {
        let mut out = *self;
        for (w, o) in out.bits.iter_mut().zip(other.bits.iter()) {
            *w &= !o;
        }
        out
    }

    /// Members in either set.
    pub fn union(&self, other: &SegmentSet) -> SegmentSet {
        let mut out = *self;
        for (w, o) in out.bits.iter_mut().zip(other.bits.iter()) {
            *w |= o;
        }
        out
    }

    /// Members in both sets.
    pub fn intersection(&self, other: &SegmentSet) -> SegmentSet {
        let mut out = *self;
        for (w, o) in out.bits.iter_mut().zip(other.bits.iter()) {
            *w &= o;
        }
        out
    }

    /// The smallest member, if any.
    pub fn first(&self) -> Option<usize> {
        self.bits.iter().enumerate().find(|(_, w)| **w != 0).map(|(wi, w)| wi * 64 + w.trailing_zeros() as usize)
    }

    /// Whether the two sets share a member.
    pub fn intersects(&self, other: &SegmentSet) -> bool {
        self.bits.iter().zip(other.bits.iter()).any(|(a, b)| a & b != 0)
    }

    /// Members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

impl std::fmt::Debug for SegmentSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for SegmentSet {
    fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
        let mut s = SegmentSet::new();
        for i in iter {
            s.insert(i);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a: SegmentSet = [0, 63, 64, 255, 300].into_iter().collect();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 63, 64, 255]);
        assert_eq!(a.len(), 4);
        let b: SegmentSet = [63, 1].into_iter().collect();
        assert_eq!(a.difference(&b).iter().collect::<Vec<_>>(), vec![0, 64, 255]);
        assert!(a.intersects(&b));
        assert_eq!(a.intersection(&b).iter().collect::<Vec<_>>(), vec![63]);
        assert_eq!(a.first(), Some(0));
        assert_eq!(b.first(), Some(1));
        assert_eq!(SegmentSet::new().first(), None);
        let mut c = a.union(&b);
        c.remove(0);
        assert!(!c.contains(0) && c.contains(1));
        c.clear();
        assert!(c.is_empty());
    }
}
