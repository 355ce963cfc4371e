//! Projection: what one event does to the read model.
//!
//! A [`Projector`] is built once from the pipeline file; [`Projector::project`] turns an
//! [`Event`] into an [`Op`] (see [`crate::operation`]) on a key: replace the row (upsert), set columns (merge), add to
//! numeric columns (increment), or delete. A Kafka tombstone deletes by the Kafka key.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;

use crate::config::{Envelope, EventConfig, KeySource, OpKind, PipelineFile};
use crate::debezium::Debezium;
use crate::error::RecordError;
use crate::event::Event;
use crate::operation::{Cell, Op};
use crate::schema::{ColumnType, EventSchema};
use crate::value::{into_unwrapped, is_null, unwrap_union};

struct Rule {
    op: OpKind,
    /// `(column, field)`; `None` means every field but the key fields, same names.
    mapping: Option<Vec<(Arc<str>, String)>>,
}

/// Turns events into operations, per the pipeline's `key` and `events` sections.
pub struct Projector {
    key_from: KeySource,
    key_columns: Vec<Arc<str>>,
    rules: HashMap<String, Rule>,
    debezium: Option<Debezium>,
}

impl Projector {
    /// Builds the projector of a validated pipeline.
    pub fn new(p: &PipelineFile) -> Projector {
        let rules = p
            .events
            .iter()
            .map(|(name, e)| (name.clone(), rule(e)))
            .collect();
        Projector {
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
        }
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
        let rule = self
            .rules
            .get(&*event_type)
            .ok_or_else(|| RecordError::UnknownEventType {
                event_type: event_type.to_string(),
            })?;
        let mut fields = into_fields(body);
        let key = match self.key_from {
            KeySource::KafkaKey => self.key_from_kafka(event.key.take()),
            KeySource::Fields => self.key_from_fields(&fields, &body_schema),
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
                    for (column, field) in mapping {
                        let ty = body_schema.field_type(field);
                        let value = find(&mut fields, 0, field);
                        let (Some(ty), Some(value)) = (ty, value) else {
                            return Err(fail(format!(
                                "field `{field}` (for column `{column}`) is not in the event"
                            )));
                        };
                        // A field may fill several columns: copied, not moved.
                        cells.push(Cell {
                            column: column.clone(),
                            ty,
                            value: unwrap_union(value).clone(),
                        });
                    }
                }
            }
        }
        if rule.op == OpKind::Increment
            && let Some(bad) = cells.iter().find(|c| !c.ty.is_numeric())
        {
            return Err(fail(format!(
                "increment of column `{}` needs a numeric field, found {}",
                bad.column, bad.ty
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

fn rule(e: &EventConfig) -> Rule {
    let mapping = if e.fields.is_none() && e.columns.is_empty() {
        None
    } else {
        let mut m: Vec<(Arc<str>, String)> = e
            .fields
            .iter()
            .flatten()
            .map(|f| (Arc::from(f.as_str()), f.clone()))
            .collect();
        m.extend(
            e.columns
                .iter()
                .map(|(c, f)| (Arc::from(c.as_str()), f.clone())),
        );
        Some(m)
    };
    Rule { op: e.op, mapping }
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
mod tests {
    use super::*;
    use crate::event::SourcePosition;
    use crate::schema::{EventSchema, FieldColumn};

    fn pipeline(key: &str, events: &str) -> PipelineFile {
        let yaml = format!(
            "name: p\nsource:\n  kafka: {{bootstrap_servers: b, topics: [t]}}\n  registry: {{url: u}}\n\
             sink:\n  postgres: {{url: x, table: t}}\n{key}\nevents:\n{events}"
        );
        crate::config::load::parse_str(std::path::Path::new("p.yaml"), &yaml, &Default::default())
            .unwrap()
    }

    fn event(
        event_type: &str,
        key: Option<Value>,
        fields: Vec<(&str, Value, ColumnType)>,
    ) -> Event {
        let schema = EventSchema {
            full_name: Arc::from(event_type),
            fields: fields
                .iter()
                .map(|(n, _, t)| FieldColumn {
                    name: Arc::from(*n),
                    ty: *t,
                })
                .collect(),
            avro: Arc::new(apache_avro::Schema::Null),
        };
        Event {
            event_type: Arc::from(event_type),
            version: 1,
            key,
            body: Some(Value::Record(
                fields
                    .into_iter()
                    .map(|(n, v, _)| (n.to_owned(), v))
                    .collect(),
            )),
            schema: Some(Arc::new(schema)),
            position: SourcePosition {
                topic: Arc::from("t"),
                partition: 0,
                offset: 9,
            },
            timestamp_ms: None,
        }
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn upsert_takes_every_field_but_the_key() {
        let p = Projector::new(&pipeline("key: {columns: [id]}", "  A: {op: upsert}\n"));
        let op = p
            .project(event(
                "A",
                Some(s("k1")),
                vec![
                    ("id", s("k1"), ColumnType::String),
                    ("name", s("n"), ColumnType::String),
                ],
            ))
            .unwrap();
        assert_eq!(op.kind, OpKind::Upsert);
        assert_eq!(op.key[0].value, s("k1"));
        assert_eq!(
            op.cells.iter().map(|c| &*c.column).collect::<Vec<_>>(),
            vec!["name"]
        );
    }

    #[test]
    fn increment_maps_columns_and_refuses_text() {
        let p = Projector::new(&pipeline(
            "key: {columns: [id]}",
            "  A: {op: increment, columns: {count: qty}}\n  B: {op: increment, fields: [name]}\n",
        ));
        let op = p
            .project(event(
                "A",
                Some(s("k")),
                vec![("qty", Value::Int(2), ColumnType::Int)],
            ))
            .unwrap();
        assert_eq!(
            (&*op.cells[0].column, &op.cells[0].value),
            ("count", &Value::Int(2))
        );
        let e = p
            .project(event(
                "B",
                Some(s("k")),
                vec![("name", s("x"), ColumnType::String)],
            ))
            .unwrap_err();
        assert!(e.to_string().contains("needs a numeric field"), "{e}");
    }

    #[test]
    fn key_from_fields_and_from_an_avro_record_key() {
        let p = Projector::new(&pipeline(
            "key: {from: fields, columns: [a, b]}",
            "  A: {op: merge}\n",
        ));
        let op = p
            .project(event(
                "A",
                None,
                vec![
                    ("a", s("x"), ColumnType::String),
                    ("b", Value::Long(3), ColumnType::Long),
                    ("c", s("v"), ColumnType::String),
                ],
            ))
            .unwrap();
        assert_eq!(op.key.len(), 2);
        assert_eq!(op.key[1].ty, ColumnType::Long);
        assert_eq!(op.cells.len(), 1);

        let p = Projector::new(&pipeline("key: {columns: [a, b]}", "  A: {op: delete}\n"));
        let key = Value::Record(vec![("a".into(), s("x")), ("b".into(), Value::Long(3))]);
        let op = p.project(event("A", Some(key), vec![])).unwrap();
        assert_eq!((op.kind, op.key.len()), (OpKind::Delete, 2));
    }

    #[test]
    fn tombstones_delete_and_missing_keys_are_errors() {
        let p = Projector::new(&pipeline("key: {columns: [id]}", "  A: {op: upsert}\n"));
        let mut tomb = event("A", Some(s("k")), vec![]);
        tomb.body = None;
        assert_eq!(p.project(tomb).unwrap().kind, OpKind::Delete);
        let e = p.project(event("A", None, vec![])).unwrap_err();
        assert!(e.to_string().contains("no Kafka key"), "{e}");
        let e = p.project(event("Z", Some(s("k")), vec![])).unwrap_err();
        assert!(matches!(e, RecordError::UnknownEventType { .. }));
    }
}
