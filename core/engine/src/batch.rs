//! Per-key compaction of a batch.
//!
//! A batch holds at most one [`Compacted`] operation per key, folded in record order: the
//! last upsert wins, merges overlay, increments sum, a delete clears what came before. This
//! keeps per-key order while letting the sink write each kind set-based, and avoids
//! PostgreSQL's "ON CONFLICT DO UPDATE command cannot affect row a second time".
//!
//! Keys are per target. A delete by key prefix (every child row of a parent) turns the
//! entries already under that prefix into deletes and is written *before* the target's
//! other entries, so what later events of the batch write under the prefix survives it.

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
    /// Remove every row whose key starts with the entry's key cells (older than the
    /// entry's position, per the row guards). Written before the target's other entries.
    DeletePrefix,
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
    /// Which target (see [`Op::target`]).
    pub target: usize,
    /// Key cells (a prefix of the key for [`Compacted::DeletePrefix`]).
    pub key: Vec<Cell>,
    /// Folded operation.
    pub op: Compacted,
    /// Position of the last event folded in.
    pub position: SourcePosition,
}

/// A batch being compacted.
#[derive(Default)]
pub struct Compactor {
    /// (target, prefix delete, key) → entry.
    index: HashMap<(usize, bool, Vec<KeyPart>), usize>,
    /// (target, first key part) → the entries with that first part, for prefix deletes.
    by_first: HashMap<(usize, KeyPart), Vec<usize>>,
    entries: Vec<Entry>,
    /// Each entry's key parts.
    parts: Vec<Vec<KeyPart>>,
}

