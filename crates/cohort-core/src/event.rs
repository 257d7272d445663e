//! Typed input events: the contract between the codec and the engine.
//!
//! Every record that reaches the engine, whatever topic or wire format it came
//! from, is turned into one [`Event`]: an id, the customer it belongs to, its
//! event time and an [`EventKind`]. The Avro schemas in `schemas/` and the JSON
//! codec are written from these types, so field names here are the field names
//! on the wire (snake_case).
//!
//! [`Event::validate`] is the one place that decides whether an event is bad
//! input. Its [`InvalidEvent::reason`] is a short stable string used as the
//! dead-letter-queue reason header and metric label, so never rename one.

use crate::time::{Duration, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// 2000-01-01T00:00:00Z: events older than this are certainly a producer bug
/// (seconds sent as milliseconds, a zeroed field), not history.
pub const MIN_EVENT_TIME: Timestamp = Timestamp(946_684_800_000);

/// How far in the future (relative to `now`) an event time may be before it is
/// rejected. Producers' clocks drift; five minutes tolerates NTP-less hosts
/// without letting a millisecond/microsecond mix-up push the watermark years ahead.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_mins(5);

/// One input record, whatever its topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id of the event, assigned by the producer (or derived from
    /// topic/partition/offset by the codec when the producer has none). Output
    /// ids are derived from it, so it must be stable across replays.
    pub id: String,
    /// The customer this event is about; also the Kafka key.
    pub customer: String,
    /// When it happened (not when it was received).
    pub time: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// The payload of an [`Event`], one variant per input topic (plus `Forget`,
/// which arrives as a null value on the profiles topic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Click(Click),
    Purchase(Purchase),
    ProfileUpdate(ProfileUpdate),
    OfferOutcome(OfferOutcome),
    /// Erase everything known about this customer (GDPR right to erasure).
    Forget,
}

/// What kind of interaction a click-stream event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickKind {
    PageView,
    ProductView,
    Search,
    AddToCart,
    RemoveFromCart,
    CheckoutStarted,
}

/// The channel an interaction happened on or an offer is sent through.
///
/// Consent is tracked for `email`, `sms`, `push` and `web`; `app` and `store`
/// only appear as interaction channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Web,
    App,
    Email,
    Sms,
    Push,
    Store,
    Other,
}

impl Channel {
    /// All channels, in a stable order (used by encodings and tests).
    pub const ALL: [Channel; 7] =
        [Channel::Web, Channel::App, Channel::Email, Channel::Sms, Channel::Push, Channel::Store, Channel::Other];

    /// The wire name, also used in rules (`consent.email`) and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::App => "app",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Store => "store",
            Channel::Other => "other",
        }
    }

    /// Parses a wire name; `None` for anything unknown.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Where an interaction came from, as far as the producer knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geo {
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
}

/// A click-stream interaction. Everything but `kind` is optional because
/// page views, searches and cart events carry different fields.
///
/// The engine reads none of `page`, `search_query`, `device`, `campaign`
/// and `session_id`, and the worker's decoder leaves them `None`
/// (`cohort_codec::UNREAD_CLICK_FIELDS`): code here that starts reading
/// one must take it off that list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Click {
    pub kind: ClickKind,
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// Unit price of the product shown or added, in the shop currency.
    #[serde(default)]
    pub price: Option<f64>,
    /// Quantity added or removed (cart events); 1 when absent.
    #[serde(default)]
    pub quantity: Option<i32>,
    /// Page path or URL.
    #[serde(default)]
    pub page: Option<String>,
    #[serde(default)]
    pub search_query: Option<String>,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub geo: Geo,
    #[serde(default)]
    pub campaign: Option<String>,
    /// The producer's session id, if any. The engine also derives sessions
    /// from an inactivity gap, which is what rules see.
    #[serde(default)]
    pub session_id: Option<String>,
}

impl Click {
    /// A click of the given kind with every optional field empty; handy for
    /// tests and generators that fill in only what they need.
    pub fn new(kind: ClickKind) -> Click {
        Click {
            kind,
            product_id: None,
            category: None,
            price: None,
            quantity: None,
            page: None,
            search_query: None,
            channel: None,
            device: None,
            geo: Geo::default(),
            campaign: None,
            session_id: None,
        }
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    pub product_id: String,
    #[serde(default)]
    pub category: Option<String>,
    pub quantity: i32,
    pub unit_price: f64,
}

/// A completed order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub order_id: String,
    pub items: Vec<LineItem>,
    /// What the customer paid, in `currency`; the source of spend metrics.
    pub total: f64,
    /// ISO 4217 code. The engine does no conversion: spend rules assume one
    /// shop currency.
    pub currency: String,
    #[serde(default)]
    pub channel: Option<Channel>,
}

