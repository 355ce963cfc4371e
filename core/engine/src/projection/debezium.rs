//! Debezium change events (`envelope: debezium`): the standard envelope
//! `{before, after, source, op, ts_ms, transaction}` with the primary key in the Kafka key.
//!
//! | `op` | operation |
//! |---|---|
//! | `c` (create), `r` (snapshot read) | upsert `after` |
//! | `u` (update) | upsert `after`; a merge without the columns that hold Debezium's unavailable-value placeholder (unchanged TOAST columns), which keep what the sink has |
//! | `d` (delete) | delete the key |
//! | tombstone (null value, after a delete) | delete the key again: harmless |
//! | anything else (`t` truncate, `m` message) | a bad record, per `on_error` |
//!
//! Columns come from the `after` record's schema, so a column added at the source becomes
//! a new column in the sink, as for any event.

use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::types::Value;
use rustc_hash::FxHashMap;

use super::Projection;
use super::key::Keys;
use crate::config::OpKind;
use crate::error::RecordError;
use crate::event::Event;
use crate::operation::{Cell, Op};
use crate::schema::EventSchema;
use crate::value::{into_unwrapped, unwrap_union};

/// Debezium's default `unavailable.value.placeholder`.
pub const DEFAULT_PLACEHOLDER: &str = "__debezium_unavailable_value";

/// Projects Debezium change events.
pub struct Debezium {
    placeholder: String,
    key: Keys,
    /// The `after` record's columns, per envelope schema (by its address: schemas are
    /// cached for the process's life).
    afters: RwLock<FxHashMap<usize, Arc<EventSchema>>>,
}

impl Debezium {
    /// `placeholder`: the connector's `unavailable.value.placeholder`; `key_columns`: the
    /// table's primary key, filled from the Kafka key and left out of the other columns.
    pub fn new(placeholder: &str, key_columns: &[String]) -> Debezium {
        Debezium {
            placeholder: placeholder.to_owned(),
            key: Keys::new(key_columns),
            afters: RwLock::new(FxHashMap::default()),
        }
    }

    /// The change as an operation.
    fn project_change(&self, mut event: Event) -> Result<Op, RecordError> {
        let key = |k: Option<Value>| self.key.from_kafka(k);
        let key_columns = &self.key.columns;
        let event_type = event.event_type.clone();
        let fail = |detail: String| RecordError::Projection {
            event_type: event_type.to_string(),
            detail,
        };
        let (Some(envelope), Some(body)) = (event.schema.take(), event.body.take()) else {
            // The tombstone after a delete.
            return Ok(Op {
                target: 0,
                prefix: false,
                key: key(event.key.take()).map_err(fail)?,
                kind: OpKind::Delete,
                cells: Vec::new(),
                position: event.position,
            });
        };
        let Value::Record(mut fields) = body else {
            return Err(fail("a Debezium change event is a record".into()));
        };
        let op = match fields
            .iter()
            .find(|(n, _)| n == "op")
            .map(|(_, v)| unwrap_union(v))
        {
            Some(Value::String(op)) => op.clone(),
            Some(Value::Enum(_, op)) => op.clone(),
            _ => return Err(fail("no `op` field: is this a Debezium envelope?".into())),
        };
        let key = key(event.key.take()).map_err(fail)?;
        if op == "d" {
            return Ok(Op {
                target: 0,
                prefix: false,
                key,
                kind: OpKind::Delete,
                cells: Vec::new(),
                position: event.position,
            });
        }
        if !matches!(op.as_str(), "c" | "r" | "u") {
            let what = match op.as_str() {
                "t" => "a truncate",
                "m" => "a logical decoding message",
                _ => "an unknown operation",
            };
            return Err(fail(format!(
                "Debezium op `{op}` is {what}, which has no row to apply"
            )));
        }
        let columns = self.after_schema(&envelope).map_err(fail)?;
        let after = fields
            .iter_mut()
            .find(|(n, _)| n == "after")
            .map(|(_, v)| into_unwrapped(std::mem::replace(v, Value::Null)));
        let Some(Value::Record(mut after)) = after else {
            return Err(fail(format!("op `{op}` without an `after` row")));
        };
        let mut kind = OpKind::Upsert;
        let mut cells = Vec::with_capacity(columns.fields.len());
        for f in &columns.fields {
            if key_columns.contains(&f.name) {
                continue;
            }
            let value = after
                .iter_mut()
                .find(|(n, _)| **n == *f.name)
                .map_or(Value::Null, |(_, v)| {
                    into_unwrapped(std::mem::replace(v, Value::Null))
                });
            if self.is_placeholder(&value) {
                // Unchanged and not sent: the sink keeps its value.
                kind = OpKind::Merge;
                continue;
            }
            cells.push(Cell {
                column: f.name.clone(),
                ty: f.ty,
                value,
            });
        }
        Ok(Op {
            target: 0,
            prefix: false,
            key,
            kind,
            cells,
            position: event.position,
        })
    }

    fn is_placeholder(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => *s == self.placeholder,
            Value::Bytes(b) => b == self.placeholder.as_bytes(),
            // An unchanged TOASTed array arrives as [placeholder].
            Value::Array(items) => items.len() == 1 && self.is_placeholder(unwrap_union(&items[0])),
            _ => false,
        }
    }

    /// The columns of the envelope's `after` record (computed once per envelope schema).
    fn after_schema(&self, envelope: &EventSchema) -> Result<Arc<EventSchema>, String> {
        let id = Arc::as_ptr(&envelope.avro) as usize;
        if let Some(s) = self.afters.read().expect("lock").get(&id) {
            return Ok(s.clone());
        }
        let Schema::Record(record) = &*envelope.avro else {
            return Err("the envelope schema is not a record".into());
        };
        let after = record
            .fields
            .iter()
            .find(|f| f.name == "after")
            .ok_or("the envelope schema has no `after` field")?;
        let row = match &after.schema {
            Schema::Union(u) => u
                .variants()
                .iter()
                .find(|v| !matches!(v, Schema::Null))
                .ok_or("`after` is only null")?,
            other => other,
        };
        // `after` usually names the record `before` defined: find its definition.
        let row = match row {
            Schema::Ref { name } => {
                find_named(&envelope.avro, &name.fullname(None)).ok_or_else(|| {
                    format!("`after` names {name:?}, which the schema does not define")
                })?
            }
            other => other,
        };
        let columns = EventSchema::from_avro(row).ok_or("`after` is not a record")?;
        let columns = Arc::new(columns);
        self.afters
            .write()
            .expect("lock")
            .insert(id, columns.clone());
        Ok(columns)
    }
}

/// The definition of a named type inside `schema`.
fn find_named<'a>(schema: &'a Schema, fullname: &str) -> Option<&'a Schema> {
    match schema {
        Schema::Record(r) => {
            if r.name.fullname(None) == fullname {
                return Some(schema);
            }
            r.fields
                .iter()
                .find_map(|f| find_named(&f.schema, fullname))
        }
        Schema::Union(u) => u.variants().iter().find_map(|v| find_named(v, fullname)),
        Schema::Array(a) => find_named(&a.items, fullname),
        Schema::Map(m) => find_named(&m.types, fullname),
        _ => None,
    }
}

impl Projection for Debezium {
    fn project(&self, event: Event) -> Result<Vec<Op>, RecordError> {
        self.project_change(event).map(|op| vec![op])
    }
}
