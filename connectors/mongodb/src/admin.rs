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
//! [`TargetAdmin::recover`] finishes an interrupted swap before the live pipeline starts:
//! with the marker present, a shadow collection that still exists means step 2 never
//! happened (the marker is removed); a missing one means it did (step 3 is done again).

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Database};
use sinkd_core::config::MongoSinkConfig;
use sinkd_core::error::SinkError;
use sinkd_core::event::TopicPartition;
use sinkd_core::sink::{Target, TargetAdmin};
use tokio::sync::OnceCell;
use tracing::info;

use crate::checkpoint::COLLECTION;
use crate::classify;

/// The name of a collection's shadow.
pub fn shadow_collection(collection: &str) -> String {
    format!("{collection}__sinkd_shadow")
}

/// [`TargetAdmin`] for a MongoDB collection.
pub struct MongoAdmin {
    url: String,
    database: String,
    collection: String,
    pipeline: String,
    client: OnceCell<Client>,
}

impl MongoAdmin {
    /// The admin of `cfg`'s collection.
    pub fn new(cfg: &MongoSinkConfig, pipeline: &str) -> MongoAdmin {
        MongoAdmin {
            url: cfg.url.clone(),
            database: cfg.database.clone(),
            collection: cfg.collection.clone(),
            pipeline: pipeline.to_owned(),
            client: OnceCell::new(),
        }
    }

    fn name(&self, target: Target) -> String {
        match target {
            Target::Live => self.collection.clone(),
            Target::Shadow => shadow_collection(&self.collection),
        }
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
    async fn create_shadow_like_live(&self, db: &Database) -> Result<(), SinkError> {
        let shadow = self.name(Target::Shadow);
        if self.collection_exists(db, &shadow).await? {
            return Ok(());
        }
        let live: Vec<Document> = db
            .run_command(
                doc! { "listCollections": 1, "filter": { "name": self.name(Target::Live) } },
            )
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
        self.copy_indexes(db).await
    }

    /// Gives the shadow the live collection's secondary indexes (users add them for their
    /// queries; sinkd creates none), so the swap keeps them.
    async fn copy_indexes(&self, db: &Database) -> Result<(), SinkError> {
        let live = db.collection::<Document>(&self.name(Target::Live));
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
            db.collection::<Document>(&self.name(Target::Shadow))
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
        if self
            .collection_exists(&db, &self.name(Target::Shadow))
            .await?
        {
            info!(pipeline = %self.pipeline, "an interrupted swap had not renamed the collection yet; the live collection stays");
            offsets_coll
                .delete_one(self.marker())
                .await
                .map_err(|e| classify(&e))?;
        } else {
            info!(pipeline = %self.pipeline, "completing an interrupted swap: the rebuilt collection is live, moving its checkpoints");
            self.move_checkpoints(&db).await?;
        }
        Ok(())
    }

    async fn shadow_exists(&self) -> Result<bool, SinkError> {
        let db = self.db().await?;
        if self
            .collection_exists(&db, &self.name(Target::Shadow))
            .await?
        {
            return Ok(true);
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
        db.collection::<Document>(&self.name(Target::Shadow))
            .drop()
            .await
            .map_err(|e| classify(&e))?;
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
            .collection_exists(&db, &self.name(Target::Shadow))
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
        let shadow = self.name(Target::Shadow);
        if !self.collection_exists(&db, &shadow).await? {
            // Nothing in the log produced a document: the rebuilt read model is empty.
            db.create_collection(&shadow)
                .await
                .map_err(|e| classify(&e))?;
        }
        if self
            .collection_exists(&db, &self.name(Target::Live))
            .await?
        {
            self.copy_indexes(&db).await?;
        }
        db.collection::<Document>(COLLECTION)
            .insert_one(self.marker())
            .await
            .map_err(|e| classify(&e))?;
        let client = self.client.get().expect("connected by db()");
        client
            .database("admin")
            .run_command(doc! {
                "renameCollection": format!("{}.{shadow}", self.database),
                "to": format!("{}.{}", self.database, self.collection),
                "dropTarget": true,
            })
            .await
            .map_err(|e| classify(&e))?;
        sinkd_core::crash::point("mongodb-swap-renamed");
        self.move_checkpoints(&db).await
    }

    async fn reset(
        &self,
        target: Target,
        truncate: bool,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), SinkError> {
        let db = self.db().await?;
        // Offsets first: if a crash comes between the two, the documents' position guards
        // make the replay from the new offsets change nothing that is already there.
        self.set_offsets(&db, target, offsets).await?;
        if truncate {
            db.collection::<Document>(&self.name(target))
                .delete_many(doc! {})
                .await
                .map_err(|e| classify(&e))?;
        }
        if target == Target::Shadow {
            self.create_shadow_like_live(&db).await?;
        }
        Ok(())
    }
}
