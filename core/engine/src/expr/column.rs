//! The value of a computed column: a CEL result as a typed cell value.
//!
//! The column type is the one declared in the pipeline (`{value: …, type: long}`) or, when
//! none is declared, the one CEL's result has: `int` → long, `uint` → long (when it fits),
//! `double` → double, `string`, `bool`, `bytes`, `timestamp` (microseconds), lists and
//! maps → JSON. A result that does not fit the declared type exactly is an error (a bad
//! record), never a truncated or rounded value: an int for a `float` column must be
//! exactly representable, a double for an `int` column must have no fraction, a
//! timestamp must have no sub-microsecond part.

use std::collections::HashMap;

use apache_avro::types::Value;
use cel::Value as Cel;
use cel::objects::Key;

use super::lists::kind;
use crate::config::ColumnKind;
use crate::schema::ColumnType;

/// Integers beyond ±2^53 are not all doubles.
const EXACT_IN_DOUBLE: u64 = 1 << 53;
/// Integers beyond ±2^24 are not all floats.
const EXACT_IN_FLOAT: u64 = 1 << 24;

/// The column type of a declared kind.
pub fn column_type(kind: ColumnKind) -> ColumnType {
    match kind {
        ColumnKind::Boolean => ColumnType::Boolean,
        ColumnKind::Int => ColumnType::Int,
        ColumnKind::Long => ColumnType::Long,
        ColumnKind::Float => ColumnType::Float,
        ColumnKind::Double => ColumnType::Double,
        ColumnKind::String => ColumnType::String,
        ColumnKind::Bytes => ColumnType::Bytes,
        ColumnKind::Timestamp => ColumnType::Timestamp,
        ColumnKind::Json => ColumnType::Json,
    }
}

/// A CEL result as a cell: its column type and value. `declared` is the pipeline's type
/// for the column, if any. The error says what the value was and why it does not fit.
pub fn to_cell(v: Cel, declared: Option<ColumnKind>) -> Result<(ColumnType, Value), String> {
    let Some(kind) = declared else {
        return inferred(v);
    };
    let ty = column_type(kind);
    let value = match (v, kind) {
        (Cel::Null, _) => Value::Null,
        (Cel::Bool(b), ColumnKind::Boolean) => Value::Boolean(b),
        (Cel::Int(i), _) => from_int(i128::from(i), kind)?,
        (Cel::UInt(u), _) => from_int(i128::from(u), kind)?,
        (Cel::Float(f), _) => from_double(f, kind)?,
        (Cel::String(s), ColumnKind::String) => Value::String((*s).clone()),
        (Cel::Bytes(b), ColumnKind::Bytes) => Value::Bytes((*b).clone()),
        (Cel::Timestamp(t), ColumnKind::Timestamp) => timestamp(t)?,
        (v, ColumnKind::Json) => json(v)?,
        (v, kind) => {
            return Err(format!(
                "gave a {} where the column is declared {kind:?}",
                kind_of(&v)
            ));
        }
    };
    Ok((ty, value))
}

fn inferred(v: Cel) -> Result<(ColumnType, Value), String> {
    Ok(match v {
        Cel::Null => {
            return Err(
                "gave null, and the column has no declared type to store a null as: write \
                 `{value: …, type: …}`"
                    .into(),
            );
        }
        Cel::Bool(b) => (ColumnType::Boolean, Value::Boolean(b)),
        Cel::Int(i) => (ColumnType::Long, Value::Long(i)),
        Cel::UInt(u) => (
            ColumnType::Long,
            Value::Long(i64::try_from(u).map_err(|_| format!("gave {u}u, beyond a long"))?),
        ),
        Cel::Float(f) => (ColumnType::Double, Value::Double(f)),
        Cel::String(s) => (ColumnType::String, Value::String((*s).clone())),
        Cel::Bytes(b) => (ColumnType::Bytes, Value::Bytes((*b).clone())),
        Cel::Timestamp(t) => (ColumnType::Timestamp, timestamp(t)?),
        v @ (Cel::List(_) | Cel::Map(_)) => (ColumnType::Json, json(v)?),
        other => {
            return Err(format!(
                "gave a {}, which no column can hold",
                kind_of(&other)
            ));
        }
    })
}

