//! JSON read straight into a value of the schema, without a
//! `serde_json::Value` in between: the hot path of every JSON input.
//!
//! [`read`] answers only for plain, well-formed input of the schema: a
//! record's fields by their names (any order; unknown keys skipped; a
//! repeated key keeps its last value, as the generic reader does), unions
//! of null and one other type given as their plain value, and schema
//! defaults for missing fields. On anything else (an error of any kind, an
//! alias, Avro's `{"string": ...}` form of a union, a union of several
//! types, bytes or maps) it returns `None` and the caller runs the generic
//! reader ([`crate::json::from_json`]), which gives the canonical value or
//! error. So it can change speed, never results; the tests below check it
//! against the generic reader on generated and corrupted documents.

use crate::avro::V;
use crate::json;
use crate::schema::{Node, RecordNode};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// `text` as a value of schema `n` (a record), or `None`: see the module doc.
pub(crate) fn read<'a>(n: &Node, text: &'a [u8]) -> Option<V<'a>> {
    if !matches!(n, Node::Record(_)) {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let v = Seed(n).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

/// Reads one value of its schema node.
#[derive(Clone, Copy)]
struct Seed<'n>(&'n Node);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = V<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

/// The one non-null branch of a `["null", T]` union, or `None` for other
/// unions (left to the generic reader).
fn nullable(branches: &[Node]) -> Option<&Node> {
    match branches {
        [Node::Null, b] | [b, Node::Null] if is_plain(b) => Some(b),
        _ => None,
    }
}

/// Branches whose JSON form cannot be mistaken for Avro's `{"type": v}`.
fn is_plain(n: &Node) -> bool {
    matches!(n, Node::Boolean | Node::Int | Node::Long | Node::Float | Node::Double | Node::String | Node::Enum(_))
        || matches!(n, Node::Record(_) | Node::Array(_))
}

