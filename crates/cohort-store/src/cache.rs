//! The hot-customer cache: decoded state bytes by state key, bounded in bytes.
//!
//! Sharded, each shard a hash map plus a CLOCK ring (second-chance eviction,
//! an LRU approximation that needs no list surgery on hits). Commits write
//! through; a read miss fills the cache only if no commit touched the shard
//! between the read's start and the fill (a per-shard version), so a slow
//! reader can never put back a value older than a commit that already
//! returned.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::keys::key_partition;

/// Bytes charged per entry on top of its key and value: the slot, the map
/// bucket, the boxed key header and the `Bytes` header.
pub(crate) const ENTRY_OVERHEAD: usize = 80;
/// Shards are at least this big, so a small cache still holds big states.
const MIN_SHARD_BYTES: u64 = 1 << 20;
const MAX_SHARDS: u64 = 64;

/// Result of a cache lookup.
pub(crate) enum Lookup {
    Hit(Bytes),
    /// Not cached: fill with [`StateCache::fill`] passing this ticket back.
    Miss(FillTicket),
}

/// The shard and its version at lookup time.
#[derive(Clone, Copy)]
pub(crate) struct FillTicket {
    shard: usize,
    version: u64,
}

/// Counters and size of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub hits_total: u64,
    pub misses_total: u64,
    pub evictions_total: u64,
}