fn from_int(i: i128, kind: ColumnKind) -> Result<Value, String> {
    let too_big = |what: &str| format!("gave {i}, which does not fit {what}");
    Ok(match kind {
        ColumnKind::Int => Value::Int(i32::try_from(i).map_err(|_| too_big("an int"))?),
        ColumnKind::Long => Value::Long(i64::try_from(i).map_err(|_| too_big("a long"))?),
        ColumnKind::Double if i.unsigned_abs() <= u128::from(EXACT_IN_DOUBLE) => {
            Value::Double(i as f64)
        }
        ColumnKind::Double => return Err(too_big("a double exactly")),
        ColumnKind::Float if i.unsigned_abs() <= u128::from(EXACT_IN_FLOAT) => {
            Value::Float(i as f32)
        }
        ColumnKind::Float => return Err(too_big("a float exactly")),
        ColumnKind::Json => Value::Long(i64::try_from(i).map_err(|_| too_big("a long"))?),
        other => {
            return Err(format!(
                "gave the integer {i} where the column is declared {other:?}"
            ));
        }
    })
}

fn from_double(f: f64, kind: ColumnKind) -> Result<Value, String> {
    Ok(match kind {
        // JSON has no NaN or infinity: it would become null.
        ColumnKind::Json if !f.is_finite() => {
            return Err(format!("gave {f}, which JSON cannot hold"));
        }
        ColumnKind::Double | ColumnKind::Json => Value::Double(f),
        // Only a double that is exactly a float: 0.1 is not, and would change.
        ColumnKind::Float if f.is_nan() || f64::from(f as f32) == f => Value::Float(f as f32),
        ColumnKind::Float => {
            return Err(format!("gave the double {f}, which is not exactly a float"));
        }
        ColumnKind::Int | ColumnKind::Long => {
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(format!(
                    "gave the double {f} for an integer column: round it with math.round(…) \
                     and convert with int(…)"
                ));
            }
            // Every double with no fraction inside the range converts exactly.
            let wide = f as i128;
            if f != wide as f64 {
                return Err(format!("gave {f}, beyond a long"));
            }
            from_int(wide, kind)?
        }
        other => {
            return Err(format!(
                "gave the double {f} where the column is declared {other:?}"
            ));
        }
    })
}

/// CEL timestamps carry nanoseconds; columns hold microseconds, so a finer value would be
/// cut.
fn timestamp(t: chrono::DateTime<chrono::FixedOffset>) -> Result<Value, String> {
    let nanos = t.timestamp_subsec_nanos();
    if !nanos.is_multiple_of(1_000) {
        return Err(format!(
            "gave the timestamp {t}, finer than the microseconds a column holds"
        ));
    }
    Ok(Value::TimestampMicros(t.timestamp_micros()))
}

