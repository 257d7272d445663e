//! Rules change while the worker runs (README, "Changing the rules"), on
//! tansu, the e2e broker:
//!
//! - a rules file that does not compile is refused (file:line:column in the
//!   log, `cohort_rules_reloads_total{result="refused"}`) and the rules in
//!   force keep deciding;
//! - a valid change is picked up without a restart, and every stored
//!   customer is re-evaluated without a new event: a new segment fills, a
//!   changed threshold moves exactly the customers it should, a removed
//!   segment empties, and an offer that lists the `rules_changed` trigger
//!   goes to the consenting customers the switch puts in its segment. What
//!   the worker emits with cause `rules_changed` (segment changes and
//!   offers) is exactly what cohort-core's partition task decides over the
//!   stopped worker's store (the reference);
//! - a worker SIGKILLed mid-way through the re-evaluation resumes from the
//!   position in its partitions' metadata, and no output id is emitted
//!   twice with different contents;
//! - `cohort preview` over the stopped worker's store counts exactly the
//!   entries, exits and offers the switch then emits, and `POST /admin/preview` on
//!   the running worker refuses a broken candidate and finds nothing left
//!   to change once the switch is done.

mod common;

use cohort_core::engine::{CauseKind, Engine, EngineSettings, Output};
use cohort_core::partition::{InMemory, PartitionTask, TaskSettings};
use cohort_core::rules::RuleSet;
use cohort_core::time::Duration as CoreDuration;
use cohort_e2e::TestBroker;
use common::{http_get, http_post, outputs_by_id, profiles_then_clicks, sample, Deployment, WorkerProcess};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RULES: &str = include_str!("../../../deploy/rules.yaml");

/// The deploy rules as a marketer changes them: a new segment with a
/// welcome offer for everyone the switch puts in it (trigger
/// `rules_changed`), the window shopper's threshold lowered from 10 product
/// views to 3, `dach` removed.
fn rules_v2() -> String {
    let v2 = RULES
        .replace("when: product_views.7d >= 10 && orders.30d == 0", "when: product_views.7d >= 3 && orders.30d == 0")
        .replace("  - name: dach\n    when: profile.country in [\"DE\", \"AT\", \"CH\"]\n", "")
        .replace("segments:\n", "segments:\n  - name: browsers\n    when: product_views.30d >= 2\n")
        + "  - id: browsers_welcome\n    eligible: in_segment(\"browsers\")\n    channels: [email]\n    \
           triggers: [rules_changed]\n";
    assert!(v2.contains("browsers") && !v2.contains("name: dach") && v2.contains(">= 3 &&"), "the edits apply");
    v2
}

/// The `rules_changed` segment changes and offers cohort-core decides when
/// the rules switch to `v2` over the states, timers and metadata of a
/// stopped worker's store: id → (customer, entered, exited, segments), and
/// id → (customer, offer, trigger).
fn reference(store: &Path, partitions: i32, v2: &Engine) -> (BTreeMap<String, Change>, BTreeMap<String, Sent>) {
    let store = cohort_store::Store::open(store, &cohort_store::StoreConfig::default()).expect("open the store");
    let settings =
        TaskSettings { allowed_lateness: CoreDuration::from_mins(1), max_future_skew: CoreDuration::from_hours(1) };
    let (mut want, mut offers) = (BTreeMap::new(), BTreeMap::new());
    for p in 0..partitions {
        let meta = store.partition_meta(p as u32).expect("read").expect("a metadata record");
        let timers = store.partition_timers(p as u32).expect("timers");
        let mut m = InMemory::new(PartitionTask::new(p, meta, timers, settings));
        for item in store.iter_partition_states(p as u32) {
            let (customer, bytes) = item.expect("a stored state");
            m.states.insert(customer, cohort_core::encode::decode(&bytes).expect("decodes"));
        }
        assert!(m.switch_rules(v2), "partition {p} has customers to re-evaluate");
        while let Some(out) = m.reevaluate(v2, 1000) {
            for d in out.outputs {
                match d.output {
                    Output::SegmentChanged(s) if s.cause.kind == CauseKind::RulesChanged => {
                        want.insert(s.id.clone(), (s.customer, s.entered, s.exited, s.segments));
                    }
                    Output::NextBestOffer(n) if n.cause.kind == CauseKind::RulesChanged => {
                        let offer = n.offer.or(n.holdout_offer).expect("an offer");
                        offers.insert(n.id.clone(), (n.customer, offer, n.cause.trigger.unwrap_or_default()));
                    }
                    _ => {}
                }
            }
        }
    }
    (want, offers)
}

