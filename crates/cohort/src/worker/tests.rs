use super::*;
use cohort_core::event::{Event, EventKind};
use cohort_kafka::OffsetSource;
use cohort_store::{Batch, Bytes};

fn open(dir: &std::path::Path) -> Worker {
    let mut config = Config::default();
    config.rules.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml");
    config.store.path = dir.join("store");
    config.processing.live_clock = false;
    config.processing.max_future_skew = std::time::Duration::from_secs(3650 * 86_400);
    let clock = Arc::new(FixedClock(Timestamp(i64::MAX / 4)));
    let mut worker =
        Worker::open(config, Metrics::new().expect("metrics"), Arc::new(Readiness::default()), clock).expect("open");
    worker.assign("clickstream", &[0, 1]).expect("assign");
    worker
}

fn store_offsets(worker: &Worker) -> StoreOffsets {
    StoreOffsets {
        store: worker.store.clone(),
        in_flight: worker.in_flight.offsets.clone(),
        revoke_timeout: Duration::from_secs(30),
    }
}

/// The partition the traffic puts a customer on.
fn partition_of(customer: &str) -> i32 {
    i32::from(customer.bytes().last().unwrap_or(0) % 2)
}

/// cohort-loadgen traffic over few customers on two partitions, so
/// consecutive batches share most of them: `batches` batches of `size`
/// records, some customers forgotten along the way, and batch 3 without
/// clicks (it commits no clickstream offset).
fn traffic(batches: usize, size: usize) -> Vec<Vec<InputRecord<'static>>> {
    let load = cohort_loadgen::Config {
        customers: 50,
        seed: 7,
        forget_share: 0.1,
        forget_within: CoreDuration::from_days(3),
        ..Default::default()
    };
    let mut gen = cohort_loadgen::Generator::new(load).expect("loadgen");
    let encoder = Encoder::new(Format::Json, Arc::new(Registry::builtin()));
    let mut offset = 0;
    (0..batches)
        .map(|i| {
            let events: Vec<Event> = gen.by_ref().take(size).collect();
            events
                .iter()
                .filter(|e| i != 3 || !matches!(e.kind, EventKind::Click(_)))
                .map(|e| {
                    offset += 1;
                    let topic = match e.kind {
                        EventKind::Click(_) => "clickstream",
                        EventKind::Purchase(_) => "purchases",
                        EventKind::ProfileUpdate(_) | EventKind::Forget => "customer-profiles",
                        EventKind::OfferOutcome(_) => "offer-outcomes",
                    };
                    InputRecord {
                        topic: Arc::from(topic),
                        partition: partition_of(&e.customer),
                        offset,
                        timestamp: None,
                        key: Some(e.customer.clone().into_bytes().into()),
                        value: encoder.encode_event(e).expect("encode").map(Into::into),
                        headers: Default::default(),
                    }
                })
                .collect()
        })
        .collect()
}

/// A batch's output records in a fixed order: changelog records come in
/// the batch's hash-map order, which differs between two workers.
fn sorted(mut records: Vec<OutputRecord>) -> Vec<OutputRecord> {
    records.sort_by(|a, b| (&a.topic, &a.key, &a.value).cmp(&(&b.topic, &b.key, &b.value)));
    records
}

/// Writes a processed batch's commits to the store, as the commit task does.
fn commit(worker: &Worker, processed: &Processed) {
    for c in &processed.commits {
        worker.store.commit(c).expect("commit");
    }
}

/// Every key of both partitions and its bytes, as the store has them.
fn stored(worker: &Worker, customers: &[String]) -> Vec<(i32, String, Option<Bytes>)> {
    let mut out = Vec::new();
    for partition in [0, 1] {
        let keys: Vec<&str> = customers.iter().map(String::as_str).collect();
        let values = worker.store.get_many(partition as u32, &keys);
        for (k, v) in customers.iter().zip(values) {
            out.push((partition, k.clone(), v.expect("read")));
        }
    }
    out
}

