//! The output producer: idempotent, acks=all, awaited before the store
//! commits. A replayed batch re-sends the same records with the same ids, so
//! downstream consumers deduplicate on the id: at-least-once delivery with
//! idempotency keys.
//!
//! Records linger (`linger.ms`, 100 by default, as in Kafka Streams) until
//! a caller waits for them: [`OutputProducer::send_all`] and
//! [`OutputProducer::wait`] then ask a flushing thread to send them at once.
//! librdkafka's idempotent producer sends one request per partition at a
//! time (it compares the messages in flight with its limit of five
//! requests), and while a partition has more records due its broker thread
//! polls without sleeping until the acknowledgement comes back. So
//! `send_all` queues at most one request's worth per topic at a time, holds the
//! flushing off while it queues (a flush under way would send a
//! partition's first records alone), then sends and awaits them. With
//! `linger.ms=5` that spinning thread was half of the worker's CPU through
//! tansu (docs/benchmarks.md, "Session 14: the cost of an event through
//! the broker").
//!
//! Delivery reports are served by a thread of our own (`cohort-delivery`)
//! that sleeps until librdkafka puts one on the producer's queue, instead
//! of rdkafka's `FutureProducer` polling thread: that thread polls in
//! 100 ms rounds whose last millisecond, rounded down to a 0 ms timeout,
//! is spent polling without sleeping. It cost 1% of a core while idle and
//! about a tenth of the worker's CPU through tansu (docs/benchmarks.md,
//! "Session 16").

use crate::client_config;
use crate::error::KafkaAdapterError;
use crate::logging::ProducerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// cohort's `linger.ms`: how long a record waits for others to share its
/// produce request when nobody waits for it. Kafka Streams uses the same.
pub const DEFAULT_LINGER_MS: u64 = 100;

/// A record header: name and value, borrowed when they are constants.
pub type OutputHeader = (Cow<'static, str>, Cow<'static, [u8]>);

/// A record to produce, owned. The topic is shared and constant headers are
/// borrowed, so that the worker's many records cost as few allocations as
/// their keys and values need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    /// `None` produces a tombstone (compacted topics delete the key).
    pub value: Option<Vec<u8>>,
    pub headers: Vec<OutputHeader>,
    /// The record timestamp in ms since the epoch; the broker's clock when `None`.
    pub timestamp: Option<i64>,
    /// The partition to write to; `None`: the partitioner's choice by key
    /// (librdkafka's default, murmur2-compatible with the Java client's).
    pub partition: Option<i32>,
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A send in flight; await it with [`OutputProducer::wait`].
pub struct Pending(oneshot::Receiver<Result<Delivered, KafkaError>>);

/// What each produced record carries to its delivery report: where to say
/// how it went.
type DeliverySlot = Box<oneshot::Sender<Result<Delivered, KafkaError>>>;

impl rdkafka::producer::ProducerContext for ProducerContext {
    type DeliveryOpaque = DeliverySlot;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: DeliverySlot) {
        let outcome = match result {
            Ok(m) => Ok(Delivered { partition: m.partition(), offset: m.offset() }),
            Err((e, _)) => Err(e.clone()),
        };
        // The caller may have stopped waiting (a failed batch): nothing to tell.
        let _ = slot.send(outcome);
    }
}

/// The producer of segment changes, offers, dead letters and the changelog.
#[derive(Clone)]
pub struct OutputProducer {
    inner: Arc<BaseProducer<ProducerContext>>,
    /// The flushing and delivery threads' controls; both end with the last clone.
    threads: Arc<Threads>,
    /// At most this much per topic is queued at a time by
    /// [`OutputProducer::send_all`]: what one produce request holds.
    request: RequestSize,
}

/// What one produce request holds at most (`batch.size`, capped by
/// `message.max.bytes`, and `batch.num.messages`).
#[derive(Clone, Copy, Debug)]
struct RequestSize {
    bytes: usize,
    records: usize,
}

