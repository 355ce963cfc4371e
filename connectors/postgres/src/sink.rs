//! [`PostgresSink`]: one transaction per batch holding the DDL it needs, the set-based
//! writes and the checkpoint's compare-and-set.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sinkd_core::batch::Entry;
use sinkd_core::config::{PostgresSinkConfig, redact_url};
use sinkd_core::error::SinkError;
use sinkd_core::sink::{CheckpointAdvance, CheckpointReader, Sink, Target, TargetAdmin};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement as Prepared};
use tracing::info;

use crate::admin::{PgAdmin, shadow_table};
use crate::checkpoint::{self, PgCheckpointReader, connect};
use crate::classify;
use crate::statements::for_batch;
use crate::table::Table;

/// A PostgreSQL table as a read model.
pub struct PostgresSink {
    cfg: PostgresSinkConfig,
    pipeline: String,
    key: Vec<String>,
    client: Option<Client>,
    table: Option<Table>,
    prepared: HashMap<String, Prepared>,
    reader: Arc<PgCheckpointReader>,
    admin: Arc<PgAdmin>,
}

impl PostgresSink {
    /// A sink for one pipeline writing `target` (the configured table or its rebuild
    /// shadow); connects on [`Sink::open`].
    pub fn new(
        cfg: &PostgresSinkConfig,
        pipeline: &str,
        key: &[String],
        target: Target,
    ) -> PostgresSink {
        let admin = Arc::new(PgAdmin::new(cfg, pipeline));
        let mut cfg = cfg.clone();
        if target == Target::Shadow {
            cfg.table = shadow_table(&cfg.table);
        }
        PostgresSink {
            reader: PgCheckpointReader::new(&cfg.url, pipeline, &target_name(&cfg)),
            admin,
            cfg,
            pipeline: pipeline.to_owned(),
            key: key.to_vec(),
            client: None,
            table: None,
            prepared: HashMap::new(),
        }
    }

    /// Forgets the connection and the cached table view after a failure; both are rebuilt
    /// on the next write.
    fn reset(&mut self) {
        self.client = None;
        self.table = None;
        self.prepared.clear();
    }

    async fn ensure_open(&mut self) -> Result<(), SinkError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) && self.table.is_some() {
            return Ok(());
        }
        self.reset();
        let client = connect(&self.cfg.url).await?;
        client
            .batch_execute(checkpoint::CREATE)
            .await
            .map_err(|e| classify(&e))?;
        let table = Table::load(&client, &self.cfg.schema, &self.cfg.table, &self.key).await?;
        if table.exists {
            for k in &self.key {
                if !table.columns.contains_key(k) {
                    return Err(SinkError::Incompatible(format!(
                        "table {} exists without the key column `{k}`",
                        table.qualified()
                    )));
                }
            }
        }
        self.client = Some(client);
        self.table = Some(table);
        Ok(())
    }

    async fn write_once(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError> {
        self.ensure_open().await?;
        let table = self.table.as_ref().expect("opened");
        let (ddl, next_table) = table.plan(entries)?;
        let statements = for_batch(&next_table, entries)?;
        let client = self.client.as_mut().expect("opened");
        let tx = client.transaction().await.map_err(|e| classify(&e))?;
        for sql in &ddl {
            info!(pipeline = %self.pipeline, sql, "evolving the table");
            tx.batch_execute(sql).await.map_err(|e| classify(&e))?;
        }
        if !ddl.is_empty() {
            // Prepared statements may describe the old shape of the table.
            self.prepared.clear();
        }
        for s in &statements {
            let prepared = match self.prepared.get(&s.sql) {
                Some(p) => p.clone(),
                None => {
                    let p = tx.prepare(&s.sql).await.map_err(|e| classify(&e))?;
                    self.prepared.insert(s.sql.clone(), p.clone());
                    p
                }
            };
            let params: Vec<&(dyn ToSql + Sync)> = s.params.iter().map(|c| c.as_param()).collect();
            tx.execute(&prepared, &params)
                .await
                .map_err(|e| classify(&e))?;
        }
        checkpoint::advance(&tx, &self.pipeline, &target_name(&self.cfg), advances).await?;
        tx.commit().await.map_err(|e| classify(&e))?;
        self.table = Some(next_table);
        Ok(())
    }
}

/// The checkpoint's target: `schema.table`.
fn target_name(cfg: &PostgresSinkConfig) -> String {
    format!("{}.{}", cfg.schema, cfg.table)
}

#[async_trait]
impl Sink for PostgresSink {
    async fn open(&mut self) -> Result<(), SinkError> {
        let result = self.ensure_open().await;
        if result.is_ok() {
            info!(pipeline = %self.pipeline, url = %redact_url(&self.cfg.url),
                  table = %target_name(&self.cfg), "PostgreSQL sink ready");
        }
        result
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
        let result = self.write_once(entries, advances).await;
        if result.is_err() {
            // The transaction rolled back: the table view and prepared statements may be
            // ahead of the catalog, and a broken connection must be replaced.
            self.reset();
        }
        result
    }
}
