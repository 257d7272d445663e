//! The records a batch produces: outputs (segment changes, next-best
//! offers, forget announcements), dead letters and changelog records, each
//! built in one place; and [`Processed`], everything a batch hands to its
//! produce-and-commit task.

use crate::dlq;
use cohort_codec::Encoder;
use cohort_core::engine::Output;
use cohort_core::partition::changelog::{encode_timer, HEADER_TIMER};
use cohort_core::time::Timestamp;
use cohort_kafka::{InputRecord, OutputRecord, TopicPartition};
use cohort_store::Batch;
use foldhash::HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Header set on a `segment-changes` tombstone that announces a forgotten customer.
pub const HEADER_FORGOTTEN: &str = "cohort.forgotten";
/// Header naming an output record's type (`segment_changed`, `next_best_offer`, `forgotten`).
pub const HEADER_TYPE: &str = "cohort.type";
/// Header carrying an output's id, so consumers can dedup without decoding.
pub const HEADER_ID: &str = "cohort.id";

/// A processed batch, ready to be produced and committed.
#[derive(Default)]
pub(super) struct Processed {
    pub(super) outputs: Vec<OutputRecord>,
    pub(super) commits: Vec<Batch>,
    /// `(commit, output)`: the index in `commits` of each batch with a
    /// metadata record and the index in `outputs` of its changelog copy, whose
    /// acknowledged offset becomes the stored changelog position.
    pub(super) meta_records: Vec<(usize, usize)>,
    /// Each input partition's next offset after the batch (its decided position).
    pub(super) kafka_offsets: Vec<(TopicPartition, i64)>,
    /// Event times of the events that caused outputs, for latency.
    pub(super) output_event_times: Vec<Timestamp>,
    pub(super) stats: BatchStats,
}

#[derive(Default)]
pub(super) struct BatchStats {
    pub(super) records: u64,
    pub(super) by_topic: BTreeMap<Arc<str>, u64>,
    pub(super) timers_fired: u64,
    pub(super) entries: HashMap<String, i64>,
    pub(super) exits: HashMap<String, i64>,
    pub(super) offers: Vec<(String, bool)>,
}

/// Adds one to `name`'s count, allocating the name only the first time.
fn count(counts: &mut HashMap<String, i64>, name: &str) {
    match counts.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            counts.insert(name.to_string(), 1);
        }
    }
}

/// The output topics' names, shared by every record produced to them.
pub(super) struct OutTopics {
    pub(super) segment_changes: Arc<str>,
    pub(super) next_best_offers: Arc<str>,
    pub(super) changelog: Arc<str>,
    pub(super) dlq: String,
}

impl OutTopics {
    /// A changelog record of input partition `partition`, written to the
    /// changelog's partition of the same number (co-partitioned): a
    /// customer's state with its pending timer in [`HEADER_TIMER`] (`None`:
    /// a tombstone, the customer was forgotten), or a partition's metadata
    /// record.
    pub(super) fn changelog(
        &self,
        partition: i32,
        key: String,
        value: Option<Vec<u8>>,
        timer: Option<Timestamp>,
    ) -> OutputRecord {
        let headers = match timer {
            Some(due) => vec![(HEADER_TIMER.into(), encode_timer(due).to_vec().into())],
            None => Vec::new(),
        };
        OutputRecord {
            topic: self.changelog.clone(),
            key: Some(key.into_bytes()),
            value,
            headers,
            timestamp: None,
            partition: Some(partition),
        }
    }

    pub(super) fn dead_letter(&self, rec: &InputRecord<'_>, reason: &'static str, detail: &str) -> OutputRecord {
        dlq::dead_letter(&self.dlq, rec, reason, detail)
    }

    /// The record of one decision, encoded; counts it in `stats`.
    pub(super) fn output(&self, encoder: &Encoder, o: Output, stats: &mut BatchStats) -> anyhow::Result<OutputRecord> {
        Ok(match o {
            Output::SegmentChanged(s) => {
                for e in &s.entered {
                    count(&mut stats.entries, e);
                }
                for e in &s.exited {
                    count(&mut stats.exits, e);
                }
                // Encoded first: the customer and id then move into the key
                // and header without a copy.
                let value = encoder.encode_segment_changed(&s)?;
                OutputRecord {
                    topic: self.segment_changes.clone(),
                    key: Some(s.customer.into_bytes()),
                    value: Some(value),
                    headers: vec![
                        (HEADER_TYPE.into(), (&b"segment_changed"[..]).into()),
                        (HEADER_ID.into(), s.id.into_bytes().into()),
                    ],
                    timestamp: Some(s.time.as_millis()),
                    partition: None,
                }
            }
            Output::NextBestOffer(n) => {
                let value = encoder.encode_next_best_offer(&n)?;
                let label = n.offer.or(n.holdout_offer).unwrap_or_default();
                stats.offers.push((label, n.holdout));
                OutputRecord {
                    topic: self.next_best_offers.clone(),
                    key: Some(n.customer.into_bytes()),
                    value: Some(value),
                    headers: vec![
                        (HEADER_TYPE.into(), (&b"next_best_offer"[..]).into()),
                        (HEADER_ID.into(), n.id.into_bytes().into()),
                    ],
                    timestamp: Some(n.time.as_millis()),
                    partition: None,
                }
            }
            Output::Forgotten(f) => OutputRecord {
                topic: self.segment_changes.clone(),
                key: Some(f.customer.into_bytes()),
                value: None,
                headers: vec![
                    (HEADER_TYPE.into(), (&b"forgotten"[..]).into()),
                    (HEADER_FORGOTTEN.into(), (&b"true"[..]).into()),
                    (HEADER_ID.into(), f.id.into_bytes().into()),
                ],
                timestamp: Some(f.time.as_millis()),
                partition: None,
            },
        })
    }
}
