//! What the fuzz targets share: the registry they decode with, how they
//! read the selector byte in front of each input, and the sample values the
//! seed corpora are made of (`src/bin/seeds.rs`).

use cohort_codec::{
    Cause, CauseKind, DecodeError, Decoder, Encoder, Format, InputKind, NextBestOffer, OfferScores, Record, RecordType,
    Registry, SegmentChanged,
};
use cohort_core::event::{
    Channel, Click, ClickKind, ConsentUpdate, Date, Event, EventKind, Geo, LineItem, OfferOutcome, Outcome,
    ProfileUpdate, Purchase,
};
use cohort_core::time::Timestamp;
use std::sync::{Arc, OnceLock};

/// Schema id of cohort's own schema for `rt` (so `Registry::id_for(rt)`):
/// a Confluent record with this id is read by the direct decoder first.
pub fn builtin_id(rt: RecordType) -> u32 {
    1 + rt as u32
}

/// A second schema id registered with exactly the same schema text as
/// [`builtin_id`]: it is not `Registry::id_for(rt)`, so a record with this
/// id only ever goes the generic way. Comparing the two answers compares
/// the direct decoder with the generic one through the public API.
pub fn generic_id(rt: RecordType) -> u32 {
    11 + rt as u32
}

/// An older ClickEvent revision (fewer fields, a float price, fewer
/// channels): reading it needs defaults, promotions and enum resolution.
pub const CLICK_R0_ID: u32 = 21;
/// A newer ClickEvent revision (extra fields the reader skips).
pub const CLICK_FUTURE_ID: u32 = 22;

/// The registry every target decodes with: cohort's schemas under
/// [`builtin_id`] and again under [`generic_id`], and two evolved
/// ClickEvent writer schemas from the codec's test fixtures.
pub fn registry() -> Arc<Registry> {
    static REG: OnceLock<Arc<Registry>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut reg = Registry::builtin();
        for rt in RecordType::ALL {
            reg.register(builtin_id(rt), rt.schema_text(), "builtin").expect("builtin schema registers");
        }
        for rt in RecordType::ALL {
            reg.register(generic_id(rt), rt.schema_text(), "builtin again").expect("builtin schema registers");
        }
        reg.register(
            CLICK_R0_ID,
            include_str!("../../crates/cohort-codec/tests/fixtures/ClickEvent.r0.avsc"),
            "ClickEvent.r0.avsc",
        )
        .expect("r0 registers");
        reg.register(
            CLICK_FUTURE_ID,
            include_str!("../../crates/cohort-codec/tests/fixtures/ClickEvent.future.avsc"),
            "ClickEvent.future.avsc",
        )
        .expect("future registers");
        for rt in RecordType::ALL {
            assert_eq!(reg.id_for(rt), Some(builtin_id(rt)), "{rt:?}");
        }
        Arc::new(reg)
    })
    .clone()
}

pub fn decoder(format: Format) -> Decoder {
    Decoder::new(format, registry())
}

pub fn encoder(format: Format) -> Encoder {
    Encoder::new(format, registry())
}

/// What a target decodes one input as: one of the four input records or
/// one of the two output records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Input(InputKind),
    SegmentChanged,
    NextBestOffer,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Input(InputKind::Click),
        Target::Input(InputKind::Purchase),
        Target::Input(InputKind::Profile),
        Target::Input(InputKind::OfferOutcome),
        Target::SegmentChanged,
        Target::NextBestOffer,
    ];

    pub fn record_type(self) -> RecordType {
        match self {
            Target::Input(k) => k.record_type(),
            Target::SegmentChanged => RecordType::SegmentChanged,
            Target::NextBestOffer => RecordType::NextBestOffer,
        }
    }
}

/// Kafka keys a target tries: none, the payload's usual customer, another
/// customer, empty, and not UTF-8.
pub const KEYS: [Option<&[u8]>; 5] = [None, Some(b"cust-7"), Some(b"cust-8"), Some(b""), Some(b"\xff")];

/// The selector byte in front of every codec input: the low bits pick the
/// record ([`Target::ALL`]), the next ones the key ([`KEYS`]).
pub fn selector(target: Target, key: usize) -> u8 {
    let t = Target::ALL.iter().position(|t| *t == target).expect("a target") as u8;
    t + 8 * key as u8
}

/// A codec input: the record to decode it as, the Kafka key, the value.
pub type Input<'a> = (Target, Option<&'static [u8]>, &'a [u8]);

/// Splits a codec input into its record, key and value.
pub fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&sel, value) = data.split_first()?;
    let target = *Target::ALL.get(usize::from(sel & 7))?;
    let key = *KEYS.get(usize::from(sel >> 3))?;
    Some((target, key, value))
}

pub fn record<'a>(key: Option<&'a [u8]>, value: &'a [u8]) -> Record<'a> {
    Record {
        topic: "clickstream",
        partition: 3,
        offset: 42,
        timestamp: Some(1_700_000_000_123),
        key,
        value: Some(value),
    }
}

