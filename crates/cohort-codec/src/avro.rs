//! Avro binary encoding: schema resolution, decoding and encoding.
//!
//! Decoding runs a [`Plan`] compiled once per (writer schema, reader schema)
//! pair, following the Avro spec's resolution rules: fields matched by name
//! (or alias), writer-only fields skipped, reader-only fields filled from
//! their defaults, numeric promotions, enum symbols by name with the
//! reader's default for unknown ones, unions on either side. An incompatible
//! pair fails when the plan is built (at start-up), never per record.
//!
//! The result is a [`V`] tree in the reader's shape whose strings borrow the
//! input bytes, so a decode allocates one `Vec` per record and nothing per
//! field until the mapping to core types copies what it keeps.

use crate::error::SchemaError;
use crate::schema::{unqualified, EnumNode, Node, RecordNode};
use std::borrow::Cow;
use std::sync::Arc;

/// A decoded value in the reader schema's shape. Unions are transparent
/// (the chosen branch's value stands for the union); records hold their
/// fields in reader order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum V<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Bytes(Cow<'a, [u8]>),
    Str(Cow<'a, str>),
    Enum(Cow<'a, str>),
    Array(Vec<V<'a>>),
    Map(Vec<(Cow<'a, str>, V<'a>)>),
    Record(Vec<V<'a>>),
}

impl V<'_> {
    pub fn into_owned(self) -> V<'static> {
        match self {
            V::Null => V::Null,
            V::Bool(b) => V::Bool(b),
            V::Int(i) => V::Int(i),
            V::Long(l) => V::Long(l),
            V::Float(f) => V::Float(f),
            V::Double(d) => V::Double(d),
            V::Bytes(b) => V::Bytes(Cow::Owned(b.into_owned())),
            V::Str(s) => V::Str(Cow::Owned(s.into_owned())),
            V::Enum(s) => V::Enum(Cow::Owned(s.into_owned())),
            V::Array(a) => V::Array(a.into_iter().map(V::into_owned).collect()),
            V::Map(m) => V::Map(m.into_iter().map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned())).collect()),
            V::Record(r) => V::Record(r.into_iter().map(V::into_owned).collect()),
        }
    }
}

/// How to read one writer value into the reader's shape.
#[derive(Debug)]
pub(crate) enum Plan {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    IntAsLong,
    IntAsFloat,
    IntAsDouble,
    LongAsFloat,
    LongAsDouble,
    FloatAsDouble,
    BytesAsStr,
    StrAsBytes,
    Fixed(usize),
    /// `map[writer index]` is the reader symbol index.
    Enum {
        reader: Arc<EnumNode>,
        map: Vec<usize>,
    },
    Array(Box<Plan>),
    Map(Box<Plan>),
    /// The writer wrote a union: one plan per writer branch.
    Union(Vec<Plan>),
    Record(RecordPlan),
}

