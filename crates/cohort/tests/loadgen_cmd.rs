//! `cohort loadgen` writes decodable traffic to a file and to a real broker.

use cohort_codec::{Decoder, Format, InputKind, Record, Registry};
use cohort_e2e::{consume_to_end, create_topic, unique_name, TestBroker};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn kind(topic: &str) -> InputKind {
    match topic.rsplit('-').next().unwrap_or_default() {
        "clickstream" => InputKind::Click,
        "purchases" => InputKind::Purchase,
        "profiles" => InputKind::Profile,
        _ => InputKind::OfferOutcome,
    }
}

#[test]
fn writes_json_lines_that_the_codec_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("traffic.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["loadgen", "--events", "2000", "--customers", "100", "--out"])
        .arg(&out)
        .status()
        .expect("run cohort loadgen");
    assert!(status.success());
    let text = std::fs::read_to_string(&out).expect("output");
    let decoder = Decoder::new(Format::Json, Arc::new(Registry::builtin()));
    let mut topics = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let topic = v["topic"].as_str().expect("topic").to_string();
        let key = v["key"].as_str().expect("key").as_bytes().to_vec();
        let value = serde_json::to_vec(&v["value"]).expect("value");
        let rec = Record {
            topic: &topic,
            partition: 0,
            offset: i as i64,
            timestamp: None,
            key: Some(&key),
            value: Some(&value),
        };
        let k = match topic.as_str() {
            "clickstream" => InputKind::Click,
            "purchases" => InputKind::Purchase,
            "customer-profiles" => InputKind::Profile,
            _ => InputKind::OfferOutcome,
        };
        decoder.decode(k, &rec).unwrap_or_else(|e| panic!("line {i} does not decode: {e}"));
        topics.insert(topic);
    }
    assert_eq!(text.lines().count(), 2000);
    assert!(topics.contains("clickstream") && topics.contains("purchases") && topics.contains("customer-profiles"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_avro_to_every_input_topic_of_a_real_broker() {
    let broker = TestBroker::shared();
    let prefix = unique_name("loadgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    let mut text = String::from("[topics]\n");
    for (key, t) in [
        ("clickstream", "clickstream"),
        ("purchases", "purchases"),
        ("profiles", "profiles"),
        ("offer_outcomes", "outcomes"),
    ] {
        create_topic(broker.bootstrap(), &format!("{prefix}-{t}"), 1).await.expect("topic");
        text.push_str(&format!("{key} = \"{prefix}-{t}\"\n"));
    }
    std::fs::write(&config, text).expect("config");
    let status = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "loadgen",
            "--format",
            "avro",
            "--events",
            "3000",
            "--customers",
            "200",
            "--bootstrap",
            broker.bootstrap(),
            "--config",
        ])
        .arg(&config)
        .status()
        .expect("run cohort loadgen");
    assert!(status.success());
    let decoder = Decoder::new(Format::Avro, Arc::new(Registry::builtin()));
    let mut total = 0;
    for t in ["clickstream", "purchases", "profiles", "outcomes"] {
        let topic = format!("{prefix}-{t}");
        let recs = consume_to_end(broker.bootstrap(), &topic, Duration::from_secs(60)).await.expect("consume");
        for r in &recs {
            let rec = Record {
                topic: &topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: None,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
            };
            decoder.decode(kind(&topic), &rec).unwrap_or_else(|e| panic!("{topic} record does not decode: {e}"));
        }
        total += recs.len();
    }
    assert_eq!(total, 3000, "every event lands on its topic");
}
