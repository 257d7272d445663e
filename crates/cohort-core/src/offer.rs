//! Next best offer: ranking, eligibility filters, holdout, products.
//!
//! At a decision point the engine hands [`choose`] the offers the rules made
//! eligible, as [`Candidate`]s. Each is filtered (a consented channel, its
//! cap, its cooldown), scored as
//! `propensity × context_weight × value × lever` (every factor reported in
//! [`Scores`]), and the best one wins (ties: the offer listed first in the
//! rules). If the customer falls in that offer's holdout (a stable hash of
//! customer and offer below the offer's holdout share), the decision is
//! still made and recorded, but marked as holdout and sent to no one.
//!
//! Two per-partition tables live here because they learn from many
//! customers: [`Propensity`] (Beta posterior per offer, from outcomes) and
//! [`Popularity`] (top products per category, from purchases). Both are pure
//! data the worker keeps next to its partition, updates in input order and
//! may persist with [`Propensity::encode`] and [`Popularity::encode`].

use crate::event::{Channel, Outcome, Purchase};
use crate::hash::unit_interval;
use crate::state::{bounded, known_id, norm_lower, CustomerState, StateSettings};
use crate::time::{Duration, Timestamp};
use std::collections::BTreeMap;

/// Everything the ranking needs about one eligible offer, mapped from the
/// rules by the engine so that ranking does not depend on the rules' types.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<'a> {
    /// The caller's handle for this offer (the engine uses its index in the
    /// rules), echoed in [`Choice`] so ranking allocates nothing per loser.
    pub key: usize,
    pub id: &'a str,
    /// Business value (e.g. expected margin), from the rules.
    pub value: f64,
    /// Business priority weight, from the rules.
    pub lever: f64,
    /// Channels in order of preference; the first consented one is used.
    pub channels: &'a [Channel],
    /// At most `max` decisions naming this offer in any window of `per`.
    pub cap: Option<(u32, Duration)>,
    /// No decision naming this offer within this long after the last one.
    pub cooldown: Option<Duration>,
    /// Share of customers in the control group, in `[0, 1]`.
    pub holdout: f64,
    /// Beta prior for the propensity: `(alpha, beta)`.
    pub prior: (f64, f64),
    /// Weight of the decision point for this offer (e.g. 2.0 right after a
    /// cart is abandoned); 1.0 when the rules say nothing.
    pub context_weight: f64,
}

/// The factors that ranked an offer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    pub propensity: f64,
    pub context_weight: f64,
    pub value: f64,
    pub lever: f64,
    /// The product of the four; the ranking key.
    pub total: f64,
}

/// Why an eligible offer was not chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// None of its channels has the customer's consent.
    NoConsent,
    /// Its cap is reached for the current window.
    Capped,
    /// Its cooldown since the last decision naming it has not passed.
    CoolingDown,
    /// Another offer scored higher.
    Outranked,
}

impl Rejection {
    /// A short stable label for logs, metrics and `cohort inspect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NoConsent => "no_consent",
            Rejection::Capped => "capped",
            Rejection::CoolingDown => "cooling_down",
            Rejection::Outranked => "outranked",
        }
    }
}

/// The winner of a ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// [`Candidate::key`] of the winner.
    pub key: usize,
    pub offer: String,
    pub channel: Channel,
    pub scores: Scores,
    /// The customer is in this offer's control group: record, do not send.
    pub holdout: bool,
}

/// The result of [`choose`]: the winner, if any, and why each other
/// candidate lost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    pub chosen: Option<Chosen>,
    /// [`Candidate::key`] of each loser, with the reason.
    pub rejected: Vec<(usize, Rejection)>,
}

