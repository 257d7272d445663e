//! Conditions lowered once more for the hot path.
//!
//! [`super::eval`] walks the [`Expr`] tree; each level costs a call and a
//! dispatch, and the engine evaluates every segment with its time analysis
//! on every event. Most conditions are one comparison, or an `&&` or `||` of
//! comparisons, so [`Cond`] keeps those shapes flat, with their leaves
//! resolved to [`Atom`]s that read the facts directly (windowed counts from
//! the window sums, affinities by precomputed hash). Anything else is an
//! [`Atom::Other`] that defers to the tree walker, so every condition has a
//! `Cond` and the answers are, by construction, those of [`eval::eval`]
//! and [`eval::analyse`]: same value, same next instant.
//!
//! For the pass the engine runs on every input (every segment with its
//! next change), a [`Plan`] goes further: the distinct leaves of all
//! segment conditions are analysed once each, kind by kind, and segments
//! are assembled from a bitmask of leaf values. `plan_tests` checks both
//! against the tree walker on random rules and customers.

use super::calendar;
use super::compile::{Expr, Num, Slot, Text};
use super::eval::{self, Env, Next, SegNext};
use super::facts::{Facts, FlagField, NumField, SetField, TextField, TimeField};
use super::parse::CmpOp;
use super::segset::SegmentSet;
use crate::time::{Duration, Timestamp};
use crate::window::{WindowSums, COUNTERS, WINDOW_DAYS};

/// A condition's top-level shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// A single leaf.
    Atom(Atom),
    /// `a && b && ...`, operands in the tree's order.
    All(Box<[Atom]>),
    /// `a || b || ...`, operands in the tree's order.
    Any(Box<[Atom]>),
}

/// A leaf of a [`Cond`].
#[derive(Clone, Debug, PartialEq)]
pub enum Atom {
    /// `orders.30d >= 3`, `orders.lifetime > 0`: a counter field against a
    /// literal.
    Count { f: NumField, slot: Slot, op: CmpOp, x: f64 },
    /// `cart.items > 0`, `aov >= 120`: another numeric field (none changes
    /// with time alone) against a literal.
    Number { f: NumField, op: CmpOp, x: f64 },
    /// `since(last_purchase) >= 90d`.
    Since { f: TimeField, op: CmpOp, d: Duration },
    /// `consent.email`.
    Flag(FlagField),
    /// `affinity("keto") OP x`, with the affinity on the left.
    Affinity { category: Box<str>, hash: u64, op: CmpOp, x: f64 },
    /// `profile.age OP x`, with the age on the left.
    Age { op: CmpOp, x: f64 },
    /// `profile.country == "DE"` (`eq`) or `!=` (not `eq`).
    TextIs { f: TextField, lit: Box<str>, eq: bool },
    /// `profile.country in ["DE", "AT"]`.
    TextIn { f: TextField, list: Box<[Box<str>]> },
    /// `"fitness" in profile.interests`.
    InSet { lit: Box<str>, set: SetField },
    /// Anything else, evaluated by the tree walker.
    Other(Expr),
}

impl Cond {
    /// Lowers a compiled condition.
    pub fn new(e: &Expr) -> Cond {
        match e {
            Expr::And(xs) => Cond::All(xs.iter().map(Atom::new).collect()),
            Expr::Or(xs) => Cond::Any(xs.iter().map(Atom::new).collect()),
            e => Cond::Atom(Atom::new(e)),
        }
    }

    /// [`eval::eval`] of the condition it was built from.
    #[inline]
    pub fn eval<F: Facts + ?Sized>(&self, env: &Env<'_, F>) -> bool {
        match self {
            Cond::Atom(a) => a.eval(env),
            Cond::All(xs) => xs.iter().all(|x| x.eval(env)),
            Cond::Any(xs) => xs.iter().any(|x| x.eval(env)),
        }
    }

    /// [`eval::analyse`] of the condition it was built from.
    #[inline]
    pub fn analyse<F: Facts + ?Sized>(&self, env: &Env<'_, F>, seg_next: &SegNext<'_>) -> (bool, Next) {
        match self {
            Cond::Atom(a) => a.analyse(env, seg_next),
            Cond::All(xs) => junction(xs, env, seg_next, false),
            Cond::Any(xs) => junction(xs, env, seg_next, true),
        }
    }
}