/// A calendar date (proleptic Gregorian), used for birthdays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Whether this names a real day (e.g. no 30 February).
    pub fn is_valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= crate::time::days_in_month(self.year, self.month)
            && (1800..=9999).contains(&self.year)
    }
}

/// Marketing consent per channel. `None` means "not stated in this update":
/// the previously known value stays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentUpdate {
    #[serde(default)]
    pub email: Option<bool>,
    #[serde(default)]
    pub sms: Option<bool>,
    #[serde(default)]
    pub push: Option<bool>,
    #[serde(default)]
    pub web: Option<bool>,
}

/// A partial profile update from the CRM: every field is optional and only
/// the fields present overwrite what the state holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    #[serde(default)]
    pub birth_date: Option<Date>,
    /// Age in years, for sources that do not share the birth date. Ignored
    /// when `birth_date` is known (the engine derives the age from it at `now`).
    #[serde(default)]
    pub age: Option<u32>,
    #[serde(default)]
    pub gender: Option<String>,
    #[serde(default)]
    pub income_band: Option<String>,
    #[serde(default)]
    pub education: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    /// Declared interests; when present, replaces the whole list.
    #[serde(default)]
    pub interests: Option<Vec<String>>,
    #[serde(default)]
    pub consent: ConsentUpdate,
    #[serde(default)]
    pub loyalty_tier: Option<String>,
}

/// What happened to an offer we decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    Opened,
    Clicked,
    Converted,
    Dismissed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Delivered, Outcome::Opened, Outcome::Clicked, Outcome::Converted, Outcome::Dismissed];

    /// The wire name, also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Opened => "opened",
            Outcome::Clicked => "clicked",
            Outcome::Converted => "converted",
            Outcome::Dismissed => "dismissed",
        }
    }
}

/// Feedback from the delivery systems about a next-best-offer decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferOutcome {
    pub offer_id: String,
    /// The `id` of the NextBestOffer output this outcome answers.
    pub decision_id: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub channel: Option<Channel>,
}

/// Why an event was rejected. Bad input never stops a partition: the worker
/// sends the original record to the DLQ with [`InvalidEvent::reason`].
#[derive(Clone, Debug, PartialEq, Error)]
pub enum InvalidEvent {
    #[error("event has no customer id")]
    MissingCustomer,
    #[error("event has no id")]
    MissingId,
    #[error("event time {time:?} is before 2000-01-01")]
    TooOld { time: Timestamp },
    #[error("event time {time:?} is more than {max_skew:?} after now ({now:?})")]
    InFuture { time: Timestamp, now: Timestamp, max_skew: Duration },
    #[error("field `{field}` is negative")]
    Negative { field: &'static str },
    #[error("field `{field}` is not a finite number")]
    NotFinite { field: &'static str },
    #[error("field `{field}` is empty")]
    Empty { field: &'static str },
    #[error("birth date {date:?} is not a valid date")]
    InvalidDate { date: Date },
}

impl InvalidEvent {
    /// Every reason [`InvalidEvent::reason`] can return, so the worker can
    /// start its dead-letter counter at 0 for each.
    pub const REASONS: [&'static str; 8] = [
        "missing_customer_id",
        "missing_event_id",
        "time_too_old",
        "time_in_future",
        "negative_value",
        "not_finite",
        "empty_field",
        "invalid_date",
    ];

    /// A short stable label: the DLQ reason header and the `reason` metric
    /// label. Bounded set; never includes data from the event.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidEvent::MissingCustomer => "missing_customer_id",
            InvalidEvent::MissingId => "missing_event_id",
            InvalidEvent::TooOld { .. } => "time_too_old",
            InvalidEvent::InFuture { .. } => "time_in_future",
            InvalidEvent::Negative { .. } => "negative_value",
            InvalidEvent::NotFinite { .. } => "not_finite",
            InvalidEvent::Empty { .. } => "empty_field",
            InvalidEvent::InvalidDate { .. } => "invalid_date",
        }
    }
}

fn check_amount(v: f64, field: &'static str) -> Result<(), InvalidEvent> {
    if !v.is_finite() {
        return Err(InvalidEvent::NotFinite { field });
    }
    if v < 0.0 {
        return Err(InvalidEvent::Negative { field });
    }
    Ok(())
}

fn check_quantity(q: i32, field: &'static str) -> Result<(), InvalidEvent> {
    if q < 0 {
        return Err(InvalidEvent::Negative { field });
    }
    Ok(())
}

impl Event {
    /// Checks the event with the default future skew
    /// ([`DEFAULT_MAX_FUTURE_SKEW`]).
    pub fn validate(&self, now: Timestamp) -> Result<(), InvalidEvent> {
        self.validate_with_skew(now, DEFAULT_MAX_FUTURE_SKEW)
    }

