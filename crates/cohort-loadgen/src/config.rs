//! What to generate: population and catalogue sizes, behaviour shares, the
//! offers whose outcomes are simulated, and how fast to replay.

use crate::catalog::{Category, CATEGORIES};
use cohort_core::event::{Channel, MIN_EVENT_TIME};
use cohort_core::time::{timestamp_of_date, Duration, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Generator settings. Everything has a default; a config is checked by
/// [`Config::validate`] (also called by `Generator::new`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Same seed, same config: same events, byte for byte.
    pub seed: u64,
    /// Number of customers (`c-000001` ...).
    pub customers: u32,
    /// Number of products (`p-00001` ...); at least one per category is made.
    pub products: u32,
    /// Event time of the simulation's start.
    pub start: Timestamp,
    /// Mean sessions per customer per simulated day, before the activity skew
    /// (the most active customers get many times this, the long tail far
    /// less). See [`Config::set_events_per_second`].
    pub sessions_per_customer_day: f64,
    /// Exponent of the Zipf law over customers' activity; 1.0 makes the top
    /// 10% of customers produce well over half the traffic.
    pub activity_skew: f64,
    /// Exponent of the Zipf law over products' popularity within a category.
    pub product_skew: f64,
    /// Share of carts (sessions ending with items in the cart) of active
    /// customers that end without a purchase. Around 0.7 in e-commerce.
    pub abandon_share: f64,
    /// Share of customers who lapse: after `lapse_after` (±75%) they keep
    /// browsing, rarely, but never buy again.
    pub lapse_share: f64,
    /// Mean time from the start until a lapser stops buying.
    pub lapse_after: Duration,
    /// Share of sessions after which an offer is delivered to the customer
    /// (when no earlier offer is still in flight).
    pub offer_share: f64,
    /// Share of sessions that start with a profile update (a changed
    /// consent, a move, a new income band or interests).
    pub profile_update_share: f64,
    /// Share of customers who ask to be forgotten (GDPR erasure) at a
    /// uniformly random instant within `forget_within` of the start: they
    /// send a `Forget` at the start of their next visit and are never seen
    /// again. Off by default.
    pub forget_share: f64,
    pub forget_within: Duration,
    /// The offers whose outcomes are simulated.
    pub offers: Vec<OfferSpec>,
    /// Prefix of every id (events, sessions, orders, decisions), so runs with
    /// different seeds never share ids. Default: `lg<seed>`.
    pub id_prefix: Option<String>,
    /// Generate only the customers of one shard (`index % count`); the union
    /// of all shards is exactly the unsharded traffic.
    pub shard: Option<Shard>,
    /// ISO 4217 code on purchases.
    pub currency: String,
    /// How a sender should pace the events in wall-clock time.
    pub pacing: Pacing,
}

/// One of `count` disjoint slices of the population.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// An offer the engine might decide on, and how customers answer it. The
/// conversion rate depends on the customer's persona, so that the engine's
/// propensity learning has a signal to find.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferSpec {
    pub id: String,
    /// Delivered only to customers who consented to this channel.
    pub channel: Channel,
    /// What a converting customer buys (a category name); their preferred
    /// categories when absent.
    #[serde(default)]
    pub category: Option<String>,
    /// P(converted | delivered) for customers no audience below matches.
    pub base_rate: f64,
    /// P(converted | delivered) for audiences; the highest matching wins.
    #[serde(default)]
    pub rates: Vec<AudienceRate>,
}

/// A conversion rate for customers of one audience.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceRate {
    pub audience: Audience,
    pub rate: f64,
}

/// A persona trait that changes how a customer answers an offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Customers whose preferred categories include this one.
    Prefers(String),
    /// Customers who have lapsed (at the time of the offer).
    Lapsed,
    /// Customers among the 10% most active.
    HighActivity,
}

/// Wall-clock pacing for whoever sends the events (the generator itself only
/// produces event times; see [`Pacing::wall_offset`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pacing {
    /// Send as fast as possible. Event time then runs far ahead of the wall
    /// clock: start the simulation in the past, or let the consumer use event
    /// time, or validation rejects events as being in the future.
    AsFastAsPossible,
    /// Simulated time runs `factor` times faster than the wall clock
    /// (1.0 = real time, 3600 = an hour per second).
    Accelerated { factor: f64 },
    /// A fixed number of events per wall-clock second, whatever their event
    /// times.
    EventsPerSecond { rate: f64 },
}

impl Pacing {
    /// When, relative to the moment sending began, the `index`-th event
    /// (0-based) with event time `time` is due; `None` means now. `start` is
    /// the simulation's start ([`Config::start`]).
    pub fn wall_offset(&self, start: Timestamp, time: Timestamp, index: u64) -> Option<std::time::Duration> {
        let secs = match *self {
            Pacing::AsFastAsPossible => return None,
            Pacing::Accelerated { factor } => time.since(start).as_millis() as f64 / 1000.0 / factor,
            Pacing::EventsPerSecond { rate } => index as f64 / rate,
        };
        Some(std::time::Duration::from_secs_f64(secs.max(0.0)))
    }
}

