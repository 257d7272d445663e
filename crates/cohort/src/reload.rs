//! Rules hot reload: the rules file is watched while the worker runs.
//!
//! A thread reads the file every `rules.watch_interval`, and at once on
//! SIGHUP. When its bytes changed and they compile, the new rules are handed
//! to the worker, which switches between two batches (README, "Changing the
//! rules"); when they do not compile, the error (file:line:column and what
//! was expected) is logged, `cohort_rules_reloads_total{result="refused"}`
//! counts it and the rules in force keep running. A refused file is not
//! reported again until it changes.

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

/// Rules read from the file that differ from the last ones read, compiled.
pub struct RulesWatcher {
    rules: Receiver<RuleSet>,
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

    /// The newest rules read since the last call, if any.
    pub fn take(&self) -> Option<RuleSet> {
        self.rules.try_iter().last()
    }
}

/// The file's rules if its bytes changed since `last` and compile. On
/// SIGHUP (`asked`) an unchanged file is logged as such.
fn read_changed(path: &Path, last: &mut u64, asked: bool, metrics: &Metrics) -> Option<RuleSet> {
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
    if hash == *last {
        if asked {
            tracing::info!(path = %path.display(), "SIGHUP: the rules file is unchanged");
        }
        return None;
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
            Some(rules)
        }
        Err(e) => {
            refused(metrics, path, &e.to_string());
            None
        }
    }
}

fn refused(metrics: &Metrics, path: &Path, error: &str) {
    metrics.rules_reloads.with_label_values(&["refused"]).inc();
    tracing::error!(path = %path.display(), error, "the changed rules file is refused; the rules in force keep running");
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "version: 1\nsegments:\n  - name: a\n    when: orders.lifetime > 0\n";

    fn wait_for(w: &RulesWatcher) -> Option<RuleSet> {
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
        w.check_now();
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.take().is_none(), "an unchanged file is no new rules");

        let v2 = RULES.replace("> 0", "> 1");
        std::fs::write(&path, &v2).expect("write");
        w.check_now();
        let rules = wait_for(&w).expect("the changed rules");
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
        assert_eq!(metrics.rules_reloads.with_label_values(&["applied"]).get(), 1);
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