/// [`eval::analyse`]'s junction over atoms; see there for the rule.
#[inline]
fn junction<F: Facts + ?Sized>(xs: &[Atom], env: &Env<'_, F>, seg_next: &SegNext<'_>, is_or: bool) -> (bool, Next) {
    let mut decided = false;
    let mut latest_deciding = Next::MIN;
    let mut earliest_any = Next::NEVER;
    for x in xs {
        let (v, t) = x.analyse(env, seg_next);
        earliest_any = earliest_any.min(t);
        if v == is_or {
            decided = true;
            latest_deciding = latest_deciding.max(t);
            if t == Next::NEVER {
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

impl Atom {
    fn new(e: &Expr) -> Atom {
        match e {
            Expr::FieldCmp { f, op, x, slot: Some(slot) } => Atom::Count { f: *f, slot: *slot, op: *op, x: *x },
            Expr::FieldCmp { f, op, x, slot: None } => Atom::Number { f: *f, op: *op, x: *x },
            Expr::SinceCmp { f, op, d } => Atom::Since { f: *f, op: *op, d: *d },
            Expr::Flag(f) => Atom::Flag(*f),
            Expr::Num { op, a: Num::Affinity(category, hash), b: Num::Lit(x) } => {
                Atom::Affinity { category: category.clone(), hash: *hash, op: *op, x: *x }
            }
            Expr::Num { op, a: Num::Lit(x), b: Num::Affinity(category, hash) } => {
                Atom::Affinity { category: category.clone(), hash: *hash, op: op.swapped(), x: *x }
            }
            Expr::Text { eq, a: Text::Field(f), b: Text::Lit(lit) }
            | Expr::Text { eq, a: Text::Lit(lit), b: Text::Field(f) } => {
                Atom::TextIs { f: *f, lit: lit.clone(), eq: *eq }
            }
            Expr::TextInList { a: Text::Field(f), list } => Atom::TextIn { f: *f, list: list.clone() },
            Expr::TextInSet { a: Text::Lit(lit), set } => Atom::InSet { lit: lit.clone(), set: *set },
            Expr::Num { op, a: Num::Age, b: Num::Lit(x) } => Atom::Age { op: *op, x: *x },
            Expr::Num { op, a: Num::Lit(x), b: Num::Age } => Atom::Age { op: op.swapped(), x: *x },
            e => Atom::Other(e.clone()),
        }
    }

    #[inline(always)]
    fn eval<F: Facts + ?Sized>(&self, env: &Env<'_, F>) -> bool {
        match self {
            Atom::Count { f, slot, op, x } => op.test(eval::field_number(*f, Some(*slot), env), *x),
            Atom::Number { f, op, x } => op.test(env.facts.number(*f, env.now), *x),
            Atom::Since { f, op, d } => env.facts.instant(*f).is_some_and(|t| op.test(env.now.since(t), *d)),
            Atom::Flag(f) => env.facts.flag(*f),
            Atom::Affinity { category, hash, op, x } => {
                op.test(env.facts.affinity_hashed(category, *hash, env.now), *x)
            }
            Atom::Age { op, x } => age(env).is_some_and(|a| op.test(a, *x)),
            Atom::TextIs { f, lit, eq } => env.facts.text(*f).is_some_and(|t| same(t, lit) == *eq),
            Atom::TextIn { f, list } => env.facts.text(*f).is_some_and(|t| list.iter().any(|s| same(t, s))),
            Atom::InSet { lit, set } => env.facts.set_contains(*set, lit),
            Atom::Other(e) => eval::eval(e, env),
        }
    }

    #[inline(always)]
    fn analyse<F: Facts + ?Sized>(&self, env: &Env<'_, F>, seg_next: &SegNext<'_>) -> (bool, Next) {
        match self {
            Atom::Count { f, slot, op, x } => {
                (op.test(eval::field_number(*f, Some(*slot), env), *x), eval::field_step(*f, Some(*slot), env))
            }
            Atom::Number { f, op, x } => (op.test(env.facts.number(*f, env.now), *x), Next::NEVER),
            Atom::Since { f, op, d } => match env.facts.instant(*f) {
                Some(t) => (op.test(env.now.since(t), *d), eval::since_flip(t, *op, *d, env.now)),
                None => (false, Next::NEVER),
            },
            Atom::Flag(f) => (env.facts.flag(*f), Next::NEVER),
            Atom::Affinity { category, hash, op, x } => {
                let v = env.facts.affinity_hashed(category, *hash, env.now);
                (op.test(v, *x), eval::decay_crossing(v, *x, env))
            }
            Atom::Age { op, x } => match env.facts.birth_date() {
                Some(b) => (
                    op.test(f64::from(calendar::age_at(b, env.now)), *x),
                    Next::at(calendar::next_birthday_after(b, env.now)),
                ),
                None => match env.facts.declared_age() {
                    Some(a) => (op.test(f64::from(a), *x), Next::NEVER),
                    None => (false, Next::NEVER),
                },
            },
            Atom::TextIs { .. } | Atom::TextIn { .. } | Atom::InSet { .. } => (self.eval(env), Next::NEVER),
            Atom::Other(e) => eval::analyse(e, env, seg_next),
        }
    }
}

/// `a == b` for the short strings of profile fields, compared inline
/// rather than through a `memcmp` call.
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// `profile.age` as [`eval`] computes it.
#[inline]
fn age<F: Facts + ?Sized>(env: &Env<'_, F>) -> Option<f64> {
    match env.facts.birth_date() {
        Some(b) => Some(f64::from(calendar::age_at(b, env.now))),
        None => env.facts.declared_age().map(f64::from),
    }
}

/// Most distinct leaves a [`Plan`] analyses up front (one bit each in a
/// `u64`); conditions beyond it keep their [`Cond`].
pub const PLAN_ATOMS: usize = 64;

/// The time analysis of every segment in two passes: first each distinct
/// leaf of the conditions that read no other segment, once (conditions
/// share leaves such as `orders.lifetime > 0`), grouped by kind so each
/// kind is one tight loop; then each segment, in dependency order, from
/// those results or, if it reads other segments, from its [`Cond`]. A
/// leaf's value and next change do not depend on what else is evaluated,
/// and [`junction`] stopping early only skips operands that cannot change
/// its answer, so the results are [`Cond::analyse`]'s.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Counter leaves (whole units and cents alike: tested on the raw
    /// count).
    counts: Box<[CountLeaf]>,
    sinces: Box<[SinceLeaf]>,
    /// `profile.age OP x` leaves: id, operator, literal (never NaN).
    ages: Box<[(u8, Ops, f64)]>,
    affinities: Box<[AffinityLeaf]>,
    /// Leaves that never change with time alone (next change never):
    /// numbers other than counters, consent flags, text tests. Only their
    /// values are written.
    numbers: Box<[(u8, NumField, CmpOp, f64)]>,
    flags: Box<[(u8, FlagField)]>,
    texts: Box<[(u8, Atom)]>,
    /// Everything else, through [`Atom::analyse`].
    others: Box<[(u8, Atom)]>,
    steps: Box<[Step]>,
    /// Some step is [`Shape::Cond`].
    reads_segments: bool,
    /// The steps again, by shape, for [`Plan::assemble`] (when no step is
    /// a `Cond`, order does not matter): one-leaf segments as (leaf,
    /// segment), and the leaves of the time-dependent ones; `&&` and `||`
    /// segments as (mask, segment, time-dependent).
    ones: Box<[(u8, u16)]>,
    ones_timed: u64,
    alls: Box<[(u64, u16, bool)]>,
    anys: Box<[(u64, u16, bool)]>,
}

/// `affinity("c") OP x` ([`Atom::Affinity`]), unpacked.
#[derive(Clone, Debug)]
struct AffinityLeaf {
    id: u8,
    category: Box<str>,
    hash: u64,
    op: CmpOp,
    x: f64,
}

/// One segment of the second pass, in dependency order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub segment: u16,
    /// Whether the condition can change with time alone.
    pub timed: bool,
    pub shape: Shape,
}

/// A counter field against a literal ([`Atom::Count`]), unpacked.
#[derive(Clone, Debug)]
struct CountLeaf {
    id: u8,
    /// Window index (0 to 3, as in [`crate::window::WindowSums::sums`])
    /// and counter index; `days` is 0 for lifetime totals.
    window: u8,
    counter: u8,
    /// The window's length in days, for its next change; 0: lifetime.
    days: i64,
    /// The comparison on the raw counter: true iff `raw` is in `lo..=hi`,
    /// inverted by `out` ([`RawTest`]).
    test: RawTest,
    /// The atom, for facts without window sums.
    atom: Atom,
}

/// `OP x` on a counter's value, as a test on its raw integer: the values
/// that pass are an interval of raw counts (or all but one), because the
/// value (`raw as f64`, divided by 100 for cents) never decreases as `raw`
/// grows. Found once, by bisection with the very same arithmetic, so the
/// answers are [`CmpOp::test`]'s for every `raw`.
#[derive(Clone, Copy, Debug)]
struct RawTest {
    lo: i64,
    /// `hi - lo` as unsigned, so that the test is one comparison.
    span: u64,
    out: bool,
}

impl RawTest {
    fn new(op: CmpOp, x: f64, cents: bool) -> RawTest {
        let value = |raw: i64| if cents { raw as f64 / 100.0 } else { raw as f64 };
        // The smallest raw for which `pred` holds (`pred` false, then true
        // as raw grows); `None` if it never does.
        let first = |pred: &dyn Fn(f64) -> bool| -> Option<i64> {
            if !pred(value(i64::MAX)) {
                return None;
            }
            let (mut lo, mut hi) = (i128::from(i64::MIN), i128::from(i64::MAX));
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                // `mid` lies between two i64s: it is one.
                if pred(value(mid as i64)) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            Some(lo as i64)
        };
        // Raw counts whose value is `>= x` (`Ge`) or `> x` (`Gt`) form a
        // suffix; `< x` and `<= x` the complementary prefixes.
        let suffix = |strict: bool| first(&|v: f64| if strict { v > x } else { v >= x });
        // The raw counts in `lo..end` pass, inverted if `out`.
        let between = |lo: Option<i64>, end: Option<i64>, out: bool| match (lo, end) {
            // An empty interval: then every count passes iff inverted.
            (None, _) => RawTest::all(out),
            (Some(lo), Some(end)) if end <= lo => RawTest::all(out),
            (Some(lo), end) => {
                let hi = end.map_or(i64::MAX, |e| e - 1);
                RawTest { lo, span: hi.wrapping_sub(lo) as u64, out }
            }
        };
        match op {
            CmpOp::Ge => between(suffix(false), None, false),
            CmpOp::Gt => between(suffix(true), None, false),
            CmpOp::Lt => between(suffix(false), None, true),
            CmpOp::Le => between(suffix(true), None, true),
            CmpOp::Eq => between(suffix(false), suffix(true), false),
            CmpOp::Ne => between(suffix(false), suffix(true), true),
        }
    }

    /// Every raw count passes, or none does.
    fn all(pass: bool) -> RawTest {
        RawTest { lo: i64::MIN, span: u64::MAX, out: !pass }
    }

    #[inline(always)]
    fn test(self, raw: i64) -> bool {
        (raw.wrapping_sub(self.lo) as u64 <= self.span) != self.out
    }
}

/// Every [`TimeField`], in [`time_index`] order.
const TIME_FIELDS: [TimeField; 5] = [
    TimeField::CartLastAdded,
    TimeField::LastPurchase,
    TimeField::FirstPurchase,
    TimeField::FirstSeen,
    TimeField::LastSeen,
];

/// `f`'s position in [`TIME_FIELDS`].
#[inline(always)]
fn time_index(f: TimeField) -> usize {
    match f {
        TimeField::CartLastAdded => 0,
        TimeField::LastPurchase => 1,
        TimeField::FirstPurchase => 2,
        TimeField::FirstSeen => 3,
        TimeField::LastSeen => 4,
    }
}

/// `since(f) OP d` ([`Atom::Since`]), unpacked.
#[derive(Clone, Debug)]
struct SinceLeaf {
    id: u8,
    f: TimeField,
    ops: Ops,
    d: Duration,
    /// [`eval::since_flip`]'s candidates: the first is `x + d` (or one
    /// millisecond later when `after`); `both`: then one millisecond later.
    after: bool,
    both: bool,
}

/// A comparison operator as the set of orderings it accepts, so testing
/// one is a mask instead of a jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ops(u8);

impl Ops {
    const LT: u8 = 1;
    const EQ: u8 = 2;
    const GT: u8 = 4;
    /// Unordered (a NaN): only `!=` holds, as with `PartialOrd`. Not used
    /// by [`Ops::test_ordered`]; kept so the masks state `CmpOp` in full.
    const UN: u8 = 8;

    fn of(op: CmpOp) -> Ops {
        Ops(match op {
            CmpOp::Eq => Ops::EQ,
            CmpOp::Ne => Ops::LT | Ops::GT | Ops::UN,
            CmpOp::Lt => Ops::LT,
            CmpOp::Le => Ops::LT | Ops::EQ,
            CmpOp::Gt => Ops::GT,
            CmpOp::Ge => Ops::GT | Ops::EQ,
        })
    }

    /// [`CmpOp::test`] for operands that are never NaN (so exactly one of
    /// `<`, `==`, `>` holds).
    #[inline(always)]
    fn test_ordered<T: PartialOrd>(self, a: T, b: T) -> bool {
        let code = 1u32 << (1 + u32::from(a > b) - u32::from(a < b));
        u32::from(self.0) & code != 0
    }
}

/// How one segment's result is assembled from the first pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One leaf's result.
    One(u8),
    /// `&&` of the leaves in the mask.
    All(u64),
    /// `||` of the leaves in the mask.
    Any(u64),
    /// Analyse the segment's [`Cond`].
    Cond,
}

/// The first pass's results: leaf `i`'s value is bit `i` of `vals`, its
/// next change `next[i]`.
#[derive(Clone, Debug)]
pub struct Leaves {
    vals: u64,
    next: [Next; PLAN_ATOMS],
}

impl Default for Leaves {
    fn default() -> Self {
        Leaves { vals: 0, next: [Next::NEVER; PLAN_ATOMS] }
    }
}

impl Leaves {
    /// A segment's result from its shape; `None` for [`Shape::Cond`].
    #[inline]
    pub fn result(&self, shape: &Shape) -> Option<(bool, Next)> {
        match *shape {
            Shape::One(id) => Some((self.vals >> id & 1 != 0, self.next[usize::from(id)])),
            Shape::All(mask) => Some(self.junction(mask, false)),
            Shape::Any(mask) => Some(self.junction(mask, true)),
            Shape::Cond => None,
        }
    }

    /// [`junction`] over the leaves in `mask`.
    #[inline]
    fn junction(&self, mask: u64, is_or: bool) -> (bool, Next) {
        let ones = if is_or { self.vals } else { !self.vals };
        let deciding = mask & ones;
        if deciding != 0 {
            (is_or, self.fold(deciding, Next::MIN, Next::max))
        } else {
            (!is_or, self.fold(mask, Next::NEVER, Next::min))
        }
    }

    #[inline(always)]
    fn fold(&self, mut m: u64, init: Next, f: fn(Next, Next) -> Next) -> Next {
        let mut acc = init;
        while m != 0 {
            acc = f(acc, self.next[m.trailing_zeros() as usize]);
            m &= m - 1;
        }
        acc
    }
}

/// [`Leaves`] while the first pass writes it: the values in a local.
struct Acc<'a> {
    vals: u64,
    next: &'a mut [Next; PLAN_ATOMS],
}