/// Mean events per session with the default shares (measured over 20
/// simulated days with `Config::default()`: 6.2 to 6.4; profile and offer
/// events included). Used by [`Config::set_events_per_second`].
pub const EVENTS_PER_SESSION: f64 = 6.4;

// The defaults below are picked to look like a mid-sized European web shop.

fn default_start() -> Timestamp {
    timestamp_of_date(2025, 1, 1)
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 42,
            customers: 10_000,
            products: 2_000,
            start: default_start(),
            // about one visit every two days for the median-ish customer
            sessions_per_customer_day: 0.5,
            activity_skew: 1.0,
            product_skew: 1.0,
            // Baymard Institute's average documented cart abandonment rate
            abandon_share: 0.7,
            lapse_share: 0.2,
            lapse_after: Duration::from_days(30),
            offer_share: 0.2,
            profile_update_share: 0.02,
            forget_share: 0.0,
            forget_within: Duration::from_days(60),
            offers: default_offers(),
            id_prefix: None,
            shard: None,
            currency: "EUR".to_string(),
            pacing: Pacing::AsFastAsPossible,
        }
    }
}

/// A handful of offers, each converting much better in its own audience.
pub fn default_offers() -> Vec<OfferSpec> {
    fn prefers(cat: &str, rate: f64) -> AudienceRate {
        AudienceRate { audience: Audience::Prefers(cat.to_string()), rate }
    }
    vec![
        OfferSpec {
            id: "keto_bundle".into(),
            channel: Channel::Email,
            category: Some("keto".into()),
            base_rate: 0.02,
            rates: vec![prefers("keto", 0.30)],
        },
        OfferSpec {
            id: "vegan_box".into(),
            channel: Channel::Email,
            category: Some("vegan".into()),
            base_rate: 0.02,
            rates: vec![prefers("vegan", 0.28)],
        },
        OfferSpec {
            id: "gluten_free_starter".into(),
            channel: Channel::Push,
            category: Some("gluten-free".into()),
            base_rate: 0.01,
            rates: vec![prefers("gluten-free", 0.25)],
        },
        OfferSpec {
            id: "outdoor_season".into(),
            channel: Channel::Email,
            category: Some("outdoor".into()),
            base_rate: 0.03,
            rates: vec![prefers("outdoor", 0.22), prefers("sports", 0.10)],
        },
        OfferSpec {
            id: "fashion_new_in".into(),
            channel: Channel::Web,
            category: Some("fashion".into()),
            base_rate: 0.04,
            rates: vec![prefers("fashion", 0.18)],
        },
        OfferSpec {
            id: "winback_20".into(),
            channel: Channel::Email,
            category: None,
            base_rate: 0.03,
            rates: vec![AudienceRate { audience: Audience::Lapsed, rate: 0.12 }],
        },
        OfferSpec {
            id: "free_shipping".into(),
            channel: Channel::Push,
            category: None,
            base_rate: 0.06,
            rates: vec![AudienceRate { audience: Audience::HighActivity, rate: 0.15 }],
        },
    ]
}

/// A config that cannot be generated from.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("`{field}` must be {expected}, got {value}")]
    OutOfRange { field: &'static str, expected: &'static str, value: String },
    #[error("offer `{offer}`: unknown category `{category}` (known: {known})")]
    UnknownCategory { offer: String, category: String, known: String },
    #[error("offer id `{0}` is empty or appears twice")]
    BadOfferId(String),
}

fn check(ok: bool, field: &'static str, expected: &'static str, value: impl ToString) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { field, expected, value: value.to_string() })
    }
}

