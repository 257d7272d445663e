//! The hot paths of the Avro codec, without the generic value tree: every
//! click is decoded and every output encoded here.
//!
//! - [`input`] decodes an input record written with exactly cohort's own
//!   schema for its topic (plain Avro, or a Confluent id whose schema is
//!   cohort's), field by field in schema order, straight into core types. It
//!   only ever answers for well-formed input: on anything unusual (a short
//!   buffer, an unknown union branch or enum symbol, invalid UTF-8, a
//!   negative age, trailing bytes) it returns `None` and the caller runs the
//!   generic decoder, which gives the canonical error.
//! - [`segment_changed`] and [`next_best_offer`] write the two output
//!   records in cohort's schemas, which are always the writer schemas.
//!
//! They can change speed, never results: the tests below check them against
//! the generic paths, byte for byte, on generated records and (for the
//! decoder) on corrupted ones.

use crate::avro::{put_bytes, put_long, Cursor};
use crate::output::{Cause, CauseKind, NextBestOffer, SegmentChanged};
use crate::records::{date_from_days, Head};
use crate::schema::InputKind;
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, EventKind, Geo, LineItem, OfferOutcome, Outcome, ProfileUpdate, Purchase,
};
use cohort_core::time::Timestamp;

/// `ClickKind`'s symbols in schema order (checked against the `.avsc`).
pub(crate) const CLICK_KINDS: [ClickKind; 6] = [
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

fn string(c: &mut Cursor<'_>) -> Option<String> {
    Some(c.str().ok()?.to_owned())
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

fn opt_channel(c: &mut Cursor<'_>) -> Option<Option<Channel>> {
    Some(if present(c)? { Some(symbol(c, &CHANNELS)?) } else { None })
}

fn opt_bool(c: &mut Cursor<'_>) -> Option<Option<bool>> {
    Some(if present(c)? { Some(c.boolean().ok()?) } else { None })
}

/// The items of an array, each read by `item`, in as many blocks as the
/// writer used.
fn array<T>(c: &mut Cursor<'_>, mut item: impl FnMut(&mut Cursor<'_>) -> Option<T>) -> Option<Vec<T>> {
    let mut out = Vec::new();
    loop {
        let n = c.block(false).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.reserve(n);
        for _ in 0..n {
            out.push(item(c)?);
        }
    }
}

/// An input datum of `kind`, or `None` to leave it to the generic decoder.
/// `keep_unread: false` checks the fields the engine does not read
/// ([`crate::UNREAD_CLICK_FIELDS`]) without keeping them.
pub(crate) fn input(kind: InputKind, bytes: &[u8], keep_unread: bool) -> Option<(Head, EventKind)> {
    let mut c = Cursor::new(bytes);
    let head = Head { id: opt_nonempty(&mut c)?, customer: opt_nonempty(&mut c)?, time: Timestamp(c.long().ok()?) };
    let body = match kind {
        InputKind::Click => EventKind::Click(click(&mut c, keep_unread)?),
        InputKind::Purchase => EventKind::Purchase(purchase(&mut c)?),
        InputKind::Profile => EventKind::ProfileUpdate(profile(&mut c)?),
        InputKind::OfferOutcome => EventKind::OfferOutcome(offer_outcome(&mut c)?),
    };
    c.finish().ok()?;
    Some((head, body))
}

/// `ClickEvent` after the head.
fn click(c: &mut Cursor<'_>, keep_unread: bool) -> Option<Click> {
    // A field the engine does not read: its string checked, kept on demand.
    let unread = |c: &mut Cursor<'_>| Some(opt_str(c)?.filter(|_| keep_unread).map(str::to_owned));
    let kind = symbol(c, &CLICK_KINDS)?;
    let product_id = opt_string(c)?;
    let category = opt_string(c)?;
    let price = if present(c)? { Some(c.f64().ok()?) } else { None };
    let quantity = if present(c)? { Some(c.int().ok()?) } else { None };
    let page = unread(c)?;
    let search_query = unread(c)?;
    let channel = opt_channel(c)?;
    let device = unread(c)?;
    let geo = if present(c)? {
        Geo { country: opt_string(c)?, region: opt_string(c)?, city: opt_string(c)? }
    } else {
        Geo::default()
    };
    let campaign = unread(c)?;
    let session_id = unread(c)?;
    Some(Click {
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
    })
}

/// `PurchaseEvent` after the head.
fn purchase(c: &mut Cursor<'_>) -> Option<Purchase> {
    let order_id = string(c)?;
    let items = array(c, |c| {
        Some(LineItem {
            product_id: string(c)?,
            category: opt_string(c)?,
            quantity: c.int().ok()?,
            unit_price: c.f64().ok()?,
        })
    })?;
    Some(Purchase { order_id, items, total: c.f64().ok()?, currency: string(c)?, channel: opt_channel(c)? })
}

/// `CustomerProfile` after the head.
fn profile(c: &mut Cursor<'_>) -> Option<ProfileUpdate> {
    let birth_date = if present(c)? { Some(date_from_days(c.int().ok()?)?) } else { None };
    let age = if present(c)? { Some(u32::try_from(c.int().ok()?).ok()?) } else { None };
    let gender = opt_string(c)?;
    let income_band = opt_string(c)?;
    let education = opt_string(c)?;
    let country = opt_string(c)?;
    let region = opt_string(c)?;
    let city = opt_string(c)?;
    let interests = if present(c)? { Some(array(c, string)?) } else { None };
    let consent = if present(c)? {
        ConsentUpdate { email: opt_bool(c)?, sms: opt_bool(c)?, push: opt_bool(c)?, web: opt_bool(c)? }
    } else {
        ConsentUpdate::default()
    };
    let loyalty_tier = opt_string(c)?;
    Some(ProfileUpdate {
        birth_date,
        age,
        gender,
        income_band,
        education,
        country,
        region,
        city,
        interests,
        consent,
        loyalty_tier,
    })
}

/// `OfferOutcome` after the head.
fn offer_outcome(c: &mut Cursor<'_>) -> Option<OfferOutcome> {
    Some(OfferOutcome {
        offer_id: string(c)?,
        decision_id: string(c)?,
        outcome: symbol(c, &Outcome::ALL)?,
        channel: opt_channel(c)?,
    })
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

/// Enough room for most records: a string's length prefix is at most 2
/// bytes below 8 KiB, a long at most 10 bytes.
fn strings_len(items: &[String]) -> usize {
    items.iter().map(|s| s.len() + 2).sum::<usize>() + 2
}

fn cause_len(c: &Cause) -> usize {
    8 + c.event_id.as_ref().map_or(0, String::len) + c.trigger.as_ref().map_or(0, String::len)
}

/// About the length of [`segment_changed`]'s datum, to size its buffer.
pub(crate) fn segment_changed_len(o: &SegmentChanged) -> usize {
    16 + o.id.len()
        + o.customer.len()
        + strings_len(&o.entered)
        + strings_len(&o.exited)
        + strings_len(&o.segments)
        + cause_len(&o.cause)
        + o.rules_version.len()
}

/// About the length of [`next_best_offer`]'s datum, to size its buffer.
pub(crate) fn next_best_offer_len(o: &NextBestOffer) -> usize {
    64 + o.id.len()
        + o.customer.len()
        + o.offer.as_ref().map_or(0, String::len)
        + o.holdout_offer.as_ref().map_or(0, String::len)
        + strings_len(&o.products)
        + cause_len(&o.cause)
        + o.rules_version.len()
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
    use crate::pick::Pick;
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

    #[test]
    fn outcome_symbols_follow_the_schema() {
        let (_, node) = compile_str(RecordType::OfferOutcome.schema_text()).expect("schema");
        let outcomes: Vec<String> = Outcome::ALL.iter().map(|o| o.as_str().to_string()).collect();
        assert_eq!(outcomes, enum_symbols(&node, "outcome"));
        for rt in [RecordType::PurchaseEvent, RecordType::OfferOutcome] {
            let (_, node) = compile_str(rt.schema_text()).expect("schema");
            let channels: Vec<String> = CHANNELS.iter().map(|c| c.as_str().to_string()).collect();
            assert_eq!(channels, enum_symbols(&node, "channel"), "{rt:?}");
        }
    }

    type Decoded = (Option<String>, Option<String>, Timestamp, EventKind);

    fn generic(kind: InputKind, bytes: &[u8]) -> Result<Decoded, crate::DecodeError> {
        static REGISTRY: std::sync::OnceLock<crate::Registry> = std::sync::OnceLock::new();
        let plan = &REGISTRY.get_or_init(crate::Registry::builtin).plain[kind.record_type().index()];
        let mut c = Cursor::new(bytes);
        let v = crate::avro::decode(plan, &mut c).map_err(|e| crate::DecodeError::Undecodable(e.to_string()))?;
        c.finish().map_err(|e| crate::DecodeError::Undecodable(e.to_string()))?;
        let (h, body) = match kind {
            InputKind::Click => crate::records::click(v).map(|(h, x)| (h, EventKind::Click(x)))?,
            InputKind::Purchase => crate::records::purchase(v).map(|(h, x)| (h, EventKind::Purchase(x)))?,
            InputKind::Profile => crate::records::profile(v).map(|(h, x)| (h, EventKind::ProfileUpdate(x)))?,
            InputKind::OfferOutcome => {
                crate::records::offer_outcome(v).map(|(h, x)| (h, EventKind::OfferOutcome(x)))?
            }
        };
        Ok((h.id, h.customer, h.time, body))
    }

    /// What `input` reads, keeping every field; reading only what the
    /// engine reads must answer the same but for those fields, blank.
    fn direct(kind: InputKind, bytes: &[u8]) -> Option<Decoded> {
        let read = input(kind, bytes, true).map(|(h, body)| (h.id, h.customer, h.time, body));
        let lean = input(kind, bytes, false).map(|(h, body)| (h.id, h.customer, h.time, body));
        let mut expected = read.clone();
        if let Some((_, _, _, body)) = &mut expected {
            crate::codec::forget_unread(body);
        }
        // As text: a corrupted price may be NaN, which is not equal to itself.
        assert_eq!(format!("{lean:?}"), format!("{expected:?}"), "engine fields only: {bytes:?}");
        read
    }

    impl Pick {
        /// Absent, empty, ASCII, multi-byte UTF-8 or long.
        fn text(&mut self) -> Option<String> {
            let texts = ["", "a", "p-00042", "Zürich", "東京", "electronics/phones", &"x".repeat(300)];
            let k = self.n(texts.len() + 1);
            texts.get(k).map(|t| t.to_string())
        }

        fn channel(&mut self) -> Option<Channel> {
            if self.n(3) == 0 {
                None
            } else {
                Some(self.of(&CHANNELS))
            }
        }

        fn flag(&mut self) -> Option<bool> {
            self.of(&[None, Some(false), Some(true)])
        }
    }

    fn body(kind: InputKind, pick: &mut Pick) -> EventKind {
        let doubles = [0.0, 19.99, -1.5, f64::MAX, f64::MIN_POSITIVE];
        let ints = [0, 1, -3, i32::MAX, i32::MIN];
        match kind {
            InputKind::Click => EventKind::Click(Click {
                kind: pick.of(&CLICK_KINDS),
                product_id: pick.text(),
                category: pick.text(),
                price: if pick.n(4) == 0 { None } else { Some(pick.of(&doubles)) },
                quantity: if pick.n(4) == 0 { None } else { Some(pick.of(&ints)) },
                page: pick.text(),
                search_query: pick.text(),
                channel: pick.channel(),
                device: pick.text(),
                geo: if pick.n(2) == 0 {
                    Geo::default()
                } else {
                    Geo { country: pick.text(), region: pick.text(), city: pick.text() }
                },
                campaign: pick.text(),
                session_id: pick.text(),
            }),
            InputKind::Purchase => EventKind::Purchase(Purchase {
                order_id: pick.text().unwrap_or_default(),
                items: (0..pick.n(5))
                    .map(|_| LineItem {
                        product_id: pick.text().unwrap_or_default(),
                        category: pick.text(),
                        quantity: pick.of(&ints),
                        unit_price: pick.of(&doubles),
                    })
                    .collect(),
                total: pick.of(&doubles),
                currency: pick.of(&["EUR", "", "zł"]).to_string(),
                channel: pick.channel(),
            }),
            InputKind::Profile => EventKind::ProfileUpdate(ProfileUpdate {
                birth_date: if pick.n(3) == 0 { None } else { date_from_days(pick.of(&[-25_567, 0, 7_000, 20_000])) },
                age: if pick.n(3) == 0 { None } else { Some(pick.of(&[0, 42, i32::MAX as u32])) },
                gender: pick.text(),
                income_band: pick.text(),
                education: pick.text(),
                country: pick.text(),
                region: pick.text(),
                city: pick.text(),
                interests: if pick.n(3) == 0 {
                    None
                } else {
                    Some((0..pick.n(4)).filter_map(|_| pick.text()).collect())
                },
                consent: ConsentUpdate { email: pick.flag(), sms: pick.flag(), push: pick.flag(), web: pick.flag() },
                loyalty_tier: pick.text(),
            }),
            InputKind::OfferOutcome => EventKind::OfferOutcome(OfferOutcome {
                offer_id: pick.text().unwrap_or_default(),
                decision_id: pick.text().unwrap_or_default(),
                outcome: pick.of(&Outcome::ALL),
                channel: pick.channel(),
            }),
        }
    }

    const KINDS: [InputKind; 4] = [InputKind::Click, InputKind::Purchase, InputKind::Profile, InputKind::OfferOutcome];

    /// Deterministic records of every input kind that cover every optional
    /// field absent and present, empty strings and arrays, multi-byte UTF-8,
    /// extreme numbers.
    fn inputs(per_kind: usize) -> Vec<(InputKind, Vec<u8>)> {
        use cohort_core::event::Event;
        let enc = crate::Encoder::new(crate::Format::Avro, std::sync::Arc::new(crate::Registry::builtin()));
        let mut pick = Pick(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::new();
        for kind in KINDS {
            for i in 0..per_kind {
                let ev = Event {
                    id: if i % 7 == 0 { String::new() } else { format!("e-{i}") },
                    customer: if i % 11 == 0 { String::new() } else { format!("c-{:06}", pick.n(1_000_000)) },
                    time: Timestamp([0, 1, -1, i64::MAX, i64::MIN, 1_700_000_000_000][i % 6]),
                    kind: body(kind, &mut pick),
                };
                out.push((kind, enc.encode_event(&ev).expect("encodes").expect("a value")));
            }
        }
        out
    }

    #[test]
    fn reads_every_well_formed_input_as_the_generic_decoder_does() {
        for (kind, bytes) in inputs(600) {
            let g = generic(kind, &bytes).expect("the generic decoder reads what the encoder wrote");
            assert_eq!(direct(kind, &bytes), Some(g), "{kind:?} {bytes:?}");
        }
    }

    #[test]
    fn reads_arrays_in_any_blocking() {
        // Two line items written as a sized block of one, then a block of
        // one, as other Avro writers may do.
        let mut b = Vec::new();
        put_opt_str(&mut b, Some("e-1"));
        put_opt_str(&mut b, Some("c-1"));
        put_long(&mut b, 5);
        put_bytes(&mut b, b"o-1");
        let item = |out: &mut Vec<u8>, p: &str| {
            put_bytes(out, p.as_bytes());
            out.push(0);
            put_long(out, 2);
            out.extend_from_slice(&1.5f64.to_le_bytes());
        };
        let mut first = Vec::new();
        item(&mut first, "p-1");
        put_long(&mut b, -1);
        put_long(&mut b, first.len() as i64);
        b.extend_from_slice(&first);
        put_long(&mut b, 1);
        item(&mut b, "p-2");
        put_long(&mut b, 0);
        b.extend_from_slice(&3.0f64.to_le_bytes());
        put_bytes(&mut b, b"EUR");
        b.push(0);
        let g = generic(InputKind::Purchase, &b).expect("valid");
        let Some((_, _, _, EventKind::Purchase(p))) = direct(InputKind::Purchase, &b) else { panic!("not read") };
        assert_eq!(p.items.iter().map(|i| i.product_id.as_str()).collect::<Vec<_>>(), ["p-1", "p-2"]);
        assert_eq!(Some(g), direct(InputKind::Purchase, &b));
    }

    #[test]
    fn on_corrupted_input_it_agrees_or_steps_aside() {
        for kind in KINDS {
            let (mut agreed, mut stepped_aside) = (0, 0);
            let mut check = |bytes: &[u8]| match direct(kind, bytes) {
                Some(d) => {
                    // Compared as text: a corrupted price may be NaN, which
                    // is not equal to itself.
                    assert_eq!(format!("{:?}", generic(kind, bytes).ok()), format!("{:?}", Some(d)), "{bytes:?}");
                    agreed += 1;
                }
                None => stepped_aside += 1,
            };
            for (_, bytes) in inputs(60).iter().filter(|(k, _)| *k == kind) {
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
            assert!(
                agreed > 1_000 && stepped_aside > 1_000,
                "{kind:?}: agreed {agreed}, stepped aside {stepped_aside}"
            );
        }
    }

    fn generic_bytes(v: &crate::avro::V<'_>, rt: RecordType) -> Vec<u8> {
        let reg = crate::Registry::builtin();
        let mut out = Vec::new();
        crate::avro::encode(reg.node(rt), v, &mut out).expect("encodes");
        out
    }

    #[test]
    fn writes_outputs_byte_for_byte_as_the_generic_encoder() {
        for (sc, nbo) in crate::output::samples(600) {
            let mut direct = Vec::new();
            segment_changed(&sc, &mut direct);
            assert!(
                direct.len() <= segment_changed_len(&sc),
                "size hint {} < {}",
                segment_changed_len(&sc),
                direct.len()
            );
            let generic = generic_bytes(&crate::records::segment_changed_value(&sc), RecordType::SegmentChanged);
            assert_eq!(direct, generic, "{sc:?}");

            let mut direct = Vec::new();
            next_best_offer(&nbo, &mut direct);
            assert!(
                direct.len() <= next_best_offer_len(&nbo),
                "size hint {} < {}",
                next_best_offer_len(&nbo),
                direct.len()
            );
            let generic = generic_bytes(&crate::records::next_best_offer_value(&nbo), RecordType::NextBestOffer);
            assert_eq!(direct, generic, "{nbo:?}");
        }
    }
}