/// Where the store (with the batch in flight over it) says each
/// partition's clickstream resumes: after the last click of the batches
/// so far, on that partition.
fn clicks_resume(batches: &[Vec<InputRecord<'_>>], partition: i32) -> Option<i64> {
    batches
        .iter()
        .flatten()
        .rev()
        .find(|r| &*r.topic == "clickstream" && r.partition == partition)
        .map(|r| r.offset + 1)
}

/// What the run loop does: batch N+1 is processed while N is produced
/// and not yet committed. With the hot states dropped in between (as if
/// evicted), N+1 can only find N's states in the in-flight overlay; it
/// must decide exactly what the serial loop decides, forgotten customers
/// (erased states in the overlay) included.
#[test]
fn a_batch_processed_while_the_last_is_in_flight_decides_as_if_it_were_committed() {
    let batches = traffic(6, 300);
    let customers: Vec<String> = {
        let mut c: Vec<String> = batches
            .iter()
            .flatten()
            .map(|r| String::from_utf8(r.key.as_deref().expect("keyed").to_vec()).expect("utf-8"))
            .collect();
        c.sort();
        c.dedup();
        c
    };
    assert!(customers.len() < 300, "few customers, so batches share them");
    let forgets = batches.iter().flatten().filter(|r| r.value.is_none()).count();
    assert!(forgets > 0, "the traffic forgets some customers");
    assert!(batches.iter().flatten().any(|r| r.partition == 1), "both partitions have traffic");

    let serial_dir = tempfile::tempdir().expect("tempdir");
    let mut serial = open(serial_dir.path());
    let serial_outputs: Vec<Vec<OutputRecord>> =
        batches.iter().map(|b| sorted(serial.process_offline(b).expect("batch"))).collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut pipelined = open(dir.path());
    let mut previous: Option<Processed> = None;
    let mut outputs = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        // As if evicted: only the batch in flight's overlay has them.
        for rt in pipelined.partitions.values_mut() {
            rt.hot.clear();
        }
        let processed = pipelined.process(b, false).expect("batch");
        if let Some(p) = previous.take() {
            commit(&pipelined, &p);
            pipelined.in_flight.clear();
        }
        pipelined.in_flight.set(&processed.commits, &processed.kafka_offsets);
        // The rebalance callback would seek where the batch in flight ends.
        let offsets = store_offsets(&pipelined);
        for partition in [0, 1] {
            assert_eq!(
                offsets.next_offset("clickstream", partition),
                clicks_resume(&batches[..=i], partition),
                "batch {i}, partition {partition}"
            );
        }
        outputs.push(sorted(processed.outputs.clone()));
        previous = Some(processed);
    }
    commit(&pipelined, &previous.expect("a last batch"));
    pipelined.in_flight.clear();

    assert_eq!(outputs.len(), serial_outputs.len());
    for (i, (p, s)) in outputs.iter().zip(&serial_outputs).enumerate() {
        assert_eq!(p, s, "batch {i}'s outputs (decisions and changelog)");
    }
    assert!(serial_outputs.iter().skip(1).all(|o| !o.is_empty()), "every batch decides something");
    let tombstones = serial_outputs.iter().flatten().filter(|o| o.value.is_none()).count();
    assert!(tombstones > 0, "forgets write changelog tombstones");
    assert_eq!(stored(&pipelined, &customers), stored(&serial, &customers));
    for partition in [0, 1] {
        let meta = |w: &Worker| w.store.partition_meta(partition).expect("meta").expect("committed");
        assert_eq!(meta(&pipelined), meta(&serial), "partition {partition}'s metadata record");
    }
    let offsets = store_offsets(&pipelined);
    for partition in [0, 1] {
        assert_eq!(offsets.next_offset("clickstream", partition), clicks_resume(&batches, partition));
    }
}

/// A revocation waits for the batch in flight on the revoked partitions
/// to settle, and does not wait for one that has nothing in flight.
#[test]
fn revoking_a_partition_waits_until_its_batch_in_flight_settles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut worker = open(dir.path());
    let batches = traffic(1, 200);
    let processed = worker.process(&batches[0], false).expect("batch");
    worker.in_flight.set(&processed.commits, &processed.kafka_offsets);
    let p0 = TopicPartition { topic: "clickstream".into(), partition: 0 };
    let p7 = TopicPartition { topic: "clickstream".into(), partition: 7 };

    // Nothing of partition 7 is in flight: no wait.
    let offsets = Arc::new(store_offsets(&worker));
    offsets.before_revoke(std::slice::from_ref(&p7));

    let revoking = {
        let offsets = offsets.clone();
        std::thread::spawn(move || offsets.before_revoke(&[p0]))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!revoking.is_finished(), "the revocation returned with partition 0's batch still in flight");
    let settle = SettleOnDrop(worker.in_flight.offsets.clone());
    commit(&worker, &processed);
    drop(settle);
    revoking.join().expect("the revocation returns once the batch settles");
    assert_eq!(offsets.next_offset("clickstream", 0), clicks_resume(&batches, 0), "from the store now");

    // An idle partition's timer decisions (live clock) commit no input
    // offset; its revocation waits for them too.
    worker.in_flight.set(&[Batch { partition: 1, ..Batch::default() }], &[]);
    let p1 = TopicPartition { topic: "clickstream".into(), partition: 1 };
    let revoking = {
        let offsets = offsets.clone();
        std::thread::spawn(move || offsets.before_revoke(&[p1]))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!revoking.is_finished(), "the revocation returned with partition 1's timer batch in flight");
    worker.in_flight.clear();
    revoking.join().expect("the revocation returns once the batch settles");
}

