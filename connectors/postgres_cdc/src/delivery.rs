//! Acknowledgements in order, then the slot's position.
//!
//! The capture loop hands over, in commit order, the delivery future of every record and
//! a marker at each transaction's commit. One task awaits them in that order, so when it
//! reaches a commit marker every record of that transaction and of every earlier one has
//! been acknowledged by the broker. Only then is the commit's end position confirmed to
//! the slot (and, with `delete_after_capture`, the transaction's rows deleted first). A
//! failed delivery stops the task: nothing after it is confirmed, and the restart sends
//! again from the slot's confirmed position.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use pg_walstream::SharedLsnFeedback;
use rdkafka::producer::DeliveryFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::slot::db_message;
use crate::stats::CaptureStats;

/// What the capture loop hands over, in order.
pub enum Pending {
    /// A record sent to the producer.
    Record(DeliveryFuture),
    /// The end of a transaction whose records were all handed over before it.
    Commit {
        /// The position to confirm to the slot.
        end_lsn: u64,
        /// Commit time, ms since the epoch.
        commit_ms: i64,
        /// `(quoted table, id)` of its rows, to delete once delivered (when configured).
        rows: Vec<(String, String)>,
    },
}

/// Deletes captured rows by id.
pub struct Deleter {
    /// An ordinary connection.
    pub client: Client,
    /// The quoted id column.
    pub id_column: String,
}

/// The acknowledging task and the commit times still waiting, for lag.
pub struct Delivery {
    /// Where the capture loop sends, in order. Bounded: a full channel holds the loop
    /// back, which bounds memory.
    pub tx: mpsc::Sender<Pending>,
    /// Commit times of transactions handed over but not yet confirmed, oldest first.
    pub waiting: Arc<Mutex<VecDeque<i64>>>,
    /// Ends when the sender is dropped and everything is acknowledged, or at the first
    /// failure.
    pub task: JoinHandle<Result<(), String>>,
}

/// Starts the acknowledging task.
pub fn start(
    feedback: Arc<SharedLsnFeedback>,
    stats: Arc<CaptureStats>,
    deleter: Option<Deleter>,
    capacity: usize,
) -> Delivery {
    let (tx, mut rx) = mpsc::channel::<Pending>(capacity);
    let waiting = Arc::new(Mutex::new(VecDeque::<i64>::new()));
    let queue = waiting.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            match item {
                Pending::Record(future) => match future.await {
                    Ok(Ok(_)) => {
                        stats.acknowledged.fetch_add(1, Relaxed);
                    }
                    Ok(Err((e, _))) => {
                        return Err(format!(
                            "the broker did not acknowledge a record: {e}; the slot stays \
                             before its transaction"
                        ));
                    }
                    Err(_) => return Err("the producer was closed with records in flight".into()),
                },
                Pending::Commit {
                    end_lsn,
                    commit_ms,
                    rows,
                } => {
                    if let Some(d) = &deleter
                        && !rows.is_empty()
                    {
                        delete_rows(d, &rows).await?;
                    }
                    feedback.update_flushed_lsn(end_lsn);
                    feedback.update_applied_lsn(end_lsn);
                    stats.confirmed_lsn.store(end_lsn, Relaxed);
                    stats.confirmed_commit_ms.store(commit_ms, Relaxed);
                    stats.transactions.fetch_add(1, Relaxed);
                    let mut q = queue.lock().expect("lock poisoned");
                    q.pop_front();
                    stats
                        .oldest_pending_commit_ms
                        .store(q.front().copied().unwrap_or(0), Relaxed);
                }
            }
        }
        Ok(())
    });
    Delivery { tx, waiting, task }
}

async fn delete_rows(d: &Deleter, rows: &[(String, String)]) -> Result<(), String> {
    let mut tables: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    tables.dedup();
    for table in tables {
        let ids: Vec<&str> = rows
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, id)| id.as_str())
            .collect();
        let sql = format!("DELETE FROM {table} WHERE {}::text = ANY($1)", d.id_column);
        d.client
            .execute(&sql, &[&ids])
            .await
            .map_err(|e| format!("deleting captured rows from {table}: {}", db_message(&e)))?;
    }
    Ok(())
}
