//! Mapping between decoded values (in the shape of the `schemas/` records)
//! and cohort's types.
//!
//! Fields are taken by position: the `*_FIELDS` lists below are the field
//! order of each schema, and a test checks them against the `.avsc` files,
//! so a schema edit that moves a field fails the build's tests instead of
//! silently shifting values.

use crate::avro::V;
use crate::error::DecodeError;
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, Date, Geo, LineItem, OfferOutcome, Outcome, ProfileUpdate, Purchase,
};
use cohort_core::time::Timestamp;
use std::borrow::Cow;

#[cfg(test)]
pub(crate) const CLICK_FIELDS: [&str; 15] = [
    "id",
    "customer",
    "time",
    "kind",
    "product_id",
    "category",
    "price",
    "quantity",
    "page",
    "search_query",
    "channel",
    "device",
    "geo",
    "campaign",
    "session_id",
];
#[cfg(test)]
pub(crate) const GEO_FIELDS: [&str; 3] = ["country", "region", "city"];
#[cfg(test)]
pub(crate) const PURCHASE_FIELDS: [&str; 8] =
    ["id", "customer", "time", "order_id", "items", "total", "currency", "channel"];
#[cfg(test)]
pub(crate) const LINE_ITEM_FIELDS: [&str; 4] = ["product_id", "category", "quantity", "unit_price"];
#[cfg(test)]
pub(crate) const PROFILE_FIELDS: [&str; 14] = [
    "id",
    "customer",
    "time",
    "birth_date",
    "age",
    "gender",
    "income_band",
    "education",
    "country",
    "region",
    "city",
    "interests",
    "consent",
    "loyalty_tier",
];
#[cfg(test)]
pub(crate) const CONSENT_FIELDS: [&str; 4] = ["email", "sms", "push", "web"];
#[cfg(test)]
pub(crate) const OUTCOME_FIELDS: [&str; 7] =
    ["id", "customer", "time", "offer_id", "decision_id", "outcome", "channel"];
#[cfg(test)]
pub(crate) const SEGMENT_CHANGED_FIELDS: [&str; 8] =
    ["id", "customer", "time", "entered", "exited", "segments", "cause", "rules_version"];
#[cfg(test)]
pub(crate) const NEXT_BEST_OFFER_FIELDS: [&str; 11] = [
    "id",
    "customer",
    "time",
    "offer",
    "holdout_offer",
    "channel",
    "scores",
    "products",
    "holdout",
    "cause",
    "rules_version",
];
#[cfg(test)]
pub(crate) const CAUSE_FIELDS: [&str; 3] = ["kind", "event_id", "trigger"];
#[cfg(test)]
pub(crate) const SCORES_FIELDS: [&str; 5] = ["propensity", "context_weight", "value", "lever", "total"];

/// The common head of every input record, before the customer is checked
/// against the key and a missing id is derived.
pub(crate) struct Head {
    pub id: Option<String>,
    pub customer: Option<String>,
    pub time: Timestamp,
}

fn bad(field: &str, problem: &str) -> DecodeError {
    DecodeError::InvalidField { field: field.to_string(), problem: problem.to_string() }
}

