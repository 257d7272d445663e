//! Writes the seed corpora: `seeds <dir>` fills `<dir>/<target>/` for each
//! fuzz target with valid inputs (records of every kind in every format,
//! customer states, the repository's rules files). Small and regenerated
//! on every `make fuzz`, so they are not committed; what the fuzzer adds
//! next to them is not committed either.

use cohort_codec::{Format, RecordType};
use cohort_fuzz::{
    encoder, input_kind, sample_events, sample_next_best_offers, sample_segment_changes, sample_states, selector,
    Target,
};
use std::path::{Path, PathBuf};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    std::fs::write(d.join(name), bytes).expect("seed written");
}

/// Every sample record encoded in `format`, with its selector byte.
fn records(format: Format) -> Vec<(Target, Vec<u8>)> {
    let enc = encoder(format);
    let mut out = Vec::new();
    for ev in sample_events() {
        let bytes = enc.encode_event(&ev).expect("encodes").expect("a value");
        out.push((Target::Input(input_kind(&ev)), bytes));
    }
    for o in sample_segment_changes() {
        out.push((Target::SegmentChanged, enc.encode_segment_changed(&o).expect("encodes")));
    }
    for o in sample_next_best_offers() {
        out.push((Target::NextBestOffer, enc.encode_next_best_offer(&o).expect("encodes")));
    }
    out
}

fn codec_seeds(dir: &Path, target: &str, format: Format) {
    for (i, (t, bytes)) in records(format).into_iter().enumerate() {
        // With no key, and with the key that matches the payload.
        for key in [0, 1] {
            let mut seed = vec![selector(t, key)];
            seed.extend_from_slice(&bytes);
            write(dir, target, &format!("{i:02}-{key}"), &seed);
        }
    }
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    codec_seeds(&dir, "avro_decode", Format::Avro);
    codec_seeds(&dir, "json_decode", Format::Json);
    codec_seeds(&dir, "confluent_header", Format::ConfluentAvro);
    // The same datums under the generic-only ids and the evolved schemas'.
    for (i, (t, bytes)) in records(Format::ConfluentAvro).into_iter().enumerate() {
        let rt: RecordType = t.record_type();
        let mut seed = vec![selector(t, 0)];
        seed.extend_from_slice(&bytes);
        seed[2..6].copy_from_slice(&cohort_fuzz::generic_id(rt).to_be_bytes());
        write(&dir, "confluent_header", &format!("{i:02}-generic"), &seed);
        if rt == RecordType::ClickEvent {
            for id in [cohort_fuzz::CLICK_R0_ID, cohort_fuzz::CLICK_FUTURE_ID] {
                seed[2..6].copy_from_slice(&id.to_be_bytes());
                write(&dir, "confluent_header", &format!("{i:02}-{id}"), &seed);
            }
        }
    }
    for (i, s) in sample_states().iter().enumerate() {
        write(&dir, "state_decode", &format!("{i:02}"), &cohort_core::encode::encode(s));
    }
    // Partition metadata: empty, and one with offsets, populations, a
    // changelog position and tables learned from purchases and outcomes.
    let mut meta = cohort_core::partition::PartitionMeta::default();
    write(&dir, "partition_meta_decode", "00", &meta.encode());
    meta.watermark = cohort_core::time::Timestamp(1_736_760_274_874);
    meta.next_offsets.insert("clickstream".into(), 657);
    meta.next_offsets.insert("purchases".into(), 20);
    meta.populations.insert("vip".into(), 3);
    meta.populations.insert("lapsed".into(), 1_000_000);
    meta.changelog_next = Some(42);
    meta.tables.propensity.record("winback_20", cohort_core::event::Outcome::Converted);
    meta.tables.propensity.record("winback_20", cohort_core::event::Outcome::Dismissed);
    write(&dir, "partition_meta_decode", "01", &meta.encode());
    // Rules: the shipped example, the golden tests' file, and every YAML
    // block of the user guide.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, path) in [("deploy", "deploy/rules.yaml"), ("golden", "crates/cohort-core/tests/golden/rules.yaml")] {
        let text = std::fs::read(root.join(path)).expect("rules file");
        write(&dir, "rules_parse", name, &text);
    }
    let guide = std::fs::read_to_string(root.join("docs/rules.md")).expect("docs/rules.md");
    for (i, block) in guide.split("```yaml").skip(1).enumerate() {
        let block = block.split("```").next().unwrap_or_default();
        write(&dir, "rules_parse", &format!("guide-{i:02}"), block.as_bytes());
    }
}
