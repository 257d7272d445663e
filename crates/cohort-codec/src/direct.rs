//! The hot paths of the Avro codec, without the generic value tree: every
//! click is decoded and every output encoded here.
//!
//! - [`click`] decodes a click written with exactly cohort's own
//!   `ClickEvent` schema (plain Avro, or a Confluent id whose schema is
//!   cohort's), field by field in schema order, straight into core types. It
//!   only ever answers for well-formed input: on anything unusual (a short
//!   buffer, an unknown union branch or enum symbol, invalid UTF-8, trailing
//!   bytes) it returns `None` and the caller runs the generic decoder, which
//!   gives the canonical error.
//! - [`segment_changed`] and [`next_best_offer`] write the two output
//!   records in cohort's schemas, which are always the writer schemas.
//!
//! They can change speed, never results: the tests below check them against
//! the generic paths, byte for byte, on generated records and (for the
//! decoder) on corrupted ones.

use crate::avro::{put_bytes, put_long, Cursor};
use crate::output::{Cause, CauseKind, NextBestOffer, SegmentChanged};
use crate::records::Head;
use cohort_core::event::{Channel, Click, ClickKind, Geo};
use cohort_core::time::Timestamp;

/// `ClickKind`'s symbols in schema order (checked against the `.avsc`).
const CLICK_KINDS: [ClickKind; 6] = [
    ClickKind::PageView,
    ClickKind::ProductView,
    ClickKind::Search,
    ClickKind::AddToCart,
    ClickKind::RemoveFromCart,
    ClickKind::CheckoutStarted,
];

/// `Channel`'s symbols in schema order (checked against the `.avsc`).
const CHANNELS: [Channel; 7] =
    [Channel::Web, Channel::App, Channel::Email, Channel::Sms, Channel::Push, Channel::Store, Channel::Other];

/// Whether a `["null", T]` union holds a value.
fn present(c: &mut Cursor<'_>) -> Option<bool> {
    match c.long().ok()? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

fn opt_str<'a>(c: &mut Cursor<'a>) -> Option<Option<&'a str>> {
    Some(if present(c)? { Some(c.str().ok()?) } else { None })
}

fn opt_string(c: &mut Cursor<'_>) -> Option<Option<String>> {
    Some(opt_str(c)?.map(str::to_owned))
}

/// Like the generic mapping's: an empty id or customer counts as absent.
fn opt_nonempty(c: &mut Cursor<'_>) -> Option<Option<String>> {
    Some(opt_str(c)?.filter(|s| !s.is_empty()).map(str::to_owned))
}

fn symbol<T: Copy>(c: &mut Cursor<'_>, symbols: &[T]) -> Option<T> {
    symbols.get(usize::try_from(c.long().ok()?).ok()?).copied()
}

/// A `ClickEvent` datum, or `None` to leave it to the generic decoder.
pub(crate) fn click(bytes: &[u8]) -> Option<(Head, Click)> {
    let mut c = Cursor::new(bytes);
    let id = opt_nonempty(&mut c)?;
    let customer = opt_nonempty(&mut c)?;
    let time = Timestamp(c.long().ok()?);
    let kind = symbol(&mut c, &CLICK_KINDS)?;
    let product_id = opt_string(&mut c)?;
    let category = opt_string(&mut c)?;
    let price = if present(&mut c)? { Some(c.f64().ok()?) } else { None };
    let quantity = if present(&mut c)? { Some(c.int().ok()?) } else { None };
    let page = opt_string(&mut c)?;
    let search_query = opt_string(&mut c)?;
    let channel = if present(&mut c)? { Some(symbol(&mut c, &CHANNELS)?) } else { None };
    let device = opt_string(&mut c)?;
    let geo = if present(&mut c)? {
        Geo { country: opt_string(&mut c)?, region: opt_string(&mut c)?, city: opt_string(&mut c)? }
    } else {
        Geo::default()
    };
    let campaign = opt_string(&mut c)?;
    let session_id = opt_string(&mut c)?;
    c.finish().ok()?;
    let click = Click {
        kind,
        product_id,
        category,
        price,
        quantity,
        page,
        search_query,
        channel,
        device,
        geo,
        campaign,
        session_id,
    };
    Some((Head { id, customer, time }, click))
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(2);
            put_bytes(out, s.as_bytes());
        }
    }
}

fn put_strings(out: &mut Vec<u8>, items: &[String]) {
    if !items.is_empty() {
        put_long(out, items.len() as i64);
        for s in items {
            put_bytes(out, s.as_bytes());
        }
    }
    out.push(0);
}

/// Index of a symbol in the schema's enum, as a one-byte Avro long.
fn put_symbol<T: PartialEq>(out: &mut Vec<u8>, symbols: &[T], s: &T) {
    let i = symbols.iter().position(|x| x == s).unwrap_or(0);
    put_long(out, i as i64);
}

const CAUSE_KINDS: [CauseKind; 3] = [CauseKind::Event, CauseKind::Timer, CauseKind::RulesChanged];