#[derive(Debug)]
pub(crate) struct RecordPlan {
    steps: Vec<Step>,
    len: usize,
    defaults: Vec<(usize, V<'static>)>,
    /// Writer and reader have the same fields in the same order (the
    /// common case): values are pushed as read, no placeholders.
    in_order: bool,
}

#[derive(Debug)]
enum Step {
    Read(usize, Plan),
    Skip(Node),
}

fn names_match(w_name: &str, r_name: &str, r_aliases: &[String]) -> bool {
    unqualified(w_name) == unqualified(r_name) || r_aliases.iter().any(|a| unqualified(a) == unqualified(w_name))
}

/// Whether a writer branch and a reader branch are "the same kind" in the
/// sense of the spec's first pass over a reader union.
fn same_kind(w: &Node, r: &Node) -> bool {
    match (w, r) {
        (Node::Null, Node::Null)
        | (Node::Boolean, Node::Boolean)
        | (Node::Int, Node::Int)
        | (Node::Long, Node::Long)
        | (Node::Float, Node::Float)
        | (Node::Double, Node::Double)
        | (Node::Bytes, Node::Bytes)
        | (Node::String, Node::String)
        | (Node::Array(_), Node::Array(_))
        | (Node::Map(_), Node::Map(_)) => true,
        (Node::Fixed { name: w, .. }, Node::Fixed { name: r, aliases, .. }) => names_match(w, r, aliases),
        (Node::Enum(w), Node::Enum(r)) => names_match(&w.name, &r.name, &r.aliases),
        (Node::Record(w), Node::Record(r)) => names_match(&w.name, &r.name, &r.aliases),
        _ => false,
    }
}

/// Builds the plan to read data written with `writer` as `reader`, or says
/// why they are incompatible. `path` names the field for the error.
pub(crate) fn resolve(writer: &Node, reader: &Node, path: &str) -> Result<Plan, SchemaError> {
    let incompatible = || {
        SchemaError::Incompatible(format!(
            "{path}: writer {} cannot be read as {}",
            writer.type_name(),
            reader.type_name()
        ))
    };
    if let Node::Union(branches) = writer {
        let plans = branches.iter().map(|b| resolve(b, reader, path)).collect::<Result<Vec<_>, _>>()?;
        return Ok(Plan::Union(plans));
    }
    if let Node::Union(branches) = reader {
        if let Some(r) = branches.iter().find(|r| same_kind(writer, r)) {
            return resolve(writer, r, path);
        }
        for r in branches {
            if let Ok(plan) = resolve(writer, r, path) {
                return Ok(plan);
            }
        }
        return Err(incompatible());
    }
    Ok(match (writer, reader) {
        (Node::Null, Node::Null) => Plan::Null,
        (Node::Boolean, Node::Boolean) => Plan::Bool,
        (Node::Int, Node::Int) => Plan::Int,
        (Node::Int, Node::Long) => Plan::IntAsLong,
        (Node::Int, Node::Float) => Plan::IntAsFloat,
        (Node::Int, Node::Double) => Plan::IntAsDouble,
        (Node::Long, Node::Long) => Plan::Long,
        (Node::Long, Node::Float) => Plan::LongAsFloat,
        (Node::Long, Node::Double) => Plan::LongAsDouble,
        (Node::Float, Node::Float) => Plan::Float,
        (Node::Float, Node::Double) => Plan::FloatAsDouble,
        (Node::Double, Node::Double) => Plan::Double,
        (Node::Bytes, Node::Bytes) => Plan::Bytes,
        (Node::Bytes, Node::String) => Plan::BytesAsStr,
        (Node::String, Node::String) => Plan::Str,
        (Node::String, Node::Bytes) => Plan::StrAsBytes,
        (Node::Fixed { size: ws, .. }, Node::Fixed { size: rs, .. }) if same_kind(writer, reader) && ws == rs => {
            Plan::Fixed(*ws)
        }
        (Node::Enum(w), Node::Enum(r)) if same_kind(writer, reader) => {
            let mut map = Vec::with_capacity(w.symbols.len());
            for s in &w.symbols {
                match r.symbols.iter().position(|x| x == s).or(r.default) {
                    Some(i) => map.push(i),
                    None => {
                        return Err(SchemaError::Incompatible(format!(
                            "{path}: writer symbol {s:?} of {} is unknown to the reader, which has no default",
                            w.name
                        )))
                    }
                }
            }
            Plan::Enum { reader: r.clone(), map }
        }
        (Node::Array(w), Node::Array(r)) => Plan::Array(Box::new(resolve(w, r, &format!("{path}[]"))?)),
        (Node::Map(w), Node::Map(r)) => Plan::Map(Box::new(resolve(w, r, &format!("{path}{{}}"))?)),
        (Node::Record(w), Node::Record(r)) if same_kind(writer, reader) => Plan::Record(resolve_record(w, r, path)?),
        _ => return Err(incompatible()),
    })
}

fn resolve_record(w: &RecordNode, r: &RecordNode, path: &str) -> Result<RecordPlan, SchemaError> {
    let find_in_writer = |rf: &crate::schema::FieldNode| {
        w.fields
            .iter()
            .position(|wf| wf.name == rf.name)
            .or_else(|| w.fields.iter().position(|wf| rf.aliases.contains(&wf.name)))
    };
    let mut reader_for_writer: Vec<Option<usize>> = vec![None; w.fields.len()];
    let mut defaults = Vec::new();
    for (ri, rf) in r.fields.iter().enumerate() {
        let field_path = if path.is_empty() { rf.name.clone() } else { format!("{path}.{}", rf.name) };
        match find_in_writer(rf) {
            Some(wi) => reader_for_writer[wi] = Some(ri),
            None => {
                let Some(default) = &rf.default else {
                    return Err(SchemaError::Incompatible(format!(
                        "{field_path}: the writer has no such field and the reader has no default"
                    )));
                };
                let v = crate::json::from_json(&rf.node, default, &field_path)
                    .map_err(|e| SchemaError::Parse(format!("{field_path}: bad default: {e}")))?;
                defaults.push((ri, v.into_owned()));
            }
        }
    }
    let mut steps = Vec::with_capacity(w.fields.len());
    for (wi, wf) in w.fields.iter().enumerate() {
        steps.push(match reader_for_writer[wi] {
            Some(ri) => {
                let field_path = if path.is_empty() { wf.name.clone() } else { format!("{path}.{}", wf.name) };
                Step::Read(ri, resolve(&wf.node, &r.fields[ri].node, &field_path)?)
            }
            None => Step::Skip(wf.node.clone()),
        });
    }
    let in_order = defaults.is_empty()
        && steps.len() == r.fields.len()
        && steps.iter().enumerate().all(|(i, s)| matches!(s, Step::Read(ri, _) if *ri == i));
    Ok(RecordPlan { steps, len: r.fields.len(), defaults, in_order })
}

/// Why bytes did not decode; becomes `DecodeError::Undecodable`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BinError {
    Eof,
    BadVarint,
    BadUtf8,
    BadLength(i64),
    BadIndex { what: &'static str, index: i64 },
    TrailingBytes(usize),
}

impl std::fmt::Display for BinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BinError::Eof => write!(f, "unexpected end of data"),
            BinError::BadVarint => write!(f, "malformed variable-length integer"),
            BinError::BadUtf8 => write!(f, "string is not valid UTF-8"),
            BinError::BadLength(l) => write!(f, "impossible length {l}"),
            BinError::BadIndex { what, index } => write!(f, "{what} index {index} out of range"),
            BinError::TrailingBytes(n) => write!(f, "{n} bytes left after the record (wrong schema?)"),
        }
    }
}

