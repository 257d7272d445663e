//! The two output records written as JSON straight from cohort's types,
//! the JSON twin of [`crate::direct::segment_changed`] and
//! [`crate::direct::next_best_offer`]: no value tree, no serializer.
//!
//! The bytes are those of the generic path ([`crate::json::write`] over
//! [`crate::records::segment_changed_value`] and
//! [`crate::records::next_best_offer_value`]): keys in name order, unions
//! as their plain value or `null`, strings escaped as serde_json escapes
//! them, numbers formatted by serde_json's own formatter (a non-finite
//! double as `null`). Output schemas are always cohort's, so the key lists
//! below are fixed; the tests check every byte against the generic path.

use crate::json_input::plain_run;
use crate::output::{cause_kind_str, Cause, NextBestOffer, SegmentChanged};
use serde_json::ser::{CompactFormatter, Formatter};

/// An upper bound on [`segment_changed`]'s length when no string needs an
/// escape, to size its buffer: the keys and punctuation (120 bytes with a
/// time of up to 20 bytes), then the strings with their quotes and commas.
pub(crate) fn segment_changed_len(o: &SegmentChanged) -> usize {
    120 + o.id.len()
        + o.customer.len()
        + o.rules_version.len()
        + strings_len(&o.entered)
        + strings_len(&o.exited)
        + strings_len(&o.segments)
        + cause_len(&o.cause)
}

/// [`segment_changed_len`] for [`next_best_offer`]: 350 bytes of keys,
/// punctuation, a time and five scores of up to 24 bytes each.
pub(crate) fn next_best_offer_len(o: &NextBestOffer) -> usize {
    350 + o.id.len()
        + o.customer.len()
        + o.rules_version.len()
        + opt_len(o.offer.as_deref())
        + opt_len(o.holdout_offer.as_deref())
        + strings_len(&o.products)
        + cause_len(&o.cause)
}

fn strings_len(items: &[String]) -> usize {
    2 + items.iter().map(|s| s.len() + 3).sum::<usize>()
}

fn opt_len(s: Option<&str>) -> usize {
    s.map_or(4, |s| s.len() + 2)
}

fn cause_len(c: &Cause) -> usize {
    50 + opt_len(c.event_id.as_deref()) + opt_len(c.trigger.as_deref())
}

/// Appends a `SegmentChanged` record as JSON.
pub(crate) fn segment_changed(o: &SegmentChanged, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"cause\":");
    cause(&o.cause, out);
    out.extend_from_slice(b",\"customer\":");
    string(&o.customer, out);
    out.extend_from_slice(b",\"entered\":");
    strings(&o.entered, out);
    out.extend_from_slice(b",\"exited\":");
    strings(&o.exited, out);
    out.extend_from_slice(b",\"id\":");
    string(&o.id, out);
    out.extend_from_slice(b",\"rules_version\":");
    string(&o.rules_version, out);
    out.extend_from_slice(b",\"segments\":");
    strings(&o.segments, out);
    out.extend_from_slice(b",\"time\":");
    long(o.time.0, out);
    out.push(b'}');
}

/// Appends a `NextBestOffer` record as JSON.
pub(crate) fn next_best_offer(o: &NextBestOffer, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"cause\":");
    cause(&o.cause, out);
    out.extend_from_slice(b",\"channel\":");
    opt_string(o.channel.map(|c| c.as_str()), out);
    out.extend_from_slice(b",\"customer\":");
    string(&o.customer, out);
    out.extend_from_slice(b",\"holdout\":");
    out.extend_from_slice(if o.holdout { b"true" } else { b"false" });
    out.extend_from_slice(b",\"holdout_offer\":");
    opt_string(o.holdout_offer.as_deref(), out);
    out.extend_from_slice(b",\"id\":");
    string(&o.id, out);
    out.extend_from_slice(b",\"offer\":");
    opt_string(o.offer.as_deref(), out);
    out.extend_from_slice(b",\"products\":");
    strings(&o.products, out);
    out.extend_from_slice(b",\"rules_version\":");
    string(&o.rules_version, out);
    let sc = &o.scores;
    out.extend_from_slice(b",\"scores\":{\"context_weight\":");
    double(sc.context_weight, out);
    out.extend_from_slice(b",\"lever\":");
    double(sc.lever, out);
    out.extend_from_slice(b",\"propensity\":");
    double(sc.propensity, out);
    out.extend_from_slice(b",\"total\":");
    double(sc.total, out);
    out.extend_from_slice(b",\"value\":");
    double(sc.value, out);
    out.extend_from_slice(b"},\"time\":");
    long(o.time.0, out);
    out.push(b'}');
}

