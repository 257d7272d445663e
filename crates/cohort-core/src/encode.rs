//! Versioned compact binary encoding of [`CustomerState`].
//!
//! The store persists these bytes in RocksDB and on the compacted changelog
//! topic, so a record written by one release must be read correctly by the
//! next, or refused: [`decode`] checks the leading format version and returns
//! [`DecodeError::UnsupportedVersion`] for one it does not know, never a
//! misread state.
//!
//! Format version 1, after the version byte, in this order (`uv` = unsigned
//! LEB128 varint, `sv` = zig-zag signed varint, `str` = `uv` length + UTF-8,
//! `opt<x>` = one byte 0/1 then `x`, `f64` = 8 bytes little-endian):
//!
//! ```text
//! profile   opt<sv year, u8 month, u8 day> birth date, opt<uv> declared age,
//!           opt<str> gender, income band, education, country, region, city,
//!           uv n + n str interests, u8 consent (2 bits per email/sms/push/web:
//!           0 unknown, 1 no, 2 yes), opt<str> loyalty tier
//! activity  opt<sv> first seen, opt<sv> last seen
//! counters  uv n buckets, each: sv day (first) or uv day delta >= 1,
//!           u8 mask of non-zero counters, sv per set bit; then 5 sv lifetime
//! purchases opt<sv> first, opt<sv> last
//! cart      uv n, each: str product, opt<str> category, uv qty, sv cents;
//!           opt<sv> last added, u8 abandon fired
//! affinity  sv as-of, f64 total, uv n, each: str category, f64 weight
//! purchased uv n + n str
//! offers    uv n, each: 16 bytes LE decision, str offer, sv time, u8 channel,
//!           u8 flags (0x80 holdout | outcome bits)
//! segments  uv n, each: str name, sv since (sorted by name); then
//!           opt<u64 LE rules fingerprint (not 0), uv n + n u8 member indexes>
//! evaluated opt<sv>
//! recent    uv n + n × 8 bytes LE
//! ```
//!
//! Format version 2 (exact windows, incarnations) differs from version 1 in
//! two places:
//!
//! ```text
//! counters  for each counter (orders, spend cents, page views, product
//!           views, sessions): uv n exact contributions (at most 128), each:
//!           sv time (first) or uv time delta >= 1, sv amount; then the
//!           folded day buckets and the lifetime totals as in version 1
//! ...       (as version 1)
//! recent    uv n + n × 8 bytes LE
//! incarnation 8 bytes LE (0: none yet)
//! ```
//!
//! A version-1 record still decodes: its day buckets become folded
//! contributions (day precision, see [`crate::window`]) and its incarnation
//! is 0; it is written back as version 2. To change the format, add the
//! next version next to these and keep decoding them.

use crate::event::{Channel, Date};
use crate::hash::fast64;
use crate::rules::SegmentSet;
use crate::state::{
    CartLine, Consent, CustomerState, Membership, OfferSend, RecentEvents, SegmentBits, MAX_CART_LINES, MAX_CATEGORIES,
    MAX_INTERESTS, MAX_OFFER_SENDS, MAX_PURCHASED, RECENT_EVENTS,
};
use crate::time::Timestamp;
use crate::window::{Counter, DayBucket, COUNTERS, MAX_EXACT};
use thiserror::Error;

/// The format [`encode`] writes.
pub const FORMAT_VERSION: u8 = 2;

/// Why bytes could not be read as a state. Every variant means the record
/// is unusable by this build: the store should stop on it (a newer format
/// means a downgrade; corruption means a bug or a broken disk), not drop it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("empty state record")]
    Empty,
    #[error("state format version {found} is not supported (this build reads up to {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("state record truncated")]
    Truncated,
    #[error("state record invalid: {0}")]
    Invalid(&'static str),
    #[error("state record has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes `state` in the current format.
pub fn encode(state: &CustomerState) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint(state));
    encode_into(state, &mut out);
    out
}

