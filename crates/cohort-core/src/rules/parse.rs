//! Expression syntax: text to an untyped tree with byte spans.
//!
//! Built with winnow. The grammar, loosest binding first:
//!
//! ```text
//! expr    = and ( "||" and )*
//! and     = cmp ( "&&" cmp )*
//! cmp     = unary ( ("==" | "!=" | "<=" | ">=" | "<" | ">" | "in") unary )?
//! unary   = "!" unary | primary
//! primary = "(" expr ")" | "[" ( expr ( "," expr )* )? "]" | string
//!         | number | duration | true | false | name "(" args ")" | path
//! ```
//!
//! Names are only checked later, by the compiler, which knows the catalogue
//! and the segment names and can say what was expected.

use crate::time::Duration;
use std::ops::Range;
use winnow::combinator::{alt, cut_err, delimited, opt, preceded, separated, terminated};
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, Location};
use winnow::token::{any, one_of, take_while};

type In<'a> = LocatingSlice<&'a str>;
type PResult<T> = ModalResult<T, ContextError<&'static str>>;

/// Byte range inside the expression text.
pub type Span = Range<usize>;

/// A parsed node with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub span: Span,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The same comparison with its operands swapped (`a < b` is `b > a`).
    pub fn swapped(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Ne => CmpOp::Ne,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
        }
    }

    /// Apply to two ordered values.
    #[inline]
    pub fn test<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    And,
    Or,
    Cmp(CmpOp),
    In,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::And => "&&",
            BinOp::Or => "||",
            BinOp::Cmp(c) => c.as_str(),
            BinOp::In => "in",
        }
    }
}

/// Untyped syntax.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Bool(bool),
    Number(f64),
    Str(String),
    Duration(Duration),
    /// Digits followed by letters that are not a duration unit, e.g. `12x`;
    /// kept so the compiler can report it with its span.
    BadDuration(String),
    Path(String),
    Call {
        name: String,
        args: Vec<Node>,
    },
    List(Vec<Node>),
    Not(Box<Node>),
    Binary {
        op: BinOp,
        op_span: Span,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
}

/// A syntax error: byte offset in the expression and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

/// Longest condition accepted, in bytes.
pub const MAX_LEN: usize = 8 * 1024;
/// Deepest nesting of `(`, `[` and `!` accepted: the parser, compiler and
/// evaluator recurse on it, so it is bounded rather than left to the stack.
pub const MAX_DEPTH: usize = 64;

/// Parse one expression; the whole text must be consumed.
pub fn parse_expr(src: &str) -> Result<Node, SyntaxError> {
    if src.len() > MAX_LEN {
        return Err(SyntaxError { offset: 0, message: format!("condition longer than {MAX_LEN} bytes") });
    }
    check_depth(src)?;
    let mut input = LocatingSlice::new(src);
    let result = delimited(ws, expr, ws).parse_next(&mut input);
    let offset = input.current_token_start();
    match result {
        Ok(node) => {
            if offset >= src.len() {
                Ok(node)
            } else {
                Err(SyntaxError {
                    offset,
                    message: format!(
                        "unexpected {}; expected `&&`, `||`, a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`, `in`) \
                         or the end of the expression",
                        describe_at(src, offset)
                    ),
                })
            }
        }
        Err(ErrMode::Backtrack(e) | ErrMode::Cut(e)) => {
            let expected = e.context().next().copied().unwrap_or("an expression");
            Err(SyntaxError { offset, message: format!("expected {expected}, found {}", describe_at(src, offset)) })
        }
        Err(ErrMode::Incomplete(_)) => {
            Err(SyntaxError { offset, message: "unexpected end of the expression".to_string() })
        }
    }
}

fn check_depth(src: &str) -> Result<(), SyntaxError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in src.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '!' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return Err(SyntaxError { offset: i, message: format!("nested deeper than {MAX_DEPTH} levels") });
        }
    }
    Ok(())
}

/// "`token`" or "the end of the expression", for messages.
fn describe_at(src: &str, offset: usize) -> String {
    let rest = src.get(offset..).unwrap_or("");
    let Some(first) = rest.chars().next() else {
        return "the end of the expression".to_string();
    };
    let token: String = if first.is_alphanumeric() || first == '_' || first == '.' {
        rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect()
    } else if "=!<>&|".contains(first) {
        rest.chars().take_while(|c| "=!<>&|".contains(*c)).collect()
    } else {
        first.to_string()
    };
    format!("`{token}`")
}

fn ws(i: &mut In<'_>) -> PResult<()> {
    take_while(0.., char::is_whitespace).void().parse_next(i)
}

