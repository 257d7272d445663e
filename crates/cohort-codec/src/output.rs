//! The records cohort writes are cohort-core's engine outputs, encoded
//! as-is: `schemas/io.cohort.v1.SegmentChanged.avsc` and
//! `io.cohort.v1.NextBestOffer.avsc` mirror these types field for field
//! (a test checks the field order). Re-exported so the worker can name
//! them from the codec.

pub use cohort_core::engine::{Cause, CauseKind, NextBestOffer, OfferScores, SegmentChanged};

/// The wire symbol of a cause (`CauseKind` enum in the schemas).
pub(crate) fn cause_kind_str(k: CauseKind) -> &'static str {
    match k {
        CauseKind::Event => "event",
        CauseKind::Timer => "timer",
        CauseKind::RulesChanged => "rules_changed",
    }
}

/// Output records that exercise what an encoder of them must get right,
/// for the tests that check the direct writers against the schema-driven
/// ones: every byte JSON escapes, quotes, non-ASCII, long strings and runs
/// that end inside and at the edge of an 8-byte word; empty lists and
/// every `None`; extreme times; zero, negative zero, tiny, huge and
/// non-finite scores; every channel and cause.
#[cfg(test)]
pub(crate) fn samples(n: usize) -> impl Iterator<Item = (SegmentChanged, NextBestOffer)> {
    use cohort_core::event::Channel;
    use cohort_core::time::Timestamp;
    let text = |i: usize| -> String {
        let control: String = (0u8..0x20).map(char::from).collect();
        let pool = [
            String::new(),
            "vip".into(),
            "affinity:électronique".into(),
            "a\"b\\c/d".into(),
            control,
            "\u{7f}😀</script>".into(),
            "y".repeat(200),
            "1234567\"".into(),
            "12345678\n".into(),
        ];
        pool[i % pool.len()].clone()
    };
    let texts = move |i: usize| -> Vec<String> { (0..i % 4).map(|k| text(i + k)).collect() };
    let cause = move |i: usize| Cause {
        kind: [CauseKind::Event, CauseKind::Timer, CauseKind::RulesChanged][i % 3],
        event_id: (i % 2 == 0).then(|| format!("e-{i}{}", text(i))),
        trigger: (i % 5 == 0).then(|| "cart_abandoned".to_string()),
    };
    let times = [0, 1, -1, i64::MAX, i64::MIN, 1_700_000_000_000];
    let doubles =
        [0.0, -0.0, 0.1, 112.97, -3.5e-300, 1e300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 123_456_789.125];
    (0..n).map(move |i| {
        let sc = SegmentChanged {
            id: format!("{i:032x}"),
            customer: if i % 9 == 0 { String::new() } else { format!("c-{i}{}", text(i + 5)) },
            time: Timestamp(times[i % times.len()]),
            entered: texts(i),
            exited: texts(i + 1),
            segments: texts(i + 2),
            cause: cause(i),
            rules_version: text(i + 3),
        };
        let d = |k: usize| doubles[(i + k) % doubles.len()];
        let nbo = NextBestOffer {
            id: format!("{i:032x}"),
            customer: format!("c-{i}"),
            time: Timestamp(times[(i + 1) % times.len()]),
            offer: (i % 3 != 0).then(|| format!("offer-{}", text(i))),
            holdout_offer: (i % 4 == 0).then(|| text(i + 1)),
            channel: if i % 8 == 7 { None } else { Some(Channel::ALL[i % 7]) },
            scores: OfferScores {
                propensity: i as f64 / 7.0,
                context_weight: d(0),
                value: d(3),
                lever: d(7),
                total: if i % 2 == 0 { i as f64 } else { f64::MAX },
            },
            products: texts(i + 3),
            holdout: i % 2 == 1,
            cause: cause(i + 1),
            rules_version: String::new(),
        };
        (sc, nbo)
    })
}
