//! Evaluation of compiled conditions, and the time analysis behind timers.
//!
//! [`eval`] answers "is it true at `now`?" (short-circuiting, for the hot
//! path); [`analyse`] answers that and "what is the earliest instant after
//! `now` at which the answer could differ, if no new event arrives?" in one
//! pass. Neither allocates.

use super::calendar;
use super::compile::{Dur, Expr, Num, Slot, Text};
use super::facts::{Facts, NumField};
use super::parse::CmpOp;
use super::segset::SegmentSet;
use crate::time::{Duration, Timestamp};
use crate::window::WindowSums;

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
        for g in self.groups.iter() {
            // The first qualifying member (in priority order) wins; the
            // other qualifying ones drop out (the rest are not in `out`).
            let mut qualifying = g.iter().map(|&s| usize::from(s)).filter(|&s| raw.contains(s));
            if qualifying.next().is_some() {
                for s in qualifying {
                    out.remove(s);
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
    /// [`Facts::window_sums`] if they are for `now`.
    pub sums: Option<&'a WindowSums>,
}

/// The window sums of `facts` that answer for `now`, if any.
pub fn sums_for<F: Facts + ?Sized>(facts: &F, now: Timestamp) -> Option<&WindowSums> {
    facts.window_sums().filter(|s| s.at == now)
}

/// When each segment's membership could next change, for `in_segment`
/// atoms: the segments' own results so far, resolved through the groups.
pub struct SegNext<'a> {
    pub raw_next: &'a [Next],
    pub membership: &'a Membership,
}

impl SegNext<'_> {
    /// When membership of `j` could next change: its own condition, or any
    /// condition in its group.
    #[inline]
    pub fn get(&self, j: usize) -> Next {
        let own = |s: usize| self.raw_next.get(s).copied().unwrap_or(Next::NEVER);
        match self.membership.group_of.get(j).copied().flatten() {
            None => own(j),
            Some(g) => {
                self.membership.groups[usize::from(g)].iter().fold(Next::NEVER, |acc, &s| acc.min(own(usize::from(s))))
            }
        }
    }
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
        Expr::FieldCmp { f, op, x, slot } => op.test(field_number(*f, *slot, env), *x),
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

/// A numeric field, from the window sums when they have it.
#[inline]
pub(super) fn field_number<F: Facts + ?Sized>(f: NumField, slot: Option<Slot>, env: &Env<'_, F>) -> f64 {
    if let (Some(sl), Some(s)) = (slot, env.sums) {
        let raw = if sl.windowed() {
            s.sums[usize::from(sl.window)][usize::from(sl.counter)]
        } else {
            s.lifetime[usize::from(sl.counter)]
        };
        return if sl.cents { raw as f64 / 100.0 } else { raw as f64 };
    }
    env.facts.number(f, env.now)
}

#[inline]
fn num<F: Facts + ?Sized>(n: &Num, env: &Env<'_, F>) -> Option<f64> {
    match n {
        Num::Lit(x) => Some(*x),
        Num::Field(f) => Some(field_number(*f, Slot::of(*f), env)),
        Num::Age => match env.facts.birth_date() {
            Some(b) => Some(f64::from(calendar::age_at(b, env.now))),
            None => env.facts.declared_age().map(f64::from),
        },
        Num::Affinity(c, h) => Some(env.facts.affinity_hashed(c, *h, env.now)),
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

/// "When could this change next": an instant, or never. Packed into one
/// `i64` (never is `i64::MAX`) so the `(bool, Next)` pairs that
/// [`analyse`] returns travel in registers; `Timestamp::MAX` itself, the
/// end of time, is indistinguishable from never and needs no timer anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Next(i64);

impl Next {
    /// Cannot change with no new event.
    pub const NEVER: Next = Next(i64::MAX);

    /// Before anything (the identity of `max`).
    pub const MIN: Next = Next(i64::MIN);

    /// At `t`.
    #[inline]
    pub fn at(t: Timestamp) -> Next {
        Next(t.as_millis())
    }

    /// From an optional instant.
    #[inline]
    pub fn from_opt(t: Option<Timestamp>) -> Next {
        t.map_or(Next::NEVER, Next::at)
    }

    /// Back to an optional instant.
    #[inline]
    pub fn get(self) -> Option<Timestamp> {
        (self != Next::NEVER).then_some(Timestamp::from_millis(self.0))
    }
}

/// The value of `e` at `env.now`, and the earliest instant `> env.now` at
/// which it could change with no new event ([`Next::NEVER`]: it cannot).
/// The instant may be early (then nothing changes and the caller asks
/// again), never late. `seg_next(i)` gives the same for membership of
/// segment `i`.
pub fn analyse<F: Facts + ?Sized>(e: &Expr, env: &Env<'_, F>, seg_next: &SegNext<'_>) -> (bool, Next) {
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
            ((va == vb) == *eq, ta.min(tb))
        }
        atom => analyse_atom(atom, env, seg_next),
    }
}

/// An AND that is false stays false until every false operand has changed
/// at least once; one that is true changes when any operand does. OR is the
/// mirror image. One pass, no operand evaluated twice.
fn junction<F: Facts + ?Sized>(xs: &[Expr], env: &Env<'_, F>, seg_next: &SegNext<'_>, is_or: bool) -> (bool, Next) {
    let mut decided = false;
    // Over the deciding operands (false for AND, true for OR): the latest
    // change. Over all operands: the earliest.
    let mut latest_deciding = Next::MIN;
    let mut earliest_any = Next::NEVER;
    for x in xs {
        let (v, t) = analyse(x, env, seg_next);
        earliest_any = earliest_any.min(t);
        if v == is_or {
            decided = true;
            latest_deciding = latest_deciding.max(t);
            if t == Next::NEVER {
                // Decided until an event arrives: the rest cannot matter.
                break;
            }
        }
    }
    if decided {
        (is_or, latest_deciding)
    } else {
        (!is_or, earliest_any)
    }
}

/// [`analyse`] for a leaf (a comparison, flag, membership, calendar test):
/// value and next change from one read of the facts.
fn analyse_atom<F: Facts + ?Sized>(e: &Expr, env: &Env<'_, F>, seg_next: &SegNext<'_>) -> (bool, Next) {
    let now = env.now;
    match e {
        Expr::Flag(f) => (env.facts.flag(*f), Next::NEVER),
        Expr::FieldCmp { f, op, x, slot } => (op.test(field_number(*f, *slot, env), *x), field_step(*f, *slot, env)),
        Expr::SinceCmp { f, op, d } => match env.facts.instant(*f) {
            Some(t) => (op.test(now.since(t), *d), since_flip(t, *op, *d, now)),
            None => (false, Next::NEVER),
        },
        Expr::InSegment(i) => (eval(e, env), seg_next.get(usize::from(*i))),
        Expr::BirthdayWithin(d) => match env.facts.birth_date() {
            Some(b) => (
                calendar::birthday_within(b, now, *d),
                Next::from_opt(calendar::birthday_within_next_change(b, now, *d)),
            ),
            None => (false, Next::NEVER),
        },
        Expr::BirthdayThisMonth => match env.facts.birth_date() {
            Some(b) => {
                (calendar::birthday_this_month(b, now), Next::at(calendar::birthday_this_month_next_change(b, now)))
            }
            None => (false, Next::NEVER),
        },
        Expr::Num { op, a, b } => {
            // A missing value (unknown age) stays missing until an event.
            let (Some(va), Some(vb)) = (num(a, env), num(b, env)) else { return (false, Next::NEVER) };
            let mut t = num_step(a, env).min(num_step(b, env));
            match (a, b) {
                // Both decay at the same rate: their order never changes.
                (Num::Affinity(..), Num::Affinity(..)) => {}
                (Num::Affinity(..), _) => t = t.min(decay_crossing(va, vb, env)),
                (_, Num::Affinity(..)) => t = t.min(decay_crossing(vb, va, env)),
                _ => {}
            }
            (op.test(va, vb), t)
        }
        Expr::Dur { op, a, b } => {
            let (x, op, d) = match (a, b) {
                (Dur::Since(f), Dur::Lit(d)) => (env.facts.instant(*f), *op, *d),
                (Dur::Lit(d), Dur::Since(f)) => (env.facts.instant(*f), op.swapped(), *d),
                // since(x) - since(y) is constant; literals are folded.
                _ => (None, *op, Duration::ZERO),
            };
            (eval(e, env), x.map_or(Next::NEVER, |x| since_flip(x, op, d, now)))
        }
        // Composite expressions are handled by `analyse`.
        Expr::Not(_) | Expr::And(_) | Expr::Or(_) | Expr::BoolEq { .. } => analyse(e, env, seg_next),
        // Constants, instants compared with instants, and text never change
        // by time alone.
        Expr::Const(_)
        | Expr::Instant { .. }
        | Expr::Text { .. }
        | Expr::TextInList { .. }
        | Expr::TextInSet { .. } => (eval(e, env), Next::NEVER),
    }
}

/// When `since(x) OP d` can change, for an instant `x`. It is
/// `now OP x + d`: `>=` and `<` change at x + d, `>` and `<=` one
/// millisecond later, `==` and `!=` at both.
pub(super) fn since_flip(x: Timestamp, op: CmpOp, d: Duration, now: Timestamp) -> Next {
    let at = x + d;
    let after = at + Duration::from_millis(1);
    let candidates = match op {
        CmpOp::Ge | CmpOp::Lt => [Some(at), None],
        CmpOp::Gt | CmpOp::Le => [Some(after), None],
        CmpOp::Eq | CmpOp::Ne => [Some(at), Some(after)],
    };
    Next::from_opt(candidates.into_iter().flatten().find(|&c| c > now))
}

/// When a windowed number next changes (`slot` is `Some` and windowed
/// exactly for those); never for the others.
#[inline]
pub(super) fn field_step<F: Facts + ?Sized>(f: NumField, slot: Option<Slot>, env: &Env<'_, F>) -> Next {
    let Some(sl) = slot.filter(|s| s.windowed()) else { return Next::NEVER };
    let (w, c) = (usize::from(sl.window), usize::from(sl.counter));
    if let Some(s) = env.sums.filter(|s| s.mask & WindowSums::bit(w, c) != 0) {
        return Next::from_opt(s.next_change_at(w, c));
    }
    Next::from_opt(env.facts.next_window_change(f, env.now))
}

/// When a piecewise-constant number next steps (windowed counts, age,
/// offer sends); `None` for constants and for affinities (continuous).
fn num_step<F: Facts + ?Sized>(n: &Num, env: &Env<'_, F>) -> Next {
    match n {
        Num::Lit(_) | Num::Affinity(..) => Next::NEVER,
        Num::Field(f) => field_step(*f, Slot::of(*f), env),
        Num::Age => Next::from_opt(env.facts.birth_date().map(|b| calendar::next_birthday_after(b, env.now))),
        Num::OffersSent(o, w) => Next::from_opt(env.facts.next_offers_sent_change(o, *w, env.now)),
    }
}

/// When a value `v` decaying with the configured half-life falls to `c`.
/// Rounded down by a millisecond so float error can only make it early.
pub(super) fn decay_crossing<F: Facts + ?Sized>(v: f64, c: f64, env: &Env<'_, F>) -> Next {
    let now = env.now;
    if !(v > 0.0 && c > 0.0 && v >= c) || env.half_life <= Duration::ZERO {
        return Next::NEVER;
    }
    if v == c {
        return Next::at(now + Duration::from_millis(1));
    }
    let dt = env.half_life.as_millis() as f64 * (v / c).log2();
    if !dt.is_finite() || dt > 1e15 {
        return Next::NEVER;
    }
    let step = (dt.floor() as i64 - 1).max(1);
    Next::at(now + Duration::from_millis(step))
}
