//! Ending the transaction a crashed writer left open.
//!
//! A writer killed in the middle of a transaction leaves it open on the server, holding
//! its documents (the checkpoints of its partitions above all) until the server expires it
//! (`transactionLifetimeLimitSeconds`, 60 s by default). Its successor's first batch hits
//! a write conflict on every attempt meanwhile. The checkpoint documents name the session
//! that last moved them; a writer that conflicts on partitions it now holds ends those
//! sessions with `killSessions`, which aborts their open transactions at once.
//!
//! Only transactions that have been idle for [`IDLE`] are ended: a crashed or paused
//! writer sends nothing, while a live one (two instances overlapping on a partition for
//! a moment during a rebalance) keeps its transaction busy and is left alone.
//!
//! Safe whatever the other session is: a transaction that was about to commit either
//! committed (the checkpoint's compare-and-set then fences the retry) or is aborted as a
//! whole; a writer that wakes up later finds its transaction gone and retries it, and is
//! fenced.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Database};
use sinkd_core::sink::CheckpointAdvance;
use tracing::{info, warn};

use crate::checkpoint::{COLLECTION, id};

/// How long a transaction must have been idle before it is taken for a dead writer's.
pub const IDLE: Duration = Duration::from_secs(2);

/// Ends the idle transactions of the sessions, other than this sink's `own`, that last
/// moved the checkpoints of `advances`. Returns how many sessions it ended; failures (no
/// privilege to list or end them, a server away) are logged and leave the conflict to
/// expire by itself.
pub async fn end_other_writers(
    client: &Client,
    db: &Database,
    (pipeline, target): (&str, &str),
    advances: &[CheckpointAdvance],
    own: &[Document],
) -> usize {
    let ids: Vec<Document> = advances
        .iter()
        .map(|a| id(pipeline, target, &a.topic, a.partition))
        .collect();
    let found = db
        .collection::<Document>(COLLECTION)
        .distinct("writer", doc! { "_id": { "$in": ids } })
        .await;
    let others: Vec<Bson> = match found {
        Ok(writers) => writers
            .into_iter()
            .filter_map(|w| match w {
                Bson::Document(lsid) if !own.contains(&lsid) => lsid.get("id").cloned(),
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
    let idle = match idle_transactions(client, others).await {
        Ok(idle) if idle.is_empty() => return 0,
        Ok(idle) => idle,
        Err(e) => {
            warn!(pipeline, error = %e, "cannot list the sessions with open transactions");
            return 0;
        }
    };
    let ended = client
        .database("admin")
        .run_command(doc! { "killSessions": idle.clone() })
        .await;
    match ended {
        Ok(_) => {
            info!(pipeline, sessions = ?idle,
                  "ended the idle transactions of earlier writers of these partitions, so their \
                   locks do not stall this pipeline until the server expires them");
            idle.len()
        }
        Err(e) => {
            warn!(pipeline, error = %e,
                  "cannot end the sessions of earlier writers; the write conflict lasts until \
                   the server expires their transactions");
            0
        }
    }
}

/// Of the session ids `ids`, those with a transaction open and idle for [`IDLE`], as
/// `killSessions` takes them.
async fn idle_transactions(
    client: &Client,
    ids: Vec<Bson>,
) -> mongodb::error::Result<Vec<Document>> {
    let idle_micros = IDLE.as_micros() as i64;
    let stages = [
        doc! { "$currentOp": { "idleSessions": true } },
        doc! { "$match": {
            "lsid.id": { "$in": ids },
            "transaction.timeInactiveMicros": { "$gte": idle_micros },
        } },
    ];
    let ops: Vec<Document> = client
        .database("admin")
        .aggregate(stages)
        .await?
        .try_collect()
        .await?;
    let mut idle: Vec<Document> = Vec::new();
    for op in ops {
        if let Some(id) = op.get_document("lsid").ok().and_then(|l| l.get("id")) {
            let lsid = doc! { "id": id.clone() };
            if !idle.contains(&lsid) {
                idle.push(lsid);
            }
        }
    }
    Ok(idle)
}