fn cause(c: &Cause, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"event_id\":");
    opt_string(c.event_id.as_deref(), out);
    out.extend_from_slice(b",\"kind\":");
    string(cause_kind_str(c.kind), out);
    out.extend_from_slice(b",\"trigger\":");
    opt_string(c.trigger.as_deref(), out);
    out.push(b'}');
}

fn strings(items: &[String], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(s, out);
    }
    out.push(b']');
}

fn opt_string(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => string(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string as serde_json writes it: `"` and `\` escaped, the control
/// characters below 0x20 as `\b`, `\t`, `\n`, `\f`, `\r` or `\u00xx`,
/// everything else (non-ASCII included) as it is.
fn string(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut i = 0;
    loop {
        // `plain_run` stops exactly at `"`, `\` and bytes below 0x20.
        let end = plain_run(bytes, i);
        out.extend_from_slice(&bytes[i..end]);
        let Some(&b) = bytes.get(end) else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        i = end + 1;
    }
    out.push(b'"');
}

fn long(v: i64, out: &mut Vec<u8>) {
    CompactFormatter.write_i64(out, v).expect("a Vec takes every write");
}

/// serde_json's way: a finite double by its shortest round-trip form, any
/// other as `null`.
fn double(v: f64, out: &mut Vec<u8>) {
    if v.is_finite() {
        CompactFormatter.write_f64(out, v).expect("a Vec takes every write");
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{CauseKind, OfferScores};
    use crate::schema::RecordType;
    use cohort_core::event::Channel;
    use cohort_core::time::Timestamp;

    fn generic(v: &crate::avro::V<'_>, rt: RecordType) -> Vec<u8> {
        let reg = crate::Registry::builtin();
        let mut out = Vec::new();
        crate::json::write(reg.node(rt), v, &mut out).expect("writes");
        out
    }

    #[test]
    fn writes_outputs_byte_for_byte_as_the_generic_path() {
        for (sc, nbo) in crate::output::samples(600) {
            let mut direct = Vec::new();
            segment_changed(&sc, &mut direct);
            let generic_sc = generic(&crate::records::segment_changed_value(&sc), RecordType::SegmentChanged);
            assert!(
                direct == generic_sc,
                "{}\n{}\n{sc:?}",
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&generic_sc)
            );

            let mut direct = Vec::new();
            next_best_offer(&nbo, &mut direct);
            let generic_nbo = generic(&crate::records::next_best_offer_value(&nbo), RecordType::NextBestOffer);
            assert!(
                direct == generic_nbo,
                "{}\n{}\n{nbo:?}",
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&generic_nbo)
            );
        }
    }

    #[test]
    fn the_size_hints_hold_for_text_without_escapes() {
        for n in 0..12 {
            let names: Vec<String> = (0..n).map(|k| format!("affinity:électronique-{k}")).collect();
            let cause = Cause {
                kind: CauseKind::RulesChanged,
                event_id: Some("e".repeat(40)),
                trigger: Some("cart_abandoned".into()),
            };
            let sc = SegmentChanged {
                id: "f".repeat(32),
                customer: "customer-0000000001".into(),
                time: Timestamp(i64::MIN),
                entered: names.clone(),
                exited: names.clone(),
                segments: names.clone(),
                cause: cause.clone(),
                rules_version: "1-ba7f5ad6de06ac95".into(),
            };
            let mut out = Vec::new();
            segment_changed(&sc, &mut out);
            assert!(out.len() <= segment_changed_len(&sc), "{} > {}", out.len(), segment_changed_len(&sc));
            let nbo = NextBestOffer {
                id: "f".repeat(32),
                customer: "customer-0000000001".into(),
                time: Timestamp(i64::MIN),
                offer: Some("winback-20".into()),
                holdout_offer: Some("winback-10".into()),
                channel: Some(Channel::Email),
                scores: OfferScores {
                    propensity: -f64::MIN_POSITIVE,
                    context_weight: f64::MIN,
                    value: -1.2345678901234567e-300,
                    lever: f64::MIN,
                    total: -f64::MIN_POSITIVE,
                },
                products: names,
                holdout: true,
                cause,
                rules_version: "1-ba7f5ad6de06ac95".into(),
            };
            let mut out = Vec::new();
            next_best_offer(&nbo, &mut out);
            assert!(out.len() <= next_best_offer_len(&nbo), "{} > {}", out.len(), next_best_offer_len(&nbo));
        }
    }
}