/// Ranks `candidates` for one customer at `now` (see the module docs).
pub fn choose<'a>(
    state: &CustomerState,
    customer: &str,
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    propensity: &Propensity,
    now: Timestamp,
) -> Choice {
    let mut choice = Choice::default();
    let mut best: Option<(Candidate<'a>, Channel, Scores)> = None;
    for c in candidates {
        let Some(channel) = c.channels.iter().copied().find(|ch| state.profile.consent.allows(*ch)) else {
            choice.rejected.push((c.key, Rejection::NoConsent));
            continue;
        };
        if let Some((max, per)) = c.cap {
            if state.sends_in(c.id, per, now) >= max {
                choice.rejected.push((c.key, Rejection::Capped));
                continue;
            }
        }
        if let (Some(cd), Some(last)) = (c.cooldown, state.last_send(c.id)) {
            if now < last + cd {
                choice.rejected.push((c.key, Rejection::CoolingDown));
                continue;
            }
        }
        let p = propensity.mean(c.id, c.prior);
        let scores = Scores {
            propensity: p,
            context_weight: c.context_weight,
            value: c.value,
            lever: c.lever,
            total: p * c.context_weight * c.value * c.lever,
        };
        // Strictly greater wins, so ties go to the offer listed first.
        if best.as_ref().is_none_or(|(_, _, bs)| scores.total > bs.total) {
            if let Some((b, _, _)) = best.replace((c, channel, scores)) {
                choice.rejected.push((b.key, Rejection::Outranked));
            }
        } else {
            choice.rejected.push((c.key, Rejection::Outranked));
        }
    }
    if let Some((c, channel, scores)) = best {
        let holdout = c.holdout > 0.0 && unit_interval(customer, c.id) < c.holdout;
        choice.chosen = Some(Chosen { key: c.key, offer: c.id.to_owned(), channel, scores, holdout });
    }
    choice
}

/// Most offers a [`Propensity`] table tracks; outcomes for further offers
/// are ignored (a rules file has tens of offers, not thousands).
pub const MAX_PROPENSITY_OFFERS: usize = 4096;

/// Learned conversion probability per offer: a Beta posterior.
///
/// Counting: a `delivered` outcome is one trial, a `converted` outcome one
/// success. Opens, clicks and dismissals do not count (a dismissal is a
/// delivered trial without success, already counted). Delivery systems that
/// report conversions without deliveries still work: trials are never
/// fewer than successes. The posterior mean for prior `(alpha, beta)` is
/// `(alpha + successes) / (alpha + beta + trials)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Propensity {
    counts: BTreeMap<String, (u64, u64)>,
}

impl Propensity {
    /// Folds one outcome in.
    pub fn record(&mut self, offer: &str, outcome: Outcome) {
        let (trial, success) = match outcome {
            Outcome::Delivered => (1, 0),
            Outcome::Converted => (0, 1),
            Outcome::Opened | Outcome::Clicked | Outcome::Dismissed => return,
        };
        let offer = bounded(offer);
        if !self.counts.contains_key(offer) && self.counts.len() >= MAX_PROPENSITY_OFFERS {
            return;
        }
        let entry = self.counts.entry(offer.to_owned()).or_default();
        entry.0 = entry.0.saturating_add(trial);
        entry.1 = entry.1.saturating_add(success);
    }

    /// `(trials, successes)` seen for `offer`.
    pub fn counts(&self, offer: &str) -> (u64, u64) {
        self.counts.get(offer).copied().unwrap_or((0, 0))
    }

    /// The posterior mean for `offer` under `prior = (alpha, beta)`.
    pub fn mean(&self, offer: &str, prior: (f64, f64)) -> f64 {
        let (trials, successes) = self.counts(offer);
        let trials = trials.max(successes) as f64;
        let (a, b) = (prior.0.max(0.0), prior.1.max(0.0));
        let denom = a + b + trials;
        if denom <= 0.0 {
            return 0.0;
        }
        ((a + successes as f64) / denom).clamp(0.0, 1.0)
    }

    /// Compact bytes for persisting the table (leading version byte 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        put_uv(&mut out, self.counts.len() as u64);
        for (k, (t, s)) in &self.counts {
            put_str(&mut out, k);
            put_uv(&mut out, *t);
            put_uv(&mut out, *s);
        }
        out
    }

    /// Reads bytes from [`Propensity::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Propensity, crate::encode::DecodeError> {
        let mut r = MiniReader::new(bytes)?;
        let mut p = Propensity::default();
        let n = r.len()?;
        for _ in 0..n {
            let k = r.string()?;
            let t = r.uv()?;
            let s = r.uv()?;
            p.counts.insert(k, (t, s));
        }
        r.finish()?;
        Ok(p)
    }
}

/// Products kept per category in [`Popularity`].
pub const POPULAR_PER_CATEGORY: usize = 20;
/// Categories kept in [`Popularity`].
pub const POPULAR_CATEGORIES: usize = 512;

/// A bounded top-k counter ("space saving": when full, the least counted
/// product is replaced and the newcomer inherits its count plus one, so
/// heavy hitters are never lost and counts are over-estimates by at most
/// the evicted count).
///
/// `items` is kept in rank order (count descending, then name), so reading
/// the ranking, which every offer decision does, sorts nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TopK {
    items: Vec<(String, u64)>,
    total: u64,
}

/// Rank order: more counted first, then the smaller name. Products are
/// unique, so the order is total.
fn rank_order(a: &(String, u64), b: &(String, u64)) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
}

