//! The metrics read true from the start, and the docs list what the code
//! exports: one list of dead-letter reasons (`cohort::dlq::reason::all`)
//! initialises the counters and is the list README.md and docs/schemas.md
//! give; README's metrics table names exactly the metrics of metrics.rs.

use cohort::metrics::{decode_error_reasons, Metrics};
use std::collections::BTreeSet;
use std::path::Path;

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)).expect("read doc")
}

/// The text of the section that starts with `heading` (up to the next heading
/// of the same or a higher level).
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no {heading:?}")) + 1;
    let level = heading.chars().take_while(|c| *c == '#').count();
    let rest = &doc[start + heading.len()..];
    let end = rest
        .match_indices("\n#")
        .find(|(i, _)| rest[i + 1..].chars().take_while(|c| *c == '#').count() <= level)
        .map_or(rest.len(), |(i, _)| i);
    &rest[..end]
}

/// Every `` `word` `` made of lower-case letters, digits and underscores.
fn code_words(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .map(str::to_string)
        .collect()
}

fn reasons() -> BTreeSet<String> {
    cohort::dlq::reason::all().into_iter().map(str::to_string).collect()
}

#[test]
fn the_docs_list_exactly_the_dead_letter_reasons_of_the_code() {
    let schemas = read("docs/schemas.md");
    // The first column of the two reason tables.
    let in_tables: BTreeSet<String> = section(&schemas, "## Bad input")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    assert_eq!(in_tables, reasons(), "docs/schemas.md, \"Bad input\"");

    let readme = read("README.md");
    let dead_letters = section(&readme, "### Dead letters");
    let listed = &dead_letters[dead_letters.find("Reasons:").expect("a list of reasons")..];
    let listed: BTreeSet<String> =
        code_words(listed).into_iter().filter(|w| !w.starts_with("cohort_") && !w.contains('.')).collect();
    assert_eq!(listed, reasons(), "README.md, \"Dead letters\"");
}

#[test]
fn every_reason_has_a_series_at_zero_before_the_first_dead_letter() {
    let text = Metrics::new().expect("metrics").render();
    for r in reasons() {
        let series = format!("cohort_dlq_records_total{{reason=\"{r}\"}} 0");
        assert!(text.lines().any(|l| l == series), "{series} missing");
    }
    for r in decode_error_reasons() {
        let series = format!("cohort_input_decode_errors_total{{reason=\"{r}\"}} 0");
        assert!(text.lines().any(|l| l == series), "{series} missing");
    }
}

#[test]
fn event_to_output_latency_buckets_reach_days() {
    let m = Metrics::new().expect("metrics");
    // A replay of week-old events: every observation lands below +Inf.
    m.event_to_output_latency.observe(3.0 * 86_400.0);
    let text = m.render();
    let bucket = |le: &str| {
        let series = format!("cohort_event_to_output_latency_seconds_bucket{{le=\"{le}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or_else(|| panic!("no bucket {le}")).to_string()
    };
    assert_eq!(bucket("30"), "0", "3 days are not \"over 30 s\"");
    assert_eq!(bucket("259200"), "1");
    assert_eq!(bucket("604800"), "1");
    let buckets = text.lines().filter(|l| l.starts_with("cohort_event_to_output_latency_seconds_bucket")).count();
    assert!(buckets <= 25, "{buckets} buckets: keep the series count reasonable");
}

#[test]
fn the_readme_metrics_table_names_exactly_the_metrics_of_metrics_rs() {
    let src = read("crates/cohort/src/metrics.rs");
    // The quoted names passed to the constructors, as scripts/check-deploy.sh
    // finds them: `"cohort_[a-z0-9_]+"`.
    let defined: BTreeSet<String> = src
        .match_indices("\"cohort_")
        .filter_map(|(i, _)| {
            let rest = &src[i + 1..];
            let end = rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))?;
            (end > "cohort_".len() && rest[end..].starts_with('"')).then(|| rest[..end].to_string())
        })
        .collect();
    let readme = read("README.md");
    let table: BTreeSet<String> = section(&readme, "### Metrics")
        .lines()
        .filter(|l| l.starts_with("| `cohort_"))
        .flat_map(|l| code_words(l.split(" | ").next().unwrap_or_default()))
        .collect();
    assert_eq!(table, defined, "README.md, \"Metrics\", first column");
}
