//! A customer id kept inline when it is short, for the maps that hold
//! every customer of a partition (the pending timers).
//!
//! In a map of a million customers a lookup misses the caches to reach the
//! table; with the id behind a pointer (`Arc<str>`, `String`) it misses once
//! more to compare the id's bytes. Held inline, the id is compared where the
//! table slot already is. Ids of up to [`INLINE`] bytes (a UUID is 36) are
//! inline; a longer one is shared behind an `Arc`, as before.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// The longest id held inline: with its length and the variant's tag, the
/// type is 40 bytes.
pub const INLINE: usize = 38;

/// A customer id (see the module doc). Compares, orders and hashes as its
/// bytes (`[u8]`), so a map keyed by it is looked up with `id.as_bytes()`:
/// no UTF-8 check on the way.
#[derive(Clone)]
pub struct CustomerId(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl CustomerId {
    pub fn new(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                Self(Repr::Inline { len, bytes })
            }
            _ => Self(Repr::Shared(Arc::from(id))),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied from a `str` whole (`new`): always UTF-8. Checked again
            // here (no `unsafe`); lookups compare and hash bytes instead.
            Repr::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)]).expect("copied from a str"),
            Repr::Shared(id) => id,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(id) => id.as_bytes(),
        }
    }

    /// Whether the id is held inline (tests).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl From<&str> for CustomerId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl Deref for CustomerId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<[u8]> for CustomerId {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for CustomerId {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for CustomerId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CustomerId {}

impl PartialOrd for CustomerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The order of `str`: by bytes.
impl Ord for CustomerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// As `[u8]` hashes, which `Borrow<[u8]>` requires.
impl Hash for CustomerId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Debug for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldhash::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn short_ids_are_inline_and_long_ones_shared() {
        assert_eq!(std::mem::size_of::<CustomerId>(), 40);
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        for (id, inline) in [("", true), ("c-0000001", true), (uuid, true), (&*"x".repeat(INLINE), true)] {
            let c = CustomerId::new(id);
            assert_eq!((c.as_str(), c.is_inline()), (id, inline));
        }
        let long = "é".repeat(INLINE); // 76 bytes
        let c = CustomerId::new(&long);
        assert_eq!((c.as_str(), c.is_inline()), (&*long, false));
        let c = CustomerId::new(&"x".repeat(INLINE + 1));
        assert!(!c.is_inline());
    }

    #[test]
    fn compares_orders_and_hashes_as_its_str() {
        let ids = ["", "a", "ab", "b", "ü", &"y".repeat(INLINE), &"y".repeat(INLINE + 1), &"y".repeat(300)];
        let hasher = foldhash::fast::RandomState::default();
        for a in ids {
            let ca = CustomerId::new(a);
            assert_eq!(hasher.hash_one(&ca), hasher.hash_one(a.as_bytes()), "{a:?}");
            for b in ids {
                let cb = CustomerId::new(b);
                assert_eq!(ca == cb, a == b);
                assert_eq!(ca.cmp(&cb), a.cmp(b), "{a:?} {b:?}");
            }
        }
        // Looked up by bytes in a map keyed by ids, inline or shared.
        let map: HashMap<CustomerId, usize> = ids.iter().enumerate().map(|(i, id)| (CustomerId::new(id), i)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(map.get(id.as_bytes()), Some(&i));
        }
        assert_eq!(map.get(&b"zz"[..]), None);
    }
}
