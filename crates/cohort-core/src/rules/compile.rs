//! Type checking and lowering: untyped syntax to [`Expr`], a tree whose
//! leaves are enum ids and indexes, so evaluation does no name lookups.

use super::catalogue::{self, FieldRef, Func, Type};
use super::facts::{FlagField, NumField, SetField, TextField, TimeField, Window};
use super::parse::{BinOp, CmpOp, Kind, Node, Span};
use crate::hash::fast64;
use crate::time::Duration;
use crate::window::Counter;
use std::collections::HashMap;

/// A compiled condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(bool),
    Not(Box<Expr>),
    And(Box<[Expr]>),
    Or(Box<[Expr]>),
    Flag(FlagField),
    /// Membership of a segment, by index.
    InSegment(u16),
    BirthdayWithin(Duration),
    BirthdayThisMonth,
    /// `a == b` (or `!=` when `eq` is false) on two conditions.
    BoolEq {
        a: Box<Expr>,
        b: Box<Expr>,
        eq: bool,
    },
    /// `field OP literal`, the most common atom, kept flat so it costs one
    /// dispatch. `slot` locates a counter field in precomputed window
    /// sums (see [`super::Facts::window_sums`]).
    FieldCmp {
        f: NumField,
        op: CmpOp,
        x: f64,
        slot: Option<Slot>,
    },
    /// `since(field) OP duration`, normalised so `since` is on the left.
    SinceCmp {
        f: TimeField,
        op: CmpOp,
        d: Duration,
    },
    Num {
        op: CmpOp,
        a: Num,
        b: Num,
    },
    Dur {
        op: CmpOp,
        a: Dur,
        b: Dur,
    },
    Instant {
        op: CmpOp,
        a: TimeField,
        b: TimeField,
    },
    Text {
        eq: bool,
        a: Text,
        b: Text,
    },
    TextInList {
        a: Text,
        list: Box<[Box<str>]>,
    },
    TextInSet {
        a: Text,
        set: SetField,
    },
}

/// Where a counter field (`orders.30d`, `orders.lifetime`) is in
/// [`crate::window::WindowSums`], resolved at load so evaluation does not
/// match on names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Index into [`crate::window::WindowSums::sums`]' first dimension (7,
    /// 30, 90, 365 days), or [`Slot::LIFETIME`].
    pub window: u8,
    /// [`Counter`] as an index.
    pub counter: u8,
    /// The counter is in cents and the field in currency units.
    pub cents: bool,
}

impl Slot {
    /// [`Slot::window`] of lifetime totals.
    pub const LIFETIME: u8 = 4;

    /// The slot of a counter field; `None` for the others.
    pub fn of(f: NumField) -> Option<Slot> {
        let (counter, w) = match f {
            NumField::Orders(w) => (Counter::Orders, w),
            NumField::Spend(w) => (Counter::SpendCents, w),
            NumField::PageViews(w) => (Counter::PageViews, w),
            NumField::ProductViews(w) => (Counter::ProductViews, w),
            NumField::Sessions(w) => (Counter::Sessions, w),
            NumField::Aov | NumField::CartItems | NumField::CartValue => return None,
        };
        let window = match w {
            Window::D7 => 0,
            Window::D30 => 1,
            Window::D90 => 2,
            Window::D365 => 3,
            Window::Lifetime => Slot::LIFETIME,
        };
        Some(Slot { window, counter: counter as u8, cents: counter == Counter::SpendCents })
    }

    /// Whether the field is windowed (can change with time alone).
    pub fn windowed(self) -> bool {
        self.window != Slot::LIFETIME
    }
}

/// A number-valued operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Num {
    Lit(f64),
    Field(NumField),
    Age,
    /// A category and its [`crate::hash::fast64`], the key affinities are
    /// stored under.
    Affinity(Box<str>, u64),
    OffersSent(Box<str>, Duration),
}

/// A duration-valued operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Dur {
    Lit(Duration),
    Since(TimeField),
}

/// A string-valued operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Text {
    Lit(Box<str>),
    Field(TextField),
}

/// A type or name error at a byte offset of the expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    pub offset: usize,
    pub message: String,
}

