//! The example rules the demo and deploy/ ship are the ones core's golden
//! scenarios test, and `cohort validate` accepts them and refuses a bad file
//! with its line and column.

use std::path::Path;
use std::process::Command;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

#[test]
fn deploy_rules_are_the_golden_tested_rules() {
    let deploy = std::fs::read_to_string(repo("deploy/rules.yaml")).expect("deploy/rules.yaml");
    let golden = std::fs::read_to_string(repo("crates/cohort-core/tests/golden/rules.yaml")).expect("golden rules");
    assert_eq!(deploy, golden, "deploy/rules.yaml must stay a copy of crates/cohort-core/tests/golden/rules.yaml");
}

#[test]
fn validate_accepts_the_example_and_refuses_a_bad_file_with_its_position() {
    let ok = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("validate")
        .arg(repo("deploy/rules.yaml"))
        .output()
        .expect("run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("22 segments") && out.contains("11 offers"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nsegments:\n  - name: x\n    when: orders.30d >= \"many\"\n").expect("write");
    let err = Command::new(env!("CARGO_BIN_EXE_cohort")).arg("validate").arg(&bad).output().expect("run");
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("bad.yaml:4:"), "names the file and line: {msg}");
}
