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
//! - Per-key order: records are folded in partition order; one operation per key per batch;
//!   batches are written one at a time, in order.
//! - Parallel writers: with `sink.parallelism: N` the records are split by partition
//!   into N lanes (partition p goes to lane p mod N), each with its own batch, its own
//!   sink connection and its own write in flight, committing its partitions'
//!   checkpoints. A key lives in one partition, so its operations stay in one lane; a
//!   lane hands over its next batch only after its previous write has settled, so each
//!   partition's compare-and-set chain stays in order. Lanes are independent because
//!   Kafka delivers partitions in runs (a fetch brings thousands of one partition's
//!   records): while one lane writes its run, the next lane collects.
//! - Bounded memory: per lane at most two batches are held (one being written, one
//!   being collected), plus the source's bounded queue.
//! - Hand-over: on revocation the batches in hand are written before the partition is
//!   released.
//!
//! The next batch is decoded and projected while the previous one is being written
//! ([`writer`]): the only overlap, and it keeps the checkpoint chain in order because a
//! batch's expected offsets are computed after the previous write has settled.
//!
//! - [`records`]: what happens to one record (decode, identity, projection, policies).
//! - [`writer`]: how a batch becomes durable (the write task, fencing, rejected rows).

mod records;
mod stats;
#[cfg(test)]
mod tests;
mod writer;

pub use stats::{PartitionProgress, PipelineStats};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::batch::Compactor;
use crate::config::{BadRecordPolicy, BatchConfig, UnknownEventPolicy};
use crate::dead_letter::DeadLetters;
use crate::decode::Decoder;
use crate::error::{ErrorClass, PipelineError};
use crate::event::RawRecord;
use crate::event::TopicPartition;
use crate::sink::{CheckpointReader, Sink};
use crate::source::{Source, SourceError, SourceItem};
use crate::transform::Transform;
use writer::InFlight;

/// The policies that decide what happens to records that cannot be applied.
#[derive(Clone, Debug)]
pub struct Policies {
    /// Bad records (undecodable, projection failure, rejected by the sink).
    pub on_error: BadRecordPolicy,
    /// Event types not declared in the pipeline.
    pub unknown_events: UnknownEventPolicy,
}

/// Everything a pipeline runs with.
pub struct Pipeline {
    /// Pipeline name, for messages.
    pub name: String,
    /// The record source.
    pub source: Box<dyn Source>,
    /// The record decoder.
    pub decoder: Arc<dyn Decoder>,
    /// Event → operation: identity, upcasters, projection.
    pub transform: Transform,
    /// The read model: one sink (its own connection) per writer; partition `p` is
    /// written by `sinks[p mod len]`. At least one.
    pub sinks: Vec<Box<dyn Sink>>,
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

/// The batch being collected by a lane.
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

/// One writer: its sink, the batch it collects and its write in flight.
struct Lane {
    /// Shared with the write task; only one write holds it at a time.
    sink: Arc<Mutex<Box<dyn Sink>>>,
    pending: Pending,
    in_flight: Option<InFlight>,
}

/// The running state of a pipeline.
struct Runner {
    name: String,
    source: Box<dyn Source>,
    decoder: Arc<dyn Decoder>,
    transform: Transform,
    /// One per writer (`sink.parallelism`); partition p is written by lane p mod len.
    lanes: Vec<Lane>,
    checkpoints: Arc<dyn CheckpointReader>,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    policies: Policies,
    batch: BatchConfig,
    stats: Arc<PipelineStats>,
    shutdown: watch::Receiver<bool>,
    partitions: HashMap<TopicPartition, PartitionState>,
}

impl Pipeline {
    /// Runs until `shutdown` turns true (returns `Ok`) or the pipeline must stop (returns
    /// why). On shutdown the batches in hand are written if the sink takes them promptly,
    /// else abandoned; either way nothing is lost, as their offsets were not stored.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
        assert!(!self.sinks.is_empty(), "a pipeline needs a sink");
        let checkpoints = self.sinks[0].checkpoint_reader();
        let mut runner = Runner {
            name: self.name,
            source: self.source,
            decoder: self.decoder,
            transform: self.transform,
            lanes: (self.sinks.into_iter())
                .map(|sink| Lane {
                    sink: Arc::new(Mutex::new(sink)),
                    pending: Pending::default(),
                    in_flight: None,
                })
                .collect(),
            checkpoints,
            dead_letters: self.dead_letters,
            policies: self.policies,
            batch: self.batch,
            stats: self.stats,
            shutdown,
            partitions: HashMap::new(),
        };
        let result = runner.run().await;
        runner.stats.released();
        match result {
            Ok(()) | Err(Stop::Shutdown) => {
                info!(pipeline = %runner.name, "stopped");
                Ok(())
            }
            Err(Stop::Failed(e)) => Err(e),
        }
    }
}

