//! Building the chains from the pipeline file, with every start-up check: gaps,
//! duplicates, steps out of place, expressions that do not compile, renamed types that
//! loop. Problems are returned as `(field path, message)`, all at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use apache_avro::types::Value;
use cel::Env;

use super::schema_edit::path;
use super::step::Step;
use crate::config::{UpcastStep, UpcasterConfig, ValueType};
use crate::expr::Expression;

/// The steps from one version to the next.
#[derive(Debug)]
pub struct Block {
    /// The steps in order.
    pub steps: Vec<Step>,
    /// The type and version the event has after this block.
    pub then: (Arc<str>, u32),
}

/// The chain of one event type: `blocks[i]` upcasts version `first + i`.
#[derive(Debug)]
pub struct Chain {
    /// The oldest version with an upcaster.
    pub first: u32,
    /// One block per version.
    pub blocks: Vec<Arc<Block>>,
}

impl Chain {
    /// The newest version: events at or above it pass through.
    pub fn current(&self) -> u32 {
        self.first + self.blocks.len() as u32
    }
}

/// Chains by event type.
pub type Chains = HashMap<Arc<str>, Chain>;

/// Start-up problems as `(field path, message)`.
pub type Problems = Vec<(String, String)>;

/// Compiles the chains of every event type.
pub fn build(
    config: &BTreeMap<String, UpcasterConfig>,
    env: &Arc<Env>,
) -> Result<Chains, Problems> {
    let mut problems = Vec::new();
    let mut chains = HashMap::new();
    for (event_type, upcaster) in config {
        let at = format!("upcasters.{event_type}.chain");
        let mut froms: Vec<u32> = upcaster.chain.iter().map(|v| v.from).collect();
        froms.sort_unstable();
        for pair in froms.windows(2) {
            if pair[0] == pair[1] {
                problems.push((
                    at.clone(),
                    format!(
                        "{event_type}: two entries upcast from version {}; keep one",
                        pair[0]
                    ),
                ));
            } else if pair[1] != pair[0] + 1 {
                problems.push((
                    at.clone(),
                    format!(
                        "{event_type}: the chain has a gap: nothing upcasts version {} (entries go from v{} and v{})",
                        pair[0] + 1,
                        pair[0],
                        pair[1]
                    ),
                ));
            }
        }
        if froms.first() == Some(&0) {
            problems.push((at.clone(), format!("{event_type}: versions start at 1")));
        }
        let mut entries: Vec<_> = upcaster.chain.iter().collect();
        entries.sort_by_key(|v| v.from);
        entries.dedup_by_key(|v| v.from);
        let mut blocks = Vec::new();
        for entry in entries {
            let what = format!("{event_type} v{}→v{}", entry.from, entry.from + 1);
            let mut steps = Vec::new();
            let mut then: (Arc<str>, u32) = (Arc::from(event_type.as_str()), entry.from + 1);
            for (i, step) in entry.steps.iter().enumerate() {
                let field = format!("{at}[from {}].steps[{i}]", entry.from);
                if matches!(steps.last(), Some(Step::RenameType { .. })) {
                    problems.push((
                        field.clone(),
                        format!("{what}: rename_type must be the last step"),
                    ));
                }
                match compile_step(step, env) {
                    Ok(s) => {
                        if let Step::RenameType { to, version } = &s {
                            then = (to.clone(), *version);
                        }
                        steps.push(s);
                    }
                    Err(message) => problems.push((field, format!("{what}: {message}"))),
                }
            }
            blocks.push(Arc::new(Block { steps, then }));
        }
        if let Some(&first) = froms.first() {
            chains.insert(Arc::from(event_type.as_str()), Chain { first, blocks });
        }
    }
    problems.extend(loops(&chains));
    if problems.is_empty() {
        Ok(chains)
    } else {
        Err(problems)
    }
}

