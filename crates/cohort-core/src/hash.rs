//! Stable hashes for output ids, holdout assignment and dedup.
//!
//! These values are persisted (in state) and published (output ids), so they
//! must never change between builds, platforms or Rust versions: std's
//! `DefaultHasher` gives no such promise. This is FNV-1a (128-bit) with a
//! final avalanche mix; it is not cryptographic and needs not be.

const FNV128_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const FNV128_PRIME: u128 = 0x0000000001000000000000000000013B;

/// An incremental stable 128-bit hasher.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher(u128);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(FNV128_OFFSET)
    }
}

impl StableHasher {
    /// A hasher at the FNV-1a offset basis.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        for &x in b {
            self.0 ^= u128::from(x);
            self.0 = self.0.wrapping_mul(FNV128_PRIME);
        }
        self
    }

    /// Feeds a string with a length prefix, so `("ab","c")` and `("a","bc")`
    /// hash differently.
    pub fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    /// Feeds an integer (little-endian).
    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// The 128-bit digest, mixed so that every input bit affects every
    /// output bit (FNV alone mixes the high bits poorly).
    pub fn finish128(self) -> u128 {
        let mut h = self.0;
        h ^= h >> 67;
        h = h.wrapping_mul(0x9e3779b97f4a7c15f39cc0605cedc835);
        h ^= h >> 71;
        h = h.wrapping_mul(0xd6e8feb86659fd93c2b2ae3d27d4eb4f);
        h ^= h >> 64;
        h
    }

    /// The low 64 bits of the digest.
    pub fn finish64(self) -> u64 {
        self.finish128() as u64
    }
}

/// A fast stable 64-bit hash of a byte string (8 bytes per step, then a
/// murmur-style finaliser), for hot paths such as per-event dedup where
/// FNV's byte-at-a-time 128-bit multiply is measurable.
pub fn fast64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x243f_6a88_85a3_08d3 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A `Hasher` over [`fast64`] for small in-memory maps keyed by names
/// (segment index lookups on every event); not persisted.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fast64(bytes) ^ self.0.rotate_left(5);
    }
}

/// Builds [`FastHasher`]s.
pub type FastBuildHasher = std::hash::BuildHasherDefault<FastHasher>;

/// A 128-bit id as 32 lower-case hex digits (the output id format).
pub fn hex128(v: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    let (high, low) = buf.split_at_mut(16);
    for (half, word) in [(high, (v >> 64) as u64), (low, v as u64)] {
        let mut rest = word;
        for b in half.iter_mut().rev() {
            *b = DIGITS[(rest & 15) as usize];
            rest >>= 4;
        }
    }
    // Only ASCII digits were written: the conversion cannot fail.
    String::from_utf8(buf.to_vec()).unwrap_or_default()
}

/// A stable number in `[0, 1)` for `(customer, offer)`: who is in an offer's
/// holdout does not change between decisions, replays or workers.
pub fn unit_interval(customer: &str, offer: &str) -> f64 {
    let h = StableHasher::new().str("holdout").str(customer).str(offer).finish64();
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_across_builds() {
        // Pinned: changing the hash changes published ids and holdout groups.
        assert_eq!(hex128(StableHasher::new().str("event-1").finish128()), "3970a628cf5923226ca422d3c667e2b9");
        let a = StableHasher::new().str("ab").str("c").finish128();
        let b = StableHasher::new().str("a").str("bc").finish128();
        assert_ne!(a, b);
        assert_eq!(hex128(1).len(), 32);
        for v in [0, 1, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 1 << 127] {
            assert_eq!(hex128(v), format!("{v:032x}"));
        }
    }

    #[test]
    fn fast64_is_pinned_and_length_sensitive() {
        assert_ne!(fast64(b"a"), fast64(b"a\0"));
        assert_ne!(fast64(b""), fast64(b"\0"));
        assert_eq!(fast64(b"event-1"), 0x3f2e_d5ce_2e29_3540);
    }

    #[test]
    fn holdout_fraction_is_roughly_uniform() {
        let n = 20_000;
        let inside = (0..n).filter(|i| unit_interval(&format!("c{i}"), "winback") < 0.1).count();
        assert!((1_600..2_400).contains(&inside), "{inside}");
    }
}
