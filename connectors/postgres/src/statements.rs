//! Set-based statements for a compacted batch: one `DELETE … USING UNNEST`, one
//! `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE` per group of rows with the same
//! columns. Never a statement per event.
//!
//! Row guards: a row keeps the position of the last event applied to it; an update whose
//! event is not newer (same topic and partition, offset not greater) is skipped, so a
//! replay after an offset reset does not double increments or restore stale values.

use std::collections::BTreeMap;

use apache_avro::types::Value;
use sinkd_core::batch::{Compacted, Entry};
use sinkd_core::error::SinkError;
use sinkd_core::operation::Cell;
use sinkd_core::schema::ColumnType;

use crate::ident;
use crate::table::{GUARD_OFFSET, GUARD_PARTITION, GUARD_TOPIC, Table};
use crate::types::{Column, PgType};

/// A statement and its array parameters.
pub struct Statement {
    /// SQL text (stable per shape, so it can be prepared once and cached).
    pub sql: String,
    /// One array per `UNNEST` column.
    pub params: Vec<Column>,
}

/// The condition under which the stored row is older than the incoming one.
fn newer(existing: &str, incoming: &str) -> String {
    format!(
        "NOT COALESCE({e}.{t} = {i}.{t} AND {e}.{p} = {i}.{p} AND {e}.{o} >= {i}.{o}, false)",
        e = existing,
        i = incoming,
        t = ident(GUARD_TOPIC),
        p = ident(GUARD_PARTITION),
        o = ident(GUARD_OFFSET),
    )
}

fn column_type(table: &Table, name: &str) -> PgType {
    table.columns.get(name).cloned().unwrap_or(PgType::Text)
}

/// Builds the arrays of key + listed columns + guard columns for a group of entries.
fn arrays(
    table: &Table,
    entries: &[&Entry],
    columns: &[&str],
    cells_of: impl Fn(&Entry) -> Vec<&Cell>,
) -> Result<Vec<Column>, SinkError> {
    let n = entries.len();
    let mut arrays: Vec<Column> = table
        .key
        .iter()
        .map(String::as_str)
        .chain(columns.iter().copied())
        .map(|c| Column::new(&column_type(table, c), n))
        .collect();
    let mut topics = Column::new(&PgType::Text, n);
    let mut partitions = Column::new(&PgType::Int4, n);
    let mut offsets = Column::new(&PgType::Int8, n);
    for e in entries {
        let cells = cells_of(e);
        for (i, k) in table.key.iter().enumerate() {
            let cell = e.key.iter().find(|c| &*c.column == k);
            push(&mut arrays[i], cell.map(|c| (&c.value, c.ty)), k)?;
        }
        for (j, col) in columns.iter().enumerate() {
            let cell = cells.iter().find(|c| &*c.column == *col);
            push(
                &mut arrays[table.key.len() + j],
                cell.map(|c| (&c.value, c.ty)),
                col,
            )?;
        }
        push(
            &mut topics,
            Some((
                &Value::String(e.position.topic.to_string()),
                ColumnType::String,
            )),
            GUARD_TOPIC,
        )?;
        push(
            &mut partitions,
            Some((&Value::Int(e.position.partition), ColumnType::Int)),
            GUARD_PARTITION,
        )?;
        push(
            &mut offsets,
            Some((&Value::Long(e.position.offset), ColumnType::Long)),
            GUARD_OFFSET,
        )?;
    }
    arrays.extend([topics, partitions, offsets]);
    Ok(arrays)
}

fn push(
    array: &mut Column,
    cell: Option<(&Value, ColumnType)>,
    column: &str,
) -> Result<(), SinkError> {
    let (value, ty) = match cell {
        Some((v, ty)) => (Some(v), ty),
        None => (None, ColumnType::Json),
    };
    array.push(value, ty).map_err(|e| SinkError::Rejected {
        detail: format!("column `{column}`: {e}"),
    })
}

fn unnest(table: &Table, columns: &[&str], alias: &str) -> (String, Vec<String>) {
    // Key, then the columns, then the row guards: the order of the parameters.
    let all: Vec<&str> = (table.key.iter().map(String::as_str))
        .chain(columns.iter().copied())
        .chain([GUARD_TOPIC, GUARD_PARTITION, GUARD_OFFSET])
        .collect();
    let names: Vec<String> = all.iter().copied().map(ident).collect();
    let params: Vec<String> = (all.iter().copied())
        .enumerate()
        .map(|(i, c)| format!("${}{}", i + 1, column_type(table, c).param_cast()))
        .collect();
    (
        format!(
            "UNNEST({}) AS {alias}({})",
            params.join(", "),
            names.join(", ")
        ),
        names,
    )
}