/// Encodes `state` into `out` (cleared first), reusing its allocation.
pub fn encode_into(state: &CustomerState, out: &mut Vec<u8>) {
    out.clear();
    let w = &mut Writer(out);
    w.u8(FORMAT_VERSION);
    // profile
    let p = &state.profile;
    match p.birth_date {
        Some(d) => {
            w.u8(1);
            w.sv(i64::from(d.year));
            w.u8(d.month);
            w.u8(d.day);
        }
        None => w.u8(0),
    }
    match p.declared_age {
        Some(a) => {
            w.u8(1);
            w.uv(u64::from(a));
        }
        None => w.u8(0),
    }
    for s in [&p.gender, &p.income_band, &p.education, &p.country, &p.region, &p.city] {
        w.opt_str(s.as_deref());
    }
    w.uv(p.interests.len() as u64);
    for i in &p.interests {
        w.str(i);
    }
    w.u8(consent_byte(&p.consent));
    w.opt_str(p.loyalty_tier.as_deref());
    // activity
    w.opt_ts(state.first_seen);
    w.opt_ts(state.last_seen);
    // counters: exact contributions per counter, then folded days
    for c in Counter::ALL {
        w.uv(state.counters.exact_len(c) as u64);
        let mut prev: Option<i64> = None;
        for (t, amount) in state.counters.exact(c) {
            let t = t.as_millis();
            match prev {
                None => w.sv(t),
                Some(p) => w.uv(t.wrapping_sub(p) as u64),
            }
            prev = Some(t);
            w.sv(amount);
        }
    }
    let buckets = state.counters.folded();
    w.uv(buckets.len() as u64);
    let mut prev: Option<i32> = None;
    for b in buckets {
        match prev {
            None => w.sv(i64::from(b.day)),
            Some(p) => w.uv((i64::from(b.day) - i64::from(p)) as u64),
        }
        prev = Some(b.day);
        let mut mask = 0u8;
        for (i, c) in b.counts.iter().enumerate() {
            if *c != 0 {
                mask |= 1 << i;
            }
        }
        w.u8(mask);
        for c in b.counts.iter().filter(|c| **c != 0) {
            w.sv(*c);
        }
    }
    for c in state.counters.lifetime_totals() {
        w.sv(c);
    }
    // purchases
    w.opt_ts(state.first_purchase);
    w.opt_ts(state.last_purchase);
    // cart
    w.uv(state.cart.lines.len() as u64);
    for l in &state.cart.lines {
        w.str(&l.product_id);
        w.opt_str(l.category.as_deref());
        w.uv(u64::from(l.quantity));
        w.sv(l.unit_price_cents);
    }
    w.opt_ts(state.cart.last_added);
    w.u8(u8::from(state.cart.abandon_fired));
    // affinities
    let a = &state.affinities;
    w.sv(a.as_of.as_millis());
    w.f64(a.total);
    w.uv(a.weights().len() as u64);
    for (c, x) in a.weights() {
        w.str(c);
        w.f64(x);
    }
    // purchased
    w.uv(state.purchased.len() as u64);
    for s in &state.purchased {
        w.str(s);
    }
    // offers
    w.uv(state.offers.len() as u64);
    for s in &state.offers {
        w.0.extend_from_slice(&s.decision.to_le_bytes());
        w.str(&s.offer);
        w.sv(s.time.as_millis());
        w.u8(channel_byte(s.channel));
        w.u8(s.outcomes & 0x7f | if s.holdout { 0x80 } else { 0 });
    }
    // segments
    w.uv(state.segments.len() as u64);
    for m in &state.segments {
        w.str(&m.segment);
        w.sv(m.since.as_millis());
    }
    if state.segment_bits.rules == 0 {
        w.u8(0);
    } else {
        w.u8(1);
        w.0.extend_from_slice(&state.segment_bits.rules.to_le_bytes());
        // At most 256 segments: a count and one byte per member index.
        w.uv(state.segment_bits.set.len() as u64);
        for i in state.segment_bits.set.iter() {
            w.u8(i as u8);
        }
    }
    w.opt_ts(state.evaluated_at);
    w.uv(state.recent_events.as_slice().len() as u64);
    for h in state.recent_events.as_slice() {
        w.0.extend_from_slice(&h.to_le_bytes());
    }
    w.0.extend_from_slice(&state.incarnation.to_le_bytes());
}

