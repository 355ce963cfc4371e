//! The pipeline loop: source → decode → project → compact → sink (with checkpoint) →
//! advisory commit.
//!
//! Guarantees, and how they are kept:
//! - Exactly-once effect: the sink stores each partition's next offset in the same
//!   transaction as the batch (compare-and-set on the previous value); on assignment the
//!   source starts from the stored offset; records below a partition's next offset are
//!   dropped as redeliveries.
//! - Never skip: a retriable failure (registry, broker, sink) retries the same batch with
//!   backoff. A bad record is applied, dead-lettered (durably, before its offset advances)
//!   or stops the pipeline, per policy.
//! - Per-key order: records are folded in partition order; one operation per key per batch.
//! - Bounded memory: at most `batch.max_events` records are held, plus the source's
//!   bounded queue.
//! - Hand-over: on revocation the batch is written before the partition is released.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apache_avro::types::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::batch::Compactor;
use crate::config::{BadRecordPolicy, BatchConfig, Locator, UnknownEventPolicy};
use crate::decode::{DeadLetterCause, DeadLetters, Decoder};
use crate::error::{ErrorClass, PipelineError, RecordError, SinkError};
use crate::event::{Event, RawRecord};
use crate::projection::{Op, Projector};
use crate::sink::{CheckpointAdvance, Sink, TopicPartition};
use crate::source::{Source, SourceItem};
use crate::value::unwrap_union;

/// Counters of one pipeline, readable while it runs.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Records taken from the source (redeliveries below the checkpoint excluded).
    pub consumed: AtomicU64,
    /// Records whose effect is durably in the sink.
    pub applied: AtomicU64,
    /// Records of undeclared event types skipped by policy.
    pub skipped: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Sink transactions committed.
    pub batches: AtomicU64,
}

/// The policies that decide what happens to records that cannot be applied.
#[derive(Clone, Debug)]
pub struct Policies {
    /// Bad records (undecodable, projection failure, rejected by the sink).
    pub on_error: BadRecordPolicy,
    /// Event types not declared in the pipeline.
    pub unknown_events: UnknownEventPolicy,
    /// Where the event type is read from.
    pub event_type: Locator,
    /// Where the event version is read from.
    pub event_version: Locator,
}

/// Everything a pipeline runs with.
pub struct Pipeline {
    /// Pipeline name, for messages.
    pub name: String,
    /// The record source.
    pub source: Box<dyn Source>,
    /// The record decoder.
    pub decoder: Arc<dyn Decoder>,
    /// Event → operation.
    pub projector: Projector,
    /// The read model.
    pub sink: Box<dyn Sink>,
    /// Where bad records go under a `dead_letter` policy.
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    /// Bad-record policies.
    pub policies: Policies,
    /// Batch bounds.
    pub batch: BatchConfig,
    /// Counters.
    pub stats: Arc<PipelineStats>,
}

/// Why the loop ended early.
enum Stop {
    Shutdown,
    Failed(PipelineError),
}

impl From<PipelineError> for Stop {
    fn from(e: PipelineError) -> Self {
        Stop::Failed(e)
    }
}

struct PartitionState {
    /// The next offset stored in the sink, as this writer last saw it.
    stored: Option<i64>,
    /// The next offset to accept from the source; lower ones are redeliveries.
    next: i64,
}

/// The batch being collected.
#[derive(Default)]
struct Pending {
    compactor: Compactor,
    /// Every record of the batch, and whether it produced an operation (kept for the
    /// one-by-one fallback when the sink rejects a row).
    records: Vec<(RawRecord, bool)>,
    /// Next offset per partition after this batch.
    advances: HashMap<TopicPartition, i64>,
    started: Option<Instant>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        d
    }
}

