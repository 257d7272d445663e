//! What a candidate rules file would do to the stored customers, before it
//! is switched to: per segment, the customers in it now and under the
//! candidate, the entries, the exits and a few sample customers.
//!
//! Each customer is decided exactly as a switch decides it
//! ([`crate::partition::PartitionTask::switch_rules`]): re-evaluated under
//! the candidate with [`Input::RulesChanged`] at its partition's watermark
//! (the switch instant a switch now would record). So if nothing else
//! happens in between, a switch to the candidate makes exactly the changes
//! the preview counts. Nothing is produced or written.
//!
//! Offers that list the `rules_changed` trigger are decided too, with the
//! partition's learned tables as a switch now would keep them, and counted
//! per offer.

use crate::engine::{apply, Engine, Input, Output, Tables};
use crate::rules::RuleSet;
use crate::state::CustomerState;
use crate::time::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;

/// One segment's figures; see the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SegmentPreview {
    /// Customers in it now.
    pub now: u64,
    /// Customers in it under the candidate.
    pub candidate: u64,
    pub entries: u64,
    pub exits: u64,
    /// The first few entering and exiting customers, in key order.
    pub entering: Vec<String>,
    pub exiting: Vec<String>,
}

/// A preview under way, or its result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preview {
    pub current_version: String,
    pub candidate_version: String,
    /// Stored customers examined.
    pub customers: u64,
    /// Customers whose segments the candidate changes.
    pub changed: u64,
    /// Every segment of either rules set (and any a state still holds),
    /// by name.
    pub segments: BTreeMap<String, SegmentPreview>,
    /// Offer id → decisions a switch would make (holdouts included): only
    /// offers that list the `rules_changed` trigger are decided on a switch.
    pub offers: BTreeMap<String, u64>,
    #[serde(skip)]
    samples: usize,
}

impl Preview {
    /// An empty preview of `candidate` against `current`, keeping `samples`
    /// sample customers per segment and direction.
    pub fn new(current: &RuleSet, candidate: &RuleSet, samples: usize) -> Preview {
        let segments = current
            .segments()
            .iter()
            .chain(candidate.segments())
            .map(|s| (s.name.clone(), SegmentPreview::default()))
            .collect();
        Preview {
            current_version: current.version().to_owned(),
            candidate_version: candidate.version().to_owned(),
            customers: 0,
            changed: 0,
            segments,
            offers: BTreeMap::new(),
            samples,
        }
    }

    /// Adds one stored customer of a partition whose watermark is `at` and
    /// whose learned tables are `tables`. Customers must come in key order
    /// within a partition for the samples to be the first ones.
    pub fn add(
        &mut self,
        candidate: &Engine,
        customer: &str,
        mut state: CustomerState,
        at: Timestamp,
        tables: &Tables,
    ) {
        // The switch number only names outputs, which a preview does not make.
        let switch = 0;
        self.customers += 1;
        let now: Vec<String> = state.segments.iter().map(|m| m.segment.clone()).collect();
        let decision = apply(&mut state, Input::RulesChanged { customer, at, switch }, &tables.context(candidate));
        for output in &decision.outputs {
            if let Output::NextBestOffer(n) = output {
                if let Some(offer) = n.offer.as_ref().or(n.holdout_offer.as_ref()) {
                    *self.offers.entry(offer.clone()).or_default() += 1;
                }
            }
        }
        let after = state.segments.iter().map(|m| m.segment.as_str());
        for name in &now {
            self.segments.entry(name.clone()).or_default().now += 1;
        }
        let mut changed = false;
        for name in after.clone() {
            let seg = self.segments.entry(name.to_owned()).or_default();
            seg.candidate += 1;
            if !now.iter().any(|n| n == name) {
                seg.entries += 1;
                changed = true;
                if seg.entering.len() < self.samples {
                    seg.entering.push(customer.to_owned());
                }
            }
        }
        for name in &now {
            if !after.clone().any(|a| a == name) {
                let seg = self.segments.entry(name.clone()).or_default();
                seg.exits += 1;
                changed = true;
                if seg.exiting.len() < self.samples {
                    seg.exiting.push(customer.to_owned());
                }
            }
        }
        self.changed += u64::from(changed);
    }

    /// Adds another preview of the same two rules sets (another
    /// partition's). Samples are kept in key order over both.
    pub fn merge(&mut self, other: Preview) {
        self.customers += other.customers;
        self.changed += other.changed;
        for (offer, n) in other.offers {
            *self.offers.entry(offer).or_default() += n;
        }
        for (name, o) in other.segments {
            let seg = self.segments.entry(name).or_default();
            seg.now += o.now;
            seg.candidate += o.candidate;
            seg.entries += o.entries;
            seg.exits += o.exits;
            for (mine, theirs) in [(&mut seg.entering, o.entering), (&mut seg.exiting, o.exiting)] {
                mine.extend(theirs);
                mine.sort();
                mine.truncate(self.samples);
            }
        }
    }

