//! Compiled upcaster steps and what they do to an event's value.
//!
//! Every step has been checked against the event's schema before it runs (see
//! [`super::schema_edit`]), so here a missing field only means a null parent record.

use std::sync::Arc;

use apache_avro::types::Value;

use crate::config::{Rounding, ValueType};
use crate::expr::Expression;

/// A dotted field path, split.
pub type Path = Vec<String>;

/// One compiled step.
#[derive(Debug)]
pub enum Step {
    /// `rename` and `move`: take the value at `from`, put it at `to`.
    Move {
        /// Source path.
        from: Path,
        /// Destination path.
        to: Path,
    },
    /// Set a field that is absent or null.
    Default {
        /// Field path.
        field: Path,
        /// The value, already of `ty`.
        value: Value,
        /// Its type when the field is added.
        ty: ValueType,
    },
    /// Remove a field.
    Drop(Path),
    /// Convert a field's value.
    Convert {
        /// Field path.
        field: Path,
        /// Target type.
        to: ValueType,
        /// Factor for numbers.
        multiply: Option<f64>,
        /// Fraction → integer.
        round: Rounding,
    },
    /// Set a field from an expression over the top-level fields.
    Compute {
        /// Field path.
        field: Path,
        /// The compiled expression.
        expr: Expression,
        /// Result type.
        ty: ValueType,
    },
    /// The event continues as another type at a version.
    RenameType {
        /// New event type.
        to: Arc<str>,
        /// Its version.
        version: u32,
    },
}

impl Step {
    /// The step's name in the pipeline file, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Move { .. } => "move",
            Step::Default { .. } => "default",
            Step::Drop(_) => "drop",
            Step::Convert { .. } => "convert",
            Step::Compute { .. } => "compute",
            Step::RenameType { .. } => "rename_type",
        }
    }

    /// Applies the step to an event body (a record).
    pub fn apply(&self, body: &mut Value) -> Result<(), String> {
        match self {
            Step::Move { from, to } => {
                let v = take(body, from).unwrap_or(Value::Null);
                put(body, to, v);
            }
            Step::Default { field, value, .. } => match get_mut(body, field) {
                Some(v) if !crate::value::is_null(v) => {}
                Some(v) => *v = value.clone(),
                None => put(body, field, value.clone()),
            },
            Step::Drop(field) => {
                take(body, field);
            }
            Step::Convert {
                field,
                to,
                multiply,
                round,
            } => {
                if let Some(v) = get_mut(body, field) {
                    *v = convert(v, *to, *multiply, *round)
                        .map_err(|e| format!("field `{}`: {e}", field.join(".")))?;
                }
            }
            Step::Compute { field, expr, ty } => {
                let top = fields_mut(body).ok_or("the event is not a record")?;
                let v = expr
                    .eval(top, *ty)
                    .map_err(|e| format!("field `{}`: {e}", field.join(".")))?;
                put(body, field, v);
            }
            Step::RenameType { .. } => {}
        }
        Ok(())
    }
}

/// The fields of a record, through union wrappers.
pub fn fields_mut(v: &mut Value) -> Option<&mut Vec<(String, Value)>> {
    match v {
        Value::Record(f) => Some(f),
        Value::Union(_, inner) => fields_mut(inner),
        _ => None,
    }
}

/// The record holding the last segment of `path`; created on the way when `create`.
/// `None` when a record on the way is null (or absent and not created).
fn parent<'a>(
    root: &'a mut Value,
    path: &[String],
    create: bool,
) -> Option<&'a mut Vec<(String, Value)>> {
    let mut cur = fields_mut(root)?;
    for seg in &path[..path.len() - 1] {
        let idx = match cur.iter().position(|(n, _)| n == seg) {
            Some(i) => i,
            None if create => {
                cur.push((seg.clone(), Value::Record(Vec::new())));
                cur.len() - 1
            }
            None => return None,
        };
        cur = fields_mut(&mut cur[idx].1)?;
    }
    Some(cur)
}

fn last(path: &[String]) -> &str {
    &path[path.len() - 1]
}

fn get_mut<'a>(root: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let p = parent(root, path, false)?;
    p.iter_mut().find(|(n, _)| n == last(path)).map(|(_, v)| v)
}

fn take(root: &mut Value, path: &[String]) -> Option<Value> {
    let p = parent(root, path, false)?;
    let idx = p.iter().position(|(n, _)| n == last(path))?;
    Some(p.remove(idx).1)
}

