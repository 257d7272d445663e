//! The codec's own view of an Avro schema, and the schemas cohort ships.
//!
//! `apache-avro` parses the `.avsc` text (so we accept exactly what the Avro
//! spec accepts); [`Node`] is the compiled tree the hot path walks. Logical
//! types are dropped (`timestamp-millis` is a `long`, `date` an `int`):
//! resolution and the binary encoding ignore them too. Named references are
//! inlined; recursive schemas are refused, none of cohort's records need one.

use crate::error::SchemaError;
use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::Arc;

/// A compiled Avro schema.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed { name: String, aliases: Vec<String>, size: usize },
    Enum(Arc<EnumNode>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Record(Arc<RecordNode>),
}

#[derive(Debug)]
pub(crate) struct EnumNode {
    /// Full name, e.g. `io.cohort.v1.Channel`.
    pub name: String,
    pub aliases: Vec<String>,
    pub symbols: Vec<String>,
    /// Index into `symbols` used for a writer symbol the reader lacks.
    pub default: Option<usize>,
}

#[derive(Debug)]
pub(crate) struct RecordNode {
    /// Full name, e.g. `io.cohort.v1.ClickEvent`.
    pub name: String,
    pub aliases: Vec<String>,
    pub fields: Vec<FieldNode>,
    /// The fields' indices in name order: the order plain JSON writes them.
    pub by_name: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct FieldNode {
    pub name: String,
    pub aliases: Vec<String>,
    pub node: Node,
    /// The JSON default from the schema, if it has one.
    pub default: Option<serde_json::Value>,
}

impl Node {
    /// Short type name for error messages and union matching.
    pub fn type_name(&self) -> &str {
        match self {
            Node::Null => "null",
            Node::Boolean => "boolean",
            Node::Int => "int",
            Node::Long => "long",
            Node::Float => "float",
            Node::Double => "double",
            Node::Bytes => "bytes",
            Node::String => "string",
            Node::Fixed { name, .. } => name,
            Node::Enum(e) => &e.name,
            Node::Array(_) => "array",
            Node::Map(_) => "map",
            Node::Union(_) => "union",
            Node::Record(r) => &r.name,
        }
    }
}

/// The part of a full name after the last dot: Avro resolution matches named
/// types by their unqualified name.
pub(crate) fn unqualified(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// Parses `.avsc` text and compiles it.
pub(crate) fn compile_str(text: &str) -> Result<(Schema, Node), SchemaError> {
    let schema = Schema::parse_str(text).map_err(|e| SchemaError::Parse(e.to_string()))?;
    let node = compile(&schema)?;
    Ok((schema, node))
}

/// Compiles a parsed schema into a [`Node`] tree.
pub(crate) fn compile(schema: &Schema) -> Result<Node, SchemaError> {
    let mut names = HashMap::new();
    let mut in_progress = Vec::new();
    convert(schema, &mut names, &mut in_progress)
}

fn aliases(a: &Option<Vec<apache_avro::schema::Alias>>) -> Vec<String> {
    a.iter().flatten().map(|a| a.fullname(None)).collect()
}

fn convert(
    schema: &Schema,
    names: &mut HashMap<String, Node>,
    in_progress: &mut Vec<String>,
) -> Result<Node, SchemaError> {
    Ok(match schema {
        Schema::Null => Node::Null,
        Schema::Boolean => Node::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Node::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Node::Long,
        Schema::Float => Node::Float,
        Schema::Double => Node::Double,
        Schema::Bytes | Schema::BigDecimal => Node::Bytes,
        Schema::String | Schema::Uuid => Node::String,
        Schema::Decimal(d) => convert(&d.inner, names, in_progress)?,
        Schema::Duration => Node::Fixed { name: "duration".into(), aliases: vec![], size: 12 },
        Schema::Array(a) => Node::Array(Box::new(convert(&a.items, names, in_progress)?)),
        Schema::Map(m) => Node::Map(Box::new(convert(&m.types, names, in_progress)?)),
        Schema::Union(u) => {
            Node::Union(u.variants().iter().map(|v| convert(v, names, in_progress)).collect::<Result<_, _>>()?)
        }
        Schema::Fixed(f) => {
            let name = f.name.fullname(None);
            let node = Node::Fixed { name: name.clone(), aliases: aliases(&f.aliases), size: f.size };
            names.insert(name, node.clone());
            node
        }
        Schema::Enum(e) => {
            let name = e.name.fullname(None);
            let default = match &e.default {
                Some(d) => Some(
                    e.symbols
                        .iter()
                        .position(|s| s == d)
                        .ok_or_else(|| SchemaError::Parse(format!("enum {name}: default {d:?} is not a symbol")))?,
                ),
                None => None,
            };
            let node = Node::Enum(Arc::new(EnumNode {
                name: name.clone(),
                aliases: aliases(&e.aliases),
                symbols: e.symbols.clone(),
                default,
            }));
            names.insert(name, node.clone());
            node
        }
        Schema::Record(r) => {
            let name = r.name.fullname(None);
            in_progress.push(name.clone());
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                fields.push(FieldNode {
                    name: f.name.clone(),
                    aliases: f.aliases.clone().unwrap_or_default(),
                    node: convert(&f.schema, names, in_progress)?,
                    default: f.default.clone(),
                });
            }
            in_progress.pop();
            let mut by_name: Vec<usize> = (0..fields.len()).collect();
            by_name.sort_by(|&a, &b| fields[a].name.cmp(&fields[b].name));
            let node = Node::Record(Arc::new(RecordNode {
                name: name.clone(),
                aliases: aliases(&r.aliases),
                fields,
                by_name,
            }));
            names.insert(name, node.clone());
            node
        }
        Schema::Ref { name } => {
            let full = name.fullname(None);
            if in_progress.contains(&full) {
                return Err(SchemaError::Recursive(full));
            }
            names.get(&full).cloned().ok_or(SchemaError::UnknownReference(full))?
        }
    })
}

/// The records cohort reads and writes, each with its schema in `schemas/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    ClickEvent,
    PurchaseEvent,
    CustomerProfile,
    OfferOutcome,
    SegmentChanged,
    NextBestOffer,
}

