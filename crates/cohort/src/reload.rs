//! Rules hot reload: the rules file is watched while the worker runs.
//!
//! A thread reads the file every `rules.watch_interval`, and at once on
//! SIGHUP. When its bytes changed and they compile, the new rules are handed
//! to the worker, which switches between two batches (README, "Changing the
//! rules"); when they do not compile, the error (file:line:column and what
//! was expected) is logged, `cohort_rules_reloads_total{result="refused"}`
//! counts it and the rules in force keep running. A refused file is not
//! reported again until it changes.
//!
//! With `rules.topic` set, a group converges on one version: a worker whose
//! file changed publishes the text to that topic (one partition, compacted,
//! each record keyed by its version so that compaction keeps one record of
//! every version ever published) instead of switching, and every worker,
//! the publisher included, switches to each new record it reads there
//! ([`RulesFollower`]). The topic's order is the order of versions; the
//! last record published wins. At start a worker publishes its file only
//! if the topic has never held its version ([`rules_history`]): a redeploy
//! with a new file reaches the group, a pod restarted with an older file
//! does not take the group back.

use crate::metrics::Metrics;
use cohort_core::engine::Engine;
use cohort_core::hash::fast64;
use cohort_core::rules::RuleSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The engine (rules) in force, shared by the worker, which replaces it at
/// a switch, and the admin API, which reads it.
#[derive(Clone)]
pub struct SharedEngine(Arc<RwLock<Arc<Engine>>>);

impl SharedEngine {
    pub fn new(engine: Arc<Engine>) -> SharedEngine {
        SharedEngine(Arc::new(RwLock::new(engine)))
    }

    /// The engine in force now.
    pub fn get(&self) -> Arc<Engine> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, engine: Arc<Engine>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = engine;
    }
}

/// Rules read from the file that differ from the last ones read, compiled,
/// with the text they were compiled from.
pub struct RulesWatcher {
    rules: Receiver<(RuleSet, String)>,
    wake: Sender<()>,
}

impl RulesWatcher {
    /// Watches `path`, whose contents `loaded` the worker started with.
    /// `interval` zero: only [`RulesWatcher::check_now`] reads the file.
    pub fn spawn(path: PathBuf, loaded: &[u8], interval: Duration, metrics: Metrics) -> RulesWatcher {
        let (rules_tx, rules) = std::sync::mpsc::channel();
        let (wake, wake_rx) = std::sync::mpsc::channel();
        let mut last = fast64(loaded);
        std::thread::Builder::new()
            .name("cohort-rules".into())
            .spawn(move || loop {
                let woken = if interval.is_zero() {
                    wake_rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    wake_rx.recv_timeout(interval)
                };
                if woken == Err(RecvTimeoutError::Disconnected) {
                    return;
                }
                let Some(rules) = read_changed(&path, &mut last, woken.is_ok(), &metrics) else { continue };
                if rules_tx.send(rules).is_err() {
                    return;
                }
            })
            .expect("spawning the rules watcher thread");
        RulesWatcher { rules, wake }
    }

    /// Reads the file now (SIGHUP).
    pub fn check_now(&self) {
        let _ = self.wake.send(());
    }

    /// A sender that makes the watcher read the file now, for a signal handler.
    pub fn waker(&self) -> Sender<()> {
        self.wake.clone()
    }

    /// The newest rules read since the last call, if any, and their text.
    pub fn take(&self) -> Option<(RuleSet, String)> {
        self.rules.try_iter().last()
    }
}