fn compile_step(step: &UpcastStep, env: &Arc<Env>) -> Result<Step, String> {
    let checked = |p: &str| -> Result<Vec<String>, String> {
        let parts = path(p);
        if parts.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "`{p}` is not a field path (use names joined by dots)"
            ));
        }
        Ok(parts)
    };
    Ok(match step {
        UpcastStep::Rename(ft) => {
            let (from, to) = (checked(&ft.from)?, checked(&ft.to)?);
            if from[..from.len() - 1] != to[..to.len() - 1] {
                return Err(format!(
                    "rename `{}` to `{}` changes the record it is in: use `move`",
                    ft.from, ft.to
                ));
            }
            Step::Move { from, to }
        }
        UpcastStep::Move(ft) => Step::Move {
            from: checked(&ft.from)?,
            to: checked(&ft.to)?,
        },
        UpcastStep::Drop(p) => Step::Drop(checked(p)?),
        UpcastStep::Default(d) => {
            let ty = match (d.ty, &d.value) {
                (Some(t), _) => t,
                (None, serde_json::Value::String(_)) => ValueType::String,
                (None, serde_json::Value::Bool(_)) => ValueType::Boolean,
                (None, serde_json::Value::Number(n)) if n.is_i64() => ValueType::Long,
                (None, serde_json::Value::Number(_)) => ValueType::Double,
                (None, other) => {
                    return Err(format!(
                        "default `{}`: give a `type` for the value {other}",
                        d.field
                    ));
                }
            };
            Step::Default {
                field: checked(&d.field)?,
                value: default_value(&d.value, ty)
                    .map_err(|e| format!("default `{}`: {e}", d.field))?,
                ty,
            }
        }
        UpcastStep::Convert(c) => Step::Convert {
            field: checked(&c.field)?,
            to: c.to,
            multiply: c.multiply,
            round: c.round,
        },
        UpcastStep::Compute(c) => Step::Compute {
            field: checked(&c.field)?,
            expr: Expression::compile(env, &c.expr)
                .map_err(|e| format!("expression `{}` does not compile: {e}", c.expr))?,
            ty: c.ty,
        },
        UpcastStep::RenameType(r) => {
            if r.version == 0 {
                return Err("rename_type: versions start at 1".into());
            }
            Step::RenameType {
                to: Arc::from(r.to.as_str()),
                version: r.version,
            }
        }
    })
}

/// The YAML value of a `default`, as an Avro value of its type.
fn default_value(v: &serde_json::Value, ty: ValueType) -> Result<Value, String> {
    use serde_json::Value as J;
    if v.is_null() {
        return Ok(Value::Null);
    }
    let wrong = || format!("{v} is not a {ty:?}");
    Ok(match (ty, v) {
        (ValueType::String, J::String(s)) => Value::String(s.clone()),
        (ValueType::Boolean, J::Bool(b)) => Value::Boolean(*b),
        (ValueType::Int, J::Number(n)) => Value::Int(
            n.as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(wrong)?,
        ),
        (ValueType::Long, J::Number(n)) => Value::Long(n.as_i64().ok_or_else(wrong)?),
        (ValueType::TimestampMillis, J::Number(n)) => {
            Value::TimestampMillis(n.as_i64().ok_or_else(wrong)?)
        }
        (ValueType::TimestampMillis, J::String(s)) => Value::TimestampMillis(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp: {e}"))?
                .timestamp_millis(),
        ),
        (ValueType::Double, J::Number(n)) => Value::Double(n.as_f64().ok_or_else(wrong)?),
        (ValueType::Float, J::Number(n)) => Value::Float(n.as_f64().ok_or_else(wrong)? as f32),
        _ => return Err(wrong()),
    })
}

/// Renamed types that lead back to where they started.
fn loops(chains: &Chains) -> Problems {
    let mut problems = Vec::new();
    let mut reported = HashSet::new();
    for (ty, chain) in chains {
        let mut seen = vec![(ty.clone(), chain.first)];
        let (mut t, mut v) = (ty.clone(), chain.first);
        while let Some(c) = chains.get(&t) {
            if v < c.first || v >= c.current() {
                break;
            }
            let next = c.blocks[(v - c.first) as usize].then.clone();
            if seen.contains(&next) {
                if reported.insert(next.0.clone()) {
                    let path: Vec<String> = seen
                        .iter()
                        .chain([&next])
                        .map(|(t, v)| format!("{t} v{v}"))
                        .collect();
                    problems.push((
                        format!("upcasters.{ty}.chain"),
                        format!("renamed event types loop: {}", path.join(" → ")),
                    ));
                }
                break;
            }
            seen.push(next.clone());
            (t, v) = next;
        }
    }
    problems
}
