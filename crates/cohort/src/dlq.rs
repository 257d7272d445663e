//! Dead letters: a record cohort cannot use goes to the dead-letter topic
//! with its original key, value and headers, plus headers that say why and
//! where it came from, so it can be inspected and replayed. Nothing is lost
//! and the partition keeps flowing.

use cohort_kafka::{InputRecord, OutputHeader, OutputRecord};

/// Header with the short, stable reason (also the metric label).
pub const HEADER_REASON: &str = "cohort.dlq.reason";
/// Header with a human-readable description of what was wrong.
pub const HEADER_DETAIL: &str = "cohort.dlq.detail";
/// Headers locating the original record.
pub const HEADER_TOPIC: &str = "cohort.dlq.topic";
pub const HEADER_PARTITION: &str = "cohort.dlq.partition";
pub const HEADER_OFFSET: &str = "cohort.dlq.offset";

/// Why a record went to the DLQ, when the reason is the worker's and not
/// the codec's or core's validation.
pub mod reason {
    /// Larger than `processing.max_record_bytes`; not decoded.
    pub const OVERSIZED: &str = "oversized";
    /// An event id among the customer's most recent ones (core's
    /// `RECENT_EVENTS`, 16): a producer retry that got a new offset.
    pub const DUPLICATE_EVENT_ID: &str = "duplicate_event_id";
    /// A customer id starting with NUL (reserved for cohort's own
    /// changelog keys); the codec uses the same reason for a non-UTF-8 key.
    pub const INVALID_KEY: &str = "invalid_key";

    /// Every reason a dead letter can carry, sorted: the codec's
    /// ([`cohort_codec::DecodeError::REASONS`]), event validation's
    /// ([`cohort_core::event::InvalidEvent::REASONS`]) and the worker's own.
    /// `cohort_dlq_records_total` starts with a 0 series for each, and the
    /// tests check that README.md and docs/schemas.md list exactly these.
    pub fn all() -> Vec<&'static str> {
        let mut v: Vec<&'static str> = cohort_codec::DecodeError::REASONS
            .iter()
            .chain(cohort_core::event::InvalidEvent::REASONS.iter())
            .chain([OVERSIZED, DUPLICATE_EVENT_ID, INVALID_KEY].iter())
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The dead letter for `rec`, addressed to `dlq_topic`.
pub fn dead_letter(dlq_topic: &str, rec: &InputRecord<'_>, reason: &str, detail: &str) -> OutputRecord {
    let mut headers: Vec<OutputHeader> = rec.headers.to_vec().into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    headers.push((HEADER_REASON.into(), reason.as_bytes().to_vec().into()));
    headers.push((HEADER_DETAIL.into(), truncate(detail, 1024).as_bytes().to_vec().into()));
    headers.push((HEADER_TOPIC.into(), rec.topic.as_bytes().to_vec().into()));
    headers.push((HEADER_PARTITION.into(), rec.partition.to_string().into_bytes().into()));
    headers.push((HEADER_OFFSET.into(), rec.offset.to_string().into_bytes().into()));
    OutputRecord {
        topic: dlq_topic.into(),
        key: rec.key.as_deref().map(<[u8]>::to_vec),
        value: rec.value.as_deref().map(<[u8]>::to_vec),
        headers,
        timestamp: rec.timestamp,
        partition: None,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keeps_the_original_bytes_and_headers_and_says_why() {
        let rec = InputRecord {
            topic: Arc::from("clickstream"),
            partition: 3,
            offset: 42,
            timestamp: Some(7),
            key: Some(b"c-1".as_slice().into()),
            value: Some(vec![0xff, 0x00].into()),
            headers: vec![("trace".into(), b"abc".to_vec())].into(),
        };
        let d = dead_letter("cohort-dlq", &rec, "undecodable", "invalid JSON at 1:1");
        assert_eq!(&*d.topic, "cohort-dlq");
        assert_eq!(d.key.as_deref(), rec.key.as_deref());
        assert_eq!(d.value.as_deref(), rec.value.as_deref());
        let h = |k: &str| d.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_vec());
        assert_eq!(h("trace"), Some(b"abc".to_vec()));
        assert_eq!(h(HEADER_REASON), Some(b"undecodable".to_vec()));
        assert_eq!(h(HEADER_TOPIC), Some(b"clickstream".to_vec()));
        assert_eq!(h(HEADER_PARTITION), Some(b"3".to_vec()));
        assert_eq!(h(HEADER_OFFSET), Some(b"42".to_vec()));
    }

    #[test]
    fn a_long_detail_is_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        assert!(truncate(&long, 1024).len() <= 1024);
        assert!(truncate(&long, 1023).is_char_boundary(truncate(&long, 1023).len()));
    }
}
