//! The rules of the `events` section, compiled once: conditions, computed columns and
//! computed keys as CEL programs, field copies as names.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use cel::Env;

use crate::config::{ColumnKind, ColumnSpec, EventConfig, OpKind, PipelineFile};
use crate::expr::{Expression, column};
use crate::operation::Cell;
use crate::schema::EventSchema;
use crate::value::unwrap_union;

/// Where one column's value comes from.
pub(super) enum Source {
    /// A field, copied exactly with its schema's type.
    Field(String),
    /// A CEL expression and the column's declared type, if any.
    Computed(Expression, Option<ColumnKind>),
}

/// One column of a rule (or one key column).
pub(super) struct Column {
    pub name: Arc<str>,
    pub source: Source,
}

/// One compiled rule.
pub(super) struct Rule {
    /// How messages name the rule: `rule 2, ` when the type has several, else empty.
    pub label: String,
    pub when: Option<Expression>,
    pub op: OpKind,
    /// `None`: every field but the key fields, same names.
    pub mapping: Option<Vec<Column>>,
    /// A computed key, in the order of the key columns; `None`: the pipeline's `key.from`.
    pub key: Option<Vec<Column>>,
    /// Child writes into other targets, in order.
    pub also: Vec<super::child::Child>,
}

/// Problems found while compiling, as `(field path, message)`.
pub type Problems = Vec<(String, String)>;