impl RecordType {
    pub const ALL: [RecordType; 6] = [
        RecordType::ClickEvent,
        RecordType::PurchaseEvent,
        RecordType::CustomerProfile,
        RecordType::OfferOutcome,
        RecordType::SegmentChanged,
        RecordType::NextBestOffer,
    ];

    /// The Avro full name, also the schema's file name in `schemas/`
    /// (`<full name>.avsc`).
    pub fn full_name(self) -> &'static str {
        match self {
            RecordType::ClickEvent => "io.cohort.v1.ClickEvent",
            RecordType::PurchaseEvent => "io.cohort.v1.PurchaseEvent",
            RecordType::CustomerProfile => "io.cohort.v1.CustomerProfile",
            RecordType::OfferOutcome => "io.cohort.v1.OfferOutcome",
            RecordType::SegmentChanged => "io.cohort.v1.SegmentChanged",
            RecordType::NextBestOffer => "io.cohort.v1.NextBestOffer",
        }
    }

    /// The `.avsc` text compiled into this binary: the reader schema for
    /// inputs and the writer schema for outputs.
    pub fn schema_text(self) -> &'static str {
        match self {
            RecordType::ClickEvent => include_str!("../../../schemas/io.cohort.v1.ClickEvent.avsc"),
            RecordType::PurchaseEvent => include_str!("../../../schemas/io.cohort.v1.PurchaseEvent.avsc"),
            RecordType::CustomerProfile => include_str!("../../../schemas/io.cohort.v1.CustomerProfile.avsc"),
            RecordType::OfferOutcome => include_str!("../../../schemas/io.cohort.v1.OfferOutcome.avsc"),
            RecordType::SegmentChanged => include_str!("../../../schemas/io.cohort.v1.SegmentChanged.avsc"),
            RecordType::NextBestOffer => include_str!("../../../schemas/io.cohort.v1.NextBestOffer.avsc"),
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which input topic a record came from; decides the reader schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputKind {
    /// `clickstream`: ClickEvent.
    Click,
    /// `purchases`: PurchaseEvent.
    Purchase,
    /// `customer-profiles`: CustomerProfile, or a null value (forget).
    Profile,
    /// `offer-outcomes`: OfferOutcome.
    OfferOutcome,
}

impl InputKind {
    pub const ALL: [InputKind; 4] =
        [InputKind::Click, InputKind::Purchase, InputKind::Profile, InputKind::OfferOutcome];

    pub fn record_type(self) -> RecordType {
        match self {
            InputKind::Click => RecordType::ClickEvent,
            InputKind::Purchase => RecordType::PurchaseEvent,
            InputKind::Profile => RecordType::CustomerProfile,
            InputKind::OfferOutcome => RecordType::OfferOutcome,
        }
    }

    /// Short stable name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Click => "click",
            InputKind::Purchase => "purchase",
            InputKind::Profile => "profile",
            InputKind::OfferOutcome => "offer_outcome",
        }
    }
}
