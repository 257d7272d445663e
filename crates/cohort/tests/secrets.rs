//! No secret in what the `cohort` binary prints: `check-config` masks
//! secret-bearing librdkafka properties, prints TOML it accepts back, and
//! fails on a missing or invalid rules file; a worker's log and a refused
//! property's error never quote a secret. None of this needs a broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

/// `cohort ARGS` in the repository, with `env` and no other COHORT__
/// variable, no RUST_LOG.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cohort"));
    c.args(args).current_dir(repo("")).env_remove("RUST_LOG").env_remove("COHORT_CONFIG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("COHORT__")) {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    c
}

fn cohort(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("run cohort")
}

/// A child process killed when dropped (a failed assertion included).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// deploy/cohort.toml with this repository's rules and schemas instead of
/// the container image's paths.
const HERE: [(&str, &str); 2] =
    [("COHORT__RULES__PATH", "deploy/rules.yaml"), ("COHORT__FORMAT__SCHEMAS_DIR", "schemas")];

#[test]
fn check_config_masks_secrets_and_prints_toml_that_it_accepts_back() {
    let secrets = [
        ("COHORT__KAFKA__PROPERTIES__SASL.PASSWORD", "hunter2-pw"),
        ("COHORT__KAFKA__CONSUMER_PROPERTIES__SSL.KEY.PASSWORD", "hunter2-key"),
        ("COHORT__KAFKA__PRODUCER_PROPERTIES__SSL.KEYSTORE.PASSWORD", "hunter2-keystore"),
    ];
    let mut env = HERE.to_vec();
    env.extend(secrets);
    env.push(("COHORT__KAFKA__PROPERTIES__SASL.USERNAME", "cohort-eu"));
    let out = cohort(&["check-config", "--config", "deploy/cohort.toml"], &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for (_, secret) in secrets {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    let toml = String::from_utf8(out.stdout).expect("utf-8");
    assert!(toml.contains("\"sasl.password\" = \"<redacted>\""), "{toml}");
    assert!(toml.contains("\"sasl.username\" = \"cohort-eu\""), "what is no secret is shown: {toml}");
    assert!(toml.contains("22 segments, 11 offers"), "says what it checked: {toml}");
    assert!(!toml.contains("KafkaConfig {"), "TOML, not Rust Debug: {toml}");

    // What it printed is a configuration it (and so `cohort run`) accepts,
    // and prints again unchanged.
    let dir = tempfile::tempdir().expect("tempdir");
    let effective = dir.path().join("effective.toml");
    std::fs::write(&effective, &toml).expect("write");
    let again = cohort(&["check-config", "--config", effective.to_str().expect("path")], &[]);
    assert!(again.status.success(), "{}", text(&again));
    let again = String::from_utf8(again.stdout).expect("utf-8");
    let body = |t: &str| t.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&toml));
}

#[test]
fn check_config_fails_on_a_missing_or_invalid_rules_file_and_names_it() {
    let missing = cohort(
        &["check-config", "--config", "deploy/cohort.toml"],
        &[("COHORT__RULES__PATH", "/nonexistent/rules.yaml"), HERE[1]],
    );
    assert!(!missing.status.success());
    assert!(text(&missing).contains("/nonexistent/rules.yaml"), "{}", text(&missing));
    assert!(missing.stdout.is_empty(), "no configuration printed for a bad one");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nsegments:\n  - name: x\n    when: orders.30d >= \"many\"\n").expect("write");
    let invalid = cohort(
        &["check-config", "--config", "deploy/cohort.toml"],
        &[("COHORT__RULES__PATH", bad.to_str().expect("path")), HERE[1]],
    );
    assert!(!invalid.status.success());
    assert!(text(&invalid).contains("bad.yaml:4:"), "names file and line: {}", text(&invalid));
}

#[test]
fn a_property_librdkafka_refuses_is_named_without_its_secret_by_check_config_and_run() {
    // A Java client's property: librdkafka does not know it, and its error
    // message would quote the value.
    let mut env = HERE.to_vec();
    env.push(("COHORT__KAFKA__PROPERTIES__SSL.TRUSTSTORE.PASSWORD", "hunter2-trust"));
    let check = cohort(&["check-config", "--config", "deploy/cohort.toml"], &env);
    assert!(!check.status.success());
    let all = text(&check);
    assert!(all.contains("`ssl.truststore.password`") && !all.contains("hunter2"), "{all}");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    env.push(("COHORT__STORE__PATH", store.to_str().expect("path")));
    env.push(("COHORT__HTTP__LISTEN", "127.0.0.1:0"));
    let run = cohort(&["run", "--config", "deploy/cohort.toml"], &env);
    assert!(!run.status.success());
    let all = text(&run);
    assert!(all.contains("`ssl.truststore.password`") && !all.contains("hunter2"), "{all}");
}

#[test]
fn a_worker_never_logs_a_secret_even_with_librdkafka_debugging_on() {
    const SECRET: &str = "hunter2-in-the-log";
    let dir = tempfile::tempdir().expect("tempdir");
    // No broker: the worker starts its clients, which dump their
    // configuration (librdkafka `debug=conf`) and then fail to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    let config = dir.path().join("cohort.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
bootstrap_servers = "{closed}"

[kafka.properties]
debug = "conf,security"
"sasl.username" = "cohort"
"sasl.password" = "{SECRET}"
# The conf dump prints client.id as it is: only redaction by value can hide
# a secret that shows up in a property that is not one.
"client.id" = "{SECRET}"

[kafka.producer_properties]
"ssl.key.password" = "{SECRET}"

[rules]
path = "{rules}"

[store]
path = "{store}"

[http]
listen = "127.0.0.1:0"

[log]
level = "debug"
"#,
            rules = repo("deploy/rules.yaml").display(),
            store = dir.path().join("store").display(),
        ),
    )
    .expect("write config");
    let log = dir.path().join("worker.log");
    let out = std::fs::File::create(&log).expect("log file");
    let worker = command(&["run", "--config", config.to_str().expect("path")], &[])
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("start cohort run");
    let mut worker = Killed(worker);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let until = Instant::now() + Duration::from_secs(60);
    // Both clients' configuration dumps, then a little of the connecting.
    while read().matches("client.id = ").count() < 2 {
        if let Ok(Some(status)) = worker.0.try_wait() {
            panic!("the worker exited with {status}:\n{}", read());
        }
        assert!(Instant::now() < until, "no librdkafka configuration dump within 60s:\n{}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    drop(worker);
    let text = read();
    assert!(!text.contains(SECRET), "the secret is in the worker's log:\n{text}");
    assert!(text.contains("client.id = <redacted>"), "the dump was redacted by value:\n{text}");
    assert!(text.contains("sasl.password = "), "librdkafka dumped its configuration:\n{text}");
}