impl Acc<'_> {
    /// Sets a leaf's value, leaving its next change as it is (never in a
    /// fresh `Leaves`).
    #[inline(always)]
    fn set_value(&mut self, id: u8, v: bool) {
        self.vals |= u64::from(v) << (id & 63);
    }

    /// Sets a leaf's value and next change.
    #[inline(always)]
    fn set(&mut self, id: u8, (v, t): (bool, Next)) {
        // Ids are below PLAN_ATOMS (64); the masks only spare the checks.
        self.vals |= u64::from(v) << (id & 63);
        self.next[usize::from(id & 63)] = t;
    }
}

impl Plan {
    /// Plans the segment conditions `exprs` (indexed like the segments),
    /// to be evaluated in `order` (dependencies first); `timed[i]`: whether
    /// segment `i`'s condition can change with time alone.
    pub fn new(exprs: &[Expr], order: &[u16], timed: &[bool]) -> Plan {
        let mut atoms: Vec<Atom> = Vec::new();
        let mut shapes = Vec::with_capacity(exprs.len());
        for e in exprs {
            let leaves: Vec<Atom> = match e {
                Expr::And(xs) | Expr::Or(xs) => xs.iter().map(Atom::new).collect(),
                e => vec![Atom::new(e)],
            };
            let mut fresh: Vec<&Atom> = Vec::new();
            for a in &leaves {
                if !atoms.contains(a) && !fresh.contains(&a) {
                    fresh.push(a);
                }
            }
            if e.references_segments() || atoms.len() + fresh.len() > PLAN_ATOMS {
                shapes.push(Shape::Cond);
                continue;
            }
            let mut mask = 0u64;
            let mut first = 0u8;
            for (k, a) in leaves.into_iter().enumerate() {
                let id = match atoms.iter().position(|x| *x == a) {
                    Some(p) => p,
                    None => {
                        atoms.push(a);
                        atoms.len() - 1
                    }
                };
                if k == 0 {
                    first = id as u8;
                }
                mask |= 1 << id;
            }
            shapes.push(match e {
                Expr::And(_) => Shape::All(mask),
                Expr::Or(_) => Shape::Any(mask),
                _ => Shape::One(first),
            });
        }
        let (mut counts, mut sinces, mut others) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ages, mut affinities) = (Vec::new(), Vec::new());
        let (mut numbers, mut flags, mut texts) = (Vec::new(), Vec::new(), Vec::new());
        for (id, a) in atoms.into_iter().enumerate() {
            // At most PLAN_ATOMS (64) leaves: the id fits in a u8.
            let id = id as u8;
            match a {
                // Counts are integers and number literals finite or
                // infinite, never NaN, as `Ops::test_ordered` needs.
                Atom::Count { slot, op, x, .. } if !x.is_nan() => {
                    let leaf = CountLeaf {
                        id,
                        window: if slot.windowed() { slot.window } else { 0 },
                        counter: slot.counter,
                        days: if slot.windowed() { WINDOW_DAYS[usize::from(slot.window)] } else { 0 },
                        test: RawTest::new(op, x, slot.cents),
                        atom: a,
                    };
                    counts.push(leaf);
                }
                Atom::Since { f, op, d } => sinces.push(SinceLeaf {
                    id,
                    f,
                    ops: Ops::of(op),
                    d,
                    after: matches!(op, CmpOp::Gt | CmpOp::Le),
                    both: matches!(op, CmpOp::Eq | CmpOp::Ne),
                }),
                // Ages are whole numbers: never NaN.
                Atom::Age { op, x } if !x.is_nan() => ages.push((id, Ops::of(op), x)),
                Atom::Affinity { category, hash, op, x } => affinities.push(AffinityLeaf { id, category, hash, op, x }),
                Atom::Number { f, op, x } => numbers.push((id, f, op, x)),
                Atom::Flag(f) => flags.push((id, f)),
                a @ (Atom::TextIs { .. } | Atom::TextIn { .. } | Atom::InSet { .. }) => texts.push((id, a)),
                a => others.push((id, a)),
            }
        }
        let steps: Box<[Step]> = order
            .iter()
            .map(|&i| Step {
                segment: i,
                timed: timed.get(usize::from(i)).copied().unwrap_or(true),
                shape: shapes.get(usize::from(i)).cloned().unwrap_or(Shape::Cond),
            })
            .collect();
        let reads_segments = steps.iter().any(|s: &Step| s.shape == Shape::Cond);
        let (mut ones, mut ones_timed, mut alls, mut anys) = (Vec::new(), 0u64, Vec::new(), Vec::new());
        for st in steps.iter() {
            match st.shape {
                Shape::One(id) => {
                    ones.push((id, st.segment));
                    if st.timed {
                        ones_timed |= 1 << id;
                    }
                }
                Shape::All(mask) => alls.push((mask, st.segment, st.timed)),
                Shape::Any(mask) => anys.push((mask, st.segment, st.timed)),
                Shape::Cond => {}
            }
        }
        Plan {
            reads_segments,
            ones: ones.into_boxed_slice(),
            ones_timed,
            alls: alls.into_boxed_slice(),
            anys: anys.into_boxed_slice(),
            counts: counts.into_boxed_slice(),
            sinces: sinces.into_boxed_slice(),
            ages: ages.into_boxed_slice(),
            affinities: affinities.into_boxed_slice(),
            numbers: numbers.into_boxed_slice(),
            flags: flags.into_boxed_slice(),
            texts: texts.into_boxed_slice(),
            others: others.into_boxed_slice(),
            steps,
        }
    }

    /// Whether some segment is analysed from its [`Cond`] (it reads other
    /// segments, or its leaves did not fit): only then do segments' next
    /// changes need keeping.
    #[inline]
    pub fn reads_segments(&self) -> bool {
        self.reads_segments
    }

    /// The second pass when no segment is a [`Shape::Cond`]: every
    /// segment's own result (before groups) and the earliest next change of
    /// the time-dependent ones, shape by shape instead of segment by
    /// segment (the same results: none depends on another).
    #[inline]
    pub fn assemble(&self, leaves: &Leaves) -> (SegmentSet, Next) {
        let mut raw = SegmentSet::new();
        let mut best = leaves.fold(self.ones_timed, Next::NEVER, Next::min);
        for &(id, segment) in self.ones.iter() {
            if leaves.vals >> (id & 63) & 1 != 0 {
                raw.insert(usize::from(segment));
            }
        }
        for (shapes, is_or) in [(&self.alls, false), (&self.anys, true)] {
            for &(mask, segment, timed) in shapes.iter() {
                let hit = if timed {
                    let (hit, t) = leaves.junction(mask, is_or);
                    best = best.min(t);
                    hit
                } else {
                    // Its next change is never: only the value is needed.
                    let ones = if is_or { leaves.vals } else { !leaves.vals };
                    (mask & ones != 0) == is_or
                };
                if hit {
                    raw.insert(usize::from(segment));
                }
            }
        }
        (raw, best)
    }

    /// The segments in evaluation order, with their shapes.
    #[inline]
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The first pass: every planned leaf's value and next change, into a
    /// fresh `out` ([`Leaves::default`]).
    #[inline]
    pub fn analyse_leaves<F: Facts + ?Sized>(&self, env: &Env<'_, F>, seg_next: &SegNext<'_>, leaves: &mut Leaves) {
        // The values accumulate in a local (a register), written back once.
        let Leaves { vals, next } = leaves;
        let mut acc = Acc { vals: *vals, next };
        self.analyse_into(env, seg_next, &mut acc);
        *vals = acc.vals;
    }

    #[inline(always)]
    fn analyse_into<F: Facts + ?Sized>(&self, env: &Env<'_, F>, seg_next: &SegNext<'_>, out: &mut Acc<'_>) {
        match env.sums {
            Some(s) => count_leaves(&self.counts, s, env, seg_next, out),
            None => {
                for c in self.counts.iter() {
                    out.set(c.id, c.atom.analyse(env, seg_next));
                }
            }
        }
        let now = env.now;
        if !self.sinces.is_empty() {
            // Each instant read once, by field, instead of a dispatch per leaf.
            let instants = TIME_FIELDS.map(|f| env.facts.instant(f));
            for l in self.sinces.iter() {
                // A missing instant: false, never changes (as `out` holds).
                let Some(x) = instants[time_index(l.f)] else { continue };
                let v = l.ops.test_ordered(now.since(x), l.d);
                let at = x + l.d;
                let after = at + Duration::from_millis(1);
                let first = if l.after { after } else { at };
                let next = if first > now {
                    Next::at(first)
                } else if l.both && after > now {
                    Next::at(after)
                } else {
                    Next::NEVER
                };
                out.set(l.id, (v, next));
            }
        }
        if !self.ages.is_empty() {
            // As `Atom::Age`, read once for every age leaf.
            let (age, next) = match env.facts.birth_date() {
                Some(b) => (Some(f64::from(calendar::age_at(b, now))), Next::at(calendar::next_birthday_after(b, now))),
                None => (env.facts.declared_age().map(f64::from), Next::NEVER),
            };
            for &(id, ops, x) in self.ages.iter() {
                out.set(id, age.map_or((false, Next::NEVER), |a| (ops.test_ordered(a, x), next)));
            }
        }
        for l in self.affinities.iter() {
            let v = env.facts.affinity_hashed(&l.category, l.hash, now);
            out.set(l.id, (l.op.test(v, l.x), eval::decay_crossing(v, l.x, env)));
        }
        // As `Atom::analyse` for these kinds: the value, next change never
        // (which `out` already holds).
        for &(id, f, op, x) in self.numbers.iter() {
            out.set_value(id, op.test(env.facts.number(f, now), x));
        }
        for &(id, f) in self.flags.iter() {
            out.set_value(id, env.facts.flag(f));
        }
        for (id, a) in self.texts.iter() {
            // Only the text kinds, so that no other kind's set-up (the
            // calendar's, for ages) is hoisted in front of this loop.
            let v = match a {
                Atom::TextIs { f, lit, eq } => env.facts.text(*f).is_some_and(|t| same(t, lit) == *eq),
                Atom::TextIn { f, list } => env.facts.text(*f).is_some_and(|t| list.iter().any(|s| same(t, s))),
                Atom::InSet { lit, set } => env.facts.set_contains(*set, lit),
                a => analyse_other(a, env, seg_next).0,
            };
            out.set_value(*id, v);
        }
        for (id, a) in self.others.iter() {
            out.set(*id, analyse_other(a, env, seg_next));
        }
    }
}

