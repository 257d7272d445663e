//! cohort-loadgen: realistic synthetic customer traffic for cohort's demo,
//! tests and benchmarks.
//!
//! It produces [`cohort_core::event::Event`] values, the same typed events the
//! codec hands to the engine, from a [`Config`] and a seed: same seed, same
//! events. The traffic has the structure the engine's rules look for:
//!
//! - a [`Population`] of customers with profiles (age 18-80, gender, income,
//!   education, city, interests, consent) and personas (one to three
//!   preferred categories, Zipf-skewed activity, some who lapse);
//! - a [`Catalog`] of products in categories (keto, vegan, gluten_free,
//!   fashion, outdoor, ...) with Zipf popularity within each category;
//! - sessions of page and product views, searches and cart changes, a share
//!   of carts abandoned, orders whose baskets stay in the customer's
//!   categories, profile events at first sight and now and then after;
//! - offer outcomes whose conversion rate depends on the offer and the
//!   persona (keto offers convert for keto shoppers), so propensity learning
//!   has a signal to find; a converting click brings the customer back for
//!   an order;
//! - optionally, customers who ask to be forgotten (`Forget` events).
//!
//! Ids (`<prefix>.<customer>.e<n>` for events, `.s<n>` sessions, `.o<n>`
//! orders, `.d<n>` offer decisions) depend only on the seed and the
//! customer, so [`Config::shard`] splits the traffic across generators (one
//! per core) whose union is exactly the unsharded traffic, and
//! [`Generator::next_before`] lets a paced sender ask for "everything up to
//! simulated now".
//!
//! Layout: [`config`] (what to generate, pacing), [`catalog`], [`population`],
//! [`generator`] (the event iterator), `rng` and `dist` (a SplitMix64 PRNG and
//! a cumulative-table sampler for weighted and Zipf draws).
//!
//! The generator is pure: no I/O, no system clock (event time is simulated
//! from [`Config::start`]; [`Pacing`] says when a sender should send each
//! event). This crate must not depend on Kafka, RocksDB or an async runtime:
//! writing to Kafka (Avro or JSON) or to files belongs to the `cohort`
//! binary or a feature-gated command.
//!
//! ```
//! use cohort_loadgen::{Config, Generator};
//!
//! let config = Config { customers: 1_000, seed: 7, ..Config::default() };
//! let events: Vec<_> = Generator::new(config).unwrap().take(100).collect();
//! assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
//! ```

pub mod catalog;
pub mod config;
mod dist;
pub mod generator;
pub mod population;
mod rng;

pub use catalog::{Catalog, Category, Product, CATEGORIES};
pub use config::{Audience, AudienceRate, Config, ConfigError, OfferSpec, Pacing, Shard, EVENTS_PER_SESSION};
pub use generator::Generator;
pub use population::{Customer, Persona, Population, Profile};
