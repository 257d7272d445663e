//! One input partition's step: the ordering of events and timers, the
//! watermark, the timer index, the learned tables and the segment
//! populations, decided here and nowhere else.
//!
//! A [`PartitionTask`] owns what a partition knows besides its customers
//! ([`PartitionMeta`] and its pending [`Timers`]). Its [`PartitionTask::step`]
//! takes a batch of validated events with the states of the customers they
//! (and the timers the batch can fire) touch, and returns the outputs, the
//! state writes, the timer moves and the new metadata: everything a batch
//! commits. The worker, the golden tests, the end-to-end tests' expectations
//! and the benchmarks all drive partitions through it (the tests through
//! [`InMemory`]), so no copy of the ordering exists to disagree with it.
//!
//! **Order.** For each event at time T, in input order: the watermark
//! advances to T minus the allowed lateness; every timer due at or before
//! the watermark fires, earliest first (timers due at the same instant in
//! the order of a pinned hash of the customer id); then the event's own
//! customer's timers due at or before T fire, in due order (an event at T
//! proves that T has come for its customer, whatever the partition's
//! watermark); then the event is applied. After the batch's events (under a
//! live clock) the watermark follows the wall clock and due timers fire
//! again. So an event never precedes a timer of its own customer due by its
//! time, nor any timer due before the time the watermark says has come, and
//! where batch boundaries fall changes nothing (property-tested below).
//!
//! **Duplicates** (an event id the customer sent recently) change nothing,
//! the learned tables included, and come back in [`StepOutput::rejected`].
//!
//! **Rules changes.** A partition records the rules version it decides
//! under ([`RulesProgress`]). When the rules change
//! ([`PartitionTask::switch_rules`]), every customer decided under older
//! rules is re-evaluated at the partition's watermark of that moment, the
//! switch instant, with cause `rules_changed`: in the background, in key
//! order, by [`PartitionTask::reevaluate`] slices whose progress is in the
//! metadata record; and, for a customer an event or timer reaches before the
//! background does, right before that event or timer. Either way the
//! customer is re-evaluated from the same state at the same instant, so
//! where slices and batches fall changes nothing the re-evaluation emits.
//! A stale customer's pending timer was set by the old rules: the
//! re-evaluation replaces it with the new rules' one. A customer the new
//! rules neither move nor give another timer is left as stored, unwritten
//! (still stale: touching it again re-evaluates it again, to the same
//! nothing), so a rules change writes only the customers it changes.
//!
//! **Populations** count, per segment, the customers whose committed state
//! is in it: each segment change moves them, and a forget removes the
//! customer from every segment it was in.

pub mod changelog;
mod meta;

pub use meta::{changelog_key, PartitionMeta, RulesProgress, META_FORMAT_VERSION};

use crate::encode::encode_into;
use crate::engine::{apply, Decision, Engine, Input, Origin, Output, Tables};
use crate::event::{Event, EventKind};
use crate::state::{CustomerState, SegmentBits};
use crate::time::{Duration, Timestamp};
use crate::timers::{Timer, Timers};
use crate::watermark::Watermark;
use foldhash::HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Dead-letter reasons the partition step decides (see docs/schemas.md).
pub mod reason {
    /// The customer id starts with a NUL byte, reserved for cohort's own keys.
    pub const INVALID_KEY: &str = "invalid_key";
    /// The event id was already processed for this customer.
    pub const DUPLICATE_EVENT_ID: &str = "duplicate_event_id";
}

/// How a partition's time behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSettings {
    /// How far behind the highest event time the watermark trails.
    pub allowed_lateness: Duration,
    /// How far in the future of the wall clock an event may be.
    pub max_future_skew: Duration,
}

/// Why an input was not applied: a dead letter's reason and detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
}

/// Whether a decoded event may enter a partition: its customer id is not a
/// reserved key and [`Event::validate_with_skew`] accepts it at `now`.
pub fn admit(event: &Event, now: Timestamp, settings: &TaskSettings) -> Result<(), Rejected> {
    if event.customer.starts_with('\u{0}') {
        return Err(Rejected {
            reason: reason::INVALID_KEY,
            detail: "customer ids may not start with a NUL byte (reserved)".into(),
        });
    }
    event
        .validate_with_skew(now, settings.max_future_skew)
        .map_err(|e| Rejected { reason: e.reason(), detail: e.to_string() })
}

/// A slice customer's re-evaluation decided ahead of the step
/// ([`PartitionTask::judge_reevaluation`], [`BatchStates::insert_judged`]):
/// the state it left and the decision, kept together.
#[derive(Debug)]
pub struct Judged {
    state: Box<CustomerState>,
    decision: Decision,
}