/// An upper bound of the encoded size for most states (so that [`encode`]
/// allocates once): fixed parts and varints at their widest, plus the
/// strings.
fn size_hint(state: &CustomerState) -> usize {
    let p = &state.profile;
    let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 10);
    let strings = [&p.gender, &p.income_band, &p.education, &p.country, &p.region, &p.city, &p.loyalty_tier]
        .into_iter()
        .map(opt)
        .sum::<usize>()
        + p.interests.iter().map(|s| s.len() + 10).sum::<usize>()
        + state.cart.lines.iter().map(|l| l.product_id.len() + opt(&l.category) + 30).sum::<usize>()
        + state.affinities.weights().map(|(c, _)| c.len() + 18).sum::<usize>()
        + state.purchased.iter().map(|s| s.len() + 10).sum::<usize>()
        + state.offers.iter().map(|o| o.offer.len() + 40).sum::<usize>()
        + state.segments.iter().map(|m| m.segment.len() + 20).sum::<usize>();
    let exact: usize = Counter::ALL.iter().map(|&c| state.counters.exact_len(c)).sum();
    let buckets = state.counters.folded().len() * (11 + 5 * 10) + exact * 20;
    200 + strings + buckets + state.segment_bits.set.len() + 8 * state.recent_events.as_slice().len()
}

/// Decodes bytes written by [`encode`] (of any supported format version).
pub fn decode(bytes: &[u8]) -> Result<CustomerState, DecodeError> {
    let mut state = CustomerState::default();
    decode_into(bytes, &mut state)?;
    Ok(state)
}

/// [`decode`] into `state`, overwriting all of it and keeping its
/// allocations (strings, lists, windows) where the new contents fit: for
/// a caller that decodes state after state and keeps few of them (the
/// re-evaluation's judgement). On an error `state` holds parts of both
/// and is fit only for another `decode_into`.
pub fn decode_into(bytes: &[u8], state: &mut CustomerState) -> Result<(), DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match version {
        1 | 2 => {
            let mut r = Reader { buf: rest, pos: 0 };
            decode_body(&mut r, version, state)?;
            if r.pos != r.buf.len() {
                return Err(DecodeError::TrailingBytes(r.buf.len() - r.pos));
            }
            Ok(())
        }
        found => Err(DecodeError::UnsupportedVersion { found, supported: FORMAT_VERSION }),
    }
}

