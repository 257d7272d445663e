//! JSON with the Avro schema's field names, read and written against the
//! same compiled schema as the binary format.
//!
//! This is the JSON a producer would write by hand, not Avro's JSON
//! encoding: a union is its plain value (`"channel": "web"` or `null`),
//! missing fields take the schema default, unknown keys are ignored. The
//! Avro JSON form of a union (`{"string": "web"}`) is accepted too.
//! Timestamps are numbers of milliseconds, dates numbers of days.

use crate::avro::V;
use crate::schema::{unqualified, Node};
use serde_json::Value;
#[cfg(test)]
use serde_json::{Map, Number};
use std::borrow::Cow;

/// Why a JSON document does not fit the schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonError {
    Missing { field: String },
    WrongType { field: String, expected: String },
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Missing { field } => write!(f, "required field `{field}` is missing"),
            JsonError::WrongType { field, expected } => write!(f, "field `{field}` is not a valid {expected}"),
        }
    }
}

/// Where in the document a value is; only formatted when there is an error.
#[derive(Clone, Copy)]
enum Path<'p> {
    Name(&'p str),
    Field(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Name("") => write!(f, "(root)"),
            Path::Name(n) => write!(f, "{n}"),
            Path::Field(Path::Name(""), n) => write!(f, "{n}"),
            Path::Field(p, n) => write!(f, "{p}.{n}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

fn wrong(path: Path<'_>, n: &Node) -> JsonError {
    JsonError::WrongType { field: path.to_string(), expected: n.type_name().to_string() }
}

/// Reads `j` as a value of schema `n`. `path` names the field in errors.
pub(crate) fn from_json<'a>(n: &Node, j: &'a Value, path: &str) -> Result<V<'a>, JsonError> {
    read(n, j, Path::Name(path))
}

fn read<'a>(n: &Node, j: &'a Value, path: Path<'_>) -> Result<V<'a>, JsonError> {
    Ok(match (n, j) {
        (Node::Null, Value::Null) => V::Null,
        (Node::Boolean, Value::Bool(b)) => V::Bool(*b),
        (Node::Int, Value::Number(x)) => {
            V::Int(x.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(|| wrong(path, n))?)
        }
        (Node::Long, Value::Number(x)) => V::Long(x.as_i64().ok_or_else(|| wrong(path, n))?),
        (Node::Float, Value::Number(x)) => V::Float(x.as_f64().ok_or_else(|| wrong(path, n))? as f32),
        (Node::Double, Value::Number(x)) => V::Double(x.as_f64().ok_or_else(|| wrong(path, n))?),
        (Node::String, Value::String(s)) => V::Str(Cow::Borrowed(s)),
        (Node::Bytes | Node::Fixed { .. }, Value::String(s)) => {
            // Avro JSON: each char is one byte (ISO-8859-1).
            let bytes = s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| wrong(path, n)))
                .collect::<Result<Vec<u8>, _>>()?;
            if let Node::Fixed { size, .. } = n {
                if bytes.len() != *size {
                    return Err(wrong(path, n));
                }
            }
            V::Bytes(Cow::Owned(bytes))
        }
        (Node::Enum(e), Value::String(s)) => {
            if !e.symbols.iter().any(|x| x == s) {
                return Err(JsonError::WrongType {
                    field: path.to_string(),
                    expected: format!("{} symbol", unqualified(&e.name)),
                });
            }
            V::Enum(Cow::Borrowed(s))
        }
        (Node::Array(item), Value::Array(items)) => V::Array(
            items.iter().enumerate().map(|(i, it)| read(item, it, Path::Index(&path, i))).collect::<Result<_, _>>()?,
        ),
        (Node::Map(item), Value::Object(m)) => V::Map(
            m.iter()
                .map(|(k, it)| Ok((Cow::Borrowed(k.as_str()), read(item, it, Path::Field(&path, k))?)))
                .collect::<Result<_, _>>()?,
        ),
        (Node::Record(r), Value::Object(m)) => {
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let field_path = Path::Field(&path, &f.name);
                let found = m.get(&f.name).or_else(|| f.aliases.iter().find_map(|a| m.get(a)));
                fields.push(match (found, &f.default) {
                    (Some(v), _) => read(&f.node, v, field_path)?,
                    (None, Some(Value::Null)) => V::Null,
                    (None, Some(d)) => read(&f.node, d, field_path)?.into_owned(),
                    (None, None) => return Err(JsonError::Missing { field: field_path.to_string() }),
                });
            }
            V::Record(fields)
        }
        (Node::Union(branches), j) => from_json_union(branches, j, path)?,
        _ => return Err(wrong(path, n)),
    })
}

