//! Why a customer is where they are: every segment's condition atom by atom
//! with the values the rules read (`spend.365d = 1240.00 >= 1000`), whether
//! the customer is in it (and, in an exclusive group, who won), when a
//! time-dependent condition can next flip; and every offer's eligibility,
//! with what would stop it at a decision point now (consent, cap, cooldown,
//! a better offer) and its score.
//!
//! It walks the compiled condition trees with the tree walker
//! ([`super::eval`]), which the hot path's lowered forms are tested against,
//! so the answers are the engine's.

use super::catalogue::{self, FieldRef};
use super::compile::{Dur, Expr, Num, Text};
use super::eval::{self, Env, Next, SegNext, Segs};
use super::facts::{Facts, FlagField, NumField, SetField, TextField, TimeField};
use super::{RuleSet, SegmentSet};
use crate::offer::{choose, Candidate, Propensity, Rejection};
use crate::state::CustomerState;
use crate::time::{Duration, Timestamp};
use serde::Serialize;

/// One leaf of a condition and whether it holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtomValue {
    /// The leaf with the values read, e.g. `spend.365d = 1240.00 >= 1000`.
    pub atom: String,
    pub holds: bool,
}

/// One segment, explained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegmentExplanation {
    pub segment: String,
    /// The condition as written.
    pub when: String,
    /// Whether the condition holds.
    pub holds: bool,
    /// Whether the customer is in the segment (a grouped segment whose
    /// condition holds may lose to a higher-priority one).
    pub member: bool,
    /// The exclusive group and, if another member of it won, which.
    pub group: Option<String>,
    pub lost_to: Option<String>,
    pub atoms: Vec<AtomValue>,
    /// When the condition can next change without a new event (ms since the
    /// epoch); `None`: only an event can change it.
    pub next_change: Option<i64>,
}

/// One offer, explained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OfferExplanation {
    pub offer: String,
    pub eligible_when: String,
    /// Whether `eligible` holds.
    pub eligible: bool,
    pub atoms: Vec<AtomValue>,
    /// At a decision point now, with every eligible offer triggered:
    /// `chosen`, `outranked`, `no_consent`, `capped`, `cooling_down`, or
    /// `not_eligible`.
    pub verdict: &'static str,
    /// Its score (propensity × context weight 1 × value × lever), when
    /// eligible and not stopped by consent, cap or cooldown.
    pub score: Option<f64>,
}

