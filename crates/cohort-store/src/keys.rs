//! Column family names and key layouts: every storage name lives here.
//!
//! Every key of a partitioned column family starts with the Kafka partition
//! as a big-endian `u32`, so one partition's data is one contiguous key range
//! in each column family: dropping it is a range delete, restoring or
//! shipping it is a range scan.
//!
//! | column family       | key                                         | value                      |
//! |---------------------|---------------------------------------------|----------------------------|
//! | `states`            | partition · customer                         | record envelope + state    |
//! | `timers`            | partition · due (i64, order-preserving) · customer | empty               |
//! | `timer_index`       | partition · len(customer) u16 · customer · due | empty                    |
//! | `partitions`        | partition                                    | record envelope + [`PartitionMeta`](cohort_core::partition::PartitionMeta) |
//! | `meta`              | metadata key (ASCII)                         | see [`crate::Metadata`]    |
//!
//! Store format 1 kept partition metadata as NUL-prefixed "customers" in
//! `states` and offsets in `input_offsets` / `changelog_offsets`; opening
//! such a store migrates it (`crate::migrate`).
//!
//! `timer_index` is the reverse of `timers` so that forgetting a customer
//! finds its timers with one short prefix scan instead of a scan of every
//! timer of the partition.

use cohort_core::time::Timestamp;

/// Customer states, the store's record envelope around core's encoding.
pub const CF_STATES: &str = "states";
/// Timers ordered by due time, so the due ones are a range scan.
pub const CF_TIMERS: &str = "timers";
/// Timers by customer, to find a customer's timers when forgetting it.
pub const CF_TIMER_INDEX: &str = "timer_index";
/// Each partition's metadata record: watermark, learned tables, input
/// positions, segment populations, changelog position.
pub const CF_PARTITIONS: &str = "partitions";
/// Store-wide metadata: format and encoding versions, rules version.
pub const CF_META: &str = "meta";
/// Store format 1: next input offset per input topic and partition.
pub const CF_LEGACY_INPUT_OFFSETS: &str = "input_offsets";
/// Store format 1: next changelog offset per partition.
pub const CF_LEGACY_CHANGELOG_OFFSETS: &str = "changelog_offsets";

/// Column families whose keys start with the partition.
pub const PARTITIONED_CFS: [&str; 4] = [CF_STATES, CF_TIMERS, CF_TIMER_INDEX, CF_PARTITIONS];
/// Every column family the store opens (RocksDB's `default` is opened too but unused).
pub const ALL_CFS: [&str; 5] = [CF_STATES, CF_TIMERS, CF_TIMER_INDEX, CF_PARTITIONS, CF_META];

/// `meta` key: the layout version of this store's files ([`crate::STORE_FORMAT_VERSION`]).
pub const META_STORE_FORMAT_VERSION: &[u8] = b"store_format_version";
/// `meta` key: the version of core's state encoding last written.
pub const META_STATE_ENCODING_VERSION: &[u8] = b"state_encoding_version";
/// `meta` key: the version of the rules file the states were computed with.
pub const META_RULES_VERSION: &[u8] = b"rules_version";

/// Length of the partition prefix.
pub const PARTITION_LEN: usize = 4;
/// Length of an encoded due time.
pub const DUE_LEN: usize = 8;

/// The 4-byte prefix of every key of `partition`.
pub fn partition_prefix(partition: u32) -> [u8; PARTITION_LEN] {
    partition.to_be_bytes()
}

/// `[start, end)` covering every key of `partition`. Partitions are Kafka's
/// non-negative `i32`s, so `partition + 1` never overflows for a valid one.
pub fn partition_range(partition: u32) -> ([u8; PARTITION_LEN], [u8; PARTITION_LEN]) {
    (partition_prefix(partition), partition_prefix(partition.saturating_add(1)))
}

/// Reads the partition prefix of a key, `None` if the key is too short.
pub fn key_partition(key: &[u8]) -> Option<u32> {
    let prefix: [u8; PARTITION_LEN] = key.get(..PARTITION_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix))
}

/// `partition · customer`.
pub fn state_key(partition: u32, customer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(PARTITION_LEN + customer.len());
    write_state_key(&mut key, partition, customer);
    key
}

/// Writes `partition · customer` into a reused buffer.
pub fn write_state_key(buf: &mut Vec<u8>, partition: u32, customer: &str) {
    buf.clear();
    buf.extend_from_slice(&partition_prefix(partition));
    buf.extend_from_slice(customer.as_bytes());
}

