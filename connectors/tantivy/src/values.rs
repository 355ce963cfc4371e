//! Avro values → Tantivy values, by the declared field type.

use crate::config::IndexFieldKind;
use apache_avro::types::Value;
use sinkd_core::value::{to_json, unwrap_union};
use tantivy::DateTime;
use tantivy::schema::OwnedValue;

/// The value for a field of `kind`, `None` for null. An error when the value cannot be
/// stored in that field.
pub fn convert(v: &Value, kind: IndexFieldKind) -> Result<Option<OwnedValue>, String> {
    let v = unwrap_union(v);
    if matches!(v, Value::Null) {
        return Ok(None);
    }
    let mismatch = || format!("value {v:?} does not fit a {kind:?} field");
    Ok(Some(match kind {
        IndexFieldKind::Text | IndexFieldKind::String => OwnedValue::Str(match v {
            Value::String(s) | Value::Enum(_, s) => s.clone(),
            other => match to_json(other) {
                serde_json::Value::String(s) => s,
                json => json.to_string(),
            },
        }),
        IndexFieldKind::I64 => OwnedValue::I64(match v {
            Value::Int(i) => *i as i64,
            Value::Long(i) => *i,
            _ => return Err(mismatch()),
        }),
        IndexFieldKind::U64 => OwnedValue::U64(match v {
            Value::Int(i) => u64::try_from(*i).map_err(|_| mismatch())?,
            Value::Long(i) => u64::try_from(*i).map_err(|_| mismatch())?,
            _ => return Err(mismatch()),
        }),
        IndexFieldKind::F64 => OwnedValue::F64(match v {
            Value::Float(f) => *f as f64,
            Value::Double(f) => *f,
            Value::Int(i) => f64::from(*i),
            // Only a long a double holds exactly: 2^53 + 1 would be stored as 2^53.
            Value::Long(i) => {
                let f = *i as f64;
                if f as i128 != i128::from(*i) {
                    return Err(format!(
                        "{i} does not fit an f64 field exactly (beyond 2^53); declare the \
                         field i64"
                    ));
                }
                f
            }
            _ => return Err(mismatch()),
        }),
        IndexFieldKind::Bool => OwnedValue::Bool(match v {
            Value::Boolean(b) => *b,
            _ => return Err(mismatch()),
        }),
        IndexFieldKind::Date => OwnedValue::Date(match v {
            Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) | Value::Long(ms) => {
                DateTime::from_timestamp_millis(*ms)
            }
            Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
                DateTime::from_timestamp_micros(*us)
            }
            Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
                DateTime::from_timestamp_nanos(*ns)
            }
            Value::Date(days) => DateTime::from_timestamp_secs(*days as i64 * 86_400),
            _ => return Err(mismatch()),
        }),
        IndexFieldKind::Json => match to_json(v) {
            json @ serde_json::Value::Object(_) => OwnedValue::from(json),
            other => OwnedValue::Object(vec![("value".to_owned(), OwnedValue::from(other))]),
        },
    }))
}

/// Adds two numeric values of a field for increments; `None` counts as zero.
pub fn add(prev: Option<&OwnedValue>, inc: &OwnedValue) -> Result<OwnedValue, String> {
    Ok(match (prev, inc) {
        (None, v) => v.clone(),
        (Some(OwnedValue::I64(a)), OwnedValue::I64(b)) => {
            OwnedValue::I64(a.checked_add(*b).ok_or("i64 overflow")?)
        }
        (Some(OwnedValue::U64(a)), OwnedValue::U64(b)) => {
            OwnedValue::U64(a.checked_add(*b).ok_or("u64 overflow")?)
        }
        (Some(OwnedValue::F64(a)), OwnedValue::F64(b)) => OwnedValue::F64(a + b),
        (Some(a), b) => return Err(format!("cannot add {b:?} to {a:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_of(v: Value) -> Result<f64, String> {
        match convert(&v, IndexFieldKind::F64)? {
            Some(OwnedValue::F64(f)) => Ok(f),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn longs_into_f64_fields_are_exact_or_refused() {
        let exact = 1_i64 << 53;
        for i in [0, -1, exact, -exact, exact - 1, i64::MIN, 1 << 62] {
            assert_eq!(
                f64_of(Value::Long(i)).unwrap() as i128,
                i128::from(i),
                "{i}"
            );
        }
        for i in [
            exact + 1,
            -(exact + 1),
            i64::MAX,
            i64::MAX - 1,
            (1 << 62) + 1,
        ] {
            let e = f64_of(Value::Long(i)).unwrap_err();
            assert!(e.contains("does not fit an f64 field exactly"), "{i}: {e}");
        }
        assert_eq!(f64_of(Value::Int(i32::MIN)).unwrap(), -2_147_483_648.0);
        let third = 1.0_f64 / 3.0;
        assert_eq!(
            f64_of(Value::Double(third)).unwrap().to_bits(),
            third.to_bits()
        );
        assert_eq!(
            f64_of(Value::Float(0.1)).unwrap().to_bits(),
            f64::from(0.1_f32).to_bits()
        );
    }
}