/// Formats 1 and 2 (`version`): see the module doc for what 2 added.
/// Every field of `st` is written.
fn decode_body(r: &mut Reader<'_>, version: u8, st: &mut CustomerState) -> Result<(), DecodeError> {
    let p = &mut st.profile;
    p.birth_date = None;
    if r.flag()? {
        let year = i32::try_from(r.sv()?).map_err(|_| DecodeError::Invalid("birth year"))?;
        let d = Date { year, month: r.u8()?, day: r.u8()? };
        if !d.is_valid() {
            return Err(DecodeError::Invalid("birth date"));
        }
        p.birth_date = Some(d);
    }
    p.declared_age = None;
    if r.flag()? {
        p.declared_age = Some(u32::try_from(r.uv()?).map_err(|_| DecodeError::Invalid("age"))?);
    }
    r.opt_str_into(&mut p.gender)?;
    r.opt_str_into(&mut p.income_band)?;
    r.opt_str_into(&mut p.education)?;
    r.opt_str_into(&mut p.country)?;
    r.opt_str_into(&mut p.region)?;
    r.opt_str_into(&mut p.city)?;
    let n = r.len(MAX_INTERESTS)?;
    r.strings_into(&mut p.interests, n)?;
    p.consent = consent_from(r.u8()?)?;
    r.opt_str_into(&mut p.loyalty_tier)?;
    st.first_seen = r.opt_ts()?;
    st.last_seen = r.opt_ts()?;
    // counters
    for c in 0..COUNTERS {
        let n = if version >= 2 { r.len(MAX_EXACT)? } else { 0 };
        let mut prev: Option<i64> = None;
        st.counters.decode_exact(c, n, || {
            let t = match prev {
                None => r.sv()?,
                Some(p) => {
                    let delta = r.uv()?;
                    if delta == 0 || delta > i64::MAX as u64 {
                        return Err(DecodeError::Invalid("contribution time order"));
                    }
                    p.checked_add(delta as i64).ok_or(DecodeError::Invalid("contribution time"))?
                }
            };
            prev = Some(t);
            Ok((t, r.sv()?))
        })?;
    }
    // Days: in format 1 the only windowed data, read as folded.
    let n = r.len(crate::window::KEPT_DAYS as usize + 1)?;
    let buckets = st.counters.folded_mut();
    buckets.clear();
    buckets.reserve_exact(n);
    let mut prev: Option<i64> = None;
    for _ in 0..n {
        let day = match prev {
            None => r.sv()?,
            Some(p) => {
                let delta = r.uv()?;
                if delta == 0 || delta > 1 << 32 {
                    return Err(DecodeError::Invalid("bucket day order"));
                }
                p + delta as i64
            }
        };
        let day = i32::try_from(day).map_err(|_| DecodeError::Invalid("bucket day"))?;
        prev = Some(i64::from(day));
        let mask = r.u8()?;
        if mask >> COUNTERS != 0 {
            return Err(DecodeError::Invalid("counter mask"));
        }
        let mut counts = [0i64; COUNTERS];
        for (i, c) in counts.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *c = r.sv()?;
            }
        }
        buckets.push(DayBucket { day, counts });
    }
    for c in st.counters.lifetime_mut() {
        *c = r.sv()?;
    }
    st.first_purchase = r.opt_ts()?;
    st.last_purchase = r.opt_ts()?;
    // cart
    let n = r.len(MAX_CART_LINES)?;
    let lines = &mut st.cart.lines;
    lines.truncate(n);
    lines.reserve_exact(n - lines.len());
    for i in 0..n {
        if i == lines.len() {
            lines.push(CartLine { product_id: String::new(), category: None, quantity: 0, unit_price_cents: 0 });
        }
        let line = &mut lines[i];
        r.str_into(&mut line.product_id)?;
        r.opt_str_into(&mut line.category)?;
        line.quantity = u32::try_from(r.uv()?).map_err(|_| DecodeError::Invalid("cart quantity"))?;
        line.unit_price_cents = r.sv()?;
    }
    st.cart.last_added = r.opt_ts()?;
    st.cart.abandon_fired = r.flag()?;
    // affinities
    st.affinities.as_of = Timestamp(r.sv()?);
    st.affinities.total = r.f64()?;
    let n = r.len(MAX_CATEGORIES)?;
    let (entries, names) = st.affinities.parts_mut();
    entries.clear();
    entries.reserve_exact(n);
    r.strings_into_with(names, n, |name, r| {
        entries.push((fast64(name.as_bytes()), r.f64()?));
        Ok(())
    })?;
    let n = r.len(MAX_PURCHASED)?;
    r.strings_into(&mut st.purchased, n)?;
    // offers
    let n = r.len(MAX_OFFER_SENDS)?;
    let offers = &mut st.offers;
    offers.truncate(n);
    offers.reserve_exact(n - offers.len());
    for i in 0..n {
        let decision = u128::from_le_bytes(r.array::<16>()?);
        if i == offers.len() {
            offers.push(OfferSend {
                decision,
                offer: String::new(),
                time: Timestamp(0),
                channel: Channel::Other,
                holdout: false,
                outcomes: 0,
            });
        }
        let send = &mut offers[i];
        send.decision = decision;
        r.str_into(&mut send.offer)?;
        send.time = Timestamp(r.sv()?);
        send.channel = channel_from(r.u8()?)?;
        let flags = r.u8()?;
        send.holdout = flags & 0x80 != 0;
        send.outcomes = flags & 0x7f;
    }
    // segments
    let n = r.len(usize::MAX)?;
    let segments = &mut st.segments;
    segments.truncate(n);
    segments.reserve_exact(n - segments.len());
    for i in 0..n {
        if i == segments.len() {
            segments.push(Membership { segment: String::new(), since: Timestamp(0) });
        }
        r.str_into(&mut segments[i].segment)?;
        segments[i].since = Timestamp(r.sv()?);
        if i > 0 && segments[i - 1].segment >= segments[i].segment {
            return Err(DecodeError::Invalid("segment order"));
        }
    }
    st.segment_bits = SegmentBits::default();
    if r.flag()? {
        st.segment_bits.rules = u64::from_le_bytes(r.array::<8>()?);
        if st.segment_bits.rules == 0 {
            return Err(DecodeError::Invalid("segment bitset fingerprint"));
        }
        let n = r.len(crate::rules::MAX_SEGMENTS)?;
        let mut set = SegmentSet::new();
        for _ in 0..n {
            set.insert(usize::from(r.u8()?));
        }
        st.segment_bits.set = set;
    }
    st.evaluated_at = r.opt_ts()?;
    let n = r.len(RECENT_EVENTS)?;
    st.recent_events = RecentEvents::default();
    for _ in 0..n {
        st.recent_events.push(u64::from_le_bytes(r.array::<8>()?));
    }
    st.incarnation = if version >= 2 { u64::from_le_bytes(r.array::<8>()?) } else { 0 };
    Ok(())
}

