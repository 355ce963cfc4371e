//! Whole-table operations for the control plane.
//!
//! A pipeline with `targets` has several tables (its child tables beside the configured
//! one): each has its shadow, and every operation below acts on all of them at once, in
//! one transaction, so readers never see one table rebuilt and another old.
//!
//! The shadow of `schema.table` is `schema.table__sinkd_shadow`, with its own checkpoint
//! rows (target `schema.table__sinkd_shadow`). Before the swap, while the live table still
//! serves, the live table's secondary indexes are built on the shadow (`indexes.rs`). The
//! swap is one transaction: the live table is dropped, the shadow renamed into its place
//! together with its primary key and index copies, the live table's grants re-created on
//! it, and the shadow's checkpoint rows become the live ones. Readers wait on the table lock for that moment and then see the
//! new table: never an empty or half-built one. A crash anywhere leaves either the old
//! state or the new one, so there is nothing to recover.

use crate::config::PostgresSinkConfig;
use async_trait::async_trait;
use sinkd_core::error::SinkError;
use sinkd_core::event::TopicPartition;
use sinkd_core::sink::{Reset, Target, TargetAdmin};
use tokio_postgres::{Client, GenericClient, Transaction};
use tracing::info;

use crate::checkpoint::{self, connect};
use crate::{classify, ident, indexes};

/// Holds each shadow's rebuild ticket ([`TargetAdmin::set_shadow_ticket`]).
const TICKETS: &str = "CREATE TABLE IF NOT EXISTS sinkd_rebuilds (
    pipeline text NOT NULL,
    target text NOT NULL,
    ticket text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, target)
)";

/// The name of a table's shadow.
pub fn shadow_table(table: &str) -> String {
    Target::Shadow.name(table)
}

/// [`TargetAdmin`] for a PostgreSQL table and its child tables.
pub struct PgAdmin {
    url: String,
    schema: String,
    /// The configured table name (a template when routed): the checkpoints' name.
    checkpoint_table: String,
    /// Every table the pipeline writes.
    tables: Vec<String>,
    pipeline: String,
}

impl PgAdmin {
    /// The admin of the pipeline's `tables` (the live ones, whatever target the sink
    /// writes; `cfg.table` when empty).
    pub fn new(cfg: &PostgresSinkConfig, pipeline: &str, tables: &[String]) -> PgAdmin {
        PgAdmin {
            url: cfg.url.clone(),
            schema: cfg.schema.clone(),
            checkpoint_table: cfg.table.clone(),
            tables: if tables.is_empty() {
                vec![cfg.table.clone()]
            } else {
                tables.to_vec()
            },
            pipeline: pipeline.to_owned(),
        }
    }

    /// The first table: its shadow exists once a rebuild has written.
    fn main(&self) -> &str {
        &self.tables[0]
    }

    fn table_of(table: &str, target: Target) -> String {
        target.name(table)
    }

    fn qualified(&self, table: &str, target: Target) -> String {
        format!(
            "{}.{}",
            ident(&self.schema),
            ident(&Self::table_of(table, target))
        )
    }

    async fn client(&self) -> Result<Client, SinkError> {
        let client = connect(&self.url).await?;
        client
            .batch_execute(checkpoint::CREATE)
            .await
            .map_err(|e| classify(&e))?;
        client
            .batch_execute(TICKETS)
            .await
            .map_err(|e| classify(&e))?;
        Ok(client)
    }