/// A slice customer's re-evaluation decided on a state its holder keeps
/// ([`PartitionTask::judge_reevaluation_in_place`]), to be kept with that
/// state once its holder gives it up ([`Verdict::with`]).
#[must_use]
#[derive(Debug)]
pub struct Verdict {
    decision: Decision,
    /// The evaluation marks the judgement left on the state: `with` checks
    /// (in debug builds) that it is given the state that was judged.
    marks: (Option<Timestamp>, SegmentBits),
}

impl Verdict {
    /// The judged state with its decision, for [`BatchStates::insert_judged`].
    /// `state` must be the one the verdict was reached on.
    pub fn with(self, state: Box<CustomerState>) -> Judged {
        debug_assert!((state.evaluated_at, state.segment_bits) == self.marks, "a verdict given another state");
        Judged { state, decision: self.decision }
    }
}

/// A customer's state while a batch decides on it.
pub struct Slot {
    pub state: Box<CustomerState>,
    /// Whatever the caller keeps with the state (the worker: its cost in the
    /// hot-state cache). Untouched by the step.
    pub charge: usize,
    changed: bool,
    forgotten: bool,
    encoded_len: usize,
    /// The background re-evaluation's decision, made before the step
    /// ([`PartitionTask::judge_reevaluation`], or
    /// [`PartitionTask::judge_reevaluation_in_place`] and [`Verdict::with`]);
    /// the slot holds the state it left. The step's slice loop records it
    /// instead of deciding again.
    judged: Option<Decision>,
}

impl Slot {
    fn new(state: Box<CustomerState>, charge: usize, judged: Option<Decision>) -> Slot {
        Slot { state, charge, changed: false, forgotten: false, encoded_len: 0, judged }
    }

    /// Whether the batch changed the state (it is among the step's writes).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The length of the state's encoding in the step's writes, if changed
    /// and not erased.
    pub fn encoded_len(&self) -> Option<usize> {
        (self.changed && !self.is_gone()).then_some(self.encoded_len)
    }

    /// Forgotten in this batch and not seen again since: erased, not written.
    pub fn is_gone(&self) -> bool {
        self.forgotten && *self.state == CustomerState::default()
    }
}

/// The states a batch reads and writes, keyed by customer id. The caller
/// loads every customer [`PartitionTask::customers`] names (a customer
/// absent from the store as `CustomerState::default()`), and takes them back
/// after the step. Kept between batches, empty, so its memory is reused.
#[derive(Default)]
pub struct BatchStates {
    map: HashMap<String, Slot>,
}

impl BatchStates {
    pub fn contains(&self, customer: &str) -> bool {
        self.map.contains_key(customer)
    }

    /// Adds a loaded customer.
    pub fn insert(&mut self, customer: String, state: Box<CustomerState>, charge: usize) {
        self.map.insert(customer, Slot::new(state, charge, None));
    }

    /// Adds a customer of the next step's re-evaluation slice that
    /// [`PartitionTask::judge_reevaluation`] (or its in-place form) found
    /// changed, with the state that re-evaluation left and its decision
    /// (`judged`). The step
    /// records that decision instead of re-evaluating the customer again
    /// (the same decision: the slice comes first in the step, before
    /// anything else can move the partition). Only for a customer the step
    /// does not otherwise need: the caller loads the events' customers and
    /// those with due timers first, and judges only the slice's others.
    pub fn insert_judged(&mut self, customer: String, judged: Judged, charge: usize) {
        let Judged { state, decision } = judged;
        self.map.insert(customer, Slot::new(state, charge, Some(decision)));
    }

    pub fn get(&self, customer: &str) -> Option<&Slot> {
        self.map.get(customer)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Every customer, in no particular order, leaving the set empty.
    pub fn drain(&mut self) -> impl Iterator<Item = (String, Slot)> + '_ {
        self.map.drain()
    }
}

/// What a step is given besides the states.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    /// Admitted events (see [`admit`]) in input order, each with a tag the
    /// caller uses to find its record again (rejections name it).
    pub events: &'a [(Event, usize)],
    /// The input topic and offset each event was read from, parallel to
    /// `events` (the partition is the task's): output ids derive from them.
    pub positions: &'a [(&'a str, i64)],
    /// The next offset of each input topic after this batch, counting the
    /// records that were not admitted.
    pub next_offsets: &'a [(&'a str, i64)],
    /// The wall clock, for a live watermark.
    pub now: Timestamp,
    /// Whether the watermark follows the wall clock when events stop.
    pub live: bool,
    /// A slice of the background re-evaluation after a rules change,
    /// decided before the events (see [`PartitionTask::reevaluate`]).
    pub reevaluate: Option<Slice<'a>>,
}