fn fields<'a, const N: usize>(v: V<'a>, what: &str) -> Result<[V<'a>; N], DecodeError> {
    match v {
        V::Record(f) => <[V<'a>; N]>::try_from(f).map_err(|_| bad(what, "record has the wrong number of fields")),
        _ => Err(bad(what, "not a record")),
    }
}

fn string(v: V<'_>, field: &str) -> Result<String, DecodeError> {
    match v {
        V::Str(s) => Ok(s.into_owned()),
        _ => Err(bad(field, "not a string")),
    }
}

fn opt_string(v: V<'_>, field: &str) -> Result<Option<String>, DecodeError> {
    match v {
        V::Null => Ok(None),
        V::Str(s) => Ok(Some(s.into_owned())),
        _ => Err(bad(field, "not a string")),
    }
}

/// Like [`opt_string`], but an empty string counts as absent (ids, customer).
fn opt_nonempty(v: V<'_>, field: &str) -> Result<Option<String>, DecodeError> {
    Ok(opt_string(v, field)?.filter(|s| !s.is_empty()))
}

fn long(v: V<'_>, field: &str) -> Result<i64, DecodeError> {
    match v {
        V::Long(l) => Ok(l),
        V::Int(i) => Ok(i64::from(i)),
        _ => Err(bad(field, "not a long")),
    }
}

fn int(v: V<'_>, field: &str) -> Result<i32, DecodeError> {
    match v {
        V::Int(i) => Ok(i),
        _ => Err(bad(field, "not an int")),
    }
}

fn opt_int(v: V<'_>, field: &str) -> Result<Option<i32>, DecodeError> {
    match v {
        V::Null => Ok(None),
        v => int(v, field).map(Some),
    }
}

fn double(v: V<'_>, field: &str) -> Result<f64, DecodeError> {
    match v {
        V::Double(d) => Ok(d),
        V::Float(f) => Ok(f64::from(f)),
        _ => Err(bad(field, "not a double")),
    }
}

fn opt_double(v: V<'_>, field: &str) -> Result<Option<f64>, DecodeError> {
    match v {
        V::Null => Ok(None),
        v => double(v, field).map(Some),
    }
}

fn opt_bool(v: V<'_>, field: &str) -> Result<Option<bool>, DecodeError> {
    match v {
        V::Null => Ok(None),
        V::Bool(b) => Ok(Some(b)),
        _ => Err(bad(field, "not a boolean")),
    }
}

fn symbol<'v>(v: &'v V<'_>, field: &str) -> Result<&'v str, DecodeError> {
    match v {
        V::Enum(s) => Ok(s),
        _ => Err(bad(field, "not an enum symbol")),
    }
}

fn channel(v: V<'_>, field: &str) -> Result<Channel, DecodeError> {
    let s = symbol(&v, field)?;
    Channel::parse(s).ok_or_else(|| bad(field, "unknown channel"))
}

fn opt_channel(v: V<'_>, field: &str) -> Result<Option<Channel>, DecodeError> {
    match v {
        V::Null => Ok(None),
        v => channel(v, field).map(Some),
    }
}

fn strings(v: V<'_>, field: &str) -> Result<Vec<String>, DecodeError> {
    match v {
        V::Array(items) => items.into_iter().map(|s| string(s, field)).collect(),
        _ => Err(bad(field, "not an array")),
    }
}

fn head(id: V<'_>, customer: V<'_>, time: V<'_>) -> Result<Head, DecodeError> {
    Ok(Head {
        id: opt_nonempty(id, "id")?,
        customer: opt_nonempty(customer, "customer")?,
        time: Timestamp(long(time, "time")?),
    })
}

pub(crate) fn click(v: V<'_>) -> Result<(Head, Click), DecodeError> {
    let [id, customer, time, kind, product_id, category, price, quantity, page, search_query, chan, device, geo, campaign, session_id] =
        fields::<15>(v, "ClickEvent")?;
    let kind = match symbol(&kind, "kind")? {
        "page_view" => ClickKind::PageView,
        "product_view" => ClickKind::ProductView,
        "search" => ClickKind::Search,
        "add_to_cart" => ClickKind::AddToCart,
        "remove_from_cart" => ClickKind::RemoveFromCart,
        "checkout_started" => ClickKind::CheckoutStarted,
        _ => return Err(bad("kind", "unknown click kind")),
    };
    let geo = match geo {
        V::Null => Geo::default(),
        g => {
            let [country, region, city] = fields::<3>(g, "geo")?;
            Geo {
                country: opt_string(country, "geo.country")?,
                region: opt_string(region, "geo.region")?,
                city: opt_string(city, "geo.city")?,
            }
        }
    };
    let click = Click {
        kind,
        product_id: opt_string(product_id, "product_id")?,
        category: opt_string(category, "category")?,
        price: opt_double(price, "price")?,
        quantity: opt_int(quantity, "quantity")?,
        page: opt_string(page, "page")?,
        search_query: opt_string(search_query, "search_query")?,
        channel: opt_channel(chan, "channel")?,
        device: opt_string(device, "device")?,
        geo,
        campaign: opt_string(campaign, "campaign")?,
        session_id: opt_string(session_id, "session_id")?,
    };
    Ok((head(id, customer, time)?, click))
}

pub(crate) fn purchase(v: V<'_>) -> Result<(Head, Purchase), DecodeError> {
    let [id, customer, time, order_id, items, total, currency, chan] = fields::<8>(v, "PurchaseEvent")?;
    let items = match items {
        V::Array(items) => items
            .into_iter()
            .map(|it| {
                let [product_id, category, quantity, unit_price] = fields::<4>(it, "items")?;
                Ok(LineItem {
                    product_id: string(product_id, "items.product_id")?,
                    category: opt_string(category, "items.category")?,
                    quantity: int(quantity, "items.quantity")?,
                    unit_price: double(unit_price, "items.unit_price")?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?,
        _ => return Err(bad("items", "not an array")),
    };
    let p = Purchase {
        order_id: string(order_id, "order_id")?,
        items,
        total: double(total, "total")?,
        currency: string(currency, "currency")?,
        channel: opt_channel(chan, "channel")?,
    };
    Ok((head(id, customer, time)?, p))
}

pub(crate) fn profile(v: V<'_>) -> Result<(Head, ProfileUpdate), DecodeError> {
    let [id, customer, time, birth_date, age, gender, income_band, education, country, region, city, interests, consent, loyalty_tier] =
        fields::<14>(v, "CustomerProfile")?;
    let birth_date = match opt_int(birth_date, "birth_date")? {
        None => None,
        Some(days) => Some(date_from_days(days).ok_or_else(|| bad("birth_date", "not a valid date"))?),
    };
    let age = match opt_int(age, "age")? {
        None => None,
        Some(a) => Some(u32::try_from(a).map_err(|_| bad("age", "negative"))?),
    };
    let interests = match interests {
        V::Null => None,
        v => Some(strings(v, "interests")?),
    };
    let consent = match consent {
        V::Null => ConsentUpdate::default(),
        c => {
            let [email, sms, push, web] = fields::<4>(c, "consent")?;
            ConsentUpdate {
                email: opt_bool(email, "consent.email")?,
                sms: opt_bool(sms, "consent.sms")?,
                push: opt_bool(push, "consent.push")?,
                web: opt_bool(web, "consent.web")?,
            }
        }
    };
    let p = ProfileUpdate {
        birth_date,
        age,
        gender: opt_string(gender, "gender")?,
        income_band: opt_string(income_band, "income_band")?,
        education: opt_string(education, "education")?,
        country: opt_string(country, "country")?,
        region: opt_string(region, "region")?,
        city: opt_string(city, "city")?,
        interests,
        consent,
        loyalty_tier: opt_string(loyalty_tier, "loyalty_tier")?,
    };
    Ok((head(id, customer, time)?, p))
}

pub(crate) fn offer_outcome(v: V<'_>) -> Result<(Head, OfferOutcome), DecodeError> {
    let [id, customer, time, offer_id, decision_id, outcome, chan] = fields::<7>(v, "OfferOutcome")?;
    let outcome = match symbol(&outcome, "outcome")? {
        "delivered" => Outcome::Delivered,
        "opened" => Outcome::Opened,
        "clicked" => Outcome::Clicked,
        "converted" => Outcome::Converted,
        "dismissed" => Outcome::Dismissed,
        _ => return Err(bad("outcome", "unknown outcome")),
    };
    let o = OfferOutcome {
        offer_id: string(offer_id, "offer_id")?,
        decision_id: string(decision_id, "decision_id")?,
        outcome,
        channel: opt_channel(chan, "channel")?,
    };
    Ok((head(id, customer, time)?, o))
}

// ---- encoding -------------------------------------------------------------

fn s(x: &str) -> V<'_> {
    V::Str(Cow::Borrowed(x))
}

fn os(x: &Option<String>) -> V<'_> {
    x.as_deref().map_or(V::Null, s)
}

fn e(x: &'static str) -> V<'static> {
    V::Enum(Cow::Borrowed(x))
}

fn oc(c: Option<Channel>) -> V<'static> {
    c.map_or(V::Null, |c| e(c.as_str()))
}

fn list(xs: &[String]) -> V<'_> {
    V::Array(xs.iter().map(|x| s(x)).collect())
}

fn head_values<'a>(id: &'a str, customer: &'a str, time: Timestamp) -> [V<'a>; 3] {
    [s(id), s(customer), V::Long(time.0)]
}

pub(crate) fn click_kind_str(k: ClickKind) -> &'static str {
    match k {
        ClickKind::PageView => "page_view",
        ClickKind::ProductView => "product_view",
        ClickKind::Search => "search",
        ClickKind::AddToCart => "add_to_cart",
        ClickKind::RemoveFromCart => "remove_from_cart",
        ClickKind::CheckoutStarted => "checkout_started",
    }
}

