//! The changelog as the partition task's records: what each record is, the
//! header that carries a customer's timer, and where a restore may stop.
//!
//! Changelog partition P holds, in the order they were produced, input
//! partition P's customer states (key: the customer id; a tombstone for a
//! forget) and, after each batch's states, the partition's metadata record
//! (key: [`changelog_key`]). Each state record carries its customer's
//! pending timer in the header [`HEADER_TIMER`], so a restore rebuilds the
//! timer index without decoding states.
//!
//! **Where a restore stops.** A batch's records are produced in order and
//! its metadata record last, so everything before a metadata record belongs
//! to batches that completed. Records after the last one are a batch whose
//! producer died before finishing it: their outputs may be partial, their
//! input offsets were never committed, and the batch is decided again by the
//! partition's next owner. A restore therefore applies the log up to and
//! including its last metadata record and leaves the rest (the *tail*)
//! alone; the new owner's first batch then re-writes every customer of the
//! tail with its restored state ([`fence`]), so that a later restore, which
//! reads past the tail, ends with the same states.

use super::meta::changelog_key;
use crate::time::Timestamp;
use std::collections::BTreeSet;

/// The header holding a state record's pending timer: the due instant, ms
/// since the epoch, 8 bytes big-endian. Absent: no timer.
pub const HEADER_TIMER: &str = "cohort.timer";

/// What a changelog record is, by its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A customer's state (or tombstone).
    Customer(&'a str),
    /// A partition's metadata record.
    Meta(i32),
}

/// What a record's key says it is; `None` for a key cohort never writes (not
/// UTF-8, empty, or a NUL-prefixed key of another kind).
pub fn entry(key: &[u8]) -> Option<Entry<'_>> {
    let key = std::str::from_utf8(key).ok()?;
    if let Some(rest) = key.strip_prefix('\0') {
        let p: i32 = rest.strip_prefix("cohort.partition/")?.parse().ok()?;
        return (changelog_key(p) == key).then_some(Entry::Meta(p));
    }
    (!key.is_empty()).then_some(Entry::Customer(key))
}

/// The [`HEADER_TIMER`] value of a due instant.
pub fn encode_timer(due: Timestamp) -> [u8; 8] {
    due.as_millis().to_be_bytes()
}

/// A [`HEADER_TIMER`] value; `None` if it is not 8 bytes.
pub fn decode_timer(bytes: &[u8]) -> Option<Timestamp> {
    Some(Timestamp(i64::from_be_bytes(bytes.try_into().ok()?)))
}

/// The customers a new owner must re-write before its first batch: those
/// with records in the tail after the last metadata record (see the module
/// doc). Each is re-written with its state as restored, or a tombstone if it
/// has none.
pub fn fence<'a>(tail: impl IntoIterator<Item = &'a [u8]>) -> BTreeSet<String> {
    tail.into_iter()
        .filter_map(|k| match entry(k) {
            Some(Entry::Customer(c)) => Some(c.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_say_what_records_are() {
        assert_eq!(entry(b"c-1"), Some(Entry::Customer("c-1")));
        assert_eq!(entry(changelog_key(12).as_bytes()), Some(Entry::Meta(12)));
        // Not cohort's: empty, not UTF-8, a NUL key of another shape.
        assert_eq!(entry(b""), None);
        assert_eq!(entry(&[0xff, 0xfe]), None);
        assert_eq!(entry(b"\0cohort.partition/x"), None);
        assert_eq!(entry(b"\0cohort.partition/+3"), None);
        assert_eq!(entry(b"\0other"), None);
    }

    #[test]
    fn timer_headers_roundtrip() {
        for due in [Timestamp(0), Timestamp(1_736_760_274_874), Timestamp(-5)] {
            assert_eq!(decode_timer(&encode_timer(due)), Some(due));
        }
        assert_eq!(decode_timer(b"short"), None);
    }

    #[test]
    fn the_fence_is_the_tails_customers() {
        let meta = changelog_key(0);
        let tail: Vec<&[u8]> = vec![b"b", meta.as_bytes(), b"a", b"b"];
        assert_eq!(fence(tail), ["a".to_string(), "b".to_string()].into_iter().collect());
    }
}