impl RequestSize {
    /// From the producer's properties, librdkafka's defaults where unset.
    fn of(properties: &BTreeMap<String, String>) -> RequestSize {
        let get = |k: &str, default: usize| properties.get(k).and_then(|v| v.trim().parse().ok()).unwrap_or(default);
        RequestSize {
            bytes: get("batch.size", 1_000_000).min(get("message.max.bytes", 1_000_000)),
            records: get("batch.num.messages", 10_000),
        }
    }

    /// The end of the run of `records` that no partition needs more than
    /// one request for (at least one record): each topic's records in it
    /// fit one request, as its partitions' then do. A record's size is
    /// estimated as its key, value and headers plus the record batch's
    /// per-record framing, with a margin.
    fn end_of_first(&self, records: &[OutputRecord]) -> usize {
        let budget = self.bytes - self.bytes / 10;
        // (topic, estimated bytes, records) of the run so far; a batch
        // writes to a handful of topics.
        let mut used: Vec<(&str, usize, usize)> = Vec::with_capacity(4);
        for (i, r) in records.iter().enumerate() {
            let size = 64
                + r.key.as_ref().map_or(0, Vec::len)
                + r.value.as_ref().map_or(0, Vec::len)
                + r.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
            let topic = match used.iter().position(|(t, _, _)| *t == &*r.topic) {
                Some(t) => t,
                None => {
                    used.push((&r.topic, 0, 0));
                    used.len() - 1
                }
            };
            let (_, bytes, count) = &mut used[topic];
            if i > 0 && (*bytes + size > budget || *count >= self.records) {
                return i;
            }
            *bytes += size;
            *count += 1;
        }
        records.len()
    }
}

impl OutputProducer {
    /// Creates an idempotent producer with acks=all. `properties` are
    /// librdkafka settings applied after cohort's defaults.
    pub fn new(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<OutputProducer, KafkaAdapterError> {
        let mut config = client_config(bootstrap, &BTreeMap::new());
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", DEFAULT_LINGER_MS.to_string())
            // A broker may be away for minutes (a rolling restart); the
            // worker stalls rather than drops outputs.
            .set("message.timeout.ms", "300000")
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in properties {
            config.set(k, v);
        }
        // Every record's delivery report is awaited: without the reports of
        // successful records, `send_all` would wait for ever.
        if properties.get("delivery.report.only.error").is_some_and(|v| v.trim() == "true") {
            return Err(KafkaAdapterError::Config(KafkaError::ClientCreation(
                "delivery.report.only.error=true is not supported: cohort waits for every record's acknowledgement"
                    .into(),
            )));
        }
        let inner: Arc<BaseProducer<ProducerContext>> =
            Arc::new(config.create_with_context(ProducerContext::default()).map_err(KafkaAdapterError::Config)?);
        // Made before the threads: if one fails to start, dropping it ends the other.
        let threads = Arc::new(Threads { flusher: Arc::default(), reports: Arc::default() });
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(run)
                .map(drop)
                .map_err(|e| KafkaAdapterError::Config(KafkaError::ClientCreation(format!("{name} thread: {e}"))))
        };
        let (polling, reports) = (inner.clone(), threads.reports.clone());
        spawn("cohort-delivery", Box::new(move || serve_delivery_reports(&polling, &reports)))?;
        let (flushing, flusher) = (inner.clone(), threads.flusher.clone());
        spawn("cohort-flush", Box::new(move || flush_on_request(&flushing, &flusher)))?;
        Ok(OutputProducer { inner, threads, request: RequestSize::of(properties) })
    }

    /// Asks for everything queued to be sent without waiting for
    /// `linger.ms`. Returns at once.
    pub fn send_now(&self) {
        let mut s = self.threads.flusher.lock();
        s.asked += 1;
        self.threads.flusher.changed.notify_all();
    }

