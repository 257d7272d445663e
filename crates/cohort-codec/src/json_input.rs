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
use crate::records::{click_kind_str, date_from_days, Head};
use crate::schema::InputKind;
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, EventKind, Geo, LineItem, OfferOutcome, Outcome, ProfileUpdate, Purchase,
};
use cohort_core::time::Timestamp;
use std::borrow::Cow;

/// An input record of `kind` in JSON, or `None`: see the module doc.
/// `keep_unread: false` checks the fields the engine does not read
/// ([`crate::UNREAD_CLICK_FIELDS`]) without keeping them.
pub(crate) fn input(kind: InputKind, text: &[u8], keep_unread: bool) -> Option<(Head, EventKind)> {
    // Checked whole, at once; the scanner then only stops at ASCII bytes,
    // so every slice it takes is on a character boundary.
    let text = std::str::from_utf8(text).ok()?;
    let mut sc = Scan { text, pos: 0, depth: 0, keep_unread };
    let decoded = match kind {
        InputKind::Click => record::<ClickFields>(&mut sc)?.finish(),
        InputKind::Purchase => record::<PurchaseFields>(&mut sc)?.finish(),
        InputKind::Profile => record::<ProfileFields>(&mut sc)?.finish(),
        InputKind::OfferOutcome => record::<OutcomeFields>(&mut sc)?.finish(),
    }?;
    sc.end()?;
    Some(decoded)
}

/// Deeper than this is left to the generic reader (serde_json's own limit
/// is 128).
const MAX_DEPTH: u32 = 64;

/// A strict reader of one JSON text (RFC 8259), for the plain case only.
/// Every method answers `None` where serde_json would fail, and also
/// wherever the answer would take more than the plain case to be sure of
/// (a lone surrogate, `-0`, an integer of more than 18 digits): the record
/// is then left to the generic reader. It never accepts what serde_json
/// refuses, and what it reads is what serde_json reads (the tests check it
/// against serde_json).
struct Scan<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
    /// Whether fields the engine does not read are kept (see [`input`]).
    keep_unread: bool,
}