/// The next stored customers after [`PartitionTask::reevaluation_after`] in
/// key order, and whether no stored customer follows them.
#[derive(Clone, Copy, Debug)]
pub struct Slice<'a> {
    /// The slice's customers the step holds in its states, to re-evaluate.
    /// One it does not hold is left as stored: the caller judged that the
    /// change leaves it as it is ([`PartitionTask::judge_reevaluation`]).
    /// Naming it anyway changes nothing.
    pub customers: &'a [String],
    /// The slice's last customer in key order, held or not: where the next
    /// slice starts. `None` for a slice of no customers.
    pub last: Option<&'a str>,
    pub complete: bool,
}

/// An output and the time of the input that caused it (an event's time, a
/// timer's due time), for latency.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub output: Output,
    pub cause_time: Timestamp,
}

/// A customer's new state bytes, or `None`: erased (forgotten).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateWrite {
    pub customer: String,
    pub bytes: Option<Vec<u8>>,
}

/// Everything a step decided: what the batch produces and commits.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// In decision order.
    pub outputs: Vec<Decided>,
    /// Events not applied: (their tag, why).
    pub rejected: Vec<(usize, Rejected)>,
    /// Changed customers, sorted by customer id.
    pub writes: Vec<StateWrite>,
    /// Timers to add and to remove in the store, each sorted.
    pub timers_set: Vec<Timer>,
    pub timers_clear: Vec<Timer>,
    /// The partition's new metadata record ([`PartitionMeta::encode`]),
    /// when anything in it changed.
    pub meta: Option<Vec<u8>>,
    pub timers_fired: u64,
}

impl StepOutput {
    /// Whether the batch has anything to commit.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.timers_set.is_empty() && self.timers_clear.is_empty() && self.meta.is_none()
    }
}

/// One partition's watermark, timers, learned tables, populations and
/// positions, and the step that moves them (see the module doc).
pub struct PartitionTask {
    partition: i32,
    settings: TaskSettings,
    watermark: Watermark,
    tables: Tables,
    timers: Timers,
    next_offsets: BTreeMap<String, i64>,
    populations: BTreeMap<String, u64>,
    rules: Option<RulesProgress>,
    /// Something the metadata record carries changed outside a step (a
    /// rules switch): the next step writes the record.
    meta_dirty: bool,
}

impl PartitionTask {
    /// A partition as committed: its metadata and its pending timers.
    pub fn new(
        partition: i32,
        meta: PartitionMeta,
        timers: impl IntoIterator<Item = Timer>,
        settings: TaskSettings,
    ) -> PartitionTask {
        let mut index = Timers::default();
        for t in timers {
            index.set(&t.customer, Some(t.due));
        }
        PartitionTask {
            partition,
            settings,
            watermark: Watermark::new(settings.allowed_lateness, meta.watermark),
            tables: meta.tables,
            timers: index,
            next_offsets: meta.next_offsets,
            populations: meta.populations,
            rules: meta.rules,
            meta_dirty: false,
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn settings(&self) -> &TaskSettings {
        &self.settings
    }

    /// Timers due at or before it have fired.
    pub fn watermark(&self) -> Timestamp {
        self.watermark.current()
    }

    /// Customers per segment, as of the last step.
    pub fn populations(&self) -> &BTreeMap<String, u64> {
        &self.populations
    }

    /// The next offset of an input topic, as of the last step.
    pub fn next_offset(&self, topic: &str) -> Option<i64> {
        self.next_offsets.get(topic).copied()
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Pending timers.
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    /// A customer's pending timer.
    pub fn timer_of(&self, customer: &str) -> Option<Timestamp> {
        self.timers.get(customer)
    }

    /// The encoded metadata record as of the last step: what a batch that
    /// changes nothing else but must close with a metadata record (a fence,
    /// see [`changelog`]) writes.
    pub fn encode_meta(&self) -> Vec<u8> {
        self.meta_ref().encode()
    }

    fn meta_ref(&self) -> meta::MetaRef<'_> {
        meta::MetaRef {
            watermark: self.watermark.current(),
            tables: &self.tables,
            next_offsets: &self.next_offsets,
            populations: &self.populations,
            // Where a batch's metadata record lands in the changelog is known
            // only once it is acknowledged: the worker stores that position
            // with the batch (`PartitionMeta::with_changelog_next`). The
            // task's own records carry none, so every copy of a batch's
            // record, the changelog's included, is the same whoever wrote it.
            changelog_next: None,
            rules: self.rules.as_ref(),
        }
    }

    /// The pending timers, sorted (what the store holds for the partition).
    pub fn pending_timers(&self) -> Vec<Timer> {
        let mut v: Vec<Timer> =
            self.timers.iter().map(|(customer, due)| Timer { due, customer: customer.to_string() }).collect();
        v.sort();
        v
    }

    /// The partition's metadata as of the last step.
    pub fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            watermark: self.watermark.current(),
            tables: self.tables.clone(),
            next_offsets: self.next_offsets.clone(),
            populations: self.populations.clone(),
            changelog_next: None,
            rules: self.rules.clone(),
        }
    }