/// An `i64` as 8 bytes whose unsigned lexicographic order is the signed
/// numeric order: big-endian with the sign bit flipped.
pub fn encode_due(due: Timestamp) -> [u8; DUE_LEN] {
    ((due.as_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`encode_due`].
pub fn decode_due(bytes: [u8; DUE_LEN]) -> Timestamp {
    Timestamp::from_millis((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// `partition · due · customer`.
pub fn timer_key(partition: u32, due: Timestamp, customer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(PARTITION_LEN + DUE_LEN + customer.len());
    key.extend_from_slice(&partition_prefix(partition));
    key.extend_from_slice(&encode_due(due));
    key.extend_from_slice(customer.as_bytes());
    key
}

/// `partition · due`, the smallest key of any timer due at `due`.
pub fn timer_due_prefix(partition: u32, due: Timestamp) -> Vec<u8> {
    let mut key = Vec::with_capacity(PARTITION_LEN + DUE_LEN);
    key.extend_from_slice(&partition_prefix(partition));
    key.extend_from_slice(&encode_due(due));
    key
}

/// Splits a `timers` key into partition, due time and customer bytes.
pub fn parse_timer_key(key: &[u8]) -> Option<(u32, Timestamp, &[u8])> {
    let partition = key_partition(key)?;
    let due: [u8; DUE_LEN] = key.get(PARTITION_LEN..PARTITION_LEN + DUE_LEN)?.try_into().ok()?;
    Some((partition, decode_due(due), &key[PARTITION_LEN + DUE_LEN..]))
}

/// `partition · len(customer) · customer`: the prefix of all of a customer's
/// `timer_index` entries. The length makes "ab" and "abc" distinct prefixes.
/// `None` if the id is longer than `u16::MAX` bytes.
pub fn timer_index_prefix(partition: u32, customer: &str) -> Option<Vec<u8>> {
    let len = u16::try_from(customer.len()).ok()?;
    let mut key = Vec::with_capacity(PARTITION_LEN + 2 + customer.len() + DUE_LEN);
    key.extend_from_slice(&partition_prefix(partition));
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(customer.as_bytes());
    Some(key)
}

/// `partition · len(customer) · customer · due`.
pub fn timer_index_key(partition: u32, customer: &str, due: Timestamp) -> Option<Vec<u8>> {
    let mut key = timer_index_prefix(partition, customer)?;
    key.extend_from_slice(&encode_due(due));
    Some(key)
}

/// The due time at the end of a `timer_index` key that starts with `prefix`.
pub fn parse_timer_index_due(key: &[u8], prefix_len: usize) -> Option<Timestamp> {
    let rest: [u8; DUE_LEN] = key.get(prefix_len..)?.try_into().ok()?;
    Some(decode_due(rest))
}

/// `partition · topic`, the key of both offset column families.
pub fn legacy_offset_key(partition: u32, topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(PARTITION_LEN + topic.len());
    key.extend_from_slice(&partition_prefix(partition));
    key.extend_from_slice(topic.as_bytes());
    key
}

/// The smallest key strictly greater than every key starting with `prefix`,
/// `None` if there is none (the prefix is all `0xFF`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_encoding_preserves_order_across_sign() {
        let values = [i64::MIN, -1_000, -1, 0, 1, 1_000, 1_700_000_000_000, i64::MAX];
        for pair in values.windows(2) {
            let (a, b) = (Timestamp::from_millis(pair[0]), Timestamp::from_millis(pair[1]));
            assert!(encode_due(a) < encode_due(b), "{a:?} < {b:?}");
            assert_eq!(decode_due(encode_due(a)), a);
        }
    }

    #[test]
    fn timer_keys_sort_by_partition_then_due_then_customer() {
        let k = |p, due, c| timer_key(p, Timestamp::from_millis(due), c);
        assert!(k(1, 5, "zzz") < k(1, 6, "aaa"));
        assert!(k(1, 6, "aaa") < k(1, 6, "aab"));
        assert!(k(1, i64::MAX, "z") < k(2, i64::MIN, "a"));
        let key = k(7, -42, "cust-1");
        let (p, due, c) = parse_timer_key(&key).expect("well-formed key");
        assert_eq!((p, due.as_millis(), c), (7, -42, &b"cust-1"[..]));
    }

    #[test]
    fn timer_index_prefix_separates_ids_that_prefix_each_other() {
        let ab = timer_index_prefix(0, "ab").expect("short id");
        let abc_key = timer_index_key(0, "abc", Timestamp::from_millis(1)).expect("short id");
        assert!(!abc_key.starts_with(&ab));
        let long = "x".repeat(usize::from(u16::MAX) + 1);
        assert!(timer_index_prefix(0, &long).is_none());
    }

    #[test]
    fn partition_range_covers_exactly_one_partition() {
        let (start, end) = partition_range(3);
        assert!(state_key(3, "") >= start.to_vec());
        assert!(state_key(3, "\u{10FFFF}\u{10FFFF}") < end.to_vec());
        assert!(state_key(4, "") >= end.to_vec());
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }
}
