//! [`MongoSink`]: a collection as a read model.
//!
//! On a replica set (or mongos) the batch's statements and the checkpoint advance commit
//! in one multi-document transaction. A standalone server has no transactions: sinkd says
//! so at start-up, writes the statements and then the checkpoint, and relies on the
//! per-document guards, so a crash between the two or a redelivery re-applies nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, ClientSession, Database};
use sinkd_core::batch::{Compacted, Entry};
use sinkd_core::config::{MongoSinkConfig, redact_url};
use sinkd_core::error::SinkError;
use sinkd_core::sink::{CheckpointAdvance, CheckpointReader, Sink, Target, TargetAdmin};
use tracing::{debug, info, warn};

use crate::admin::{MongoAdmin, shadow_collection};
use crate::checkpoint::{self, MongoCheckpointReader, run, write_errors};
use crate::statements::{CHUNK, statement};
use crate::{classify, classify_code, codes};

/// A MongoDB collection as a read model.
pub struct MongoSink {
    cfg: MongoSinkConfig,
    pipeline: String,
    client: Option<Client>,
    transactions: bool,
    reader: Arc<MongoCheckpointReader>,
    admin: Arc<MongoAdmin>,
}

/// Duplicate-key failures of a statement: the first is retried, the second means another
/// writer inserted that key first with a newer event, so the statement is stale.
enum Attempt {
    Done,
    DuplicateKeys(Vec<usize>),
}

impl MongoSink {
    /// A sink for one pipeline writing `target` (the configured collection or its rebuild
    /// shadow); connects on [`Sink::open`].
    pub fn new(cfg: &MongoSinkConfig, pipeline: &str, target: Target) -> MongoSink {
        let admin = Arc::new(MongoAdmin::new(cfg, pipeline));
        let mut cfg = cfg.clone();
        if target == Target::Shadow {
            cfg.collection = shadow_collection(&cfg.collection);
        }
        MongoSink {
            reader: MongoCheckpointReader::new(&cfg.url, &cfg.database, pipeline, &cfg.collection),
            admin,
            cfg,
            pipeline: pipeline.to_owned(),
            client: None,
            transactions: false,
        }
    }

    fn db(&self) -> Database {
        self.client
            .as_ref()
            .expect("opened")
            .database(&self.cfg.database)
    }

    /// Sends the statements of `entries` in chunks, skipping those in `skip`; returns the
    /// indexes (into `entries`) of duplicate-key failures, and fails on any other write
    /// error.
    async fn send(
        &self,
        db: &Database,
        kind: &str,
        field: &str,
        entries: &[&Entry],
        skip: &HashSet<usize>,
        mut session: Option<&mut ClientSession>,
    ) -> Result<Vec<usize>, SinkError> {
        let live: Vec<usize> = (0..entries.len()).filter(|i| !skip.contains(i)).collect();
        let mut duplicates = Vec::new();
        for chunk in live.chunks(CHUNK) {
            let statements: Vec<Document> = chunk.iter().map(|&i| statement(entries[i])).collect();
            let reply = run(
                db,
                doc! { kind: &self.cfg.collection, field: statements, "ordered": false },
                session.as_deref_mut(),
            )
            .await?;
            for e in write_errors(&reply) {
                if e.code == codes::DUPLICATE_KEY {
                    duplicates.push(chunk[e.index.min(chunk.len() - 1)]);
                } else {
                    return Err(classify_code(e.code, &e.message));
                }
            }
        }
        Ok(duplicates)
    }

