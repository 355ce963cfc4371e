//! How a batch becomes durable.
//!
//! Each lane hands its batch to a write task that owns the lane's sink for the duration
//! and retries transient failures until the batch and its partitions' checkpoints commit
//! together. A lane has exactly one write in flight: its next batch is collected
//! meanwhile, but that batch's expected checkpoint values are only computed once this
//! write has settled, so each partition's compare-and-set chain stays in order. Lanes
//! write at the same time. Settling applies a lane's outcome: counters and the advisory
//! commit on success, checkpoint reload and seek when fenced (after every other lane
//! has settled), the record-by-record fallback when the sink rejected a row, and a stop
//! for anything fatal.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tracing::{debug, warn};

use super::stats::Committed;
use super::{Backoff, Lane, Pending, Runner, Stop, sleep_or_shutdown};
use crate::batch::{Compactor, Entry};
use crate::error::{ErrorClass, RecordError, SinkError};
use crate::event::RawRecord;
use crate::event::TopicPartition;
use crate::sink::{CheckpointAdvance, Sink};

/// Tries of one seek before the pipeline stops, with 1.5 s of backoff in all between them
/// (each try may itself wait for the source: Kafka's up to 2 s).
const SEEK_ATTEMPTS: u32 = 5;

/// A lane's batch being written.
pub(super) struct InFlight {
    task: JoinHandle<Outcome>,
    /// Kept once the task has ended, so that waiting on several lanes can be cancelled
    /// and resumed (the pipeline loop selects on it) without losing an outcome.
    outcome: Option<Outcome>,
    records: Vec<(RawRecord, bool)>,
    advances: Vec<CheckpointAdvance>,
}

/// How a write task ended.
pub(super) enum Outcome {
    /// Committed with its checkpoint advance.
    Written,
    /// Shutdown came while retrying; nothing was applied.
    Abandoned,
    /// A non-retriable error (or fencing); nothing was applied.
    Failed(SinkError),
}

/// Polls a write task, keeping its outcome once it has ended; true when it has.
fn poll_ended(f: &mut InFlight, cx: &mut std::task::Context<'_>) -> bool {
    if f.outcome.is_none()
        && let Poll::Ready(joined) = std::pin::Pin::new(&mut f.task).poll(cx)
    {
        f.outcome = Some(joined.unwrap_or_else(|e| {
            Outcome::Failed(SinkError::Incompatible(format!(
                "the write task failed: {e}"
            )))
        }));
    }
    f.outcome.is_some()
}

/// Resolves with a lane whose write has ended; pending forever when none is writing.
/// Cancel-safe: outcomes are kept in the lanes as they come.
pub(super) async fn any_finished(lanes: &mut [Lane]) -> usize {
    std::future::poll_fn(|cx| {
        let mut ended = None;
        for (i, lane) in lanes.iter_mut().enumerate() {
            if let Some(f) = &mut lane.in_flight
                && poll_ended(f, cx)
            {
                ended.get_or_insert(i);
            }
        }
        match ended {
            Some(i) => Poll::Ready(i),
            None => Poll::Pending,
        }
    })
    .await
}

/// Resolves when the lane's write (if any) has ended.
async fn finished(lane: &mut Lane) {
    std::future::poll_fn(|cx| {
        let ended = match &mut lane.in_flight {
            Some(f) => poll_ended(f, cx),
            None => true,
        };
        match ended {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    })
    .await
}

async fn write_task(
    pipeline: String,
    sink: Arc<Mutex<Box<dyn Sink>>>,
    entries: Vec<Entry>,
    advances: Vec<CheckpointAdvance>,
    records: usize,
    shutdown: watch::Receiver<bool>,
) -> Outcome {
    let mut sink = sink.lock_owned().await;
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        match sink.write(&entries, &advances).await {
            Ok(()) => {
                let labels = [("pipeline", pipeline.clone())];
                metrics::histogram!("sinkd_batch_events", &labels).record(records as f64);
                metrics::histogram!("sinkd_write_seconds", &labels)
                    .record(started.elapsed().as_secs_f64());
                debug!(
                    pipeline,
                    records,
                    keys = entries.len(),
                    write_ms = started.elapsed().as_millis() as u64,
                    "batch written"
                );
                return Outcome::Written;
            }
            Err(e)
                if e.class() == ErrorClass::Retriable && !matches!(e, SinkError::Fenced { .. }) =>
            {
                let wait = backoff.wait();
                warn!(pipeline, error = %e, retry_in = ?wait, "sink write failed; retrying the same batch");
                if sleep_or_shutdown(wait, &shutdown).await {
                    return Outcome::Abandoned;
                }
            }
            Err(e) => return Outcome::Failed(e),
        }
    }
}