    /// The rules version the partition decides under and its re-evaluation.
    pub fn rules_progress(&self) -> Option<&RulesProgress> {
        self.rules.as_ref()
    }

    /// The customer after which the background re-evaluation goes on
    /// (`""`: from the first); `None` when none is pending.
    pub fn reevaluation_after(&self) -> Option<&str> {
        self.rules.as_ref().and_then(|r| r.after.as_deref())
    }

    /// Makes `engine`'s rules the partition's: after a reload, a restart
    /// on another rules file, or taking over a partition last decided under
    /// other rules. If they are not the ones recorded, the partition
    /// switches at its watermark and a re-evaluation of every stored
    /// customer starts (a partition that never saw an event has none). The
    /// next step or slice writes the metadata record. True if a
    /// re-evaluation is pending.
    pub fn switch_rules(&mut self, engine: &Engine) -> bool {
        let version = engine.rules().version();
        if self.rules.as_ref().is_none_or(|r| r.version != version) {
            let at = self.watermark.current();
            let after = (at != Timestamp::MIN || !self.populations.is_empty()).then(String::new);
            let switch = self.rules.as_ref().map_or(1, |r| r.switch + 1);
            let tables = (after.is_some() && engine.rules().offers_on_rules_change()).then(|| self.tables.clone());
            self.rules = Some(RulesProgress { version: version.to_owned(), at, switch, after, tables });
            self.meta_dirty = true;
        }
        self.reevaluation_after().is_some()
    }

    /// One slice of the background re-evaluation and nothing else: a step
    /// of no events ([`StepInput::reevaluate`]). Stale customers among the
    /// slice's are re-evaluated, their new timers that are already due
    /// fire, and the metadata record (with the new position) is written.
    /// `customers` is every customer of the slice, in key order: the last
    /// is where the next slice starts.
    pub fn reevaluate(
        &mut self,
        engine: &Engine,
        customers: &[String],
        complete: bool,
        states: &mut BatchStates,
    ) -> StepOutput {
        let input = StepInput {
            events: &[],
            positions: &[],
            next_offsets: &[],
            now: Timestamp::MIN,
            live: false,
            reevaluate: Some(Slice { customers, last: customers.last().map(String::as_str), complete }),
        };
        self.step(engine, input, states)
    }

    /// Re-evaluates `customer` at the switch instant if it was decided
    /// under other rules (see the module doc); its old timer is replaced
    /// by the new rules'. True if that changed anything (a segment, the
    /// timer).
    /// `fired`: the due time of a timer being fired (already taken from the
    /// index), compared as the customer's pending timer; otherwise the
    /// index's is, so that both ways of reaching a customer compare with
    /// the same timer.
    /// A slot loaded as judged ([`BatchStates::insert_judged`]) is already
    /// re-evaluated: its decision is recorded as it stands (the judgement
    /// compared the same pending timer).
    #[allow(clippy::too_many_arguments)]
    fn refresh(
        &mut self,
        engine: &Engine,
        customer: &str,
        fired: Option<Timestamp>,
        states: &mut BatchStates,
        delta: &mut TimerDelta,
        out: &mut StepOutput,
    ) -> bool {
        let Some(at) = self.rules.as_ref().map(|r| r.at) else { return false };
        let Some(slot) = states.map.get_mut(customer) else { return false };
        let decision = match slot.judged.take() {
            Some(decision) => decision,
            None => match self.judge(engine, customer, || fired.or_else(|| self.timers.get(customer)), &mut slot.state)
            {
                Some(verdict) => verdict.decision,
                None => return false,
            },
        };
        slot.changed = true;
        self.set_timer(customer, decision.next_timer, delta);
        self.record(decision, at, out);
        true
    }

    /// `customer`'s state re-evaluated at the switch instant; `None` when
    /// no rules change is under way. For a state decided under other rules
    /// (`judge` checks `Engine::is_stale` first).
    fn rules_change(&self, engine: &Engine, customer: &str, state: &mut CustomerState) -> Option<Decision> {
        let rules = self.rules.as_ref()?;
        // Offers on a rules change are scored with the tables as they were
        // at the switch, wherever the customer's slice falls.
        let tables = rules.tables.as_ref().unwrap_or(&self.tables);
        let input = Input::RulesChanged { customer, at: rules.at, switch: rules.switch };
        Some(apply(state, input, &tables.context(engine)))
    }