#[test]
fn records_fetched_again_after_a_revoke_and_reassign_are_dropped_in_this_poll_or_a_later_one() {
    let rec = |partition: i32, offset: i64| InputRecord {
        topic: Arc::from("clickstream"),
        partition,
        offset,
        timestamp: None,
        key: None,
        value: None,
        headers: Default::default(),
    };
    let offsets = |records: Vec<InputRecord<'_>>| -> Vec<(i32, i64)> {
        records.iter().map(|r| (r.partition, r.offset)).collect()
    };
    let mut handed = Handed::default();
    // Partition 0 fetched 10..=12, revoked, re-assigned at 10 and fetched 10..=13, in one poll.
    let poll =
        vec![rec(0, 10), rec(1, 5), rec(0, 11), rec(0, 12), rec(0, 10), rec(0, 11), rec(1, 6), rec(0, 12), rec(0, 13)];
    assert_eq!(offsets(handed.keep_new(poll)), vec![(0, 10), (1, 5), (0, 11), (0, 12), (1, 6), (0, 13)]);
    // Re-assigned at 11 during that poll: 11..=13 come again in the next one, then 14.
    let poll = vec![rec(0, 11), rec(0, 12), rec(1, 7), rec(0, 13), rec(0, 14)];
    assert_eq!(offsets(handed.keep_new(poll)), vec![(1, 7), (0, 14)]);
    // Another topic's partition 0 is its own sequence.
    let other = InputRecord { topic: Arc::from("purchases"), ..rec(0, 3) };
    assert_eq!(offsets(handed.keep_new(vec![other])), vec![(0, 3)]);
}

/// Rules read from the rules topic are decided on in the topic's order,
/// whichever reader (the follower, or the catch-up at an assignment) read
/// them: a record at or before the last one decided on never switches the
/// worker, a later one does unless it is the version in force, and the
/// same text published again later (a rollback) switches again.
#[test]
fn topic_rules_are_decided_on_in_the_topics_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut worker = open(dir.path());
    let v1_text = std::fs::read_to_string(&worker.config.rules.path).expect("rules");
    let v2_text = v1_text.replace("when: orders.90d >= 3", "when: orders.90d >= 4");
    let compile = |text: &str| cohort_core::rules::RuleSet::from_yaml("t", text).expect("compiles");
    let (v1, v2) = (compile(&v1_text).version().to_owned(), compile(&v2_text).version().to_owned());
    assert_ne!(v1, v2);
    worker.rules_offset = 5;

    // The same version, later: decided on, nothing to switch to.
    assert!(worker.newer_topic_rules(Some((6, compile(&v1_text), v1_text.clone()))).is_none());
    assert_eq!(worker.rules_offset, 6);
    // A new version, later: switched to.
    let (rules, text) = worker.newer_topic_rules(Some((8, compile(&v2_text), v2_text.clone()))).expect("v2 is new");
    worker.rules_text = text;
    worker.switch_rules(rules);
    assert_eq!(worker.engine.rules().version(), v2);
    // The follower's late read of an older record (v1 at 6, or anything up
    // to 8) does not take the worker back.
    assert!(worker.newer_topic_rules(Some((7, compile(&v1_text), v1_text.clone()))).is_none());
    assert!(worker.newer_topic_rules(Some((8, compile(&v1_text), v1_text.clone()))).is_none());
    assert_eq!(worker.rules_offset, 8);
    // v1 published again after v2 (a rollback by SIGHUP): switched back.
    let back = worker.newer_topic_rules(Some((9, compile(&v1_text), v1_text.clone())));
    assert_eq!(back.map(|(r, _)| r.version().to_owned()), Some(v1));
}

