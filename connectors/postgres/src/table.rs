//! The target table: created when the first batch arrives (its columns come from the
//! events' schemas), widened with new columns as events gain fields, never dropped from.
//! An incompatible change of a column's type stops the pipeline with what to do.

use std::collections::{BTreeMap, HashMap};

use sinkd_core::batch::{Compacted, Entry};
use sinkd_core::error::SinkError;
use sinkd_core::schema::ColumnType;
use tokio_postgres::GenericClient;

use crate::types::PgType;
use crate::{classify, ident};

/// Row-guard columns: the source position of the last event applied to the row.
pub const GUARD_TOPIC: &str = "_sinkd_topic";
/// See [`GUARD_TOPIC`].
pub const GUARD_PARTITION: &str = "_sinkd_partition";
/// See [`GUARD_TOPIC`].
pub const GUARD_OFFSET: &str = "_sinkd_offset";

/// What sinkd knows of the target table.
#[derive(Clone, Debug)]
pub struct Table {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Key columns, in order.
    pub key: Vec<String>,
    /// Whether the table exists.
    pub exists: bool,
    /// Column types by name (key and guard columns included).
    pub columns: HashMap<String, PgType>,
}

impl Table {
    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }

    /// Reads the table's columns from the catalog.
    pub async fn load(
        client: &impl GenericClient,
        schema: &str,
        name: &str,
        key: &[String],
    ) -> Result<Table, SinkError> {
        let rows = client
            .query(
                "SELECT column_name::text, udt_name::text, numeric_precision, numeric_scale \
                 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                &[&schema, &name],
            )
            .await
            .map_err(|e| classify(&e))?;
        let columns: HashMap<String, PgType> = rows
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                let udt: String = r.get(1);
                (name, PgType::from_udt(&udt, r.get(2), r.get(3)))
            })
            .collect();
        Ok(Table {
            schema: schema.to_owned(),
            name: name.to_owned(),
            key: key.to_vec(),
            exists: !columns.is_empty(),
            columns,
        })
    }

    /// The DDL a batch needs (create the table, add columns) and the table as it will be
    /// once that DDL commits. Errors when a column's type changed incompatibly.
    pub fn plan(&self, entries: &[&Entry]) -> Result<(Vec<String>, Table), SinkError> {
        // Every column the batch writes, with the type its events give it (first seen).
        let mut wanted: BTreeMap<&str, ColumnType> = BTreeMap::new();
        for e in entries {
            let cells = match &e.op {
                Compacted::Delete | Compacted::DeletePrefix => continue,
                Compacted::Replace(cells) => cells.iter().chain(&[][..]),
                Compacted::Patch { set, inc } => set.iter().chain(&inc[..]),
            };
            for c in e.key.iter().chain(cells) {
                wanted.entry(&c.column).or_insert(c.ty);
            }
        }
        let mut next = self.clone();
        let mut ddl = Vec::new();
        if !self.exists {
            if wanted.is_empty() {
                // Only deletes so far: nothing to create, nothing to delete from.
                return Ok((ddl, next));
            }
            let mut defs = Vec::new();
            for k in &self.key {
                let ty = wanted.get(k.as_str()).copied().ok_or_else(|| {
                    SinkError::Incompatible(format!("key column `{k}` has no value in the batch"))
                })?;
                let pg = PgType::for_column(ty);
                defs.push(format!("{} {} NOT NULL", ident(k), pg.ddl()));
                next.columns.insert(k.clone(), pg);
            }
            for (name, ty) in &wanted {
                if self.key.iter().any(|k| k == name) {
                    continue;
                }
                let pg = PgType::for_column(*ty);
                defs.push(format!("{} {}", ident(name), pg.ddl()));
                next.columns.insert((*name).to_owned(), pg);
            }
            for (name, pg) in guard_columns() {
                defs.push(format!("{} {}", ident(name), pg.ddl()));
                next.columns.insert(name.to_owned(), pg);
            }
            let key: Vec<String> = self.key.iter().map(|k| ident(k)).collect();
            ddl.push(format!(
                "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
                self.qualified(),
                defs.join(", "),
                key.join(", ")
            ));
            next.exists = true;
            return Ok((ddl, next));
        }
        let mut add = |name: &str, pg: PgType| {
            ddl.push(format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                self.qualified(),
                ident(name),
                pg.ddl()
            ));
            next.columns.insert(name.to_owned(), pg);
        };
        // A table created by someone else is adopted: it gains the row-guard columns.
        for (name, pg) in guard_columns() {
            if !self.columns.contains_key(name) {
                add(name, pg);
            }
        }
        for (name, ty) in wanted {
            match self.columns.get(name) {
                Some(existing) if existing.accepts(ty) => {}
                Some(existing) => {
                    return Err(SinkError::Incompatible(format!(
                        "column `{name}` of table {} is {} but the events now carry it as {ty} \
                         ({}); sinkd never changes a column's type. Migrate the column \
                         (ALTER TABLE … ALTER COLUMN {} TYPE …) or rebuild the pipeline into a \
                         new table, then restart",
                        self.qualified(),
                        existing.ddl(),
                        PgType::for_column(ty).ddl(),
                        ident(name),
                    )));
                }
                None => add(name, PgType::for_column(ty)),
            }
        }
        Ok((ddl, next))
    }

    /// Non-key, non-guard columns, sorted: what a replace sets to null when absent.
    pub fn value_columns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .columns
            .keys()
            .map(String::as_str)
            .filter(|c| !self.key.iter().any(|k| k == c) && !c.starts_with("_sinkd_"))
            .collect();
        v.sort_unstable();
        v
    }
}

fn guard_columns() -> [(&'static str, PgType); 3] {
    [
        (GUARD_TOPIC, PgType::Text),
        (GUARD_PARTITION, PgType::Int4),
        (GUARD_OFFSET, PgType::Int8),
    ]
}