fn put(root: &mut Value, path: &[String], value: Value) {
    let Some(p) = parent(root, path, true) else {
        return;
    };
    match p.iter_mut().find(|(n, _)| n == last(path)) {
        Some((_, v)) => *v = value,
        None => p.push((last(path).to_owned(), value)),
    }
}

/// Converts a scalar to `to`. Null stays null.
pub fn convert(
    v: &Value,
    to: ValueType,
    multiply: Option<f64>,
    round: Rounding,
) -> Result<Value, String> {
    use ValueType as T;
    let v = crate::value::unwrap_union(v);
    if matches!(v, Value::Null) {
        return Ok(Value::Null);
    }
    if to == T::String {
        let s = match v {
            Value::String(s) | Value::Enum(_, s) => s.clone(),
            Value::Boolean(b) => b.to_string(),
            other => match number(other, multiply)? {
                Num::Int(i) => i.to_string(),
                Num::Float(f) => f.to_string(),
            },
        };
        return Ok(Value::String(s));
    }
    if to == T::Boolean {
        return match v {
            Value::Boolean(b) => Ok(Value::Boolean(*b)),
            Value::String(s) if s == "true" || s == "false" => Ok(Value::Boolean(s == "true")),
            other => Err(format!("{other:?} is not a boolean")),
        };
    }
    let n = match (v, to) {
        (Value::String(s), T::TimestampMillis) if s.parse::<i64>().is_err() => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp: {e}"))?;
            Num::Int(t.timestamp_millis())
        }
        (Value::TimestampMicros(us), T::TimestampMillis) => Num::Int(us.div_euclid(1000)),
        (Value::TimestampNanos(ns), T::TimestampMillis) => Num::Int(ns.div_euclid(1_000_000)),
        (other, _) => number(other, multiply)?,
    };
    let int = |n: Num| -> Result<i64, String> {
        match n {
            Num::Int(i) => Ok(i),
            Num::Float(f) => {
                let r = match round {
                    Rounding::Nearest => f.round(),
                    Rounding::Floor => f.floor(),
                    Rounding::Ceil => f.ceil(),
                    Rounding::Truncate => f.trunc(),
                    Rounding::Exact if f.fract() == 0.0 => f,
                    Rounding::Exact => return Err(format!("{f} has a fraction (round: exact)")),
                };
                if !r.is_finite() || r < i64::MIN as f64 || r >= i64::MAX as f64 {
                    return Err(format!("{f} does not fit a long"));
                }
                Ok(r as i64)
            }
        }
    };
    let float = |n: Num| match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    };
    Ok(match to {
        T::Int => {
            let i = int(n)?;
            Value::Int(i32::try_from(i).map_err(|_| format!("{i} does not fit an int"))?)
        }
        T::Long => Value::Long(int(n)?),
        T::TimestampMillis => Value::TimestampMillis(int(n)?),
        T::Float => Value::Float(float(n) as f32),
        T::Double => Value::Double(float(n)),
        T::String | T::Boolean => unreachable!("handled above"),
    })
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

/// A number from a numeric or numeric-string value, times `multiply`.
fn number(v: &Value, multiply: Option<f64>) -> Result<Num, String> {
    if let Some(i) = crate::value::integer(v) {
        return scaled(Num::Int(i), multiply);
    }
    let n = match v {
        Value::Float(f) => Num::Float(*f as f64),
        Value::Double(f) => Num::Float(*f),
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(i) => Num::Int(i),
            Err(_) => Num::Float(
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("`{s}` is not a number"))?,
            ),
        },
        other => return Err(format!("{other:?} is not a number")),
    };
    scaled(n, multiply)
}