/// Compiles every rule of the pipeline; the problems name the field of each.
pub(super) fn compile(p: &PipelineFile) -> Result<HashMap<String, Vec<Rule>>, Problems> {
    let env = crate::expr::environment();
    let mut problems = Vec::new();
    let mut out = HashMap::new();
    for (event_type, rules) in &p.events {
        let several = rules.0.len() > 1;
        let mut compiled = Vec::new();
        for (i, rule) in rules.0.iter().enumerate() {
            let path = if several {
                format!("events.{event_type}[{i}]")
            } else {
                format!("events.{event_type}")
            };
            if rule.when.is_none() && i + 1 < rules.0.len() {
                problems.push((
                    format!("{path}.op"),
                    format!(
                        "this rule has no `when`, so the {} after it can never apply",
                        if rules.0.len() - i > 2 {
                            "rules"
                        } else {
                            "rule"
                        }
                    ),
                ));
            }
            let label = if several {
                format!("rule {}, ", i + 1)
            } else {
                String::new()
            };
            compiled.push(compile_rule(&env, p, rule, &path, label, &mut problems));
        }
        out.insert(event_type.clone(), compiled);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn compile_rule(
    env: &Arc<Env>,
    p: &PipelineFile,
    rule: &EventConfig,
    path: &str,
    label: String,
    problems: &mut Problems,
) -> Rule {
    let when = rule
        .when
        .as_deref()
        .and_then(|w| expression(env, format!("{path}.when"), w, problems));
    let column = |section: &str, name: &str, spec: &ColumnSpec, problems: &mut Problems| {
        Column {
            name: Arc::from(name),
            source: match spec.field() {
                Some(field) => Source::Field(field.to_owned()),
                None => {
                    match expression(
                        env,
                        format!("{path}.{section}.{name}"),
                        &spec.value,
                        problems,
                    ) {
                        Some(e) => Source::Computed(e, spec.ty),
                        // Reported; a pipeline with problems is never run.
                        None => Source::Field(String::new()),
                    }
                }
            },
        }
    };
    let mapping = (rule.fields.is_some() || !rule.columns.is_empty()).then(|| {
        let copied = rule.fields.iter().flatten().map(|f| Column {
            name: Arc::from(f.as_str()),
            source: Source::Field(f.clone()),
        });
        let columns: Vec<Column> = rule
            .columns
            .iter()
            .map(|(name, value)| column("columns", name, &rule.spec(name, value), problems))
            .collect();
        copied.chain(columns).collect()
    });
    for name in rule.types.keys() {
        let computed = |v: &String| rule.spec(name, v).field().is_none();
        match rule.columns.get(name).or_else(|| rule.key.get(name)) {
            Some(v) if computed(v) => {}
            Some(_) => problems.push((
                format!("{path}.types.{name}"),
                format!("`{name}` copies a field, which keeps its schema's type; only computed columns take a declared type"),
            )),
            None => problems.push((
                format!("{path}.types.{name}"),
                format!("`{name}` is not a column of this rule"),
            )),
        }
    }
    let key = (!rule.key.is_empty()).then(|| {
        let names: Vec<&String> = rule.key.keys().collect();
        let wanted: Vec<&String> = {
            let mut k: Vec<&String> = p.key.columns.iter().collect();
            k.sort();
            k
        };
        if names != wanted {
            problems.push((
                format!("{path}.key"),
                format!(
                    "a computed key gives every key column and no other: key.columns is [{}]",
                    p.key.columns.join(", ")
                ),
            ));
        }
        p.key
            .columns
            .iter()
            .filter_map(|k| {
                let value = rule.key.get(k)?;
                Some(column("key", k, &rule.spec(k, value), problems))
            })
            .collect()
    });
    let also = rule
        .also
        .iter()
        .enumerate()
        .filter_map(|(i, child)| {
            super::child::compile(env, p, child, &format!("{path}.also[{i}]"), problems)
        })
        .collect();
    Rule {
        label,
        when,
        op: rule.op,
        mapping,
        key,
        also,
    }
}

pub(super) fn expression(
    env: &Arc<Env>,
    field: String,
    source: &str,
    problems: &mut Problems,
) -> Option<Expression> {
    match Expression::compile(env, source) {
        Ok(e) => Some(e),
        Err(e) => {
            problems.push((field, format!("`{source}` does not compile: {e}")));
            None
        }
    }
}

impl Rule {
    /// Whether the rule applies to an event with these fields.
    pub fn applies(&self, fields: &[(String, Value)]) -> Result<bool, String> {
        match &self.when {
            None => Ok(true),
            Some(when) => when
                .eval_bool(fields)
                .map_err(|e| format!("{}`when`: {e}", self.label)),
        }
    }

    /// The cell of one column (copied or computed), or why there is none.
    pub fn cell(
        &self,
        c: &Column,
        fields: &[(String, Value)],
        schema: &EventSchema,
    ) -> Result<Cell, String> {
        cell(&self.label, c, fields, &[], schema)
    }
}

/// The cell of one column (copied or computed) with `extra` variables (a child row's
/// `item` and `index`), or why there is none; `label` names the rule in messages.
pub(super) fn cell(
    label: &str,
    c: &Column,
    fields: &[(String, Value)],
    extra: &[(&str, &cel::Value)],
    schema: &EventSchema,
) -> Result<Cell, String> {
    match &c.source {
        Source::Field(field) => {
            let found = fields.iter().find(|(n, _)| n == field);
            let (Some(ty), Some((_, value))) = (schema.field_type(field), found) else {
                return Err(format!(
                    "{label}field `{field}` (for column `{}`) is not in the event (if `{field}` \
                     is meant as text, write it as a CEL string: \"'{field}'\")",
                    c.name
                ));
            };
            // A field may fill several columns: copied, not moved.
            Ok(Cell {
                column: c.name.clone(),
                ty,
                value: unwrap_union(value).clone(),
            })
        }
        Source::Computed(e, declared) => {
            let fail = |e: String| format!("{label}column `{}`: {e}", c.name);
            let out = e.eval_with(fields, extra).map_err(fail)?;
            let (ty, value) = column::to_cell(out, *declared)
                .map_err(|err| fail(format!("`{}` {err}", e.source())))?;
            Ok(Cell {
                column: c.name.clone(),
                ty,
                value,
            })
        }
    }
}