impl<'a> Scan<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not JSON whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.bytes();
        while let Some(&b) = bytes.get(self.pos) {
            // Whitespace is at most a space: one compare for most bytes.
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// Only whitespace left.
    fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// Consumes `{` or `[`.
    fn enter(&mut self, open: u8) -> Option<()> {
        self.eat(open)?;
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Consumes `close` or the separator before the next member: whether a
    /// member follows. `first` is true until the first member is read.
    fn more(&mut self, close: u8, first: &mut bool) -> Option<bool> {
        let b = self.peek()?;
        if b == close {
            self.pos += 1;
            self.depth -= 1;
            return Some(false);
        }
        if !std::mem::take(first) {
            // A separator; what follows it must be a member (no trailing comma).
            if b != b',' {
                return None;
            }
            self.pos += 1;
        }
        Some(true)
    }

    /// The next key of an object and its colon, or `Some(None)` after its `}`.
    fn key(&mut self, first: &mut bool) -> Option<Option<Cow<'a, str>>> {
        if !self.more(b'}', first)? {
            return Some(None);
        }
        // Most keys are `"name":`, nothing to unescape, no space before
        // the colon: read in one step.
        let bytes = self.bytes();
        if bytes.get(self.pos) == Some(&b'"') {
            let end = plain_run(bytes, self.pos + 1);
            if bytes.get(end) == Some(&b'"') && bytes.get(end + 1) == Some(&b':') {
                let key = &self.text[self.pos + 1..end];
                self.pos = end + 2;
                return Some(Some(Cow::Borrowed(key)));
            }
        }
        let key = self.string()?;
        self.eat(b':')?;
        Some(Some(key))
    }

    /// A string, borrowed from the text unless it holds escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        self.string_rest()
    }

    /// A string whose opening quote is consumed.
    fn string_rest(&mut self) -> Option<Cow<'a, str>> {
        let bytes = self.bytes();
        let start = self.pos;
        let i = plain_run(bytes, start);
        match *bytes.get(i)? {
            b'"' => {
                self.pos = i + 1;
                Some(Cow::Borrowed(&self.text[start..i]))
            }
            b'\\' => self.escaped(start, i).map(Cow::Owned),
            _ => None,
        }
    }

    /// The rest of a string whose first escape is at `i`.
    fn escaped(&mut self, start: usize, mut i: usize) -> Option<String> {
        let bytes = self.bytes();
        let mut out = String::with_capacity(i - start + 8);
        out.push_str(&self.text[start..i]);
        loop {
            match *bytes.get(i)? {
                b'"' => {
                    self.pos = i + 1;
                    return Some(out);
                }
                b'\\' => {
                    let (c, len) = match *bytes.get(i + 1)? {
                        b'"' => ('"', 2),
                        b'\\' => ('\\', 2),
                        b'/' => ('/', 2),
                        b'b' => ('\u{8}', 2),
                        b'f' => ('\u{c}', 2),
                        b'n' => ('\n', 2),
                        b'r' => ('\r', 2),
                        b't' => ('\t', 2),
                        b'u' => unicode_escape(&bytes[i..])?,
                        _ => return None,
                    };
                    out.push(c);
                    i += len;
                }
                0..=0x1f => return None,
                _ => {
                    let run = i;
                    i = plain_run(bytes, i);
                    out.push_str(&self.text[run..i]);
                }
            }
        }
    }

    /// A scalar; an object or an array is refused.
    fn scalar(&mut self) -> Option<S<'a>> {
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                self.string_rest().map(S::Str)
            }
            b'n' => self.word(b"null", S::Null),
            b't' => self.word(b"true", S::Bool(true)),
            b'f' => self.word(b"false", S::Bool(false)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn word(&mut self, word: &[u8], s: S<'a>) -> Option<S<'a>> {
        self.bytes()[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
            s
        })
    }

    /// A number as serde_json's `deserialize_any` gives it: an integer as
    /// `U` (or `I` if negative), anything with a fraction or an exponent as
    /// `F`.
    fn number(&mut self) -> Option<S<'a>> {
        let bytes = self.bytes();
        let start = self.pos;
        let negative = bytes[start] == b'-';
        let digits = |mut i: usize| {
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let int_start = start + usize::from(negative);
        let int_end = match *bytes.get(int_start)? {
            b'0' => int_start + 1,
            b'1'..=b'9' => digits(int_start + 1),
            _ => return None,
        };
        let mut end = int_end;
        let mut frac = int_end..int_end;
        if bytes.get(end) == Some(&b'.') {
            let to = digits(end + 1);
            if to == end + 1 {
                return None;
            }
            frac = end + 1..to;
            end = to;
        }
        let mut exp: Option<(bool, std::ops::Range<usize>)> = None;
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let sign = bytes.get(end + 1).copied();
            let from = end + 1 + usize::from(matches!(sign, Some(b'+' | b'-')));
            let to = digits(from);
            if to == from {
                return None;
            }
            exp = Some((sign == Some(b'-'), from..to));
            end = to;
        }
        self.pos = end;
        let int = &bytes[int_start..int_end];
        if frac.is_empty() && exp.is_none() {
            // serde_json reads a longer integer as a float, and `-0` as -0.0.
            if int.len() > 18 {
                return None;
            }
            let value = decimal(int);
            return match (negative, value) {
                (false, v) => Some(S::U(v)),
                (true, 0) => None,
                (true, v) => Some(S::I(-(v as i64))),
            };
        }
        let digit_count = int.len() + frac.len();
        let exp10 = match &exp {
            None => Some(0),
            Some((neg, r)) if r.len() <= 4 => {
                let e = decimal(&bytes[r.clone()]) as i64;
                Some(if *neg { -e } else { e })
            }
            Some(_) => None,
        };
        // Exact when the digits fit in a double's 53 bits and the power of
        // ten is exact: one correctly rounded operation, as serde_json's
        // (with `float_roundtrip`) is. Anything else is read by serde_json.
        if let Some(e) = exp10.filter(|_| digit_count <= 19) {
            let significand =
                decimal(&bytes[int_start..int_end]) * 10u64.pow(frac.len() as u32) + decimal(&bytes[frac.clone()]);
            let e = e - frac.len() as i64;
            if significand < 1 << 53 && (-22..=22).contains(&e) {
                let f = significand as f64;
                let f = if e >= 0 { f * POW10[e as usize] } else { f / POW10[(-e) as usize] };
                return Some(S::F(if negative { -f } else { f }));
            }
        }
        serde_json::from_str::<f64>(&self.text[start..end]).ok().map(S::F)
    }

    /// Any value, checked and dropped.
    fn skip(&mut self) -> Option<()> {
        let mut first = true;
        match self.peek()? {
            b'{' => {
                self.enter(b'{')?;
                while self.key(&mut first)?.is_some() {
                    self.skip()?;
                }
            }
            b'[' => {
                self.enter(b'[')?;
                while self.more(b']', &mut first)? {
                    self.skip()?;
                }
            }
            _ => {
                self.scalar()?;
            }
        }
        Some(())
    }
}