    /// What the background re-evaluation does to `customer`, stored as
    /// `state` and not yet loaded into the step. `None`: nothing changes
    /// (no output, the same timer), and the customer need not be loaded for
    /// its slice, which leaves it as stored (see `refresh`; one the step
    /// does not hold is skipped). Otherwise the re-evaluated state with its
    /// decision, to load ([`BatchStates::insert_judged`]) for the next step.
    pub fn judge_reevaluation(&self, engine: &Engine, customer: &str, mut state: Box<CustomerState>) -> Option<Judged> {
        self.judge_reevaluation_in_place(engine, customer, &mut state).map(|verdict| verdict.with(state))
    }

    /// [`PartitionTask::judge_reevaluation`] on a state its holder keeps
    /// (the worker: a decode of the stored bytes into a state it reuses):
    /// `None` leaves `state` exactly as it was
    /// (the re-evaluation changed nothing anyone reads, or it was decided
    /// under these rules already); otherwise `state` is re-evaluated and
    /// the verdict is to be kept with it ([`Verdict::with`]) once the holder
    /// gives it up.
    pub fn judge_reevaluation_in_place(
        &self,
        engine: &Engine,
        customer: &str,
        state: &mut CustomerState,
    ) -> Option<Verdict> {
        self.judge(engine, customer, || self.timers.get(customer), state)
    }

    /// The judgement both the step and the worker's slices make: `timer`
    /// gives the customer's pending timer, read only if the state is stale.
    fn judge(
        &self,
        engine: &Engine,
        customer: &str,
        timer: impl FnOnce() -> Option<Timestamp>,
        state: &mut CustomerState,
    ) -> Option<Verdict> {
        if !engine.is_stale(state) {
            return None;
        }
        #[cfg(debug_assertions)]
        let original = state.clone();
        let before = (state.evaluated_at, state.segment_bits);
        let decision = self.rules_change(engine, customer, state)?;
        if decision.outputs.is_empty() && decision.next_timer == timer() {
            // Nothing anyone reads changed: the state is left as stored (and
            // unwritten: most customers of a rules change are these). It stays
            // stale, and re-evaluating it again at the same instant decides
            // the same nothing; its pending timer stands and fires as usual.
            (state.evaluated_at, state.segment_bits) = before;
            #[cfg(debug_assertions)]
            debug_assert!(*state == original, "a rules change without outputs changed only the evaluation marks");
            return None;
        }
        Some(Verdict { marks: (state.evaluated_at, state.segment_bits), decision })
    }

    /// The customers whose timers a step of `events` can fire: those due by
    /// the watermark the events (and, when `live`, the wall clock) would
    /// reach. With the events' own customers, these are the states the step
    /// needs. A customer may appear more than once.
    pub fn customers_with_due_timers(&self, events: &[(Event, usize)], now: Timestamp, live: bool) -> Vec<Arc<str>> {
        let mut horizon = self.watermark;
        for (e, _) in events {
            horizon.observe(e.time);
        }
        if live {
            horizon.observe_wall_clock(now);
        }
        self.timers.due_by(horizon.current())
    }

