//! One batch, partition by partition: decode and admit the records, load
//! the states the partition task needs (hot states, the batch in flight,
//! the store), step the task (cohort-core decides everything), and turn its
//! decisions into records and a store batch.

use super::partitions::PartitionRuntime;
use super::records::Processed;
use super::telemetry::{CorruptStateReset, RecordDeadLettered};
use super::Worker;
use crate::hot;
use anyhow::anyhow;
use cohort_core::engine::{CauseKind, Output};
use cohort_core::event::Event;
use cohort_core::partition::{admit, changelog_key, BatchStates, Slice, StepInput};
use cohort_core::state::CustomerState;
use cohort_core::time::Timestamp;
use cohort_kafka::{InputRecord, TopicPartition};
use cohort_store::{Batch, Bytes, StoreError};
use std::collections::BTreeMap;

/// The hot-state charge of a customer loaded by a re-evaluation slice's
/// scan: not kept in the hot states after the batch (kept as a spare, see
/// `Scratch::spare`).
const SCANNED: usize = usize::MAX;

/// A re-evaluation slice as the store's scan read it.
#[derive(Default)]
struct ReadSlice {
    /// The customers the step holds (see `Slice::customers`): the batch's
    /// own and those loaded for the slice; not those judged unchanged,
    /// which are most.
    customers: Vec<String>,
    /// The last customer scanned, if `scanned > 0`.
    last: String,
    scanned: usize,
    complete: bool,
}

/// A batch's decoded events and loaded states. Kept between batches, empty,
/// so each batch reuses their memory: allocated afresh, a 10,000-record
/// batch's events (about 3 MB) cost a page fault per 4 KiB every batch.
#[derive(Default)]
pub(super) struct Scratch {
    /// Each admitted event with the index of its record.
    events: Vec<(Event, usize)>,
    states: BatchStates,
    /// States a re-evaluation slice loaded from the store, done with after
    /// their batch: the next slice decodes into them, reusing their strings,
    /// lists and windows (see `load_slice`). Boxed as the batch's slots
    /// hold them: a state moves between the two without copying its 700
    /// bytes. Outside `state_cache_bytes`: at most [`SPARE_STATES`], each
    /// as large as the largest state decoded into it, a few MiB in all, and
    /// only while a re-evaluation runs.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<CustomerState>>,
}

/// At most this many spare states are kept (a slice's changed customers,
/// one in six at 1,000,000 customers under `deploy/rules.yaml`'s test change).
const SPARE_STATES: usize = 1_024;