/// `n` times `multiply`, exactly for integer factors.
fn scaled(n: Num, multiply: Option<f64>) -> Result<Num, String> {
    Ok(match (n, multiply) {
        (n, None) => n,
        (Num::Int(i), Some(m)) if m.fract() == 0.0 && m.abs() < 1e15 => Num::Int(
            i.checked_mul(m as i64)
                .ok_or_else(|| format!("{i} × {m} overflows"))?,
        ),
        (Num::Int(i), Some(m)) => Num::Float(i as f64 * m),
        (Num::Float(f), Some(m)) => Num::Float(f * m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: Vec<(&str, Value)>) -> Value {
        Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn path(s: &str) -> Path {
        s.split('.').map(str::to_owned).collect()
    }

    fn move_in(v: &mut Value, from: &str, to: &str) {
        Step::Move {
            from: path(from),
            to: path(to),
        }
        .apply(v)
        .unwrap();
    }

    #[test]
    fn moves_into_and_out_of_nested_records() {
        let mut v = rec(vec![("customer", Value::String("ann".into()))]);
        move_in(&mut v, "customer", "buyer.name");
        assert_eq!(
            v,
            rec(vec![(
                "buyer",
                rec(vec![("name", Value::String("ann".into()))])
            )])
        );
        move_in(&mut v, "buyer.name", "customer");
        assert_eq!(
            v,
            rec(vec![
                ("buyer", rec(vec![])),
                ("customer", Value::String("ann".into()))
            ])
        );
        // Out of a null (nullable) record: the moved value is null.
        let mut v = rec(vec![("buyer", Value::Union(0, Box::new(Value::Null)))]);
        move_in(&mut v, "buyer.name", "customer");
        assert_eq!(
            v,
            rec(vec![
                ("buyer", Value::Union(0, Box::new(Value::Null))),
                ("customer", Value::Null)
            ])
        );
    }

    #[test]
    fn defaults_fill_absent_and_null_fields_only() {
        let step = Step::Default {
            field: path("currency"),
            value: Value::String("EUR".into()),
            ty: ValueType::String,
        };
        let mut absent = rec(vec![]);
        step.apply(&mut absent).unwrap();
        assert_eq!(absent, rec(vec![("currency", Value::String("EUR".into()))]));
        let mut null = rec(vec![("currency", Value::Union(0, Box::new(Value::Null)))]);
        step.apply(&mut null).unwrap();
        assert_eq!(null, rec(vec![("currency", Value::String("EUR".into()))]));
        let mut set = rec(vec![("currency", Value::String("USD".into()))]);
        step.apply(&mut set).unwrap();
        assert_eq!(set, rec(vec![("currency", Value::String("USD".into()))]));
    }

    #[test]
    fn drops_fields() {
        let mut v = rec(vec![("a", Value::Int(1)), ("b", Value::Int(2))]);
        Step::Drop(path("a")).apply(&mut v).unwrap();
        assert_eq!(v, rec(vec![("b", Value::Int(2))]));
    }

    #[test]
    fn converts_euros_to_cents_and_other_types() {
        let c = |v: Value, to, m, r| convert(&v, to, m, r);
        assert_eq!(
            c(
                Value::Double(12.345),
                ValueType::Long,
                Some(100.0),
                Rounding::Nearest
            )
            .unwrap(),
            Value::Long(1235)
        );
        assert_eq!(
            c(
                Value::Double(-0.5),
                ValueType::Long,
                None,
                Rounding::Nearest
            )
            .unwrap(),
            Value::Long(-1)
        );
        assert_eq!(
            c(Value::Double(1.9), ValueType::Int, None, Rounding::Truncate).unwrap(),
            Value::Int(1)
        );
        assert!(c(Value::Double(1.5), ValueType::Long, None, Rounding::Exact).is_err());
        assert_eq!(
            c(
                Value::Long(7),
                ValueType::Long,
                Some(100.0),
                Rounding::Exact
            )
            .unwrap(),
            Value::Long(700)
        );
        assert_eq!(
            c(
                Value::String("42".into()),
                ValueType::Int,
                None,
                Rounding::Nearest
            )
            .unwrap(),
            Value::Int(42)
        );
        assert_eq!(
            c(Value::Long(5), ValueType::String, None, Rounding::Nearest).unwrap(),
            Value::String("5".into())
        );
        assert_eq!(
            c(
                Value::String("2023-11-14T22:13:20Z".into()),
                ValueType::TimestampMillis,
                None,
                Rounding::Nearest
            )
            .unwrap(),
            Value::TimestampMillis(1_700_000_000_000)
        );
        assert_eq!(
            c(
                Value::Long(1_700_000_000_000),
                ValueType::TimestampMillis,
                None,
                Rounding::Nearest
            )
            .unwrap(),
            Value::TimestampMillis(1_700_000_000_000)
        );
        assert!(
            c(
                Value::Long(1 << 40),
                ValueType::Int,
                None,
                Rounding::Nearest
            )
            .is_err()
        );
        assert!(
            c(
                Value::String("x".into()),
                ValueType::Long,
                None,
                Rounding::Nearest
            )
            .is_err()
        );
        assert_eq!(
            c(
                Value::Union(0, Box::new(Value::Null)),
                ValueType::Long,
                None,
                Rounding::Nearest
            )
            .unwrap(),
            Value::Null
        );
    }
}
