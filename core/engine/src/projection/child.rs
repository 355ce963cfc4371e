//! Child writes (`also:`): what an event does to the pipeline's other targets, after its
//! rule's own write. One row, one row per element of a list (`for_each`, read as `item`
//! with its 0-based `index`), or a delete of every row under a key prefix (the lines of a
//! cancelled order).

use std::sync::Arc;

use apache_avro::types::Value;
use cel::{Env, Value as Cel};

use super::route::Router;
use super::rule::{Column, Found, Problems, Source, cell, expression, find_path, path_of};
use crate::config::{ChildConfig, OpKind, PipelineFile};
use crate::event::SourcePosition;
use crate::expr::{Bound, Expression, Scope};
use crate::operation::{Cell, Op};
use crate::schema::EventSchema;
use crate::value::is_null;

/// The variables a `for_each` binds per element.
const ELEMENT_VARIABLES: [&str; 2] = ["item", "index"];

/// One compiled child write.
pub(crate) struct Child {
    /// The declared target (its number among the sink's own and `targets`); routing
    /// picks the concrete one.
    declared: usize,
    /// `also[i] (target), ` for messages.
    label: String,
    for_each: Option<Expression>,
    /// `for_each` as a path to one of the event's arrays, iterated without converting it.
    for_each_path: Option<Vec<String>>,
    when: Option<Expression>,
    op: OpKind,
    /// Key columns in the target's order: all of them, or a prefix for a prefix delete.
    key: Vec<Column>,
    prefix: bool,
    columns: Vec<Column>,
}

