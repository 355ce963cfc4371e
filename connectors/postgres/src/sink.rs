//! [`PostgresSink`]: one transaction per batch holding the DDL it needs, the set-based
//! writes into every target table (the configured one and the pipeline's `targets`, in
//! the same schema) and the checkpoint's compare-and-set.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sinkd_core::batch::Entry;
use sinkd_core::config::redact_url;

use crate::config::PostgresSinkConfig;
use sinkd_core::error::SinkError;
use sinkd_core::sink::{CheckpointAdvance, CheckpointReader, Sink, Target};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement as Prepared};
use tracing::info;

use crate::checkpoint::{self, PgCheckpointReader, connect};
use crate::classify;
use crate::statements::for_batch;
use crate::table::Table;

/// A PostgreSQL table (and its child tables) as a read model.
pub struct PostgresSink {
    cfg: PostgresSinkConfig,
    pipeline: String,
    /// Table name and key per target, in [`sinkd_core::operation::Op::target`] order: the
    /// configured table first (shadow names when writing a rebuild's shadow).
    targets: Vec<(String, Vec<String>)>,
    client: Option<Client>,
    /// The tables as the catalog has them, per target; empty until opened.
    tables: Vec<Table>,
    prepared: HashMap<String, Prepared>,
    reader: Arc<PgCheckpointReader>,
}

impl PostgresSink {
    /// A sink for one pipeline writing `target`: the `tables` (name and key, in the order
    /// of operations' targets; see `PipelineFile::sink_targets`), or their rebuild
    /// shadows. The configured table name (a template when routed) names the checkpoints.
    /// Connects on [`Sink::open`].
    pub fn new(
        cfg: &PostgresSinkConfig,
        pipeline: &str,
        tables: &[(String, Vec<String>)],
        target: Target,
    ) -> PostgresSink {
        let mut cfg = cfg.clone();
        cfg.table = target.name(&cfg.table);
        let targets = tables
            .iter()
            .map(|(n, k)| (target.name(n), k.clone()))
            .collect();
        PostgresSink {
            reader: PgCheckpointReader::new(&cfg.url, pipeline, &target_name(&cfg)),
            cfg,
            pipeline: pipeline.to_owned(),
            targets,
            client: None,
            tables: Vec::new(),
            prepared: HashMap::new(),
        }
    }

    /// Forgets the connection and the cached table view after a failure; both are rebuilt
    /// on the next write.
    fn reset(&mut self) {
        self.client = None;
        self.tables.clear();
        self.prepared.clear();
    }

    async fn ensure_open(&mut self) -> Result<(), SinkError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) && !self.tables.is_empty() {
            return Ok(());
        }
        self.reset();
        let client = connect(&self.cfg.url).await?;
        client
            .batch_execute(checkpoint::CREATE)
            .await
            .map_err(|e| classify(&e))?;
        let mut tables = Vec::with_capacity(self.targets.len());
        for (name, key) in &self.targets {
            let table = Table::load(&client, &self.cfg.schema, name, key).await?;
            if table.exists
                && let Some(k) = key.iter().find(|k| !table.columns.contains_key(*k))
            {
                return Err(SinkError::Incompatible(format!(
                    "table {} exists without the key column `{k}`",
                    table.qualified()
                )));
            }
            tables.push(table);
        }
        self.client = Some(client);
        self.tables = tables;
        Ok(())
    }

    async fn write_once(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError> {
        self.ensure_open().await?;
        // Each table's entries, sorted out in one pass (routing can make a hundred tables).
        let mut by_table: Vec<Vec<&Entry>> = vec![Vec::new(); self.tables.len()];
        for e in entries {
            let Some(mine) = by_table.get_mut(e.target) else {
                return Err(SinkError::Config(format!(
                    "an operation for target {} of a sink with {} targets",
                    e.target,
                    self.tables.len()
                )));
            };
            mine.push(e);
        }
        let mut ddl = Vec::new();
        let mut statements = Vec::new();
        let mut next_tables = Vec::with_capacity(self.tables.len());
        for (table, mine) in self.tables.iter().zip(&by_table) {
            let (table_ddl, next) = table.plan(mine)?;
            statements.extend(for_batch(&next, mine)?);
            ddl.extend(table_ddl);
            next_tables.push(next);
        }
        let client = self.client.as_mut().expect("opened");
        let tx = checkpoint::begin(client).await?;
        if !ddl.is_empty() {
            // Parallel writers (and other instances) may evolve the same tables at once;
            // concurrent `CREATE TABLE IF NOT EXISTS` can still fail on the catalog's
            // unique index. One evolution at a time per schema: the next one's `IF NOT
            // EXISTS` then sees what the first committed.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('sinkd: evolve ' || $1::text))",
                &[&self.cfg.schema],
            )
            .await
            .map_err(|e| classify(&e))?;
        }
        for sql in &ddl {
            info!(pipeline = %self.pipeline, sql, "evolving the tables");
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
        self.tables = next_tables;
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