impl Worker {
    /// Decodes, decides and prepares everything a batch writes. Pure but for
    /// store reads.
    pub(super) fn process(&mut self, records: &[InputRecord<'_>], live: bool) -> anyhow::Result<Processed> {
        let mut out = Processed::default();
        // Most batches produce fewer outputs than they have records.
        out.outputs.reserve(records.len());
        out.output_event_times.reserve(records.len());
        let mut by_partition: BTreeMap<i32, Vec<&InputRecord<'_>>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        for (p, rt) in &self.partitions {
            if live || !rt.fence.is_empty() || rt.task.reevaluation_after().is_some() {
                by_partition.entry(*p).or_default();
            }
        }
        let now = self.clock.now();
        let mut scratch = std::mem::take(&mut self.scratch);
        for (partition, recs) in by_partition {
            let Some(mut rt) = self.partitions.remove(&partition) else { continue };
            let result = self.process_partition(partition, &mut rt, &recs, now, live, &mut scratch, &mut out);
            self.partitions.insert(partition, rt);
            if result.is_err() {
                self.scratch = scratch;
                self.forget_uncommitted();
                return result.map(|()| out);
            }
        }
        self.scratch = scratch;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn process_partition(
        &self,
        partition: i32,
        rt: &mut PartitionRuntime,
        recs: &[&InputRecord<'_>],
        now: Timestamp,
        live: bool,
        scratch: &mut Scratch,
        out: &mut Processed,
    ) -> anyhow::Result<()> {
        let Scratch { events, states, spare } = scratch;
        // Left from a batch that failed half-way.
        events.clear();
        states.clear();
        events.reserve(recs.len());
        // Decode and admit; bad records become dead letters.
        let mut next_offsets: Vec<(&str, i64)> = Vec::new();
        // Where each admitted event was read: its outputs' ids derive from it.
        let mut positions: Vec<(&str, i64)> = Vec::with_capacity(recs.len());
        for (i, r) in recs.iter().enumerate() {
            match next_offsets.iter_mut().find(|(t, _)| *t == &*r.topic) {
                Some(slot) => slot.1 = r.offset + 1,
                None => next_offsets.push((&r.topic, r.offset + 1)),
            }
            out.stats.records += 1;
            *out.stats.by_topic.entry(r.topic.clone()).or_default() += 1;
            let Some(kind) = self.kinds.get(r.topic.as_ref()).copied() else { continue };
            let rec = cohort_codec::Record {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
            };
            let event = match self.decoder.decode(kind, &rec) {
                Ok(ev) => ev,
                Err(e) => {
                    self.dead_letter(r, e.reason(), &e.to_string(), true, out);
                    continue;
                }
            };
            match admit(&event, now, &self.task_settings) {
                Ok(()) => {
                    events.push((event, i));
                    positions.push((&r.topic, r.offset));
                }
                Err(rejected) => self.dead_letter(r, rejected.reason, &rejected.detail, false, out),
            }
        }

        self.load_states(partition, rt, events, now, live, states)?;
        // A slice of the re-evaluation after a rules change (`rules`), read
        // with its states in one pass over the keys.
        let slice = match rt.task.reevaluation_after().map(str::to_owned) {
            Some(after) => Some(self.load_slice(partition, rt, &after, states, spare)?),
            None => None,
        };
        let input = StepInput {
            events,
            positions: &positions,
            next_offsets: &next_offsets,
            now,
            live,
            reevaluate: slice.as_ref().map(|s| Slice {
                customers: &s.customers,
                last: (s.scanned > 0).then_some(s.last.as_str()),
                complete: s.complete,
            }),
        };
        let step = rt.task.step(&self.engine, input, states);
        if let Some(slice) = &slice {
            let changed = step
                .outputs
                .iter()
                .filter(|d| matches!(&d.output, Output::SegmentChanged(s) if s.cause.kind == CauseKind::RulesChanged))
                .count();
            self.reevaluated(partition, rt, slice.scanned, changed as u64);
        }

        for (i, rejected) in &step.rejected {
            self.dead_letter(recs[*i], rejected.reason, &rejected.detail, false, out);
        }
        out.stats.timers_fired += step.timers_fired;
        for d in step.outputs {
            out.output_event_times.push(d.cause_time);
            let record = self.out_topics.output(&self.encoder, d.output, &mut out.stats)?;
            out.outputs.push(record);
        }
        self.telemetry
            .metrics
            .partition_watermark
            .with_label_values(&[&partition.to_string()])
            .set(rt.task.watermark().as_millis().max(0) / 1000);
        // What the batch read stays decoded for the next one, but not a
        // customer a re-evaluation slice loaded from the store: a rules
        // change would otherwise push the active customers out for the
        // ones it changed (at 1,000,000 customers, one in six), and each put
        // would drop an older state from memory long out of the caches.
        for (customer, slot) in states.drain() {
            if slot.is_gone() {
                continue;
            }
            if slot.charge != SCANNED {
                let charge = slot.encoded_len().map_or(slot.charge, hot::charge);
                rt.hot.put(customer, slot.state, charge);
            } else if spare.len() < SPARE_STATES && rt.task.reevaluation_after().is_some() {
                spare.push(slot.state);
            }
        }

        // The changelog and the store batch carry the same writes: first the
        // fence a restore left (see `cohort_core::partition::changelog`),
        // then the batch's states, then the metadata record that closes it.
        let mut batch = Batch {
            partition: partition as u32,
            states: Vec::with_capacity(step.writes.len()),
            timers_set: step.timers_set,
            timers_clear: step.timers_clear,
            meta: None,
        };
        let fenced = !rt.fence.is_empty();
        if fenced {
            let fence: Vec<String> = std::mem::take(&mut rt.fence).into_iter().collect();
            let keys: Vec<&str> = fence.iter().map(String::as_str).collect();
            for (customer, bytes) in fence.iter().zip(self.read_states(partition, &keys)) {
                let bytes = bytes.map_err(|e| anyhow!("reading a fenced customer's state: {e}"))?;
                let timer = bytes.as_ref().and_then(|_| rt.task.timer_of(customer));
                out.outputs.push(self.out_topics.changelog(
                    partition,
                    customer.clone(),
                    bytes.map(|b| b.to_vec()),
                    timer,
                ));
            }
        }
        for w in step.writes {
            let bytes = w.bytes.map(Bytes::from);
            let timer = bytes.as_ref().and_then(|_| rt.task.timer_of(&w.customer));
            let value = bytes.as_deref().map(<[u8]>::to_vec);
            out.outputs.push(self.out_topics.changelog(partition, w.customer.clone(), value, timer));
            batch.states.push((w.customer, bytes));
        }
        // A batch that wrote states closes with a metadata record (see
        // `cohort_core::partition::changelog`), even if nothing in it changed.
        let meta = step.meta.or_else(|| (fenced || !batch.states.is_empty()).then(|| rt.task.encode_meta()));
        if let Some(meta) = meta {
            out.meta_records.push((out.commits.len(), out.outputs.len()));
            out.outputs.push(self.out_topics.changelog(partition, changelog_key(partition), Some(meta.clone()), None));
            batch.meta = Some(meta.into());
        }
        for (topic, next) in next_offsets {
            out.kafka_offsets.push((TopicPartition { topic: topic.to_string(), partition }, next));
        }
        if !batch.states.is_empty()
            || !batch.timers_set.is_empty()
            || !batch.timers_clear.is_empty()
            || batch.meta.is_some()
        {
            out.commits.push(batch);
        }
        Ok(())
    }

    /// Reads the next re-evaluation slice after `after` from the store, in
    /// one pass over keys and states, and loads its customers the batch has
    /// not loaded. Each is judged (`PartitionTask::judge_reevaluation_in_place`)
    /// on a decode of its latest bytes: the batch in flight's, else those the
    /// scan reads, borrowed from it. Only those the re-evaluation changes are
    /// loaded, already re-evaluated, with the judgement for the step to
    /// record (marked [`SCANNED`] unless they were hot). Only the customers
    /// the step holds are named to it: a slice customer it does not hold is
    /// left as stored, or hot, exactly what it would do to the state. Call
    /// after `load_states`: a customer the step needs for its events or
    /// timers is decided there.
    #[allow(clippy::vec_box)] // `Scratch::spare`
    fn load_slice(
        &self,
        partition: i32,
        rt: &mut PartitionRuntime,
        after: &str,
        states: &mut BatchStates,
        spare: &mut Vec<Box<CustomerState>>,
    ) -> anyhow::Result<ReadSlice> {
        let in_flight = self.in_flight.states.get(&partition);
        let limit = self.config.rules.reevaluation_slice;
        let mut slice = ReadSlice::default();
        // The scanned states are decoded into one state after another, its
        // strings and lists reused; one the change moves is kept, and the
        // next is decoded into a spare one (`Scratch::spare`), else a fresh one.
        let mut scratch: Box<CustomerState> = spare.pop().unwrap_or_default();
        slice.complete = self
            .store
            .for_states_after(partition as u32, after, limit, |c, bytes| -> anyhow::Result<()> {
                slice.scanned += 1;
                slice.last.clear();
                slice.last.push_str(c);
                if states.contains(c) {
                    slice.customers.push(c.to_owned());
                    return Ok(());
                }
                // Most customers of a rules change stay as they are: judged on
                // a decode of their latest bytes (the batch in flight's, else
                // the scan's, borrowed from it), they are not loaded, and the
                // step is not told of them. Those it changes are loaded as
                // judged, with the judgement, which the step records. A hot
                // state is the decode of those same bytes, so it is not looked
                // at: in a large partition most customers are not hot, and a
                // lookup for each misses the caches. One the change moves is
                // taken out of the hot states (put back after the batch).
                let bytes = match in_flight.and_then(|m| m.get(c)) {
                    Some(Some(newer)) => Ok(&newer[..]),
                    Some(None) => {
                        // Erased by the batch in flight: loaded as the fresh
                        // state it now is.
                        slice.customers.push(c.to_owned());
                        states.insert(c.to_owned(), Box::default(), hot::charge(0));
                        return Ok(());
                    }
                    None => bytes,
                };
                if bytes.as_ref().is_ok_and(|b| cohort_core::encode::decode_into(b, &mut scratch).is_ok()) {
                    if let Some(verdict) = rt.task.judge_reevaluation_in_place(&self.engine, c, &mut scratch) {
                        let charge = rt.hot.remove(c).map_or(SCANNED, |(_, _, charge)| charge);
                        slice.customers.push(c.to_owned());
                        states.insert_judged(
                            c.to_owned(),
                            verdict.with(std::mem::replace(&mut scratch, spare.pop().unwrap_or_default())),
                            charge,
                        );
                    }
                    return Ok(());
                }
                // Unreadable: the hot state if there is one, else loaded as
                // `decode_state` resets it, loudly.
                let (state, charge) = match rt.hot.remove(c) {
                    Some((_, state, charge)) => (state, charge),
                    None => (self.decode_state(partition, bytes.map(|b| Some(Bytes::copy_from_slice(b))))?.0, SCANNED),
                };
                slice.customers.push(c.to_owned());
                states.insert(c.to_owned(), state, charge);
                Ok(())
            })
            .map_err(|e| anyhow!("reading partition {partition}'s customers to re-evaluate: {e}"))??;
        if slice.complete {
            // Only a re-evaluation uses them: none is kept after this
            // partition's last slice (nor a customer's data in them).
            spare.clear();
        } else {
            spare.push(scratch);
        }
        Ok(slice)
    }

    /// Loads the states the step needs: the events' customers and those
    /// whose timers it can fire. Hot states first; the rest, each once, in
    /// one multi-get (the batch in flight's writes over the store's).
    fn load_states(
        &self,
        partition: i32,
        rt: &mut PartitionRuntime,
        events: &[(Event, usize)],
        now: Timestamp,
        live: bool,
        states: &mut BatchStates,
    ) -> anyhow::Result<()> {
        let (hits, misses) = (rt.hot.hits, rt.hot.misses);
        let due = rt.task.customers_with_due_timers(events, now, live);
        let mut missed: foldhash::HashSet<&str> = Default::default();
        for c in events.iter().map(|(e, _)| e.customer.as_str()).chain(due.iter().map(|c| &**c)) {
            if states.contains(c) || missed.contains(c) {
                continue;
            }
            match rt.hot.take(c) {
                Some((customer, state, charge)) => states.insert(customer, state, charge),
                None => {
                    missed.insert(c);
                }
            }
        }
        // In key order, as RocksDB's multi-get wants them.
        let mut missing: Vec<&str> = missed.into_iter().collect();
        missing.sort_unstable();
        let loaded = self.read_states(partition, &missing);
        for (c, res) in missing.iter().zip(loaded) {
            let (state, charge) = self.decode_state(partition, res)?;
            states.insert(c.to_string(), state, charge);
        }
        let m = &self.telemetry.metrics;
        m.state_cache_hits.inc_by(rt.hot.hits - hits);
        m.state_cache_misses.inc_by(rt.hot.misses - misses);
        Ok(())
    }

    /// Customers' stored bytes, one result per customer: the batch in
    /// flight's where it wrote them, the store's otherwise.
    pub(super) fn read_states(&self, partition: i32, customers: &[&str]) -> Vec<Result<Option<Bytes>, StoreError>> {
        let Some(in_flight) = self.in_flight.states.get(&partition) else {
            return self.store.get_many(partition as u32, customers);
        };
        let mut out: Vec<Option<Result<Option<Bytes>, StoreError>>> =
            customers.iter().map(|c| in_flight.get(*c).map(|b| Ok(b.clone()))).collect();
        let missing: Vec<&str> = customers.iter().zip(&out).filter(|(_, r)| r.is_none()).map(|(c, _)| *c).collect();
        let mut loaded = self.store.get_many(partition as u32, &missing).into_iter();
        for slot in out.iter_mut().filter(|r| r.is_none()) {
            *slot = loaded.next();
        }
        // get_many answers every key it is given, so no slot is left empty.
        out.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    /// A loaded state, decoded, with what it costs in the hot states. A
    /// corrupt record must not stop its partition: the customer restarts
    /// from an empty state, loudly.
    fn decode_state(
        &self,
        partition: i32,
        res: Result<Option<Bytes>, StoreError>,
    ) -> anyhow::Result<(Box<CustomerState>, usize)> {
        match res {
            Ok(None) => Ok((Box::default(), hot::charge(0))),
            Ok(Some(bytes)) => match cohort_core::encode::decode(&bytes) {
                Ok(s) => Ok((Box::new(s), hot::charge(bytes.len()))),
                Err(e) => {
                    self.telemetry.emit(CorruptStateReset { partition, error: &e });
                    Ok((Box::default(), hot::charge(0)))
                }
            },
            Err(e) if e.class() == cohort_store::ErrorClass::BadData => {
                self.telemetry.emit(CorruptStateReset { partition, error: &e });
                Ok((Box::default(), hot::charge(0)))
            }
            Err(e) => Err(anyhow!("reading customer state: {e}")),
        }
    }

    fn dead_letter(
        &self,
        rec: &InputRecord<'_>,
        reason: &'static str,
        detail: &str,
        undecodable: bool,
        out: &mut Processed,
    ) {
        self.telemetry.emit(RecordDeadLettered { record: rec, reason, undecodable });
        out.outputs.push(self.out_topics.dead_letter(rec, reason, detail));
    }
}