impl Runner {
    async fn run(&mut self) -> Result<(), Stop> {
        self.open_sinks().await?;
        let max_wait = Duration::from_millis(self.batch.max_wait_ms);
        info!(pipeline = %self.name, "pipeline running");
        let mut trouble = Backoff::new();
        loop {
            let deadline = (self.lanes.iter())
                .filter_map(|l| l.pending.started)
                .min()
                .map(|s| s + max_wait);
            let writing = self.lanes.iter().any(|l| l.in_flight.is_some());
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => return self.shut_down().await,
                lane = writer::any_finished(&mut self.lanes), if writing => {
                    self.settle_finished(lane).await?;
                }
                _ = sleep_until_opt(deadline) => self.flush_due(max_wait).await?,
                item = self.source.next() => {
                    let item = match item {
                        Ok(item) => item,
                        Err(e) => {
                            self.source_failed(e, &mut trouble).await?;
                            continue;
                        }
                    };
                    trouble = Backoff::new();
                    if let Err(stop) = self.handle(item).await {
                        if matches!(stop, Stop::Failed(PipelineError::BadRecord { .. })) {
                            // Write what came before the bad record, so the stored offset
                            // points exactly at it and nothing good is read twice.
                            self.drain_briefly().await;
                        }
                        return Err(stop);
                    }
                    if let Some(lane) = self.full_lane() {
                        self.flush(lane).await?;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, item: SourceItem) -> Result<(), Stop> {
        match item {
            SourceItem::Record(raw) => self.accept(raw).await,
            SourceItem::Assigned(assigned) => {
                for a in assigned {
                    info!(pipeline = %self.name, topic = %a.partition.0, partition = a.partition.1,
                          stored = ?a.stored, "partition assigned");
                    self.stats.assigned(a.partition.clone(), a.stored);
                    self.partitions.insert(
                        a.partition,
                        PartitionState {
                            stored: a.stored,
                            next: a.stored.unwrap_or(0),
                        },
                    );
                }
                Ok(())
            }
            SourceItem::Revoked { partitions, done } => {
                let drained = self.drain().await;
                for tp in &partitions {
                    info!(pipeline = %self.name, topic = %tp.0, partition = tp.1, "partition revoked");
                    self.partitions.remove(tp);
                    self.stats.revoked(tp);
                }
                let _ = done.send(());
                drained
            }
        }
    }

    /// Shutdown: write what is in hand if the sink takes it within 10 s.
    async fn shut_down(&mut self) -> Result<(), Stop> {
        info!(pipeline = %self.name, "shutting down: writing the batches in hand");
        if !self.drain_briefly().await {
            warn!(pipeline = %self.name, "batch abandoned at shutdown; it will be read again on restart");
        }
        Ok(())
    }

    /// Writes everything in hand, retrying for at most 10 s regardless of shutdown.
    /// Returns whether it all became durable.
    async fn drain_briefly(&mut self) -> bool {
        let (_keep, calm) = watch::channel(false);
        let signal = std::mem::replace(&mut self.shutdown, calm);
        let done = tokio::time::timeout(Duration::from_secs(10), self.drain()).await;
        self.shutdown = signal;
        matches!(done, Ok(Ok(())))
    }

    /// The lane of partition `tp`.
    fn lane_of(&self, tp: &TopicPartition) -> usize {
        tp.1.rem_euclid(self.lanes.len() as i32) as usize
    }

    /// A lane whose batch has reached `max_events`, if one has (only the lane the last
    /// record went to can have).
    fn full_lane(&self) -> Option<usize> {
        (self.lanes.iter()).position(|l| l.pending.records.len() >= self.batch.max_events)
    }

    /// Waits before a retry; [`Stop::Shutdown`] if shutdown is asked meanwhile.
    async fn retry_after(&self, wait: Duration) -> Result<(), Stop> {
        if sleep_or_shutdown(wait, &self.shutdown).await {
            return Err(Stop::Shutdown);
        }
        Ok(())
    }

    /// A source error: a retriable one is waited out (the source goes on from where it
    /// was, so nothing is skipped), a fatal one stops the pipeline in the source's words.
    async fn source_failed(&self, e: SourceError, backoff: &mut Backoff) -> Result<(), Stop> {
        if e.class() != ErrorClass::Retriable {
            return Err(self.source_stop(e));
        }
        let wait = backoff.wait();
        warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "source not ready");
        self.retry_after(wait).await
    }

    fn source_stop(&self, e: SourceError) -> Stop {
        Stop::Failed(PipelineError::Source {
            pipeline: self.name.clone(),
            cause: e.to_string(),
        })
    }

    /// Stops the pipeline: a cause that retrying cannot cure.
    fn fatal(&self, cause: impl Into<String>) -> Stop {
        Stop::Failed(PipelineError::Fatal {
            pipeline: self.name.clone(),
            cause: cause.into(),
        })
    }

    /// Opens every writer's sink, one after the other: opening prepares the checkpoint
    /// storage, which concurrent openers would race to create.
    async fn open_sinks(&mut self) -> Result<(), Stop> {
        for i in 0..self.lanes.len() {
            self.open_sink(i).await?;
        }
        self.stats.connected.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn open_sink(&mut self, writer: usize) -> Result<(), Stop> {
        let mut backoff = Backoff::new();
        loop {
            let opened = self.lanes[writer].sink.lock().await.open().await;
            match opened {
                Ok(()) => return Ok(()),
                Err(e) if e.class() == ErrorClass::Retriable => {
                    let wait = backoff.wait();
                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "sink not ready");
                    self.retry_after(wait).await?;
                }
                Err(e) => {
                    return Err(self.fatal(e.to_string()));
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sleeps, or returns `true` early when shutdown is requested.
async fn sleep_or_shutdown(d: Duration, shutdown: &watch::Receiver<bool>) -> bool {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow_and_update() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}