impl RuleSet {
    /// Explains `state` under these rules at `now` (see the module doc).
    /// `propensity` is the partition's learned table, for the scores.
    pub fn explain<F: Facts + ?Sized>(
        &self,
        facts: &F,
        state: &CustomerState,
        propensity: &Propensity,
        now: Timestamp,
    ) -> (Vec<SegmentExplanation>, Vec<OfferExplanation>) {
        let half_life = self.settings.affinity_half_life;
        // Raw results and next changes in dependency order, as the engine's
        // tree-walking reference computes them.
        let mut raw = SegmentSet::new();
        let mut nexts = vec![Next::NEVER; self.segments.len()];
        for &i in &self.order {
            let i = usize::from(i);
            let env = Env {
                facts,
                now,
                segs: Segs::Raw(&raw, &self.membership),
                half_life,
                sums: eval::sums_for(facts, now),
            };
            let seg_next = SegNext { raw_next: &nexts, membership: &self.membership };
            let (holds, next) = eval::analyse(&self.seg_exprs[i], &env, &seg_next);
            if holds {
                raw.insert(i);
            }
            nexts[i] = next;
        }
        let mut members = SegmentSet::new();
        self.membership.finalize(&raw, &mut members);
        let env = Env { facts, now, segs: Segs::Final(&members), half_life, sums: eval::sums_for(facts, now) };
        let segments = self
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let member = members.contains(i);
                let holds = raw.contains(i);
                let group_of = self.membership.group_of.get(i).copied().flatten();
                let lost_to = match group_of {
                    Some(g) if holds && !member => self.membership.groups[usize::from(g)]
                        .iter()
                        .map(|&w| usize::from(w))
                        .find(|&w| members.contains(w))
                        .map(|w| self.segments[w].name.clone()),
                    _ => None,
                };
                let mut atoms = Vec::new();
                self.atoms(&self.seg_exprs[i], &env, &mut atoms);
                SegmentExplanation {
                    segment: s.name.clone(),
                    when: s.when.clone(),
                    holds,
                    member,
                    group: s.group.clone(),
                    lost_to,
                    atoms,
                    next_change: nexts[i].get().filter(|_| s.time_dependent).map(|t| t.as_millis()),
                }
            })
            .collect();

        // Offers: every eligible one is a candidate at a decision point now.
        let eligible: Vec<bool> = (0..self.offers.len()).map(|i| eval::eval(&self.offer_exprs[i], &env)).collect();
        let channels: Vec<Vec<crate::event::Channel>> =
            self.offers.iter().map(|o| o.channels.iter().map(|c| crate::engine::channel_of(*c)).collect()).collect();
        let candidates = self.offers.iter().enumerate().filter(|(i, _)| eligible[*i]).map(|(i, o)| Candidate {
            key: i,
            id: &o.id,
            value: o.value,
            lever: o.lever,
            channels: &channels[i],
            cap: o.cap.map(|c| (c.max, c.per)),
            cooldown: o.cooldown,
            holdout: 0.0,
            prior: (o.prior.alpha, o.prior.beta),
            context_weight: 1.0,
        });
        let choice = choose(state, "", candidates, propensity, now);
        let offers = self
            .offers
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut atoms = Vec::new();
                self.atoms(&self.offer_exprs[i], &env, &mut atoms);
                let rejected = choice.rejected.iter().find(|(k, _)| *k == i).map(|(_, r)| *r);
                let verdict = match (eligible[i], rejected) {
                    (false, _) => "not_eligible",
                    (true, Some(r)) => r.as_str(),
                    (true, None) => "chosen",
                };
                let score = match rejected {
                    _ if !eligible[i] => None,
                    Some(Rejection::NoConsent | Rejection::Capped | Rejection::CoolingDown) => None,
                    _ => Some(propensity.mean(&o.id, (o.prior.alpha, o.prior.beta)) * o.value * o.lever),
                };
                OfferExplanation {
                    offer: o.id.clone(),
                    eligible_when: o.eligible.clone(),
                    eligible: eligible[i],
                    atoms,
                    verdict,
                    score,
                }
            })
            .collect();
        (segments, offers)
    }

    /// The leaves of `e` with their values, in the order written.
    fn atoms<F: Facts + ?Sized>(&self, e: &Expr, env: &Env<'_, F>, out: &mut Vec<AtomValue>) {
        match e {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| self.atoms(x, env, out)),
            // One line for the whole negation: negating each leaf of an
            // `&&` or `||` would read as the wrong connective.
            Expr::Not(x) => {
                let mut inner = Vec::new();
                self.atoms(x, env, &mut inner);
                let joiner = match &**x {
                    Expr::And(_) => " && ",
                    Expr::Or(_) => " || ",
                    _ => "",
                };
                let text = inner.iter().map(|a| a.atom.as_str()).collect::<Vec<_>>().join(joiner);
                out.push(AtomValue { atom: format!("not ({text})"), holds: eval::eval(e, env) });
            }
            leaf => out.push(AtomValue { atom: self.describe(leaf, env), holds: eval::eval(leaf, env) }),
        }
    }

    fn describe<F: Facts + ?Sized>(&self, e: &Expr, env: &Env<'_, F>) -> String {
        let f = env.facts;
        match e {
            Expr::Const(b) => b.to_string(),
            Expr::Flag(x) => format!("{} = {}", flag_path(*x), f.flag(*x)),
            Expr::InSegment(i) => {
                let name = self.segments.get(usize::from(*i)).map_or("?", |s| s.name.as_str());
                format!("in_segment(\"{name}\") = {}", eval::eval(e, env))
            }
            Expr::BirthdayWithin(d) => format!("birthday_within({}) = {}", duration(*d), eval::eval(e, env)),
            Expr::BirthdayThisMonth => format!("birthday_this_month() = {}", eval::eval(e, env)),
            Expr::BoolEq { eq, .. } => {
                format!(
                    "(a comparison of two conditions with {}) = {}",
                    if *eq { "==" } else { "!=" },
                    eval::eval(e, env)
                )
            }
            Expr::FieldCmp { f: field, op, x, .. } => {
                format!("{} = {} {} {}", num_path(*field), number(f.number(*field, env.now)), op.as_str(), number(*x))
            }
            Expr::SinceCmp { f: field, op, d } => format!(
                "since({}) = {} {} {}",
                time_path(*field),
                f.instant(*field).map_or("never".into(), |t| duration(env.now.since(t))),
                op.as_str(),
                duration(*d)
            ),
            Expr::Num { op, a, b } => format!("{} {} {}", self.num(a, env), op.as_str(), self.num(b, env)),
            Expr::Dur { op, a, b } => format!("{} {} {}", dur(a, env), op.as_str(), dur(b, env)),
            Expr::Instant { op, a, b } => {
                let at = |x: TimeField| f.instant(x).map_or("none".into(), |t| t.as_millis().to_string());
                format!("{} = {} {} {} = {}", time_path(*a), at(*a), op.as_str(), time_path(*b), at(*b))
            }
            Expr::Text { eq, a, b } => {
                format!("{} {} {}", text(a, env), if *eq { "==" } else { "!=" }, text(b, env))
            }
            Expr::TextInList { a, list } => format!(
                "{} in [{}]",
                text(a, env),
                list.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
            ),
            Expr::TextInSet { a, set } => format!("{} in {}", text(a, env), set_path(*set)),
            Expr::And(_) | Expr::Or(_) | Expr::Not(_) => String::new(),
        }
    }

    fn num<F: Facts + ?Sized>(&self, n: &Num, env: &Env<'_, F>) -> String {
        let f = env.facts;
        match n {
            Num::Lit(x) => number(*x),
            Num::Field(x) => format!("{} = {}", num_path(*x), number(f.number(*x, env.now))),
            Num::Age => {
                let age = f
                    .birth_date()
                    .map(|b| super::calendar::age_at(b, env.now))
                    .or(f.declared_age())
                    .map_or("unknown".into(), |a| a.to_string());
                format!("profile.age = {age}")
            }
            Num::Affinity(c, h) => format!("affinity(\"{c}\") = {}", number(f.affinity_hashed(c, *h, env.now))),
            Num::OffersSent(o, w) => {
                format!("offers_sent(\"{o}\", {}) = {}", duration(*w), f.offers_sent(o, *w, env.now))
            }
        }
    }
}