fn is_share(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

fn is_positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

impl Config {
    /// Sets the session rate so the whole population produces about `rate`
    /// events per simulated second. Above a few sessions per customer per
    /// day the most active customers saturate (a visit takes minutes and the
    /// next one starts at least a minute later), so the real rate falls
    /// short: add customers rather than sessions for high simulated rates.
    pub fn set_events_per_second(&mut self, rate: f64) {
        self.sessions_per_customer_day = rate * 86_400.0 / EVENTS_PER_SESSION / f64::from(self.customers.max(1));
    }

    /// About how many events per simulated second this config produces.
    pub fn events_per_second(&self) -> f64 {
        self.sessions_per_customer_day * f64::from(self.customers) * EVENTS_PER_SESSION / 86_400.0
    }

    /// The id prefix in effect.
    pub fn id_prefix(&self) -> String {
        self.id_prefix.clone().unwrap_or_else(|| format!("lg{}", self.seed))
    }

    /// Checks ranges and references; no I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(self.customers >= 1, "customers", "at least 1", self.customers)?;
        check(self.products >= 1, "products", "at least 1", self.products)?;
        check(self.start >= MIN_EVENT_TIME, "start", "at or after 2000-01-01", self.start.as_millis())?;
        check(
            is_positive(self.sessions_per_customer_day),
            "sessions_per_customer_day",
            "a positive number",
            self.sessions_per_customer_day,
        )?;
        check(
            self.activity_skew.is_finite() && self.activity_skew >= 0.0,
            "activity_skew",
            ">= 0",
            self.activity_skew,
        )?;
        check(self.product_skew.is_finite() && self.product_skew >= 0.0, "product_skew", ">= 0", self.product_skew)?;
        check(is_share(self.abandon_share), "abandon_share", "in [0, 1]", self.abandon_share)?;
        check(is_share(self.lapse_share), "lapse_share", "in [0, 1]", self.lapse_share)?;
        check(self.lapse_after.as_millis() > 0, "lapse_after", "positive", self.lapse_after.as_millis())?;
        check(is_share(self.offer_share), "offer_share", "in [0, 1]", self.offer_share)?;
        check(is_share(self.profile_update_share), "profile_update_share", "in [0, 1]", self.profile_update_share)?;
        check(is_share(self.forget_share), "forget_share", "in [0, 1]", self.forget_share)?;
        check(self.forget_within.as_millis() > 0, "forget_within", "positive", self.forget_within.as_millis())?;
        check(!self.currency.is_empty(), "currency", "an ISO 4217 code", &self.currency)?;
        if let Some(s) = self.shard {
            check(s.count >= 1 && s.index < s.count, "shard", "index < count", format!("{}/{}", s.index, s.count))?;
        }
        match self.pacing {
            Pacing::AsFastAsPossible => {}
            Pacing::Accelerated { factor } => check(is_positive(factor), "pacing.factor", "positive", factor)?,
            Pacing::EventsPerSecond { rate } => check(is_positive(rate), "pacing.rate", "positive", rate)?,
        }
        let known = || CATEGORIES.iter().map(|c| c.name).collect::<Vec<_>>().join(", ");
        for (i, o) in self.offers.iter().enumerate() {
            if o.id.is_empty() || self.offers[..i].iter().any(|p| p.id == o.id) {
                return Err(ConfigError::BadOfferId(o.id.clone()));
            }
            check(is_share(o.base_rate), "offers.base_rate", "in [0, 1]", o.base_rate)?;
            let mut cats: Vec<&str> = o.category.iter().map(String::as_str).collect();
            for r in &o.rates {
                check(is_share(r.rate), "offers.rates.rate", "in [0, 1]", r.rate)?;
                if let Audience::Prefers(c) = &r.audience {
                    cats.push(c);
                }
            }
            for c in cats {
                if Category::parse(c).is_none() {
                    return Err(ConfigError::UnknownCategory {
                        offer: o.id.clone(),
                        category: c.to_string(),
                        known: known(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let c = Config { abandon_share: 1.5, ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("abandon_share"));
        let mut c = Config::default();
        c.offers[0].rates[0].audience = Audience::Prefers("ketto".into());
        assert!(matches!(c.validate(), Err(ConfigError::UnknownCategory { .. })));
        let mut c = Config::default();
        c.offers.push(c.offers[0].clone());
        assert!(matches!(c.validate(), Err(ConfigError::BadOfferId(_))));
        let c = Config { shard: Some(Shard { index: 2, count: 2 }), ..Config::default() };
        assert!(c.validate().is_err());
    }

    #[test]
    fn config_reads_from_json_and_rejects_unknown_fields() {
        let c: Config = serde_json::from_str(
            r#"{"seed": 7, "customers": 100, "pacing": {"accelerated": {"factor": 60.0}},
                "offers": [{"id": "o", "channel": "email", "base_rate": 0.1,
                            "rates": [{"audience": {"prefers": "keto"}, "rate": 0.5},
                                      {"audience": "lapsed", "rate": 0.2}]}]}"#,
        )
        .unwrap();
        assert_eq!((c.seed, c.customers, c.products), (7, 100, Config::default().products));
        assert_eq!(c.pacing, Pacing::Accelerated { factor: 60.0 });
        assert_eq!(c.offers[0].rates[1].audience, Audience::Lapsed);
        c.validate().unwrap();
        let back: Config = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<Config>(r#"{"customer": 5}"#).is_err());
    }

    #[test]
    fn events_per_second_round_trips() {
        let mut c = Config::default();
        c.set_events_per_second(250.0);
        assert!((c.events_per_second() - 250.0).abs() < 1e-9);
    }

    #[test]
    fn pacing_offsets() {
        let start = Timestamp(1_000_000);
        let t = start + Duration::from_hours(1);
        assert_eq!(Pacing::AsFastAsPossible.wall_offset(start, t, 5), None);
        assert_eq!(
            Pacing::Accelerated { factor: 3600.0 }.wall_offset(start, t, 5),
            Some(std::time::Duration::from_secs(1))
        );
        assert_eq!(
            Pacing::EventsPerSecond { rate: 10.0 }.wall_offset(start, t, 5),
            Some(std::time::Duration::from_millis(500))
        );
    }
}