/// Compiles one child write; `None` (with the problems recorded) when it cannot run.
pub(super) fn compile(
    env: &Arc<Env>,
    p: &PipelineFile,
    c: &ChildConfig,
    path: &str,
    problems: &mut Problems,
) -> Option<Child> {
    let Some(position) = p.targets.keys().position(|t| *t == c.target) else {
        problems.push((
            format!("{path}.target"),
            format!(
                "`{}` is not one of the pipeline's `targets` ({})",
                c.target,
                p.targets.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
        return None;
    };
    let target_key = &p.targets[&c.target].key;
    let for_each = c
        .for_each
        .as_deref()
        .and_then(|f| expression(env, format!("{path}.for_each"), f, problems));
    let when = c
        .when
        .as_deref()
        .and_then(|w| expression(env, format!("{path}.when"), w, problems));
    let elementwise = c.for_each.is_some();
    let for_each_path = c.for_each.as_deref().and_then(|f| {
        let segments: Vec<String> = f.split('.').map(str::to_owned).collect();
        let plain = segments
            .iter()
            .all(|s| !s.is_empty() && s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'));
        (plain && !ELEMENT_VARIABLES.contains(&segments[0].as_str())).then_some(segments)
    });
    let column = |section: &str, name: &str, value: &str, problems: &mut Problems| {
        let spec = c.spec(name, value);
        if !elementwise && spec.field().is_some_and(|f| ELEMENT_VARIABLES.contains(&f)) {
            problems.push((
                format!("{path}.{section}.{name}"),
                format!("`{value}` is only defined with `for_each`"),
            ));
        }
        let element = elementwise && spec.field().is_some_and(|f| ELEMENT_VARIABLES.contains(&f));
        let segments = if element {
            Some(vec![value.to_owned()])
        } else {
            path_of(value)
        };
        let source = match (spec.field(), segments) {
            (Some(field), _) if !element => Source::Field(field.to_owned()),
            (_, Some(segments)) if spec.ty.is_none() => {
                match expression(env, format!("{path}.{section}.{name}"), value, problems) {
                    Some(e) => Source::Path(segments, e),
                    None => Source::Field(String::new()),
                }
            }
            _ => match expression(env, format!("{path}.{section}.{name}"), value, problems) {
                Some(e) => {
                    if !elementwise
                        && let Some(v) = e
                            .inputs
                            .iter()
                            .find(|v| ELEMENT_VARIABLES.contains(&v.as_str()))
                    {
                        problems.push((
                            format!("{path}.{section}.{name}"),
                            format!("`{v}` is only defined with `for_each`"),
                        ));
                    }
                    Source::Computed(e, spec.ty)
                }
                None => Source::Field(String::new()),
            },
        };
        Column {
            name: Arc::from(name),
            source,
        }
    };
    // The key: every key column of the target, or for a delete its first ones.
    let given = target_key
        .iter()
        .take_while(|k| c.key.contains_key(*k))
        .count();
    let prefix = c.op == OpKind::Delete && given < target_key.len();
    let complete = given == c.key.len() && (given == target_key.len() || prefix) && given > 0;
    if !complete {
        problems.push((
            format!("{path}.key"),
            if c.op == OpKind::Delete {
                format!(
                    "give the first key columns of `{}` (its key is [{}]): all of them deletes \
                     one row, fewer every row under them",
                    c.target,
                    target_key.join(", ")
                )
            } else {
                format!(
                    "give every key column of `{}`, and no other: [{}]",
                    c.target,
                    target_key.join(", ")
                )
            },
        ));
    }
    let key = target_key[..given]
        .iter()
        .map(|k| column("key", k, &c.key[k], problems))
        .collect();
    if c.op == OpKind::Delete && !c.columns.is_empty() {
        problems.push((
            format!("{path}.columns"),
            "a delete takes no columns".into(),
        ));
    }
    for name in c.columns.keys() {
        if target_key.contains(name) {
            problems.push((
                format!("{path}.columns"),
                format!(
                    "`{name}` is a key column of `{}`: give it in `key`",
                    c.target
                ),
            ));
        }
    }
    let columns = c
        .columns
        .iter()
        .map(|(name, value)| column("columns", name, value, problems))
        .collect();
    Some(Child {
        declared: position + 1,
        label: format!(
            "{} ({}), ",
            path.rsplit('.').next().unwrap_or(path),
            c.target
        ),
        for_each,
        for_each_path,
        when,
        op: c.op,
        key,
        prefix,
        columns,
    })
}

impl Child {
    /// Appends this child's operations for one event to `out`.
    pub(super) fn project(
        &self,
        scope: &Scope<'_>,
        schema: &EventSchema,
        position: &SourcePosition,
        router: &Router,
        out: &mut Vec<Op>,
    ) -> Result<(), String> {
        let target = router
            .resolve(self.declared, scope.fields())
            .map_err(|e| format!("{}{e}", self.label))?;
        let Some(for_each) = &self.for_each else {
            return self.one(target, &scope.plain(), schema, position, out);
        };
        // One of the event's own arrays: its elements are read as they are.
        let plain = scope.plain();
        if let Some(path) = &self.for_each_path
            && let Ok(Found::Value(Value::Array(items))) = find_path(&plain, path)
        {
            for (i, item) in items.iter().enumerate() {
                let vars = scope.bind_element(item, i as i64);
                self.one(target, &vars, schema, position, out)?;
            }
            return Ok(());
        }
        let list = match for_each.eval_in(&scope.plain()) {
            Ok(Cel::List(items)) => items,
            Ok(Cel::Null) => return Ok(()),
            Ok(other) => {
                return Err(format!(
                    "{}`for_each`: `{}` gave {}, not a list",
                    self.label,
                    for_each.source(),
                    crate::expr::lists::kind(&other)
                ));
            }
            Err(e) => return Err(format!("{}`for_each`: {e}", self.label)),
        };
        for (i, item) in list.iter().enumerate() {
            // The element is converted for CEL once, for the key, columns and condition.
            let vars = scope.bind(vec![("item", item.clone()), ("index", Cel::Int(i as i64))]);
            self.one(target, &vars, schema, position, out)?;
        }
        Ok(())
    }

    fn one(
        &self,
        target: usize,
        vars: &Bound<'_, '_>,
        schema: &EventSchema,
        position: &SourcePosition,
        out: &mut Vec<Op>,
    ) -> Result<(), String> {
        if let Some(when) = &self.when
            && !when
                .eval_bool_in(vars)
                .map_err(|e| format!("{}`when`: {e}", self.label))?
        {
            return Ok(());
        }
        let key = self
            .key
            .iter()
            .map(|c| {
                let cell = cell(&self.label, c, vars, schema)?;
                if is_null(&cell.value) {
                    return Err(format!("{}key column `{}` is null", self.label, c.name));
                }
                Ok(cell)
            })
            .collect::<Result<Vec<Cell>, String>>()?;
        let cells = match self.op {
            OpKind::Delete => Vec::new(),
            _ => self
                .columns
                .iter()
                .map(|c| cell(&self.label, c, vars, schema))
                .collect::<Result<Vec<Cell>, String>>()?,
        };
        if self.op == OpKind::Increment
            && let Some(bad) = cells.iter().find(|c| !c.ty.is_numeric())
        {
            return Err(format!(
                "{}increment of column `{}` needs a number, found {}",
                self.label, bad.column, bad.ty
            ));
        }
        out.push(Op {
            target,
            key,
            prefix: self.prefix,
            kind: self.op,
            cells,
            position: position.clone(),
        });
        Ok(())
    }
}