/// The index of the first byte from `i` on that ends a string's plain
/// run: `"`, `\\` or a control character (or the end). Eight bytes at a
/// time: a byte's high bit is set in `found` where it matches, exactly for
/// the first match (a borrow only ever spreads to higher bytes).
pub(crate) fn plain_run(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20) {
        i += 1;
    }
    i
}

/// 10^0 to 10^22, each exact in a double.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// The value of at most 19 ASCII digits.
fn decimal(digits: &[u8]) -> u64 {
    digits.iter().fold(0, |v, d| v * 10 + u64::from(d - b'0'))
}

/// `\uXXXX` at the start of `s`, with its low surrogate if it is a high
/// one: the character and the escape's length. A lone surrogate is refused.
fn unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let hex4 = |at: usize| -> Option<u32> {
        let h = s.get(at..at + 4)?;
        h.iter().try_fold(0, |v, &b| Some(v * 16 + (b as char).to_digit(16)?))
    };
    let unit = hex4(2)?;
    match unit {
        0xD800..=0xDBFF => {
            if s.get(6..8)? != b"\\u" {
                return None;
            }
            let low = hex4(8)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return None;
            }
            Some((char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?, 12))
        }
        0xDC00..=0xDFFF => None,
        _ => Some((char::from_u32(unit)?, 6)),
    }
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

/// A record's fields as they are read, one key at a time.
trait Fields<'a>: Default {
    /// Reads the value of `key` if it is one of the record's fields
    /// (`Some(false)`: an unknown key, whose value the caller skips).
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool>;
}

/// `["null", "string"]` for a field the engine does not read: checked
/// always, kept only if the scanner keeps such fields.
fn unread(sc: &mut Scan<'_>) -> Option<Option<String>> {
    let value = sc.scalar()?;
    if sc.keep_unread {
        return value.opt_string();
    }
    match value {
        S::Null | S::Str(_) => Some(None),
        _ => None,
    }
}

/// Reads the next value as a scalar and converts it.
fn scalar<'a, T>(sc: &mut Scan<'a>, convert: impl FnOnce(S<'a>) -> Option<T>) -> Option<T> {
    convert(sc.scalar()?)
}

/// A record (a JSON object) read into `F`.
fn record<'a, F: Fields<'a>>(sc: &mut Scan<'a>) -> Option<F> {
    sc.enter(b'{')?;
    let mut fields = F::default();
    let mut first = true;
    while let Some(key) = sc.key(&mut first)? {
        if !fields.set(&key, sc)? {
            sc.skip()?;
        }
    }
    Some(fields)
}

/// `["null", record]`: `Some(None)` for null.
fn opt_record<'a, F: Fields<'a>>(sc: &mut Scan<'a>) -> Option<Option<F>> {
    match sc.peek()? {
        b'n' => sc.word(b"null", S::Null).map(|_| None),
        _ => record(sc).map(Some),
    }
}

/// An array (`nullable`: or null, `Some(None)`) of items each read by `item`.
fn array<'a, T>(
    sc: &mut Scan<'a>,
    nullable: bool,
    item: impl Fn(&mut Scan<'a>) -> Option<T>,
) -> Option<Option<Vec<T>>> {
    if nullable && sc.peek()? == b'n' {
        return sc.word(b"null", S::Null).map(|_| None);
    }
    sc.enter(b'[')?;
    let mut items = Vec::new();
    let mut first = true;
    while sc.more(b']', &mut first)? {
        items.push(item(sc)?);
    }
    Some(Some(items))
}