type Change = (String, Vec<String>, Vec<String>, Vec<String>);
type Sent = (String, String, String);

/// The worker's `rules_changed` offers, id → (customer, offer, trigger).
fn sent(records: &[cohort_e2e::Record]) -> BTreeMap<String, Sent> {
    let mut got = BTreeMap::new();
    for r in records {
        let json: serde_json::Value = serde_json::from_slice(r.value.as_deref().expect("a value")).expect("JSON");
        if json["cause"]["kind"] != "rules_changed" {
            continue;
        }
        let offer = json["offer"].as_str().or(json["holdout_offer"].as_str()).expect("an offer");
        let trigger = json["cause"]["trigger"].as_str().expect("a trigger");
        let customer = json["customer"].as_str().expect("customer");
        got.insert(json["id"].as_str().expect("id").to_string(), (customer.into(), offer.into(), trigger.into()));
    }
    got
}

/// The worker's `rules_changed` segment changes, id → change.
fn emitted(records: &[cohort_e2e::Record]) -> BTreeMap<String, Change> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().expect("a list").iter().map(|s| s.as_str().expect("a name").to_string()).collect()
    };
    let mut got = BTreeMap::new();
    for r in records {
        let json: serde_json::Value = serde_json::from_slice(r.value.as_deref().expect("a value")).expect("JSON");
        if json["cause"]["kind"] != "rules_changed" {
            continue;
        }
        got.insert(
            json["id"].as_str().expect("id").to_string(),
            (
                json["customer"].as_str().expect("customer").to_string(),
                strings(&json["entered"]),
                strings(&json["exited"]),
                strings(&json["segments"]),
            ),
        );
    }
    got
}

fn metrics(worker: &mut WorkerProcess) -> String {
    let addr = worker.http_addr(Duration::from_secs(30));
    http_get(&addr, "/metrics").unwrap_or_default()
}