fn expr(i: &mut In<'_>) -> PResult<Node> {
    let mut lhs = and_expr(i)?;
    loop {
        let checkpoint_ws = ws(i);
        checkpoint_ws?;
        let Some(op_span) = opt("||".span()).parse_next(i)? else { break };
        ws(i)?;
        let rhs = cut_err(and_expr).context("an expression after `||`").parse_next(i)?;
        lhs = binary(BinOp::Or, op_span, lhs, rhs);
    }
    Ok(lhs)
}

fn and_expr(i: &mut In<'_>) -> PResult<Node> {
    let mut lhs = cmp_expr(i)?;
    loop {
        ws(i)?;
        let Some(op_span) = opt("&&".span()).parse_next(i)? else { break };
        ws(i)?;
        let rhs = cut_err(cmp_expr).context("an expression after `&&`").parse_next(i)?;
        lhs = binary(BinOp::And, op_span, lhs, rhs);
    }
    Ok(lhs)
}

fn cmp_op(i: &mut In<'_>) -> PResult<BinOp> {
    alt((
        "==".value(BinOp::Cmp(CmpOp::Eq)),
        "!=".value(BinOp::Cmp(CmpOp::Ne)),
        "<=".value(BinOp::Cmp(CmpOp::Le)),
        ">=".value(BinOp::Cmp(CmpOp::Ge)),
        "<".value(BinOp::Cmp(CmpOp::Lt)),
        ">".value(BinOp::Cmp(CmpOp::Gt)),
        terminated("in", winnow::combinator::not(one_of(is_ident_char))).value(BinOp::In),
    ))
    .parse_next(i)
}

fn cmp_expr(i: &mut In<'_>) -> PResult<Node> {
    let lhs = unary(i)?;
    ws(i)?;
    let Some((op, op_span)) = opt(cmp_op.with_span()).parse_next(i)? else { return Ok(lhs) };
    ws(i)?;
    let rhs = cut_err(unary).context("a value after the comparison").parse_next(i)?;
    Ok(binary(op, op_span, lhs, rhs))
}

fn unary(i: &mut In<'_>) -> PResult<Node> {
    let start = i.current_token_start();
    if opt(('!', winnow::combinator::not('='))).parse_next(i)?.is_some() {
        ws(i)?;
        let inner = cut_err(unary).context("a condition after `!`").parse_next(i)?;
        let end = inner.span.end;
        return Ok(Node { kind: Kind::Not(Box::new(inner)), span: start..end });
    }
    primary(i)
}

fn primary(i: &mut In<'_>) -> PResult<Node> {
    alt((paren, list, string, number_or_duration, name_or_call))
        .context("a value: a field, a function call, a number, a duration, a \"string\", true, false or `(`")
        .parse_next(i)
}

fn paren(i: &mut In<'_>) -> PResult<Node> {
    let start = i.current_token_start();
    '('.parse_next(i)?;
    ws(i)?;
    let inner = cut_err(expr).context("an expression after `(`").parse_next(i)?;
    ws(i)?;
    cut_err(')').context("`)`").parse_next(i)?;
    let end = i.previous_token_end();
    Ok(Node { kind: inner.kind, span: start..end })
}

fn list(i: &mut In<'_>) -> PResult<Node> {
    let start = i.current_token_start();
    '['.parse_next(i)?;
    ws(i)?;
    let items: Vec<Node> = separated(0.., delimited(ws, expr, ws), ',').parse_next(i)?;
    ws(i)?;
    cut_err(']').context("`,` or `]`").parse_next(i)?;
    let end = i.previous_token_end();
    Ok(Node { kind: Kind::List(items), span: start..end })
}

fn string(i: &mut In<'_>) -> PResult<Node> {
    let start = i.current_token_start();
    '"'.parse_next(i)?;
    let mut out = String::new();
    loop {
        let c = cut_err(any).context("a closing `\"`").parse_next(i)?;
        match c {
            '"' => break,
            '\\' => {
                let e = cut_err(one_of(['"', '\\'])).context("`\\\"` or `\\\\` (the only escapes)").parse_next(i)?;
                out.push(e);
            }
            c => out.push(c),
        }
    }
    let end = i.previous_token_end();
    Ok(Node { kind: Kind::Str(out), span: start..end })
}