/// All statements for a batch of one table: deletes by key prefix first (what later
/// events write under the prefix must survive them), then deletes (one op per key, so
/// the order between the other kinds does not matter).
pub fn for_batch(table: &Table, entries: &[&Entry]) -> Result<Vec<Statement>, SinkError> {
    let mut statements = Vec::new();
    let mut prefixes: BTreeMap<usize, Vec<&Entry>> = BTreeMap::new();
    for e in entries
        .iter()
        .copied()
        .filter(|e| e.op == Compacted::DeletePrefix)
    {
        prefixes.entry(e.key.len()).or_default().push(e);
    }
    if table.exists {
        for (len, group) in prefixes {
            // The same statement on a view of the table keyed by the prefix columns.
            let mut prefix = table.clone();
            prefix.key.truncate(len);
            statements.push(delete(&prefix, &group)?);
        }
    }
    let deletes: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| matches!(e.op, Compacted::Delete))
        .collect();
    if !deletes.is_empty() && table.exists {
        statements.push(delete(table, &deletes)?);
    }
    // Group replaces by their column set and patches by (set, inc) columns.
    let mut replaces: BTreeMap<Vec<&str>, Vec<&Entry>> = BTreeMap::new();
    let mut patches: BTreeMap<(Vec<&str>, Vec<&str>), Vec<&Entry>> = BTreeMap::new();
    for &e in entries {
        match &e.op {
            Compacted::Delete | Compacted::DeletePrefix => {}
            Compacted::Replace(cells) => replaces.entry(names(cells, table)).or_default().push(e),
            Compacted::Patch { set, inc } => patches
                .entry((names(set, table), names(inc, table)))
                .or_default()
                .push(e),
        }
    }
    for (columns, group) in replaces {
        statements.push(replace(table, &columns, &group)?);
    }
    for ((set, inc), group) in patches {
        statements.push(patch(table, &set, &inc, &group)?);
    }
    Ok(statements)
}

fn names<'a>(cells: &'a [Cell], table: &Table) -> Vec<&'a str> {
    let mut v: Vec<&str> = cells
        .iter()
        .map(|c| &*c.column)
        .filter(|c| !table.key.iter().any(|k| k == c))
        .collect();
    v.sort_unstable();
    v
}

fn delete(table: &Table, group: &[&Entry]) -> Result<Statement, SinkError> {
    let (source, _) = unnest(table, &[], "d");
    let key_match: Vec<String> = table
        .key
        .iter()
        .map(|k| format!("t.{k} = d.{k}", k = ident(k)))
        .collect();
    let sql = format!(
        "DELETE FROM {} AS t USING {source} WHERE {} AND {}",
        table.qualified(),
        key_match.join(" AND "),
        newer("t", "d"),
    );
    Ok(Statement {
        sql,
        params: arrays(table, group, &[], |_| Vec::new())?,
    })
}

fn upsert_sql(table: &Table, columns: &[&str], set: &[String]) -> String {
    let (source, names) = unnest(table, columns, "u");
    let key: Vec<String> = table.key.iter().map(|k| ident(k)).collect();
    let mut assignments = set.to_vec();
    for g in [GUARD_TOPIC, GUARD_PARTITION, GUARD_OFFSET] {
        assignments.push(format!("{g} = EXCLUDED.{g}", g = ident(g)));
    }
    format!(
        "INSERT INTO {} AS t ({}) SELECT * FROM {source} ON CONFLICT ({}) DO UPDATE SET {} WHERE {}",
        table.qualified(),
        names.join(", "),
        key.join(", "),
        assignments.join(", "),
        newer("t", "EXCLUDED"),
    )
}

fn replace(table: &Table, columns: &[&str], group: &[&Entry]) -> Result<Statement, SinkError> {
    // A replace sets every value column: those the events carry, and null for the rest.
    let set: Vec<String> = table
        .value_columns()
        .into_iter()
        .map(|c| {
            if columns.contains(&c) {
                format!("{c} = EXCLUDED.{c}", c = ident(c))
            } else {
                format!("{} = NULL", ident(c))
            }
        })
        .collect();
    Ok(Statement {
        sql: upsert_sql(table, columns, &set),
        params: arrays(table, group, columns, |e| match &e.op {
            Compacted::Replace(cells) => cells.iter().collect(),
            _ => Vec::new(),
        })?,
    })
}

fn patch(
    table: &Table,
    set: &[&str],
    inc: &[&str],
    group: &[&Entry],
) -> Result<Statement, SinkError> {
    let mut columns: Vec<&str> = set.to_vec();
    columns.extend_from_slice(inc);
    let mut assignments: Vec<String> = set
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}", c = ident(c)))
        .collect();
    assignments.extend(inc.iter().map(|c| {
        format!(
            "{c} = COALESCE(t.{c}, 0) + COALESCE(EXCLUDED.{c}, 0)",
            c = ident(c)
        )
    }));
    Ok(Statement {
        sql: upsert_sql(table, &columns, &assignments),
        params: arrays(table, group, &columns, |e| match &e.op {
            Compacted::Patch { set, inc } => set.iter().chain(inc).collect(),
            _ => Vec::new(),
        })?,
    })
}