/// A `LineItem` element of a purchase.
fn line_item(sc: &mut Scan<'_>) -> Option<LineItem> {
    record::<LineItemFields>(sc)?.finish()
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
    fn set(&mut self, key: &str, sc: &mut Scan<'_>) -> Option<bool> {
        match key {
            "id" => self.id = scalar(sc, S::opt_string)?,
            "customer" => self.customer = scalar(sc, S::opt_string)?,
            "time" => self.time = Some(scalar(sc, S::long)?),
            _ => return Some(false),
        }
        Some(true)
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

impl<'a> Fields<'a> for ClickFields {
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool> {
        match key {
            "kind" => self.kind = Some(scalar(sc, S::click_kind)?),
            "product_id" => self.product_id = scalar(sc, S::opt_string)?,
            "category" => self.category = scalar(sc, S::opt_string)?,
            "price" => self.price = scalar(sc, S::opt_double)?,
            "quantity" => self.quantity = scalar(sc, S::opt_int)?,
            "page" => self.page = unread(sc)?,
            "search_query" => self.search_query = unread(sc)?,
            "channel" => self.channel = scalar(sc, S::opt_channel)?,
            "device" => self.device = unread(sc)?,
            "geo" => self.geo = opt_record(sc)?,
            "campaign" => self.campaign = unread(sc)?,
            "session_id" => self.session_id = unread(sc)?,
            _ => return self.head.set(key, sc),
        }
        Some(true)
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

impl<'a> Fields<'a> for GeoFields {
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool> {
        match key {
            "country" => self.country = scalar(sc, S::opt_string)?,
            "region" => self.region = scalar(sc, S::opt_string)?,
            "city" => self.city = scalar(sc, S::opt_string)?,
            _ => return Some(false),
        }
        Some(true)
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

impl<'a> Fields<'a> for PurchaseFields {
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool> {
        match key {
            "order_id" => self.order_id = Some(scalar(sc, S::string)?),
            "items" => self.items = array(sc, false, line_item)?,
            "total" => self.total = Some(scalar(sc, S::double)?),
            "currency" => self.currency = Some(scalar(sc, S::string)?),
            "channel" => self.channel = scalar(sc, S::opt_channel)?,
            _ => return self.head.set(key, sc),
        }
        Some(true)
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

impl<'a> Fields<'a> for LineItemFields {
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool> {
        match key {
            "product_id" => self.product_id = Some(scalar(sc, S::string)?),
            "category" => self.category = scalar(sc, S::opt_string)?,
            "quantity" => self.quantity = Some(scalar(sc, S::int)?),
            "unit_price" => self.unit_price = Some(scalar(sc, S::double)?),
            _ => return Some(false),
        }
        Some(true)
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

impl<'a> Fields<'a> for ProfileFields {
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool> {
        match key {
            "birth_date" => self.birth_date = scalar(sc, S::opt_int)?,
            "age" => self.age = scalar(sc, S::opt_int)?,
            "gender" => self.gender = scalar(sc, S::opt_string)?,
            "income_band" => self.income_band = scalar(sc, S::opt_string)?,
            "education" => self.education = scalar(sc, S::opt_string)?,
            "country" => self.country = scalar(sc, S::opt_string)?,
            "region" => self.region = scalar(sc, S::opt_string)?,
            "city" => self.city = scalar(sc, S::opt_string)?,
            "interests" => self.interests = array(sc, true, |sc| scalar(sc, S::string))?,
            "consent" => self.consent = opt_record(sc)?,
            "loyalty_tier" => self.loyalty_tier = scalar(sc, S::opt_string)?,
            _ => return self.head.set(key, sc),
        }
        Some(true)
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

impl<'a> Fields<'a> for ConsentFields {
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool> {
        match key {
            "email" => self.email = scalar(sc, S::opt_bool)?,
            "sms" => self.sms = scalar(sc, S::opt_bool)?,
            "push" => self.push = scalar(sc, S::opt_bool)?,
            "web" => self.web = scalar(sc, S::opt_bool)?,
            _ => return Some(false),
        }
        Some(true)
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

impl<'a> Fields<'a> for OutcomeFields {
    fn set(&mut self, key: &str, sc: &mut Scan<'a>) -> Option<bool> {
        match key {
            "offer_id" => self.offer_id = Some(scalar(sc, S::string)?),
            "decision_id" => self.decision_id = Some(scalar(sc, S::string)?),
            "outcome" => self.outcome = Some(scalar(sc, S::outcome)?),
            "channel" => self.channel = scalar(sc, S::opt_channel)?,
            _ => return self.head.set(key, sc),
        }
        Some(true)
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
    /// Reading only what the engine reads answers alike, those fields blank.
    fn agrees(kind: InputKind, text: &str) -> bool {
        let lean = input(kind, text.as_bytes(), false);
        let Some((head, body)) = input(kind, text.as_bytes(), true) else {
            assert!(lean.is_none(), "engine fields only read what the full read leaves: {text}");
            return false;
        };
        let mut expected = body.clone();
        crate::codec::forget_unread(&mut expected);
        let (lean_head, lean_body) = lean.unwrap_or_else(|| panic!("engine fields only left {text}"));
        assert_eq!((&lean_head.id, &lean_head.customer, lean_head.time), (&head.id, &head.customer, head.time));
        assert_eq!(format!("{lean_body:?}"), format!("{expected:?}"), "engine fields only: {text}");
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

    /// What serde_json's `deserialize_any` makes of a number, as `S` would hold it.
    fn serde_number(text: &str) -> Option<(u8, u64)> {
        let n: serde_json::Number = serde_json::from_str(text).ok()?;
        Some(match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => (0, u),
            (None, Some(i), _) => (1, i as u64),
            (_, _, f) => (2, f?.to_bits()),
        })
    }

    fn scanned_number(text: &str) -> Option<(u8, u64)> {
        let mut sc = Scan { text, pos: 0, depth: 0, keep_unread: true };
        let s = sc.scalar()?;
        sc.end()?;
        Some(match s {
            S::U(u) => (0, u),
            S::I(i) => (1, i as u64),
            S::F(f) => (2, f.to_bits()),
            _ => return None,
        })
    }

    #[test]
    fn numbers_are_read_bit_for_bit_as_serde_json_reads_them() {
        let mut pick = Pick(0x51_7cc1_b727_220a);
        let digits = |pick: &mut Pick, most: usize| -> String {
            let n = pick.n(most);
            (0..n).map(|_| char::from(b'0' + pick.n(10) as u8)).collect()
        };
        let (mut answered, mut runs) = (0, 0);
        for _ in 0..200_000 {
            let mut t = String::new();
            if pick.n(3) == 0 {
                t.push('-');
            }
            let int = format!("{}{}", pick.n(10), digits(&mut pick, 20));
            t.push_str(if pick.n(4) == 0 { int.trim_start_matches('0') } else { &int });
            if pick.n(2) == 0 {
                t.push('.');
                t.push_str(&digits(&mut pick, 20));
            }
            if pick.n(3) == 0 {
                t.push(['e', 'E'][pick.n(2)]);
                t.push_str(["", "+", "-"][pick.n(3)]);
                t.push_str(&digits(&mut pick, 5));
            }
            let (ours, theirs) = (scanned_number(&t), serde_number(&t));
            runs += usize::from(theirs.is_some());
            if let Some(ours) = ours {
                answered += 1;
                assert_eq!(Some(ours), theirs, "{t}");
            }
        }
        for t in [
            "0",
            "-1",
            "1.0",
            "-0.0",
            "0.1",
            "19.99",
            "1e22",
            "1e23",
            "9007199254740993",
            "9007199254740993.0",
            "1e-400",
            "1e400",
            "2.5e-3",
            "123456789012345678",
            "-123456789012345678",
        ] {
            if let Some(ours) = scanned_number(t) {
                assert_eq!(Some(ours), serde_number(t), "{t}");
            } else {
                assert!(matches!(t, "1e400"), "{t} left to the generic reader");
            }
        }
        for t in ["01", "1.", ".5", "-", "+1", "1e", "1e+", "--1", "0x1", "1_0", "NaN", "Infinity"] {
            assert_eq!(scanned_number(t), None, "{t}");
            assert_eq!(serde_number(t), None, "serde_json refuses {t} too");
        }
        assert!(answered * 10 > runs * 9, "answered only {answered} of the {runs} serde_json reads");
    }

    #[test]
    fn strings_escapes_and_odd_layouts_agree_with_the_generic_path() {
        let click = |body: &str| format!(r#"{{"customer": "c-1", "time": 1, "kind": "page_view"{body}}}"#);
        let answered = [
            click(r#", "page": "caf\u00e9 \"quoted\" \\ \/ \b\f\n\r\t""#),
            click(r#", "page": "\ud83d\ude00 and \u00E9 and \u0000""#),
            click(r#", "page": "naïve ünïcödé 😀""#),
            click(r#", "\u0070age": "/escaped-key""#),
            click(r#", "unknown": {"a": [1, 2.5, -3e2, {"b": null}], "c": "\u00e9"}"#),
            click(r#", "unknown": [[[[[]]]]]"#),
            "\t{ \"customer\" :\"c-1\" ,\n\"time\"\r:1,\"kind\":\"page_view\" }\n ".to_string(),
            click(r#", "page": "/a", "page": "/b""#),
            // `{"null": ...}` is not Avro's union form (null is written
            // `null`): a Geo with an unknown key, on every path.
            click(r#", "geo": {"null": 1}"#),
        ];
        for text in &answered {
            assert!(agrees(InputKind::Click, text), "left to the generic path: {text}");
        }
        let refused = [
            click(r#", "page": "\ud83d""#),
            click(r#", "page": "\ude00""#),
            click(r#", "page": "\ud83d\u0041""#),
            click(r#", "page": "\x""#),
            click(r#", "page": "\u00g0""#),
            click(", \"page\": \"tab\tinside\""),
            click(r#", "page": "/a","#),
            click(r#", "unknown": [1,]"#),
            click(r#", "unknown": {"a" 1}"#),
            click(r#", "unknown": nul"#),
            click(r#", "unknown": truex"#),
            click(&format!(r#", "unknown": {}{}"#, "[".repeat(100), "]".repeat(100))),
            r#"{"customer": "c-1" "time": 1, "kind": "page_view"}"#.to_string(),
            r#"{,"customer": "c-1", "time": 1, "kind": "page_view"}"#.to_string(),
        ];
        for text in &refused {
            assert!(!agrees(InputKind::Click, text), "answered {text}");
        }
    }

    #[test]
    fn plain_runs_end_where_a_byte_by_byte_scan_ends_them() {
        let mut pick = Pick(0x2545_f491_4f6c_dd1d);
        let alphabet = [b'a', b'"', b'\\', 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xc3, 0xff, 0x00, 0x5b, 0x5d];
        for _ in 0..50_000 {
            let len = pick.n(40);
            let bytes: Vec<u8> =
                (0..len).map(|_| if pick.n(4) == 0 { pick.of(&alphabet) } else { b'a' + pick.n(26) as u8 }).collect();
            let from = pick.n(len + 1);
            let naive = (from..len).find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f)).unwrap_or(len);
            assert_eq!(plain_run(&bytes, from), naive, "{bytes:?} from {from}");
        }
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
            assert!(input(InputKind::Click, text.as_bytes(), true).is_none(), "{text}");
            assert!(input(InputKind::Click, text.as_bytes(), false).is_none(), "{text}");
        }
        let profile = |extra: &str| format!(r#"{{"customer": "c-1", "time": 1{extra}}}"#);
        assert!(agrees(InputKind::Profile, &profile(r#", "age": 40, "birth_date": 10516"#)));
        for extra in [r#", "age": -1"#, r#", "birth_date": 2147483647"#, r#", "interests": ["a", null]"#] {
            let text = profile(extra);
            assert!(input(InputKind::Profile, text.as_bytes(), true).is_none(), "{text}");
            assert!(generic_event(InputKind::Profile, &text).is_err(), "and the generic path refuses {text}");
        }
    }
}
