//! The public codec: Kafka records to [`Event`]s and outputs to bytes.

use crate::avro::{self, Cursor, Plan, V};
use crate::error::{DecodeError, EncodeError};
use crate::json;
use crate::output::{NextBestOffer, SegmentChanged};
use crate::records::{self, Head};
use crate::registry::Registry;
use crate::schema::{InputKind, RecordType};
use cohort_core::event::{Event, EventKind};
use cohort_core::time::Timestamp;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// How record values are encoded on the wire. One format per deployment,
/// for inputs and outputs alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A bare Avro binary datum written with cohort's schema.
    Avro,
    /// Confluent wire format: byte 0, a 4-byte big-endian schema id, then
    /// the Avro datum written with that id's schema.
    ConfluentAvro,
    /// A JSON object with the schema's field names.
    Json,
}

impl Format {
    /// The config spelling: `avro`, `confluent-avro`, `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Avro => "avro",
            Format::ConfluentAvro => "confluent-avro",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "avro" => Ok(Format::Avro),
            "confluent-avro" | "confluent" => Ok(Format::ConfluentAvro),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown format {s:?}: expected avro, confluent-avro or json")),
        }
    }
}

/// One Kafka record as the codec needs it. `topic`, `partition` and
/// `offset` derive the event id when the producer sent none; `timestamp`
/// (the Kafka record timestamp, ms) dates a forget.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The id given to an event whose producer sent none: stable across
/// replays because it only depends on where the record is in Kafka.
pub fn derived_event_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}:{partition}:{offset}")
}

/// Default for [`Decoder::with_max_value_bytes`]: 1 MiB, Kafka's default
/// `max.message.bytes`. A click is about 100 bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// A click's fields that nothing in the engine reads: no rule can name
/// them, and sessions are derived from an inactivity gap, not from the
/// producer's session id. [`Decoder::engine_fields_only`] leaves them out.
pub const UNREAD_CLICK_FIELDS: [&str; 5] = ["page", "search_query", "device", "campaign", "session_id"];

/// Clears what [`UNREAD_CLICK_FIELDS`] names.
pub(crate) fn forget_unread(kind: &mut EventKind) {
    if let EventKind::Click(c) = kind {
        c.page = None;
        c.search_query = None;
        c.device = None;
        c.campaign = None;
        c.session_id = None;
    }
}

/// Decodes Kafka records into core events. Cheap to clone; one per
/// partition task is fine.
#[derive(Clone, Debug)]
pub struct Decoder {
    format: Format,
    registry: Arc<Registry>,
    max_value_bytes: usize,
    keep_unread: bool,
}

impl Decoder {
    pub fn new(format: Format, registry: Arc<Registry>) -> Decoder {
        Decoder { format, registry, max_value_bytes: DEFAULT_MAX_VALUE_BYTES, keep_unread: true }
    }

    /// Decodes only what the engine reads: the fields no rule and no part
    /// of `cohort-core` looks at ([`UNREAD_CLICK_FIELDS`]) are checked as
    /// before (a value of the wrong type is still a decode error) but left
    /// `None`, which saves the worker a copy (and, for a string without
    /// escapes, an allocation) for each. Whoever makes the engine read one
    /// of them takes it off that list and out of both direct decoders
    /// (`json_input`, `direct`) and `forget_unread`; a test in
    /// `tests/roundtrip.rs` checks the four agree.
    pub fn engine_fields_only(mut self) -> Decoder {
        self.keep_unread = false;
        self
    }