/// The file's rules if its bytes changed since `last` and compile. A
/// change counts once two reads 100 ms apart agree, so a file caught
/// half-written (an in-place write) is not taken for the new rules. On
/// SIGHUP (`asked`) an unchanged file is handed over too: with a rules
/// topic that publishes it again; without, it is the rules in force.
fn read_changed(path: &Path, last: &mut u64, asked: bool, metrics: &Metrics) -> Option<(RuleSet, String)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            // A ConfigMap update swaps a symlink: a read can miss the file
            // for a moment. Reported, retried at the next check.
            tracing::warn!(path = %path.display(), error = %e, "cannot read the rules file; the rules in force keep running");
            return None;
        }
    };
    let hash = fast64(&bytes);
    if hash == *last && !asked {
        return None;
    }
    if hash != *last {
        std::thread::sleep(Duration::from_millis(100));
        if std::fs::read(path).ok().map(|b| fast64(&b)) != Some(hash) {
            // Still being written: the next check reads it again.
            return None;
        }
    }
    *last = hash;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            refused(metrics, path, &format!("{}: the rules file is not UTF-8", path.display()));
            return None;
        }
    };
    match RuleSet::from_yaml(&path.display().to_string(), &text) {
        Ok(rules) => {
            metrics.rules_reloads.with_label_values(&["applied"]).inc();
            Some((rules, text))
        }
        Err(e) => {
            refused(metrics, path, &e.to_string());
            None
        }
    }
}

/// Follows the rules topic (`rules.topic`): partition 0's last record is
/// the group's rules. Each new record is compiled and handed to the worker
/// with the offset after it; the worker switches to it unless it already
/// runs a later record's rules (`Worker::group_rules_for` can read the
/// topic ahead of this thread) or the same version. A record that does not
/// compile is refused as a file would be (the worker that published it had
/// checked it, so this takes a producer other than cohort).
pub struct RulesFollower {
    rules: Receiver<TopicRules>,
}

/// Rules read from the rules topic: the offset after their record, the
/// compiled rules and their text.
pub type TopicRules = (i64, RuleSet, String);

impl RulesFollower {
    /// Starts following from `next`, the topic's offset after the record
    /// the worker started with (or its end).
    pub fn spawn(
        reader: cohort_kafka::ChangelogReader,
        next: i64,
        interval: Duration,
        metrics: Metrics,
    ) -> RulesFollower {
        let (tx, rules) = std::sync::mpsc::channel();
        let mut next = next;
        let interval = if interval.is_zero() { Duration::from_secs(2) } else { interval };
        std::thread::Builder::new()
            .name("cohort-rules-topic".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let (end, latest) = match last_record(&reader, next) {
                    Ok(Some(read)) => read,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(topic = %reader.topic(), error = %e, "reading the rules topic failed; retrying");
                        continue;
                    }
                };
                next = end;
                match compile_topic_rules(reader.topic(), &latest) {
                    Ok(rules) => {
                        tracing::debug!(version = %rules.version(), topic = %reader.topic(), offset = end - 1, "rules read on the rules topic");
                        if tx.send((end, rules, latest)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        metrics.rules_reloads.with_label_values(&["refused"]).inc();
                        tracing::error!(topic = %reader.topic(), error = %e, "rules on the rules topic refused; the rules in force keep running");
                    }
                }
            })
            .expect("spawning the rules topic thread");
        RulesFollower { rules }
    }

    /// The newest rules published since the last call, if any.
    pub fn take(&self) -> Option<TopicRules> {
        self.rules.try_iter().last()
    }
}

/// The rules topic's last record at or after `from`, as text, and the
/// offset after it; `None` when nothing new was written.
pub fn last_record(reader: &cohort_kafka::ChangelogReader, from: i64) -> anyhow::Result<Option<(i64, String)>> {
    let (low, high) = reader.watermarks(0)?;
    if high <= from.max(low) {
        return Ok(None);
    }
    let mut text = None;
    let start = (high - 1).max(low).max(from);
    reader.read(0, start, high, 1 << 20, &|| true, |chunk| {
        if let Some(v) = chunk.into_iter().filter_map(|r| r.value).next_back() {
            text = Some(v);
        }
        std::ops::ControlFlow::Continue(())
    })?;
    match text {
        Some(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the rules record is not UTF-8"))?;
            Ok(Some((high, text)))
        }
        // The last offset held no value (a tombstone, or compacted away).
        None => Ok(None),
    }
}