impl Pipeline {
    /// Runs until `shutdown` turns true (returns `Ok`) or the pipeline must stop (returns
    /// why). On shutdown the batch in hand is written if the sink takes it promptly, else
    /// abandoned; either way nothing is lost, as its offsets were not stored.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
        self.open_sink(&mut shutdown).await?;
        let mut partitions: HashMap<TopicPartition, PartitionState> = HashMap::new();
        let mut pending = Pending::default();
        let max_wait = Duration::from_millis(self.batch.max_wait_ms);
        info!(pipeline = %self.name, "pipeline running");
        loop {
            let deadline = pending.started.map(|s| s + max_wait);
            let item = tokio::select! {
                biased;
                _ = shutdown.changed() => None,
                _ = sleep_until_opt(deadline) => {
                    if let Err(stop) = self.flush(&mut pending, &mut partitions, &mut shutdown).await {
                        return self.finish(stop);
                    }
                    continue;
                }
                item = self.source.next() => Some(item),
            };
            let item = match item {
                None => {
                    info!(pipeline = %self.name, "shutting down: writing the batch in hand");
                    let (_tx, mut quick) = watch::channel(false);
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(10),
                        self.flush(&mut pending, &mut partitions, &mut quick),
                    );
                    if !matches!(attempt.await, Ok(Ok(()))) {
                        warn!(pipeline = %self.name, "batch abandoned at shutdown; it will be read again on restart");
                    }
                    return Ok(());
                }
                Some(Err(e)) => {
                    return Err(PipelineError::Source {
                        pipeline: self.name.clone(),
                        cause: e.0,
                    });
                }
                Some(Ok(item)) => item,
            };
            let step = match item {
                SourceItem::Record(raw) => {
                    self.accept(raw, &mut pending, &mut partitions, &mut shutdown)
                        .await
                }
                SourceItem::Assigned(assigned) => {
                    for a in assigned {
                        info!(pipeline = %self.name, topic = %a.partition.0, partition = a.partition.1,
                              stored = ?a.stored, "partition assigned");
                        partitions.insert(
                            a.partition,
                            PartitionState {
                                stored: a.stored,
                                next: a.stored.unwrap_or(0),
                            },
                        );
                    }
                    Ok(())
                }
                SourceItem::Revoked {
                    partitions: revoked,
                    done,
                } => {
                    let flushed = self
                        .flush(&mut pending, &mut partitions, &mut shutdown)
                        .await;
                    for tp in &revoked {
                        info!(pipeline = %self.name, topic = %tp.0, partition = tp.1, "partition revoked");
                        partitions.remove(tp);
                    }
                    let _ = done.send(());
                    flushed
                }
            };
            if let Err(stop) = step {
                if matches!(stop, Stop::Failed(PipelineError::BadRecord { .. })) {
                    // Write what came before the bad record, so the stored offset points
                    // exactly at it and nothing good is read twice on restart.
                    let (_tx, mut quick) = watch::channel(false);
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        self.flush(&mut pending, &mut partitions, &mut quick),
                    )
                    .await;
                }
                return self.finish(stop);
            }
            if pending.records.len() >= self.batch.max_events
                && let Err(stop) = self
                    .flush(&mut pending, &mut partitions, &mut shutdown)
                    .await
            {
                return self.finish(stop);
            }
        }
    }

    fn finish(&self, stop: Stop) -> Result<(), PipelineError> {
        match stop {
            Stop::Shutdown => {
                info!(pipeline = %self.name, "stopped; unwritten records will be read again on restart");
                Ok(())
            }
            Stop::Failed(e) => Err(e),
        }
    }

    async fn open_sink(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let mut backoff = Backoff::new();
        loop {
            match self.sink.open().await {
                Ok(()) => return Ok(()),
                Err(e) if e.class() == ErrorClass::Retriable => {
                    let wait = backoff.next();
                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "sink not ready");
                    if sleep_or_shutdown(wait, shutdown).await {
                        return Ok(());
                    }
                }
                Err(e) => {
                    return Err(PipelineError::Fatal {
                        pipeline: self.name.clone(),
                        cause: e.to_string(),
                    });
                }
            }
        }
    }

    /// Takes one record into the batch, or drops it as a redelivery.
    async fn accept(
        &mut self,
        raw: RawRecord,
        pending: &mut Pending,
        partitions: &mut HashMap<TopicPartition, PartitionState>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let tp: TopicPartition = (raw.position.topic.clone(), raw.position.partition);
        let Some(state) = partitions.get_mut(&tp) else {
            debug!(pipeline = %self.name, position = %raw.position, "record of a partition not assigned here; dropped");
            return Ok(());
        };
        if raw.position.offset < state.next {
            debug!(pipeline = %self.name, position = %raw.position, "redelivered record below the checkpoint; dropped");
            return Ok(());
        }
        state.next = raw.position.offset + 1;
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        let op = self.to_op(&raw, shutdown).await?;
        let has_op = match op {
            Some(op) => match pending.compactor.push(op) {
                Ok(()) => true,
                Err(detail) => {
                    let e = RecordError::Projection {
                        event_type: "increment".into(),
                        detail,
                    };
                    self.bad_record(&raw, &e, "bad_record", shutdown).await?;
                    false
                }
            },
            None => false,
        };
        pending.advances.insert(tp, raw.position.offset + 1);
        pending.started.get_or_insert_with(Instant::now);
        pending.records.push((raw, has_op));
        Ok(())
    }

    /// Decodes and projects one record, applying the policies. `None`: nothing to apply
    /// (skipped or dead-lettered), but the offset advances.
    async fn to_op(
        &self,
        raw: &RawRecord,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Op>, Stop> {
        let mut backoff = Backoff::new();
        let event = loop {
            match self.decoder.decode(raw).await {
                Ok(event) => break event,
                Err(e) => match e.class() {
                    ErrorClass::Retriable => {
                        let wait = backoff.next();
                        warn!(pipeline = %self.name, position = %raw.position, error = %e, retry_in = ?wait,
                              "cannot decode yet; retrying the same record");
                        if sleep_or_shutdown(wait, shutdown).await {
                            return Err(Stop::Shutdown);
                        }
                    }
                    ErrorClass::Fatal => {
                        return Err(Stop::Failed(PipelineError::Fatal {
                            pipeline: self.name.clone(),
                            cause: format!("at {}: {e}", raw.position),
                        }));
                    }
                    ErrorClass::BadRecord => {
                        self.bad_record(raw, &e, "bad_record", shutdown).await?;
                        return Ok(None);
                    }
                },
            }
        };
        let event = match self.locate_identity(raw, event) {
            Ok(event) => event,
            Err(e) => {
                self.bad_record(raw, &e, "bad_record", shutdown).await?;
                return Ok(None);
            }
        };
        match self.projector.project(&event) {
            Ok(op) => Ok(Some(op)),
            Err(e @ RecordError::UnknownEventType { .. }) => match self.policies.unknown_events {
                UnknownEventPolicy::Skip => {
                    debug!(pipeline = %self.name, position = %raw.position, event_type = %event.event_type,
                           "undeclared event type skipped");
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    Ok(None)
                }
                UnknownEventPolicy::Fail => Err(self.stop_at(raw, &e)),
                UnknownEventPolicy::DeadLetter => {
                    self.dead_letter(raw, &e, "unknown_event_type", shutdown)
                        .await?;
                    Ok(None)
                }
            },
            Err(e) => {
                self.bad_record(raw, &e, "bad_record", shutdown).await?;
                Ok(None)
            }
        }
    }

    /// Applies the `event_type` / `event_version` overrides.
    fn locate_identity(&self, raw: &RawRecord, mut event: Event) -> Result<Event, RecordError> {
        if event.body.is_none() {
            return Ok(event);
        }
        let original_type = event.event_type.clone();
        let fail = |what: &str, detail: String| RecordError::Projection {
            event_type: original_type.to_string(),
            detail: format!("{what}: {detail}"),
        };
        match &self.policies.event_type {
            Locator::Schema => {}
            Locator::Field(f) => match event.field(f) {
                Some(Value::String(s)) | Some(Value::Enum(_, s)) => {
                    event.event_type = Arc::from(s.as_str())
                }
                other => {
                    return Err(fail(
                        "event type",
                        format!("field `{f}` is not a string: {other:?}"),
                    ));
                }
            },
            Locator::Header(h) => match raw.header(h).map(std::str::from_utf8) {
                Some(Ok(s)) => event.event_type = Arc::from(s),
                _ => {
                    return Err(fail(
                        "event type",
                        format!("header `{h}` is missing or not UTF-8"),
                    ));
                }
            },
        }
        match &self.policies.event_version {
            Locator::Schema => {}
            Locator::Field(f) => {
                event.version = match event.field(f).map(unwrap_union) {
                    Some(Value::Int(v)) if *v >= 0 => *v as u32,
                    Some(Value::Long(v)) if *v >= 0 => *v as u32,
                    Some(Value::String(s)) => s.parse().map_err(|_| {
                        fail(
                            "event version",
                            format!("field `{f}` = `{s}` is not a number"),
                        )
                    })?,
                    other => {
                        return Err(fail(
                            "event version",
                            format!("field `{f}` is not a version: {other:?}"),
                        ));
                    }
                }
            }
            Locator::Header(h) => {
                event.version = raw
                    .header(h)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| {
                        fail(
                            "event version",
                            format!("header `{h}` is missing or not a number"),
                        )
                    })?;
            }
        }
        Ok(event)
    }

    fn stop_at(&self, raw: &RawRecord, e: &dyn std::fmt::Display) -> Stop {
        Stop::Failed(PipelineError::BadRecord {
            pipeline: self.name.clone(),
            position: raw.position.to_string(),
            cause: e.to_string(),
        })
    }

    async fn bad_record(
        &self,
        raw: &RawRecord,
        e: &RecordError,
        class: &'static str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        match self.policies.on_error {
            BadRecordPolicy::Fail => Err(self.stop_at(raw, e)),
            BadRecordPolicy::DeadLetter => self.dead_letter(raw, e, class, shutdown).await,
        }
    }

    async fn dead_letter(
        &self,
        raw: &RawRecord,
        e: &RecordError,
        class: &'static str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let Some(dlq) = &self.dead_letters else {
            return Err(self.stop_at(raw, e));
        };
        let cause = DeadLetterCause {
            class,
            code: e.code(),
            message: e.to_string(),
        };
        let mut backoff = Backoff::new();
        loop {
            match dlq.send(raw, &cause).await {
                Ok(()) => {
                    warn!(pipeline = %self.name, position = %raw.position, error = %e, "record dead-lettered");
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(err) => {
                    let wait = backoff.next();
                    warn!(pipeline = %self.name, position = %raw.position, error = %err, retry_in = ?wait,
                          "dead-letter topic unavailable; retrying");
                    if sleep_or_shutdown(wait, shutdown).await {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        }
    }

    /// Writes the batch with its checkpoint advance; retries until it is durable.
    async fn flush(
        &mut self,
        pending: &mut Pending,
        partitions: &mut HashMap<TopicPartition, PartitionState>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        if pending.advances.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(pending);
        let advances: Vec<CheckpointAdvance> = batch
            .advances
            .iter()
            .map(|(tp, next)| CheckpointAdvance {
                topic: tp.0.clone(),
                partition: tp.1,
                expected: partitions.get(tp).and_then(|s| s.stored),
                next: *next,
            })
            .collect();
        let entries = batch.compactor.into_entries();
        let mut backoff = Backoff::new();
        loop {
            match self.sink.write(&entries, &advances).await {
                Ok(()) => break,
                Err(e @ SinkError::Fenced { .. }) => {
                    warn!(pipeline = %self.name, error = %e, "fenced: reloading checkpoints and seeking");
                    return self.recover_from_fencing(partitions, shutdown).await;
                }
                Err(e @ SinkError::Rejected { .. }) => {
                    warn!(pipeline = %self.name, error = %e, "sink rejected a row; writing this batch record by record");
                    return self
                        .write_one_by_one(batch.records, partitions, shutdown)
                        .await;
                }
                Err(e) if e.class() == ErrorClass::Retriable => {
                    let wait = backoff.next();
                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "sink write failed; retrying the same batch");
                    if sleep_or_shutdown(wait, shutdown).await {
                        return Err(Stop::Shutdown);
                    }
                }
                Err(e) => {
                    return Err(Stop::Failed(PipelineError::Fatal {
                        pipeline: self.name.clone(),
                        cause: e.to_string(),
                    }));
                }
            }
        }
        self.committed(&advances, partitions, batch.records.len() as u64);
        Ok(())
    }

    fn committed(
        &self,
        advances: &[CheckpointAdvance],
        partitions: &mut HashMap<TopicPartition, PartitionState>,
        records: u64,
    ) {
        let mut offsets = Vec::with_capacity(advances.len());
        for a in advances {
            let tp = (a.topic.clone(), a.partition);
            if let Some(state) = partitions.get_mut(&tp) {
                state.stored = Some(a.next);
            }
            offsets.push((tp, a.next));
        }
        self.stats.applied.fetch_add(records, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.source.committed(&offsets);
    }

    /// Another writer moved our checkpoints: take the sink's word for every partition we
    /// hold, seek there, and drop the batch (its records will be read again if needed).
    async fn recover_from_fencing(
        &mut self,
        partitions: &mut HashMap<TopicPartition, PartitionState>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let held: Vec<TopicPartition> = partitions.keys().cloned().collect();
        let reader = self.sink.checkpoint_reader();
        let mut backoff = Backoff::new();
        let stored = loop {
            match reader.load(&held).await {
                Ok(s) => break s,
                Err(e) => {
                    let wait = backoff.next();
                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "cannot reload checkpoints");
                    if sleep_or_shutdown(wait, shutdown).await {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        };
        for tp in held {
            let Some(state) = partitions.get_mut(&tp) else {
                continue;
            };
            state.stored = stored.get(&tp).copied();
            state.next = state.stored.unwrap_or(0);
            if let Err(e) = self.source.seek(&tp, state.next) {
                return Err(Stop::Failed(PipelineError::Source {
                    pipeline: self.name.clone(),
                    cause: e.0,
                }));
            }
        }
        Ok(())
    }

    /// The slow path when the sink rejects a row it cannot take: each record is written
    /// alone with its own checkpoint advance, and a rejected one follows the bad-record
    /// policy. Records are re-decoded (deterministic, and cached) rather than kept twice.
    async fn write_one_by_one(
        &mut self,
        records: Vec<(RawRecord, bool)>,
        partitions: &mut HashMap<TopicPartition, PartitionState>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        for (raw, has_op) in records {
            let tp: TopicPartition = (raw.position.topic.clone(), raw.position.partition);
            let advance = [CheckpointAdvance {
                topic: tp.0.clone(),
                partition: tp.1,
                expected: partitions.get(&tp).and_then(|s| s.stored),
                next: raw.position.offset + 1,
            }];
            let mut compactor = Compactor::new();
            if has_op && let Some(op) = self.reproject(&raw).await {
                let _ = compactor.push(op);
            }
            let entries = compactor.into_entries();
            let mut backoff = Backoff::new();
            loop {
                match self.sink.write(&entries, &advance).await {
                    Ok(()) => break,
                    Err(e @ SinkError::Rejected { .. }) => {
                        let e = RecordError::Projection {
                            event_type: "sink".into(),
                            detail: e.to_string(),
                        };
                        self.bad_record(&raw, &e, "rejected", shutdown).await?;
                        // Advance past it with nothing applied.
                        loop {
                            match self.sink.write(&[], &advance).await {
                                Ok(()) => break,
                                Err(e @ SinkError::Fenced { .. }) => {
                                    warn!(pipeline = %self.name, error = %e, "fenced");
                                    return self.recover_from_fencing(partitions, shutdown).await;
                                }
                                Err(e) => {
                                    let wait = backoff.next();
                                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "sink write failed; retrying");
                                    if sleep_or_shutdown(wait, shutdown).await {
                                        return Err(Stop::Shutdown);
                                    }
                                }
                            }
                        }
                        break;
                    }
                    Err(e @ SinkError::Fenced { .. }) => {
                        warn!(pipeline = %self.name, error = %e, "fenced");
                        return self.recover_from_fencing(partitions, shutdown).await;
                    }
                    Err(e) if e.class() == ErrorClass::Retriable => {
                        let wait = backoff.next();
                        warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "sink write failed; retrying");
                        if sleep_or_shutdown(wait, shutdown).await {
                            return Err(Stop::Shutdown);
                        }
                    }
                    Err(e) => {
                        return Err(Stop::Failed(PipelineError::Fatal {
                            pipeline: self.name.clone(),
                            cause: e.to_string(),
                        }));
                    }
                }
            }
            self.committed(&advance, partitions, 1);
        }
        Ok(())
    }

    async fn reproject(&self, raw: &RawRecord) -> Option<Op> {
        let decoded = self.decoder.decode(raw).await.ok()?;
        let event = self.locate_identity(raw, decoded).ok()?;
        self.projector.project(&event).ok()
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sleeps, or returns `true` early when shutdown is requested.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}
