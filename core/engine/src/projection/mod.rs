//! Projection: what one event does to the read model.
//!
//! A [`Projector`] is built once from the pipeline file; [`Projector::project`] turns an
//! [`Event`] into an [`Op`] (see [`crate::operation`]) on a key: replace the row (upsert),
//! set columns (merge), add to numeric columns (increment), or delete. A Kafka tombstone
//! deletes by the Kafka key.
//!
//! - [`rule`]: the `events` rules compiled: conditions (`when`), columns copied from fields
//!   or computed by CEL expressions, computed keys.

mod rule;

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;

use crate::config::{Envelope, KeySource, OpKind, PipelineFile};
use crate::debezium::Debezium;
use crate::error::RecordError;
use crate::event::Event;
use crate::operation::{Cell, Op};
use crate::schema::{ColumnType, EventSchema};
use crate::value::{into_unwrapped, is_null, unwrap_union};

/// Turns events into operations, per the pipeline's `key` and `events` sections.
pub struct Projector {
    key_from: KeySource,
    key_columns: Vec<Arc<str>>,
    rules: HashMap<String, Vec<rule::Rule>>,
    debezium: Option<Debezium>,
}

impl Projector {
    /// Builds the projector of a pipeline: every expression is compiled here. The
    /// problems (a rule that does not compile) are what validation reports.
    pub fn new(p: &PipelineFile) -> Result<Projector, rule::Problems> {
        let rules = rule::compile(p)?;
        Ok(Projector {
            key_from: p.key.from,
            key_columns: p
                .key
                .columns
                .iter()
                .map(|c| Arc::from(c.as_str()))
                .collect(),
            rules,
            debezium: (p.envelope == Envelope::Debezium)
                .then(|| Debezium::new(&p.debezium.unavailable_value)),
        })
    }

    /// Whether the pipeline declares this event type.
    pub fn knows(&self, event_type: &str) -> bool {
        self.rules.contains_key(event_type)
    }

    /// The key column names.
    pub fn key_columns(&self) -> &[Arc<str>] {
        &self.key_columns
    }

    /// Projects one event, moving its values into the operation (no copies: this runs
    /// once per record). Errors are bad records: an undeclared event type
    /// ([`RecordError::UnknownEventType`], which the caller routes per the unknown-event
    /// policy), a missing key, a missing field, or a non-numeric increment.
    pub fn project(&self, mut event: Event) -> Result<Op, RecordError> {
        if let Some(debezium) = &self.debezium {
            return debezium.project(event, |k| self.key_from_kafka(k), &self.key_columns);
        }
        let event_type = event.event_type.clone();
        let fail = |detail: String| RecordError::Projection {
            event_type: event_type.to_string(),
            detail,
        };
        let (Some(body_schema), Some(body)) = (event.schema.take(), event.body.take()) else {
            // A tombstone: delete by the Kafka key.
            return Ok(Op {
                key: self.key_from_kafka(event.key.take()).map_err(fail)?,
                kind: OpKind::Delete,
                cells: Vec::new(),
                position: event.position,
            });
        };
        let rules = self
            .rules
            .get(&*event_type)
            .ok_or_else(|| RecordError::UnknownEventType {
                event_type: event_type.to_string(),
            })?;
        let mut fields = into_fields(body);
        let mut rule = None;
        for r in rules {
            if r.applies(&fields).map_err(fail)? {
                rule = Some(r);
                break;
            }
        }
        let Some(rule) = rule else {
            return Err(RecordError::Unmatched {
                event_type: event_type.to_string(),
            });
        };
        let key = match (&rule.key, self.key_from) {
            (Some(computed), _) => computed
                .iter()
                .map(|c| {
                    let cell = rule.cell(c, &fields, &body_schema)?;
                    if is_null(&cell.value) {
                        return Err(format!("{}key column `{}` is null", rule.label, c.name));
                    }
                    Ok(cell)
                })
                .collect(),
            (None, KeySource::KafkaKey) => self.key_from_kafka(event.key.take()),
            (None, KeySource::Fields) => self.key_from_fields(&fields, &body_schema),
        }
        .map_err(fail)?;
        let mut cells = Vec::new();
        if rule.op != OpKind::Delete {
            match &rule.mapping {
                None => {
                    cells.reserve(body_schema.fields.len());
                    for (i, f) in body_schema.fields.iter().enumerate() {
                        if self.key_columns.contains(&f.name) {
                            continue;
                        }
                        let value = find(&mut fields, i, &f.name).map_or(Value::Null, |v| {
                            into_unwrapped(std::mem::replace(v, Value::Null))
                        });
                        cells.push(Cell {
                            column: f.name.clone(),
                            ty: f.ty,
                            value,
                        });
                    }
                }
                Some(mapping) => {
                    cells.reserve(mapping.len());
                    for column in mapping {
                        cells.push(rule.cell(column, &fields, &body_schema).map_err(fail)?);
                    }
                }
            }
        }
        if rule.op == OpKind::Increment
            && let Some(bad) = cells.iter().find(|c| !c.ty.is_numeric())
        {
            return Err(fail(format!(
                "{}increment of column `{}` needs a number, found {}",
                rule.label, bad.column, bad.ty
            )));
        }
        Ok(Op {
            key,
            kind: rule.op,
            cells,
            position: event.position,
        })
    }