pub(crate) fn click_value<'a>(id: &'a str, customer: &'a str, time: Timestamp, c: &'a Click) -> V<'a> {
    let geo = if c.geo == Geo::default() {
        V::Null
    } else {
        V::Record(vec![os(&c.geo.country), os(&c.geo.region), os(&c.geo.city)])
    };
    let [a, b, t] = head_values(id, customer, time);
    V::Record(vec![
        a,
        b,
        t,
        e(click_kind_str(c.kind)),
        os(&c.product_id),
        os(&c.category),
        c.price.map_or(V::Null, V::Double),
        c.quantity.map_or(V::Null, V::Int),
        os(&c.page),
        os(&c.search_query),
        oc(c.channel),
        os(&c.device),
        geo,
        os(&c.campaign),
        os(&c.session_id),
    ])
}

pub(crate) fn purchase_value<'a>(id: &'a str, customer: &'a str, time: Timestamp, p: &'a Purchase) -> V<'a> {
    let items = p
        .items
        .iter()
        .map(|it| V::Record(vec![s(&it.product_id), os(&it.category), V::Int(it.quantity), V::Double(it.unit_price)]))
        .collect();
    let [a, b, t] = head_values(id, customer, time);
    V::Record(vec![a, b, t, s(&p.order_id), V::Array(items), V::Double(p.total), s(&p.currency), oc(p.channel)])
}