/// Polls the worker's /metrics until `done` holds for them.
fn wait_metrics(worker: &mut WorkerProcess, what: &str, deadline: Duration, done: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + deadline;
    loop {
        worker.assert_running();
        let text = metrics(worker);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < until, "{what}: not within {deadline:?}; log:\n{}", worker.log_tail());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The switch instant a partition's metadata records.
fn rules_at(meta: &cohort_core::partition::PartitionMeta) -> cohort_core::time::Timestamp {
    meta.rules.as_ref().expect("rules recorded").at
}

/// How many lines of worker `name`'s log contain `what`.
fn worker_log_count(d: &Deployment, name: &str, what: &str) -> usize {
    let log = std::fs::read_to_string(d.dir.path().join(format!("{name}.log"))).unwrap_or_default();
    log.lines().filter(|l| l.contains(what)).count()
}

fn rules_info(text: &str, version: &str) -> Option<f64> {
    sample(text, &format!("cohort_rules_info{{version=\"{version}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_change_reevaluates_every_stored_customer_and_survives_a_crash_mid_way() {
    let broker = TestBroker::shared();
    let d = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    // Watch the file closely, and re-evaluate in slices small enough that
    // the re-evaluation takes many batches (so the SIGKILL lands mid-way).
    let config = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        config.replace("[rules]\n", "[rules]\nwatch_interval = \"100ms\"\nreevaluation_slice = 2\n"),
    )
    .expect("config");
    let rules_path = d.dir.path().join("rules.yaml");
    let v1 = RuleSet::from_yaml("rules.yaml", RULES).expect("v1").version().to_string();
    let v2_text = rules_v2();
    let v2 = Engine::new(RuleSet::from_yaml("rules.yaml", &v2_text).expect("v2"), EngineSettings::default());

    let (profiles, clicks) = profiles_then_clicks(17, 3_000);
    let (clicks, later) = clicks.split_at(2_700);
    d.produce(&profiles).await;
    let mut worker = d.start_worker("first");
    d.wait_caught_up(Duration::from_secs(180), &mut worker).await;
    d.produce(clicks).await;
    d.wait_caught_up(Duration::from_secs(300), &mut worker).await;

    // A broken file: refused with its position, the old rules go on.
    std::fs::write(&rules_path, RULES.replace("when: orders.90d >= 3", "when: orders.90d >=")).expect("write rules");
    let text = wait_metrics(&mut worker, "the broken rules file refused", Duration::from_secs(30), |m| {
        sample(m, "cohort_rules_reloads_total{result=\"refused\"}") == Some(1.0)
    });
    assert_eq!(rules_info(&text, &v1), Some(1.0), "the old rules are in force");
    assert_eq!(sample(&text, "cohort_rules_reloads_total{result=\"applied\"}"), Some(0.0));
    let log = worker.log_text();
    assert!(log.contains("refused") && log.contains("rules.yaml:"), "the log names the file and position:\n{log}");
    let before = d.read_all("segment-changes").await.len();
    d.produce(later).await;
    d.wait_caught_up(Duration::from_secs(180), &mut worker).await;
    let after = d.read_all("segment-changes").await;
    assert!(after.len() > before, "events after the refused file are still decided");
    for r in &after[before..] {
        let json: serde_json::Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        assert_eq!(json["rules_version"], v1.as_str(), "decided under the rules in force");
    }

    // What the switch must emit, from the stopped worker's store.
    assert!(worker.terminate().success(), "clean stop; log:\n{}", worker.log_tail());
    std::fs::write(&rules_path, RULES).expect("restore v1");
    let (want, want_offers) = reference(&d.dir.path().join("store"), d.partitions, &v2);
    let entered = |name: &str| want.values().filter(|c| c.1.iter().any(|s| s == name)).count();
    let exited = |name: &str| want.values().filter(|c| c.2.iter().any(|s| s == name)).count();
    assert!(entered("browsers") > 0 && entered("window_shopper") > 0 && exited("dach") > 0, "{want:?}");
    assert!(
        !want_offers.is_empty()
            && want_offers.values().all(|o| o.1 == "browsers_welcome" && o.2 == "rules_changed:browsers"),
        "the welcome goes to consenting customers the switch puts in browsers: {want_offers:?}"
    );

    // The preview over the stopped worker's store says the same.
    let candidate = d.dir.path().join("candidate.yaml");
    std::fs::write(&candidate, &v2_text).expect("write the candidate");
    let run_preview = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["preview", &candidate.display().to_string(), "--json", "--config", &d.config.display().to_string()])
            .output()
            .expect("run cohort preview");
        assert!(out.status.success(), "cohort preview: {}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("preview JSON");
        (json, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (preview, _) = run_preview();
    let figure = |segment: &str, key: &str| preview["segments"][segment][key].as_u64().unwrap_or(0) as usize;
    let segments: Vec<String> = preview["segments"].as_object().expect("segments").keys().cloned().collect();
    for s in &segments {
        assert_eq!((figure(s, "entries"), figure(s, "exits")), (entered(s), exited(s)), "preview of segment {s}");
        assert_eq!(figure(s, "candidate"), figure(s, "now") + entered(s) - exited(s), "segment {s}");
    }
    assert_eq!(figure("dach", "candidate"), 0, "the removed segment empties");
    assert_eq!(preview["changed"].as_u64(), Some(want.len() as u64), "customers changed");
    assert_eq!(preview["offers"]["browsers_welcome"].as_u64(), Some(want_offers.len() as u64), "offers it would send");

    // The switch on a running worker, SIGKILLed mid-way.
    let mut worker = d.start_worker("second");
    let _ = metrics(&mut worker);
    d.wait_caught_up(Duration::from_secs(180), &mut worker).await;
    // `cohort preview` on the store the running worker holds (a RocksDB
    // secondary instance) says what it said over the stopped one.
    let (live, note) = run_preview();
    assert!(note.contains("secondary instance"), "read through a secondary instance: {note}");
    assert_eq!(live, preview, "the preview of the running worker's store");
    std::fs::write(&rules_path, &v2_text).expect("write rules v2");
    let text = wait_metrics(&mut worker, "the re-evaluation under way", Duration::from_secs(60), |m| {
        sample(m, "cohort_reevaluated_customers_total").is_some_and(|n| n >= 20.0)
    });
    worker.kill();
    let reevaluated = sample(&text, "cohort_reevaluated_customers_total").unwrap_or_default();
    eprintln!("SIGKILLed after {reevaluated} customers re-evaluated");
    // Partitions whose metadata records a switch to v2 left mid-way, and
    // those that never recorded it (they start it over, at the same
    // watermark): each completes after the restart with a log line.
    let unfinished = {
        let store = cohort_store::Store::open(d.dir.path().join("store"), &cohort_store::StoreConfig::default())
            .expect("open the store");
        let rules: Vec<_> = (0..d.partitions as u32)
            .map(|p| store.partition_meta(p).expect("read").expect("metadata").rules.expect("rules recorded"))
            .collect();
        eprintln!("rules and positions in the metadata: {rules:?}");
        rules.iter().filter(|r| r.version != v2.rules().version() || r.after.is_some()).count()
    };
    assert!(unfinished > 0, "the SIGKILL came after the whole re-evaluation: use smaller slices");

    // Restarted on the same store: it goes on where the metadata says.
    let mut worker = d.start_worker("third");
    let text = wait_metrics(&mut worker, "the re-evaluation finished", Duration::from_secs(180), |m| {
        let done = worker_log_count(&d, "third", "partition re-evaluated under the rules in force");
        done == unfinished && sample(m, "cohort_reevaluation_partitions") == Some(0.0)
    });
    assert_eq!(rules_info(&text, &v1), None, "the restarted worker started on the new file");
    d.wait_caught_up(Duration::from_secs(60), &mut worker).await;

    // The running worker's preview: a broken candidate is refused with its
    // position; the rules in force change nobody.
    let addr = worker.http_addr(Duration::from_secs(5));
    let (code, body) =
        http_post(&addr, "/admin/preview", "version: 1\nsegments:\n  - name: x\n    when: orders.7d >=\n")
            .expect("POST /admin/preview");
    assert_eq!(code, 400, "{body}");
    assert!(body.starts_with("candidate:4:"), "{body}");
    // The last slice's batch may still be committing when the gauge reads
    // 0 (it is set when the slice is decided): the preview reads committed
    // states, so ask until they are.
    let until = Instant::now() + Duration::from_secs(30);
    let (body, running) = loop {
        let (code, body) = http_post(&addr, "/admin/preview?samples=2", &v2_text).expect("POST /admin/preview");
        assert_eq!(code, 200, "{body}");
        let running: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if running["changed"].as_u64() == Some(0) || Instant::now() > until {
            break (body, running);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(running["changed"].as_u64(), Some(0), "nothing left to change: {body}");
    assert!(running["customers"].as_u64().is_some_and(|n| n > 100), "every owned customer examined: {body}");

    // Why a customer the switch moved into `browsers` is there, atom by atom.
    let (_, (customer, ..)) = want.iter().find(|(_, c)| c.1.iter().any(|s| s == "browsers")).expect("an entry");
    let text = http_get(&addr, &format!("/admin/customers/{customer}/explain")).expect("explain answers");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["explain"]["rules_version"], v2.rules().version());
    let browsers = doc["explain"]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .find(|s| s["segment"] == "browsers")
        .expect("browsers explained");
    assert_eq!((browsers["member"].as_bool(), browsers["holds"].as_bool()), (Some(true), Some(true)), "{browsers}");
    let atom = browsers["atoms"][0]["atom"].as_str().expect("an atom");
    assert!(atom.starts_with("product_views.30d = ") && atom.ends_with(" >= 2"), "{atom}");
    assert_eq!(doc["explain"]["offers"].as_array().map(Vec::len), Some(v2.rules().offers().len()), "every offer");
    assert!(worker.terminate().success(), "clean stop; log:\n{}", worker.log_tail());

    let records = d.read_all("segment-changes").await;
    outputs_by_id(&records); // fails on an id emitted twice with different contents
    let got = emitted(&records);
    for (id, change) in &want {
        assert_eq!(got.get(id), Some(change), "re-evaluation output {id} of {}", change.0);
    }
    assert_eq!(got.len(), want.len(), "no other rules_changed output");
    // The welcome offers: exactly the reference's, none twice with other contents.
    let offers = d.read_all("next-best-offers").await;
    outputs_by_id(&offers);
    assert_eq!(sent(&offers), want_offers, "offers decided on the rules change");

    // Every partition is on v2 with its re-evaluation complete, and no
    // stored customer is left in the removed segment.
    let store = cohort_store::Store::open(d.dir.path().join("store"), &cohort_store::StoreConfig::default())
        .expect("open the store");
    for p in 0..d.partitions as u32 {
        let meta = store.partition_meta(p).expect("read").expect("metadata");
        let rules = meta.rules.clone().expect("the rules version is recorded");
        assert_eq!((rules.version.as_str(), rules.after), (v2.rules().version(), None), "partition {p}");
        assert!(!meta.populations.contains_key("dach"), "partition {p}: {:?}", meta.populations);
        for item in store.iter_partition_states(p) {
            let (customer, bytes) = item.expect("state");
            let mut state = cohort_core::encode::decode(&bytes).expect("decodes");
            assert!(state.segments.iter().all(|m| m.segment != "dach"));
            // Decided under v2 (or left as stored, unchanged by it): re-evaluating changes nothing.
            let tables = cohort_core::engine::Tables::default();
            let input =
                cohort_core::engine::Input::RulesChanged { customer: &customer, at: rules_at(&meta), switch: 0 };
            let d = cohort_core::engine::apply(&mut state, input, &tables.context(&v2));
            assert!(d.outputs.is_empty(), "{customer} is not where v2 puts it: {:?}", d.outputs);
        }
    }
}

/// Points the deployment's workers at a new rules topic, polled every
/// 100 ms, and writes a config for a second worker B with a store and a
/// rules file (a copy of v1) of its own, polling the topic every
/// `b_interval`. Returns B's config and rules file.
async fn with_rules_topic(d: &Deployment, broker: &TestBroker, b_interval: &str) -> (PathBuf, PathBuf) {
    let rules_topic = d.topic("cohort-rules");
    cohort_e2e::create_topic(broker.bootstrap(), &rules_topic, 1).await.expect("create the rules topic");
    let config = std::fs::read_to_string(&d.config).expect("config");
    let config =
        config.replace("[rules]\n", &format!("[rules]\nwatch_interval = \"100ms\"\ntopic = \"{rules_topic}\"\n"));
    std::fs::write(&d.config, &config).expect("config");
    let b_rules = d.dir.path().join("rules-b.yaml");
    std::fs::write(&b_rules, RULES).expect("B's rules");
    let store = d.dir.path().join("store");
    let b_config = d.dir.path().join("cohort-b.toml");
    let b_text = config
        .replace(
            &format!("path = \"{}\"", d.dir.path().join("rules.yaml").display()),
            &format!("path = \"{}\"", b_rules.display()),
        )
        .replace(
            &format!("path = \"{}\"", store.display()),
            &format!("path = \"{}\"", d.dir.path().join("store-b").display()),
        )
        .replace("watch_interval = \"100ms\"", &format!("watch_interval = \"{b_interval}\""));
    assert!(b_text.contains("rules-b.yaml") && b_text.contains("store-b"), "B's config names its own files");
    std::fs::write(&b_config, b_text).expect("B's config");
    (b_config, b_rules)
}

/// Produces 1,500 generated profiles and their clicks (`seed`), starts
/// worker A (the deployment's config) and B (`b_config`), and waits until
/// the group has caught up.
async fn start_a_and_b(d: &Deployment, b_config: &Path, seed: u64) -> (WorkerProcess, WorkerProcess) {
    let (profiles, clicks) = profiles_then_clicks(seed, 1_500);
    d.produce(&profiles).await;
    d.produce(&clicks).await;
    let mut a = d.start_worker("a");
    let b = WorkerProcess::start(b_config, &d.dir.path().join("b.log"));
    d.wait_caught_up(Duration::from_secs(240), &mut a).await;
    (a, b)
}

fn version_of(text: &str) -> String {
    RuleSet::from_yaml("rules.yaml", text).expect("rules compile").version().to_string()
}

/// With `rules.topic`, a group converges on one version: worker A's file
/// changes, A publishes it to the rules topic, and worker B, whose own file
/// never changed, switches too; both re-evaluate their partitions. Then a
/// full redeploy: both stopped, both files changed to v3, both started; the
/// first to start publishes v3 (a version the topic never held) and the
/// group runs it without a SIGHUP. Last, B restarted with its old v1 file
/// (a version the topic held before) takes the group's v3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_switches_together_through_the_rules_topic() {
    let broker = TestBroker::shared();
    let d = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let (b_config, b_rules) = with_rules_topic(&d, &broker, "100ms").await;
    let a_rules = d.dir.path().join("rules.yaml");
    let (mut a, mut b) = start_a_and_b(&d, &b_config, 23).await;
    let v1 = version_of(RULES);
    for w in [&mut a, &mut b] {
        wait_metrics(w, "v1 in force", Duration::from_secs(60), |m| rules_info(m, &v1) == Some(1.0));
    }

    // Only A's file changes.
    let v2_text = rules_v2();
    let v2 = version_of(&v2_text);
    std::fs::write(&a_rules, &v2_text).expect("A's rules");
    for (name, w) in [("a", &mut a), ("b", &mut b)] {
        wait_metrics(w, &format!("worker {name} on v2"), Duration::from_secs(120), |m| {
            rules_info(m, &v2) == Some(1.0) && rules_info(m, &v1) == Some(0.0)
        });
    }
    assert_eq!(std::fs::read_to_string(&b_rules).expect("B's rules"), RULES, "B's own file never changed");
    let published = d.read_all("cohort-rules").await;
    let last = published.last().expect("records on the rules topic");
    assert!(last.value.as_deref() == Some(v2_text.as_bytes()), "the last record is A's new file");
    assert_eq!(last.key.as_deref(), Some(format!("rules/{v2}").as_bytes()), "keyed by its version");
    assert!(b.log_text().contains("new rules on the rules topic"), "B switched on the topic's record");
    assert!(a.terminate().success() && b.terminate().success(), "clean stops");

    // A full redeploy with a new file: no SIGHUP needed.
    let v3_text = v2_text.replace("when: product_views.30d >= 2", "when: product_views.30d >= 4");
    let v3 = version_of(&v3_text);
    assert_ne!(v3, v2, "the edit changes the rules");
    std::fs::write(&a_rules, &v3_text).expect("A's rules");
    std::fs::write(&b_rules, &v3_text).expect("B's rules");
    let mut a = d.start_worker("a-redeployed");
    let mut b = WorkerProcess::start(&b_config, &d.dir.path().join("b-redeployed.log"));
    let last_text = |records: &[cohort_e2e::Record]| {
        records.last().and_then(|r| r.value.as_deref()).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    d.read("cohort-rules", Duration::from_secs(120), |records| last_text(records).as_deref() == Some(&v3_text)).await;
    for (name, w) in [("a", &mut a), ("b", &mut b)] {
        wait_metrics(w, &format!("redeployed worker {name} on v3"), Duration::from_secs(120), |m| {
            rules_info(m, &v3) == Some(1.0)
        });
    }
    assert!(
        a.log_text().contains("never held") || b.log_text().contains("never held"),
        "a redeployed worker published its new file"
    );

    // A pod restarted with an old file does not take the group back.
    assert!(b.terminate().success(), "clean stop");
    std::fs::write(&b_rules, RULES).expect("B's old rules");
    let mut b = WorkerProcess::start(&b_config, &d.dir.path().join("b-old-file.log"));
    let text = wait_metrics(&mut b, "B with the old file on v3", Duration::from_secs(120), |m| {
        rules_info(m, &v3) == Some(1.0)
    });
    assert_ne!(rules_info(&text, &v1), Some(1.0), "B does not run its old file");
    assert_eq!(sample(&text, "cohort_rules_file_in_force"), Some(0.0), "and says so");
    assert_eq!(sample(&metrics(&mut a), "cohort_rules_file_in_force"), Some(1.0), "A runs its own file");
    assert!(b.log_text().contains("a version the group ran before"), "B says why:\n{}", b.log_tail());
    let published = d.read_all("cohort-rules").await;
    assert_eq!(last_text(&published).as_deref(), Some(v3_text.as_str()), "the old file was not published");
    assert!(a.terminate().success() && b.terminate().success(), "clean stops");
}

/// A partition moves to a worker that has not yet read the rules topic's
/// newest version (B polls it only hourly): B reads the topic before it
/// loads the partition and switches first, so no customer is taken back
/// to the old rules and then forward again. Every `rules_changed` output
/// names the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_to_a_worker_behind_the_rules_topic_is_not_switched_back() {
    let broker = TestBroker::shared();
    let d = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let (b_config, _) = with_rules_topic(&d, &broker, "1h").await;
    let (mut a, mut b) = start_a_and_b(&d, &b_config, 29).await;
    let v1 = version_of(RULES);
    let owns_one = |m: &str| sample(m, "cohort_consumer_assigned_partitions") == Some(1.0);
    for (name, w) in [("a", &mut a), ("b", &mut b)] {
        wait_metrics(w, &format!("worker {name} on v1 with a partition"), Duration::from_secs(120), |m| {
            rules_info(m, &v1) == Some(1.0) && owns_one(m)
        });
    }

    // A switches (and re-evaluates its partition); B has not read the topic.
    let v2_text = rules_v2();
    let v2 = version_of(&v2_text);
    std::fs::write(d.dir.path().join("rules.yaml"), &v2_text).expect("A's rules");
    wait_metrics(&mut a, "A on v2, its partition re-evaluated", Duration::from_secs(120), |m| {
        rules_info(m, &v2) == Some(1.0) && sample(m, "cohort_reevaluation_partitions") == Some(0.0)
    });
    assert_eq!(rules_info(&metrics(&mut b), &v1), Some(1.0), "B has not read the topic yet");

    // A leaves; B takes A's partition, decided under v2.
    assert!(a.terminate().success(), "clean stop; log:\n{}", a.log_tail());
    wait_metrics(&mut b, "B on v2 with both partitions, re-evaluated", Duration::from_secs(180), |m| {
        rules_info(m, &v2) == Some(1.0)
            && sample(m, "cohort_consumer_assigned_partitions") == Some(2.0)
            && sample(m, "cohort_consumer_restoring_partitions") == Some(0.0)
            && sample(m, "cohort_reevaluation_partitions") == Some(0.0)
    });
    assert!(b.log_text().contains("read the rules topic first"), "B says why:\n{}", b.log_tail());
    let changes = d.read_all("segment-changes").await;
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for r in &changes {
        let json: serde_json::Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        if json["cause"]["kind"] == "rules_changed" {
            *by_version.entry(json["rules_version"].as_str().expect("version").to_string()).or_default() += 1;
        }
    }
    assert!(by_version.get(&v2).is_some_and(|n| *n > 0), "the switch to v2 moved customers: {by_version:?}");
    assert_eq!(by_version.len(), 1, "every rules_changed output names v2, none went back to v1: {by_version:?}");
    assert!(b.terminate().success(), "clean stop");
}
