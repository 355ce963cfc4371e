//! How a batch becomes durable.
//!
//! A batch is handed to a write task that owns the sink for the duration and retries
//! transient failures until the batch and its checkpoint commit together. Exactly one write
//! is in flight: the next batch is collected meanwhile, but its expected checkpoint values
//! are only computed once this write has settled, so the compare-and-set chain stays in
//! order. Settling applies the outcome: counters and the advisory commit on success,
//! checkpoint reload and seek when fenced, the record-by-record fallback when the sink
//! rejected a row, and a stop for anything fatal.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::stats::Committed;
use super::{Backoff, Pending, Runner, Stop, sleep_or_shutdown};
use crate::batch::{Compactor, Entry};
use crate::error::{ErrorClass, RecordError, SinkError};
use crate::event::RawRecord;
use crate::event::TopicPartition;
use crate::sink::{CheckpointAdvance, Sink};

/// Tries of one seek before the pipeline stops, with 1.5 s of backoff in all between them
/// (each try may itself wait for the source: Kafka's up to 2 s).
const SEEK_ATTEMPTS: u32 = 5;

/// A batch being written.
pub(super) struct InFlight {
    task: JoinHandle<Outcome>,
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

/// Resolves when the in-flight write has finished; pending forever when there is none.
pub(super) async fn finished(in_flight: &mut Option<InFlight>) -> Outcome {
    match in_flight {
        Some(f) => match (&mut f.task).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(SinkError::Incompatible(format!(
                "the write task failed: {e}"
            ))),
        },
        None => std::future::pending().await,
    }
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
    /// Hands the collected batch to a write task, after the previous write has settled.
    pub(super) async fn flush(&mut self) -> Result<(), Stop> {
        self.settle().await?;
        if self.pending.advances.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
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
            self.sink.clone(),
            batch.compactor.into_entries(),
            advances.clone(),
            batch.records.len(),
            self.shutdown.clone(),
        ));
        self.in_flight = Some(InFlight {
            task,
            records: batch.records,
            advances,
        });
        Ok(())
    }

    /// Writes everything in hand and waits until it is durable.
    pub(super) async fn drain(&mut self) -> Result<(), Stop> {
        self.flush().await?;
        self.settle().await
    }

    /// Waits for the in-flight write, if any, and applies its outcome.
    pub(super) async fn settle(&mut self) -> Result<(), Stop> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let outcome = finished(&mut self.in_flight).await;
        self.settle_finished(outcome).await
    }

    /// Applies the outcome of the in-flight write, which has finished.
    pub(super) async fn settle_finished(&mut self, outcome: Outcome) -> Result<(), Stop> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        match outcome {
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
                self.write_one_by_one(f.records).await
            }
            Outcome::Failed(e) => Err(self.fatal(e.to_string())),
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
        self.pending = Pending::default();
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
    async fn write_one_by_one(&mut self, records: Vec<(RawRecord, bool)>) -> Result<(), Stop> {
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
                let written = self.sink.lock().await.write(&entries, &advance).await;
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
