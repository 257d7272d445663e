//! Evaluation of compiled conditions, and the time analysis behind timers.
//!
//! [`eval`] answers "is it true at `now`?" (short-circuiting, for the hot
//! path); [`analyse`] answers that and "what is the earliest instant after
//! `now` at which the answer could differ, if no new event arrives?" in one
//! pass. Neither allocates.

use super::calendar;
use super::compile::{Dur, Expr, Num, Text};
use super::facts::{Facts, NumField, TimeField};
use super::parse::CmpOp;
use super::segset::SegmentSet;
use crate::time::{Duration, Timestamp};

/// Exclusive groups: which group each segment is in, and each group's
/// members ordered by (priority, file order), the winner first.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    pub group_of: Vec<Option<u16>>,
    pub groups: Vec<Box<[u16]>>,
}

impl Membership {
    /// Whether segment `i` is a member, given every segment's own condition
    /// result in `raw`: a grouped segment must also be its group's first
    /// qualifying member.
    #[inline]
    pub fn member(&self, raw: &SegmentSet, i: usize) -> bool {
        match self.group_of.get(i).copied().flatten() {
            None => raw.contains(i),
            Some(g) => self.winner(raw, g) == Some(i),
        }
    }

    #[inline]
    fn winner(&self, raw: &SegmentSet, g: u16) -> Option<usize> {
        self.groups.get(usize::from(g))?.iter().map(|&s| usize::from(s)).find(|&s| raw.contains(s))
    }

    /// Final membership from raw condition results.
    pub fn finalize(&self, raw: &SegmentSet, out: &mut SegmentSet) {
        *out = *raw;
        for g in 0..self.groups.len() {
            let winner = self.winner(raw, g as u16);
            for &s in self.groups[g].iter() {
                if Some(usize::from(s)) != winner {
                    out.remove(usize::from(s));
                }
            }
        }
    }
}

/// How `in_segment` is answered.
#[derive(Clone, Copy)]
pub enum Segs<'a> {
    /// Offers: the final segment set the engine passes in.
    Final(&'a SegmentSet),
    /// Segments: the raw results so far, resolved through the groups.
    Raw(&'a SegmentSet, &'a Membership),
}

/// Everything an evaluation reads.
pub struct Env<'a, F: Facts + ?Sized> {
    pub facts: &'a F,
    pub now: Timestamp,
    pub segs: Segs<'a>,
    pub half_life: Duration,
}

/// Whether `e` holds at `env.now`.
pub fn eval<F: Facts + ?Sized>(e: &Expr, env: &Env<'_, F>) -> bool {
    match e {
        Expr::Const(b) => *b,
        Expr::Not(x) => !eval(x, env),
        Expr::And(xs) => xs.iter().all(|x| eval(x, env)),
        Expr::Or(xs) => xs.iter().any(|x| eval(x, env)),
        Expr::Flag(f) => env.facts.flag(*f),
        Expr::InSegment(i) => match env.segs {
            Segs::Final(s) => s.contains(usize::from(*i)),
            Segs::Raw(raw, m) => m.member(raw, usize::from(*i)),
        },
        Expr::BirthdayWithin(d) => env.facts.birth_date().is_some_and(|b| calendar::birthday_within(b, env.now, *d)),
        Expr::BirthdayThisMonth => env.facts.birth_date().is_some_and(|b| calendar::birthday_this_month(b, env.now)),
        Expr::BoolEq { a, b, eq } => (eval(a, env) == eval(b, env)) == *eq,
        Expr::FieldCmp { f, op, x } => op.test(env.facts.number(*f, env.now), *x),
        Expr::SinceCmp { f, op, d } => env.facts.instant(*f).is_some_and(|t| op.test(env.now.since(t), *d)),
        Expr::Num { op, a, b } => match (num(a, env), num(b, env)) {
            (Some(x), Some(y)) => op.test(x, y),
            _ => false,
        },
        Expr::Dur { op, a, b } => match (dur(a, env), dur(b, env)) {
            (Some(x), Some(y)) => op.test(x, y),
            _ => false,
        },
        Expr::Instant { op, a, b } => match (env.facts.instant(*a), env.facts.instant(*b)) {
            (Some(x), Some(y)) => op.test(x, y),
            _ => false,
        },
        Expr::Text { eq, a, b } => match (text(a, env), text(b, env)) {
            (Some(x), Some(y)) => (x == y) == *eq,
            _ => false,
        },
        Expr::TextInList { a, list } => text(a, env).is_some_and(|x| list.iter().any(|s| **s == *x)),
        Expr::TextInSet { a, set } => text(a, env).is_some_and(|x| env.facts.set_contains(*set, x)),
    }
}

