//! The records cohort writes, as the codec encodes them.
//!
//! These mirror `schemas/io.cohort.v1.SegmentChanged.avsc` and
//! `io.cohort.v1.NextBestOffer.avsc` field for field, and copy the output
//! types of cohort-core's engine (`cohort_core::engine`) field for field
//! and name for name: they stand in for them until the engine lands, after
//! which the codec encodes the engine's types directly.

use cohort_core::event::Channel;
use cohort_core::time::Timestamp;

/// What made cohort re-evaluate a customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CauseKind {
    /// An input record arrived.
    Event,
    /// Time passed and a timer fired (e.g. `since(last_purchase) >= 90d`).
    Timer,
    /// A new rules version was loaded.
    RulesChanged,
}

impl CauseKind {
    /// The wire symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::Event => "event",
            CauseKind::Timer => "timer",
            CauseKind::RulesChanged => "rules_changed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub kind: CauseKind,
    /// The input event's id, when `kind` is `Event`.
    pub event_id: Option<String>,
    /// The decision point: `segment_entered:<segment>` or a trigger name.
    pub trigger: Option<String>,
}

/// A customer entered or left segments (topic `segment-changes`).
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentChanged {
    /// Deterministic: a replay re-emits the same id.
    pub id: String,
    pub customer: String,
    pub time: Timestamp,
    pub entered: Vec<String>,
    pub exited: Vec<String>,
    /// Full membership after the change.
    pub segments: Vec<String>,
    pub cause: Cause,
    /// The `version` of the rules that decided.
    pub rules_version: String,
}

/// The factors that ranked an offer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OfferScores {
    pub propensity: f64,
    pub context_weight: f64,
    pub value: f64,
    pub lever: f64,
    /// `propensity × context_weight × value × lever`.
    pub total: f64,
}

/// The best offer at a decision point (topic `next-best-offers`).
#[derive(Clone, Debug, PartialEq)]
pub struct NextBestOffer {
    /// Deterministic; comes back as `decision_id` on `offer-outcomes`.
    pub id: String,
    pub customer: String,
    pub time: Timestamp,
    /// The offer to send; `None` when the customer is in the holdout.
    pub offer: Option<String>,
    /// The offer whose control group the customer is in (when `holdout`).
    pub holdout_offer: Option<String>,
    /// `None` when holdout.
    pub channel: Option<Channel>,
    pub scores: OfferScores,
    /// Best first; empty when holdout.
    pub products: Vec<String>,
    /// Control group: record, do not send.
    pub holdout: bool,
    pub cause: Cause,
    pub rules_version: String,
}
