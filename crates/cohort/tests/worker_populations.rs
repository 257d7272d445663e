//! `cohort_segment_population_customers` is exact: each segment's number of
//! customers equals a count over the stored states, after a SIGKILL and a
//! restart on the same store, and after partitions move to a second worker
//! (each worker reports the partitions it owns; together, every customer).
//! Runs on tansu, the e2e broker.

mod common;

use cohort_e2e::TestBroker;
use common::{http_get, latest_per_key, profiles_then_clicks, Deployment, WorkerProcess};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const RULES: &str = include_str!("../../../deploy/rules.yaml");
const EVENTS: usize = 8_000;
const SERIES: &str = "cohort_segment_population_customers{segment=\"";
const WATERMARK: &str = "cohort_partition_watermark_seconds{partition=\"";

type Populations = BTreeMap<String, u64>;

/// Segment → customers, over states' encodings.
fn count<'a>(states: impl Iterator<Item = &'a [u8]>) -> Populations {
    let mut n = Populations::new();
    for bytes in states {
        let state = cohort_core::encode::decode(bytes).expect("a stored state decodes");
        for m in state.segments {
            *n.entry(m.segment).or_default() += 1;
        }
    }
    n
}

/// The worker's populations and the partitions it owns, from its /metrics
/// (segments at 0 left out, as a count over states has no such entries).
fn scrape(worker: &mut WorkerProcess) -> (Populations, BTreeSet<u32>) {
    let addr = worker.http_addr(Duration::from_secs(30));
    let text = http_get(&addr, "/metrics").unwrap_or_default();
    let mut populations = Populations::new();
    let mut owned = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(SERIES) {
            let (segment, value) = rest.split_once("\"}").expect("a labelled sample");
            let n: f64 = value.trim().parse().expect("a number");
            if n != 0.0 {
                populations.insert(segment.to_string(), n as u64);
            }
        } else if let Some(rest) = line.strip_prefix(WATERMARK) {
            owned.insert(rest.split_once('"').expect("labelled").0.parse().expect("a partition"));
        }
    }
    (populations, owned)
}

/// What the committed states say, from the changelog: the latest record
/// per customer (metadata records and tombstones left out).
async fn changelog_populations(d: &Deployment) -> Populations {
    let latest = latest_per_key(&d.read_all("cohort-changelog").await);
    count(latest.iter().filter(|(k, _)| !k.starts_with('\u{0}')).filter_map(|(_, v)| v.as_deref()))
}

/// Polls the worker's metric until it equals `want` (it is published right
/// after the commit that the caught-up check observes).
fn wait_for_populations(worker: &mut WorkerProcess, want: &Populations) -> BTreeSet<u32> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, owned) = scrape(worker);
        if &got == want {
            return owned;
        }
        assert!(
            Instant::now() < until,
            "cohort_segment_population_customers is not the count over the committed states\n  metric: {got:?}\n  states: {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A count over the states a stopped worker's store holds for `partitions`.
fn store_populations(store: &Path, partitions: &BTreeSet<u32>) -> Populations {
    let config = cohort_store::StoreConfig::default();
    let store = cohort_store::Store::open(store, &config).expect("open the worker's store");
    let mut all = Populations::new();
    for p in partitions {
        let states: Vec<_> = store.iter_partition_states(*p).map(|r| r.expect("a stored state").1).collect();
        let own = count(states.iter().map(|b| &b[..]));
        let meta = store.partition_meta(*p).expect("read").expect("a metadata record");
        assert_eq!(meta.populations, own, "partition {p}'s committed populations are a count over its states");
        all = sum(&all, &own);
    }
    all
}

fn sum(a: &Populations, b: &Populations) -> Populations {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(k.clone()).or_default() += v;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn populations_equal_a_count_over_the_stored_states_after_a_crash_and_a_partition_move() {
    let broker = TestBroker::shared();
    let d = Deployment::new(broker.bootstrap(), 2, RULES, "").await;
    let (profiles, clicks) = profiles_then_clicks(31, EVENTS);
    d.produce(&profiles).await;
    let mut first = d.start_worker("first");
    d.wait_caught_up(Duration::from_secs(120), &mut first).await;

    // SIGKILL part-way through the clicks, restart on the same store.
    let changelog_before = d.read_all("cohort-changelog").await.len();
    let (early, late) = clicks.split_at(clicks.len() / 2);
    d.produce(early).await;
    let _ = d.read("cohort-changelog", Duration::from_secs(120), |r| r.len() >= changelog_before + 300).await;
    first.kill();
    let mut first = d.start_worker("first-restarted");
    d.wait_caught_up(Duration::from_secs(300), &mut first).await;
    let want = changelog_populations(&d).await;
    assert!(want.values().sum::<u64>() > 100, "the traffic puts customers in segments: {want:?}");
    let owned = wait_for_populations(&mut first, &want);
    let addr = first.http_addr(Duration::from_secs(5));
    let text = http_get(&addr, "/metrics").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("watermark") || l.contains("assigned")).collect();
    assert_eq!(owned, BTreeSet::from([0, 1]), "the only worker owns every partition: {lines:#?}");

    // A second worker (a store of its own) takes partitions over.
    let mut second = d.start_member("second");
    let until = Instant::now() + Duration::from_secs(120);
    while !(second.log_text().contains("partition ready") && first.log_text().contains("partitions revoked")) {
        first.assert_running();
        second.assert_running();
        assert!(Instant::now() < until, "no rebalance within 120s:\n{}", second.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.produce(late).await;
    d.wait_caught_up(Duration::from_secs(300), &mut first).await;
    d.wait_caught_up(Duration::from_secs(300), &mut second).await;
    let want = changelog_populations(&d).await;
    let until = Instant::now() + Duration::from_secs(60);
    let (first_pop, first_owned, second_pop, second_owned) = loop {
        let ((a, a_owned), (b, b_owned)) = (scrape(&mut first), scrape(&mut second));
        if sum(&a, &b) == want && !a_owned.is_empty() && !b_owned.is_empty() {
            break (a, a_owned, b, b_owned);
        }
        assert!(
            Instant::now() < until,
            "the two workers' populations do not add up to the committed states\n  first {a_owned:?}: {a:?}\n  \
             second {b_owned:?}: {b:?}\n  states: {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(first_owned.is_disjoint(&second_owned), "{first_owned:?} and {second_owned:?}");

    // Each worker's figure is a count over its own store's states for the
    // partitions it owns (a partition given up stays in the old store, and
    // is not counted there).
    first.terminate();
    second.terminate();
    assert_eq!(store_populations(&d.dir.path().join("store"), &first_owned), first_pop, "first worker");
    assert_eq!(store_populations(&d.dir.path().join("store-second"), &second_owned), second_pop, "second worker");
}