fn dur<F: Facts + ?Sized>(d: &Dur, env: &Env<'_, F>) -> String {
    match d {
        Dur::Lit(d) => duration(*d),
        Dur::Since(x) => format!(
            "since({}) = {}",
            time_path(*x),
            env.facts.instant(*x).map_or("never".into(), |t| duration(env.now.since(t)))
        ),
    }
}

fn text<F: Facts + ?Sized>(t: &Text, env: &Env<'_, F>) -> String {
    match t {
        Text::Lit(s) => format!("\"{s}\""),
        Text::Field(x) => {
            format!("{} = {}", text_path(*x), env.facts.text(*x).map_or("none".into(), |s| format!("\"{s}\"")))
        }
    }
}

/// A number as people write it: whole numbers without decimals, others
/// with two.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// A duration in the largest unit that divides it (`90d`, `36h`, `45m`).
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, n) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

fn path_of(wanted: impl Fn(&FieldRef) -> bool) -> &'static str {
    catalogue::fields().find(|i| wanted(&i.field)).map_or("?", |i| i.path)
}

fn num_path(f: NumField) -> &'static str {
    path_of(|r| matches!(r, FieldRef::Num(x) if *x == f))
}

fn time_path(f: TimeField) -> &'static str {
    path_of(|r| matches!(r, FieldRef::Time(x) if *x == f))
}

fn text_path(f: TextField) -> &'static str {
    path_of(|r| matches!(r, FieldRef::Text(x) if *x == f))
}

fn set_path(f: SetField) -> &'static str {
    path_of(|r| matches!(r, FieldRef::Set(x) if *x == f))
}

fn flag_path(f: FlagField) -> &'static str {
    path_of(|r| matches!(r, FieldRef::Flag(x) if *x == f))
}

#[cfg(test)]
mod tests {
    use crate::engine::{apply, Engine, EngineSettings, Input, Origin, Tables};
    use crate::event::{Event, EventKind, LineItem, Purchase};
    use crate::offer::Propensity;
    use crate::rules::RuleSet;
    use crate::state::CustomerState;
    use crate::time::Timestamp;
    use crate::view::CustomerView;

    const DAY: i64 = 86_400_000;

    #[test]
    fn explains_segments_atom_by_atom_and_offers_by_verdict() {
        let rules = RuleSet::from_yaml("rules.yaml", include_str!("../../tests/golden/rules.yaml")).expect("rules");
        let engine = Engine::new(rules, EngineSettings::default());
        let t0 = Timestamp(1_709_542_800_000);
        let ev = Event {
            id: "o1".into(),
            customer: "ana".into(),
            time: t0,
            kind: EventKind::Purchase(Purchase {
                order_id: "o1".into(),
                items: vec![LineItem { product_id: "p".into(), category: None, quantity: 1, unit_price: 1240.0 }],
                total: 1240.0,
                currency: "EUR".into(),
                channel: None,
            }),
        };
        let mut state = CustomerState::default();
        let origin = Origin { topic: "purchases", partition: 0, offset: 0 };
        apply(&mut state, Input::Event(&ev, origin), &Tables::default().context(&engine));
        let now = Timestamp(t0.as_millis() + 10 * DAY);
        let view = CustomerView::at(&state, engine.state_settings(), now);
        let (segments, offers) = engine.rules().explain(&view, &state, &Propensity::default(), now);
        let seg = |name: &str| segments.iter().find(|s| s.segment == name).expect(name);

        let vip = seg("vip");
        assert!(vip.member && vip.holds);
        assert_eq!(vip.atoms[0].atom, "spend.365d = 1240 >= 1000");
        let gold = seg("gold");
        assert!(gold.holds && !gold.member, "gold's condition holds, vip wins the group");
        assert_eq!(gold.lost_to.as_deref(), Some("vip"));
        let lapsed = seg("lapsed");
        assert!(!lapsed.member);
        assert_eq!(lapsed.atoms[1].atom, "since(last_purchase) = 10d >= 90d");
        assert_eq!(lapsed.next_change, Some(t0.as_millis() + 90 * DAY), "lapsed flips 90 days after the purchase");
        assert_eq!(seg("email_reachable").atoms[0].atom, "consent.email = false");

        let offer = |id: &str| offers.iter().find(|o| o.offer == id).expect(id);
        assert_eq!(offer("vip_early_access").verdict, "no_consent", "eligible, but no channel has consent");
        assert!(offer("vip_early_access").eligible);
        assert_eq!(offer("winback_20").verdict, "not_eligible");
        assert_eq!(offer("winback_20").atoms[0].atom, "in_segment(\"lapsed\") = false");
    }
}