    /// Checks everything the engine relies on: a customer and an id, a
    /// plausible event time (not before 2000, not more than `max_skew` after
    /// `now`), no negative or non-finite amounts, a real birth date. The
    /// engine itself never panics on an invalid event, but its answers would
    /// be meaningless, so the worker dead-letters what fails here.
    pub fn validate_with_skew(&self, now: Timestamp, max_skew: Duration) -> Result<(), InvalidEvent> {
        if self.customer.is_empty() {
            return Err(InvalidEvent::MissingCustomer);
        }
        if self.id.is_empty() {
            return Err(InvalidEvent::MissingId);
        }
        if self.time < MIN_EVENT_TIME {
            return Err(InvalidEvent::TooOld { time: self.time });
        }
        if self.time > now + max_skew {
            return Err(InvalidEvent::InFuture { time: self.time, now, max_skew });
        }
        match &self.kind {
            EventKind::Click(c) => {
                if let Some(p) = c.price {
                    check_amount(p, "price")?;
                }
                if let Some(q) = c.quantity {
                    check_quantity(q, "quantity")?;
                }
            }
            EventKind::Purchase(p) => {
                if p.order_id.is_empty() {
                    return Err(InvalidEvent::Empty { field: "order_id" });
                }
                check_amount(p.total, "total")?;
                for item in &p.items {
                    check_quantity(item.quantity, "items.quantity")?;
                    check_amount(item.unit_price, "items.unit_price")?;
                }
            }
            EventKind::ProfileUpdate(p) => {
                if let Some(d) = p.birth_date {
                    if !d.is_valid() {
                        return Err(InvalidEvent::InvalidDate { date: d });
                    }
                }
            }
            EventKind::OfferOutcome(o) => {
                if o.offer_id.is_empty() {
                    return Err(InvalidEvent::Empty { field: "offer_id" });
                }
            }
            EventKind::Forget => {}
        }
        Ok(())
    }

    /// A short stable name of the event's kind, for metric labels and logs.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            EventKind::Click(_) => "click",
            EventKind::Purchase(_) => "purchase",
            EventKind::ProfileUpdate(_) => "profile_update",
            EventKind::OfferOutcome(_) => "offer_outcome",
            EventKind::Forget => "forget",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event { id: "e1".into(), customer: "c1".into(), time: Timestamp(1_700_000_000_000), kind }
    }
    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    #[test]
    fn valid_events_pass() {
        let mut c = Click::new(ClickKind::AddToCart);
        c.price = Some(9.5);
        c.quantity = Some(2);
        assert_eq!(ev(EventKind::Click(c)).validate(NOW), Ok(()));
        assert_eq!(ev(EventKind::Forget).validate(NOW), Ok(()));
    }

    #[test]
    fn each_rejection_has_a_stable_reason() {
        let mut e = ev(EventKind::Forget);
        e.customer.clear();
        assert_eq!(e.validate(NOW).unwrap_err().reason(), "missing_customer_id");

        let mut e = ev(EventKind::Forget);
        e.time = Timestamp(946_684_799_999);
        assert_eq!(e.validate(NOW).unwrap_err().reason(), "time_too_old");

        let mut e = ev(EventKind::Forget);
        e.time = NOW + Duration::from_mins(6);
        assert_eq!(e.validate(NOW).unwrap_err().reason(), "time_in_future");
        assert_eq!(e.validate_with_skew(NOW, Duration::from_hours(1)), Ok(()));

        let mut c = Click::new(ClickKind::AddToCart);
        c.quantity = Some(-1);
        assert_eq!(ev(EventKind::Click(c)).validate(NOW).unwrap_err().reason(), "negative_value");

        let p = Purchase { order_id: "o".into(), items: vec![], total: -3.0, currency: "EUR".into(), channel: None };
        assert_eq!(ev(EventKind::Purchase(p)).validate(NOW).unwrap_err().reason(), "negative_value");

        let p =
            Purchase { order_id: "o".into(), items: vec![], total: f64::NAN, currency: "EUR".into(), channel: None };
        assert_eq!(ev(EventKind::Purchase(p)).validate(NOW).unwrap_err().reason(), "not_finite");

        let p = ProfileUpdate { birth_date: Some(Date { year: 1990, month: 2, day: 30 }), ..Default::default() };
        assert_eq!(ev(EventKind::ProfileUpdate(p)).validate(NOW).unwrap_err().reason(), "invalid_date");
    }

    fn purchase(items: Vec<LineItem>, total: f64) -> Event {
        ev(EventKind::Purchase(Purchase { order_id: "o".into(), items, total, currency: "EUR".into(), channel: None }))
    }

    fn line(quantity: i32, unit_price: f64) -> LineItem {
        LineItem { product_id: "p".into(), category: None, quantity, unit_price }
    }

