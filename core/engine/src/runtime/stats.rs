//! What a running pipeline tells the control plane: counters, how far each partition has
//! been applied, and a signal on every commit (for read-your-writes waits).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

use crate::event::TopicPartition;

/// How far one partition has been applied by this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The next offset stored in the sink (`None`: no checkpoint yet).
    pub next: Option<i64>,
    /// Kafka timestamp of the last record applied, in ms since the epoch.
    pub last_event_ms: Option<i64>,
    /// The high watermark the source saw at the last commit.
    pub high: Option<i64>,
}

/// One partition's move in a committed batch.
pub(crate) struct Committed {
    pub(crate) partition: TopicPartition,
    pub(crate) next: i64,
    pub(crate) last_event_ms: Option<i64>,
    pub(crate) high: Option<i64>,
}

/// Counters and progress of one pipeline, readable while it runs. One value lives as long
/// as the pipeline's controller, across restarts of its task.
#[derive(Debug)]
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
    /// Whether the sink is open (connected, checkpoint storage ready) for the running task.
    pub connected: AtomicBool,
    partitions: Mutex<HashMap<TopicPartition, PartitionProgress>>,
    commits: watch::Sender<u64>,
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats {
            consumed: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            partitions: Mutex::new(HashMap::new()),
            commits: watch::channel(0).0,
        }
    }
}

impl PipelineStats {
    /// The partitions this process holds and how far each is applied.
    pub fn partitions(&self) -> HashMap<TopicPartition, PartitionProgress> {
        self.partitions.lock().expect("stats lock").clone()
    }

    /// How far one partition is applied, if this process holds it.
    pub fn partition(&self, tp: &TopicPartition) -> Option<PartitionProgress> {
        self.partitions.lock().expect("stats lock").get(tp).copied()
    }

    /// Changes on every commit and partition hand-over: wait on it, then look again.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    pub(crate) fn assigned(&self, tp: TopicPartition, stored: Option<i64>) {
        self.partitions.lock().expect("stats lock").insert(
            tp,
            PartitionProgress {
                next: stored,
                last_event_ms: None,
                high: None,
            },
        );
        self.commits.send_modify(|n| *n += 1);
    }

    pub(crate) fn revoked(&self, tp: &TopicPartition) {
        self.partitions.lock().expect("stats lock").remove(tp);
        self.commits.send_modify(|n| *n += 1);
    }

    /// Forgets every partition: the task stopped and holds nothing any more.
    pub fn released(&self) {
        self.partitions.lock().expect("stats lock").clear();
        self.connected.store(false, Ordering::Relaxed);
        self.commits.send_modify(|n| *n += 1);
    }

    /// A batch committed.
    pub(crate) fn committed(&self, advances: &[Committed], records: u64) {
        {
            let mut partitions = self.partitions.lock().expect("stats lock");
            for c in advances {
                let p = partitions
                    .entry(c.partition.clone())
                    .or_insert(PartitionProgress {
                        next: None,
                        last_event_ms: None,
                        high: None,
                    });
                p.next = Some(c.next);
                p.last_event_ms = c.last_event_ms.or(p.last_event_ms);
                p.high = c.high.or(p.high);
            }
        }
        self.applied.fetch_add(records, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.commits.send_modify(|n| *n += 1);
    }
}