fn refuse<E: serde::de::Error>() -> E {
    E::custom("left to the generic reader")
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = V<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {}", self.0.type_name())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V<'de>, E> {
        match self.0 {
            Node::Null => Ok(V::Null),
            Node::Union(bs) if nullable(bs).is_some() => Ok(V::Null),
            _ => Err(refuse()),
        }
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<V<'de>, E> {
        match self.0 {
            Node::Boolean => Ok(V::Bool(b)),
            Node::Union(bs) => nullable(bs).map_or_else(|| Err(refuse()), |n| Seed(n).visit_bool(b)),
            _ => Err(refuse()),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, x: i64) -> Result<V<'de>, E> {
        match self.0 {
            Node::Int => i32::try_from(x).map(V::Int).map_err(|_| refuse()),
            Node::Long => Ok(V::Long(x)),
            // As the generic reader: serde_json's `as_f64` of an integer.
            Node::Float => Ok(V::Float(x as f64 as f32)),
            Node::Double => Ok(V::Double(x as f64)),
            Node::Union(bs) => nullable(bs).map_or_else(|| Err(refuse()), |n| Seed(n).visit_i64(x)),
            _ => Err(refuse()),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, x: u64) -> Result<V<'de>, E> {
        match self.0 {
            Node::Float => Ok(V::Float(x as f64 as f32)),
            Node::Double => Ok(V::Double(x as f64)),
            _ => i64::try_from(x).map_err(|_| refuse()).and_then(|x| self.visit_i64(x)),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<V<'de>, E> {
        match self.0 {
            Node::Float => Ok(V::Float(x as f32)),
            Node::Double => Ok(V::Double(x)),
            Node::Union(bs) => nullable(bs).map_or_else(|| Err(refuse()), |n| Seed(n).visit_f64(x)),
            _ => Err(refuse()),
        }
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<V<'de>, E> {
        string(self.0, Cow::Borrowed(s))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<V<'de>, E> {
        string(self.0, Cow::Owned(s.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
        let item = match self.0 {
            Node::Array(item) => item,
            Node::Union(bs) => match nullable(bs) {
                Some(Node::Array(item)) => item,
                _ => return Err(refuse()),
            },
            _ => return Err(refuse()),
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(Seed(item))? {
            items.push(v);
        }
        Ok(V::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V<'de>, A::Error> {
        match self.0 {
            Node::Record(r) => record(r, map),
            Node::Union(bs) => match nullable(bs) {
                Some(Node::Record(r)) => record(r, map),
                _ => Err(refuse()),
            },
            _ => Err(refuse()),
        }
    }
}

fn string<'de, E: serde::de::Error>(n: &Node, s: Cow<'de, str>) -> Result<V<'de>, E> {
    match n {
        Node::String => Ok(V::Str(s)),
        Node::Enum(e) if e.symbols.iter().any(|x| same(x, &s)) => Ok(V::Enum(s)),
        Node::Union(bs) => match nullable(bs) {
            Some(b) => string(b, s),
            None => Err(refuse()),
        },
        _ => Err(refuse()),
    }
}

/// A record's fields in schema order. Inside a nullable union, an object
/// is read as the record itself first, as the generic reader does: only
/// when that fails does it try Avro's `{"type": {...}}` form, and then this
/// reader has already refused.
fn record<'de, A: MapAccess<'de>>(r: &RecordNode, mut map: A) -> Result<V<'de>, A::Error> {
    let mut fields: Vec<Option<V<'de>>> = vec![None; r.fields.len()];
    while let Some(key) = map.next_key_seed(Key)? {
        match r.fields.iter().position(|f| same(&f.name, &key)) {
            Some(i) => fields[i] = Some(map.next_value_seed(Seed(&r.fields[i].node))?),
            None if r.fields.iter().any(|f| f.aliases.iter().any(|a| *a == *key)) => return Err(refuse()),
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    r.fields
        .iter()
        .zip(fields)
        .map(|(f, v)| match (v, &f.default) {
            (Some(v), _) => Ok(v),
            (None, Some(serde_json::Value::Null)) => Ok(V::Null),
            (None, Some(d)) => json::from_json(&f.node, d, &f.name).map(V::into_owned).map_err(|_| refuse()),
            (None, None) => Err(refuse()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(V::Record)
}

/// `a == b`, without a call to `memcmp` for names that differ in length or
/// first byte (most of a record's names, for each key read).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// An object key, borrowed from the text unless it holds escapes.
pub(crate) struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pick::Pick;
    use crate::schema::{compile_str, RecordType};

    /// Records as `cohort loadgen` writes them, one per input schema.
    pub(crate) const DOCS: [(RecordType, &str); 5] = [
        (
            RecordType::ClickEvent,
            r#"{"campaign": null, "category": null, "channel": "web", "customer": "c-000023", "device": "desktop", "geo": {"city": "Marseille", "country": "FR", "region": "Provence-Alpes-C\u00f4te d'Azur"}, "id": "lg1.c-000023.e2", "kind": "page_view", "page": "/", "price": null, "product_id": null, "quantity": null, "search_query": null, "session_id": "lg1.c-000023.s1", "time": 1765073769561}"#,
        ),
        (
            RecordType::ClickEvent,
            r#"{"customer": "c-7", "time": 1765073769561, "kind": "add_to_cart", "product_id": "p-1", "category": "shoes", "price": 59.5, "quantity": 2, "channel": "app"}"#,
        ),
        (
            RecordType::PurchaseEvent,
            r#"{"channel": "web", "currency": "EUR", "customer": "c-000035", "id": "lg1.c-000035.e23", "items": [{"category": "beauty", "product_id": "p-00222", "quantity": 2, "unit_price": 39.99}, {"category": "beauty", "product_id": "p-01965", "quantity": 1, "unit_price": 32.99}], "order_id": "lg1.c-000035.o1", "time": 1765091341126, "total": 112.97}"#,
        ),
        (
            RecordType::CustomerProfile,
            r#"{"age": null, "birth_date": 10516, "city": "Barcelona", "consent": {"email": true, "push": false, "sms": true, "web": true}, "country": "ES", "customer": "c-000024", "education": "master", "gender": "non_binary", "id": "lg1.c-000024.e1", "income_band": "lower_middle", "interests": ["parenting", "gadgets", "plant_based"], "loyalty_tier": "bronze", "region": "Catalonia", "time": 1765083722338}"#,
        ),
        (
            RecordType::OfferOutcome,
            r#"{"channel": "email", "customer": "c-000021", "decision_id": "lg1.c-000021.d1", "id": "lg1.c-000021.e12", "offer_id": "outdoor_season", "outcome": "delivered", "time": 1765096823957}"#,
        ),
    ];

    /// What the generic reader makes of `text`.
    pub(crate) fn generic(n: &Node, text: &[u8]) -> Result<V<'static>, String> {
        let j: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if !j.is_object() {
            return Err("not an object".into());
        }
        json::from_json(n, &j, "").map(V::into_owned).map_err(|e| e.to_string())
    }

    /// The direct reader answers `generic`'s value or nothing, never
    /// another value, and never a value where `generic` has an error.
    /// Returns whether it answered.
    fn agrees(n: &Node, text: &str) -> bool {
        let direct = read(n, text.as_bytes());
        match (&direct, generic(n, text.as_bytes())) {
            (Some(d), Ok(g)) => {
                assert_eq!(d, &g, "different values for {text}");
                true
            }
            (Some(d), Err(e)) => panic!("the direct reader accepted {text} as {d:?}; the generic one: {e}"),
            (None, _) => false,
        }
    }

    pub(crate) fn node(rt: RecordType) -> Node {
        compile_str(rt.schema_text()).expect("schema").1
    }

    #[test]
    fn loadgen_records_are_read_directly_and_alike() {
        for (rt, doc) in DOCS {
            assert!(agrees(&node(rt), doc), "the direct reader left a plain {rt:?} to the generic one: {doc}");
        }
    }

    /// The top-level `"key": value` members of a flat-enough document.
    fn members(doc: &str) -> Vec<(String, String)> {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(doc).expect("a JSON object");
        v.into_iter().map(|(k, v)| (format!("{k:?}"), v.to_string())).collect()
    }

    const VALUES: [&str; 22] = [
        "null",
        "true",
        "0",
        "-0",
        "7",
        "-3",
        "2.5",
        "1e3",
        "18446744073709551615",
        "9223372036854775807",
        "3000000000",
        r#""web""#,
        r#""page_view""#,
        r#""e\u0301t\"e""#,
        r#""""#,
        r#"{"string": "web"}"#,
        r#"{"io.cohort.v1.Geo": {"country": "FR"}}"#,
        r#"{"country": "DE", "city": null}"#,
        r#"{}"#,
        r#"[]"#,
        r#"[{"product_id": "p", "category": "c", "quantity": 1, "unit_price": 2}]"#,
        r#"["a", null]"#,
    ];

    /// `doc` with one to three of its members removed, replaced, added,
    /// repeated, written with an escape or swapped, and sometimes cut short
    /// or followed by something.
    pub(crate) fn mutated(doc: &str, pick: &mut Pick) -> String {
        let mut m = members(doc);
        for _ in 0..1 + pick.n(3) {
            match pick.n(7) {
                0 if !m.is_empty() => {
                    m.remove(pick.n(m.len()));
                }
                1 if !m.is_empty() => {
                    let i = pick.n(m.len());
                    m[i].1 = VALUES[pick.n(VALUES.len())].to_string();
                }
                2 => m.push((r#""unknown""#.into(), VALUES[pick.n(VALUES.len())].to_string())),
                3 if !m.is_empty() => {
                    let i = pick.n(m.len());
                    let dup = (m[i].0.clone(), VALUES[pick.n(VALUES.len())].to_string());
                    m.insert(pick.n(m.len() + 1), dup);
                }
                4 if !m.is_empty() => {
                    // A key written with an escape: the same name.
                    let i = pick.n(m.len());
                    m[i].0 = m[i].0.replacen('i', "\\u0069", 1).replacen('e', "\\u0065", 1);
                }
                5 if m.len() > 1 => {
                    let (i, j) = (pick.n(m.len()), pick.n(m.len()));
                    m.swap(i, j);
                }
                _ => {}
            }
        }
        let body: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let mut text = format!("{{{}}}", body.join(", "));
        match pick.n(20) {
            0 => {
                let mut at = pick.n(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            1 => text.push_str(" x"),
            2 => text.push_str(" \n"),
            _ => {}
        }
        text
    }

    #[test]
    fn mutated_records_get_the_generic_readers_answer_or_none() {
        let mut pick = Pick(0x2545_f491_4f6c_dd1d);
        let mut answered = 0;
        let mut runs = 0;
        for (rt, doc) in DOCS {
            let n = node(rt);
            for _ in 0..3_000 {
                let text = mutated(doc, &mut pick);
                runs += 1;
                if agrees(&n, &text) {
                    answered += 1;
                }
            }
        }
        // Most mutations keep the record plain: the fast path is the path.
        assert!(answered * 4 > runs, "the direct reader answered only {answered} of {runs}");
    }

    #[test]
    fn avro_union_forms_and_non_objects_are_left_to_the_generic_reader() {
        let click = node(RecordType::ClickEvent);
        let plain = r#"{"customer": "c-1", "time": 1, "kind": "page_view", "device": "desktop"}"#;
        let union_form = r#"{"customer": "c-1", "time": 1, "kind": "page_view", "device": {"string": "desktop"}}"#;
        let direct = read(&click, plain.as_bytes()).expect("a plain click is read directly");
        assert_eq!(read(&click, union_form.as_bytes()), None, "Avro's union form is the generic reader's");
        assert_eq!(generic(&click, union_form.as_bytes()), Ok(direct), "which reads it as the plain value");
        for text in ["[]", "7", "null", r#""x""#, "{} {}"] {
            assert_eq!(read(&click, text.as_bytes()), None, "{text}");
        }
    }
}