    /// Decides a batch (see the module doc). `states` must hold every
    /// customer of `input.events` and of [`PartitionTask::customers_with_due_timers`];
    /// it is left holding them, changed where the step wrote them.
    pub fn step(&mut self, engine: &Engine, input: StepInput<'_>, states: &mut BatchStates) -> StepOutput {
        let mut out = StepOutput::default();
        let watermark_before = self.watermark.current();
        let mut tables_dirty = false;
        let mut populations_dirty = false;
        let mut delta = TimerDelta::default();
        assert_eq!(input.events.len(), input.positions.len(), "one position per event");
        if let Some(slice) = input.reevaluate {
            for c in slice.customers {
                populations_dirty |= self.refresh(engine, c, None, states, &mut delta, &mut out);
            }
            // A judgement is made for the slice loop only: none may be
            // left for the events and timers after it.
            debug_assert!(states.map.values().all(|s| s.judged.is_none()), "a judged customer outside the slice");
            if let Some(r) = self.rules.as_mut() {
                r.after = match (slice.complete, slice.last) {
                    (true, _) => None,
                    (false, Some(last)) => Some(last.to_owned()),
                    (false, None) => r.after.take(),
                };
                if r.after.is_none() {
                    // Every stored customer is re-evaluated: none is left
                    // that a rules change could send an offer to.
                    r.tables = None;
                }
            }
            self.meta_dirty = true;
        }
        for ((event, tag), &(topic, offset)) in input.events.iter().zip(input.positions) {
            self.watermark.observe(event.time);
            populations_dirty |= self.fire_due_timers(engine, states, &mut delta, &mut out);
            populations_dirty |= self.refresh(engine, &event.customer, None, states, &mut delta, &mut out);
            populations_dirty |=
                self.fire_own_timers(engine, &event.customer, event.time, states, &mut delta, &mut out);
            let slot = states.map.entry(event.customer.clone()).or_insert_with(|| missing_slot(&event.customer));
            let forget = matches!(event.kind, EventKind::Forget);
            if forget && !slot.state.segments.is_empty() {
                for m in &slot.state.segments {
                    leave(&mut self.populations, &m.segment);
                }
                populations_dirty = true;
            }
            let origin = Origin { topic, partition: self.partition, offset };
            let decision = apply(&mut slot.state, Input::Event(event, origin), &self.tables.context(engine));
            if decision.duplicate {
                let detail = format!("event id {} was already processed for this customer", event.id);
                out.rejected.push((*tag, Rejected { reason: reason::DUPLICATE_EVENT_ID, detail }));
                continue;
            }
            self.tables.observe(event);
            tables_dirty |= matches!(event.kind, EventKind::Purchase(_) | EventKind::OfferOutcome(_));
            slot.changed = true;
            if decision.forget {
                *slot.state = CustomerState::default();
                slot.forgotten = true;
            }
            let next = if decision.forget { None } else { decision.next_timer };
            self.set_timer(&event.customer, next, &mut delta);
            populations_dirty |= self.record(decision, event.time, &mut out);
        }
        if input.live {
            self.watermark.observe_wall_clock(input.now);
        }
        populations_dirty |= self.fire_due_timers(engine, states, &mut delta, &mut out);
        self.meta_dirty |= tables_dirty || populations_dirty || self.watermark.current() != watermark_before;
        self.finish(states, delta, &mut out, input.next_offsets);
        out
    }

    /// Ends a step or slice: the changed states' writes, the timer moves,
    /// the new input positions, and the metadata record if anything in it
    /// changed.
    fn finish(
        &mut self,
        states: &mut BatchStates,
        delta: TimerDelta,
        out: &mut StepOutput,
        next_offsets: &[(&str, i64)],
    ) {
        let mut writes = Vec::new();
        // Encoded into one buffer, then copied out at their exact size: no
        // size estimate walked per state, no allocation grown per state.
        let mut buf = Vec::new();
        for (customer, slot) in states.map.iter_mut().filter(|(_, s)| s.changed) {
            let bytes = if slot.is_gone() {
                None
            } else {
                encode_into(&slot.state, &mut buf);
                Some(buf.as_slice().to_vec())
            };
            slot.encoded_len = bytes.as_ref().map_or(0, Vec::len);
            writes.push(StateWrite { customer: customer.clone(), bytes });
        }
        // Customers are unique, so unstable is exact.
        writes.sort_unstable_by(|a, b| a.customer.cmp(&b.customer));
        out.writes = writes;
        let (set, clear) = delta.finish(&self.timers);
        self.timers.compact();
        out.timers_set = set;
        out.timers_clear = clear;
        for (topic, next) in next_offsets {
            match self.next_offsets.get_mut(*topic) {
                Some(o) if *o == *next => {}
                Some(o) => {
                    *o = *next;
                    self.meta_dirty = true;
                }
                None => {
                    self.next_offsets.insert(topic.to_string(), *next);
                    self.meta_dirty = true;
                }
            }
        }
        if std::mem::take(&mut self.meta_dirty) {
            out.meta = Some(self.meta_ref().encode());
        }
    }

    /// Fires every timer due at or before the watermark, earliest first.
    /// True if a population changed.
    fn fire_due_timers(
        &mut self,
        engine: &Engine,
        states: &mut BatchStates,
        delta: &mut TimerDelta,
        out: &mut StepOutput,
    ) -> bool {
        let mut populations_dirty = false;
        while let Some((due, customer)) = self.timers.pop_due(self.watermark.current()) {
            populations_dirty |= self.fire(engine, due, customer, states, delta, out);
        }
        populations_dirty
    }

    /// Fires `customer`'s timers due at or before `by`, in due order (each
    /// firing may set the next one, itself due by `by`). True if a
    /// population changed.
    fn fire_own_timers(
        &mut self,
        engine: &Engine,
        customer: &str,
        by: Timestamp,
        states: &mut BatchStates,
        delta: &mut TimerDelta,
        out: &mut StepOutput,
    ) -> bool {
        let mut populations_dirty = false;
        while let Some((due, customer)) = self.timers.take_due(customer, by) {
            populations_dirty |= self.fire(engine, due, customer, states, delta, out);
        }
        populations_dirty
    }

