//! JSON input records read straight into cohort's types, the JSON twin of
//! [`crate::direct::input`]: no value tree, no schema walk, each field
//! parsed into the event's own field.
//!
//! [`input`] answers only for plain, well-formed input in cohort's schema
//! for the topic (JSON input is always read with cohort's schemas): fields
//! by name in any order, unknown keys skipped, a repeated key's last value
//! kept, `null` or a missing key for an optional field, plain values for
//! `["null", T]` unions, numbers as the generic reader converts them. On
//! anything else (any error, Avro's `{"string": ...}` union form, an
//! unknown enum symbol, an invalid date, a negative age, trailing bytes)
//! it returns `None` and the caller runs the generic reader
//! ([`crate::json_direct`], then [`crate::json`]), which gives the
//! canonical event or error. So it changes speed, never results: the
//! tests below check it against the generic path on loadgen's records and
//! thousands of mutated ones.

use crate::direct::CLICK_KINDS;
use crate::json_direct::Key;
use crate::records::{click_kind_str, date_from_days, Head};
use crate::schema::InputKind;
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, EventKind, Geo, LineItem, OfferOutcome, Outcome, ProfileUpdate, Purchase,
};
use cohort_core::time::Timestamp;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// An input record of `kind` in JSON, or `None`: see the module doc.
pub(crate) fn input(kind: InputKind, text: &[u8]) -> Option<(Head, EventKind)> {
    // Checked whole, at once: read from bytes, serde_json checks each
    // string on its own, which cost more than the check of the whole record.
    let text = std::str::from_utf8(text).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let decoded = match kind {
        InputKind::Click => record::<ClickFields>(&mut de)?.finish(),
        InputKind::Purchase => record::<PurchaseFields>(&mut de)?.finish(),
        InputKind::Profile => record::<ProfileFields>(&mut de)?.finish(),
        InputKind::OfferOutcome => record::<OutcomeFields>(&mut de)?.finish(),
    }?;
    de.end().ok()?;
    Some(decoded)
}

fn record<'de, F: Fields<'de>>(de: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>) -> Option<F> {
    de.deserialize_map(Record::<F>(PhantomData)).ok()
}

fn refuse<E: serde::de::Error>() -> E {
    E::custom("left to the generic reader")
}

/// A JSON scalar as read, before the field's type decides what it means.
enum S<'de> {
    Null,
    Bool(bool),
    I(i64),
    U(u64),
    F(f64),
    Str(Cow<'de, str>),
}

impl<'de> S<'de> {
    /// `["null", "string"]`: `Some(None)` for null.
    fn opt_string(self) -> Option<Option<String>> {
        match self {
            S::Null => Some(None),
            S::Str(s) => Some(Some(s.into_owned())),
            _ => None,
        }
    }

    fn string(self) -> Option<String> {
        self.opt_string()?
    }

    fn long(self) -> Option<i64> {
        match self {
            S::I(x) => Some(x),
            S::U(x) => i64::try_from(x).ok(),
            _ => None,
        }
    }

    fn int(self) -> Option<i32> {
        match self {
            S::I(x) => i32::try_from(x).ok(),
            S::U(x) => i32::try_from(x).ok(),
            _ => None,
        }
    }

    fn opt_int(self) -> Option<Option<i32>> {
        match self {
            S::Null => Some(None),
            s => s.int().map(Some),
        }
    }

    /// As the generic reader: an integer is converted with `as f64`.
    fn double(self) -> Option<f64> {
        match self {
            S::F(x) => Some(x),
            S::I(x) => Some(x as f64),
            S::U(x) => Some(x as f64),
            _ => None,
        }
    }

    fn opt_double(self) -> Option<Option<f64>> {
        match self {
            S::Null => Some(None),
            s => s.double().map(Some),
        }
    }

    fn opt_bool(self) -> Option<Option<bool>> {
        match self {
            S::Null => Some(None),
            S::Bool(b) => Some(Some(b)),
            _ => None,
        }
    }

    /// A click kind by its symbol in the schema (`direct`'s table, by
    /// `records`' names).
    fn click_kind(self) -> Option<ClickKind> {
        match self {
            S::Str(s) => CLICK_KINDS.into_iter().find(|k| click_kind_str(*k) == s),
            _ => None,
        }
    }

