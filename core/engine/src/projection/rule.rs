//! The rules of the `events` section, compiled once: conditions, computed columns and
//! computed keys as CEL programs, field copies as names.

use std::collections::HashMap;
use std::sync::Arc;

use cel::Env;

use crate::config::{ColumnKind, ColumnSpec, EventConfig, OpKind, PipelineFile};
use crate::expr::{Bound, Expression, column};
use crate::operation::Cell;
use apache_avro::types::Value;

use crate::schema::{ColumnType, EventSchema};
use crate::value::unwrap_union;

/// Where one column's value comes from.
pub(super) enum Source {
    /// A field, copied exactly with its schema's type.
    Field(String),
    /// A path into the event's values (`customer.id`, a child row's `item.sku`, `index`),
    /// copied exactly with the type its value has; the same as a CEL expression when the
    /// value is not one of the event's own (an element of a list CEL computed) or has no
    /// column type of its own (a null, a nested decimal).
    Path(Vec<String>, Expression),
    /// A CEL expression and the column's declared type, if any.
    Computed(Expression, Option<ColumnKind>),
}

/// The segments of a dotted path of identifiers (`item.sku`), at least two; `None` for
/// anything else.
pub(crate) fn path_of(value: &str) -> Option<Vec<String>> {
    let segments: Vec<String> = value.split('.').map(str::to_owned).collect();
    let identifier = |s: &String| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (segments.len() >= 2 && segments.iter().all(identifier)).then_some(segments)
}

/// What a path finds.
pub(super) enum Found<'s> {
    /// One of the event's values (or of the bound element).
    Value(&'s Value),
    /// The bound element's position.
    Index(i64),
}

/// The value at `path` among the variables: the bound element for `item`, its position
/// for `index`, else an event field; then through records and maps. `Err(None)`: the
/// root is not one of the event's own values (CEL must read it); `Err(Some(segment))`:
/// that segment is missing.
pub(super) fn find_path<'s>(
    vars: &Bound<'s, '_>,
    path: &[String],
) -> Result<Found<'s>, Option<String>> {
    let (root, rest) = path.split_first().ok_or(None)?;
    let mut value: &'s Value = match (root.as_str(), vars.element()) {
        ("item", Some((item, _))) => item,
        ("index", Some((_, i))) if rest.is_empty() => return Ok(Found::Index(i)),
        ("item" | "index", None) if vars.has_computed_item() => return Err(None),
        _ => {
            &vars
                .fields()
                .iter()
                .find(|(n, _)| n == root)
                .ok_or_else(|| Some(root.clone()))?
                .1
        }
    };
    for segment in rest {
        value = match unwrap_union(value) {
            Value::Record(fields) => {
                &fields
                    .iter()
                    .find(|(n, _)| n == segment)
                    .ok_or_else(|| Some(segment.clone()))?
                    .1
            }
            Value::Map(m) => m.get(segment).ok_or_else(|| Some(segment.clone()))?,
            _ => return Err(Some(segment.clone())),
        };
    }
    Ok(Found::Value(unwrap_union(value)))
}

/// The column type a value has by itself; `None` when it needs its schema (a decimal not
/// given its scale, see [`crate::decimals`]) or has none (null). A decimal's precision is
/// not in its value: the column is an unconstrained decimal, which holds it exactly.
pub(super) fn value_type(v: &Value) -> Option<ColumnType> {
    Some(match v {
        Value::Boolean(_) => ColumnType::Boolean,
        Value::Int(_) => ColumnType::Int,
        Value::Long(_) => ColumnType::Long,
        Value::Float(_) => ColumnType::Float,
        Value::Double(_) => ColumnType::Double,
        Value::Bytes(_) | Value::Fixed(..) => ColumnType::Bytes,
        Value::Uuid(_) => ColumnType::Uuid,
        Value::Date(_) => ColumnType::Date,
        Value::TimeMillis(_) | Value::TimeMicros(_) => ColumnType::Time,
        Value::TimestampMillis(_) | Value::TimestampMicros(_) | Value::TimestampNanos(_) => {
            ColumnType::Timestamp
        }
        Value::LocalTimestampMillis(_)
        | Value::LocalTimestampMicros(_)
        | Value::LocalTimestampNanos(_) => ColumnType::LocalTimestamp,
        Value::String(_) | Value::Enum(..) => ColumnType::String,
        Value::Array(_) | Value::Map(_) | Value::Record(_) => ColumnType::Json,
        Value::Union(_, inner) => return value_type(inner),
        Value::BigDecimal(d) => ColumnType::Decimal {
            precision: 0,
            scale: u32::try_from(d.fractional_digit_count()).unwrap_or(0),
        },
        Value::Null | Value::Decimal(_) | Value::Duration(_) => return None,
    })
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
            source: match (spec.field(), path_of(&spec.value)) {
                (Some(field), _) => Source::Field(field.to_owned()),
                (None, Some(segments)) if spec.ty.is_none() => {
                    match expression(
                        env,
                        format!("{path}.{section}.{name}"),
                        &spec.value,
                        problems,
                    ) {
                        Some(e) => Source::Path(segments, e),
                        None => Source::Field(String::new()),
                    }
                }
                (None, _) => {
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
    /// Whether the rule applies to an event with these variables.
    pub fn applies(&self, vars: &Bound<'_, '_>) -> Result<bool, String> {
        match &self.when {
            None => Ok(true),
            Some(when) => when
                .eval_bool_in(vars)
                .map_err(|e| format!("{}`when`: {e}", self.label)),
        }
    }

    /// The cell of one column (copied or computed), or why there is none.
    pub fn cell(
        &self,
        c: &Column,
        vars: &Bound<'_, '_>,
        schema: &EventSchema,
    ) -> Result<Cell, String> {
        cell(&self.label, c, vars, schema)
    }
}

/// The cell of one column (copied or computed) in `vars` (the event's fields, and a
/// child row's `item` and `index`), or why there is none; `label` names the rule in
/// messages.
pub(super) fn cell(
    label: &str,
    c: &Column,
    vars: &Bound<'_, '_>,
    schema: &EventSchema,
) -> Result<Cell, String> {
    match &c.source {
        Source::Field(field) => {
            let found = vars.fields().iter().find(|(n, _)| n == field);
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
        Source::Path(path, fallback) => {
            match find_path(vars, path) {
                Ok(Found::Index(i)) => {
                    return Ok(Cell {
                        column: c.name.clone(),
                        ty: ColumnType::Long,
                        value: Value::Long(i),
                    });
                }
                Ok(Found::Value(value)) => {
                    if let Some(ty) = value_type(value) {
                        return Ok(Cell {
                            column: c.name.clone(),
                            ty,
                            value: value.clone(),
                        });
                    }
                }
                Err(Some(missing)) => {
                    return Err(format!(
                        "{label}column `{}`: `{}` has no field `{missing}`",
                        c.name,
                        path.join(".")
                    ));
                }
                Err(None) => {}
            }
            let fail = |e: String| format!("{label}column `{}`: {e}", c.name);
            let out = fallback.eval_in(vars).map_err(fail)?;
            let (ty, value) = column::to_cell(out, None)
                .map_err(|err| fail(format!("`{}` {err}", fallback.source())))?;
            Ok(Cell {
                column: c.name.clone(),
                ty,
                value,
            })
        }
        Source::Computed(e, declared) => {
            let fail = |e: String| format!("{label}column `{}`: {e}", c.name);
            let out = e.eval_in(vars).map_err(fail)?;
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