/// A CEL value for a JSON column: lists become arrays, maps objects (keys as text).
fn json(v: Cel) -> Result<Value, String> {
    Ok(match v {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Boolean(b),
        Cel::Int(i) => Value::Long(i),
        Cel::UInt(u) => {
            Value::Long(i64::try_from(u).map_err(|_| format!("gave {u}u, beyond a long"))?)
        }
        // JSON has no NaN or infinity: it would become null.
        Cel::Float(f) if !f.is_finite() => {
            return Err(format!("gave {f}, which JSON cannot hold"));
        }
        Cel::Float(f) => Value::Double(f),
        Cel::String(s) => Value::String((*s).clone()),
        Cel::Bytes(b) => Value::Bytes((*b).clone()),
        Cel::Timestamp(t) => timestamp(t)?,
        Cel::List(items) => {
            Value::Array(items.iter().cloned().map(json).collect::<Result<_, _>>()?)
        }
        Cel::Map(m) => {
            let mut out = HashMap::with_capacity(m.map.len());
            for (k, v) in m.map.iter() {
                let key = match k {
                    Key::String(s) => (**s).clone(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                // {1: …, '1': …} would keep one of the two, whichever came first.
                if out.insert(key.clone(), json(v.clone())?).is_some() {
                    return Err(format!(
                        "gave a map whose keys collide as JSON text: `{key}` twice"
                    ));
                }
            }
            Value::Map(out)
        }
        other => {
            return Err(format!(
                "gave a {}, which JSON cannot hold",
                kind_of(&other)
            ));
        }
    })
}

fn kind_of(v: &Cel) -> &'static str {
    kind(v)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn inference_follows_the_cel_type() {
        assert_eq!(
            to_cell(Cel::Int(7), None),
            Ok((ColumnType::Long, Value::Long(7)))
        );
        assert_eq!(
            to_cell(Cel::Float(0.1), None),
            Ok((ColumnType::Double, Value::Double(0.1)))
        );
        assert_eq!(
            to_cell(Cel::String(Arc::new("x".into())), None),
            Ok((ColumnType::String, Value::String("x".into())))
        );
        assert!(
            to_cell(Cel::Null, None)
                .unwrap_err()
                .contains("declared type")
        );
        assert!(to_cell(Cel::UInt(u64::MAX), None).is_err());
        let list = Cel::List(Arc::new(vec![Cel::Int(1), Cel::Float(2.5)]));
        assert_eq!(
            to_cell(list, None),
            Ok((
                ColumnType::Json,
                Value::Array(vec![Value::Long(1), Value::Double(2.5)])
            ))
        );
    }

    #[test]
    fn declared_types_take_only_exact_values() {
        use ColumnKind as K;
        assert_eq!(to_cell(Cel::Int(5), Some(K::Int)).unwrap().1, Value::Int(5));
        assert!(to_cell(Cel::Int(1 << 31), Some(K::Int)).is_err());
        assert_eq!(
            to_cell(Cel::Int(i32::MIN.into()), Some(K::Int)).unwrap().1,
            Value::Int(i32::MIN)
        );
        // 2^53 is a double; 2^53 + 1 is not.
        assert_eq!(
            to_cell(Cel::Int(1 << 53), Some(K::Double)).unwrap().1,
            Value::Double(9_007_199_254_740_992.0)
        );
        assert!(to_cell(Cel::Int((1 << 53) + 1), Some(K::Double)).is_err());
        assert!(to_cell(Cel::Int((1 << 24) + 1), Some(K::Float)).is_err());
        // A double with a fraction never becomes an integer; one without does, exactly.
        assert!(
            to_cell(Cel::Float(2.5), Some(K::Long))
                .unwrap_err()
                .contains("math.round")
        );
        assert_eq!(
            to_cell(Cel::Float(-9_007_199_254_740_992.0), Some(K::Long))
                .unwrap()
                .1,
            Value::Long(-9_007_199_254_740_992)
        );
        assert!(to_cell(Cel::Float(1e19), Some(K::Long)).is_err());
        assert!(to_cell(Cel::Float(f64::INFINITY), Some(K::Long)).is_err());
        // A double is a float only when nothing changes.
        assert!(to_cell(Cel::Float(0.1), Some(K::Float)).is_err());
        assert_eq!(
            to_cell(Cel::Float(0.5), Some(K::Float)).unwrap().1,
            Value::Float(0.5)
        );
        // Doubles keep every bit, at the edges too.
        for f in [f64::MAX, f64::MIN_POSITIVE, 5e-324, -0.0, 0.1 + 0.2] {
            let Value::Double(out) = to_cell(Cel::Float(f), Some(K::Double)).unwrap().1 else {
                panic!("not a double")
            };
            assert_eq!(out.to_bits(), f.to_bits());
        }
        assert_eq!(
            to_cell(Cel::Null, Some(K::Long)),
            Ok((ColumnType::Long, Value::Null))
        );
        assert!(to_cell(Cel::String(Arc::new("1".into())), Some(K::Long)).is_err());
    }

    #[test]
    fn timestamps_keep_microseconds_and_refuse_nanoseconds() {
        let t = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456)
            .unwrap()
            .fixed_offset();
        assert_eq!(
            to_cell(Cel::Timestamp(t), None),
            Ok((
                ColumnType::Timestamp,
                Value::TimestampMicros(1_700_000_000_123_456)
            ))
        );
        let fine = chrono::DateTime::from_timestamp_nanos(1_700_000_000_123_456_789).fixed_offset();
        assert!(to_cell(Cel::Timestamp(fine), None).is_err());
    }

    #[test]
    fn json_refuses_what_it_cannot_hold() {
        let nan = Cel::List(Arc::new(vec![Cel::Float(f64::NAN)]));
        assert!(to_cell(nan, None).unwrap_err().contains("JSON cannot hold"));
        assert!(to_cell(Cel::Float(f64::INFINITY), Some(ColumnKind::Json)).is_err());
        let mut m = HashMap::new();
        m.insert(Key::Int(1), Cel::String(Arc::new("a".into())));
        m.insert(
            Key::String(Arc::new("1".into())),
            Cel::String(Arc::new("b".into())),
        );
        let m = Cel::Map(cel::objects::Map { map: Arc::new(m) });
        assert!(to_cell(m, None).unwrap_err().contains("twice"));
    }
}