fn from_json_union<'a>(branches: &[Node], j: &'a Value, path: Path<'_>) -> Result<V<'a>, JsonError> {
    if j.is_null() && branches.iter().any(|b| matches!(b, Node::Null)) {
        return Ok(V::Null);
    }
    // Avro's JSON encoding: {"<branch type>": value}. Never for the null
    // branch, which Avro writes as a plain `null`: `{"null": ...}` is a
    // record's (or map's) own key, as the direct reader takes it.
    if let Value::Object(m) = j {
        if m.len() == 1 {
            if let Some((k, inner)) = m.iter().next() {
                if let Some(b) = branches
                    .iter()
                    .filter(|b| !matches!(b, Node::Null))
                    .find(|b| b.type_name() == k || unqualified(b.type_name()) == k)
                {
                    if !matches!(b, Node::Record(_) | Node::Map(_)) || read(b, j, path).is_err() {
                        return read(b, inner, path);
                    }
                }
            }
        }
    }
    let mut first_err = None;
    for b in branches.iter().filter(|b| !matches!(b, Node::Null)) {
        match read(b, j, path) {
            Ok(v) => return Ok(v),
            Err(e @ JsonError::Missing { .. }) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                if matches!((b, j), (Node::Record(_), Value::Object(_)) | (Node::Enum(_), Value::String(_))) {
                    // The right kind of JSON value with a bad inside: report that, not "not a union".
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| JsonError::WrongType {
        field: path.to_string(),
        expected: branches.iter().map(|b| unqualified(b.type_name())).collect::<Vec<_>>().join(" or "),
    }))
}

/// `v` (of schema `n`) as a plain JSON value. Non-finite doubles become
/// `null`: JSON has no NaN (core rejects non-finite amounts anyway). The
/// reference [`write`] is tested against.
#[cfg(test)]
pub(crate) fn to_json(n: &Node, v: &V<'_>) -> Value {
    match (n, v) {
        (Node::Union(branches), v) => match branches.iter().find(|b| crate::avro::fits(b, v)) {
            Some(b) => to_json(b, v),
            None => Value::Null,
        },
        (Node::Record(r), V::Record(fields)) => {
            let mut m = Map::with_capacity(fields.len());
            for (f, v) in r.fields.iter().zip(fields) {
                m.insert(f.name.clone(), to_json(&f.node, v));
            }
            Value::Object(m)
        }
        (Node::Array(item), V::Array(items)) => Value::Array(items.iter().map(|it| to_json(item, it)).collect()),
        (Node::Map(item), V::Map(entries)) => {
            Value::Object(entries.iter().map(|(k, it)| (k.to_string(), to_json(item, it))).collect())
        }
        (_, V::Null) => Value::Null,
        (_, V::Bool(b)) => Value::Bool(*b),
        (_, V::Int(i)) => Value::from(*i),
        (_, V::Long(l)) => Value::from(*l),
        (_, V::Float(f)) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        (_, V::Double(d)) => Number::from_f64(*d).map_or(Value::Null, Value::Number),
        (_, V::Str(s)) | (_, V::Enum(s)) => Value::String(s.to_string()),
        (_, V::Bytes(b)) => Value::String(b.iter().map(|&c| char::from(c)).collect()),
        // A value that does not fit its schema: the mapping is tested
        // against the schemas, so this is unreachable in practice.
        (_, V::Array(_) | V::Map(_) | V::Record(_)) => Value::Null,
    }
}

/// Writes `v` (of schema `n`) as plain JSON to `out`: the same bytes as
/// serializing [`to_json`]'s value (keys in name order, as its map keeps
/// them), without building that value.
pub(crate) fn write(n: &Node, v: &V<'_>, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    use serde::Serialize as _;
    Json(n, v).serialize(&mut serde_json::Serializer::new(out))
}

/// A value with its schema, serialized as [`to_json`] would make it.
struct Json<'a, 'v>(&'a Node, &'a V<'v>);

impl serde::Serialize for Json<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match (self.0, self.1) {
            (Node::Union(branches), v) => match branches.iter().find(|b| crate::avro::fits(b, v)) {
                Some(b) => Json(b, v).serialize(s),
                None => s.serialize_unit(),
            },
            (Node::Record(r), V::Record(fields)) => {
                let n = r.fields.len().min(fields.len());
                let mut m = s.serialize_map(Some(n))?;
                for &i in r.by_name.iter().filter(|&&i| i < n) {
                    m.serialize_entry(&r.fields[i].name, &Json(&r.fields[i].node, &fields[i]))?;
                }
                m.end()
            }
            (Node::Array(item), V::Array(items)) => {
                let mut q = s.serialize_seq(Some(items.len()))?;
                for it in items {
                    q.serialize_element(&Json(item, it))?;
                }
                q.end()
            }
            (Node::Map(item), V::Map(entries)) => {
                // As a JSON object built from them: by key, the last of equal keys.
                let sorted: std::collections::BTreeMap<&str, &V<'_>> =
                    entries.iter().map(|(k, it)| (k.as_ref(), it)).collect();
                let mut m = s.serialize_map(Some(sorted.len()))?;
                for (k, it) in sorted {
                    m.serialize_entry(k, &Json(item, it))?;
                }
                m.end()
            }
            (_, V::Null) => s.serialize_unit(),
            (_, V::Bool(b)) => s.serialize_bool(*b),
            (_, V::Int(i)) => s.serialize_i64(i64::from(*i)),
            (_, V::Long(l)) => s.serialize_i64(*l),
            // serde_json writes a non-finite double as null, as `to_json` does.
            (_, V::Float(f)) => s.serialize_f64(f64::from(*f)),
            (_, V::Double(d)) => s.serialize_f64(*d),
            (_, V::Str(x)) | (_, V::Enum(x)) => s.serialize_str(x),
            (_, V::Bytes(b)) => s.serialize_str(&b.iter().map(|&c| char::from(c)).collect::<String>()),
            (_, V::Array(_) | V::Map(_) | V::Record(_)) => s.serialize_unit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick::Pick;
    use crate::schema::{compile_str, RecordType};

    const STRINGS: [&str; 7] =
        ["", "web", "Provence-Alpes-Côte d'Azur", "a\"b\\c", "tab\tnew\nline\u{1}", "😀", "</script>"];
    const DOUBLES: [f64; 9] = [0.0, -0.0, 0.1, 112.97, -3.5e-300, 1e300, f64::NAN, f64::INFINITY, 123_456_789.125];

    /// A value of schema `n`, sometimes one that does not fit it.
    fn value(n: &Node, p: &mut Pick, depth: usize) -> V<'static> {
        if p.n(40) == 0 {
            return [V::Null, V::Long(7), V::Str("x".into()), V::Array(vec![])][p.n(4)].clone();
        }
        match n {
            Node::Null => V::Null,
            Node::Boolean => V::Bool(p.n(2) == 0),
            Node::Int => V::Int([0, -1, i32::MAX, i32::MIN, 42][p.n(5)]),
            Node::Long => V::Long([0, -1, i64::MAX, i64::MIN, 1_765_073_769_561][p.n(5)]),
            Node::Float => V::Float(DOUBLES[p.n(DOUBLES.len())] as f32),
            Node::Double => V::Double(DOUBLES[p.n(DOUBLES.len())]),
            Node::Bytes | Node::Fixed { .. } => V::Bytes(vec![0, 65, 255][..p.n(4)].to_vec().into()),
            Node::String => V::Str(STRINGS[p.n(STRINGS.len())].to_string().into()),
            Node::Enum(e) => V::Enum(e.symbols[p.n(e.symbols.len())].clone().into()),
            Node::Array(item) => {
                V::Array((0..if depth > 3 { 0 } else { p.n(4) }).map(|_| value(item, p, depth + 1)).collect())
            }
            Node::Map(item) => {
                V::Map((0..p.n(4)).map(|_| (STRINGS[p.n(3)].to_string().into(), value(item, p, depth + 1))).collect())
            }
            Node::Union(bs) => value(&bs[p.n(bs.len())], p, depth + 1),
            Node::Record(r) => V::Record(r.fields.iter().map(|f| value(&f.node, p, depth + 1)).collect()),
        }
    }

    #[test]
    fn the_writer_writes_what_serializing_to_json_writes() {
        let mut p = Pick(0x9e37_79b9_7f4a_7c15);
        for rt in RecordType::ALL {
            let (_, n) = compile_str(rt.schema_text()).expect("schema");
            for _ in 0..2_000 {
                let v = value(&n, &mut p, 0);
                let mut direct = Vec::new();
                write(&n, &v, &mut direct).expect("writes");
                let reference = serde_json::to_vec(&to_json(&n, &v)).expect("serializes");
                assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&reference), "{rt:?} {v:?}");
            }
        }
    }
}