    /// Enqueues a record. When librdkafka's queue is full this waits for room
    /// (the producer drains as the broker acknowledges), so callers get
    /// backpressure instead of an error.
    pub async fn send(&self, rec: &OutputRecord) -> Result<Pending, KafkaAdapterError> {
        let (tx, rx) = oneshot::channel();
        let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
        for (k, v) in &rec.headers {
            headers = headers.insert(Header { key: k, value: Some(&**v) });
        }
        let mut record: BaseRecord<'_, [u8], [u8], DeliverySlot> =
            BaseRecord::with_opaque_to(&rec.topic, Box::new(tx)).headers(headers);
        if let Some(k) = &rec.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &rec.value {
            record = record.payload(v.as_slice());
        }
        if let Some(ts) = rec.timestamp {
            record = record.timestamp(ts);
        }
        if let Some(p) = rec.partition {
            record = record.partition(p);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(Pending(rx)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits for one send's acknowledgement: where the record was written.
    /// What is queued is sent at once ([`OutputProducer::send_now`]).
    pub async fn wait(&self, pending: Pending) -> Result<Delivered, KafkaAdapterError> {
        self.send_now();
        Self::acknowledged(pending).await
    }

    /// Waits for one send's acknowledgement, without asking for a send.
    async fn acknowledged(pending: Pending) -> Result<Delivered, KafkaAdapterError> {
        match pending.0.await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(KafkaAdapterError::Cancelled),
        }
    }

    /// Sends all records and waits until every one is acknowledged. Returns
    /// where each was written, in the order of `records`.
    ///
    /// At most what one produce request holds is queued at a time, then
    /// sent at once and awaited: the idempotent producer sends one request
    /// per partition at a time, and while a partition has more records due
    /// its broker thread polls without sleeping (see the module doc). So no
    /// partition ever has a second request's worth waiting.
    pub async fn send_all(&self, records: &[OutputRecord]) -> Result<Vec<Delivered>, KafkaAdapterError> {
        let mut delivered = Vec::with_capacity(records.len());
        let mut rest = records;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(self.request.end_of_first(rest));
            rest = later;
            // While they are queued the records linger: a flush under way
            // would send a partition's first records alone, and its next
            // ones would wait for that request, the broker thread spinning.
            let held = self.threads.flusher.hold().await;
            let mut pending = Vec::with_capacity(now.len());
            for r in now {
                pending.push(self.send(r).await?);
            }
            // Releasing the hold asks for them to be sent.
            drop(held);
            for p in pending {
                delivered.push(Self::acknowledged(p).await?);
            }
        }
        Ok(delivered)
    }

    /// Records handed to the producer and not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// Waits until everything queued is acknowledged or `timeout` passes.
    /// The flushing thread sends it at once.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaAdapterError> {
        self.send_now();
        Ok(self.inner.flush(timeout)?)
    }
}

/// What the flushing thread and the callers share.
#[derive(Default)]
struct Flusher {
    state: Mutex<FlushState>,
    /// Signals the thread (a request, a hold, the end).
    changed: Condvar,
    /// Signals the callers that the thread stopped flushing.
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct FlushState {
    /// Requests to send now, counted: the thread serves the latest.
    asked: u64,
    /// Callers queueing records that must linger until they are all queued.
    holds: usize,
    /// The thread holds a flush.
    active: bool,
    /// Every producer clone is gone: the thread ends.
    closed: bool,
}

impl Flusher {
    fn lock(&self) -> MutexGuard<'_, FlushState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the thread flushing until the returned guard is dropped.
    async fn hold(&self) -> Hold<'_> {
        self.lock().holds += 1;
        self.changed.notify_all();
        let held = Hold(self);
        loop {
            let idle = self.idle.notified();
            if !self.lock().active {
                return held;
            }
            idle.await;
        }
    }
}

