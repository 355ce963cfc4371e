//! [`MongoSink`]: a collection as a read model.
//!
//! On a replica set (or mongos) the batch's statements and the checkpoint advance commit
//! in one multi-document transaction. A standalone server has no transactions: sinkd says
//! so at start-up, writes the statements and then the checkpoint, and relies on the
//! per-document guards, so a crash between the two or a redelivery re-applies nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, ClientSession, Database};
use sinkd_core::batch::{Compacted, Entry};
use sinkd_core::config::redact_url;

use crate::config::MongoSinkConfig;
use sinkd_core::error::SinkError;
use sinkd_core::sink::{CheckpointAdvance, CheckpointReader, Sink, Target};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::checkpoint::{self, MongoCheckpointReader, run, write_errors};
use crate::statements::{CHUNK, statement};
use crate::{classify, classify_code, codes};
use crate::{guards, recovery};

/// How long a kept session may stay unused: under the server's 30-minute session timeout.
const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(25 * 60);

/// A MongoDB collection (and its child collections) as a read model.
pub struct MongoSink {
    cfg: MongoSinkConfig,
    pipeline: String,
    /// Collection name and key per target, in [`sinkd_core::operation::Op::target`]
    /// order: the configured collection first (shadow names for a rebuild's shadow).
    targets: Vec<(String, Vec<String>)>,
    client: Option<Client>,
    transactions: bool,
    /// The session batches are written in, kept between batches (with when it was last
    /// used): its id is on the checkpoints it moves (see [`crate::recovery`]).
    session: Mutex<Option<(ClientSession, Instant)>>,
    /// The id of every session this sink has written in: never ended as another writer's.
    own: std::sync::Mutex<Vec<Document>>,
    reader: Arc<MongoCheckpointReader>,
}

/// Duplicate-key failures of a statement: the first is retried, the second means another
/// writer inserted that key first with a newer event, so the statement is stale.
enum Attempt {
    Done,
    /// (target, index into its updates).
    DuplicateKeys(Vec<(usize, usize)>),
}