/// [`Atom::analyse`] out of line: rare leaves (calendar functions, offer
/// sends, nested conditions), kept out of the hot loop's code so that
/// their set-up is not hoisted into every evaluation.
#[inline(never)]
fn analyse_other<F: Facts + ?Sized>(a: &Atom, env: &Env<'_, F>, seg_next: &SegNext<'_>) -> (bool, Next) {
    a.analyse(env, seg_next)
}

/// The counter leaves' values and next changes, from the window sums:
/// [`eval::field_number`] and [`eval::field_step`] unrolled, the
/// comparison done on the raw count ([`RawTest`]).
#[inline(always)]
fn count_leaves<F: Facts + ?Sized>(
    leaves: &[CountLeaf],
    s: &WindowSums,
    env: &Env<'_, F>,
    seg_next: &SegNext<'_>,
    out: &mut Acc<'_>,
) {
    for c in leaves {
        let (w, k) = (usize::from(c.window & 3), usize::from(c.counter) % COUNTERS);
        if c.days != 0 && s.mask & WindowSums::bit(w, k) == 0 {
            // Sums made for rules that do not read this one.
            out.set(c.id, c.atom.analyse(env, seg_next));
            continue;
        }
        let raw = if c.days == 0 { s.lifetime[k] } else { s.sums[w][k] };
        let next = match s.next[w][k] {
            _ if c.days == 0 => Next::NEVER,
            i64::MAX => Next::NEVER,
            at => Next::at(Timestamp(at)),
        };
        out.set(c.id, (c.test.test(raw), next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_tests_agree_with_the_float_comparison() {
        let raws = [i64::MIN, i64::MIN + 1, -101, -100, -99, -1, 0, 1, 2, 3, 49, 50, 99, 100, 101, 149, 150, 151, 999]
            .into_iter()
            .chain([14_999, 15_000, 15_001, 99_999, 100_000, 100_001, 9_007_199_254_740_993, i64::MAX - 1, i64::MAX]);
        let raws: Vec<i64> = raws.collect();
        let xs = [
            f64::NEG_INFINITY,
            -1.0,
            -0.5,
            0.0,
            0.5,
            1.0,
            1.5,
            3.0,
            150.0,
            1000.0,
            9_007_199_254_740_992.0,
            9.3e18,
            f64::INFINITY,
        ];
        for op in [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge] {
            for x in xs {
                for cents in [false, true] {
                    let t = RawTest::new(op, x, cents);
                    for &raw in &raws {
                        let v = if cents { raw as f64 / 100.0 } else { raw as f64 };
                        assert_eq!(t.test(raw), op.test(v, x), "{op:?} {x} cents {cents} raw {raw}");
                    }
                }
            }
        }
    }
}