/// A caller's hold on the flushing thread; released when dropped.
struct Hold<'a>(&'a Flusher);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.holds -= 1;
        // The thread may have stopped flushing for this hold: whatever was
        // asked before is asked again (and what the holder queued, if it
        // did not fail), so no caller waits out the linger.
        s.asked += 1;
        drop(s);
        self.0.changed.notify_all();
    }
}

/// Ends the flushing and delivery threads when the last producer clone is
/// dropped. Each thread holds a producer clone, so the librdkafka handle is
/// destroyed by the last of them to end (the flushing thread after its last
/// flush slice, up to 100 ms later).
struct Threads {
    flusher: Arc<Flusher>,
    reports: Arc<Reports>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.flusher.lock().closed = true;
        self.flusher.changed.notify_all();
        self.reports.lock().closed = true;
        self.reports.changed.notify_all();
    }
}

/// The flushing thread: on each request, unless a caller holds it, holds
/// librdkafka's flush (which sends queued records without waiting for
/// `linger.ms`) until nothing is left in flight or a caller holds it.
/// rdkafka's own `flush` calls `rd_kafka_flush` with no timeout and polls
/// between calls, so the linger is lifted only for an instant, too short
/// for the broker threads to notice.
fn flush_on_request(producer: &BaseProducer<ProducerContext>, f: &Flusher) {
    /// One `rd_kafka_flush` call; between calls the thread checks for a
    /// hold. A call returns as soon as nothing is in flight, and `send_all`
    /// holds only after its records are acknowledged, so a hold rarely
    /// waits; each call wakes every broker thread, so fewer are cheaper.
    const SLICE_MS: i32 = 100;
    let mut served = 0;
    loop {
        {
            let mut s = f.lock();
            while (s.asked == served || s.holds > 0) && !s.closed {
                s = f.changed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if s.closed {
                return;
            }
            served = s.asked;
            s.active = true;
        }
        loop {
            #[allow(unsafe_code)]
            // SAFETY: the handle is valid while `producer` lives, and
            // rd_kafka_flush may be called from any thread. With delivery
            // reports as events (rdkafka's mode) it only waits for the
            // messages in flight to reach none, serving no queue that the
            // delivery thread serves.
            let left = unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), SLICE_MS) };
            if left != rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR__TIMED_OUT {
                // Nothing in flight (or an error that a retry would repeat).
                break;
            }
            let s = f.lock();
            if s.holds > 0 || s.closed {
                break;
            }
        }
        f.lock().active = false;
        f.idle.notify_waiters();
    }
}

/// What the delivery thread and librdkafka's wake-up share.
#[derive(Default)]
struct Reports {
    state: Mutex<ReportsState>,
    changed: Condvar,
}

#[derive(Default)]
struct ReportsState {
    /// librdkafka put something on the producer's queue since the thread last looked.
    queued: bool,
    /// Every producer clone is gone: the thread ends.
    closed: bool,
}

