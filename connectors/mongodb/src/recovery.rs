//! Ending the transaction a crashed writer left open.
//!
//! A writer killed in the middle of a transaction leaves it open on the server, holding
//! its documents (the checkpoints of its partitions above all) until the server expires it
//! (`transactionLifetimeLimitSeconds`, 60 s by default). Its successor's first batch hits
//! a write conflict on every attempt meanwhile. The checkpoint documents name the session
//! that last moved them; a writer that conflicts on partitions it now holds ends those
//! sessions with `killSessions`, which aborts their open transactions at once.
//!
//! Safe whatever the other session is: a transaction that was about to commit either
//! committed (the checkpoint's compare-and-set then fences the retry) or is aborted as a
//! whole; a live writer that still used the session sees one failed transaction and
//! retries it on a new session.

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Database};
use sinkd_core::sink::CheckpointAdvance;
use tracing::{info, warn};

use crate::checkpoint::{COLLECTION, id};

/// Ends the sessions other than `ours` that last moved the checkpoints of `advances`.
/// Returns how many it ended; failures (no `killSessions` privilege, a server away) are
/// logged and leave the conflict to expire by itself.
pub async fn end_other_writers(
    client: &Client,
    db: &Database,
    (pipeline, target): (&str, &str),
    advances: &[CheckpointAdvance],
    ours: &Document,
) -> usize {
    let ids: Vec<Document> = advances
        .iter()
        .map(|a| id(pipeline, target, &a.topic, a.partition))
        .collect();
    let found = db
        .collection::<Document>(COLLECTION)
        .distinct("writer", doc! { "_id": { "$in": ids } })
        .await;
    let others: Vec<Document> = match found {
        Ok(writers) => writers
            .into_iter()
            .filter_map(|w| match w {
                Bson::Document(lsid) if lsid != *ours => Some(lsid),
                _ => None,
            })
            .collect(),
        Err(e) => {
            warn!(pipeline, error = %e, "cannot read which sessions last wrote the checkpoints");
            return 0;
        }
    };
    if others.is_empty() {
        return 0;
    }
    let ended = client
        .database("admin")
        .run_command(doc! { "killSessions": others.clone() })
        .await;
    match ended {
        Ok(_) => {
            info!(pipeline, sessions = ?others,
                  "ended the transactions of earlier writers of these partitions, so their locks \
                   do not stall this pipeline until the server expires them");
            others.len()
        }
        Err(e) => {
            warn!(pipeline, error = %e,
                  "cannot end the sessions of earlier writers; the write conflict lasts until \
                   the server expires their transactions");
            0
        }
    }
}
