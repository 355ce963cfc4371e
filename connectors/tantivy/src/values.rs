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
            Value::Int(i) => *i as f64,
            Value::Long(i) => *i as f64,
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