    /// The preview as a table for people: one line per segment, changed
    /// ones marked.
    pub fn table(&self) -> String {
        let width = self.segments.keys().map(String::len).max().unwrap_or(7).max(7);
        let mut out = format!(
            "rules {} -> {}: {} stored customers, {} change segments\n\n{:<width$}  {:>9}  {:>9}  {:>8}  {:>8}  samples\n",
            self.current_version,
            self.candidate_version,
            self.customers,
            self.changed,
            "segment",
            "now",
            "candidate",
            "entries",
            "exits",
        );
        for (name, s) in &self.segments {
            let mut samples = Vec::new();
            if !s.entering.is_empty() {
                samples.push(format!("+ {}", s.entering.join(", ")));
            }
            if !s.exiting.is_empty() {
                samples.push(format!("- {}", s.exiting.join(", ")));
            }
            out.push_str(&format!(
                "{name:<width$}  {:>9}  {:>9}  {:>8}  {:>8}  {}\n",
                s.now,
                s.candidate,
                s.entries,
                s.exits,
                samples.join("  ")
            ));
        }
        if !self.offers.is_empty() {
            out.push_str("\noffers the switch would send (trigger rules_changed, holdouts included):\n");
            for (offer, n) in &self.offers {
                out.push_str(&format!("{offer:<width$}  {n:>9}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineSettings, Origin};
    use crate::event::{Event, EventKind, LineItem, Purchase};

    const V1: &str = "version: 1\nsegments:\n  - name: buyer\n    when: orders.lifetime > 0\n  - name: big\n    when: spend.365d >= 100\n";

    fn engine(text: &str) -> Engine {
        Engine::new(RuleSet::from_yaml("rules.yaml", text).expect("rules"), EngineSettings::default())
    }

    fn bought(engine: &Engine, customer: &str, euros: f64) -> CustomerState {
        let ev = Event {
            id: format!("{customer}-1"),
            customer: customer.into(),
            time: Timestamp(1_709_542_800_000),
            kind: EventKind::Purchase(Purchase {
                order_id: "o".into(),
                items: vec![LineItem { product_id: "p".into(), category: None, quantity: 1, unit_price: euros }],
                total: euros,
                currency: "EUR".into(),
                channel: None,
            }),
        };
        let mut state = CustomerState::default();
        let origin = Origin { topic: "purchases", partition: 0, offset: 0 };
        apply(&mut state, Input::Event(&ev, origin), &Tables::default().context(engine));
        state
    }

    #[test]
    fn counts_entries_exits_and_populations_under_the_candidate() {
        let v1 = engine(V1);
        let v2 = engine(&V1.replace("spend.365d >= 100", "spend.365d >= 50").replace(
            "  - name: buyer\n    when: orders.lifetime > 0\n",
            "  - name: small\n    when: spend.365d < 50\n",
        ));
        let at = Timestamp(1_709_600_000_000);
        let mut a = Preview::new(v1.rules(), v2.rules(), 1);
        a.add(&v2, "ana", bought(&v1, "ana", 70.0), at, &Tables::default());
        a.add(&v2, "ben", bought(&v1, "ben", 120.0), at, &Tables::default());
        let mut b = Preview::new(v1.rules(), v2.rules(), 1);
        b.add(&v2, "cem", bought(&v1, "cem", 20.0), at, &Tables::default());
        a.merge(b);
        assert_eq!((a.customers, a.changed), (3, 3));
        let big = &a.segments["big"];
        assert_eq!((big.now, big.candidate, big.entries, big.exits), (1, 2, 1, 0));
        assert_eq!(big.entering, ["ana"]);
        let buyer = &a.segments["buyer"];
        assert_eq!((buyer.now, buyer.candidate, buyer.exits), (3, 0, 3));
        assert_eq!(buyer.exiting, ["ana"], "one sample, the first in key order");
        assert_eq!(a.segments["small"].entering, ["cem"]);
        assert!(a.table().contains("big"), "{}", a.table());
        assert!(a.offers.is_empty(), "no offer lists rules_changed");
    }

    #[test]
    fn counts_the_offers_a_switch_would_send() {
        let v1 = engine(V1);
        let offer = "offers:\n  - id: big_news\n    eligible: in_segment(\"big\")\n    channels: [email]\n    \
                     triggers: [rules_changed]\n";
        let v2 = engine(&(V1.replace("spend.365d >= 100", "spend.365d >= 50") + offer));
        let consent = Event {
            id: "consent".into(),
            customer: "ana".into(),
            time: Timestamp(1_709_542_800_000),
            kind: EventKind::ProfileUpdate(crate::event::ProfileUpdate {
                consent: crate::event::ConsentUpdate { email: Some(true), ..Default::default() },
                ..Default::default()
            }),
        };
        let at = Timestamp(1_709_600_000_000);
        let mut p = Preview::new(v1.rules(), v2.rules(), 1);
        let mut ana = bought(&v1, "ana", 70.0);
        let origin = Origin { topic: "customer-profiles", partition: 0, offset: 1 };
        apply(&mut ana, Input::Event(&consent, origin), &Tables::default().context(&v1));
        p.add(&v2, "ana", ana, at, &Tables::default());
        // ben enters `big` too, but gave no consent: no offer.
        p.add(&v2, "ben", bought(&v1, "ben", 60.0), at, &Tables::default());
        assert_eq!(p.segments["big"].entries, 2);
        assert_eq!(p.offers, BTreeMap::from([("big_news".to_owned(), 1)]));
        assert!(p.table().contains("big_news"), "{}", p.table());
    }
}