#[inline]
fn num<F: Facts + ?Sized>(n: &Num, env: &Env<'_, F>) -> Option<f64> {
    match n {
        Num::Lit(x) => Some(*x),
        Num::Field(f) => Some(env.facts.number(*f, env.now)),
        Num::Age => match env.facts.birth_date() {
            Some(b) => Some(f64::from(calendar::age_at(b, env.now))),
            None => env.facts.declared_age().map(f64::from),
        },
        Num::Affinity(c) => Some(env.facts.affinity(c, env.now)),
        Num::OffersSent(o, w) => Some(f64::from(env.facts.offers_sent(o, *w, env.now))),
    }
}

#[inline]
fn dur<F: Facts + ?Sized>(d: &Dur, env: &Env<'_, F>) -> Option<Duration> {
    match d {
        Dur::Lit(d) => Some(*d),
        Dur::Since(f) => env.facts.instant(*f).map(|t| env.now.since(t)),
    }
}

#[inline]
fn text<'a, F: Facts + ?Sized>(t: &'a Text, env: &Env<'a, F>) -> Option<&'a str> {
    match t {
        Text::Lit(s) => Some(s),
        Text::Field(f) => env.facts.text(*f),
    }
}

/// The earlier of two optional instants.
#[inline]
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The value of `e` at `env.now`, and the earliest instant `> env.now` at
/// which it could change with no new event (`None`: it cannot). The instant
/// may be early (then nothing changes and the caller asks again), never
/// late. `seg_next(i)` gives the same for membership of segment `i`.
pub fn analyse<F: Facts + ?Sized>(
    e: &Expr,
    env: &Env<'_, F>,
    seg_next: &dyn Fn(usize) -> Option<Timestamp>,
) -> (bool, Option<Timestamp>) {
    match e {
        Expr::Not(x) => {
            let (v, t) = analyse(x, env, seg_next);
            (!v, t)
        }
        Expr::And(xs) => junction(xs, env, seg_next, false),
        Expr::Or(xs) => junction(xs, env, seg_next, true),
        Expr::BoolEq { a, b, eq } => {
            let (va, ta) = analyse(a, env, seg_next);
            let (vb, tb) = analyse(b, env, seg_next);
            ((va == vb) == *eq, earliest(ta, tb))
        }
        atom => (eval(atom, env), atom_next(atom, env, seg_next)),
    }
}

/// An AND that is false stays false until every false operand has changed
/// at least once; one that is true changes when any operand does. OR is the
/// mirror image. One pass, no operand evaluated twice.
fn junction<F: Facts + ?Sized>(
    xs: &[Expr],
    env: &Env<'_, F>,
    seg_next: &dyn Fn(usize) -> Option<Timestamp>,
    is_or: bool,
) -> (bool, Option<Timestamp>) {
    let mut decided = false;
    let mut decided_forever = false;
    let mut latest_deciding: Option<Timestamp> = None;
    let mut earliest_any: Option<Timestamp> = None;
    for x in xs {
        let (v, t) = analyse(x, env, seg_next);
        earliest_any = earliest(earliest_any, t);
        // An operand that decides the junction: false for AND, true for OR.
        if v == is_or {
            decided = true;
            match t {
                // Decided until an event arrives: the rest cannot matter.
                None => {
                    decided_forever = true;
                    break;
                }
                Some(t) => latest_deciding = Some(latest_deciding.map_or(t, |l| l.max(t))),
            }
        }
    }
    let value = decided == is_or;
    let next = match (decided, decided_forever) {
        (true, true) => None,
        (true, false) => latest_deciding,
        (false, _) => earliest_any,
    };
    (value, next)
}