    fn outcome(self) -> Option<Outcome> {
        match self {
            S::Str(s) => Outcome::ALL.into_iter().find(|o| o.as_str() == s),
            _ => None,
        }
    }

    fn opt_channel(self) -> Option<Option<Channel>> {
        match self {
            S::Null => Some(None),
            S::Str(s) => Channel::parse(&s).map(Some),
            _ => None,
        }
    }
}

/// Reads a scalar; objects and arrays are refused.
struct Scalar;

impl<'de> DeserializeSeed<'de> for Scalar {
    type Value = S<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar {
    type Value = S<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON scalar")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<S<'de>, E> {
        Ok(S::Null)
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<S<'de>, E> {
        Ok(S::Bool(b))
    }
    fn visit_i64<E: serde::de::Error>(self, x: i64) -> Result<S<'de>, E> {
        Ok(S::I(x))
    }
    fn visit_u64<E: serde::de::Error>(self, x: u64) -> Result<S<'de>, E> {
        Ok(S::U(x))
    }
    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<S<'de>, E> {
        Ok(S::F(x))
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<S<'de>, E> {
        Ok(S::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<S<'de>, E> {
        Ok(S::Str(Cow::Owned(s.to_owned())))
    }
}

/// A record's fields as they are read, one key at a time.
trait Fields<'de>: Default {
    /// Reads the value of `key` if it is one of the record's fields (false:
    /// an unknown key, skipped).
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// Reads `map`'s next value as a scalar and converts it, refusing on `None`.
fn scalar<'de, A: MapAccess<'de>, T>(map: &mut A, convert: impl FnOnce(S<'de>) -> Option<T>) -> Result<T, A::Error> {
    convert(map.next_value_seed(Scalar)?).ok_or_else(refuse)
}

/// A record (a JSON object) read into `F`.
struct Record<F>(PhantomData<F>);

impl<'de, F: Fields<'de>> DeserializeSeed<'de> for Record<F> {
    type Value = F;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<F, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: Fields<'de>> Visitor<'de> for Record<F> {
    type Value = F;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<F, A::Error> {
        let mut fields = F::default();
        while let Some(key) = map.next_key_seed(Key)? {
            if !fields.set(&key, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

/// `["null", record]`: `None` for null.
struct OptRecord<F>(PhantomData<F>);

impl<'de, F: Fields<'de>> DeserializeSeed<'de> for OptRecord<F> {
    type Value = Option<F>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<F>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: Fields<'de>> Visitor<'de> for OptRecord<F> {
    type Value = Option<F>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or a JSON object")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<F>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<F>, A::Error> {
        Record::<F>(PhantomData).visit_map(map).map(Some)
    }
}

/// An array (`nullable`: or null) of items each read by `Item`.
struct Array<Item> {
    nullable: bool,
    item: PhantomData<Item>,
}

impl<Item> Array<Item> {
    fn new(nullable: bool) -> Self {
        Array { nullable, item: PhantomData }
    }
}

/// An array element: a seed that yields the element or refuses.
trait Element<'de>: Sized {
    type Out;
    fn next<A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<Self::Out>, A::Error>;
}

/// A string element of `["null", {"type": "array", "items": "string"}]`.
struct StrItem;

impl<'de> Element<'de> for StrItem {
    type Out = String;
    fn next<A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<String>, A::Error> {
        match seq.next_element_seed(Scalar)? {
            None => Ok(None),
            Some(s) => s.string().map(Some).ok_or_else(refuse),
        }
    }
}

/// A `LineItem` element of a purchase.
struct LineItemElem;

impl<'de> Element<'de> for LineItemElem {
    type Out = LineItem;
    fn next<A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<LineItem>, A::Error> {
        match seq.next_element_seed(Record::<LineItemFields>(PhantomData))? {
            None => Ok(None),
            Some(f) => f.finish().map(Some).ok_or_else(refuse),
        }
    }
}

impl<'de, Item: Element<'de>> DeserializeSeed<'de> for Array<Item> {
    type Value = Option<Vec<Item::Out>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, Item: Element<'de>> Visitor<'de> for Array<Item> {
    type Value = Option<Vec<Item::Out>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        if self.nullable {
            Ok(None)
        } else {
            Err(refuse())
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = Item::next(&mut seq)? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// `id`, `customer` and `time`, common to every input record. A key absent
/// leaves an optional field at its default, null.
#[derive(Default)]
struct HeadFields {
    id: Option<String>,
    customer: Option<String>,
    time: Option<i64>,
}

impl HeadFields {
    fn set<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "id" => self.id = scalar(map, S::opt_string)?,
            "customer" => self.customer = scalar(map, S::opt_string)?,
            "time" => self.time = Some(scalar(map, S::long)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// As the generic mapping: an empty id or customer counts as absent.
    fn finish(self) -> Option<Head> {
        Some(Head {
            id: self.id.filter(|s| !s.is_empty()),
            customer: self.customer.filter(|s| !s.is_empty()),
            time: Timestamp(self.time?),
        })
    }
}

#[derive(Default)]
struct ClickFields {
    head: HeadFields,
    kind: Option<ClickKind>,
    product_id: Option<String>,
    category: Option<String>,
    price: Option<f64>,
    quantity: Option<i32>,
    page: Option<String>,
    search_query: Option<String>,
    channel: Option<Channel>,
    device: Option<String>,
    geo: Option<GeoFields>,
    campaign: Option<String>,
    session_id: Option<String>,
}

impl<'de> Fields<'de> for ClickFields {
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "kind" => self.kind = Some(scalar(map, S::click_kind)?),
            "product_id" => self.product_id = scalar(map, S::opt_string)?,
            "category" => self.category = scalar(map, S::opt_string)?,
            "price" => self.price = scalar(map, S::opt_double)?,
            "quantity" => self.quantity = scalar(map, S::opt_int)?,
            "page" => self.page = scalar(map, S::opt_string)?,
            "search_query" => self.search_query = scalar(map, S::opt_string)?,
            "channel" => self.channel = scalar(map, S::opt_channel)?,
            "device" => self.device = scalar(map, S::opt_string)?,
            "geo" => self.geo = map.next_value_seed(OptRecord::<GeoFields>(PhantomData))?,
            "campaign" => self.campaign = scalar(map, S::opt_string)?,
            "session_id" => self.session_id = scalar(map, S::opt_string)?,
            _ => return self.head.set(key, map),
        }
        Ok(true)
    }
}

impl ClickFields {
    fn finish(self) -> Option<(Head, EventKind)> {
        let geo = self.geo.map_or_else(Geo::default, |g| Geo { country: g.country, region: g.region, city: g.city });
        let click = Click {
            kind: self.kind?,
            product_id: self.product_id,
            category: self.category,
            price: self.price,
            quantity: self.quantity,
            page: self.page,
            search_query: self.search_query,
            channel: self.channel,
            device: self.device,
            geo,
            campaign: self.campaign,
            session_id: self.session_id,
        };
        Some((self.head.finish()?, EventKind::Click(click)))
    }
}

#[derive(Default)]
struct GeoFields {
    country: Option<String>,
    region: Option<String>,
    city: Option<String>,
}

impl<'de> Fields<'de> for GeoFields {
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "country" => self.country = scalar(map, S::opt_string)?,
            "region" => self.region = scalar(map, S::opt_string)?,
            "city" => self.city = scalar(map, S::opt_string)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Default)]
struct PurchaseFields {
    head: HeadFields,
    order_id: Option<String>,
    items: Option<Vec<LineItem>>,
    total: Option<f64>,
    currency: Option<String>,
    channel: Option<Channel>,
}

impl<'de> Fields<'de> for PurchaseFields {
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "order_id" => self.order_id = Some(scalar(map, S::string)?),
            "items" => self.items = Some(map.next_value_seed(Array::<LineItemElem>::new(false))?.ok_or_else(refuse)?),
            "total" => self.total = Some(scalar(map, S::double)?),
            "currency" => self.currency = Some(scalar(map, S::string)?),
            "channel" => self.channel = scalar(map, S::opt_channel)?,
            _ => return self.head.set(key, map),
        }
        Ok(true)
    }
}

impl PurchaseFields {
    fn finish(self) -> Option<(Head, EventKind)> {
        let purchase = Purchase {
            order_id: self.order_id?,
            items: self.items?,
            total: self.total?,
            currency: self.currency?,
            channel: self.channel,
        };
        Some((self.head.finish()?, EventKind::Purchase(purchase)))
    }
}

#[derive(Default)]
struct LineItemFields {
    product_id: Option<String>,
    category: Option<String>,
    quantity: Option<i32>,
    unit_price: Option<f64>,
}

impl<'de> Fields<'de> for LineItemFields {
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "product_id" => self.product_id = Some(scalar(map, S::string)?),
            "category" => self.category = scalar(map, S::opt_string)?,
            "quantity" => self.quantity = Some(scalar(map, S::int)?),
            "unit_price" => self.unit_price = Some(scalar(map, S::double)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl LineItemFields {
    fn finish(self) -> Option<LineItem> {
        Some(LineItem {
            product_id: self.product_id?,
            category: self.category,
            quantity: self.quantity?,
            unit_price: self.unit_price?,
        })
    }
}

#[derive(Default)]
struct ProfileFields {
    head: HeadFields,
    birth_date: Option<i32>,
    age: Option<i32>,
    gender: Option<String>,
    income_band: Option<String>,
    education: Option<String>,
    country: Option<String>,
    region: Option<String>,
    city: Option<String>,
    interests: Option<Vec<String>>,
    consent: Option<ConsentFields>,
    loyalty_tier: Option<String>,
}

impl<'de> Fields<'de> for ProfileFields {
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "birth_date" => self.birth_date = scalar(map, S::opt_int)?,
            "age" => self.age = scalar(map, S::opt_int)?,
            "gender" => self.gender = scalar(map, S::opt_string)?,
            "income_band" => self.income_band = scalar(map, S::opt_string)?,
            "education" => self.education = scalar(map, S::opt_string)?,
            "country" => self.country = scalar(map, S::opt_string)?,
            "region" => self.region = scalar(map, S::opt_string)?,
            "city" => self.city = scalar(map, S::opt_string)?,
            "interests" => self.interests = map.next_value_seed(Array::<StrItem>::new(true))?,
            "consent" => self.consent = map.next_value_seed(OptRecord::<ConsentFields>(PhantomData))?,
            "loyalty_tier" => self.loyalty_tier = scalar(map, S::opt_string)?,
            _ => return self.head.set(key, map),
        }
        Ok(true)
    }
}

impl ProfileFields {
    fn finish(self) -> Option<(Head, EventKind)> {
        let birth_date = match self.birth_date {
            None => None,
            Some(days) => Some(date_from_days(days)?),
        };
        let age = match self.age {
            None => None,
            Some(a) => Some(u32::try_from(a).ok()?),
        };
        let consent = self.consent.map_or_else(ConsentUpdate::default, |c| ConsentUpdate {
            email: c.email,
            sms: c.sms,
            push: c.push,
            web: c.web,
        });
        let profile = ProfileUpdate {
            birth_date,
            age,
            gender: self.gender,
            income_band: self.income_band,
            education: self.education,
            country: self.country,
            region: self.region,
            city: self.city,
            interests: self.interests,
            consent,
            loyalty_tier: self.loyalty_tier,
        };
        Some((self.head.finish()?, EventKind::ProfileUpdate(profile)))
    }
}

#[derive(Default)]
struct ConsentFields {
    email: Option<bool>,
    sms: Option<bool>,
    push: Option<bool>,
    web: Option<bool>,
}

impl<'de> Fields<'de> for ConsentFields {
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "email" => self.email = scalar(map, S::opt_bool)?,
            "sms" => self.sms = scalar(map, S::opt_bool)?,
            "push" => self.push = scalar(map, S::opt_bool)?,
            "web" => self.web = scalar(map, S::opt_bool)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Default)]