pub(crate) fn profile_value<'a>(
    id: &'a str,
    customer: &'a str,
    time: Timestamp,
    p: &'a ProfileUpdate,
) -> Result<V<'a>, String> {
    let birth_date = match p.birth_date {
        None => V::Null,
        Some(d) => V::Int(days_from_date(d).ok_or_else(|| format!("birth date {d:?} is not a valid date"))?),
    };
    let age = match p.age {
        None => V::Null,
        Some(a) => V::Int(i32::try_from(a).map_err(|_| format!("age {a} does not fit an int"))?),
    };
    let c = &p.consent;
    let consent = if *c == ConsentUpdate::default() {
        V::Null
    } else {
        let b = |x: Option<bool>| x.map_or(V::Null, V::Bool);
        V::Record(vec![b(c.email), b(c.sms), b(c.push), b(c.web)])
    };
    let [a, bb, t] = head_values(id, customer, time);
    Ok(V::Record(vec![
        a,
        bb,
        t,
        birth_date,
        age,
        os(&p.gender),
        os(&p.income_band),
        os(&p.education),
        os(&p.country),
        os(&p.region),
        os(&p.city),
        p.interests.as_deref().map_or(V::Null, list),
        consent,
        os(&p.loyalty_tier),
    ]))
}

pub(crate) fn offer_outcome_value<'a>(id: &'a str, customer: &'a str, time: Timestamp, o: &'a OfferOutcome) -> V<'a> {
    let [a, b, t] = head_values(id, customer, time);
    V::Record(vec![a, b, t, s(&o.offer_id), s(&o.decision_id), e(o.outcome.as_str()), oc(o.channel)])
}