fn consent_bits(v: Option<bool>) -> u8 {
    match v {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

fn consent_byte(c: &Consent) -> u8 {
    consent_bits(c.email) | consent_bits(c.sms) << 2 | consent_bits(c.push) << 4 | consent_bits(c.web) << 6
}

fn consent_from(b: u8) -> Result<Consent, DecodeError> {
    let f = |x: u8| match x & 3 {
        0 => Ok(None),
        1 => Ok(Some(false)),
        2 => Ok(Some(true)),
        _ => Err(DecodeError::Invalid("consent")),
    };
    Ok(Consent { email: f(b)?, sms: f(b >> 2)?, push: f(b >> 4)?, web: f(b >> 6)? })
}

fn channel_byte(c: Channel) -> u8 {
    match c {
        Channel::Web => 0,
        Channel::App => 1,
        Channel::Email => 2,
        Channel::Sms => 3,
        Channel::Push => 4,
        Channel::Store => 5,
        Channel::Other => 6,
    }
}

fn channel_from(b: u8) -> Result<Channel, DecodeError> {
    Channel::ALL.get(usize::from(b)).copied().ok_or(DecodeError::Invalid("channel"))
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }
    fn uv(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn sv(&mut self, v: i64) {
        self.uv(((v << 1) ^ (v >> 63)) as u64);
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.uv(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn opt_ts(&mut self, t: Option<Timestamp>) {
        match t {
            Some(t) => {
                self.u8(1);
                self.sv(t.as_millis());
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("option tag")),
        }
    }
    fn uv(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError::Invalid("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint too long"))
    }
    fn sv(&mut self) -> Result<i64, DecodeError> {
        let u = self.uv()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        let v = f64::from_le_bytes(self.array::<8>()?);
        if !v.is_finite() {
            return Err(DecodeError::Invalid("non-finite number"));
        }
        Ok(v)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos.checked_add(N).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// A collection length, refused above `max` or above what the remaining
    /// bytes could hold (so corrupt input cannot make us allocate gigabytes).
    fn len(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.uv()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Invalid("length"))?;
        if n > max || n > self.buf.len() - self.pos {
            return Err(DecodeError::Invalid("length"));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.len(usize::MAX)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        std::str::from_utf8(s).map(str::to_owned).map_err(|_| DecodeError::Invalid("utf-8"))
    }
    /// A string into `s`, keeping its allocation if it fits.
    fn str_into(&mut self, s: &mut String) -> Result<(), DecodeError> {
        let n = self.len(usize::MAX)?;
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s.clear();
        s.push_str(std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid("utf-8"))?);
        Ok(())
    }
    /// An optional string into `s`, keeping its allocation if it has one.
    fn opt_str_into(&mut self, s: &mut Option<String>) -> Result<(), DecodeError> {
        match (self.flag()?, s.as_mut()) {
            (true, Some(s)) => self.str_into(s),
            (true, None) => {
                *s = Some(self.string()?);
                Ok(())
            }
            (false, _) => {
                *s = None;
                Ok(())
            }
        }
    }
    /// `n` strings (`n` already checked by [`Reader::len`]) into `v`, reusing
    /// the strings it holds.
    fn strings_into(&mut self, v: &mut Vec<String>, n: usize) -> Result<(), DecodeError> {
        self.strings_into_with(v, n, |_, _| Ok(()))
    }
    /// [`Reader::strings_into`], calling `then` after each string with it
    /// and the reader (for what follows each string in the format).
    fn strings_into_with(
        &mut self,
        v: &mut Vec<String>,
        n: usize,
        mut then: impl FnMut(&str, &mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        v.truncate(n);
        v.reserve_exact(n - v.len());
        for i in 0..n {
            if i == v.len() {
                v.push(String::new());
            }
            self.str_into(&mut v[i])?;
            then(&v[i], self)?;
        }
        Ok(())
    }
    fn opt_ts(&mut self) -> Result<Option<Timestamp>, DecodeError> {
        if self.flag()? {
            Ok(Some(Timestamp(self.sv()?)))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_state_roundtrips_and_is_tiny() {
        let s = CustomerState::default();
        let b = encode(&s);
        assert_eq!(b[0], FORMAT_VERSION);
        assert!(b.len() < 56, "{}", b.len());
        assert_eq!(decode(&b), Ok(s));
    }

    #[test]
    fn version_1_records_still_decode() {
        // A version-1 record written field by field: first and last seen,
        // one day bucket with 2 orders, nothing else.
        let (t, day) = (1_700_000_000_000i64, 1_700_000_000_000i64.div_euclid(crate::time::MS_PER_DAY));
        let mut v1 = Vec::new();
        let w = &mut Writer(&mut v1);
        w.u8(1);
        for _ in 0..10 {
            w.u8(0); // birth date, age, six texts, interests (count), consent
        }
        w.u8(0); // loyalty tier
        w.opt_ts(Some(Timestamp(t)));
        w.opt_ts(Some(Timestamp(t)));
        w.uv(1);
        w.sv(day);
        w.u8(1 << Counter::Orders as u8);
        w.sv(2);
        for c in [2, 0, 0, 0, 0] {
            w.sv(c);
        }
        for _ in 0..4 {
            w.u8(0); // first and last purchase, cart lines, cart last added
        }
        w.u8(0); // abandon fired
        w.sv(0);
        w.f64(0.0);
        for _ in 0..7 {
            w.u8(0); // affinities, purchased, offers, segments, bitset, evaluated, recent
        }
        let s = decode(&v1).expect("a version-1 record decodes");
        assert_eq!((s.first_seen, s.last_seen, s.incarnation), (Some(Timestamp(t)), Some(Timestamp(t)), 0));
        assert_eq!(s.counters.lifetime(Counter::Orders), 2);
        // Its day bucket counts with day precision.
        let now = Timestamp(t);
        assert_eq!(s.counters.sum(Counter::Orders, crate::rules::Window::D30, now), 2);
        let leaves = Timestamp((day + 30) * crate::time::MS_PER_DAY);
        assert_eq!(s.counters.next_change(Counter::Orders, crate::rules::Window::D30, now), Some(leaves));
        // Written back as version 2, it reads the same.
        let v2 = encode(&s);
        assert_eq!(v2[0], 2);
        assert_eq!(decode(&v2), Ok(s));
    }

    #[test]
    fn unknown_version_and_garbage_are_typed_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[9, 0, 0]), Err(DecodeError::UnsupportedVersion { found: 9, supported: FORMAT_VERSION }));
        let mut b = encode(&CustomerState::default());
        b.push(0);
        assert_eq!(decode(&b), Err(DecodeError::TrailingBytes(1)));
        b.truncate(5);
        assert!(decode(&b).is_err());
    }
}