impl MongoSink {
    /// A sink for one pipeline writing `target`: the `collections` (name and key, in the
    /// order of operations' targets; see `PipelineFile::sink_targets`), or their rebuild
    /// shadows. The configured collection name (a template when routed) names the
    /// checkpoints. Connects on [`Sink::open`].
    pub fn new(
        cfg: &MongoSinkConfig,
        pipeline: &str,
        collections: &[(String, Vec<String>)],
        target: Target,
    ) -> MongoSink {
        let mut cfg = cfg.clone();
        cfg.collection = target.name(&cfg.collection);
        let mut targets: Vec<(String, Vec<String>)> = collections
            .iter()
            .map(|(n, k)| (target.name(n), k.clone()))
            .collect();
        if targets.is_empty() {
            targets.push((cfg.collection.clone(), Vec::new()));
        }
        MongoSink {
            targets,
            reader: MongoCheckpointReader::new(&cfg.url, &cfg.database, pipeline, &cfg.collection),
            cfg,
            pipeline: pipeline.to_owned(),
            client: None,
            transactions: false,
            session: Mutex::new(None),
            own: std::sync::Mutex::new(Vec::new()),
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
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        db: &Database,
        collection: &str,
        kind: &str,
        field: &str,
        entries: &[&Entry],
        skip: &HashSet<usize>,
        mut session: Option<&mut ClientSession>,
    ) -> Result<Vec<usize>, SinkError> {
        let live: Vec<usize> = (0..entries.len()).filter(|i| !skip.contains(i)).collect();
        // Prefix deletes match many documents: they keep the server-side guard.
        let prefixes = entries
            .first()
            .is_some_and(|e| e.op == Compacted::DeletePrefix);
        let mut duplicates = Vec::new();
        for chunk in live.chunks(CHUNK) {
            // (index into `entries`, statement) of what is sent.
            let (sent, statements): (Vec<usize>, Vec<Document>) = match session.as_deref_mut() {
                Some(s) if !prefixes => {
                    let of_chunk: Vec<&Entry> = chunk.iter().map(|&i| entries[i]).collect();
                    let stored = guards::read(db, collection, &of_chunk, s).await?;
                    chunk
                        .iter()
                        .filter_map(|&i| guards::decide(entries[i], &stored).map(|d| (i, d)))
                        .unzip()
                }
                _ => chunk.iter().map(|&i| (i, statement(entries[i]))).unzip(),
            };
            if statements.is_empty() {
                continue;
            }
            let reply = run(
                db,
                doc! { kind: collection, field: statements, "ordered": false },
                session.as_deref_mut(),
            )
            .await?;
            for e in write_errors(&reply) {
                if e.code == codes::DUPLICATE_KEY {
                    duplicates.push(sent[e.index.min(sent.len() - 1)]);
                } else {
                    return Err(classify_code(e.code, &e.message));
                }
            }
        }
        Ok(duplicates)
    }

    /// Every target's statements: deletes by key prefix first (what later events write
    /// under the prefix must survive them), then updates, then deletes. Duplicate keys
    /// come back as (target, index into that target's updates).
    async fn send_all(
        &self,
        db: &Database,
        batches: &[Statements<'_>],
        stale: &HashSet<(usize, usize)>,
        mut session: Option<&mut ClientSession>,
    ) -> Result<Vec<(usize, usize)>, SinkError> {
        let none = HashSet::new();
        let mut duplicates = Vec::new();
        for (t, b) in batches.iter().enumerate() {
            let collection = &self.targets[t].0;
            self.send(
                db,
                collection,
                "delete",
                "deletes",
                &b.prefixes,
                &none,
                session.as_deref_mut(),
            )
            .await?;
            let skip: HashSet<usize> = stale
                .iter()
                .filter(|(st, _)| *st == t)
                .map(|(_, i)| *i)
                .collect();
            let found = self
                .send(
                    db,
                    collection,
                    "update",
                    "updates",
                    &b.updates,
                    &skip,
                    session.as_deref_mut(),
                )
                .await?;
            duplicates.extend(found.into_iter().map(|i| (t, i)));
            self.send(
                db,
                collection,
                "delete",
                "deletes",
                &b.deletes,
                &none,
                session.as_deref_mut(),
            )
            .await?;
        }
        Ok(duplicates)
    }

    async fn attempt(
        &self,
        batches: &[Statements<'_>],
        stale: &HashSet<(usize, usize)>,
        advances: &[CheckpointAdvance],
    ) -> Result<Attempt, SinkError> {
        let db = self.db();
        let client = self.client.as_ref().expect("opened");
        if !self.transactions {
            let duplicates = self.send_all(&db, batches, stale, None).await?;
            if !duplicates.is_empty() {
                return Ok(Attempt::DuplicateKeys(duplicates));
            }
            checkpoint::advance(&db, None, &self.pipeline, &self.cfg.collection, advances).await?;
            return Ok(Attempt::Done);
        }
        // The server forgets a session idle for 30 minutes: a kept one is renewed before.
        let kept = self.session.lock().await.take();
        let kept = kept.filter(|(_, used)| used.elapsed() < SESSION_IDLE_LIMIT);
        let mut session = match kept {
            Some((s, _)) => s,
            None => {
                let s = client.start_session().await.map_err(|e| classify(&e))?;
                self.own.lock().expect("own sessions").push(s.id().clone());
                s
            }
        };
        session
            .start_transaction()
            .await
            .map_err(|e| classify(&e))?;
        let result = async {
            let duplicates = self
                .send_all(&db, batches, stale, Some(&mut session))
                .await?;
            if !duplicates.is_empty() {
                return Ok(Attempt::DuplicateKeys(duplicates));
            }
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
        let outcome = match result {
            Ok(Attempt::Done) => (session.commit_transaction().await)
                .map(|()| Attempt::Done)
                .map_err(|e| classify(&e)),
            other => {
                let _ = session.abort_transaction().await;
                other
            }
        };
        if matches!(outcome, Err(SinkError::Conflict(_))) {
            let own = self.own.lock().expect("own sessions").clone();
            let named = (self.pipeline.as_str(), self.cfg.collection.as_str());
            recovery::end_other_writers(client, &db, named, advances, &own).await;
        }
        // Kept whatever happened: a session whose transaction failed (or was ended by
        // another writer) serves the next one, and its id stays the one on the checkpoints.
        *self.session.lock().await = Some((session, Instant::now()));
        outcome
    }

    /// Child collections with a compound key are deleted from by key prefix: an index on
    /// the `_id` field the prefix starts with keeps that from scanning the collection.
    async fn index_prefixes(&self, client: &Client) -> Result<(), SinkError> {
        let db = client.database(&self.cfg.database);
        for (name, key) in &self.targets {
            if key.len() < 2 {
                continue;
            }
            let model = mongodb::IndexModel::builder()
                .keys(doc! { format!("_id.{}", key[0]): 1 })
                .build();
            db.collection::<Document>(name)
                .create_index(model)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(())
    }
}

/// One target's share of a batch.
#[derive(Default)]
struct Statements<'a> {
    prefixes: Vec<&'a Entry>,
    updates: Vec<&'a Entry>,
    deletes: Vec<&'a Entry>,
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
        self.index_prefixes(&client).await?;
        *self.reader.client.lock().await = Some(client.clone());
        self.client = Some(client);
        Ok(())
    }

    fn checkpoint_reader(&self) -> Arc<dyn CheckpointReader> {
        self.reader.clone()
    }

    async fn write(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError> {
        if self.client.is_none() {
            self.open().await?;
        }
        let mut batches: Vec<Statements> = (0..self.targets.len())
            .map(|_| Statements::default())
            .collect();
        for e in entries {
            let Some(b) = batches.get_mut(e.target) else {
                return Err(SinkError::Config(format!(
                    "an operation for target {} of a sink with {} targets",
                    e.target,
                    self.targets.len()
                )));
            };
            match e.op {
                Compacted::DeletePrefix => b.prefixes.push(e),
                Compacted::Delete => b.deletes.push(e),
                _ => b.updates.push(e),
            }
        }
        // Statements that lost a duplicate-key race once, and those found stale after a
        // second loss.
        let mut raced: HashSet<(usize, usize)> = HashSet::new();
        let mut stale: HashSet<(usize, usize)> = HashSet::new();
        loop {
            match self.attempt(&batches, &stale, advances).await? {
                Attempt::Done => return Ok(()),
                Attempt::DuplicateKeys(indexes) => {
                    let (again, first): (Vec<(usize, usize)>, Vec<(usize, usize)>) =
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