    #[test]
    fn a_negative_line_item_price_is_rejected_even_with_a_positive_total() {
        let e = purchase(vec![line(1, 20.0), line(2, -5.0)], 10.0);
        let err = e.validate(NOW).unwrap_err();
        assert_eq!(err, InvalidEvent::Negative { field: "items.unit_price" });
        assert_eq!(err.reason(), "negative_value");
        assert_eq!(err.to_string(), "field `items.unit_price` is negative");
    }

    #[test]
    fn every_amount_and_quantity_is_checked_for_sign_and_finiteness() {
        let click = |price: Option<f64>, quantity: Option<i32>| {
            let mut c = Click::new(ClickKind::AddToCart);
            c.price = price;
            c.quantity = quantity;
            ev(EventKind::Click(c))
        };
        // (event, the field named in the rejection, the reason)
        let cases = [
            (click(Some(-0.01), None), "price", "negative_value"),
            (click(Some(f64::INFINITY), None), "price", "not_finite"),
            (click(Some(f64::NAN), None), "price", "not_finite"),
            (click(None, Some(-1)), "quantity", "negative_value"),
            (purchase(vec![], -3.0), "total", "negative_value"),
            (purchase(vec![], f64::NEG_INFINITY), "total", "not_finite"),
            (purchase(vec![line(-1, 1.0)], 1.0), "items.quantity", "negative_value"),
            (purchase(vec![line(1, -1.0)], 1.0), "items.unit_price", "negative_value"),
            (purchase(vec![line(1, f64::NAN)], 1.0), "items.unit_price", "not_finite"),
        ];
        for (e, field, reason) in cases {
            let err = e.validate(NOW).expect_err(field);
            assert_eq!(err.reason(), reason, "{field}: {err}");
            assert!(err.to_string().contains(&format!("`{field}`")), "{err} names {field}");
        }
        // Zero is not negative: free items, empty quantities and zero totals pass.
        assert_eq!(click(Some(0.0), Some(0)).validate(NOW), Ok(()));
        assert_eq!(purchase(vec![line(0, 0.0)], 0.0).validate(NOW), Ok(()));
    }

    #[test]
    fn empty_identifiers_are_rejected_but_blank_products_and_places_are_not() {
        let mut p =
            Purchase { order_id: String::new(), items: vec![], total: 1.0, currency: "EUR".into(), channel: None };
        assert_eq!(ev(EventKind::Purchase(p.clone())).validate(NOW), Err(InvalidEvent::Empty { field: "order_id" }));
        let o =
            OfferOutcome { offer_id: String::new(), decision_id: "d".into(), outcome: Outcome::Opened, channel: None };
        assert_eq!(ev(EventKind::OfferOutcome(o)).validate(NOW).unwrap_err().reason(), "empty_field");

        // An empty product id or country is accepted and read as unknown
        // (CustomerState, docs/schemas.md "Empty strings").
        p.order_id = "o".into();
        p.items =
            vec![LineItem { product_id: String::new(), category: Some("keto".into()), quantity: 1, unit_price: 2.0 }];
        assert_eq!(ev(EventKind::Purchase(p)).validate(NOW), Ok(()));
        let mut c = Click::new(ClickKind::AddToCart);
        c.product_id = Some(String::new());
        c.geo.country = Some(String::new());
        assert_eq!(ev(EventKind::Click(c)).validate(NOW), Ok(()));
        let u = ProfileUpdate { country: Some(" ".into()), ..Default::default() };
        assert_eq!(ev(EventKind::ProfileUpdate(u)).validate(NOW), Ok(()));
    }

    #[test]
    fn reasons_lists_every_reason_once() {
        let t = Timestamp(0);
        let d = Duration::from_mins(1);
        let all = [
            InvalidEvent::MissingCustomer,
            InvalidEvent::MissingId,
            InvalidEvent::TooOld { time: t },
            InvalidEvent::InFuture { time: t, now: t, max_skew: d },
            InvalidEvent::Negative { field: "f" },
            InvalidEvent::NotFinite { field: "f" },
            InvalidEvent::Empty { field: "f" },
            InvalidEvent::InvalidDate { date: Date { year: 1, month: 1, day: 1 } },
        ];
        // A new variant must be added above (the match in `reason` makes it
        // a compile error to forget it there).
        let reasons: Vec<&str> = all.iter().map(InvalidEvent::reason).collect();
        assert_eq!(reasons, InvalidEvent::REASONS);
    }

    #[test]
    fn serde_shape_is_tagged_snake_case() {
        let e = ev(EventKind::Click(Click::new(ClickKind::PageView)));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"]["type"], "click");
        assert_eq!(json["kind"]["kind"], "page_view");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