/// Longest array or map of zero-sized items we accept (such items consume
/// no input, so the input length cannot bound them).
const MAX_ZERO_SIZED_ITEMS: usize = 1 << 16;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    pub(crate) fn byte(&mut self) -> Result<u8, BinError> {
        let b = *self.buf.get(self.pos).ok_or(BinError::Eof)?;
        self.pos += 1;
        Ok(b)
    }

    /// A zig-zag varint. Most on the wire (union branches, enum symbols,
    /// lengths of short strings) fit one byte, read inline.
    #[inline(always)]
    pub(crate) fn long(&mut self) -> Result<i64, BinError> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(i64::from(b >> 1) ^ -i64::from(b & 1))
            }
            _ => self.long_multi_byte(),
        }
    }

    #[inline(never)]
    fn long_multi_byte(&mut self) -> Result<i64, BinError> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(BinError::BadVarint);
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(BinError::BadVarint);
            }
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline]
    pub(crate) fn int(&mut self) -> Result<i32, BinError> {
        let l = self.long()?;
        i32::try_from(l).map_err(|_| BinError::BadVarint)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], BinError> {
        if n > self.remaining() {
            return Err(BinError::Eof);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn len(&mut self) -> Result<usize, BinError> {
        let l = self.long()?;
        usize::try_from(l).map_err(|_| BinError::BadLength(l))
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], BinError> {
        let n = self.len()?;
        self.take(n)
    }

    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, BinError> {
        let b = self.bytes()?;
        if b.is_ascii() {
            // Most strings on the wire are short ASCII ids, for which this
            // word-at-a-time check is several times cheaper than the full
            // validation below (measured in docs/benchmarks.md).
            // SAFETY: every ASCII byte sequence is valid UTF-8.
            #[allow(unsafe_code)]
            return Ok(unsafe { std::str::from_utf8_unchecked(b) });
        }
        std::str::from_utf8(b).map_err(|_| BinError::BadUtf8)
    }

    fn f32(&mut self) -> Result<f32, BinError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, BinError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    pub(crate) fn boolean(&mut self) -> Result<bool, BinError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(BinError::BadIndex { what: "boolean", index: i64::from(b) }),
        }
    }

    /// Reads an array or map block header: item count, or 0 at the end.
    pub(crate) fn block(&mut self, zero_sized: bool) -> Result<usize, BinError> {
        let raw = self.long()?;
        let count = if raw < 0 {
            self.long()?; // block size in bytes, only useful for skipping
            raw.checked_neg().ok_or(BinError::BadLength(raw))?
        } else {
            raw
        };
        let count = usize::try_from(count).map_err(|_| BinError::BadLength(raw))?;
        let bound = if zero_sized { MAX_ZERO_SIZED_ITEMS } else { self.remaining() };
        if count > bound {
            return Err(BinError::BadLength(raw));
        }
        Ok(count)
    }

    pub fn finish(&self) -> Result<(), BinError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(BinError::TrailingBytes(n)),
        }
    }
}