/// [`analyse`] for a leaf (a comparison, flag, membership, calendar test).
fn atom_next<F: Facts + ?Sized>(
    e: &Expr,
    env: &Env<'_, F>,
    seg_next: &dyn Fn(usize) -> Option<Timestamp>,
) -> Option<Timestamp> {
    let now = env.now;
    match e {
        Expr::Const(_)
        | Expr::Flag(_)
        | Expr::Instant { .. }
        | Expr::Text { .. }
        | Expr::TextInList { .. }
        | Expr::TextInSet { .. } => None,
        Expr::InSegment(i) => seg_next(usize::from(*i)),
        Expr::BirthdayWithin(d) => {
            env.facts.birth_date().and_then(|b| calendar::birthday_within_next_change(b, now, *d))
        }
        Expr::BirthdayThisMonth => env.facts.birth_date().map(|b| calendar::birthday_this_month_next_change(b, now)),
        // Composite expressions are handled by `analyse`.
        Expr::Not(_) | Expr::And(_) | Expr::Or(_) | Expr::BoolEq { .. } => analyse(e, env, seg_next).1,
        Expr::Num { a, b, .. } => {
            let (Some(va), Some(vb)) = (num(a, env), num(b, env)) else { return None };
            let mut t = earliest(num_step(a, env), num_step(b, env));
            match (a, b) {
                // Both decay at the same rate: their order never changes.
                (Num::Affinity(_), Num::Affinity(_)) => {}
                (Num::Affinity(_), _) => t = earliest(t, decay_crossing(va, vb, env)),
                (_, Num::Affinity(_)) => t = earliest(t, decay_crossing(vb, va, env)),
                _ => {}
            }
            t
        }
        Expr::FieldCmp { f, .. } => field_step(*f, env),
        Expr::SinceCmp { f, op, d } => since_flip(*f, *op, *d, env),
        Expr::Dur { op, a, b } => match (a, b) {
            (Dur::Since(f), Dur::Lit(d)) => since_flip(*f, *op, *d, env),
            (Dur::Lit(d), Dur::Since(f)) => since_flip(*f, op.swapped(), *d, env),
            // since(x) - since(y) is constant; literals are folded.
            _ => None,
        },
    }
}

/// When `since(f) OP d` can change. It is `now OP f + d`: `>=` and `<`
/// change at f + d, `>` and `<=` one millisecond later, `==` and `!=` at both.
fn since_flip<F: Facts + ?Sized>(f: TimeField, op: CmpOp, d: Duration, env: &Env<'_, F>) -> Option<Timestamp> {
    let at = env.facts.instant(f)? + d;
    let after = at + Duration::from_millis(1);
    let candidates = match op {
        CmpOp::Ge | CmpOp::Lt => [Some(at), None],
        CmpOp::Gt | CmpOp::Le => [Some(after), None],
        CmpOp::Eq | CmpOp::Ne => [Some(at), Some(after)],
    };
    candidates.into_iter().flatten().find(|&c| c > env.now)
}

/// When a windowed number next changes; `None` for the others.
fn field_step<F: Facts + ?Sized>(f: NumField, env: &Env<'_, F>) -> Option<Timestamp> {
    match f {
        NumField::Orders(w)
        | NumField::Spend(w)
        | NumField::PageViews(w)
        | NumField::ProductViews(w)
        | NumField::Sessions(w)
            if w.length().is_some() =>
        {
            env.facts.next_window_change(f, env.now)
        }
        _ => None,
    }
}

/// When a piecewise-constant number next steps (windowed counts, age,
/// offer sends); `None` for constants and for affinities (continuous).
fn num_step<F: Facts + ?Sized>(n: &Num, env: &Env<'_, F>) -> Option<Timestamp> {
    match n {
        Num::Lit(_) | Num::Affinity(_) => None,
        Num::Field(f) => field_step(*f, env),
        Num::Age => env.facts.birth_date().map(|b| calendar::next_birthday_after(b, env.now)),
        Num::OffersSent(o, w) => env.facts.next_offers_sent_change(o, *w, env.now),
    }
}

/// When a value `v` decaying with the configured half-life falls to `c`.
/// Rounded down by a millisecond so float error can only make it early.
fn decay_crossing<F: Facts + ?Sized>(v: f64, c: f64, env: &Env<'_, F>) -> Option<Timestamp> {
    let now = env.now;
    if !(v > 0.0 && c > 0.0 && v >= c) || env.half_life <= Duration::ZERO {
        return None;
    }
    if v == c {
        return Some(now + Duration::from_millis(1));
    }
    let dt = env.half_life.as_millis() as f64 * (v / c).log2();
    if !dt.is_finite() || dt > 1e15 {
        return None;
    }
    let step = (dt.floor() as i64 - 1).max(1);
    Some(now + Duration::from_millis(step))
}