/// Any decode result, as text: events may hold NaN, which is not equal to
/// itself, so results are compared by their `Debug` form.
pub fn show<T: std::fmt::Debug>(r: &T) -> String {
    format!("{r:?}")
}

/// Checks what every decode error must be: one of the stable reasons, with
/// a message.
pub fn check_error(e: &DecodeError) {
    assert!(DecodeError::REASONS.contains(&e.reason()), "{e:?}");
    assert!(!e.to_string().is_empty(), "{e:?}");
}

/// Decodes `value` as `target` with `dec`, as text (see [`show`]).
pub fn decode_shown(dec: &Decoder, target: Target, key: Option<&[u8]>, value: &[u8]) -> String {
    match target {
        Target::Input(kind) => {
            let r = dec.decode(kind, &record(key, value));
            if let Err(e) = &r {
                check_error(e);
            }
            show(&r)
        }
        Target::SegmentChanged => {
            let r = dec.decode_segment_changed(value);
            if let Err(e) = &r {
                check_error(e);
            }
            show(&r)
        }
        Target::NextBestOffer => {
            let r = dec.decode_next_best_offer(value);
            if let Err(e) = &r {
                check_error(e);
            }
            show(&r)
        }
    }
}

/// Decodes `value` as `target` and, when that succeeds, encodes the result
/// with `enc` and decodes that with `dec2`: the answer must be the same.
/// Returns the first decode as text.
pub fn decode_and_roundtrip(
    dec: &Decoder,
    target: Target,
    key: Option<&[u8]>,
    value: &[u8],
    enc: &Encoder,
    dec2: &Decoder,
) -> String {
    let first = decode_shown(dec, target, key, value);
    let again = match target {
        Target::Input(kind) => {
            let Ok(ev) = dec.decode(kind, &record(key, value)) else { return first };
            let bytes = enc.encode_event(&ev).expect("a decoded event encodes").expect("not a forget");
            show(&dec2.decode(kind, &record(key, &bytes)))
        }
        Target::SegmentChanged => {
            let Ok(o) = dec.decode_segment_changed(value) else { return first };
            let bytes = enc.encode_segment_changed(&o).expect("a decoded output encodes");
            show(&dec2.decode_segment_changed(&bytes))
        }
        Target::NextBestOffer => {
            let Ok(o) = dec.decode_next_best_offer(value) else { return first };
            let bytes = enc.encode_next_best_offer(&o).expect("a decoded output encodes");
            show(&dec2.decode_next_best_offer(&bytes))
        }
    };
    assert_eq!(first, again, "re-encoded with {} and decoded again", enc.format());
    first
}

// ---- samples for the seed corpora --------------------------------------

const T: Timestamp = Timestamp(1_700_000_000_123);

fn event(id: &str, kind: EventKind) -> Event {
    Event { id: id.into(), customer: "cust-7".into(), time: T, kind }
}

/// Input events of every kind, with every optional field filled and with
/// every optional field empty.
pub fn sample_events() -> Vec<Event> {
    let full_click = Click {
        kind: ClickKind::AddToCart,
        product_id: Some("sku-1".into()),
        category: Some("keto".into()),
        price: Some(12.5),
        quantity: Some(2),
        page: Some("/p/sku-1".into()),
        search_query: Some("almond flour".into()),
        channel: Some(Channel::App),
        device: Some("ios".into()),
        geo: Geo { country: Some("DE".into()), region: Some("BY".into()), city: Some("München".into()) },
        campaign: Some("spring".into()),
        session_id: Some("s-9".into()),
    };
    vec![
        event("ev-1", EventKind::Click(full_click)),
        event("", EventKind::Click(Click::new(ClickKind::PageView))),
        event(
            "ev-3",
            EventKind::Purchase(Purchase {
                order_id: "o-1".into(),
                items: vec![
                    LineItem {
                        product_id: "sku-1".into(),
                        category: Some("keto".into()),
                        quantity: 2,
                        unit_price: 12.5,
                    },
                    LineItem { product_id: "sku-2".into(), category: None, quantity: 1, unit_price: 0.99 },
                ],
                total: 25.99,
                currency: "EUR".into(),
                channel: Some(Channel::Web),
            }),
        ),
        event(
            "ev-4",
            EventKind::Purchase(Purchase {
                order_id: "o-2".into(),
                items: vec![],
                total: 10.0,
                currency: "USD".into(),
                channel: None,
            }),
        ),
        event(
            "ev-5",
            EventKind::ProfileUpdate(ProfileUpdate {
                birth_date: Some(Date { year: 1985, month: 7, day: 14 }),
                age: Some(40),
                gender: Some("f".into()),
                income_band: Some("high".into()),
                education: Some("master".into()),
                country: Some("NL".into()),
                region: Some("NH".into()),
                city: Some("Amsterdam".into()),
                interests: Some(vec!["running".into(), "keto".into()]),
                consent: ConsentUpdate { email: Some(true), sms: Some(false), push: None, web: Some(true) },
                loyalty_tier: Some("gold".into()),
            }),
        ),
        event("ev-6", EventKind::ProfileUpdate(ProfileUpdate { interests: Some(vec![]), ..Default::default() })),
        event(
            "ev-7",
            EventKind::OfferOutcome(OfferOutcome {
                offer_id: "winback_20".into(),
                decision_id: "nbo-1".into(),
                outcome: Outcome::Converted,
                channel: Some(Channel::Email),
            }),
        ),
        event(
            "ev-8",
            EventKind::OfferOutcome(OfferOutcome {
                offer_id: "winback_20".into(),
                decision_id: "nbo-2".into(),
                outcome: Outcome::Dismissed,
                channel: None,
            }),
        ),
    ]
}