fn plan_zero_sized(p: &Plan) -> bool {
    match p {
        Plan::Null => true,
        Plan::Fixed(n) => *n == 0,
        Plan::Record(r) => r.steps.iter().all(|s| match s {
            Step::Read(_, p) => plan_zero_sized(p),
            Step::Skip(n) => node_zero_sized(n),
        }),
        _ => false,
    }
}

fn node_zero_sized(n: &Node) -> bool {
    match n {
        Node::Null => true,
        Node::Fixed { size, .. } => *size == 0,
        Node::Record(r) => r.fields.iter().all(|f| node_zero_sized(&f.node)),
        _ => false,
    }
}

/// Decodes one value written with the plan's writer schema.
pub(crate) fn decode<'a>(plan: &'a Plan, c: &mut Cursor<'a>) -> Result<V<'a>, BinError> {
    Ok(match plan {
        Plan::Null => V::Null,
        Plan::Bool => V::Bool(c.boolean()?),
        Plan::Int => V::Int(c.int()?),
        Plan::Long => V::Long(c.long()?),
        Plan::Float => V::Float(c.f32()?),
        Plan::Double => V::Double(c.f64()?),
        Plan::Bytes | Plan::StrAsBytes => V::Bytes(Cow::Borrowed(c.bytes()?)),
        Plan::Str | Plan::BytesAsStr => V::Str(Cow::Borrowed(c.str()?)),
        Plan::IntAsLong => V::Long(i64::from(c.int()?)),
        Plan::IntAsFloat => V::Float(c.int()? as f32),
        Plan::IntAsDouble => V::Double(f64::from(c.int()?)),
        Plan::LongAsFloat => V::Float(c.long()? as f32),
        Plan::LongAsDouble => V::Double(c.long()? as f64),
        Plan::FloatAsDouble => V::Double(f64::from(c.f32()?)),
        Plan::Fixed(n) => V::Bytes(Cow::Borrowed(c.take(*n)?)),
        Plan::Enum { reader, map } => {
            let i = c.long()?;
            let ri = usize::try_from(i)
                .ok()
                .and_then(|i| map.get(i))
                .ok_or(BinError::BadIndex { what: "enum", index: i })?;
            V::Enum(Cow::Borrowed(reader.symbols[*ri].as_str()))
        }
        Plan::Union(branches) => {
            let i = c.long()?;
            let p = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or(BinError::BadIndex { what: "union", index: i })?;
            decode(p, c)?
        }
        Plan::Array(item) => {
            let zero = plan_zero_sized(item);
            let mut out = Vec::new();
            loop {
                let n = c.block(zero)?;
                if n == 0 {
                    break;
                }
                out.reserve(n);
                for _ in 0..n {
                    out.push(decode(item, c)?);
                }
            }
            V::Array(out)
        }
        Plan::Map(item) => {
            let mut out = Vec::new();
            loop {
                let n = c.block(false)?;
                if n == 0 {
                    break;
                }
                out.reserve(n);
                for _ in 0..n {
                    let k = Cow::Borrowed(c.str()?);
                    out.push((k, decode(item, c)?));
                }
            }
            V::Map(out)
        }
        Plan::Record(r) if r.in_order => {
            let mut fields = Vec::with_capacity(r.len);
            for step in &r.steps {
                if let Step::Read(_, p) = step {
                    fields.push(decode(p, c)?);
                }
            }
            V::Record(fields)
        }
        Plan::Record(r) => {
            let mut fields = vec![V::Null; r.len];
            for step in &r.steps {
                match step {
                    Step::Read(i, p) => fields[*i] = decode(p, c)?,
                    Step::Skip(n) => skip(n, c)?,
                }
            }
            for (i, d) in &r.defaults {
                fields[*i] = d.clone();
            }
            V::Record(fields)
        }
    })
}