impl Runner {
    /// Hands lane `i`'s collected batch to a write task, after its previous write has
    /// settled.
    pub(super) async fn flush(&mut self, i: usize) -> Result<(), Stop> {
        self.settle(i).await?;
        if self.lanes[i].pending.advances.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.lanes[i].pending);
        let advances: Vec<CheckpointAdvance> = batch
            .advances
            .iter()
            .map(|(tp, next)| CheckpointAdvance {
                topic: tp.0.clone(),
                partition: tp.1,
                expected: self.partitions.get(tp).and_then(|s| s.stored),
                next: *next,
            })
            .collect();
        let task = tokio::spawn(write_task(
            self.name.clone(),
            self.lanes[i].sink.clone(),
            batch.compactor.into_entries(),
            advances.clone(),
            batch.records.len(),
            self.shutdown.clone(),
        ));
        self.lanes[i].in_flight = Some(InFlight {
            task,
            outcome: None,
            records: batch.records,
            advances,
        });
        Ok(())
    }

    /// Hands over every lane's batch that has waited `max_wait`.
    pub(super) async fn flush_due(&mut self, max_wait: Duration) -> Result<(), Stop> {
        let now = Instant::now();
        for i in 0..self.lanes.len() {
            if self.lanes[i]
                .pending
                .started
                .is_some_and(|s| s + max_wait <= now)
            {
                self.flush(i).await?;
            }
        }
        Ok(())
    }

    /// Writes everything in hand, in every lane, and waits until it is durable.
    pub(super) async fn drain(&mut self) -> Result<(), Stop> {
        for i in 0..self.lanes.len() {
            self.flush(i).await?;
        }
        for i in 0..self.lanes.len() {
            self.settle(i).await?;
        }
        Ok(())
    }

    /// Waits for lane `i`'s write, if any, and applies its outcome.
    pub(super) async fn settle(&mut self, i: usize) -> Result<(), Stop> {
        if self.lanes[i].in_flight.is_none() {
            return Ok(());
        }
        finished(&mut self.lanes[i]).await;
        self.settle_finished(i).await
    }

    /// Applies the outcome of lane `i`'s write, which has ended.
    pub(super) async fn settle_finished(&mut self, i: usize) -> Result<(), Stop> {
        let Some(f) = self.lanes[i].in_flight.take() else {
            return Ok(());
        };
        match f.outcome.expect("settled after the write ended") {
            Outcome::Written => {
                self.committed(&f.advances, &f.records);
                Ok(())
            }
            Outcome::Abandoned => Err(Stop::Shutdown),
            Outcome::Failed(e @ SinkError::Fenced { .. }) => {
                warn!(pipeline = %self.name, error = %e, "fenced: reloading checkpoints and seeking");
                self.recover_from_fencing().await
            }
            Outcome::Failed(e @ SinkError::Rejected { .. }) => {
                warn!(pipeline = %self.name, error = %e, "sink rejected a row; writing this batch record by record");
                self.write_one_by_one(i, f.records).await
            }
            Outcome::Failed(e) => Err(self.fatal(e.to_string())),
        }
    }

    /// Lets every write in flight end, counting what committed; the rest of their
    /// records are read again after the seek that follows (their checkpoints did not
    /// move). Used before reloading the checkpoints, so no write lands after the reload.
    async fn quiesce(&mut self) -> Result<(), Stop> {
        let mut abandoned = false;
        for i in 0..self.lanes.len() {
            finished(&mut self.lanes[i]).await;
            let Some(f) = self.lanes[i].in_flight.take() else {
                continue;
            };
            match f.outcome.expect("ended") {
                Outcome::Written => self.committed(&f.advances, &f.records),
                Outcome::Abandoned => abandoned = true,
                Outcome::Failed(e) => {
                    debug!(pipeline = %self.name, error = %e, "a write ended with an error while recovering; read again");
                }
            }
        }
        match abandoned {
            true => Err(Stop::Shutdown),
            false => Ok(()),
        }
    }

    fn committed(&mut self, advances: &[CheckpointAdvance], records: &[(RawRecord, bool)]) {
        // The newest event time per partition, in one pass over the batch.
        let mut last_ts: HashMap<(&str, i32), i64> = HashMap::with_capacity(advances.len());
        for (r, _) in records {
            if let Some(ts) = r.timestamp_ms {
                last_ts.insert((&r.position.topic, r.position.partition), ts);
            }
        }
        let mut offsets = Vec::with_capacity(advances.len());
        let mut progress = Vec::with_capacity(advances.len());
        for a in advances {
            let tp = (a.topic.clone(), a.partition);
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.stored = Some(a.next);
            }
            progress.push(Committed {
                high: self.source.high_watermark(&tp),
                partition: tp.clone(),
                next: a.next,
                last_event_ms: last_ts.get(&(&*a.topic, a.partition)).copied(),
            });
            offsets.push((tp, a.next));
        }
        self.stats.committed(&progress, records.len() as u64);
        self.source.committed(&offsets);
    }

    /// Another writer moved our checkpoints: take the sink's word for every partition we
    /// hold, seek there, and drop the batch being collected (its records are read again).
    async fn recover_from_fencing(&mut self) -> Result<(), Stop> {
        self.quiesce().await?;
        for lane in &mut self.lanes {
            lane.pending = Pending::default();
        }
        let held: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        let mut backoff = Backoff::new();
        let stored = loop {
            match self.checkpoints.load(&held).await {
                Ok(s) => break s,
                Err(e) => {
                    let wait = backoff.wait();
                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "cannot reload checkpoints");
                    self.retry_after(wait).await?;
                }
            }
        };
        for tp in held {
            let Some(state) = self.partitions.get_mut(&tp) else {
                continue;
            };
            let now = stored.get(&tp).copied();
            if now.unwrap_or(0) < state.stored.unwrap_or(0) {
                // Records from the old position may already be queued ahead of the seek;
                // accepting them would skip the stretch in between. Only a fresh start
                // (assignment from the sink) resumes safely from a checkpoint moved back.
                let cause = format!(
                    "the checkpoint of {}/{} moved back from {:?} to {now:?} while the \
                     pipeline ran; restart sinkd to resume from the stored offset",
                    tp.0, tp.1, state.stored
                );
                return Err(self.fatal(cause));
            }
            state.stored = now;
            state.next = now.unwrap_or(0);
            let next = state.next;
            self.seek(&tp, next).await?;
        }
        Ok(())
    }

    /// Moves the source to `offset` of `tp`, retrying a passing failure a few times. A
    /// partition that stays unseekable (taken away meanwhile) stops the pipeline rather
    /// than let it read on from the wrong place.
    async fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<(), Stop> {
        let mut backoff = Backoff::new();
        let mut attempts = 1;
        loop {
            match self.source.seek(tp, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.class() == ErrorClass::Retriable && attempts < SEEK_ATTEMPTS => {
                    let wait = backoff.wait();
                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "seek failed");
                    self.retry_after(wait).await?;
                    attempts += 1;
                }
                Err(e) => return Err(self.source_stop(e)),
            }
        }
    }

    /// The slow path when the sink rejects a row a set-based statement cannot pin down:
    /// each record is written alone with its own checkpoint advance, and a rejected one
    /// follows the bad-record policy (then its offset advances with nothing applied).
    /// Written through lane `lane`'s sink, whose partitions the records are of.
    async fn write_one_by_one(
        &mut self,
        lane: usize,
        records: Vec<(RawRecord, bool)>,
    ) -> Result<(), Stop> {
        for (raw, has_op) in records {
            let tp: TopicPartition = (raw.position.topic.clone(), raw.position.partition);
            let advance = [CheckpointAdvance {
                topic: tp.0.clone(),
                partition: tp.1,
                expected: self.partitions.get(&tp).and_then(|s| s.stored),
                next: raw.position.offset + 1,
            }];
            let mut compactor = Compactor::new();
            if has_op {
                let ops = self.reproject(&raw).await?;
                // Alone, a record's increments sum without what came before them: they
                // can still overflow where they did not in the batch.
                if let Err(detail) = compactor.push_all(ops) {
                    let e = RecordError::Projection {
                        event_type: "increment".into(),
                        detail,
                    };
                    self.bad_record(&raw, &e, "bad_record").await?;
                }
            }
            let mut entries = compactor.into_entries();
            let mut backoff = Backoff::new();
            loop {
                let sink = &self.lanes[lane].sink;
                let written = sink.lock().await.write(&entries, &advance).await;
                match written {
                    Ok(()) => break,
                    Err(e @ SinkError::Rejected { .. }) if !entries.is_empty() => {
                        let e = RecordError::Rejected {
                            detail: e.to_string(),
                        };
                        self.bad_record(&raw, &e, "rejected").await?;
                        // Advance past it with nothing applied.
                        entries.clear();
                    }
                    Err(e @ SinkError::Fenced { .. }) => {
                        warn!(pipeline = %self.name, error = %e, "fenced");
                        return self.recover_from_fencing().await;
                    }
                    Err(e) if e.class() == ErrorClass::Retriable => {
                        let wait = backoff.wait();
                        warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "sink write failed; retrying");
                        self.retry_after(wait).await?;
                    }
                    Err(e) => {
                        return Err(self.fatal(e.to_string()));
                    }
                }
            }
            self.committed(&advance, std::slice::from_ref(&(raw, has_op)));
        }
        Ok(())
    }
}
