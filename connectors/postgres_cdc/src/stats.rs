//! What a capture pipeline has done, readable at any time by the status API and metrics.
//! The hot path only stores atomics.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Counters and positions of one capture pipeline, kept across restarts of its task.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Outbox rows read from committed transactions.
    pub rows: AtomicU64,
    /// Records the broker acknowledged.
    pub acknowledged: AtomicU64,
    /// Rows sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Changes of captured tables that are not inserts (ignored in outbox mode).
    pub ignored: AtomicU64,
    /// Transactions confirmed to the slot.
    pub transactions: AtomicU64,
    /// The last position confirmed to the slot (0: none yet in this process).
    pub confirmed_lsn: AtomicU64,
    /// Commit time (ms since the epoch) of the last confirmed transaction; 0 when none.
    pub confirmed_commit_ms: AtomicI64,
    /// Commit time (ms) of the oldest transaction received but not yet confirmed; 0 when
    /// every received transaction is confirmed.
    pub oldest_pending_commit_ms: AtomicI64,
    /// The replication connection is up and streaming.
    pub connected: AtomicBool,
}

impl CaptureStats {
    /// How far behind the broker's acknowledgements are, in seconds: the age of the oldest
    /// transaction received but not yet confirmed (0 when none is waiting).
    pub fn lag_seconds(&self, now_ms: i64) -> f64 {
        match self.oldest_pending_commit_ms.load(Relaxed) {
            0 => 0.0,
            t => ((now_ms - t).max(0) as f64) / 1000.0,
        }
    }
}
