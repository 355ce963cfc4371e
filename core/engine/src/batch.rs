//! Per-key compaction of a batch.
//!
//! A batch holds at most one [`Compacted`] operation per key, folded in record order: the
//! last upsert wins, merges overlay, increments sum, a delete clears what came before. This
//! keeps per-key order while letting the sink write each kind set-based, and avoids
//! PostgreSQL's "ON CONFLICT DO UPDATE command cannot affect row a second time".

use std::collections::HashMap;

use apache_avro::types::Value;

use crate::config::OpKind;
use crate::event::SourcePosition;
use crate::operation::{Cell, Op};
use crate::value::add;

/// The folded effect of all operations on one key in a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Compacted {
    /// Remove the row.
    Delete,
    /// Make the row exactly these cells (others null).
    Replace(Vec<Cell>),
    /// Set some columns and add to others; create the row if absent.
    Patch {
        /// Columns to set.
        set: Vec<Cell>,
        /// Columns to add to (null counts as zero).
        inc: Vec<Cell>,
    },
}

/// One compacted entry: the key, its folded operation, and the position of the last event
/// folded into it (the row guard).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Key cells.
    pub key: Vec<Cell>,
    /// Folded operation.
    pub op: Compacted,
    /// Position of the last event folded in.
    pub position: SourcePosition,
}

/// A batch being compacted.
#[derive(Default)]
pub struct Compactor {
    index: HashMap<Vec<KeyPart>, usize>,
    entries: Vec<Entry>,
}

/// Hashable form of a key value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KeyPart {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
    Other(String),
}

fn key_parts(key: &[Cell]) -> Vec<KeyPart> {
    key.iter()
        .map(|c| match &c.value {
            Value::String(s) | Value::Enum(_, s) => KeyPart::Text(s.clone()),
            Value::Int(i) => KeyPart::Int(*i as i64),
            Value::Long(i) => KeyPart::Int(*i),
            Value::Bytes(b) | Value::Fixed(_, b) => KeyPart::Bytes(b.clone()),
            other => KeyPart::Other(format!("{other:?}")),
        })
        .collect()
}

impl Compactor {
    /// An empty batch.
    pub fn new() -> Compactor {
        Compactor::default()
    }