    /// Values longer than this are rejected as `oversized` before decoding.
    pub fn with_max_value_bytes(mut self, max: usize) -> Decoder {
        self.max_value_bytes = max;
        self
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Decodes one input record. The key is the customer id: it fills in a
    /// payload without one, and must equal the payload's when both exist.
    /// A null value on `customer-profiles` is a [`EventKind::Forget`].
    pub fn decode(&self, kind: InputKind, rec: &Record<'_>) -> Result<Event, DecodeError> {
        let key = match rec.key {
            None | Some([]) => None,
            Some(k) => Some(std::str::from_utf8(k).map_err(|_| DecodeError::InvalidKey)?),
        };
        let Some(value) = rec.value else {
            if kind != InputKind::Profile {
                return Err(DecodeError::NullValue { topic_kind: kind.as_str() });
            }
            let customer = key.ok_or(DecodeError::MissingCustomerId)?.to_string();
            let time = rec.timestamp.ok_or(DecodeError::MissingTimestamp)?;
            return Ok(Event {
                id: derived_event_id(rec.topic, rec.partition, rec.offset),
                customer,
                time: Timestamp(time),
                kind: EventKind::Forget,
            });
        };
        let direct = match self.format {
            Format::Json if value.len() <= self.max_value_bytes => {
                crate::json_input::input(kind, value, self.keep_unread)
            }
            _ => self.direct_datum(kind, value).and_then(|datum| crate::direct::input(kind, datum, self.keep_unread)),
        };
        let (head, kind) = match direct {
            Some(decoded) => decoded,
            None => {
                let (head, mut kind) = self.decode_value(kind, value)?;
                if !self.keep_unread {
                    forget_unread(&mut kind);
                }
                (head, kind)
            }
        };
        let Head { id, customer, time } = head;
        let customer = match (key, customer) {
            (Some(k), Some(p)) if k != p => {
                return Err(DecodeError::CustomerIdMismatch { key: k.to_string(), payload: p })
            }
            (_, Some(p)) => p,
            (Some(k), None) => k.to_string(),
            (None, None) => return Err(DecodeError::MissingCustomerId),
        };
        let id = id.unwrap_or_else(|| derived_event_id(rec.topic, rec.partition, rec.offset));
        Ok(Event { id, customer, time, kind })
    }

    /// The generic path: the value tree in cohort's schema, then the mapping.
    fn decode_value(&self, kind: InputKind, value: &[u8]) -> Result<(Head, EventKind), DecodeError> {
        self.with_value(kind.record_type(), value, |v| {
            Ok(match kind {
                InputKind::Click => {
                    let (h, c) = records::click(v)?;
                    (h, EventKind::Click(c))
                }
                InputKind::Purchase => {
                    let (h, p) = records::purchase(v)?;
                    (h, EventKind::Purchase(p))
                }
                InputKind::Profile => {
                    let (h, p) = records::profile(v)?;
                    (h, EventKind::ProfileUpdate(p))
                }
                InputKind::OfferOutcome => {
                    let (h, o) = records::offer_outcome(v)?;
                    (h, EventKind::OfferOutcome(o))
                }
            })
        })
    }

    /// The Avro datum of an input value when it was written with exactly
    /// cohort's schema for `kind` (plain Avro, or a Confluent id registered
    /// with that schema): then [`crate::direct::input`] may read it.
    fn direct_datum<'v>(&self, kind: InputKind, value: &'v [u8]) -> Option<&'v [u8]> {
        if value.len() > self.max_value_bytes {
            return None;
        }
        match self.format {
            Format::Avro => Some(value),
            Format::ConfluentAvro => {
                let (id, datum) = split_confluent(value).ok()?;
                (self.registry.id_for(kind.record_type()) == Some(id)).then_some(datum)
            }
            Format::Json => None,
        }
    }

    /// Decodes a `segment-changes` value (for consumers, tests and tools).
    pub fn decode_segment_changed(&self, value: &[u8]) -> Result<SegmentChanged, DecodeError> {
        self.with_value(RecordType::SegmentChanged, value, records::segment_changed)
    }

    /// Decodes a `next-best-offers` value (for consumers, tests and tools).
    pub fn decode_next_best_offer(&self, value: &[u8]) -> Result<NextBestOffer, DecodeError> {
        self.with_value(RecordType::NextBestOffer, value, records::next_best_offer)
    }

    /// Turns the bytes into a value in the shape of cohort's schema for
    /// `rt` and hands it to `f`.
    fn with_value<R>(
        &self,
        rt: RecordType,
        value: &[u8],
        f: impl FnOnce(V<'_>) -> Result<R, DecodeError>,
    ) -> Result<R, DecodeError> {
        if value.len() > self.max_value_bytes {
            return Err(DecodeError::Oversized { len: value.len(), max: self.max_value_bytes });
        }
        match self.format {
            Format::Avro => f(decode_datum(&self.registry.plain[rt.index()], value)?),
            Format::ConfluentAvro => {
                let (id, datum) = split_confluent(value)?;
                let entry = self.registry.ids.get(&id).ok_or(DecodeError::UnknownSchemaId(id))?;
                let plan = entry.plans[rt.index()].as_ref().ok_or_else(|| DecodeError::SchemaMismatch {
                    schema_id: id,
                    found: entry.name.clone(),
                    expected: rt.full_name(),
                })?;
                f(decode_datum(plan, datum)?)
            }
            Format::Json => {
                // Plain input of the schema, without a serde_json::Value;
                // anything else (and every error) takes the generic reader.
                if let Some(v) = crate::json_direct::read(self.registry.node(rt), value) {
                    return f(v);
                }
                let j: serde_json::Value =
                    serde_json::from_slice(value).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
                if !j.is_object() {
                    return Err(DecodeError::InvalidJson("expected a JSON object".into()));
                }
                let v = json::from_json(self.registry.node(rt), &j, "").map_err(|e| match e {
                    json::JsonError::Missing { field } => DecodeError::MissingField(field),
                    json::JsonError::WrongType { field, expected } => {
                        DecodeError::InvalidField { field, problem: format!("expected {expected}") }
                    }
                })?;
                f(v)
            }
        }
    }
}

