//! Where each input partition stands. Per input topic and partition there
//! are four positions, each the next offset after the records it covers,
//! and always in this order:
//!
//! ```text
//! handed ≥ decided ≥ in flight ≥ committed
//! ```
//!
//! - **handed**: records handed to processing ([`Handed`], here);
//! - **decided**: what the partition task has stepped over, kept in its
//!   `PartitionMeta::next_offsets` (cohort-core);
//! - **in flight**: the batch being produced and committed
//!   (`inflight::InFlightOffsets`), which a re-assigned partition resumes after;
//! - **committed**: the same metadata record in the store, written with the
//!   states; a restart resumes there, and the advisory Kafka commit repeats it.

use cohort_kafka::InputRecord;
use foldhash::HashMap;
use std::sync::Arc;

/// The next offset of each input partition after the records already handed
/// to processing. Everything handed is committed before the store's offset
/// is read again (or the worker stops), so a record below it has been
/// processed: an eager rebalance revokes and re-assigns a partition while
/// records fetched before it are still unprocessed in a batch, the partition
/// is sought back to the store's offset, and those records come again, in
/// the same poll or a later one. Processed twice, a customer's counts would
/// be doubled (or the second copy dead-lettered as a duplicate event id).
#[derive(Default)]
pub(super) struct Handed {
    next: HashMap<(Arc<str>, i32), i64>,
}

impl Handed {
    /// The partition was sought to `next` (after a restore): records below
    /// it, fetched before, are not processed.
    pub(super) fn reset(&mut self, topic: &str, partition: i32, next: i64) {
        self.next.insert((Arc::from(topic), partition), next);
    }

    /// `records` without those already handed; records them as handed.
    pub(super) fn keep_new<'a>(&mut self, records: Vec<InputRecord<'a>>) -> Vec<InputRecord<'a>> {
        records
            .into_iter()
            .filter(|r| {
                let next = self.next.entry((r.topic.clone(), r.partition)).or_insert(i64::MIN);
                let new = r.offset >= *next;
                if new {
                    *next = r.offset + 1;
                }
                new
            })
            .collect()
    }
}