/// What the compiler needs to resolve names.
pub struct Scope<'a> {
    /// Segment name to index.
    pub segments: &'a HashMap<String, u16>,
    /// Known offer ids, for `offers_sent`.
    pub offers: &'a [String],
}

/// The result of compiling one condition.
#[derive(Debug)]
pub struct Compiled {
    pub expr: Expr,
    /// Segments referenced with `in_segment`, with the span of the reference.
    pub refs: Vec<(u16, Span)>,
    /// The windowed counter fields the condition reads, as bits of
    /// [`crate::window::WindowSums::mask`].
    pub windows: u32,
}

/// Compile a parsed condition, which must be a bool.
pub fn compile(src: &str, node: &Node, scope: &Scope<'_>) -> Result<Compiled, CompileError> {
    let mut c = Compiler { src, scope, refs: Vec::new(), windows: 0 };
    let typed = c.lower(node)?;
    match typed {
        Typed::Bool(mut expr) => {
            expr.order_by_cost();
            Ok(Compiled { expr, refs: c.refs, windows: c.windows })
        }
        other => Err(c.err(
            node.span.start,
            format!("a condition must be a bool (true or false), but `{}` is {}", c.text(node), other.ty().describe()),
        )),
    }
}

enum Typed {
    Bool(Expr),
    Num(Num),
    Dur(Dur),
    Instant(TimeField),
    Str(Text),
    Set(SetField),
    List(Vec<Box<str>>),
}

impl Typed {
    fn ty(&self) -> Type {
        match self {
            Typed::Bool(_) => Type::Bool,
            Typed::Num(_) => Type::Number,
            Typed::Dur(_) => Type::Duration,
            Typed::Instant(_) => Type::Instant,
            Typed::Str(_) => Type::String,
            Typed::Set(_) => Type::StringSet,
            Typed::List(_) => Type::List,
        }
    }
}

struct Compiler<'a> {
    src: &'a str,
    scope: &'a Scope<'a>,
    refs: Vec<(u16, Span)>,
    windows: u32,
}

const DURATION_HINT: &str = "a whole number followed by a unit: ms, s, m, h, d or w (e.g. 30m, 90d)";