fn skip(n: &Node, c: &mut Cursor<'_>) -> Result<(), BinError> {
    match n {
        Node::Null => {}
        Node::Boolean => {
            c.boolean()?;
        }
        Node::Int | Node::Long | Node::Enum(_) => {
            c.long()?;
        }
        Node::Float => {
            c.take(4)?;
        }
        Node::Double => {
            c.take(8)?;
        }
        Node::Bytes | Node::String => {
            c.bytes()?;
        }
        Node::Fixed { size, .. } => {
            c.take(*size)?;
        }
        Node::Union(b) => {
            let i = c.long()?;
            let b =
                usize::try_from(i).ok().and_then(|i| b.get(i)).ok_or(BinError::BadIndex { what: "union", index: i })?;
            skip(b, c)?;
        }
        Node::Array(item) | Node::Map(item) => {
            let is_map = matches!(n, Node::Map(_));
            loop {
                let raw = c.long()?;
                if raw == 0 {
                    break;
                }
                if raw < 0 {
                    let size = c.len()?;
                    c.take(size)?;
                    continue;
                }
                let count = usize::try_from(raw).map_err(|_| BinError::BadLength(raw))?;
                let bound = if node_zero_sized(item) && !is_map { MAX_ZERO_SIZED_ITEMS } else { c.remaining() };
                if count > bound {
                    return Err(BinError::BadLength(raw));
                }
                for _ in 0..count {
                    if is_map {
                        c.bytes()?;
                    }
                    skip(item, c)?;
                }
            }
        }
        Node::Record(r) => {
            for f in &r.fields {
                skip(&f.node, c)?;
            }
        }
    }
    Ok(())
}

/// Why a value could not be encoded: the value does not fit the schema,
/// which is a bug in the mapping, not bad input.
#[derive(Debug)]
pub(crate) struct Mismatch(pub String);

