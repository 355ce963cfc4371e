//! The projection of sinkd's own events: per event type, rules tried in order (see
//! [`super::rule`]), each giving an operation on a key: replace the row (upsert), set
//! columns (merge), add to numeric columns (increment), or delete. A Kafka tombstone
//! deletes by the Kafka key.

use std::collections::HashMap;

use apache_avro::types::Value;

use super::Projection;
use super::key::Keys;
use super::route::Router;
use super::rule::{self, Problems, Rule};
use crate::config::{KeySource, OpKind, PipelineFile};
use crate::error::RecordError;
use crate::event::Event;
use crate::expr::Scope;
use crate::operation::{Cell, Op};
use crate::value::{into_unwrapped, is_null};

/// Turns events into operations, per the pipeline's `key` and `events` sections.
pub struct EventProjection {
    router: Router,
    key_from: KeySource,
    key: Keys,
    rules: HashMap<String, Vec<Rule>>,
}

impl EventProjection {
    /// Compiles the pipeline's rules; the problems are what validation reports.
    pub fn new(p: &PipelineFile) -> Result<EventProjection, Problems> {
        Ok(EventProjection {
            router: Router::new(p),
            key_from: p.key.from,
            key: Keys::new(&p.key.columns),
            rules: rule::compile(p)?,
        })
    }

    /// Projects one event, moving its values into the operation (no copies: this runs
    /// once per record). Errors are bad records: an undeclared event type
    /// ([`RecordError::UnknownEventType`], which the caller routes per the unknown-event
    /// policy), a missing key, a missing field, or a non-numeric increment.
    fn project_event(&self, mut event: Event) -> Result<Vec<Op>, RecordError> {
        let event_type = event.event_type.clone();
        let fail = |detail: String| RecordError::Projection {
            event_type: event_type.to_string(),
            detail,
        };
        let (Some(body_schema), Some(body)) = (event.schema.take(), event.body.take()) else {
            // A tombstone: delete by the Kafka key. It has no fields to route by.
            if self.router.routed(0) {
                return Err(fail(
                    "a tombstone has no fields to choose the routed target by".into(),
                ));
            }
            return Ok(vec![Op::new(
                self.key.from_kafka(event.key.take()).map_err(fail)?,
                OpKind::Delete,
                Vec::new(),
                event.position,
            )]);
        };
        let rules = self
            .rules
            .get(&*event_type)
            .ok_or_else(|| RecordError::UnknownEventType {
                event_type: event_type.to_string(),
            })?;
        let mut fields = into_fields(body);
        // Everything expressions read, with the fields converted for CEL once for all of
        // them; then the main row's copied cells, which move values out of the fields.
        let (rule, key, target, mut children, computed) = {
            let scope = Scope::new(&fields);
            let vars = scope.plain();
            let mut chosen = None;
            for r in rules {
                if r.applies(&vars).map_err(fail)? {
                    chosen = Some(r);
                    break;
                }
            }
            let Some(rule) = chosen else {
                return Err(RecordError::Unmatched {
                    event_type: event_type.to_string(),
                });
            };
            let key = match (&rule.key, self.key_from) {
                (Some(computed), _) => computed
                    .iter()
                    .map(|c| {
                        let cell = rule.cell(c, &vars, &body_schema)?;
                        if is_null(&cell.value) {
                            return Err(format!("{}key column `{}` is null", rule.label, c.name));
                        }
                        Ok(cell)
                    })
                    .collect(),
                (None, KeySource::KafkaKey) => self.key.from_kafka(event.key.take()),
                (None, KeySource::Fields) => self.key.from_fields(scope.fields(), &body_schema),
            }
            .map_err(fail)?;
            let target = self.router.resolve(0, scope.fields()).map_err(fail)?;
            let mut children = Vec::new();
            for child in &rule.also {
                child
                    .project(
                        &scope,
                        &body_schema,
                        &event.position,
                        &self.router,
                        &mut children,
                    )
                    .map_err(fail)?;
            }
            let computed = match (&rule.mapping, rule.op) {
                (Some(mapping), op) if op != OpKind::Delete => Some(
                    mapping
                        .iter()
                        .map(|column| rule.cell(column, &vars, &body_schema))
                        .collect::<Result<Vec<Cell>, String>>()
                        .map_err(fail)?,
                ),
                _ => None,
            };
            (rule, key, target, children, computed)
        };
        let mut cells = Vec::new();
        if let Some(computed) = computed {
            cells = computed;
        } else if rule.op != OpKind::Delete {
            cells.reserve(body_schema.fields.len());
            for (i, f) in body_schema.fields.iter().enumerate() {
                if self.key.columns.contains(&f.name) {
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
        if rule.op == OpKind::Increment
            && let Some(bad) = cells.iter().find(|c| !c.ty.is_numeric())
        {
            return Err(fail(format!(
                "{}increment of column `{}` needs a number, found {}",
                rule.label, bad.column, bad.ty
            )));
        }
        let mut main = Op::new(key, rule.op, cells, event.position);
        main.target = target;
        let mut ops = Vec::with_capacity(1 + children.len());
        ops.push(main);
        ops.append(&mut children);
        Ok(ops)
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

impl Projection for EventProjection {
    fn project(&self, event: Event) -> Result<Vec<Op>, RecordError> {
        self.project_event(event)
    }
}