fn put_cause(out: &mut Vec<u8>, c: &Cause) {
    put_symbol(out, &CAUSE_KINDS, &c.kind);
    put_opt_str(out, c.event_id.as_deref());
    put_opt_str(out, c.trigger.as_deref());
}

/// Appends a `SegmentChanged` datum in cohort's schema.
pub(crate) fn segment_changed(o: &SegmentChanged, out: &mut Vec<u8>) {
    put_bytes(out, o.id.as_bytes());
    put_bytes(out, o.customer.as_bytes());
    put_long(out, o.time.0);
    put_strings(out, &o.entered);
    put_strings(out, &o.exited);
    put_strings(out, &o.segments);
    put_cause(out, &o.cause);
    put_bytes(out, o.rules_version.as_bytes());
}

/// Appends a `NextBestOffer` datum in cohort's schema.
pub(crate) fn next_best_offer(o: &NextBestOffer, out: &mut Vec<u8>) {
    put_bytes(out, o.id.as_bytes());
    put_bytes(out, o.customer.as_bytes());
    put_long(out, o.time.0);
    put_opt_str(out, o.offer.as_deref());
    put_opt_str(out, o.holdout_offer.as_deref());
    match o.channel {
        None => out.push(0),
        Some(c) => {
            out.push(2);
            put_symbol(out, &CHANNELS, &c);
        }
    }
    let sc = &o.scores;
    for d in [sc.propensity, sc.context_weight, sc.value, sc.lever, sc.total] {
        out.extend_from_slice(&d.to_le_bytes());
    }
    put_strings(out, &o.products);
    out.push(u8::from(o.holdout));
    put_cause(out, &o.cause);
    put_bytes(out, o.rules_version.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{compile_str, Node, RecordType};

    fn enum_symbols(node: &Node, field: &str) -> Vec<String> {
        let Node::Record(r) = node else { panic!("not a record") };
        let f = r.fields.iter().find(|f| f.name == field).expect("field");
        let find = |n: &Node| -> Option<Vec<String>> {
            match n {
                Node::Enum(e) => Some(e.symbols.clone()),
                Node::Union(bs) => bs.iter().find_map(|b| match b {
                    Node::Enum(e) => Some(e.symbols.clone()),
                    _ => None,
                }),
                _ => None,
            }
        };
        find(&f.node).expect("an enum field")
    }

    #[test]
    fn symbol_tables_follow_the_schema() {
        let (_, node) = compile_str(RecordType::ClickEvent.schema_text()).expect("schema");
        let kinds: Vec<String> = CLICK_KINDS.iter().map(|k| crate::records::click_kind_str(*k).to_string()).collect();
        assert_eq!(kinds, enum_symbols(&node, "kind"));
        let channels: Vec<String> = CHANNELS.iter().map(|c| c.as_str().to_string()).collect();
        assert_eq!(channels, enum_symbols(&node, "channel"));
    }

    type Decoded = (Option<String>, Option<String>, Timestamp, Click);

    fn generic(bytes: &[u8]) -> Result<Decoded, crate::DecodeError> {
        static REGISTRY: std::sync::OnceLock<crate::Registry> = std::sync::OnceLock::new();
        let plan = &REGISTRY.get_or_init(crate::Registry::builtin).plain[RecordType::ClickEvent.index()];
        let mut c = Cursor::new(bytes);
        let v = crate::avro::decode(plan, &mut c).map_err(|e| crate::DecodeError::Undecodable(e.to_string()))?;
        c.finish().map_err(|e| crate::DecodeError::Undecodable(e.to_string()))?;
        let (h, click) = crate::records::click(v)?;
        Ok((h.id, h.customer, h.time, click))
    }

    fn direct(bytes: &[u8]) -> Option<Decoded> {
        click(bytes).map(|(h, c)| (h.id, h.customer, h.time, c))
    }

    /// Deterministic clicks that cover every optional field present and
    /// absent, empty strings, multi-byte UTF-8, extreme numbers.
    fn clicks() -> Vec<Vec<u8>> {
        use cohort_core::event::{Event, EventKind};
        let enc = crate::Encoder::new(crate::Format::Avro, std::sync::Arc::new(crate::Registry::builtin()));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let texts = ["", "a", "p-00042", "Zürich", "東京", "electronics/phones", &"x".repeat(300)];
        let mut out = Vec::new();
        for i in 0..600 {
            let mut pick = |n: u64| next() % n;
            let text = |pick: &mut dyn FnMut(u64) -> u64| -> Option<String> {
                let k = pick(texts.len() as u64 + 1) as usize;
                texts.get(k).map(|t| t.to_string())
            };
            let click = Click {
                kind: CLICK_KINDS[pick(6) as usize],
                product_id: text(&mut pick),
                category: text(&mut pick),
                price: [None, Some(0.0), Some(19.99), Some(-1.5), Some(f64::MAX)][pick(5) as usize],
                quantity: [None, Some(0), Some(1), Some(-3), Some(i32::MAX), Some(i32::MIN)][pick(6) as usize],
                page: text(&mut pick),
                search_query: text(&mut pick),
                channel: if pick(3) == 0 { None } else { Some(CHANNELS[pick(7) as usize]) },
                device: text(&mut pick),
                geo: if pick(2) == 0 {
                    Geo::default()
                } else {
                    Geo { country: text(&mut pick), region: text(&mut pick), city: text(&mut pick) }
                },
                campaign: text(&mut pick),
                session_id: text(&mut pick),
            };
            let ev = Event {
                id: if i % 7 == 0 { String::new() } else { format!("e-{i}") },
                customer: if i % 11 == 0 { String::new() } else { format!("c-{:06}", pick(1_000_000)) },
                time: Timestamp([0, 1, -1, i64::MAX, i64::MIN, 1_700_000_000_000][i % 6]),
                kind: EventKind::Click(click),
            };
            out.push(enc.encode_event(&ev).expect("encodes").expect("a value"));
        }
        out
    }

    #[test]
    fn reads_every_well_formed_click_as_the_generic_decoder_does() {
        for bytes in clicks() {
            let g = generic(&bytes).expect("the generic decoder reads what the encoder wrote");
            assert_eq!(direct(&bytes), Some(g), "{bytes:?}");
        }
    }

    #[test]
    fn on_corrupted_input_it_agrees_or_steps_aside() {
        let (mut agreed, mut stepped_aside) = (0, 0);
        let mut check = |bytes: &[u8]| match direct(bytes) {
            Some(d) => {
                // Compared as text: a corrupted price may be NaN, which is
                // not equal to itself.
                assert_eq!(format!("{:?}", generic(bytes).ok()), format!("{:?}", Some(d)), "{bytes:?}");
                agreed += 1;
            }
            None => stepped_aside += 1,
        };
        for bytes in clicks().iter().take(60) {
            for n in 0..bytes.len() {
                check(&bytes[..n]);
            }
            let mut longer = bytes.clone();
            longer.push(0);
            check(&longer);
            for i in 0..bytes.len() {
                for b in [0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xc3, 0xff] {
                    let mut m = bytes.clone();
                    m[i] = b;
                    check(&m);
                }
            }
        }
        // Both outcomes happen, so both branches were exercised.
        assert!(agreed > 1_000 && stepped_aside > 1_000, "agreed {agreed}, stepped aside {stepped_aside}");
    }

    fn generic_bytes(v: &crate::avro::V<'_>, rt: RecordType) -> Vec<u8> {
        let reg = crate::Registry::builtin();
        let mut out = Vec::new();
        crate::avro::encode(reg.node(rt), v, &mut out).expect("encodes");
        out
    }

    fn texts(i: usize) -> Vec<String> {
        let pool = ["", "vip", "lapsed", "affinity:électronique", &"y".repeat(200)];
        (0..i % 4).map(|k| pool[(i + k) % pool.len()].to_string()).collect()
    }

    fn cause(i: usize) -> Cause {
        Cause {
            kind: CAUSE_KINDS[i % 3],
            event_id: (i % 2 == 0).then(|| format!("e-{i}")),
            trigger: (i % 5 == 0).then(|| "cart_abandoned".to_string()),
        }
    }

    #[test]
    fn writes_outputs_byte_for_byte_as_the_generic_encoder() {
        use crate::output::OfferScores;
        let times = [0, 1, -1, i64::MAX, i64::MIN, 1_700_000_000_000];
        for i in 0..300 {
            let sc = SegmentChanged {
                id: format!("{i:032x}"),
                customer: if i % 9 == 0 { String::new() } else { format!("c-{i}") },
                time: Timestamp(times[i % times.len()]),
                entered: texts(i),
                exited: texts(i + 1),
                segments: texts(i + 2),
                cause: cause(i),
                rules_version: format!("v{i}"),
            };
            let mut direct = Vec::new();
            segment_changed(&sc, &mut direct);
            let generic = generic_bytes(&crate::records::segment_changed_value(&sc), RecordType::SegmentChanged);
            assert_eq!(direct, generic, "{sc:?}");

            let nbo = NextBestOffer {
                id: format!("{i:032x}"),
                customer: format!("c-{i}"),
                time: Timestamp(times[(i + 1) % times.len()]),
                offer: (i % 3 != 0).then(|| format!("offer-{i}")),
                holdout_offer: (i % 4 == 0).then(|| "hold".to_string()),
                channel: if i % 8 == 7 { None } else { Some(CHANNELS[i % 7]) },
                scores: OfferScores {
                    propensity: i as f64 / 7.0,
                    context_weight: -0.0,
                    value: f64::MAX,
                    lever: f64::MIN_POSITIVE,
                    total: i as f64,
                },
                products: texts(i + 3),
                holdout: i % 2 == 1,
                cause: cause(i + 1),
                rules_version: String::new(),
            };
            let mut direct = Vec::new();
            next_best_offer(&nbo, &mut direct);
            let generic = generic_bytes(&crate::records::next_best_offer_value(&nbo), RecordType::NextBestOffer);
            assert_eq!(direct, generic, "{nbo:?}");
        }
    }
}