/// How to undo one change of a record being folded in.
enum Undo {
    /// Entry `i` had this operation and position.
    Changed(usize, Compacted, SourcePosition),
    /// This slot's entry was added (it is the last one).
    Added((usize, bool, Vec<KeyPart>)),
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
        self.push_all(vec![op])
    }

    /// Folds the operations of one record (its row and child rows), all or none: on a
    /// failure the batch is as it was before the record.
    pub fn push_all(&mut self, ops: Vec<Op>) -> Result<(), String> {
        let mut undo = Vec::new();
        for op in ops {
            if let Err(e) = self.fold_in(op, &mut undo) {
                self.roll_back(undo);
                return Err(e);
            }
        }
        Ok(())
    }

    fn fold_in(&mut self, op: Op, undo: &mut Vec<Undo>) -> Result<(), String> {
        let parts = key_parts(&op.key);
        if op.prefix {
            self.delete_under(op.target, &parts, &op.position, undo);
        }
        let slot = (op.target, op.prefix, parts);
        match self.index.get(&slot) {
            None => {
                let folded = if op.prefix {
                    Compacted::DeletePrefix
                } else {
                    fold(None, op.kind, op.cells)?
                };
                let i = self.entries.len();
                if let Some(first) = slot.2.first() {
                    self.by_first
                        .entry((op.target, first.clone()))
                        .or_default()
                        .push(i);
                }
                self.parts.push(slot.2.clone());
                undo.push(Undo::Added(slot.clone()));
                self.index.insert(slot, i);
                self.entries.push(Entry {
                    target: op.target,
                    key: op.key,
                    op: folded,
                    position: op.position,
                });
            }
            Some(&i) => {
                let entry = &mut self.entries[i];
                let folded = if op.prefix {
                    Compacted::DeletePrefix
                } else {
                    fold(Some(&entry.op), op.kind, op.cells)?
                };
                undo.push(Undo::Changed(i, entry.op.clone(), entry.position.clone()));
                entry.op = folded;
                entry.position = op.position;
            }
        }
        Ok(())
    }

    /// A prefix delete at `position`: every row entry of `target` under `prefix` so far
    /// becomes a delete (its row is gone whatever it was).
    fn delete_under(
        &mut self,
        target: usize,
        prefix: &[KeyPart],
        position: &SourcePosition,
        undo: &mut Vec<Undo>,
    ) {
        let Some(first) = prefix.first() else {
            return;
        };
        let Some(candidates) = self.by_first.get(&(target, first.clone())) else {
            return;
        };
        for &i in candidates {
            let entry = &mut self.entries[i];
            if entry.op != Compacted::DeletePrefix && self.parts[i].starts_with(prefix) {
                undo.push(Undo::Changed(i, entry.op.clone(), entry.position.clone()));
                entry.op = Compacted::Delete;
                entry.position = position.clone();
            }
        }
    }

    /// Undoes a record's changes, newest first (added entries are the last ones).
    fn roll_back(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Changed(i, op, position) => {
                    self.entries[i].op = op;
                    self.entries[i].position = position;
                }
                Undo::Added(slot) => {
                    self.index.remove(&slot);
                    self.entries.pop();
                    self.parts.pop();
                    if let Some(first) = slot.2.first()
                        && let Some(list) = self.by_first.get_mut(&(slot.0, first.clone()))
                    {
                        list.pop();
                    }
                }
            }
        }
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
        (Some(Compacted::DeletePrefix), _) => unreachable!("prefix deletes have their own slot"),
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
            target: 0,
            prefix: false,
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

    fn line(order: &str, n: i64, kind: OpKind, offset: i64) -> Op {
        Op {
            target: 1,
            key: vec![
                cell("order_id", Value::String(order.into())),
                cell("line_no", Value::Long(n)),
            ],
            prefix: false,
            kind,
            cells: vec![cell("qty", Value::Long(1))],
            position: SourcePosition {
                topic: Arc::from("t"),
                partition: 0,
                offset,
            },
        }
    }

    fn lines_of(order: &str, offset: i64) -> Op {
        Op {
            target: 1,
            key: vec![cell("order_id", Value::String(order.into()))],
            prefix: true,
            kind: OpKind::Delete,
            cells: vec![],
            position: SourcePosition {
                topic: Arc::from("t"),
                partition: 0,
                offset,
            },
        }
    }

    #[test]
    fn a_prefix_delete_clears_what_came_before_under_it_and_spares_what_follows() {
        let e = compact(vec![
            line("o1", 0, OpKind::Upsert, 1),
            line("o2", 0, OpKind::Upsert, 2),
            lines_of("o1", 3),
            line("o1", 1, OpKind::Increment, 4),
        ]);
        let of = |order: &str, n: i64| {
            e.iter()
                .find(|x| {
                    x.key.len() == 2
                        && x.key[0].value == Value::String(order.into())
                        && x.key[1].value == Value::Long(n)
                })
                .unwrap()
        };
        assert_eq!(
            (of("o1", 0).op.clone(), of("o1", 0).position.offset),
            (Compacted::Delete, 3)
        );
        assert!(matches!(of("o2", 0).op, Compacted::Replace(_)));
        assert!(matches!(of("o1", 1).op, Compacted::Patch { .. }));
        let prefixes: Vec<&Entry> = e
            .iter()
            .filter(|x| x.op == Compacted::DeletePrefix)
            .collect();
        assert_eq!(prefixes.len(), 1);
        assert_eq!((prefixes[0].target, prefixes[0].position.offset), (1, 3));
        // The same key on another target is another row.
        let e = compact(vec![op("o1", OpKind::Upsert, vec![], 1), lines_of("o1", 2)]);
        assert!(matches!(e[0].op, Compacted::Replace(_)));
    }

    #[test]
    fn a_record_whose_operations_do_not_all_fold_changes_nothing() {
        let mut c = Compactor::new();
        c.push(op(
            "a",
            OpKind::Increment,
            vec![cell("n", Value::Long(i64::MAX))],
            1,
        ))
        .unwrap();
        let before = c.entries.clone();
        let failed = c.push_all(vec![
            line("a", 0, OpKind::Upsert, 2),
            lines_of("a", 2),
            op("a", OpKind::Increment, vec![cell("n", Value::Long(1))], 2),
        ]);
        assert!(failed.is_err());
        assert_eq!(c.entries, before);
        c.push(line("a", 0, OpKind::Upsert, 3)).unwrap();
        assert_eq!(c.len(), 2);
    }
}