pub(crate) struct StateCache {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Slot {
    hash: u64,
    key: Box<[u8]>,
    value: Bytes,
    referenced: bool,
}

/// The map is keyed by the key's 64-bit hash (computed once per lookup), the
/// slot holds the key: a lookup whose key differs from the slot's is a miss,
/// and a key whose hash collides with a cached different key is simply not
/// cached. Correct for any hash; with 64 bits, collisions do not happen in
/// practice.
#[derive(Default)]
struct Shard {
    map: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    slots: Vec<Slot>,
    hand: usize,
    bytes: usize,
    version: u64,
    evictions: u64,
}

fn cost(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + ENTRY_OVERHEAD
}

fn hash_key(key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(key);
    h.finish()
}

impl StateCache {
    pub(crate) fn new(capacity_bytes: u64) -> StateCache {
        let shards = (capacity_bytes / MIN_SHARD_BYTES).clamp(1, MAX_SHARDS);
        let shards = if shards.is_power_of_two() { shards } else { shards.next_power_of_two() / 2 };
        let shard_capacity = usize::try_from(capacity_bytes / shards).unwrap_or(usize::MAX);
        StateCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity,
            capacity: capacity_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    fn shard_index(&self, hash: u64) -> usize {
        // Bits 40.. pick the shard; the map inside uses the low bits and the top 7.
        ((hash >> 40) as usize) & (self.shards.len() - 1)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock leaves a consistent map (every
        // mutation completes before it can panic), so poisoning is ignored.
        self.shards[shard].lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Lookup {
        let hash = hash_key(key);
        let shard = self.shard_index(hash);
        let mut guard = self.lock(shard);
        let s = &mut *guard;
        if let Some(&i) = s.map.get(&hash) {
            let slot = &mut s.slots[i];
            if &*slot.key == key {
                slot.referenced = true;
                return Lookup::Hit(slot.value.clone());
            }
        }
        Lookup::Miss(FillTicket { shard, version: s.version })
    }

    /// Counts hits and misses once per batch rather than per key.
    pub(crate) fn count(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            self.misses.fetch_add(misses, Ordering::Relaxed);
        }
    }

    /// Inserts a value read from disk, unless a commit touched the shard since
    /// the lookup that produced `ticket`.
    pub(crate) fn fill(&self, key: &[u8], value: Bytes, ticket: FillTicket) {
        if !self.enabled() {
            return;
        }
        let mut s = self.lock(ticket.shard);
        if s.version == ticket.version {
            s.insert(hash_key(key), key, value, self.shard_capacity);
        }
    }

    /// Write-through of a committed state.
    pub(crate) fn put(&self, key: &[u8], value: Bytes) {
        if !self.enabled() {
            return;
        }
        let hash = hash_key(key);
        let mut s = self.lock(self.shard_index(hash));
        s.version += 1;
        s.insert(hash, key, value, self.shard_capacity);
    }

    /// Removal of a deleted state.
    pub(crate) fn remove(&self, key: &[u8]) {
        let hash = hash_key(key);
        let mut s = self.lock(self.shard_index(hash));
        s.version += 1;
        if let Some(&i) = s.map.get(&hash) {
            if &*s.slots[i].key == key {
                s.remove_at(i);
            }
        }
    }

    /// Drops every entry of `partition`.
    pub(crate) fn remove_partition(&self, partition: u32) {
        for shard in 0..self.shards.len() {
            let mut s = self.lock(shard);
            s.version += 1;
            let mut i = 0;
            while i < s.slots.len() {
                if key_partition(&s.slots[i].key) == Some(partition) {
                    s.remove_at(i);
                } else {
                    i += 1;
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            capacity_bytes: self.capacity,
            hits_total: self.hits.load(Ordering::Relaxed),
            misses_total: self.misses.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for shard in 0..self.shards.len() {
            let s = self.lock(shard);
            stats.entries += s.slots.len() as u64;
            stats.bytes += s.bytes as u64;
            stats.evictions_total += s.evictions;
        }
        stats
    }
}

impl Shard {
    fn insert(&mut self, hash: u64, key: &[u8], value: Bytes, capacity: usize) {
        let new_cost = cost(key.len(), value.len());
        let existing = self.map.get(&hash).copied();
        if let Some(i) = existing {
            if &*self.slots[i].key != key {
                // A different key with the same hash is cached: skip this one.
                return;
            }
            if new_cost > capacity {
                self.remove_at(i);
                return;
            }
            let slot = &mut self.slots[i];
            self.bytes = self.bytes - cost(slot.key.len(), slot.value.len()) + new_cost;
            slot.value = value;
            slot.referenced = true;
        } else {
            if new_cost > capacity {
                return;
            }
            self.map.insert(hash, self.slots.len());
            self.slots.push(Slot { hash, key: key.into(), value, referenced: false });
            self.bytes += new_cost;
        }
        while self.bytes > capacity && !self.slots.is_empty() {
            self.evict_one();
        }
    }

    /// CLOCK: clear reference bits until an unreferenced slot comes under the hand.
    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                self.remove_at(self.hand);
                self.evictions += 1;
                return;
            }
        }
    }

    fn remove_at(&mut self, i: usize) {
        let slot = self.slots.swap_remove(i);
        self.map.remove(&slot.hash);
        self.bytes -= cost(slot.key.len(), slot.value.len());
        if let Some(moved) = self.slots.get(i) {
            if let Some(index) = self.map.get_mut(&moved.hash) {
                *index = i;
            }
        }
    }
}

/// The map's hasher: its keys already are well-mixed 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Firefox/rustc's Fx hash with a final mix: far cheaper than SipHash on the
/// short keys here, and the keys are not attacker-chosen in a way that
/// matters (a collision costs a slower lookup, not a wrong answer).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.hash;
        h ^= h >> 32;
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::state_key;

    fn get(cache: &StateCache, key: &[u8]) -> Option<Bytes> {
        match cache.get(key) {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = StateCache::new(1 << 20);
        for i in 0..10_000 {
            cache.put(&state_key(0, &format!("c{i}")), Bytes::from(vec![0u8; 1000]));
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 1 << 20, "{stats:?}");
        assert!(stats.entries > 500, "{stats:?}");
        assert!(stats.evictions_total > 0);
    }

    #[test]
    fn referenced_entries_survive_a_sweep() {
        let cache = StateCache::new(1 << 20);
        let hot = state_key(0, "hot");
        cache.put(&hot, Bytes::from_static(b"v"));
        for i in 0..20_000 {
            assert!(get(&cache, &hot).is_some(), "hot key evicted after {i} inserts");
            cache.put(&state_key(0, &format!("cold{i}")), Bytes::from(vec![0u8; 500]));
        }
    }

    #[test]
    fn stale_fill_after_a_commit_is_dropped() {
        let cache = StateCache::new(1 << 20);
        let key = state_key(1, "c");
        let Lookup::Miss(ticket) = cache.get(&key) else { panic!("empty cache hit") };
        assert_eq!(cache.stats().entries, 0);
        cache.put(&key, Bytes::from_static(b"new"));
        cache.fill(&key, Bytes::from_static(b"old"), ticket);
        assert_eq!(get(&cache, &key).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn removes_keys_and_partitions() {
        let cache = StateCache::new(1 << 20);
        for p in 0..3 {
            for i in 0..50 {
                cache.put(&state_key(p, &format!("c{i}")), Bytes::from_static(b"x"));
            }
        }
        cache.remove(&state_key(0, "c7"));
        assert!(get(&cache, &state_key(0, "c7")).is_none());
        cache.remove_partition(1);
        assert_eq!(cache.stats().entries, 49 + 50);
        assert!(get(&cache, &state_key(2, "c7")).is_some());
        assert!(get(&cache, &state_key(1, "c8")).is_none());
    }

    #[test]
    fn a_colliding_hash_is_never_served_for_another_key() {
        let mut shard = Shard::default();
        shard.insert(42, b"a", Bytes::from_static(b"A"), 1 << 20);
        shard.insert(42, b"b", Bytes::from_static(b"B"), 1 << 20);
        assert_eq!(shard.slots.len(), 1);
        assert_eq!(&*shard.slots[0].key, b"a");
        assert_eq!(&shard.slots[0].value[..], b"A");
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let cache = StateCache::new(0);
        cache.put(&state_key(0, "c"), Bytes::from_static(b"x"));
        assert!(get(&cache, &state_key(0, "c")).is_none());
    }
}