pub(crate) fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Whether `v` can be written as `n` (used to pick a union branch).
pub(crate) fn fits(n: &Node, v: &V<'_>) -> bool {
    match (n, v) {
        (Node::Null, V::Null)
        | (Node::Boolean, V::Bool(_))
        | (Node::Int, V::Int(_))
        | (Node::Long, V::Long(_) | V::Int(_))
        | (Node::Float, V::Float(_))
        | (Node::Double, V::Double(_) | V::Float(_))
        | (Node::Bytes, V::Bytes(_))
        | (Node::String, V::Str(_))
        | (Node::Array(_), V::Array(_))
        | (Node::Map(_), V::Map(_))
        | (Node::Record(_), V::Record(_)) => true,
        (Node::Fixed { size, .. }, V::Bytes(b)) => b.len() == *size,
        (Node::Enum(e), V::Enum(s)) => e.symbols.iter().any(|x| x == s),
        _ => false,
    }
}

/// Writes `v` in Avro binary as `n`.
pub(crate) fn encode(n: &Node, v: &V<'_>, out: &mut Vec<u8>) -> Result<(), Mismatch> {
    match (n, v) {
        (Node::Null, V::Null) => {}
        (Node::Boolean, V::Bool(b)) => out.push(u8::from(*b)),
        (Node::Int, V::Int(i)) => put_long(out, i64::from(*i)),
        (Node::Long, V::Long(l)) => put_long(out, *l),
        (Node::Long, V::Int(i)) => put_long(out, i64::from(*i)),
        (Node::Float, V::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Node::Double, V::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (Node::Double, V::Float(f)) => out.extend_from_slice(&f64::from(*f).to_le_bytes()),
        (Node::Bytes, V::Bytes(b)) => put_bytes(out, b),
        (Node::String, V::Str(s)) => put_bytes(out, s.as_bytes()),
        (Node::Fixed { size, .. }, V::Bytes(b)) if b.len() == *size => out.extend_from_slice(b),
        (Node::Enum(e), V::Enum(s)) => {
            let i = e
                .symbols
                .iter()
                .position(|x| x == s)
                .ok_or_else(|| Mismatch(format!("{s:?} is not a symbol of {}", e.name)))?;
            put_long(out, i as i64);
        }
        (Node::Union(branches), v) => {
            let i = branches
                .iter()
                .position(|b| fits(b, v))
                .ok_or_else(|| Mismatch(format!("no union branch for {v:?}")))?;
            put_long(out, i as i64);
            encode(&branches[i], v, out)?;
        }
        (Node::Array(item), V::Array(items)) => {
            if !items.is_empty() {
                put_long(out, items.len() as i64);
                for it in items {
                    encode(item, it, out)?;
                }
            }
            out.push(0);
        }
        (Node::Map(item), V::Map(entries)) => {
            if !entries.is_empty() {
                put_long(out, entries.len() as i64);
                for (k, it) in entries {
                    put_bytes(out, k.as_bytes());
                    encode(item, it, out)?;
                }
            }
            out.push(0);
        }
        (Node::Record(r), V::Record(fields)) if r.fields.len() == fields.len() => {
            for (f, v) in r.fields.iter().zip(fields) {
                encode(&f.node, v, out).map_err(|Mismatch(m)| Mismatch(format!("{}.{}: {m}", r.name, f.name)))?;
            }
        }
        _ => return Err(Mismatch(format!("{v:?} does not fit {}", n.type_name()))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_through_one_and_many_bytes() {
        let mut values: Vec<i64> = (-200..200).collect();
        values.extend([i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 1 << 40, -(1 << 40), 8191, -8192]);
        for v in values {
            let mut buf = Vec::new();
            put_long(&mut buf, v);
            let mut c = Cursor::new(&buf);
            assert_eq!(c.long().ok(), Some(v), "{v} as {buf:?}");
            assert!(c.finish().is_ok(), "{v}: every byte read");
            assert_eq!(buf.len() == 1, (-64..64).contains(&v), "{v}: one byte exactly when small");
        }
        // Truncated and overlong varints are errors, not values.
        assert!(Cursor::new(&[0x80]).long().is_err());
        assert!(Cursor::new(&[0xff; 11]).long().is_err());
        assert!(Cursor::new(&[]).long().is_err());
    }
}