// ---- outputs ----------------------------------------------------------------
//
// The outputs as generic values: what the schema-driven encoders (Avro and
// JSON) would write. The worker writes outputs with the direct writers
// (`direct`, `json_output`); these are the reference their tests compare
// them with, byte for byte.

#[cfg(test)]
pub(crate) fn cause_value(c: &crate::output::Cause) -> V<'_> {
    V::Record(vec![e(crate::output::cause_kind_str(c.kind)), os(&c.event_id), os(&c.trigger)])
}

#[cfg(test)]
pub(crate) fn segment_changed_value(o: &crate::output::SegmentChanged) -> V<'_> {
    V::Record(vec![
        s(&o.id),
        s(&o.customer),
        V::Long(o.time.0),
        list(&o.entered),
        list(&o.exited),
        list(&o.segments),
        cause_value(&o.cause),
        s(&o.rules_version),
    ])
}

#[cfg(test)]
pub(crate) fn next_best_offer_value(o: &crate::output::NextBestOffer) -> V<'_> {
    let sc = &o.scores;
    V::Record(vec![
        s(&o.id),
        s(&o.customer),
        V::Long(o.time.0),
        os(&o.offer),
        os(&o.holdout_offer),
        oc(o.channel),
        V::Record(vec![
            V::Double(sc.propensity),
            V::Double(sc.context_weight),
            V::Double(sc.value),
            V::Double(sc.lever),
            V::Double(sc.total),
        ]),
        list(&o.products),
        V::Bool(o.holdout),
        cause_value(&o.cause),
        s(&o.rules_version),
    ])
}

fn cause(v: V<'_>) -> Result<crate::output::Cause, DecodeError> {
    use crate::output::{Cause, CauseKind};
    let [kind, event_id, trigger] = fields::<3>(v, "cause")?;
    let kind = match symbol(&kind, "cause.kind")? {
        "event" => CauseKind::Event,
        "timer" => CauseKind::Timer,
        "rules_changed" => CauseKind::RulesChanged,
        _ => return Err(bad("cause.kind", "unknown cause")),
    };
    Ok(Cause {
        kind,
        event_id: opt_string(event_id, "cause.event_id")?,
        trigger: opt_string(trigger, "cause.trigger")?,
    })
}

pub(crate) fn segment_changed(v: V<'_>) -> Result<crate::output::SegmentChanged, DecodeError> {
    let [id, customer, time, entered, exited, segments, c, rules_version] = fields::<8>(v, "SegmentChanged")?;
    Ok(crate::output::SegmentChanged {
        id: string(id, "id")?,
        customer: string(customer, "customer")?,
        time: Timestamp(long(time, "time")?),
        entered: strings(entered, "entered")?,
        exited: strings(exited, "exited")?,
        segments: strings(segments, "segments")?,
        cause: cause(c)?,
        rules_version: string(rules_version, "rules_version")?,
    })
}

