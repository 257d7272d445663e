//! The records cohort writes are cohort-core's engine outputs, encoded
//! as-is: `schemas/io.cohort.v1.SegmentChanged.avsc` and
//! `io.cohort.v1.NextBestOffer.avsc` mirror these types field for field
//! (a test checks the field order). Re-exported so the worker can name
//! them from the codec.

pub use cohort_core::engine::{Cause, CauseKind, NextBestOffer, OfferScores, SegmentChanged};

/// The wire symbol of a cause (`CauseKind` enum in the schemas).
pub(crate) fn cause_kind_str(k: CauseKind) -> &'static str {
    match k {
        CauseKind::Event => "event",
        CauseKind::Timer => "timer",
        CauseKind::RulesChanged => "rules_changed",
    }
}