fn decode_datum<'a>(plan: &'a Plan, bytes: &'a [u8]) -> Result<V<'a>, DecodeError> {
    let mut c = Cursor::new(bytes);
    let v = avro::decode(plan, &mut c).map_err(|e| DecodeError::Undecodable(e.to_string()))?;
    c.finish().map_err(|e| DecodeError::Undecodable(e.to_string()))?;
    Ok(v)
}

/// Splits a Confluent-framed value into schema id and Avro datum.
pub fn split_confluent(value: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    if value.len() < 5 {
        return Err(DecodeError::TruncatedHeader { len: value.len() });
    }
    if value[0] != 0 {
        return Err(DecodeError::BadMagicByte(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

/// Encodes events and outputs in one [`Format`]. Confluent wire format
/// needs the registry to know the schema id of each record written
/// ([`Registry::id_for`]).
#[derive(Clone, Debug)]
pub struct Encoder {
    format: Format,
    registry: Arc<Registry>,
}

impl Encoder {
    pub fn new(format: Format, registry: Arc<Registry>) -> Encoder {
        Encoder { format, registry }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Checks up front that every record in `records` can be written
    /// (Confluent needs their schema ids): call at start-up.
    pub fn check(&self, records: &[RecordType]) -> Result<(), EncodeError> {
        if self.format == Format::ConfluentAvro {
            for r in records {
                self.registry.id_for(*r).ok_or(EncodeError::NoSchemaId(*r))?;
            }
        }
        Ok(())
    }

    /// Encodes an input event as its producer would (loadgen, tests, replay
    /// tools). `Ok(None)` for a forget: send a null value (tombstone) to
    /// `customer-profiles`.
    pub fn encode_event(&self, ev: &Event) -> Result<Option<Vec<u8>>, EncodeError> {
        let (rt, v) = match &ev.kind {
            EventKind::Click(c) => (RecordType::ClickEvent, records::click_value(&ev.id, &ev.customer, ev.time, c)),
            EventKind::Purchase(p) => {
                (RecordType::PurchaseEvent, records::purchase_value(&ev.id, &ev.customer, ev.time, p))
            }
            EventKind::ProfileUpdate(p) => (
                RecordType::CustomerProfile,
                records::profile_value(&ev.id, &ev.customer, ev.time, p)
                    .map_err(|m| EncodeError::Mismatch(RecordType::CustomerProfile, m))?,
            ),
            EventKind::OfferOutcome(o) => {
                (RecordType::OfferOutcome, records::offer_outcome_value(&ev.id, &ev.customer, ev.time, o))
            }
            EventKind::Forget => return Ok(None),
        };
        let mut out = Vec::with_capacity(128);
        self.write(rt, &v, &mut out)?;
        Ok(Some(out))
    }

    /// Encodes any engine output. `Ok(None)` for `Output::Forgotten`: it
    /// has no record schema; write a null value (tombstone) keyed by the
    /// customer, so compacted consumers drop the customer too.
    pub fn encode_output(&self, o: &cohort_core::engine::Output) -> Result<Option<Vec<u8>>, EncodeError> {
        use cohort_core::engine::Output;
        match o {
            Output::SegmentChanged(o) => self.encode_segment_changed(o).map(Some),
            Output::NextBestOffer(o) => self.encode_next_best_offer(o).map(Some),
            Output::Forgotten(_) => Ok(None),
        }
    }

    /// Encodes a `segment-changes` value.
    pub fn encode_segment_changed(&self, o: &SegmentChanged) -> Result<Vec<u8>, EncodeError> {
        let len = match self.format {
            Format::Json => crate::json_output::segment_changed_len(o),
            // Room for the Confluent header too.
            Format::Avro | Format::ConfluentAvro => 5 + crate::direct::segment_changed_len(o),
        };
        let mut out = Vec::with_capacity(len);
        self.encode_segment_changed_into(o, &mut out)?;
        Ok(out)
    }

    /// Appends a `segment-changes` value to `out` (reuse the buffer).
    pub fn encode_segment_changed_into(&self, o: &SegmentChanged, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.avro_header(RecordType::SegmentChanged, out)? {
            crate::direct::segment_changed(o, out);
        } else {
            crate::json_output::segment_changed(o, out);
        }
        Ok(())
    }

    /// Encodes a `next-best-offers` value.
    pub fn encode_next_best_offer(&self, o: &NextBestOffer) -> Result<Vec<u8>, EncodeError> {
        let len = match self.format {
            Format::Json => crate::json_output::next_best_offer_len(o),
            Format::Avro | Format::ConfluentAvro => 5 + crate::direct::next_best_offer_len(o),
        };
        let mut out = Vec::with_capacity(len);
        self.encode_next_best_offer_into(o, &mut out)?;
        Ok(out)
    }

    /// Appends a `next-best-offers` value to `out` (reuse the buffer).
    pub fn encode_next_best_offer_into(&self, o: &NextBestOffer, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.avro_header(RecordType::NextBestOffer, out)? {
            crate::direct::next_best_offer(o, out);
        } else {
            crate::json_output::next_best_offer(o, out);
        }
        Ok(())
    }

    /// For the Avro formats, writes what precedes the datum (the Confluent
    /// header, or nothing) and says the datum may be written directly.
    fn avro_header(&self, rt: RecordType, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
        match self.format {
            Format::Avro => Ok(true),
            Format::ConfluentAvro => {
                let id = self.registry.id_for(rt).ok_or(EncodeError::NoSchemaId(rt))?;
                out.push(0);
                out.extend_from_slice(&id.to_be_bytes());
                Ok(true)
            }
            Format::Json => Ok(false),
        }
    }

    fn write(&self, rt: RecordType, v: &V<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let node = self.registry.node(rt);
        if self.avro_header(rt, out)? {
            return avro::encode(node, v, out).map_err(|m| EncodeError::Mismatch(rt, m.0));
        }
        json::write(node, v, out).map_err(|e| EncodeError::Mismatch(rt, e.to_string()))
    }
}
