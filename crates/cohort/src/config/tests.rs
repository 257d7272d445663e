use super::*;

fn none() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn defaults_follow_the_design_topic_table() {
    let c = Config::from_toml("c.toml", "", none()).expect("defaults are valid");
    assert_eq!(c.topics.profiles, "customer-profiles");
    assert_eq!(c.topics.dlq, "cohort-dlq");
    assert_eq!(c.http.listen, "127.0.0.1:9464");
}

#[test]
fn an_unknown_key_is_refused_with_its_line_and_the_expected_keys() {
    let text = "[kafka]\ngroup_id = \"g\"\n\n[processing]\nbatch_size = 10\n";
    let e = Config::from_toml("cohort.toml", text, none()).expect_err("unknown key");
    let msg = e.to_string();
    assert!(msg.starts_with("cohort.toml:5:1: unknown field `batch_size`"), "{msg}");
    assert!(msg.contains("batch_max_records"), "lists what was expected: {msg}");
}

#[test]
fn a_wrong_type_names_line_and_column() {
    let text = "[processing]\nbatch_max_records = \"many\"\n";
    let e = Config::from_toml("cohort.toml", text, none()).expect_err("wrong type");
    let msg = e.to_string();
    assert!(msg.starts_with("cohort.toml:2:21:"), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn a_bad_duration_is_refused() {
    let e = Config::from_toml("c.toml", "[processing]\nallowed_lateness = \"5 parsecs\"\n", none())
        .expect_err("bad duration");
    assert!(e.to_string().starts_with("c.toml:2:"), "{e}");
}

#[test]
fn environment_overrides_the_file() {
    let text = "[kafka]\ngroup_id = \"from-file\"\n";
    let env = vec![
        ("COHORT__KAFKA__GROUP_ID".to_string(), "from-env".to_string()),
        ("COHORT__PROCESSING__BATCH_MAX_RECORDS".to_string(), "500".to_string()),
        ("COHORT__KAFKA__PROPERTIES__SASL.MECHANISMS".to_string(), "PLAIN".to_string()),
        ("COHORT__TOPICS__CLICKSTREAM".to_string(), "web-clicks".to_string()),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let c = Config::from_toml("c.toml", text, env).expect("valid");
    assert_eq!(c.kafka.group_id, "from-env");
    assert_eq!(c.processing.batch_max_records, 500);
    assert_eq!(c.kafka.properties.get("sasl.mechanisms").map(String::as_str), Some("PLAIN"));
    assert_eq!(c.topics.clickstream, "web-clicks");
}

#[test]
fn a_bad_environment_override_names_the_variable() {
    let env = vec![("COHORT__PROCESSING__BATCH_MAX_RECORDS".to_string(), "lots".to_string())];
    let e = Config::from_toml("c.toml", "", env).expect_err("bad env");
    assert!(e.to_string().contains("COHORT__PROCESSING__BATCH_MAX_RECORDS"), "{e}");
}

#[test]
fn confluent_schema_ids_are_numbers() {
    let ok = "[format]\ninput = \"confluent-avro\"\n[format.schema_ids]\n7 = \"io.cohort.v1.ClickEvent.avsc\"\n";
    let c = Config::from_toml("c.toml", ok, none()).expect("valid");
    assert_eq!(c.format.schema_id_list(), vec![(7, "io.cohort.v1.ClickEvent.avsc".to_string())]);
    let bad = "[format.schema_ids]\nclick = \"io.cohort.v1.ClickEvent.avsc\"\n";
    let e = Config::from_toml("c.toml", bad, none()).expect_err("not a number");
    assert!(e.to_string().contains("`click` is not a schema id"), "{e}");
}

#[test]
fn the_rendered_toml_reads_back_as_the_same_config_with_secrets_masked() {
    let file = include_str!("../../../../deploy/cohort.toml");
    let env = vec![
        ("COHORT__KAFKA__PROPERTIES__SASL.PASSWORD".to_string(), "hunter2".to_string()),
        ("COHORT__KAFKA__PROPERTIES__SASL.USERNAME".to_string(), "cohort-eu".to_string()),
        ("COHORT__KAFKA__CONSUMER_PROPERTIES__SSL.KEY.PASSWORD".to_string(), "007".to_string()),
        ("COHORT__KAFKA__PRODUCER_PROPERTIES__SASL.OAUTHBEARER.CLIENT.SECRET".to_string(), "s3\"cr3t".to_string()),
        ("COHORT__FORMAT__INPUT".to_string(), "confluent-avro".to_string()),
        ("COHORT__FORMAT__SCHEMA_IDS__7".to_string(), "io.cohort.v1.ClickEvent.avsc".to_string()),
        ("COHORT__PROCESSING__ALLOWED_LATENESS".to_string(), "90s".to_string()),
        ("COHORT__STORE__ROCKSDB__COMPRESSION".to_string(), "zstd".to_string()),
        ("COHORT__STORE__ROCKSDB__BLOOM_BITS_PER_KEY".to_string(), "7.5".to_string()),
    ];
    let c = Config::from_toml("cohort.toml", file, env).expect("valid");
    assert_eq!(c.kafka.consumer_properties["ssl.key.password"], "007", "a property is text, leading zero kept");
    assert_eq!(c.store.rocksdb.compression, cohort_store::Compression::Zstd);

    let text = c.to_masked_toml().expect("renders");
    for secret in ["hunter2", "007", "s3"] {
        assert!(!text.contains(secret), "{secret} in\n{text}");
    }
    assert!(text.contains("\"sasl.password\" = \"<redacted>\""), "{text}");
    let back = Config::from_toml("rendered", &text, none()).expect("the rendered TOML is a valid config");
    assert_eq!(back, c.masked(), "equal but for the masked secrets");
    assert_eq!(back.kafka.properties["sasl.username"], "cohort-eu", "what is no secret is kept");
    assert_ne!(back, c);
    let defaults = Config::default();
    assert_eq!(Config::from_toml("d", &defaults.to_masked_toml().expect("renders"), none()).expect("valid"), defaults);
}

#[test]
fn a_property_may_be_a_number_or_a_bool_but_nothing_else_and_its_value_is_not_quoted() {
    let text = "[kafka.producer_properties]\n\"linger.ms\" = 5\n\"enable.idempotence\" = true\n";
    let c = Config::from_toml("c.toml", text, none()).expect("valid");
    assert_eq!(c.kafka.producer_properties["linger.ms"], "5");
    assert_eq!(c.kafka.producer_properties["enable.idempotence"], "true");
    let e = Config::from_toml("c.toml", "[kafka.properties]\n\"sasl.password\" = [\"hunter2\"]\n", none())
        .expect_err("an array");
    assert!(e.to_string().contains("`sasl.password` must be a string"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn validate_refuses_duplicate_topics_and_reserved_properties() {
    let e = Config::from_toml("c.toml", "[topics]\ndlq = \"clickstream\"\n", none()).expect_err("dup");
    assert_eq!(
        e.to_string(),
        "c.toml: topics.dlq: `clickstream` is also topics.clickstream; every topic must be distinct"
    );
    let e = Config::from_toml("c.toml", "[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n", none())
        .expect_err("reserved");
    assert!(e.to_string().contains("set by cohort"), "{e}");
}

#[test]
fn readiness_needs_consumer_statistics_and_a_stall_timeout_of_a_second_or_more() {
    let c = Config::from_toml("c.toml", "", none()).expect("defaults");
    assert_eq!(c.processing.stall_timeout, Duration::from_secs(30));
    let off = "[kafka.consumer_properties]\n\"statistics.interval.ms\" = \"0\"\n";
    let e = Config::from_toml("c.toml", off, none()).expect_err("statistics off");
    assert!(e.to_string().contains("kafka.consumer_properties: `statistics.interval.ms` must be"), "{e}");
    let slower = "[kafka.properties]\n\"statistics.interval.ms\" = \"5000\"\n";
    Config::from_toml("c.toml", slower, none()).expect("a slower interval is fine");
    let e = Config::from_toml("c.toml", "[processing]\nstall_timeout = \"500ms\"\n", none()).expect_err("short");
    assert!(e.to_string().contains("processing.stall_timeout: must be at least 1s"), "{e}");
}
