//! Switching rules while the worker runs, and the background re-evaluation
//! that follows. cohort-core decides what a switch does to a partition
//! (`PartitionTask::switch_rules`, `PartitionTask::reevaluate`); this module
//! says when, feeds the slices, and tells how far it has come.
//!
//! The switch happens between two batches with nothing in flight. Each
//! owned partition then re-evaluates its stored customers in slices of
//! `rules.reevaluation_slice`, one slice per batch before the batch's events,
//! so input keeps flowing; the position is in the partition's metadata
//! record, so a crash or a partition move continues where it stopped.

use super::partitions::PartitionRuntime;
use super::Worker;
use crate::reload::{compile_topic_rules, last_record, rules_history, RulesFollower, TopicRules};
use anyhow::Context as _;
use cohort_core::engine::Engine;
use cohort_core::rules::RuleSet;
use cohort_kafka::{ChangelogReader, OutputProducer, OutputRecord};
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

/// A partition's re-evaluation as this worker has seen it, for its log line.
pub(super) struct ReevaluationRun {
    started: Instant,
    customers: u64,
    changed: u64,
}

impl Worker {
    /// Makes `rules` the rules in force: outputs name their version from
    /// the next batch on, and every owned partition starts re-evaluating
    /// its stored customers.
    pub(super) fn switch_rules(&mut self, rules: RuleSet) {
        let from = self.engine.rules().version().to_owned();
        let engine = Arc::new(Engine::new(rules, self.engine.settings().clone()));
        let m = &self.telemetry.metrics;
        m.rules_info.with_label_values(&[&from]).set(0);
        m.rules_info.with_label_values(&[engine.rules().version()]).set(1);
        self.engine = engine.clone();
        self.shared_engine.set(engine);
        self.publish_file_in_force();
        let mut partitions = Vec::new();
        for (p, rt) in self.partitions.iter_mut() {
            if begin_reevaluation(rt, &self.engine) {
                partitions.push(*p);
            }
        }
        info!(
            from = %from,
            to = %self.engine.rules().version(),
            segments = self.engine.rules().segments().len(),
            offers = self.engine.rules().offers().len(),
            reevaluating_partitions = ?partitions,
            "rules switched: every stored customer is re-evaluated in the background (cause rules_changed)"
        );
        self.publish_populations();
        self.publish_reevaluation();
    }

    /// `cohort_rules_file_in_force`: whether the rules in force are the
    /// rules file's.
    pub(super) fn publish_file_in_force(&self) {
        let own = self.engine.rules().version() == self.file_version;
        self.telemetry.metrics.rules_file_in_force.set(i64::from(own));
    }

    /// Switches to `rules` now, as a reload does between two batches (for
    /// offline use: benchmarks; with a broker the file watcher does it).
    /// [`Worker::process_offline`] of no records then runs the slices.
    pub fn use_rules(&mut self, rules: RuleSet) {
        self.switch_rules(rules);
    }

    /// Whether an owned partition has customers left to re-evaluate.
    pub fn reevaluating(&self) -> bool {
        self.partitions.values().any(|rt| rt.task.reevaluation_after().is_some())
    }

    /// `cohort_reevaluation_partitions`.
    pub(super) fn publish_reevaluation(&self) {
        let n = self.partitions.values().filter(|rt| rt.task.reevaluation_after().is_some()).count();
        self.telemetry.metrics.reevaluating_partitions.set(n as i64);
    }

    /// After a slice of `customers` that changed `changed` customers' segments.
    pub(super) fn reevaluated(&self, partition: i32, rt: &mut PartitionRuntime, customers: usize, changed: u64) {
        self.telemetry.metrics.reevaluated_customers.inc_by(customers as u64);
        let run = rt.reevaluation.get_or_insert_with(ReevaluationRun::start);
        run.customers += customers as u64;
        run.changed += changed;
        if rt.task.reevaluation_after().is_none() {
            let secs = run.started.elapsed().as_secs_f64();
            info!(
                partition,
                rules = %self.engine.rules().version(),
                customers = run.customers,
                changed = run.changed,
                seconds = format!("{secs:.2}"),
                per_second = (run.customers as f64 / secs.max(1e-6)) as u64,
                "partition re-evaluated under the rules in force"
            );
            rt.reevaluation = None;
            self.publish_reevaluation();
        }
    }
}

