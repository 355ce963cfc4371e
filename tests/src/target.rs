//! Where a test pipeline writes: the same scenarios run against every sink through this.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use crate::shop::{Expected, OrderRow};
use crate::stack;

/// The database the MongoDB tests write to.
pub const MONGO_DATABASE: &str = "sinkd_test";

/// The shop's index fields.
pub const TANTIVY_FIELDS: &str = "      - { name: order_id, type: string }
      - { name: customer, type: text }
      - { name: status, type: string, fast: true }
      - { name: note, type: text, tokenizer: en_stem }
      - { name: address, type: text }
      - { name: item_count, type: i64, fast: true }
      - { name: total_cents, type: i64, fast: true }
      - { name: placed_at, type: date, fast: true }
";

/// A sink under test.
#[derive(Clone, Debug)]
pub enum Target {
    /// A PostgreSQL server at this URL (the local stack's: [`Target::postgres`]).
    Postgres(String),
    /// A MongoDB server at this URL.
    Mongo(String),
    /// Tantivy indexes under this folder (one directory per pipeline).
    Tantivy(std::path::PathBuf),
}

impl Target {
    /// The local stack's PostgreSQL.
    pub fn postgres() -> Target {
        Target::Postgres(stack::postgres_url())
    }

    /// The local stack's MongoDB replica set.
    pub fn mongo() -> Target {
        Target::Mongo(stack::mongo_url())
    }

    /// The `sink:` section of a pipeline writing to table or collection `name`.
    pub fn sink_yaml(&self, name: &str) -> String {
        match self {
            // The stack's server may have another address where sinkd runs (a container).
            Target::Postgres(url) if *url == stack::postgres_url() => format!(
                "sink:\n  postgres:\n    url: ${{POSTGRES_URL:-{url}}}\n    table: {name}\n"
            ),
            Target::Postgres(url) => {
                format!("sink:\n  postgres:\n    url: \"{url}\"\n    table: {name}\n")
            }
            Target::Mongo(url) => format!(
                "sink:\n  mongodb:\n    url: \"{url}\"\n    database: {MONGO_DATABASE}\n    collection: {name}\n"
            ),
            Target::Tantivy(base) => format!(
                "sink:\n  tantivy:\n    path: {}\n    key: order_id\n    fields:\n{}",
                base.join(name).display(),
                TANTIVY_FIELDS
            ),
        }
    }

    /// The test database of a MongoDB server.
    pub async fn mongo_db(url: &str) -> mongodb::Database {
        mongodb::Client::with_uri_str(url)
            .await
            .expect("MongoDB URL")
            .database(MONGO_DATABASE)
    }

    /// The orders read model as the sink holds it.
    pub async fn read_orders(&self, name: &str) -> Expected {
        match self {
            Target::Tantivy(base) => read_index(&live_index(&base.join(name))),
            Target::Postgres(url) => stack::read_orders(&stack::pg_at(url).await, name).await,
            Target::Mongo(url) => {
                let db = Self::mongo_db(url).await;
                let docs = stack::all_documents(&db.collection(name)).await;
                let text = |d: &Document, k: &str| d.get_str(k).ok().map(str::to_owned);
                let int = |d: &Document, k: &str| match d.get(k) {
                    Some(Bson::Int32(i)) => Some(*i as i64),
                    Some(Bson::Int64(i)) => Some(*i),
                    _ => None,
                };
                docs.iter()
                    .map(|d| {
                        (
                            d.get_str("_id").expect("string _id").to_owned(),
                            OrderRow {
                                customer: text(d, "customer"),
                                status: text(d, "status"),
                                note: text(d, "note"),
                                address: text(d, "address"),
                                item_count: int(d, "item_count"),
                                total_cents: int(d, "total_cents"),
                            },
                        )
                    })
                    .collect()
            }
        }
    }

    /// The pipeline's checkpoint: partition → next offset (its table or index named like
    /// the pipeline).
    pub async fn checkpoints(&self, pipeline: &str) -> HashMap<i32, i64> {
        self.checkpoints_in(pipeline, pipeline).await
    }