    fn key_from_fields(
        &self,
        fields: &[(String, Value)],
        schema: &EventSchema,
    ) -> Result<Vec<Cell>, String> {
        self.key_columns
            .iter()
            .map(|column| {
                let value = fields
                    .iter()
                    .find(|(n, _)| **n == **column)
                    .map(|(_, v)| unwrap_union(v))
                    .filter(|v| !is_null(v))
                    .ok_or_else(|| format!("key field `{column}` is missing or null"))?;
                let ty = schema.field_type(column).unwrap_or(ColumnType::String);
                Ok(Cell {
                    column: column.clone(),
                    ty,
                    value: value.clone(),
                })
            })
            .collect()
    }

    fn key_from_kafka(&self, key: Option<Value>) -> Result<Vec<Cell>, String> {
        let key = match key.map(into_unwrapped) {
            None | Some(Value::Null) => return Err("the record has no Kafka key".into()),
            Some(k) => k,
        };
        match key {
            Value::Record(fields) => self
                .key_columns
                .iter()
                .map(|column| {
                    let value = fields
                        .iter()
                        .find(|(n, _)| **n == **column)
                        .map(|(_, v)| unwrap_union(v).clone())
                        .filter(|v| !is_null(v))
                        .ok_or_else(|| format!("key record has no field `{column}`"))?;
                    Ok(Cell {
                        column: column.clone(),
                        ty: primitive_type(&value),
                        value,
                    })
                })
                .collect(),
            primitive => match self.key_columns.as_slice() {
                [column] => Ok(vec![Cell {
                    column: column.clone(),
                    ty: primitive_type(&primitive),
                    value: primitive,
                }]),
                _ => Err(format!(
                    "a primitive Kafka key cannot fill {} key columns; use an Avro record key \
                     or `key.from: fields`",
                    self.key_columns.len()
                )),
            },
        }
    }
}

/// The fields of a record body (through union wrappers); empty for anything else.
fn into_fields(body: Value) -> Vec<(String, Value)> {
    match body {
        Value::Record(fields) => fields,
        Value::Union(_, inner) => into_fields(*inner),
        _ => Vec::new(),
    }
}

/// The field named `name`, looked for first at `hint` (fields usually come in schema order).
fn find<'a>(fields: &'a mut [(String, Value)], hint: usize, name: &str) -> Option<&'a mut Value> {
    let i = match fields.get(hint) {
        Some((n, _)) if n == name => hint,
        _ => fields.iter().position(|(n, _)| n == name)?,
    };
    Some(&mut fields[i].1)
}

/// The column type a key value implies when no schema says otherwise.
fn primitive_type(v: &Value) -> ColumnType {
    match v {
        Value::Boolean(_) => ColumnType::Boolean,
        Value::Int(_) => ColumnType::Int,
        Value::Long(_) => ColumnType::Long,
        Value::Float(_) => ColumnType::Float,
        Value::Double(_) => ColumnType::Double,
        Value::Bytes(_) | Value::Fixed(..) => ColumnType::Bytes,
        Value::Uuid(_) => ColumnType::Uuid,
        Value::Date(_) => ColumnType::Date,
        Value::TimestampMillis(_) | Value::TimestampMicros(_) => ColumnType::Timestamp,
        Value::String(_) | Value::Enum(..) => ColumnType::String,
        _ => ColumnType::Json,
    }
}

#[cfg(test)]
mod tests;