    /// Fires one timer, already taken from the index. True if a population
    /// changed.
    fn fire(
        &mut self,
        engine: &Engine,
        due: Timestamp,
        customer: Arc<str>,
        states: &mut BatchStates,
        delta: &mut TimerDelta,
        out: &mut StepOutput,
    ) -> bool {
        delta.touch(customer.clone(), Some(due));
        if self.refresh(engine, &customer, Some(due), states, delta, out) {
            // The old rules' timer; the re-evaluation set the new rules' one.
            return true;
        }
        let slot = states.map.entry(customer.to_string()).or_insert_with(|| missing_slot(&customer));
        let decision = apply(&mut slot.state, Input::Timer { customer: &customer, due }, &self.tables.context(engine));
        slot.changed = true;
        out.timers_fired += 1;
        // A timer is always set after the instant it fired at (the
        // engine's contract); one that was not would fire forever.
        debug_assert!(decision.next_timer.is_none_or(|t| t > due), "timer of {customer} did not move forward");
        let next = decision.next_timer.filter(|t| *t > due);
        self.set_timer(&customer, next, delta);
        self.record(decision, due, out)
    }

    fn set_timer(&mut self, customer: &str, due: Option<Timestamp>, delta: &mut TimerDelta) {
        if let Some((id, old)) = self.timers.set(customer, due) {
            delta.touch(id, old);
        }
    }

    /// Keeps a decision's outputs and counts its segment changes. True if a
    /// population changed.
    fn record(&mut self, decision: Decision, cause_time: Timestamp, out: &mut StepOutput) -> bool {
        let mut changed = false;
        for output in decision.outputs {
            if let Output::SegmentChanged(s) = &output {
                for seg in &s.entered {
                    match self.populations.get_mut(seg) {
                        Some(n) => *n += 1,
                        None => {
                            self.populations.insert(seg.clone(), 1);
                        }
                    }
                }
                for seg in &s.exited {
                    leave(&mut self.populations, seg);
                }
                changed |= !s.entered.is_empty() || !s.exited.is_empty();
            }
            out.outputs.push(Decided { output, cause_time });
        }
        changed
    }
}

/// One customer fewer in `segment`. A population never goes below zero: a
/// customer whose corrupt state was reset left no record of its segments.
fn leave(populations: &mut BTreeMap<String, u64>, segment: &str) {
    if let Some(n) = populations.get_mut(segment) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            populations.remove(segment);
        }
    }
}

/// A state the caller did not load, though the step needs it: a broken
/// contract. In debug builds it fails loudly; in release the customer
/// starts afresh rather than stopping the partition.
fn missing_slot(customer: &str) -> Slot {
    debug_assert!(false, "customer {customer:?} was not loaded for the step");
    Slot::new(Box::default(), 0, None)
}

/// Each customer's timer as it was when the batch first touched it; the
/// store is told only the difference to its timer at the end of the batch
/// (a timer cleared and set again within one batch must survive).
#[derive(Default)]
struct TimerDelta {
    initial: HashMap<Arc<str>, Option<Timestamp>>,
}

impl TimerDelta {
    fn touch(&mut self, customer: Arc<str>, due: Option<Timestamp>) {
        self.initial.entry(customer).or_insert(due);
    }

    /// `(timers to set, timers to clear)`, given the timers at the end of the batch.
    fn finish(self, now: &Timers) -> (Vec<Timer>, Vec<Timer>) {
        let mut set = Vec::new();
        let mut clear = Vec::new();
        for (customer, before) in self.initial {
            let after = now.get(&customer);
            if before == after {
                continue;
            }
            if let Some(due) = before {
                clear.push(Timer { due, customer: customer.to_string() });
            }
            if let Some(due) = after {
                set.push(Timer { due, customer: customer.to_string() });
            }
        }
        set.sort();
        clear.sort();
        (set, clear)
    }
}

/// A partition driven entirely in memory: the task and a map standing in
/// for the store. What the tests' reference models and offline replays use,
/// so they decide exactly as the worker does.
pub struct InMemory {
    pub task: PartitionTask,
    /// Every customer with a state, as committed.
    pub states: BTreeMap<String, CustomerState>,
    scratch: BatchStates,
    /// The input topic each event is read from.
    topic_of: Box<dyn Fn(&EventKind) -> String + Send>,
}

impl InMemory {
    /// Reads events from the default topics ([`default_topic`]).
    pub fn new(task: PartitionTask) -> InMemory {
        InMemory {
            task,
            states: BTreeMap::new(),
            scratch: BatchStates::default(),
            topic_of: Box::new(|k| default_topic(k).to_owned()),
        }
    }

    /// Reads events from the topics `topic_of` names (a deployment that
    /// renamed them), so that output ids are that deployment's.
    pub fn with_topics(mut self, topic_of: impl Fn(&EventKind) -> String + Send + 'static) -> InMemory {
        self.topic_of = Box::new(topic_of);
        self
    }