pub(crate) fn next_best_offer(v: V<'_>) -> Result<crate::output::NextBestOffer, DecodeError> {
    let [id, customer, time, offer, holdout_offer, chan, scores, products, holdout, c, rules_version] =
        fields::<11>(v, "NextBestOffer")?;
    let [propensity, context_weight, value, lever, total] = fields::<5>(scores, "scores")?;
    Ok(crate::output::NextBestOffer {
        id: string(id, "id")?,
        customer: string(customer, "customer")?,
        time: Timestamp(long(time, "time")?),
        offer: opt_string(offer, "offer")?,
        holdout_offer: opt_string(holdout_offer, "holdout_offer")?,
        channel: opt_channel(chan, "channel")?,
        scores: crate::output::OfferScores {
            propensity: double(propensity, "scores.propensity")?,
            context_weight: double(context_weight, "scores.context_weight")?,
            value: double(value, "scores.value")?,
            lever: double(lever, "scores.lever")?,
            total: double(total, "scores.total")?,
        },
        products: strings(products, "products")?,
        holdout: match holdout {
            V::Bool(b) => b,
            _ => return Err(bad("holdout", "not a boolean")),
        },
        cause: cause(c)?,
        rules_version: string(rules_version, "rules_version")?,
    })
}

// ---- dates ------------------------------------------------------------------

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
pub(crate) fn date_from_days(days: i32) -> Option<Date> {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = Date { year: i32::try_from(year).ok()?, month: month as u8, day: day as u8 };
    date.is_valid().then_some(date)
}

/// A civil date to days since 1970-01-01; `None` for an invalid date.
pub(crate) fn days_from_date(d: Date) -> Option<i32> {
    if !d.is_valid() {
        return None;
    }
    let y = i64::from(d.year) - i64::from(d.month <= 2);
    let m = i64::from(d.month);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Node, RecordType};

    fn names(n: &Node) -> Vec<String> {
        match n {
            Node::Record(r) => r.fields.iter().map(|f| f.name.clone()).collect(),
            Node::Union(b) => b.iter().find(|b| matches!(b, Node::Record(_))).map(names).unwrap_or_default(),
            Node::Array(i) => names(i),
            _ => vec![],
        }
    }

    fn field<'n>(n: &'n Node, name: &str) -> &'n Node {
        match n {
            Node::Record(r) => &r.fields.iter().find(|f| f.name == name).expect("field exists").node,
            _ => panic!("not a record"),
        }
    }

    #[test]
    fn field_orders_match_the_schemas() {
        let reg = crate::Registry::builtin();
        let click = reg.node(RecordType::ClickEvent);
        assert_eq!(names(click), CLICK_FIELDS);
        assert_eq!(names(field(click, "geo")), GEO_FIELDS);
        let purchase = reg.node(RecordType::PurchaseEvent);
        assert_eq!(names(purchase), PURCHASE_FIELDS);
        assert_eq!(names(field(purchase, "items")), LINE_ITEM_FIELDS);
        let profile = reg.node(RecordType::CustomerProfile);
        assert_eq!(names(profile), PROFILE_FIELDS);
        assert_eq!(names(field(profile, "consent")), CONSENT_FIELDS);
        assert_eq!(names(reg.node(RecordType::OfferOutcome)), OUTCOME_FIELDS);
        let sc = reg.node(RecordType::SegmentChanged);
        assert_eq!(names(sc), SEGMENT_CHANGED_FIELDS);
        assert_eq!(names(field(sc, "cause")), CAUSE_FIELDS);
        let nbo = reg.node(RecordType::NextBestOffer);
        assert_eq!(names(nbo), NEXT_BEST_OFFER_FIELDS);
        assert_eq!(names(field(nbo, "scores")), SCORES_FIELDS);
        assert_eq!(names(field(nbo, "cause")), CAUSE_FIELDS);
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_from_days(0), Some(Date { year: 1970, month: 1, day: 1 }));
        assert_eq!(days_from_date(Date { year: 2000, month: 3, day: 1 }), Some(11_017));
        assert_eq!(days_from_date(Date { year: 1969, month: 12, day: 31 }), Some(-1));
        for d in (-60_000..60_000).step_by(37) {
            let date = date_from_days(d).expect("in range");
            assert_eq!(days_from_date(date), Some(d));
        }
        assert_eq!(days_from_date(Date { year: 1990, month: 2, day: 30 }), None);
    }
}