/// A rules-topic record's text compiled, its errors naming
/// `<topic>[rules topic]` where a file's would name the file.
pub fn compile_topic_rules(topic: &str, text: &str) -> anyhow::Result<RuleSet> {
    RuleSet::from_yaml(&format!("{topic}[rules topic]"), text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// What the rules topic holds: the version of every record still on it
/// and the last record, the group's rules.
#[derive(Debug, Default)]
pub struct RulesHistory {
    /// [`RuleSet::version`] of every record on the topic.
    pub published: std::collections::BTreeSet<String>,
    /// The last record's rules and text: the group's.
    pub latest: Option<(RuleSet, String)>,
    /// The topic's end offset when it was read.
    pub end: i64,
}

/// Reads the whole rules topic (a handful of records: compaction keeps one
/// per version). A record that does not compile (a producer other than
/// cohort) counts for nothing; if it is the last one, the group's rules
/// are refused with its error, as a worker following the topic would.
pub fn rules_history(reader: &cohort_kafka::ChangelogReader) -> anyhow::Result<RulesHistory> {
    let (low, high) = reader.watermarks(0)?;
    let mut texts = Vec::new();
    reader.read(0, low, high, 1 << 20, &|| true, |chunk| {
        texts.extend(chunk.into_iter().filter_map(|r| r.value));
        std::ops::ControlFlow::Continue(())
    })?;
    let mut history = RulesHistory { end: high, ..RulesHistory::default() };
    let last = texts.len().checked_sub(1);
    for (i, bytes) in texts.into_iter().enumerate() {
        let compiled = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}[rules topic]: the rules record is not UTF-8", reader.topic()))
            .and_then(|text| Ok((compile_topic_rules(reader.topic(), &text)?, text)));
        match compiled {
            Ok((rules, text)) => {
                history.published.insert(rules.version().to_owned());
                if Some(i) == last {
                    history.latest = Some((rules, text));
                }
            }
            Err(e) if Some(i) == last => return Err(e),
            Err(_) => {}
        }
    }
    Ok(history)
}

fn refused(metrics: &Metrics, path: &Path, error: &str) {
    metrics.rules_reloads.with_label_values(&["refused"]).inc();
    tracing::error!(path = %path.display(), error, "the changed rules file is refused; the rules in force keep running");
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "version: 1\nsegments:\n  - name: a\n    when: orders.lifetime > 0\n";

    fn wait_for(w: &RulesWatcher) -> Option<(RuleSet, String)> {
        for _ in 0..200 {
            if let Some(r) = w.take() {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn a_changed_file_is_compiled_and_handed_over_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, RULES).expect("write");
        let metrics = Metrics::new().expect("metrics");
        let w = RulesWatcher::spawn(path.clone(), RULES.as_bytes(), Duration::ZERO, metrics.clone());
        // SIGHUP hands an unchanged file over too (a rules topic publishes it).
        w.check_now();
        let (same, _) = wait_for(&w).expect("SIGHUP reads the file");
        assert_eq!(same.version(), RuleSet::from_yaml("x", RULES).expect("v1").version());

        let v2 = RULES.replace("> 0", "> 1");
        std::fs::write(&path, &v2).expect("write");
        w.check_now();
        let (rules, _) = wait_for(&w).expect("the changed rules");
        assert_eq!(rules.version(), RuleSet::from_yaml("x", &v2).expect("v2").version());

        std::fs::write(&path, "version: 1\nsegments:\n  - name: a\n    when: orders.lifetime >\n").expect("write");
        w.check_now();
        for _ in 0..200 {
            if metrics.rules_reloads.with_label_values(&["refused"]).get() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(metrics.rules_reloads.with_label_values(&["refused"]).get(), 1);
        assert_eq!(metrics.rules_reloads.with_label_values(&["applied"]).get(), 2);
        assert!(w.take().is_none(), "nothing handed over for a broken file");
    }

    #[test]
    fn the_file_is_polled_without_a_signal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, RULES).expect("write");
        let w = RulesWatcher::spawn(path.clone(), RULES.as_bytes(), Duration::from_millis(20), Metrics::new().unwrap());
        std::fs::write(&path, RULES.replace("> 0", "> 2")).expect("write");
        assert!(wait_for(&w).is_some(), "picked up by the poll");
    }
}