    /// One batch: admits nothing (the events must be valid), loads the
    /// states the step needs, steps, and keeps what it wrote. Each event is
    /// read from its kind's topic at that topic's next offset, as a worker
    /// reading those topics from offset 0 (every record admitted) reads
    /// them, so output ids are those the worker gives.
    pub fn step(&mut self, engine: &Engine, events: &[Event], now: Timestamp, live: bool) -> StepOutput {
        let tagged: Vec<(Event, usize)> = events.iter().cloned().enumerate().map(|(i, e)| (e, i)).collect();
        let topics: Vec<String> = events.iter().map(|e| (self.topic_of)(&e.kind)).collect();
        let mut next: Vec<(&str, i64)> = Vec::new();
        let mut positions = Vec::with_capacity(events.len());
        for topic in &topics {
            let i = match next.iter().position(|(t, _)| t == topic) {
                Some(i) => i,
                None => {
                    next.push((topic, self.task.next_offset(topic).unwrap_or(0)));
                    next.len() - 1
                }
            };
            positions.push((topic.as_str(), next[i].1));
            next[i].1 += 1;
        }
        let due = self.task.customers_with_due_timers(&tagged, now, live);
        for c in tagged.iter().map(|(e, _)| e.customer.as_str()).chain(due.iter().map(|c| &**c)) {
            if !self.scratch.contains(c) {
                let state = self.states.get(c).cloned().unwrap_or_default();
                self.scratch.insert(c.to_string(), Box::new(state), 0);
            }
        }
        let input =
            StepInput { events: &tagged, positions: &positions, next_offsets: &next, now, live, reevaluate: None };
        let out = self.task.step(engine, input, &mut self.scratch);
        self.keep_changed();
        out
    }

    /// Switches the partition to `engine`'s rules ([`PartitionTask::switch_rules`]).
    pub fn switch_rules(&mut self, engine: &Engine) -> bool {
        self.task.switch_rules(engine)
    }

    /// One background re-evaluation slice over at most `max` stored
    /// customers, in key order as the store gives them
    /// ([`PartitionTask::reevaluate`]); `None` when none is pending.
    pub fn reevaluate(&mut self, engine: &Engine, max: usize) -> Option<StepOutput> {
        let (customers, complete) = self.next_slice(max)?;
        for c in &customers {
            self.scratch.insert(c.clone(), Box::new(self.states[c].clone()), 0);
        }
        let out = self.task.reevaluate(engine, &customers, complete, &mut self.scratch);
        self.keep_changed();
        Some(out)
    }

    /// [`InMemory::reevaluate`] as the worker loads a slice: only the
    /// customers [`PartitionTask::judge_reevaluation`] finds changed, each
    /// already re-evaluated and carrying its judgement.
    pub fn reevaluate_judged(&mut self, engine: &Engine, max: usize) -> Option<StepOutput> {
        let (customers, complete) = self.next_slice(max)?;
        for c in &customers {
            if let Some(judged) = self.task.judge_reevaluation(engine, c, Box::new(self.states[c].clone())) {
                self.scratch.insert_judged(c.clone(), judged, 0);
            }
        }
        let out = self.task.reevaluate(engine, &customers, complete, &mut self.scratch);
        self.keep_changed();
        Some(out)
    }

    /// The next re-evaluation slice: at most `max` stored customers after
    /// the partition's re-evaluation position, in key order, and whether
    /// it reaches the last of them; `None` when none is pending.
    fn next_slice(&self, max: usize) -> Option<(Vec<String>, bool)> {
        let after = self.task.reevaluation_after()?;
        let mut customers: Vec<String> = self
            .states
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .take(max.saturating_add(1))
            .map(|(c, _)| c.clone())
            .collect();
        let complete = customers.len() <= max;
        customers.truncate(max);
        Some((customers, complete))
    }

    /// Takes the states a step or slice changed into `states`.
    fn keep_changed(&mut self) {
        for (customer, slot) in self.scratch.drain() {
            if !slot.changed() {
                continue;
            }
            if slot.is_gone() {
                self.states.remove(&customer);
            } else {
                self.states.insert(customer, *slot.state);
            }
        }
    }
}

/// The input topic an event of this kind is read from under the default
/// topic names (README, "Topics and records").
pub fn default_topic(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Click(_) => "clickstream",
        EventKind::Purchase(_) => "purchases",
        EventKind::ProfileUpdate(_) | EventKind::Forget => "customer-profiles",
        EventKind::OfferOutcome(_) => "offer-outcomes",
    }
}

#[cfg(test)]
mod tests;