impl TopK {
    fn add(&mut self, product: &str, cap: usize) {
        self.total = self.total.saturating_add(1);
        let i = if let Some(i) = self.items.iter().position(|(p, _)| p == product) {
            self.items[i].1 += 1;
            i
        } else if self.items.len() < cap {
            self.items.push((product.to_owned(), 1));
            self.items.len() - 1
        } else if let Some(last) = self.items.last_mut() {
            // The least counted (ties: the last name) is the last in rank order.
            let c = last.1;
            *last = (product.to_owned(), c + 1);
            self.items.len() - 1
        } else {
            return;
        };
        // Only item `i` moved up in rank: bubble it into place.
        let mut i = i;
        while i > 0 && rank_order(&self.items[i], &self.items[i - 1]).is_lt() {
            self.items.swap(i, i - 1);
            i -= 1;
        }
    }

    /// Restores rank order (tables written before it was kept).
    fn rank(&mut self) {
        // A total order, so unstable is exact.
        self.items.sort_unstable_by(rank_order);
    }

    fn ranked(&self) -> impl Iterator<Item = &(String, u64)> {
        self.items.iter()
    }
}

/// Best-selling products per category and overall, learned from purchases.
/// Bounded: [`POPULAR_CATEGORIES`] categories of [`POPULAR_PER_CATEGORY`]
/// products each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Popularity {
    by_category: BTreeMap<String, TopK>,
    overall: TopK,
}

impl Popularity {
    /// Counts each purchased line once (orders, not units, so one bulk buyer
    /// does not make a product "popular").
    pub fn record(&mut self, p: &Purchase) {
        for item in &p.items {
            let Some(product) = known_id(&item.product_id) else { continue };
            self.overall.add(product, POPULAR_PER_CATEGORY);
            if let Some(cat) = item.category.as_deref().map(norm_lower).filter(|c| !c.is_empty()) {
                if !self.by_category.contains_key(&cat) && self.by_category.len() >= POPULAR_CATEGORIES {
                    // Evict the least bought category (ties: the last name).
                    let victim = self
                        .by_category
                        .iter()
                        .min_by(|a, b| a.1.total.cmp(&b.1.total).then_with(|| b.0.cmp(a.0)))
                        .map(|(k, _)| k.clone());
                    if let Some(v) = victim {
                        self.by_category.remove(&v);
                    }
                }
                self.by_category.entry(cat).or_default().add(product, POPULAR_PER_CATEGORY);
            }
        }
    }

    /// Most bought products of `category`, best first.
    pub fn top_in(&self, category: &str) -> impl Iterator<Item = &str> {
        self.by_category.get(category).into_iter().flat_map(TopK::ranked).map(|(p, _)| p.as_str())
    }

    /// Most bought products overall, best first.
    pub fn top(&self) -> impl Iterator<Item = &str> {
        self.overall.ranked().map(|(p, _)| p.as_str())
    }

    /// Compact bytes for persisting the table (leading version byte 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        let put_top = |out: &mut Vec<u8>, t: &TopK| {
            put_uv(out, t.total);
            put_uv(out, t.items.len() as u64);
            for (p, c) in &t.items {
                put_str(out, p);
                put_uv(out, *c);
            }
        };
        put_top(&mut out, &self.overall);
        put_uv(&mut out, self.by_category.len() as u64);
        for (k, t) in &self.by_category {
            put_str(&mut out, k);
            put_top(&mut out, t);
        }
        out
    }

    /// Reads bytes from [`Popularity::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Popularity, crate::encode::DecodeError> {
        let mut r = MiniReader::new(bytes)?;
        fn top(r: &mut MiniReader<'_>) -> Result<TopK, crate::encode::DecodeError> {
            let total = r.uv()?;
            let n = r.len()?;
            let mut items = Vec::with_capacity(n.min(POPULAR_PER_CATEGORY));
            for _ in 0..n {
                let p = r.string()?;
                items.push((p, r.uv()?));
            }
            let mut t = TopK { items, total };
            t.rank();
            Ok(t)
        }
        let overall = top(&mut r)?;
        let n = r.len()?;
        let mut by_category = BTreeMap::new();
        for _ in 0..n {
            let k = r.string()?;
            by_category.insert(k, top(&mut r)?);
        }
        r.finish()?;
        Ok(Popularity { by_category, overall })
    }
}

/// How many categories of the customer's strongest affinities feed
/// recommendations.
pub const RECOMMEND_CATEGORIES: usize = 3;