impl Compiler<'_> {
    fn err(&self, offset: usize, message: String) -> CompileError {
        CompileError { offset, message }
    }

    fn text(&self, node: &Node) -> &str {
        self.src.get(node.span.clone()).unwrap_or("?")
    }

    fn lower(&mut self, node: &Node) -> Result<Typed, CompileError> {
        Ok(match &node.kind {
            Kind::Bool(b) => Typed::Bool(Expr::Const(*b)),
            Kind::Number(n) => Typed::Num(Num::Lit(*n)),
            Kind::Str(s) => Typed::Str(Text::Lit(s.as_str().into())),
            Kind::Duration(d) => Typed::Dur(Dur::Lit(*d)),
            Kind::BadDuration(t) => {
                return Err(self.err(node.span.start, format!("bad duration `{t}`; expected {DURATION_HINT}")))
            }
            Kind::Path(p) => self.field(p, node)?,
            Kind::Call { name, args } => self.call(name, args, node)?,
            Kind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match &item.kind {
                        Kind::Str(s) => out.push(s.as_str().into()),
                        _ => {
                            return Err(self.err(
                                item.span.start,
                                format!("expected a \"string\" in the list, found `{}`", self.text(item)),
                            ))
                        }
                    }
                }
                Typed::List(out)
            }
            Kind::Not(inner) => {
                let e = self.expect_bool(inner, "`!`")?;
                Typed::Bool(match e {
                    Expr::Const(b) => Expr::Const(!b),
                    Expr::Not(x) => *x,
                    e => Expr::Not(Box::new(e)),
                })
            }
            Kind::Binary { op, op_span, lhs, rhs } => self.binary(*op, op_span, lhs, rhs)?,
        })
    }

    fn expect_bool(&mut self, node: &Node, what: &str) -> Result<Expr, CompileError> {
        match self.lower(node)? {
            Typed::Bool(e) => Ok(e),
            other => Err(self.err(
                node.span.start,
                format!("{what} needs a bool (a condition), but `{}` is {}", self.text(node), other.ty().describe()),
            )),
        }
    }

    fn field(&mut self, path: &str, node: &Node) -> Result<Typed, CompileError> {
        let Some(info) = catalogue::field(path) else {
            if catalogue::function(path).is_some() {
                return Err(
                    self.err(node.span.start, format!("`{path}` is a function; call it with parentheses: {path}(...)"))
                );
            }
            let hint = catalogue::closest(path, catalogue::fields().map(|f| f.path))
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(self.err(
                node.span.start,
                format!("unknown field `{path}`{hint}; expected one of {}", catalogue::field_list()),
            ));
        };
        Ok(match info.field {
            FieldRef::Num(f) => {
                if let Some(sl) = Slot::of(f).filter(|s| s.windowed()) {
                    self.windows |= crate::window::WindowSums::bit(usize::from(sl.window), usize::from(sl.counter));
                }
                Typed::Num(Num::Field(f))
            }
            FieldRef::Age => Typed::Num(Num::Age),
            FieldRef::Time(f) => Typed::Instant(f),
            FieldRef::Text(f) => Typed::Str(Text::Field(f)),
            FieldRef::Set(f) => Typed::Set(f),
            FieldRef::Flag(f) => Typed::Bool(Expr::Flag(f)),
        })
    }

    fn string_arg<'n>(&self, fname: &str, arg: &'n Node, what: &str) -> Result<&'n str, CompileError> {
        match &arg.kind {
            Kind::Str(s) => Ok(s),
            _ => Err(self.err(
                arg.span.start,
                format!("`{fname}` needs {what} as a \"string\" literal, found `{}`", self.text(arg)),
            )),
        }
    }

    fn duration_arg(&self, fname: &str, arg: &Node) -> Result<Duration, CompileError> {
        match &arg.kind {
            Kind::Duration(d) => Ok(*d),
            Kind::BadDuration(t) => {
                Err(self.err(arg.span.start, format!("bad duration `{t}`; expected {DURATION_HINT}")))
            }
            _ => Err(self.err(
                arg.span.start,
                format!("`{fname}` needs a duration literal such as 30d, found `{}`", self.text(arg)),
            )),
        }
    }

    fn call(&mut self, name: &str, args: &[Node], node: &Node) -> Result<Typed, CompileError> {
        let Some(info) = catalogue::function(name) else {
            if catalogue::field(name).is_some() {
                return Err(self.err(node.span.start, format!("`{name}` is a field, not a function")));
            }
            let hint = catalogue::closest(name, catalogue::FUNCTIONS.iter().map(|f| f.name))
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(self.err(
                node.span.start,
                format!("unknown function `{name}`{hint}; expected one of {}", catalogue::function_list()),
            ));
        };
        if args.len() != info.params.len() {
            let plural = if info.params.len() == 1 { "" } else { "s" };
            return Err(self.err(
                node.span.start,
                format!(
                    "`{name}` takes {} argument{plural} ({}), found {}",
                    info.params.len(),
                    info.signature,
                    args.len()
                ),
            ));
        }
        Ok(match info.func {
            Func::Since => {
                let arg = &args[0];
                match self.lower(arg)? {
                    Typed::Instant(f) => Typed::Dur(Dur::Since(f)),
                    other => {
                        return Err(self.err(
                            arg.span.start,
                            format!(
                                "`since` needs an instant such as last_purchase or cart.last_added, but `{}` is {}",
                                self.text(arg),
                                other.ty().describe()
                            ),
                        ))
                    }
                }
            }
            Func::Affinity => {
                // Categories are stored normalised (lower-case): so is the argument.
                let category = crate::state::norm_lower(self.string_arg(name, &args[0], "a category")?);
                Typed::Num(Num::Affinity(category.as_str().into(), fast64(category.as_bytes())))
            }
            Func::InSegment => {
                let arg = &args[0];
                let seg = self.string_arg(name, arg, "a segment name")?;
                let Some(&idx) = self.scope.segments.get(seg) else {
                    let mut names: Vec<&str> = self.scope.segments.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    let hint = catalogue::closest(seg, names.iter().copied())
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    return Err(self.err(
                        arg.span.start,
                        format!("unknown segment `{seg}`{hint}; expected one of {}", names.join(", ")),
                    ));
                };
                self.refs.push((idx, node.span.clone()));
                Typed::Bool(Expr::InSegment(idx))
            }
            Func::BirthdayWithin => {
                let d = self.duration_arg(name, &args[0])?;
                if d > Duration::from_days(366) {
                    return Err(self.err(args[0].span.start, "`birthday_within` accepts at most 366d".to_string()));
                }
                Typed::Bool(Expr::BirthdayWithin(d))
            }
            Func::BirthdayThisMonth => Typed::Bool(Expr::BirthdayThisMonth),
            Func::OffersSent => {
                let id = self.string_arg(name, &args[0], "an offer id")?;
                if !self.scope.offers.iter().any(|o| o == id) {
                    return Err(self.err(
                        args[0].span.start,
                        format!("unknown offer `{id}`; expected one of {}", self.scope.offers.join(", ")),
                    ));
                }
                let w = self.duration_arg(name, &args[1])?;
                if w <= Duration::ZERO {
                    return Err(self.err(args[1].span.start, "`offers_sent` needs a window longer than 0".to_string()));
                }
                Typed::Num(Num::OffersSent(id.into(), w))
            }
        })
    }

    fn binary(&mut self, op: BinOp, op_span: &Span, lhs: &Node, rhs: &Node) -> Result<Typed, CompileError> {
        match op {
            BinOp::And | BinOp::Or => {
                let what = format!("`{}`", op.as_str());
                let a = self.expect_bool(lhs, &what)?;
                let b = self.expect_bool(rhs, &what)?;
                Ok(Typed::Bool(if op == BinOp::And { and(a, b) } else { or(a, b) }))
            }
            BinOp::In => {
                let a = self.lower(lhs)?;
                let a = match a {
                    Typed::Str(t) => t,
                    other => {
                        return Err(self.err(
                            lhs.span.start,
                            format!(
                                "`in` needs a string on the left, but `{}` is {}",
                                self.text(lhs),
                                other.ty().describe()
                            ),
                        ))
                    }
                };
                match self.lower(rhs)? {
                    Typed::List(list) => Ok(Typed::Bool(match &a {
                        Text::Lit(s) => Expr::Const(list.iter().any(|x| x == s)),
                        Text::Field(f) => {
                            let list = list.iter().map(|x| f.normalise(x).into_boxed_str()).collect();
                            Expr::TextInList { a, list }
                        }
                    })),
                    Typed::Set(set) => {
                        let a = match a {
                            Text::Lit(s) => Text::Lit(set.normalise(&s).into_boxed_str()),
                            field => field,
                        };
                        Ok(Typed::Bool(Expr::TextInSet { a, set }))
                    }
                    other => Err(self.err(
                        rhs.span.start,
                        format!(
                            "`in` needs a list such as [\"a\", \"b\"] or a string set such as profile.interests \
                             on the right, but `{}` is {}",
                            self.text(rhs),
                            other.ty().describe()
                        ),
                    )),
                }
            }
            BinOp::Cmp(cmp) => self.comparison(cmp, op_span, lhs, rhs),
        }
    }

    fn comparison(&mut self, op: CmpOp, op_span: &Span, lhs: &Node, rhs: &Node) -> Result<Typed, CompileError> {
        let a = self.lower(lhs)?;
        let b = self.lower(rhs)?;
        let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
        let lhs_ty = a.ty();
        let expr = match (a, b) {
            (Typed::Num(Num::Lit(x)), Typed::Num(Num::Lit(y))) => Expr::Const(op.test(x, y)),
            (Typed::Num(Num::Field(f)), Typed::Num(Num::Lit(x))) => Expr::FieldCmp { f, op, x, slot: Slot::of(f) },
            (Typed::Num(Num::Lit(x)), Typed::Num(Num::Field(f))) => {
                Expr::FieldCmp { f, op: op.swapped(), x, slot: Slot::of(f) }
            }
            (Typed::Dur(Dur::Since(f)), Typed::Dur(Dur::Lit(d))) => Expr::SinceCmp { f, op, d },
            (Typed::Dur(Dur::Lit(d)), Typed::Dur(Dur::Since(f))) => Expr::SinceCmp { f, op: op.swapped(), d },
            (Typed::Num(a), Typed::Num(b)) => Expr::Num { op, a, b },
            (Typed::Dur(Dur::Lit(x)), Typed::Dur(Dur::Lit(y))) => Expr::Const(op.test(x, y)),
            (Typed::Dur(a), Typed::Dur(b)) => Expr::Dur { op, a, b },
            (Typed::Instant(a), Typed::Instant(b)) => Expr::Instant { op, a, b },
            (Typed::Str(_), Typed::Str(_)) | (Typed::Bool(_), Typed::Bool(_)) if ordering => {
                return Err(self.err(
                    op_span.start,
                    format!(
                        "`{}` needs numbers, durations or instants; `{}` is {}; use == or !=",
                        op.as_str(),
                        self.text(lhs),
                        lhs_ty.describe()
                    ),
                ))
            }
            (Typed::Str(Text::Lit(x)), Typed::Str(Text::Lit(y))) => Expr::Const((x == y) == (op == CmpOp::Eq)),
            (Typed::Str(a), Typed::Str(b)) => {
                // A literal compared with a field takes the field's stored form.
                let (a, b) = match (a, b) {
                    (Text::Field(f), Text::Lit(x)) => (Text::Field(f), Text::Lit(f.normalise(&x).into_boxed_str())),
                    (Text::Lit(x), Text::Field(f)) => (Text::Lit(f.normalise(&x).into_boxed_str()), Text::Field(f)),
                    other => other,
                };
                Expr::Text { eq: op == CmpOp::Eq, a, b }
            }
            (Typed::Bool(a), Typed::Bool(b)) => {
                let eq = op == CmpOp::Eq;
                match (a, b) {
                    (Expr::Const(x), e) | (e, Expr::Const(x)) => {
                        if x == eq {
                            e
                        } else {
                            not(e)
                        }
                    }
                    (a, b) => Expr::BoolEq { a: Box::new(a), b: Box::new(b), eq },
                }
            }
            (a @ (Typed::Set(_) | Typed::List(_)), _) => {
                return Err(self.err(
                    lhs.span.start,
                    format!("{} can only be used on the right of `in`", capitalise(a.ty().describe())),
                ))
            }
            (a, b) => {
                let hint = match (a.ty(), b.ty()) {
                    (Type::Duration, Type::Number) => " (write a unit, e.g. 90d)",
                    _ => "",
                };
                return Err(self.err(
                    rhs.span.start,
                    format!(
                        "expected {} to compare with `{}`, found {} `{}`{hint}",
                        a.ty().describe(),
                        self.text(lhs),
                        b.ty().describe(),
                        self.text(rhs)
                    ),
                ));
            }
        };
        Ok(Typed::Bool(expr))
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn not(e: Expr) -> Expr {
    match e {
        Expr::Const(b) => Expr::Const(!b),
        Expr::Not(x) => *x,
        e => Expr::Not(Box::new(e)),
    }
}

fn and(a: Expr, b: Expr) -> Expr {
    match (a, b) {
        (Expr::Const(false), _) | (_, Expr::Const(false)) => Expr::Const(false),
        (Expr::Const(true), e) | (e, Expr::Const(true)) => e,
        (a, b) => {
            let mut v = Vec::new();
            for e in [a, b] {
                match e {
                    Expr::And(xs) => v.extend(xs.into_vec()),
                    e => v.push(e),
                }
            }
            Expr::And(v.into_boxed_slice())
        }
    }
}

fn or(a: Expr, b: Expr) -> Expr {
    match (a, b) {
        (Expr::Const(true), _) | (_, Expr::Const(true)) => Expr::Const(true),
        (Expr::Const(false), e) | (e, Expr::Const(false)) => e,
        (a, b) => {
            let mut v = Vec::new();
            for e in [a, b] {
                match e {
                    Expr::Or(xs) => v.extend(xs.into_vec()),
                    e => v.push(e),
                }
            }
            Expr::Or(v.into_boxed_slice())
        }
    }
}

impl Expr {
    /// A rough relative cost of evaluating `self`, used to test cheap
    /// operands of `&&` and `||` first. Conditions have no side effects and
    /// missing values are handled per comparison, so order cannot change a
    /// result, only how soon it is known.
    fn cost(&self) -> u32 {
        match self {
            Expr::Const(_) => 0,
            Expr::Flag(_) | Expr::InSegment(_) => 1,
            Expr::Instant { .. } | Expr::Text { .. } => 3,
            Expr::TextInList { list, .. } => 2 + list.len() as u32,
            Expr::TextInSet { .. } => 6,
            Expr::BirthdayThisMonth => 10,
            Expr::BirthdayWithin(_) => 20,
            Expr::FieldCmp { .. } | Expr::SinceCmp { .. } => 3,
            Expr::Num { a, b, .. } => a.cost() + b.cost(),
            Expr::Dur { a, b, .. } => [a, b].iter().map(|d| if matches!(d, Dur::Since(_)) { 3 } else { 0 }).sum(),
            Expr::Not(x) => x.cost(),
            Expr::BoolEq { a, b, .. } => a.cost() + b.cost(),
            Expr::And(xs) | Expr::Or(xs) => xs.iter().map(Expr::cost).sum(),
        }
    }

    /// Sort the operands of every `&&` and `||` cheapest first (stable).
    fn order_by_cost(&mut self) {
        match self {
            Expr::And(xs) | Expr::Or(xs) => {
                xs.iter_mut().for_each(Expr::order_by_cost);
                xs.sort_by_key(Expr::cost);
            }
            Expr::Not(x) => x.order_by_cost(),
            Expr::BoolEq { a, b, .. } => {
                a.order_by_cost();
                b.order_by_cost();
            }
            _ => {}
        }
    }

    /// Whether the condition reads another segment (`in_segment`).
    pub fn references_segments(&self) -> bool {
        match self {
            Expr::InSegment(_) => true,
            Expr::Not(e) => e.references_segments(),
            Expr::And(xs) | Expr::Or(xs) => xs.iter().any(Expr::references_segments),
            Expr::BoolEq { a, b, .. } => a.references_segments() || b.references_segments(),
            _ => false,
        }
    }

    /// Whether the value can change with time alone (no new event).
    pub fn depends_on_time(&self) -> bool {
        self.depends_on_time_through(true)
    }

    /// Whether the value can change with time alone other than through
    /// `in_segment`. When false, the analysis of this condition can never
    /// report an instant earlier than the earliest change of the segments
    /// it references (see `RuleSet::evaluate_with_next_flip`).
    pub fn depends_on_own_time(&self) -> bool {
        self.depends_on_time_through(false)
    }

    fn depends_on_time_through(&self, segments: bool) -> bool {
        match self {
            Expr::Const(_) | Expr::Flag(_) | Expr::Instant { .. } | Expr::Text { .. } => false,
            Expr::TextInList { .. } | Expr::TextInSet { .. } => false,
            // Conservative: the referenced segment may depend on time.
            Expr::InSegment(_) => segments,
            Expr::BirthdayWithin(_) | Expr::BirthdayThisMonth => true,
            Expr::Not(e) => e.depends_on_time_through(segments),
            Expr::And(xs) | Expr::Or(xs) => xs.iter().any(|x| x.depends_on_time_through(segments)),
            Expr::BoolEq { a, b, .. } => a.depends_on_time_through(segments) || b.depends_on_time_through(segments),
            Expr::FieldCmp { f, .. } => Num::Field(*f).depends_on_time(),
            Expr::SinceCmp { .. } => true,
            Expr::Num { a, b, .. } => a.depends_on_time() || b.depends_on_time(),
            Expr::Dur { a, b, .. } => matches!(a, Dur::Since(_)) != matches!(b, Dur::Since(_)),
        }
    }
}

impl Num {
    fn cost(&self) -> u32 {
        match self {
            Num::Lit(_) => 0,
            Num::Field(_) => 3,
            Num::Affinity(..) | Num::OffersSent(..) => 10,
            Num::Age => 15,
        }
    }

    fn depends_on_time(&self) -> bool {
        match self {
            Num::Lit(_) => false,
            Num::Field(f) => matches!(
                f,
                NumField::Orders(w)
                    | NumField::Spend(w)
                    | NumField::PageViews(w)
                    | NumField::ProductViews(w)
                    | NumField::Sessions(w) if w.length().is_some()
            ),
            Num::Age | Num::Affinity(..) | Num::OffersSent(..) => true,
        }
    }
}