    /// Folds one operation into the batch. Fails only when an increment cannot be added
    /// (non-numeric or overflow); the batch is then unchanged.
    pub fn push(&mut self, op: Op) -> Result<(), String> {
        let parts = key_parts(&op.key);
        match self.index.get(&parts) {
            None => {
                let folded = fold(None, op.kind, op.cells)?;
                self.index.insert(parts, self.entries.len());
                self.entries.push(Entry {
                    key: op.key,
                    op: folded,
                    position: op.position,
                });
            }
            Some(&i) => {
                let entry = &mut self.entries[i];
                let folded = fold(Some(&entry.op), op.kind, op.cells)?;
                entry.op = folded;
                entry.position = op.position;
            }
        }
        Ok(())
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has an operation.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The compacted entries, in first-seen key order.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

fn overlay(base: &mut Vec<Cell>, cells: Vec<Cell>) {
    for c in cells {
        match base.iter_mut().find(|b| b.column == c.column) {
            Some(b) => *b = c,
            None => base.push(c),
        }
    }
}

fn add_into(base: &mut Vec<Cell>, cells: Vec<Cell>) -> Result<(), String> {
    for c in cells {
        match base.iter_mut().find(|b| b.column == c.column) {
            Some(b) => b.value = add(&b.value, &c.value)?,
            None => base.push(c),
        }
    }
    Ok(())
}

fn fold(prev: Option<&Compacted>, kind: OpKind, cells: Vec<Cell>) -> Result<Compacted, String> {
    Ok(match (prev, kind) {
        (_, OpKind::Delete) => Compacted::Delete,
        (_, OpKind::Upsert) => Compacted::Replace(cells),
        // After a delete the row does not exist: whatever follows creates it from nothing.
        (Some(Compacted::Delete), OpKind::Merge | OpKind::Increment) => Compacted::Replace(cells),
        (None, OpKind::Merge) => Compacted::Patch {
            set: cells,
            inc: Vec::new(),
        },
        (None, OpKind::Increment) => Compacted::Patch {
            set: Vec::new(),
            inc: cells,
        },
        (Some(Compacted::Replace(row)), OpKind::Merge) => {
            let mut row = row.clone();
            overlay(&mut row, cells);
            Compacted::Replace(row)
        }
        (Some(Compacted::Replace(row)), OpKind::Increment) => {
            let mut row = row.clone();
            add_into(&mut row, cells)?;
            Compacted::Replace(row)
        }
        (Some(Compacted::Patch { set, inc }), OpKind::Merge) => {
            // A set after increments wins over them.
            let mut set = set.clone();
            let inc = inc
                .iter()
                .filter(|i| !cells.iter().any(|c| c.column == i.column))
                .cloned()
                .collect();
            overlay(&mut set, cells);
            Compacted::Patch { set, inc }
        }
        (Some(Compacted::Patch { set, inc }), OpKind::Increment) => {
            let (mut set, mut inc) = (set.clone(), inc.clone());
            let (onto_set, onto_inc): (Vec<Cell>, Vec<Cell>) = cells
                .into_iter()
                .partition(|c| set.iter().any(|s| s.column == c.column));
            add_into(&mut set, onto_set)?;
            add_into(&mut inc, onto_inc)?;
            Compacted::Patch { set, inc }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::ColumnType;

    fn cell(col: &str, v: Value) -> Cell {
        let ty = match v {
            Value::Long(_) => ColumnType::Long,
            _ => ColumnType::String,
        };
        Cell {
            column: Arc::from(col),
            ty,
            value: v,
        }
    }

    fn op(key: &str, kind: OpKind, cells: Vec<Cell>, offset: i64) -> Op {
        Op {
            key: vec![cell("id", Value::String(key.into()))],
            kind,
            cells,
            position: SourcePosition {
                topic: Arc::from("t"),
                partition: 0,
                offset,
            },
        }
    }

    fn compact(ops: Vec<Op>) -> Vec<Entry> {
        let mut c = Compactor::new();
        for o in ops {
            c.push(o).unwrap();
        }
        c.into_entries()
    }

    #[test]
    fn upsert_then_merge_then_increment_folds_into_one_replace() {
        let e = compact(vec![
            op(
                "a",
                OpKind::Upsert,
                vec![
                    cell("s", Value::String("new".into())),
                    cell("n", Value::Long(1)),
                ],
                1,
            ),
            op(
                "a",
                OpKind::Merge,
                vec![cell("s", Value::String("paid".into()))],
                2,
            ),
            op("a", OpKind::Increment, vec![cell("n", Value::Long(2))], 3),
        ]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].op,
            Compacted::Replace(vec![
                cell("s", Value::String("paid".into())),
                cell("n", Value::Long(3))
            ])
        );
        assert_eq!(e[0].position.offset, 3);
    }

    #[test]
    fn increments_sum_and_a_later_merge_overrides_them() {
        let e = compact(vec![
            op("a", OpKind::Increment, vec![cell("n", Value::Long(2))], 1),
            op("a", OpKind::Increment, vec![cell("n", Value::Long(5))], 2),
        ]);
        assert_eq!(
            e[0].op,
            Compacted::Patch {
                set: vec![],
                inc: vec![cell("n", Value::Long(7))]
            }
        );
        let e = compact(vec![
            op("a", OpKind::Increment, vec![cell("n", Value::Long(2))], 1),
            op("a", OpKind::Merge, vec![cell("n", Value::Long(10))], 2),
            op("a", OpKind::Increment, vec![cell("n", Value::Long(1))], 3),
        ]);
        assert_eq!(
            e[0].op,
            Compacted::Patch {
                set: vec![cell("n", Value::Long(11))],
                inc: vec![]
            }
        );
    }

    #[test]
    fn delete_clears_and_what_follows_recreates() {
        let e = compact(vec![
            op("a", OpKind::Upsert, vec![cell("n", Value::Long(1))], 1),
            op("a", OpKind::Delete, vec![], 2),
        ]);
        assert_eq!(e[0].op, Compacted::Delete);
        let e = compact(vec![
            op("a", OpKind::Delete, vec![], 1),
            op("a", OpKind::Increment, vec![cell("n", Value::Long(4))], 2),
        ]);
        assert_eq!(e[0].op, Compacted::Replace(vec![cell("n", Value::Long(4))]));
    }

    #[test]
    fn keys_stay_apart() {
        let e = compact(vec![
            op("a", OpKind::Upsert, vec![], 1),
            op("b", OpKind::Delete, vec![], 2),
        ]);
        assert_eq!(e.len(), 2);
    }
}