    async fn exists(
        &self,
        client: &impl GenericClient,
        table: &str,
        target: Target,
    ) -> Result<bool, SinkError> {
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&self.qualified(table, target)],
            )
            .await
            .map_err(|e| classify(&e))?;
        Ok(row.get(0))
    }

    /// The DDL, run after the shadow has taken the live table's name, that gives it the
    /// old table's secondary indexes and grants (users add both for their queries; sinkd
    /// creates neither). Indexes whose copy [`TargetAdmin::prepare_swap`] built are only
    /// renamed; copies whose live index is gone meanwhile are dropped.
    async fn carried_over(
        &self,
        tx: &Transaction<'_>,
        table: &str,
    ) -> Result<Vec<String>, SinkError> {
        let live = self.qualified(table, Target::Live);
        let mut copies = indexes::copies_on(tx, &self.qualified(table, Target::Shadow)).await?;
        let mut ddl = Vec::new();
        for index in indexes::secondary(tx, &live).await? {
            let copy = index.copy_name();
            if copies.remove(&copy) {
                ddl.push(format!(
                    "ALTER INDEX {}.{} RENAME TO {}",
                    ident(&self.schema),
                    ident(&copy),
                    ident(&index.name)
                ));
            } else {
                ddl.push(index.def);
            }
        }
        for stale in copies {
            ddl.push(format!(
                "DROP INDEX {}.{}",
                ident(&self.schema),
                ident(&stale)
            ));
        }
        let grants = tx
            .query(
                "SELECT grantee::text, privilege_type::text FROM information_schema.role_table_grants \
                 WHERE table_schema = $1 AND table_name = $2 AND grantee <> current_user",
                &[&self.schema, &table],
            )
            .await
            .map_err(|e| classify(&e))?;
        for g in grants {
            let grantee: String = g.get(0);
            let privilege: String = g.get(1);
            let to = if grantee == "PUBLIC" {
                grantee
            } else {
                ident(&grantee)
            };
            ddl.push(format!("GRANT {privilege} ON {live} TO {to}"));
        }
        Ok(ddl)
    }

    /// Inside the swap's transaction: the shadow of `table` takes its place.
    async fn swap_table(&self, tx: &Transaction<'_>, table: &str) -> Result<(), SinkError> {
        let live = self.qualified(table, Target::Live);
        let shadow = self.qualified(table, Target::Shadow);
        let live_exists = self.exists(tx, table, Target::Live).await?;
        if !self.exists(tx, table, Target::Shadow).await? {
            // Nothing in the log produced a row: the rebuilt table is empty.
            if live_exists {
                tx.batch_execute(&format!("TRUNCATE {live}"))
                    .await
                    .map_err(|e| classify(&e))?;
            }
            return Ok(());
        }
        let carried = if live_exists {
            self.carried_over(tx, table).await?
        } else {
            Vec::new()
        };
        let pkey: Option<String> = tx
            .query_opt(
                "SELECT conname::text FROM pg_constraint \
                 WHERE conrelid = $1::text::regclass AND contype = 'p'",
                &[&shadow],
            )
            .await
            .map_err(|e| classify(&e))?
            .map(|r| r.get(0));
        let mut ddl = vec![
            format!("DROP TABLE IF EXISTS {live}"),
            format!("ALTER TABLE {shadow} RENAME TO {}", ident(table)),
        ];
        if let Some(pkey) = pkey {
            // The name PostgreSQL gives a table's key, so the next shadow's is free.
            let name: String = format!("{table}_pkey").chars().take(63).collect();
            ddl.push(format!(
                "ALTER TABLE {live} RENAME CONSTRAINT {} TO {}",
                ident(&pkey),
                ident(&name)
            ));
        }
        ddl.extend(carried);
        for sql in &ddl {
            info!(pipeline = %self.pipeline, sql, "swapping in the rebuilt table");
            tx.batch_execute(sql).await.map_err(|e| classify(&e))?;
        }
        Ok(())
    }

    async fn delete_ticket(&self, tx: &Transaction<'_>) -> Result<(), SinkError> {
        tx.execute(
            "DELETE FROM sinkd_rebuilds WHERE pipeline = $1 AND target = $2",
            &[&self.pipeline, &self.describe(Target::Shadow)],
        )
        .await
        .map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn set_offsets(
        &self,
        tx: &Transaction<'_>,
        target: Target,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), SinkError> {
        let name = self.describe(target);
        tx.execute(
            "DELETE FROM sinkd_offsets WHERE pipeline = $1 AND target = $2",
            &[&self.pipeline, &name],
        )
        .await
        .map_err(|e| classify(&e))?;
        for ((topic, partition), next) in offsets {
            tx.execute(
                "INSERT INTO sinkd_offsets (pipeline, target, topic, partition, next_offset) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&self.pipeline, &name, &&**topic, partition, next],
            )
            .await
            .map_err(|e| classify(&e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl TargetAdmin for PgAdmin {
    fn describe(&self, target: Target) -> String {
        format!(
            "{}.{}",
            self.schema,
            Self::table_of(&self.checkpoint_table, target)
        )
    }

    async fn shadow_exists(&self) -> Result<bool, SinkError> {
        let client = self.client().await?;
        for table in &self.tables {
            if self.exists(&client, table, Target::Shadow).await? {
                return Ok(true);
            }
        }
        let row = client
            .query_one(
                "SELECT count(*) FROM sinkd_offsets WHERE pipeline = $1 AND target = $2",
                &[&self.pipeline, &self.describe(Target::Shadow)],
            )
            .await
            .map_err(|e| classify(&e))?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    async fn drop_shadow(&self) -> Result<(), SinkError> {
        let mut client = self.client().await?;
        let tx = checkpoint::begin(&mut client).await?;
        for table in &self.tables {
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS {}",
                self.qualified(table, Target::Shadow)
            ))
            .await
            .map_err(|e| classify(&e))?;
        }
        self.set_offsets(&tx, Target::Shadow, &[]).await?;
        self.delete_ticket(&tx).await?;
        tx.commit().await.map_err(|e| classify(&e))
    }

    async fn set_shadow_ticket(&self, ticket: &str) -> Result<(), SinkError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO sinkd_rebuilds (pipeline, target, ticket) VALUES ($1, $2, $3) \
                 ON CONFLICT (pipeline, target) DO UPDATE SET ticket = $3, updated_at = now()",
                &[&self.pipeline, &self.describe(Target::Shadow), &ticket],
            )
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn shadow_ticket(&self) -> Result<Option<String>, SinkError> {
        let client = self.client().await?;
        // A shadow table dropped by hand took rows its checkpoints still count: not
        // resumable. (Before its first write it has none, and a restart merely begins anew.)
        if !self.exists(&client, self.main(), Target::Shadow).await? {
            return Ok(None);
        }
        let row = client
            .query_opt(
                "SELECT ticket FROM sinkd_rebuilds WHERE pipeline = $1 AND target = $2",
                &[&self.pipeline, &self.describe(Target::Shadow)],
            )
            .await
            .map_err(|e| classify(&e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn prepare_swap(&self) -> Result<(), SinkError> {
        let client = self.client().await?;
        for table in &self.tables {
            if !(self.exists(&client, table, Target::Live).await?
                && self.exists(&client, table, Target::Shadow).await?)
            {
                continue;
            }
            let shadow = self.qualified(table, Target::Shadow);
            for index in indexes::secondary(&client, &self.qualified(table, Target::Live)).await? {
                if let Some(sql) = index.build_copy_on(&shadow) {
                    info!(pipeline = %self.pipeline, index = %index.name, "building the live table's index on the rebuilt table");
                    client.batch_execute(&sql).await.map_err(|e| classify(&e))?;
                }
            }
        }
        Ok(())
    }

    async fn swap_in_shadow(&self) -> Result<(), SinkError> {
        let mut client = self.client().await?;
        let tx = checkpoint::begin(&mut client).await?;
        for table in &self.tables {
            self.swap_table(&tx, table).await?;
        }
        let shadow_target = self.describe(Target::Shadow);
        let live_target = self.describe(Target::Live);
        tx.execute(
            "DELETE FROM sinkd_offsets WHERE pipeline = $1 AND target = $2",
            &[&self.pipeline, &live_target],
        )
        .await
        .map_err(|e| classify(&e))?;
        tx.execute(
            "UPDATE sinkd_offsets SET target = $3, updated_at = now() \
             WHERE pipeline = $1 AND target = $2",
            &[&self.pipeline, &shadow_target, &live_target],
        )
        .await
        .map_err(|e| classify(&e))?;
        self.delete_ticket(&tx).await?;
        sinkd_core::crash::point("postgres-swap-before-commit");
        tx.commit().await.map_err(|e| classify(&e))
    }

    async fn reset(&self, target: Target, to: Reset<'_>) -> Result<(), SinkError> {
        let Reset { truncate, offsets } = to;
        let mut client = self.client().await?;
        let tx = checkpoint::begin(&mut client).await?;
        for table in &self.tables {
            if truncate && self.exists(&tx, table, target).await? {
                tx.batch_execute(&format!("TRUNCATE {}", self.qualified(table, target)))
                    .await
                    .map_err(|e| classify(&e))?;
            }
        }
        self.set_offsets(&tx, target, offsets).await?;
        tx.commit().await.map_err(|e| classify(&e))
    }
}