impl Reports {
    fn lock(&self) -> MutexGuard<'_, ReportsState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Called by librdkafka when an event lands on the producer's empty queue,
/// on the thread that queued it (one of librdkafka's, or a caller's) and
/// holding the queue's lock: only wakes the delivery thread.
#[allow(unsafe_code)]
unsafe extern "C" fn reports_queued(_rk: *mut rdkafka::bindings::rd_kafka_t, opaque: *mut std::ffi::c_void) {
    // SAFETY: `opaque` is the `Reports` that `serve_delivery_reports` keeps
    // alive until it has switched this callback off.
    let reports = unsafe { &*(opaque as *const Reports) };
    reports.lock().queued = true;
    reports.changed.notify_all();
}

/// The delivery thread: sleeps until librdkafka queues an event (delivery
/// reports, errors, statistics) for the producer, then serves the queue
/// until it is empty, each event without waiting (`poll(0)`). A wake-up
/// missed for any reason costs at most a second: the thread looks anyway.
fn serve_delivery_reports(producer: &BaseProducer<ProducerContext>, reports: &Arc<Reports>) {
    const LOOK_ANYWAY: Duration = Duration::from_secs(1);
    let watch = QueueWatch::start(producer, reports);
    loop {
        while watch.queued() > 0 {
            producer.poll(Duration::ZERO);
        }
        let mut s = reports.lock();
        if !s.queued && !s.closed {
            s = reports.changed.wait_timeout(s, LOOK_ANYWAY).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        if s.closed {
            break;
        }
        s.queued = false;
    }
}

/// The producer's queue, watched: librdkafka calls [`reports_queued`] with
/// the thread's `Reports` while this lives. Dropped (also if the thread
/// unwinds), it switches the callback off before the `Reports` can go.
struct QueueWatch(*mut rdkafka::bindings::rd_kafka_queue_t);

impl QueueWatch {
    /// `reports` must outlive the watch; `producer` too (the queue
    /// reference keeps librdkafka's handle alive in any case).
    fn start(producer: &BaseProducer<ProducerContext>, reports: &Arc<Reports>) -> QueueWatch {
        #[allow(unsafe_code)]
        // SAFETY: the handle is valid while `producer` lives; the callback's
        // opaque is `reports`, which the caller keeps alive longer than the
        // watch, and the watch switches the callback off when dropped.
        unsafe {
            let queue = rdkafka::bindings::rd_kafka_queue_get_main(producer.client().native_ptr());
            rdkafka::bindings::rd_kafka_queue_cb_event_enable(
                queue,
                Some(reports_queued),
                Arc::as_ptr(reports) as *mut _,
            );
            QueueWatch(queue)
        }
    }

    /// Events waiting on the queue.
    fn queued(&self) -> usize {
        #[allow(unsafe_code)]
        // SAFETY: the queue reference is held until the watch is dropped.
        unsafe {
            rdkafka::bindings::rd_kafka_queue_length(self.0)
        }
    }
}

impl Drop for QueueWatch {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: switching the callback off takes the queue's lock, under
        // which librdkafka calls it, so no call is under way once it
        // returns; then the reference taken in `start` is released.
        unsafe {
            rdkafka::bindings::rd_kafka_queue_cb_event_enable(self.0, None, std::ptr::null_mut());
            rdkafka::bindings::rd_kafka_queue_destroy(self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, bytes: usize) -> OutputRecord {
        OutputRecord {
            topic: topic.into(),
            key: Some(b"k".to_vec()),
            value: Some(vec![0; bytes]),
            headers: vec![],
            timestamp: None,
            partition: None,
        }
    }

    #[test]
    fn a_run_holds_one_request_per_topic() {
        let size = RequestSize::of(&BTreeMap::new());
        assert_eq!((size.bytes, size.records), (1_000_000, 10_000), "librdkafka's defaults");
        // 600 kB for each of two topics: one run.
        let two_topics: Vec<_> = (0..12).map(|i| rec(if i % 2 == 0 { "a" } else { "b" }, 100_000)).collect();
        assert_eq!(size.end_of_first(&two_topics), 12);
        // 1.2 MB for one topic: cut where its request is full (900 kB with the margin).
        let one_topic: Vec<_> = (0..12).map(|_| rec("a", 100_000)).collect();
        assert_eq!(size.end_of_first(&one_topic), 8);
        // A record larger than a request still goes, alone.
        assert_eq!(size.end_of_first(&[rec("a", 2_000_000), rec("a", 1)]), 1);
        // batch.num.messages counts per topic too.
        let small = RequestSize::of(&BTreeMap::from([("batch.num.messages".to_string(), "3".to_string())]));
        let many: Vec<_> = (0..8).map(|i| rec(if i % 2 == 0 { "a" } else { "b" }, 10)).collect();
        assert_eq!(small.end_of_first(&many), 6, "three of each topic");
        // message.max.bytes caps batch.size.
        let capped = RequestSize::of(&BTreeMap::from([("message.max.bytes".to_string(), "1000".to_string())]));
        assert_eq!(capped.bytes, 1000);
    }
}
