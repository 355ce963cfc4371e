//! Operations on a read model: what a projection (of sinkd's events or of Debezium change
//! events) produces and what batches compact. Kept apart from both projections so that
//! neither depends on the other.

use std::sync::Arc;

use apache_avro::types::Value;

use crate::config::OpKind;
use crate::event::SourcePosition;
use crate::schema::ColumnType;

impl Op {
    /// An operation on the main target's row of `key`.
    pub fn new(key: Vec<Cell>, kind: OpKind, cells: Vec<Cell>, position: SourcePosition) -> Op {
        Op {
            target: 0,
            key,
            prefix: false,
            kind,
            cells,
            position,
        }
    }
}

/// One column value of an operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Column name.
    pub column: Arc<str>,
    /// Column type, from the writer schema.
    pub ty: ColumnType,
    /// The value (never a union wrapper).
    pub value: Value,
}

/// An operation on the row of one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// Which target: 0 is the sink's own table, collection or index; `n` the `n`-th of
    /// the pipeline's `targets` (in name order).
    pub target: usize,
    /// Key cells, in key column order.
    pub key: Vec<Cell>,
    /// A delete of every row whose key starts with `key` (child rows of a parent).
    pub prefix: bool,
    /// What to do.
    pub kind: OpKind,
    /// Columns to replace, set or add to (empty for deletes).
    pub cells: Vec<Cell>,
    /// Position of the event, for checkpoints and row guards.
    pub position: SourcePosition,
}
