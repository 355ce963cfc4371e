//! The `sinkd_offsets` collection: `{_id: {pipeline, target, topic, partition}, next,
//! writer}`, advanced with the batch (in its transaction on a replica set) as a
//! compare-and-set. `writer` is the logical session id of the transaction that last moved
//! it: after a crash, [`crate::recovery`] ends that session's unfinished transaction.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Client, ClientSession, Database};
use sinkd_core::error::SinkError;
use sinkd_core::event::TopicPartition;
use sinkd_core::sink::{CheckpointAdvance, CheckpointReader};
use tokio::sync::Mutex;

use crate::{classify, classify_code, codes};

/// The checkpoint collection.
pub const COLLECTION: &str = "sinkd_offsets";

pub(crate) fn id(pipeline: &str, target: &str, topic: &str, partition: i32) -> Document {
    doc! { "pipeline": pipeline, "target": target, "topic": topic, "partition": partition }
}

/// Runs a command, in the session when there is one.
pub async fn run(
    db: &Database,
    command: Document,
    session: Option<&mut ClientSession>,
) -> Result<Document, SinkError> {
    let result = match session {
        Some(s) => db.run_command(command).session(s).await,
        None => db.run_command(command).await,
    };
    result.map_err(|e| classify(&e))
}

/// One failed statement of a write command.
#[derive(Debug)]
pub struct WriteError {
    /// Index of the statement in the command.
    pub index: usize,
    /// Server error code.
    pub code: i32,
    /// Server message.
    pub message: String,
}

/// The `writeErrors` of a write command's reply (which says `ok: 1` even when some
/// statements failed).
pub fn write_errors(reply: &Document) -> Vec<WriteError> {
    reply
        .get_array("writeErrors")
        .map(|errors| {
            errors
                .iter()
                .filter_map(Bson::as_document)
                .map(|e| WriteError {
                    index: e.get_i32("index").unwrap_or(0) as usize,
                    code: e.get_i32("code").unwrap_or(0),
                    message: e.get_str("errmsg").unwrap_or("").to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Advances the checkpoints; `Fenced` when any stored value is not the expected one.
pub async fn advance(
    db: &Database,
    mut session: Option<&mut ClientSession>,
    pipeline: &str,
    target: &str,
    advances: &[CheckpointAdvance],
) -> Result<(), SinkError> {
    let fenced = |a: &CheckpointAdvance| SinkError::Fenced {
        topic: a.topic.to_string(),
        partition: a.partition,
        expected: a.expected,
    };
    let now = DateTime::now();
    // The session's id, so a successor can end a transaction this writer leaves open.
    let writer = session
        .as_deref()
        .map_or(Bson::Null, |s| Bson::Document(s.id().clone()));
    let (moves, creates): (Vec<&CheckpointAdvance>, Vec<&CheckpointAdvance>) =
        advances.iter().partition(|a| a.expected.is_some());
    if !moves.is_empty() {
        let updates: Vec<Document> = moves
            .iter()
            .map(|a| {
                doc! {
                    "q": { "_id": id(pipeline, target, &a.topic, a.partition), "next": a.expected },
                    "u": { "$set": { "next": a.next, "updated_at": now, "writer": writer.clone() } },
                }
            })
            .collect();
        let reply = run(
            db,
            doc! { "update": COLLECTION, "updates": updates, "ordered": false },
            session.as_deref_mut(),
        )
        .await?;
        if let Some(e) = write_errors(&reply).into_iter().next() {
            return Err(classify_code(e.code, &e.message));
        }
        let matched = reply.get_i32("n").unwrap_or(0) as usize;
        if matched != moves.len() {
            return Err(fenced(moves[0]));
        }
    }
    if !creates.is_empty() {
        let documents: Vec<Document> = creates
            .iter()
            .map(|a| doc! { "_id": id(pipeline, target, &a.topic, a.partition), "next": a.next, "updated_at": now, "writer": writer.clone() })
            .collect();
        let reply = run(
            db,
            doc! { "insert": COLLECTION, "documents": documents, "ordered": false },
            session,
        )
        .await?;
        if let Some(e) = write_errors(&reply).into_iter().next() {
            return Err(if e.code == codes::DUPLICATE_KEY {
                fenced(creates[e.index.min(creates.len() - 1)])
            } else {
                classify_code(e.code, &e.message)
            });
        }
    }
    Ok(())
}

/// Loads stored checkpoints.
pub async fn load(
    db: &Database,
    pipeline: &str,
    target: &str,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, i64>, SinkError> {
    let cursor = db
        .collection::<Document>(COLLECTION)
        .find(doc! { "_id.pipeline": pipeline, "_id.target": target })
        .await
        .map_err(|e| classify(&e))?;
    let docs: Vec<Document> = cursor.try_collect().await.map_err(|e| classify(&e))?;
    Ok(docs
        .iter()
        .filter_map(|d| {
            let id = d.get_document("_id").ok()?;
            let topic = id.get_str("topic").ok()?;
            let partition = id.get_i32("partition").ok()?;
            let tp = partitions
                .iter()
                .find(|(t, p)| &**t == topic && *p == partition)?;
            Some((tp.clone(), d.get_i64("next").ok()?))
        })
        .collect())
}

/// A checkpoint reader for the source, sharing the sink's client (or connecting itself
/// when used without a sink, by the control plane).
pub struct MongoCheckpointReader {
    /// Set once the sink has connected.
    pub client: Mutex<Option<Client>>,
    url: String,
    database: String,
    pipeline: String,
    target: String,
}

impl MongoCheckpointReader {
    /// A reader for one pipeline and target collection.
    pub fn new(
        url: &str,
        database: &str,
        pipeline: &str,
        target: &str,
    ) -> Arc<MongoCheckpointReader> {
        Arc::new(MongoCheckpointReader {
            client: Mutex::new(None),
            url: url.to_owned(),
            database: database.to_owned(),
            pipeline: pipeline.to_owned(),
            target: target.to_owned(),
        })
    }
}

#[async_trait]
impl CheckpointReader for MongoCheckpointReader {
    async fn load(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, SinkError> {
        let client = {
            let mut guard = self.client.lock().await;
            match guard.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = Client::with_uri_str(&self.url)
                        .await
                        .map_err(|e| classify(&e))?;
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        load(
            &client.database(&self.database),
            &self.pipeline,
            &self.target,
            partitions,
        )
        .await
    }
}