pub fn input_kind(ev: &Event) -> InputKind {
    match ev.kind {
        EventKind::Click(_) => InputKind::Click,
        EventKind::Purchase(_) => InputKind::Purchase,
        EventKind::ProfileUpdate(_) | EventKind::Forget => InputKind::Profile,
        EventKind::OfferOutcome(_) => InputKind::OfferOutcome,
    }
}

pub fn sample_segment_changes() -> Vec<SegmentChanged> {
    vec![SegmentChanged {
        id: "sc-clickstream:3:42".into(),
        customer: "cust-7".into(),
        time: T,
        entered: vec!["cart_abandoner".into()],
        exited: vec![],
        segments: vec!["cart_abandoner".into(), "vip".into()],
        cause: Cause { kind: CauseKind::Timer, event_id: None, trigger: Some("cart_abandoned".into()) },
        rules_version: "1-00ff00ff00ff00ff".into(),
    }]
}

pub fn sample_next_best_offers() -> Vec<NextBestOffer> {
    let nbo = NextBestOffer {
        id: "nbo-1".into(),
        customer: "cust-7".into(),
        time: T,
        offer: Some("winback_20".into()),
        holdout_offer: None,
        channel: Some(Channel::Email),
        scores: OfferScores { propensity: 0.06, context_weight: 1.0, value: 20.0, lever: 1.0, total: 1.2 },
        products: vec!["sku-1".into(), "sku-3".into()],
        holdout: false,
        cause: Cause {
            kind: CauseKind::Event,
            event_id: Some("ev-1".into()),
            trigger: Some("segment_entered:lapsed".into()),
        },
        rules_version: "1-00ff00ff00ff00ff".into(),
    };
    let held_out = NextBestOffer {
        offer: None,
        holdout_offer: Some("winback_20".into()),
        channel: None,
        products: vec![],
        holdout: true,
        ..nbo.clone()
    };
    vec![nbo, held_out]
}

/// Customer states for the state decoder's seeds and for evaluating fuzzed
/// rules: empty, and built from a few weeks of events with every part of
/// the state filled (cart, affinities, offers, segments and their bitset).
pub fn sample_states() -> Vec<cohort_core::state::CustomerState> {
    use cohort_core::state::{CustomerState, Membership, OfferSend, StateSettings};
    let settings = StateSettings::default();
    let mut busy = CustomerState::default();
    let day = 86_400_000;
    let mut t = T.0;
    for (i, ev) in sample_events().into_iter().cycle().take(40).enumerate() {
        t += if i % 5 == 0 { 3 * day } else { 60_000 };
        let ev = Event { id: format!("ev-{i}"), time: Timestamp(t), ..ev };
        busy.record(&ev, &settings);
    }
    let mut view = Click::new(ClickKind::AddToCart);
    view.product_id = Some("sku-9".into());
    view.category = Some("vegan".into());
    view.price = Some(3.25);
    view.quantity = Some(3);
    busy.record(
        &Event { id: "ev-cart".into(), time: Timestamp(t + 1), ..event("", EventKind::Click(view)) },
        &settings,
    );
    busy.record_send(OfferSend {
        decision: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        offer: "winback_20".into(),
        time: Timestamp(t),
        channel: Channel::Email,
        holdout: true,
        outcomes: 0b101,
    });
    busy.segments = vec![
        Membership { segment: "cart_abandoner".into(), since: Timestamp(t - day) },
        Membership { segment: "keto".into(), since: Timestamp(t - 2 * day) },
    ];
    busy.segment_bits.rules = 0x5eed;
    busy.segment_bits.set.insert(0);
    busy.segment_bits.set.insert(200);
    busy.evaluated_at = Some(Timestamp(t));
    let mut profile_only = CustomerState::default();
    profile_only.record(&sample_events()[4], &settings);
    vec![CustomerState::default(), busy, profile_only]
}

/// [`sample_states`], built once.
pub fn rules_states() -> &'static [cohort_core::state::CustomerState] {
    static STATES: OnceLock<Vec<cohort_core::state::CustomerState>> = OnceLock::new();
    STATES.get_or_init(sample_states)
}
