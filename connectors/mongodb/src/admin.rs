//! Whole-collection operations for the control plane.
//!
//! The shadow of collection `c` is `c__sinkd_shadow`, with its own checkpoint documents
//! (target `c__sinkd_shadow`), created with `c`'s options and indexes before it is filled. MongoDB cannot rename a collection inside a transaction, so
//! the swap is made recoverable instead of atomic:
//! 1. a marker `{_id: {pipeline, target: "c#swap"}}` is written to `sinkd_offsets`;
//! 2. `renameCollection c__sinkd_shadow → c` with `dropTarget` (atomic for readers: they see
//!    the old collection, then the new one);
//! 3. the shadow's checkpoints replace the live ones, and the marker is removed.
//!
//! A pipeline with `targets` or routing has several collections; each has its shadow, and
//! step 2 renames every one of them.
//!
//! [`TargetAdmin::recover`] finishes an interrupted swap before the live pipeline starts:
//! the marker is written only once every shadow is complete, so with the marker present
//! the swap is rolled forward: the shadows not renamed yet are renamed, then step 3 is
//! done (again).

use crate::config::MongoSinkConfig;
use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Database};
use sinkd_core::error::SinkError;
use sinkd_core::event::TopicPartition;
use sinkd_core::sink::{Reset, Target, TargetAdmin};
use tokio::sync::OnceCell;
use tracing::info;

use crate::checkpoint::COLLECTION;
use crate::classify;

/// The name of a collection's shadow.
pub fn shadow_collection(collection: &str) -> String {
    Target::Shadow.name(collection)
}

/// [`TargetAdmin`] for a MongoDB collection and its child collections.
pub struct MongoAdmin {
    url: String,
    database: String,
    /// The configured collection name (a template when routed): the checkpoints' name.
    collection: String,
    /// Every collection the pipeline writes.
    collections: Vec<String>,
    pipeline: String,
    client: OnceCell<Client>,
}

impl MongoAdmin {
    /// The admin of the pipeline's `collections` (`cfg.collection` when empty).
    pub fn new(cfg: &MongoSinkConfig, pipeline: &str, collections: &[String]) -> MongoAdmin {
        MongoAdmin {
            url: cfg.url.clone(),
            database: cfg.database.clone(),
            collection: cfg.collection.clone(),
            collections: if collections.is_empty() {
                vec![cfg.collection.clone()]
            } else {
                collections.to_vec()
            },
            pipeline: pipeline.to_owned(),
            client: OnceCell::new(),
        }
    }

    fn name(&self, target: Target) -> String {
        Self::name_of(&self.collection, target)
    }

    fn name_of(collection: &str, target: Target) -> String {
        target.name(collection)
    }

    /// Every collection, the sink's own last (the order of the swap's renames).
    fn all(&self) -> impl Iterator<Item = &String> {
        self.collections.iter().rev()
    }