/// Up to `n` products for this customer, best first: popular products of
/// their strongest affinity categories (strongest category first) that they
/// have not bought and do not have in the cart; topped up with overall
/// best-sellers. A customer with no history gets the overall best-sellers.
pub fn recommend(
    state: &CustomerState,
    settings: &StateSettings,
    popularity: &Popularity,
    now: Timestamp,
    n: usize,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    let owned = |p: &str| state.purchased.iter().any(|x| x == p) || state.cart.lines.iter().any(|l| l.product_id == p);
    let push = |p: &str, out: &mut Vec<String>| {
        if out.len() < n && !owned(p) && !out.iter().any(|x| x == p) {
            out.push(p.to_owned());
        }
    };
    // Once `n` are chosen nothing more is pushed: stop ranking tables then.
    for (cat, a) in state.affinities.ranked(now, settings).into_iter().take(RECOMMEND_CATEGORIES) {
        if a <= 0.0 || out.len() >= n {
            break;
        }
        for p in popularity.top_in(cat) {
            push(p, &mut out);
        }
    }
    if out.len() < n {
        for p in popularity.top() {
            push(p, &mut out);
        }
    }
    out
}

pub(crate) fn put_uv(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uv(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A minimal reader for the two tables' formats (and the partition metadata's).
pub(crate) struct MiniReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> MiniReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self, crate::encode::DecodeError> {
        use crate::encode::DecodeError;
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(1) => Ok(MiniReader { buf: bytes, pos: 1 }),
            Some(&found) => Err(DecodeError::UnsupportedVersion { found, supported: 1 }),
        }
    }
    /// A reader of a record whose first byte is a format version from 1 to
    /// `newest`, and that version.
    pub(crate) fn versioned(bytes: &'a [u8], newest: u8) -> Result<(Self, u8), crate::encode::DecodeError> {
        use crate::encode::DecodeError;
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(&v) if (1..=newest).contains(&v) => Ok((MiniReader { buf: bytes, pos: 1 }, v)),
            Some(&found) => Err(DecodeError::UnsupportedVersion { found, supported: newest }),
        }
    }
    pub(crate) fn uv(&mut self) -> Result<u64, crate::encode::DecodeError> {
        use crate::encode::DecodeError;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint too long"))
    }
    pub(crate) fn len(&mut self) -> Result<usize, crate::encode::DecodeError> {
        let n = usize::try_from(self.uv()?).map_err(|_| crate::encode::DecodeError::Invalid("length"))?;
        if n > self.buf.len() - self.pos {
            return Err(crate::encode::DecodeError::Invalid("length"));
        }
        Ok(n)
    }
    pub(crate) fn string(&mut self) -> Result<String, crate::encode::DecodeError> {
        let n = self.len()?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        std::str::from_utf8(s).map(str::to_owned).map_err(|_| crate::encode::DecodeError::Invalid("utf-8"))
    }
    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], crate::encode::DecodeError> {
        let end =
            self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(crate::encode::DecodeError::Truncated)?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }
    /// An `i64`, 8 bytes big-endian.
    pub(crate) fn i64(&mut self) -> Result<i64, crate::encode::DecodeError> {
        let b: [u8; 8] = self.bytes(8)?.try_into().map_err(|_| crate::encode::DecodeError::Truncated)?;
        Ok(i64::from_be_bytes(b))
    }
    pub(crate) fn finish(&self) -> Result<(), crate::encode::DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(crate::encode::DecodeError::TrailingBytes(self.buf.len() - self.pos))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LineItem;
    use crate::state::OfferSend;

    fn cand<'a>(id: &'a str, value: f64, channels: &'a [Channel]) -> Candidate<'a> {
        Candidate {
            key: id.len(),
            id,
            value,
            lever: 1.0,
            channels,
            cap: Some((1, Duration::from_days(30))),
            cooldown: None,
            holdout: 0.0,
            prior: (1.0, 9.0),
            context_weight: 1.0,
        }
    }

    #[test]
    fn ranks_by_product_of_factors_and_filters() {
        let mut st = CustomerState::default();
        st.profile.consent.email = Some(true);
        let email = [Channel::Email];
        let sms = [Channel::Sms];
        let p = Propensity::default();
        let now = Timestamp(1_700_000_000_000);
        let c = choose(&st, "c1", [cand("a", 10.0, &email), cand("b", 20.0, &email), cand("s", 99.0, &sms)], &p, now);
        let chosen = c.chosen.unwrap();
        assert_eq!(chosen.offer, "b");
        assert_eq!(chosen.channel, Channel::Email);
        assert!((chosen.scores.total - 0.1 * 20.0).abs() < 1e-12);
        // keys are the ids' lengths here: "s" and "a" are both 1
        assert_eq!(c.rejected, vec![(1, Rejection::Outranked), (1, Rejection::NoConsent)]);

        st.record_send(OfferSend {
            decision: 1,
            offer: "b".into(),
            time: now,
            channel: Channel::Email,
            holdout: false,
            outcomes: 0,
        });
        let c =
            choose(&st, "c1", [cand("a", 10.0, &email), cand("b", 20.0, &email)], &p, now + Duration::from_days(29));
        assert_eq!(c.chosen.unwrap().offer, "a");
        let c = choose(&st, "c1", [cand("b", 20.0, &email)], &p, now + Duration::from_days(30));
        assert_eq!(c.chosen.unwrap().offer, "b");
    }

    #[test]
    fn propensity_is_beta_posterior_mean() {
        let mut p = Propensity::default();
        assert!((p.mean("x", (1.0, 9.0)) - 0.1).abs() < 1e-12);
        for _ in 0..10 {
            p.record("x", Outcome::Delivered);
        }
        p.record("x", Outcome::Converted);
        p.record("x", Outcome::Opened);
        assert!((p.mean("x", (1.0, 9.0)) - 2.0 / 20.0).abs() < 1e-12);
        assert_eq!(Propensity::decode(&p.encode()), Ok(p));
    }

    /// The top-k kept in rank order ranks exactly as the old counter that
    /// sorted on every read (replacing the least counted, ties the last name).
    #[test]
    fn top_k_kept_in_rank_order_ranks_as_sorting_on_read() {
        fn reference_add(items: &mut Vec<(String, u64)>, product: &str, cap: usize) {
            if let Some(e) = items.iter_mut().find(|(p, _)| p == product) {
                e.1 += 1;
            } else if items.len() < cap {
                items.push((product.to_owned(), 1));
            } else if let Some(min_i) = (0..items.len()).min_by(|&a, &b| {
                let ((pa, ca), (pb, cb)) = (&items[a], &items[b]);
                ca.cmp(cb).then_with(|| pb.cmp(pa))
            }) {
                let c = items[min_i].1;
                items[min_i] = (product.to_owned(), c + 1);
            }
        }
        let mut x: u64 = 88_172_645_463_325_252;
        for cap in [1, 3, 5, POPULAR_PER_CATEGORY] {
            let (mut kept, mut reference) = (TopK::default(), Vec::new());
            for _ in 0..5_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Skewed: low numbers often, so counts differ and ties happen.
                let product = format!("p{}", (x % 64).min(x % 7 + x % 3));
                kept.add(&product, cap);
                reference_add(&mut reference, &product, cap);
                let mut sorted = reference.clone();
                sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                assert_eq!(kept.items, sorted, "cap {cap}");
            }
        }
    }

    /// A table written before the top-k was kept ranked decodes ranked.
    #[test]
    fn an_unranked_table_decodes_ranked() {
        let unranked = TopK { items: vec![("b".into(), 1), ("c".into(), 5), ("a".into(), 1)], total: 7 };
        let old =
            Popularity { by_category: BTreeMap::from([("keto".to_string(), unranked.clone())]), overall: unranked };
        let decoded = Popularity::decode(&old.encode()).expect("decodes");
        assert_eq!(decoded.top().collect::<Vec<_>>(), ["c", "a", "b"]);
        assert_eq!(decoded.top_in("keto").collect::<Vec<_>>(), ["c", "a", "b"]);
    }

    #[test]
    fn popularity_is_bounded_and_ranked() {
        let mut pop = Popularity::default();
        for i in 0..100u32 {
            let items = (0..=(i % 5))
                .map(|k| LineItem {
                    product_id: format!("p{k}"),
                    category: Some("Keto".into()),
                    quantity: 1,
                    unit_price: 1.0,
                })
                .chain(std::iter::once(LineItem {
                    product_id: format!("rare{i}"),
                    category: Some("keto".into()),
                    quantity: 1,
                    unit_price: 1.0,
                }))
                .collect();
            pop.record(&Purchase {
                order_id: format!("o{i}"),
                items,
                total: 1.0,
                currency: "EUR".into(),
                channel: None,
            });
        }
        let top: Vec<&str> = pop.top_in("keto").take(3).collect();
        assert_eq!(top, vec!["p0", "p1", "p2"]);
        assert!(pop.top_in("keto").count() <= POPULAR_PER_CATEGORY);
        assert_eq!(Popularity::decode(&pop.encode()), Ok(pop.clone()));

        let fresh = CustomerState::default();
        let rec = recommend(&fresh, &StateSettings::default(), &pop, Timestamp(0), 2);
        assert_eq!(rec, vec!["p0", "p1"]);
    }
}