    async fn attempt(
        &self,
        updates: &[&Entry],
        deletes: &[&Entry],
        stale: &HashSet<usize>,
        advances: &[CheckpointAdvance],
    ) -> Result<Attempt, SinkError> {
        let none = HashSet::new();
        let db = self.db();
        let client = self.client.as_ref().expect("opened");
        if !self.transactions {
            let duplicates = self
                .send(&db, "update", "updates", updates, stale, None)
                .await?;
            self.send(&db, "delete", "deletes", deletes, &none, None)
                .await?;
            if !duplicates.is_empty() {
                return Ok(Attempt::DuplicateKeys(duplicates));
            }
            checkpoint::advance(&db, None, &self.pipeline, &self.cfg.collection, advances).await?;
            return Ok(Attempt::Done);
        }
        let mut session = client.start_session().await.map_err(|e| classify(&e))?;
        session
            .start_transaction()
            .await
            .map_err(|e| classify(&e))?;
        let result = async {
            let duplicates = self
                .send(&db, "update", "updates", updates, stale, Some(&mut session))
                .await?;
            if !duplicates.is_empty() {
                return Ok(Attempt::DuplicateKeys(duplicates));
            }
            self.send(&db, "delete", "deletes", deletes, &none, Some(&mut session))
                .await?;
            checkpoint::advance(
                &db,
                Some(&mut session),
                &self.pipeline,
                &self.cfg.collection,
                advances,
            )
            .await?;
            Ok(Attempt::Done)
        }
        .await;
        match result {
            Ok(Attempt::Done) => {
                session
                    .commit_transaction()
                    .await
                    .map_err(|e| classify(&e))?;
                Ok(Attempt::Done)
            }
            other => {
                let _ = session.abort_transaction().await;
                other
            }
        }
    }
}

#[async_trait]
impl Sink for MongoSink {
    async fn open(&mut self) -> Result<(), SinkError> {
        let mut options = ClientOptions::parse(&self.cfg.url)
            .await
            .map_err(|e| SinkError::Config(format!("MongoDB URL: {e}")))?;
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(10));
        options.app_name.get_or_insert_with(|| "sinkd".to_owned());
        let client = Client::with_options(options).map_err(|e| classify(&e))?;
        let hello = client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| classify(&e))?;
        self.transactions = hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid");
        let url = redact_url(&self.cfg.url);
        if self.transactions {
            info!(pipeline = %self.pipeline, %url, collection = %self.cfg.collection,
                  "MongoDB sink ready: each batch commits with its checkpoint in one transaction");
        } else {
            warn!(pipeline = %self.pipeline, %url, collection = %self.cfg.collection,
                  "MongoDB is a standalone server without transactions: batches and checkpoints \
                   are written one after the other, and per-document position guards keep \
                   redeliveries from applying twice");
        }
        *self.reader.client.lock().await = Some(client.clone());
        self.client = Some(client);
        Ok(())
    }

    fn checkpoint_reader(&self) -> Arc<dyn CheckpointReader> {
        self.reader.clone()
    }

    fn admin(&self) -> Arc<dyn TargetAdmin> {
        self.admin.clone()
    }

    async fn write(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError> {
        if self.client.is_none() {
            self.open().await?;
        }
        let (deletes, updates): (Vec<&Entry>, Vec<&Entry>) = entries
            .iter()
            .partition(|e| matches!(e.op, Compacted::Delete));
        // Statements that lost a duplicate-key race once, and those found stale after a
        // second loss.
        let mut raced: HashSet<usize> = HashSet::new();
        let mut stale: HashSet<usize> = HashSet::new();
        loop {
            match self.attempt(&updates, &deletes, &stale, advances).await? {
                Attempt::Done => return Ok(()),
                Attempt::DuplicateKeys(indexes) => {
                    let (again, first): (Vec<usize>, Vec<usize>) =
                        indexes.into_iter().partition(|i| raced.contains(i));
                    if !again.is_empty() {
                        warn!(pipeline = %self.pipeline, count = again.len(),
                              "duplicate key again: another writer inserted these keys with newer \
                               events; treated as stale");
                        stale.extend(again);
                    }
                    if !first.is_empty() {
                        debug!(pipeline = %self.pipeline, count = first.len(),
                               "duplicate key on new documents; retrying once");
                    }
                    raced.extend(first);
                }
            }
        }
    }
}