struct OutcomeFields {
    head: HeadFields,
    offer_id: Option<String>,
    decision_id: Option<String>,
    outcome: Option<Outcome>,
    channel: Option<Channel>,
}

impl<'de> Fields<'de> for OutcomeFields {
    fn set<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "offer_id" => self.offer_id = Some(scalar(map, S::string)?),
            "decision_id" => self.decision_id = Some(scalar(map, S::string)?),
            "outcome" => self.outcome = Some(scalar(map, S::outcome)?),
            "channel" => self.channel = scalar(map, S::opt_channel)?,
            _ => return self.head.set(key, map),
        }
        Ok(true)
    }
}

impl OutcomeFields {
    fn finish(self) -> Option<(Head, EventKind)> {
        let outcome = OfferOutcome {
            offer_id: self.offer_id?,
            decision_id: self.decision_id?,
            outcome: self.outcome?,
            channel: self.channel,
        };
        Some((self.head.finish()?, EventKind::OfferOutcome(outcome)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_direct::tests::{generic, mutated, node, DOCS};
    use crate::pick::Pick;
    use crate::records;
    use crate::schema::RecordType;

    fn kind_of(rt: RecordType) -> InputKind {
        InputKind::ALL.into_iter().find(|k| k.record_type() == rt).expect("an input record")
    }

    /// What the generic path makes of `text`: the schema's value, then the
    /// mapping to cohort's types.
    fn generic_event(kind: InputKind, text: &str) -> Result<(Head, EventKind), String> {
        let v = generic(&node(kind.record_type()), text.as_bytes())?;
        let mapped = match kind {
            InputKind::Click => records::click(v).map(|(h, c)| (h, EventKind::Click(c))),
            InputKind::Purchase => records::purchase(v).map(|(h, p)| (h, EventKind::Purchase(p))),
            InputKind::Profile => records::profile(v).map(|(h, p)| (h, EventKind::ProfileUpdate(p))),
            InputKind::OfferOutcome => records::offer_outcome(v).map(|(h, o)| (h, EventKind::OfferOutcome(o))),
        };
        mapped.map_err(|e| e.to_string())
    }

    /// `input` answers the generic path's event or nothing, never another
    /// event, and never an event where the generic path has an error.
    /// Returns whether it answered.
    fn agrees(kind: InputKind, text: &str) -> bool {
        let Some((head, body)) = input(kind, text.as_bytes()) else { return false };
        match generic_event(kind, text) {
            Ok((h, b)) => {
                assert_eq!((&head.id, &head.customer, head.time), (&h.id, &h.customer, h.time), "head of {text}");
                assert_eq!(body, b, "different events for {text}");
                true
            }
            Err(e) => panic!("read {text} as {body:?}; the generic path: {e}"),
        }
    }

    #[test]
    fn loadgen_records_are_read_directly_and_alike() {
        for (rt, doc) in DOCS {
            assert!(agrees(kind_of(rt), doc), "left a plain {rt:?} to the generic path: {doc}");
        }
    }

    #[test]
    fn mutated_records_get_the_generic_paths_event_or_none() {
        let mut pick = Pick(0x9e37_79b9_7f4a_7c15);
        let (mut answered, mut runs) = (0, 0);
        for (rt, doc) in DOCS {
            for _ in 0..3_000 {
                let text = mutated(doc, &mut pick);
                runs += 1;
                answered += usize::from(agrees(kind_of(rt), &text));
            }
        }
        assert!(answered * 4 > runs, "answered only {answered} of {runs}");
    }

    #[test]
    fn what_the_generic_path_decides_is_left_to_it() {
        let click = |extra: &str| format!(r#"{{"customer": "c-1", "time": 1, "kind": "page_view"{extra}}}"#);
        assert!(agrees(InputKind::Click, &click("")), "a plain click");
        for text in [
            click(r#", "device": {"string": "desktop"}"#),
            click(r#", "channel": "carrier_pigeon""#),
            click(r#", "quantity": 2.0"#),
            click("} x"),
            r#"{"customer": "c-1", "kind": "page_view"}"#.to_string(),
            r#"{"customer": "c-1", "time": 1, "kind": "jump"}"#.to_string(),
            "[]".to_string(),
            "null".to_string(),
        ] {
            assert!(input(InputKind::Click, text.as_bytes()).is_none(), "{text}");
        }
        let profile = |extra: &str| format!(r#"{{"customer": "c-1", "time": 1{extra}}}"#);
        assert!(agrees(InputKind::Profile, &profile(r#", "age": 40, "birth_date": 10516"#)));
        for extra in [r#", "age": -1"#, r#", "birth_date": 2147483647"#, r#", "interests": ["a", null]"#] {
            let text = profile(extra);
            assert!(input(InputKind::Profile, text.as_bytes()).is_none(), "{text}");
            assert!(generic_event(InputKind::Profile, &text).is_err(), "and the generic path refuses {text}");
        }
    }
}