impl Worker {
    /// With `rules.topic`: the topic must exist. Its last record is the
    /// group's rules. This worker publishes its file if the topic is empty
    /// or has never held the file's version (a redeploy with a new file:
    /// the group switches to it); if the topic held that version before, the
    /// file is older than the group's rules (a pod restarted with an old
    /// file) and this worker takes the group's. Then the topic is followed.
    pub(super) async fn follow_rules_topic(&mut self, producer: &OutputProducer) -> anyhow::Result<()> {
        let cfg = self.config.clone();
        let topic = cfg.rules.topic.clone();
        let connect = || ChangelogReader::new(&cfg.kafka.bootstrap_servers, &cfg.kafka.properties, &topic, 1 << 20);
        let reader = connect()?;
        let (exists, history) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
            let exists = reader.partition_count(&topic)?.is_some();
            Ok((exists, if exists { Some(rules_history(&reader)?) } else { None }))
        })?;
        let Some(history) = history.filter(|_| exists) else {
            anyhow::bail!(
                "rules.topic `{topic}` does not exist: create it with one partition and cleanup.policy=compact \
                 (README, \"Changing the rules\"), or set rules.topic = \"\" to follow the file only"
            );
        };
        let file_version = self.engine.rules().version().to_owned();
        match history.latest {
            Some((group, _)) if group.version() == file_version => {}
            Some((group, text)) if history.published.contains(&file_version) => {
                tracing::warn!(
                    file = %cfg.rules.path.display(),
                    file_version = %file_version,
                    group_version = %group.version(),
                    "the rules file is a version the group ran before: running the group's rules \
                     (SIGHUP this worker to publish its file again)"
                );
                self.rules_text = text;
                self.switch_rules(group);
            }
            latest => {
                if let Some((group, _)) = latest {
                    info!(
                        file_version = %file_version,
                        group_version = %group.version(),
                        "the rules file is a version the rules topic never held (a new deploy): publishing it"
                    );
                }
                publish_rules(producer, &topic, &file_version, self.rules_text.clone()).await?;
            }
        }
        // Records up to here are decided on; the follower reads what comes
        // after (this worker's own publication, if it made one, first).
        self.rules_offset = history.end;
        self.rules_follower =
            Some(RulesFollower::spawn(reader, history.end, cfg.rules.watch_interval, self.telemetry.metrics.clone()));
        self.rules_reader = Some(connect()?);
        Ok(())
    }

    /// Rules read from the rules topic (by the follower, or by
    /// [`Worker::group_rules_for`]) that the worker has not yet decided on:
    /// their record comes after the one whose rules are in force. Marks
    /// them decided on, and returns them if they are another version.
    /// So a record read late by one reader never takes the worker back to
    /// rules the other reader has already moved it past.
    pub(super) fn newer_topic_rules(&mut self, read: Option<TopicRules>) -> Option<(RuleSet, String)> {
        let (end, rules, text) = read?;
        if end <= self.rules_offset {
            return None;
        }
        self.rules_offset = end;
        if rules.version() == self.engine.rules().version() {
            return None;
        }
        info!(version = %rules.version(), offset = end - 1, "new rules on the rules topic");
        Some((rules, text))
    }

    /// The rules topic's newest record, when partition `p` was last
    /// decided under rules other than this worker's and the topic has a
    /// record this worker has not decided on yet: the partition's last owner
    /// may have switched before this worker's follower read the topic.
    /// Switching first (rather than re-evaluating the partition back to
    /// this worker's rules and then forward again) keeps the partition's
    /// customers from moving twice. Pass the result to
    /// [`Worker::newer_topic_rules`].
    pub(super) fn group_rules_for(&self, p: i32) -> anyhow::Result<Option<TopicRules>> {
        let Some(reader) = &self.rules_reader else { return Ok(None) };
        let meta = self.store.partition_meta(p as u32)?;
        if meta.and_then(|m| m.rules).is_none_or(|r| r.version == self.engine.rules().version()) {
            return Ok(None);
        }
        let Some((end, text)) = last_record(reader, self.rules_offset)? else { return Ok(None) };
        let rules = compile_topic_rules(reader.topic(), &text)?;
        if rules.version() != self.engine.rules().version() {
            info!(
                partition = p,
                to = %rules.version(),
                "an assigned partition was decided under rules newer than this worker's: read the rules topic first"
            );
        }
        Ok(Some((end, rules, text)))
    }
}

/// Publishes rules (already compiled, so known to be valid) to the rules
/// topic; every worker switches when it reads them.
pub(super) async fn publish_rules(
    producer: &OutputProducer,
    topic: &str,
    version: &str,
    text: String,
) -> anyhow::Result<()> {
    let record = OutputRecord {
        topic: topic.into(),
        // One key per version: compaction keeps every version's last
        // record, so a worker starting later can tell an old file from a
        // new one (`rules_history`).
        key: Some(format!("rules/{version}").into_bytes()),
        value: Some(text.into_bytes()),
        headers: vec![("cohort.rules.version".into(), version.as_bytes().to_vec().into())],
        timestamp: None,
        partition: Some(0),
    };
    producer.send_all(std::slice::from_ref(&record)).await.with_context(|| format!("publishing rules to {topic}"))?;
    info!(version, topic, "rules published to the rules topic; every worker switches when it reads them");
    Ok(())
}

impl ReevaluationRun {
    fn start() -> ReevaluationRun {
        ReevaluationRun { started: Instant::now(), customers: 0, changed: 0 }
    }
}

/// Switches a partition to `engine`'s rules; true if its customers are to
/// be re-evaluated (a partition loaded mid-way continues where it stopped).
pub(super) fn begin_reevaluation(rt: &mut PartitionRuntime, engine: &Engine) -> bool {
    let pending = rt.task.switch_rules(engine);
    if pending && rt.reevaluation.is_none() {
        rt.reevaluation = Some(ReevaluationRun::start());
    }
    pending
}