/// A rules change decides the same whoever holds a customer's state when
/// its slice comes: the hot states, the store's scan, or some of each (the
/// slice judges every customer on its bytes; a hot one it changes must be
/// taken out of the hot states, not left there stale).
/// The same outputs, stored states, timers and metadata, over slices small
/// enough that each partition takes several, with event batches during the
/// re-evaluation (a slice runs with each) and after it (which read what the
/// re-evaluation left in the hot states); and the same again when each
/// batch and slice is decided while the one before is still in flight (its
/// writes not yet in the store, as `run` leaves them), so that slice
/// customers are read from the batch in flight.
#[test]
fn a_rules_change_decides_the_same_whether_states_are_hot_or_scanned() {
    let batches = traffic(10, 300);
    let (before, rest) = batches.split_at(6);
    let (during, after) = rest.split_at(2);
    let customers: Vec<String> = {
        let mut c: Vec<String> = batches
            .iter()
            .flatten()
            .filter_map(|r| r.key.as_deref())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let rules =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.yaml"))
            .expect("deploy/rules.yaml");
    let candidate = rules
        .replace("when: product_views.7d >= 10 && orders.30d == 0", "when: product_views.7d >= 1 && orders.30d == 0")
        .replace("  - name: dach\n    when: profile.country in [\"DE\", \"AT\", \"CH\"]\n", "")
        .replace("segments:\n", "segments:\n  - name: browsers\n    when: product_views.30d >= 2\n");
    assert_ne!(candidate, rules, "the candidate changes the rules");

    struct Run {
        held: usize,
        held_after: usize,
        rounds: usize,
        outputs: Vec<Vec<OutputRecord>>,
        stored: Vec<(i32, String, Option<Bytes>)>,
        timers: Vec<Vec<cohort_core::timers::Timer>>,
        metas: Vec<Option<cohort_core::partition::PartitionMeta>>,
    }
    // `hot`: which partitions keep their hot states into the re-evaluation.
    // `pipelined`: each batch from the switch on is decided while the one
    // before is in flight, committed to the store only after.
    let run = |hot: &[i32], pipelined: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut worker = open(dir.path());
        worker.config.rules.reevaluation_slice = 7;
        for b in before {
            worker.process_offline(b).expect("batch");
        }
        let mut pending: Option<Processed> = None;
        let mut next = |worker: &mut Worker, records: &[InputRecord<'_>]| -> Vec<OutputRecord> {
            if !pipelined {
                return sorted(worker.process_offline(records).expect("batch"));
            }
            let mut processed = worker.process(records, false).expect("batch beside the one in flight");
            if let Some(done) = pending.take() {
                commit(worker, &done);
            }
            worker.in_flight.set(&processed.commits, &processed.kafka_offsets);
            let outputs = sorted(std::mem::take(&mut processed.outputs));
            pending = Some(processed);
            outputs
        };
        for (p, rt) in worker.partitions.iter_mut() {
            if !hot.contains(p) {
                rt.hot.clear();
            }
        }
        let held_of = |w: &Worker| w.partitions.values().map(|rt| rt.hot.len()).sum::<usize>();
        let held = held_of(&worker);
        worker.use_rules(cohort_core::rules::RuleSet::from_yaml("candidate.yaml", &candidate).expect("compiles"));
        let mut outputs = Vec::new();
        for b in during {
            assert!(worker.reevaluating(), "events arrive while the re-evaluation runs");
            outputs.push(next(&mut worker, b));
        }
        let mut rounds = during.len();
        while worker.reevaluating() {
            outputs.push(next(&mut worker, &[]));
            rounds += 1;
        }
        let held_after = held_of(&worker);
        for b in after {
            outputs.push(next(&mut worker, b));
        }
        if let Some(done) = pending.take() {
            commit(&worker, &done);
            worker.in_flight.set(&[], &[]);
        }
        Run {
            held,
            held_after,
            rounds,
            outputs,
            stored: stored(&worker, &customers),
            timers: [0, 1].iter().map(|&p| worker.store.partition_timers(p).expect("timers")).collect(),
            metas: [0, 1].iter().map(|&p| worker.store.partition_meta(p).expect("meta")).collect(),
        }
    };
    let scanned = run(&[], false);
    let hot = run(&[0, 1], false);
    let mixed = run(&[1], false);
    let scanned_pipelined = run(&[], true);
    let hot_pipelined = run(&[0, 1], true);
    assert_eq!(scanned.held, 0, "no hot states: every slice customer comes from the scan");
    assert!(hot.held >= customers.len() / 2, "most customers are hot: {} of {}", hot.held, customers.len());
    assert!(hot.held_after >= hot.held, "the re-evaluation keeps the hot states: {} of {}", hot.held_after, hot.held);
    assert!(scanned.rounds >= 4, "several slices per partition: {} rounds", scanned.rounds);
    let changes = scanned.outputs.iter().flatten().filter(|o| &*o.topic == "segment-changes").count();
    assert!(changes > 5, "the change and the events move customers: {changes} segment changes");
    for (name, other) in [
        ("hot", &hot),
        ("mixed", &mixed),
        ("scanned, pipelined", &scanned_pipelined),
        ("hot, pipelined", &hot_pipelined),
    ] {
        assert_eq!(other.rounds, scanned.rounds, "{name}: rounds until the re-evaluation ends");
        for (i, (o, s)) in other.outputs.iter().zip(&scanned.outputs).enumerate() {
            assert_eq!(o.len(), s.len(), "{name}: round {i}'s number of output records");
            assert_eq!(o, s, "{name}: round {i}'s outputs (segment changes, offers, changelog)");
        }
        assert_eq!(other.stored, scanned.stored, "{name}: the stored states");
        assert_eq!(other.timers, scanned.timers, "{name}: the timers");
        assert_eq!(other.metas, scanned.metas, "{name}: the partitions' metadata");
    }
}