    /// The checkpoint of `pipeline` stored with table, collection or index `table` (only
    /// an index keeps its checkpoint inside the target itself).
    pub async fn checkpoints_in(&self, table: &str, pipeline: &str) -> HashMap<i32, i64> {
        match self {
            Target::Tantivy(base) => {
                let dir = live_index(&base.join(table));
                if !dir.join("meta.json").exists() {
                    return HashMap::new();
                }
                let Ok(index) = tantivy::Index::open_in_dir(&dir) else {
                    return HashMap::new();
                };
                sinkd_tantivy::checkpoint::read(&index, pipeline)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|((_, p), n)| (p, n))
                    .collect()
            }
            Target::Postgres(url) => stack::checkpoints(&stack::pg_at(url).await, pipeline).await,
            Target::Mongo(url) => {
                let Ok(cursor) = Self::mongo_db(url)
                    .await
                    .collection::<Document>("sinkd_offsets")
                    .find(doc! { "_id.pipeline": pipeline })
                    .await
                else {
                    return HashMap::new();
                };
                let docs: Vec<Document> = cursor.try_collect().await.unwrap_or_default();
                docs.iter()
                    .filter_map(|d| {
                        let p = d.get_document("_id").ok()?.get_i32("partition").ok()?;
                        Some((p, d.get_i64("next").ok()?))
                    })
                    .collect()
            }
        }
    }

    /// Waits until the pipeline's checkpoint reaches `ends` on every partition.
    pub async fn wait_caught_up(
        &self,
        pipeline: &str,
        ends: &HashMap<i32, i64>,
        timeout: Duration,
    ) -> Result<(), String> {
        self.wait_caught_up_in(pipeline, pipeline, ends, timeout)
            .await
    }

    /// [`Target::wait_caught_up`] for a pipeline writing to target `table`.
    pub async fn wait_caught_up_in(
        &self,
        table: &str,
        pipeline: &str,
        ends: &HashMap<i32, i64>,
        timeout: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let stored = self.checkpoints_in(table, pipeline).await;
            if ends.iter().all(|(p, end)| stored.get(p) == Some(end)) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "not caught up after {timeout:?}: stored {stored:?}, want {ends:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many orders table, collection or index `name` holds now (0 if it is missing).
    pub async fn count(&self, name: &str) -> u64 {
        self.try_count(name).await.unwrap_or(0)
    }

    /// [`Target::count`], with a failed read as the reader saw it rather than as 0.
    pub async fn try_count(&self, name: &str) -> Result<u64, String> {
        match self {
            Target::Tantivy(base) => {
                let dir = live_index(&base.join(name));
                let Ok(index) = tantivy::Index::open_in_dir(&dir) else {
                    return Ok(0);
                };
                index
                    .reader()
                    .map(|r| r.searcher().num_docs())
                    .map_err(|e| e.to_string())
            }
            Target::Postgres(url) => stack::pg_at(url)
                .await
                .query_one(&format!("SELECT count(*) FROM \"{name}\""), &[])
                .await
                .map(|r| r.get::<_, i64>(0) as u64)
                .map_err(|e| format!("{e:?}")),
            Target::Mongo(url) => Self::mongo_db(url)
                .await
                .collection::<Document>(name)
                .count_documents(doc! {})
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether a rebuild's shadow of `name` is still there.
    pub async fn shadow_exists(&self, name: &str) -> bool {
        match self {
            Target::Tantivy(base) => sinkd_tantivy::layout::shadow_dir(&base.join(name))
                .expect("index layout")
                .exists(),
            Target::Postgres(url) => stack::pg_at(url)
                .await
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("public.\"{name}__sinkd_shadow\"")],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false),
            Target::Mongo(url) => Self::mongo_db(url)
                .await
                .list_collection_names()
                .filter(doc! { "name": format!("{name}__sinkd_shadow") })
                .await
                .map(|n| !n.is_empty())
                .unwrap_or(false),
        }
    }

    /// The `counter` field/column of key `key` in `name` (for the conformance scenarios).
    pub async fn counter(&self, name: &str, key: &str) -> Option<i64> {
        match self {
            Target::Tantivy(base) => {
                use tantivy::collector::TopDocs;
                use tantivy::query::TermQuery;
                use tantivy::schema::{IndexRecordOption, Value};
                let index = tantivy::Index::open_in_dir(live_index(&base.join(name))).ok()?;
                let schema = index.schema();
                let (id, counter) = (
                    schema.get_field("id").ok()?,
                    schema.get_field("counter").ok()?,
                );
                let searcher = index.reader().ok()?.searcher();
                let query = TermQuery::new(
                    tantivy::Term::from_field_text(id, key),
                    IndexRecordOption::Basic,
                );
                let top = searcher
                    .search(&query, &TopDocs::with_limit(1).order_by_score())
                    .ok()?;
                let doc: tantivy::TantivyDocument = searcher.doc(top.first()?.1).ok()?;
                doc.get_first(counter).and_then(|v| v.as_i64())
            }
            Target::Postgres(url) => stack::pg_at(url)
                .await
                .query_opt(
                    &format!("SELECT counter FROM \"{name}\" WHERE id = $1"),
                    &[&key],
                )
                .await
                .ok()
                .flatten()
                .and_then(|r| r.get::<_, Option<i64>>(0)),
            Target::Mongo(url) => {
                let d = Self::mongo_db(url)
                    .await
                    .collection::<Document>(name)
                    .find_one(doc! { "_id": key })
                    .await
                    .ok()??;
                match d.get("counter") {
                    Some(Bson::Int64(i)) => Some(*i),
                    Some(Bson::Int32(i)) => Some(*i as i64),
                    _ => None,
                }
            }
        }
    }
}

/// The folder of an index's live generation (a rebuild moves it).
pub fn live_index(root: &std::path::Path) -> std::path::PathBuf {
    sinkd_tantivy::layout::live_dir(root).expect("index layout")
}

/// Every document of a shop index, opened read-only as an application in the same pod
/// would.
fn read_index(dir: &std::path::Path) -> Expected {
    use tantivy::collector::DocSetCollector;
    use tantivy::query::AllQuery;
    use tantivy::schema::Value;
    let index = tantivy::Index::open_in_dir(dir).expect("index");
    let schema = index.schema();
    let reader = index.reader().expect("reader");
    let searcher = reader.searcher();
    let field = |n: &str| schema.get_field(n).expect("field");
    let mut out = Expected::new();
    for address in searcher
        .search(&AllQuery, &DocSetCollector)
        .expect("all docs")
    {
        let doc: tantivy::TantivyDocument = searcher.doc(address).expect("doc");
        let text = |n: &str| {
            doc.get_first(field(n))
                .and_then(|v| v.as_str().map(str::to_owned))
        };
        let int = |n: &str| doc.get_first(field(n)).and_then(|v| v.as_i64());
        let key = text("order_id").expect("key");
        let row = OrderRow {
            customer: text("customer"),
            status: text("status"),
            note: text("note"),
            address: text("address"),
            item_count: int("item_count"),
            total_cents: int("total_cents"),
        };
        assert!(
            out.insert(key.clone(), row).is_none(),
            "two documents for key {key}"
        );
    }
    out
}