fn number_or_duration(i: &mut In<'_>) -> PResult<Node> {
    let ((neg, int, frac, unit), span) = (
        opt('-'),
        take_while(1.., |c: char| c.is_ascii_digit()),
        opt(preceded('.', take_while(1.., |c: char| c.is_ascii_digit()))),
        take_while(0.., is_ident_char),
    )
        .with_span()
        .parse_next(i)?;
    let text = format!(
        "{}{}{}{}",
        if neg.is_some() { "-" } else { "" },
        int,
        frac.map_or(String::new(), |f| format!(".{f}")),
        unit
    );
    let bad = || Node { kind: Kind::BadDuration(text.clone()), span: span.clone() };
    if unit.is_empty() {
        let value: f64 = text.parse().map_err(|_| ErrMode::Cut(ContextError::new()))?;
        return Ok(Node { kind: Kind::Number(value), span });
    }
    if neg.is_some() || frac.is_some() {
        return Ok(bad());
    }
    match int.parse::<i64>().ok().and_then(|n| n.checked_mul(unit_millis(unit)?)) {
        Some(ms) => Ok(Node { kind: Kind::Duration(Duration::from_millis(ms)), span }),
        None => Ok(bad()),
    }
}

fn unit_millis(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    })
}

/// A duration literal on its own (`30d`), as used in YAML settings.
pub fn duration_literal(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(unit_millis(unit)?).map(Duration::from_millis)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn name_or_call(i: &mut In<'_>) -> PResult<Node> {
    let (name, span) = (
        one_of(is_ident_start),
        take_while(0.., is_ident_char),
        winnow::combinator::repeat::<_, _, (), _, _>(0.., ('.', take_while(1.., is_ident_char))),
    )
        .take()
        .with_span()
        .parse_next(i)?;
    let start = span.start;
    match name {
        "true" => return Ok(Node { kind: Kind::Bool(true), span }),
        "false" => return Ok(Node { kind: Kind::Bool(false), span }),
        _ => {}
    }
    let before_paren = i.checkpoint();
    ws(i)?;
    if opt('(').parse_next(i)?.is_some() {
        ws(i)?;
        let args: Vec<Node> = separated(0.., delimited(ws, expr, ws), ',').parse_next(i)?;
        ws(i)?;
        cut_err(')').context("`,` or `)` to close the arguments").parse_next(i)?;
        let end = i.previous_token_end();
        return Ok(Node { kind: Kind::Call { name: name.to_string(), args }, span: start..end });
    }
    i.reset(&before_paren);
    Ok(Node { kind: Kind::Path(name.to_string()), span })
}

fn binary(op: BinOp, op_span: Span, lhs: Node, rhs: Node) -> Node {
    let span = lhs.span.start..rhs.span.end;
    Node { kind: Kind::Binary { op, op_span, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Node {
        match parse_expr(src) {
            Ok(n) => n,
            Err(e) => panic!("{src}: {e:?}"),
        }
    }

    #[test]
    fn precedence_and_spans() {
        let n = ok("a.b > 0 && since(x) >= 1h || !c");
        let Kind::Binary { op: BinOp::Or, lhs, rhs, .. } = n.kind else { panic!("{n:?}") };
        assert!(matches!(lhs.kind, Kind::Binary { op: BinOp::And, .. }));
        assert!(matches!(rhs.kind, Kind::Not(_)));
        assert_eq!(rhs.span, 29..31);
        let n = ok("spend.365d >= 1000");
        let Kind::Binary { lhs, rhs, op_span, .. } = n.kind else { panic!() };
        assert_eq!(lhs.kind, Kind::Path("spend.365d".into()));
        assert_eq!(rhs.kind, Kind::Number(1000.0));
        assert_eq!(op_span, 11..13);
    }

    #[test]
    fn literals() {
        assert_eq!(ok("90d").kind, Kind::Duration(Duration::from_days(90)));
        assert_eq!(ok("2w").kind, Kind::Duration(Duration::from_days(14)));
        assert_eq!(ok("15m").kind, Kind::Duration(Duration::from_mins(15)));
        assert_eq!(ok("12x").kind, Kind::BadDuration("12x".into()));
        assert_eq!(ok("-0.5").kind, Kind::Number(-0.5));
        assert_eq!(ok(r#""a\"b""#).kind, Kind::Str("a\"b".into()));
        assert!(matches!(ok(r#"x in ["a", "b"]"#).kind, Kind::Binary { op: BinOp::In, .. }));
        assert!(matches!(ok("interest_score").kind, Kind::Path(_)));
        assert!(matches!(ok("birthday_this_month()").kind, Kind::Call { .. }));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = parse_expr("a > 0 &&").unwrap_err();
        assert_eq!(e.offset, 8);
        assert!(e.message.starts_with("expected a value: a field"), "{}", e.message);
        let e = parse_expr("a > 0 b").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.message.starts_with("unexpected `b`"), "{}", e.message);
        let e = parse_expr("(a > 0").unwrap_err();
        assert_eq!((e.offset, e.message.as_str()), (6, "expected `)`, found the end of the expression"));
        let e = parse_expr("\"abc").unwrap_err();
        assert_eq!(e.offset, 4);
    }
}