    /// Renames the shadow of `collection` into its place (dropping the old one).
    async fn rename_in(&self, collection: &str) -> Result<(), SinkError> {
        let client = self.client.get().expect("connected by db()");
        client
            .database("admin")
            .run_command(doc! {
                "renameCollection": format!("{}.{}", self.database, shadow_collection(collection)),
                "to": format!("{}.{collection}", self.database),
                "dropTarget": true,
            })
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    fn marker(&self) -> Document {
        doc! { "_id": { "pipeline": &self.pipeline, "target": format!("{}#swap", self.collection) } }
    }

    /// The shadow's rebuild ticket's `_id` filter (beside the checkpoints, like the marker).
    fn ticket(&self) -> Document {
        doc! { "_id": { "pipeline": &self.pipeline, "target": format!("{}#rebuild", self.collection) } }
    }

    async fn delete_ticket(&self, db: &Database) -> Result<(), SinkError> {
        db.collection::<Document>(COLLECTION)
            .delete_one(self.ticket())
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn db(&self) -> Result<Database, SinkError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                Client::with_uri_str(&self.url)
                    .await
                    .map_err(|e| classify(&e))
            })
            .await?;
        Ok(client.database(&self.database))
    }

    async fn collection_exists(&self, db: &Database, name: &str) -> Result<bool, SinkError> {
        let names = db
            .list_collection_names()
            .filter(doc! { "name": name })
            .await
            .map_err(|e| classify(&e))?;
        Ok(!names.is_empty())
    }

    /// Replaces `target`'s checkpoints with `offsets`.
    async fn set_offsets(
        &self,
        db: &Database,
        target: Target,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), SinkError> {
        let name = self.name(target);
        let offsets_coll = db.collection::<Document>(COLLECTION);
        offsets_coll
            .delete_many(doc! { "_id.pipeline": &self.pipeline, "_id.target": &name })
            .await
            .map_err(|e| classify(&e))?;
        if offsets.is_empty() {
            return Ok(());
        }
        let now = mongodb::bson::DateTime::now();
        let docs: Vec<Document> = offsets
            .iter()
            .map(|((topic, partition), next)| {
                doc! {
                    "_id": { "pipeline": &self.pipeline, "target": &name, "topic": &**topic, "partition": partition },
                    "next": next,
                    "updated_at": now,
                }
            })
            .collect();
        offsets_coll
            .insert_many(docs)
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    /// Step 3 of the swap: the shadow's checkpoints become the live ones.
    async fn move_checkpoints(&self, db: &Database) -> Result<(), SinkError> {
        let offsets_coll = db.collection::<Document>(COLLECTION);
        let shadow = self.name(Target::Shadow);
        let docs: Vec<Document> = offsets_coll
            .find(doc! { "_id.pipeline": &self.pipeline, "_id.target": &shadow })
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        let offsets: Vec<(TopicPartition, i64)> = docs
            .iter()
            .filter_map(|d| {
                let id = d.get_document("_id").ok()?;
                let tp = (
                    id.get_str("topic").ok()?.into(),
                    id.get_i32("partition").ok()?,
                );
                Some((tp, d.get_i64("next").ok()?))
            })
            .collect();
        self.set_offsets(db, Target::Live, &offsets).await?;
        self.set_offsets(db, Target::Shadow, &[]).await?;
        self.delete_ticket(db).await?;
        offsets_coll
            .delete_one(self.marker())
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    /// Creates the shadow with the live collection's options (validator, validation level
    /// and action, collation, …) and secondary indexes before anything is written to it,
    /// so it accepts and rejects documents as the live one does. Collation can only be
    /// given at creation.
    async fn create_shadow_like_live(
        &self,
        db: &Database,
        collection: &str,
    ) -> Result<(), SinkError> {
        let shadow = Self::name_of(collection, Target::Shadow);
        if self.collection_exists(db, &shadow).await? {
            return Ok(());
        }
        let live: Vec<Document> = db
            .run_command(doc! { "listCollections": 1, "filter": { "name": collection } })
            .await
            .map_err(|e| classify(&e))?
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map(|b| b.iter().filter_map(|d| d.as_document().cloned()).collect())
            .unwrap_or_default();
        let Some(info) = live.first() else {
            // No live collection yet: nothing to be like.
            return Ok(());
        };
        let mut create = doc! { "create": &shadow };
        if let Ok(options) = info.get_document("options") {
            create.extend(options.clone());
        }
        db.run_command(create).await.map_err(|e| classify(&e))?;
        self.copy_indexes(db, collection).await
    }

    /// Gives the shadow the live collection's secondary indexes (users add them for their
    /// queries; sinkd creates none), so the swap keeps them.
    async fn copy_indexes(&self, db: &Database, collection: &str) -> Result<(), SinkError> {
        let live = db.collection::<Document>(collection);
        let models: Vec<mongodb::IndexModel> = live
            .list_indexes()
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        let wanted: Vec<mongodb::IndexModel> = models
            .into_iter()
            .filter(|m| m.keys != doc! { "_id": 1 })
            .collect();
        if !wanted.is_empty() {
            db.collection::<Document>(&Self::name_of(collection, Target::Shadow))
                .create_indexes(wanted)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl TargetAdmin for MongoAdmin {
    fn describe(&self, target: Target) -> String {
        format!("{}.{}", self.database, self.name(target))
    }

    async fn recover(&self) -> Result<(), SinkError> {
        let db = self.db().await?;
        let offsets_coll = db.collection::<Document>(COLLECTION);
        let marker = offsets_coll
            .find_one(self.marker())
            .await
            .map_err(|e| classify(&e))?;
        if marker.is_none() {
            return Ok(());
        }
        info!(pipeline = %self.pipeline, "completing an interrupted swap: the rebuilt collections go live with their checkpoints");
        for collection in self.all() {
            if self
                .collection_exists(&db, &shadow_collection(collection))
                .await?
            {
                self.rename_in(collection).await?;
            }
        }
        self.move_checkpoints(&db).await?;
        Ok(())
    }

    async fn shadow_exists(&self) -> Result<bool, SinkError> {
        let db = self.db().await?;
        for collection in self.all() {
            if self
                .collection_exists(&db, &shadow_collection(collection))
                .await?
            {
                return Ok(true);
            }
        }
        let n = db
            .collection::<Document>(COLLECTION)
            .count_documents(
                doc! { "_id.pipeline": &self.pipeline, "_id.target": self.name(Target::Shadow) },
            )
            .await
            .map_err(|e| classify(&e))?;
        Ok(n > 0)
    }

    async fn drop_shadow(&self) -> Result<(), SinkError> {
        let db = self.db().await?;
        for collection in self.all() {
            db.collection::<Document>(&shadow_collection(collection))
                .drop()
                .await
                .map_err(|e| classify(&e))?;
        }
        self.set_offsets(&db, Target::Shadow, &[]).await?;
        self.delete_ticket(&db).await
    }

    async fn set_shadow_ticket(&self, ticket: &str) -> Result<(), SinkError> {
        let db = self.db().await?;
        db.collection::<Document>(COLLECTION)
            .replace_one(self.ticket(), {
                let mut d = self.ticket();
                d.insert("ticket", ticket);
                d.insert("updated_at", mongodb::bson::DateTime::now());
                d
            })
            .upsert(true)
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn shadow_ticket(&self) -> Result<Option<String>, SinkError> {
        let db = self.db().await?;
        // The shadow collection is made when the rebuild begins; gone (dropped by hand), it
        // took documents its checkpoints still count: not resumable.
        if !self
            .collection_exists(&db, &shadow_collection(&self.collections[0]))
            .await?
        {
            return Ok(None);
        }
        let found = db
            .collection::<Document>(COLLECTION)
            .find_one(self.ticket())
            .await
            .map_err(|e| classify(&e))?;
        Ok(found.and_then(|d| d.get_str("ticket").ok().map(str::to_owned)))
    }

    async fn swap_in_shadow(&self) -> Result<(), SinkError> {
        self.recover().await?;
        let db = self.db().await?;
        for collection in self.all() {
            let shadow = shadow_collection(collection);
            if !self.collection_exists(&db, &shadow).await? {
                // Nothing in the log produced a document: the rebuilt collection is empty.
                db.create_collection(&shadow)
                    .await
                    .map_err(|e| classify(&e))?;
            }
            if self.collection_exists(&db, collection).await? {
                self.copy_indexes(&db, collection).await?;
            }
        }
        db.collection::<Document>(COLLECTION)
            .insert_one(self.marker())
            .await
            .map_err(|e| classify(&e))?;
        for collection in self.all() {
            self.rename_in(collection).await?;
        }
        sinkd_core::crash::point("mongodb-swap-renamed");
        self.move_checkpoints(&db).await
    }

    async fn reset(&self, target: Target, to: Reset<'_>) -> Result<(), SinkError> {
        let Reset { truncate, offsets } = to;
        let db = self.db().await?;
        // Offsets first: if a crash comes between the two, the documents' position guards
        // make the replay from the new offsets change nothing that is already there.
        self.set_offsets(&db, target, offsets).await?;
        for collection in self.all() {
            if truncate {
                db.collection::<Document>(&Self::name_of(collection, target))
                    .delete_many(doc! {})
                    .await
                    .map_err(|e| classify(&e))?;
            }
            if target == Target::Shadow {
                self.create_shadow_like_live(&db, collection).await?;
            }
        }
        Ok(())
    }
}
