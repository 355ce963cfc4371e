//! How a batch becomes durable.
//!
//! A batch is handed to one write task per writer holding some of its partitions; each
//! task owns its writer's sink for the duration and retries transient failures until its
//! part of the batch and its partitions' checkpoints commit together. Exactly one batch is
//! in flight: the next is collected meanwhile, but its expected checkpoint values are only
//! computed once every write of this one has settled, so the compare-and-set chain of each
//! partition stays in order. Settling applies each writer's outcome: counters and the
//! advisory commit on success, checkpoint reload and seek when fenced, the record-by-record
//! fallback when the sink rejected a row, and a stop for anything fatal.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::stats::Committed;
use super::{Backoff, Pending, Runner, Stop, lane, sleep_or_shutdown};
use crate::batch::{Compactor, Entry};
use crate::error::{ErrorClass, RecordError, SinkError};
use crate::event::RawRecord;
use crate::event::TopicPartition;
use crate::sink::{CheckpointAdvance, Sink};

/// Tries of one seek before the pipeline stops, with 1.5 s of backoff in all between them
/// (each try may itself wait for the source: Kafka's up to 2 s).
const SEEK_ATTEMPTS: u32 = 5;

/// A batch being written: one write per writer that holds some of its partitions.
pub(super) struct InFlight {
    writes: Vec<Write>,
}

/// One writer's part of a batch.
struct Write {
    task: JoinHandle<Outcome>,
    /// Kept once the task has ended, so waiting for the others can be cancelled and
    /// resumed (the pipeline loop selects on it) without losing it.
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

/// Resolves when every write of the in-flight batch has finished; pending forever when
/// there is none. Cancel-safe: outcomes are kept in the batch as they come.
pub(super) async fn finished(in_flight: &mut Option<InFlight>) {
    let Some(f) = in_flight else {
        return std::future::pending().await;
    };
    for w in &mut f.writes {
        if w.outcome.is_none() {
            w.outcome = Some(match (&mut w.task).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Failed(SinkError::Incompatible(format!(
                    "the write task failed: {e}"
                ))),
            });
        }
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
    /// Hands the collected batch to one write task per writer it concerns, after the
    /// previous batch has settled.
    pub(super) async fn flush(&mut self) -> Result<(), Stop> {
        self.settle().await?;
        if self.pending.advances.is_empty() {
            return Ok(());
        }
        let writers = self.sinks.len();
        let batch = std::mem::replace(&mut self.pending, Pending::new(writers));
        let mut advances: Vec<Vec<CheckpointAdvance>> = vec![Vec::new(); writers];
        for (tp, next) in &batch.advances {
            advances[self.lane_of(tp)].push(CheckpointAdvance {
                topic: tp.0.clone(),
                partition: tp.1,
                expected: self.partitions.get(tp).and_then(|s| s.stored),
                next: *next,
            });
        }
        let mut records: Vec<Vec<(RawRecord, bool)>> = match writers {
            1 => vec![batch.records],
            _ => {
                let mut split = vec![Vec::new(); writers];
                for r in batch.records {
                    split[lane(r.0.position.partition, writers)].push(r);
                }
                split
            }
        };
        let mut writes = Vec::with_capacity(writers);
        for (i, (advances, entries)) in advances.into_iter().zip(batch.lanes).enumerate() {
            if advances.is_empty() {
                // No record of this writer's partitions: nothing to fold either.
                continue;
            }
            let records = std::mem::take(&mut records[i]);
            let task = tokio::spawn(write_task(
                self.name.clone(),
                self.sinks[i].clone(),
                entries.into_entries(),
                advances.clone(),
                records.len(),
                self.shutdown.clone(),
            ));
            writes.push(Write {
                task,
                outcome: None,
                records,
                advances,
            });
        }
        self.in_flight = Some(InFlight { writes });
        Ok(())
    }

    /// Writes everything in hand and waits until it is durable.
    pub(super) async fn drain(&mut self) -> Result<(), Stop> {
        self.flush().await?;
        self.settle().await
    }

    /// Waits for the in-flight batch, if any, and applies its outcome.
    pub(super) async fn settle(&mut self) -> Result<(), Stop> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        finished(&mut self.in_flight).await;
        self.settle_finished().await
    }

    /// Applies the outcomes of the in-flight batch, whose writes have all finished. What
    /// committed is counted first, whatever happened to the other writers; then a fatal
    /// error stops, shutdown stops, fencing reloads every checkpoint (a rejected writer's
    /// records are read again after the seek), and a rejected writer's records are
    /// written one by one.
    pub(super) async fn settle_finished(&mut self) -> Result<(), Stop> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let (mut failed, mut abandoned, mut fenced) = (None, false, None);
        let mut rejected = Vec::new();
        for w in f.writes {
            match w.outcome.expect("settled after every write finished") {
                Outcome::Written => self.committed(&w.advances, &w.records),
                Outcome::Abandoned => abandoned = true,
                Outcome::Failed(e @ SinkError::Fenced { .. }) => fenced = Some(e),
                Outcome::Failed(e @ SinkError::Rejected { .. }) => rejected.push((e, w.records)),
                Outcome::Failed(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(self.fatal(e.to_string()));
        }
        if abandoned {
            return Err(Stop::Shutdown);
        }
        if let Some(e) = fenced {
            warn!(pipeline = %self.name, error = %e, "fenced: reloading checkpoints and seeking");
            return self.recover_from_fencing().await;
        }
        for (e, records) in rejected {
            warn!(pipeline = %self.name, error = %e, "sink rejected a row; writing this batch record by record");
            if !self.write_one_by_one(records).await? {
                break;
            }
        }
        Ok(())
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
        self.pending = Pending::new(self.sinks.len());
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
    /// Returns `false` when fencing cut it short: every checkpoint was reloaded and the
    /// source moved there, so nothing older may be written after it.
    async fn write_one_by_one(&mut self, records: Vec<(RawRecord, bool)>) -> Result<bool, Stop> {
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
                let sink = &self.sinks[self.lane_of(&tp)];
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
                        self.recover_from_fencing().await?;
                        return Ok(false);
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
        Ok(true)
    }
}
