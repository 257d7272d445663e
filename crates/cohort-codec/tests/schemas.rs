//! The schemas directory: every file parses, is documented, namespaced and
//! follows the conventions in docs/schemas.md.

mod common;

use cohort_codec::{RecordType, Registry};
use common::*;
use serde_json::Value;

fn avsc_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(schemas_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_schema_file_parses_and_loads() {
    let files = avsc_files();
    assert_eq!(files.len(), RecordType::ALL.len(), "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        apache_avro::Schema::parse_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    Registry::load(&schemas_dir(), IDS).expect("loads with ids");
}

#[test]
fn every_record_has_its_file_and_the_binary_embeds_that_file() {
    for rt in RecordType::ALL {
        let path = schemas_dir().join(format!("{}.avsc", rt.full_name()));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text, rt.schema_text());
        let j: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(format!("{}.{}", j["namespace"].as_str().unwrap(), j["name"].as_str().unwrap()), rt.full_name());
        assert!(rt.full_name().starts_with("io.cohort.v1."));
    }
}

/// Walks a schema JSON and checks: every record, enum and field has a
/// non-empty doc; optional fields are `["null", T]` with default null;
/// `time` fields are timestamp-millis longs.
fn check(j: &Value, path: &str, problems: &mut Vec<String>) {
    match j {
        Value::Object(m) => {
            let t = m.get("type").and_then(Value::as_str).unwrap_or("");
            if matches!(t, "record" | "enum") && m.get("doc").and_then(Value::as_str).is_none_or(str::is_empty) {
                problems.push(format!("{path}: {t} without doc"));
            }
            if t == "record" {
                for f in m["fields"].as_array().unwrap() {
                    let name = f["name"].as_str().unwrap();
                    let fp = format!("{path}.{name}");
                    if f.get("doc").and_then(Value::as_str).is_none_or(str::is_empty) {
                        problems.push(format!("{fp}: field without doc"));
                    }
                    if let Value::Array(branches) = &f["type"] {
                        if branches.first() != Some(&Value::String("null".into()))
                            || f.get("default") != Some(&Value::Null)
                        {
                            problems.push(format!("{fp}: optional field must be [\"null\", T] with default null"));
                        }
                    }
                    if name == "time"
                        && f["type"] != serde_json::json!({"type": "long", "logicalType": "timestamp-millis"})
                    {
                        problems.push(format!("{fp}: time must be a timestamp-millis long"));
                    }
                    check(&f["type"], &fp, problems);
                }
            }
            if let Some(items) = m.get("items") {
                check(items, path, problems);
            }
        }
        Value::Array(branches) => branches.iter().for_each(|b| check(b, path, problems)),
        _ => {}
    }
}

#[test]
fn every_field_is_documented_and_follows_the_conventions() {
    let mut problems = Vec::new();
    for f in avsc_files() {
        let j: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        check(&j, &f.file_name().unwrap().to_string_lossy(), &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
