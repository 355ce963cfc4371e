//! Column types: how an Avro-derived [`ColumnType`] is stored in PostgreSQL, and typed
//! arrays that carry a column of a batch into one `UNNEST` parameter.

use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sinkd_core::schema::ColumnType;
use sinkd_core::value::{decimal_string, to_json, unwrap_union};
use tokio_postgres::types::ToSql;

/// A PostgreSQL column type sinkd creates or understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgType {
    /// boolean
    Bool,
    /// integer
    Int4,
    /// bigint
    Int8,
    /// real
    Float4,
    /// double precision
    Float8,
    /// text
    Text,
    /// bytea
    Bytea,
    /// numeric, with precision and scale when known
    Numeric(Option<(u32, u32)>),
    /// uuid
    Uuid,
    /// date
    Date,
    /// time
    Time,
    /// timestamptz
    Timestamptz,
    /// timestamp without time zone
    Timestamp,
    /// jsonb
    Jsonb,
    /// Anything else found in an existing table (by its `udt_name`).
    Other(String),
}

impl PgType {
    /// The type sinkd creates for an Avro-derived column type.
    pub fn for_column(ty: ColumnType) -> PgType {
        match ty {
            ColumnType::Boolean => PgType::Bool,
            ColumnType::Int => PgType::Int4,
            ColumnType::Long => PgType::Int8,
            ColumnType::Float => PgType::Float4,
            ColumnType::Double => PgType::Float8,
            ColumnType::String => PgType::Text,
            ColumnType::Bytes => PgType::Bytea,
            ColumnType::Decimal { precision, scale } if precision > 0 => {
                PgType::Numeric(Some((precision, scale)))
            }
            ColumnType::Decimal { .. } => PgType::Numeric(None),
            ColumnType::Uuid => PgType::Uuid,
            ColumnType::Date => PgType::Date,
            ColumnType::Time => PgType::Time,
            ColumnType::Timestamp => PgType::Timestamptz,
            ColumnType::LocalTimestamp => PgType::Timestamp,
            ColumnType::Json => PgType::Jsonb,
        }
    }

    /// From `information_schema.columns.udt_name`.
    pub fn from_udt(udt: &str, precision: Option<i32>, scale: Option<i32>) -> PgType {
        match udt {
            "bool" => PgType::Bool,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "text" | "varchar" => PgType::Text,
            "bytea" => PgType::Bytea,
            "numeric" => PgType::Numeric(precision.zip(scale).map(|(p, s)| (p as u32, s as u32))),
            "uuid" => PgType::Uuid,
            "date" => PgType::Date,
            "time" => PgType::Time,
            "timestamptz" => PgType::Timestamptz,
            "timestamp" => PgType::Timestamp,
            "jsonb" | "json" => PgType::Jsonb,
            other => PgType::Other(other.to_owned()),
        }
    }

    /// The type in DDL.
    pub fn ddl(&self) -> String {
        match self {
            PgType::Bool => "boolean".into(),
            PgType::Int4 => "integer".into(),
            PgType::Int8 => "bigint".into(),
            PgType::Float4 => "real".into(),
            PgType::Float8 => "double precision".into(),
            PgType::Text => "text".into(),
            PgType::Bytea => "bytea".into(),
            PgType::Numeric(Some((p, s))) => format!("numeric({p},{s})"),
            PgType::Numeric(None) => "numeric".into(),
            PgType::Uuid => "uuid".into(),
            PgType::Date => "date".into(),
            PgType::Time => "time".into(),
            PgType::Timestamptz => "timestamptz".into(),
            PgType::Timestamp => "timestamp".into(),
            PgType::Jsonb => "jsonb".into(),
            PgType::Other(s) => s.clone(),
        }
    }

    /// The array cast of the `UNNEST` parameter for a column of this type.
    pub fn param_cast(&self) -> String {
        match self {
            // Decimals travel as text and are cast by the server, exactly.
            PgType::Numeric(_) => "::text[]::numeric[]".into(),
            PgType::Other(s) => format!("::text[]::{s}[]"),
            other => format!("::{}[]", other.ddl()),
        }
    }

    /// Whether an existing column of this type can take values of `ty` without loss.
    pub fn accepts(&self, ty: ColumnType) -> bool {
        let wanted = PgType::for_column(ty);
        match (self, &wanted) {
            (a, b) if a == b => true,
            (PgType::Numeric(_), PgType::Numeric(_)) => true,
            (PgType::Int8, PgType::Int4) => true,
            (PgType::Float8, PgType::Float4 | PgType::Int4) => true,
            (PgType::Numeric(_), PgType::Int4 | PgType::Int8) => true,
            (PgType::Text, PgType::Uuid) => true,
            _ => false,
        }
    }
}

/// One column of a batch as a typed array, bound as a single parameter.
#[derive(Debug)]
pub enum Column {
    /// boolean[]
    Bool(Vec<Option<bool>>),
    /// integer[]
    Int4(Vec<Option<i32>>),
    /// bigint[]
    Int8(Vec<Option<i64>>),
    /// real[]
    Float4(Vec<Option<f32>>),
    /// double precision[]
    Float8(Vec<Option<f64>>),
    /// text[] (also numeric and unknown types, cast by the server)
    Text(Vec<Option<String>>),
    /// bytea[]
    Bytea(Vec<Option<Vec<u8>>>),
    /// uuid[]
    Uuid(Vec<Option<uuid::Uuid>>),
    /// date[]
    Date(Vec<Option<NaiveDate>>),
    /// time[]
    Time(Vec<Option<NaiveTime>>),
    /// timestamptz[]
    Timestamptz(Vec<Option<DateTime<Utc>>>),
    /// timestamp[]
    Timestamp(Vec<Option<NaiveDateTime>>),
    /// jsonb[]
    Jsonb(Vec<Option<serde_json::Value>>),
}

impl Column {
    /// An empty array for a column of `ty`.
    pub fn new(ty: &PgType, capacity: usize) -> Column {
        match ty {
            PgType::Bool => Column::Bool(Vec::with_capacity(capacity)),
            PgType::Int4 => Column::Int4(Vec::with_capacity(capacity)),
            PgType::Int8 => Column::Int8(Vec::with_capacity(capacity)),
            PgType::Float4 => Column::Float4(Vec::with_capacity(capacity)),
            PgType::Float8 => Column::Float8(Vec::with_capacity(capacity)),
            PgType::Bytea => Column::Bytea(Vec::with_capacity(capacity)),
            PgType::Uuid => Column::Uuid(Vec::with_capacity(capacity)),
            PgType::Date => Column::Date(Vec::with_capacity(capacity)),
            PgType::Time => Column::Time(Vec::with_capacity(capacity)),
            PgType::Timestamptz => Column::Timestamptz(Vec::with_capacity(capacity)),
            PgType::Timestamp => Column::Timestamp(Vec::with_capacity(capacity)),
            PgType::Jsonb => Column::Jsonb(Vec::with_capacity(capacity)),
            PgType::Text | PgType::Numeric(_) | PgType::Other(_) => {
                Column::Text(Vec::with_capacity(capacity))
            }
        }
    }

    /// Appends a value (or null). `ty` is the Avro-derived type of the value, needed for
    /// decimals' scale. Fails when the value cannot be stored in this column.
    pub fn push(&mut self, value: Option<&Value>, ty: ColumnType) -> Result<(), String> {
        let v = value
            .map(unwrap_union)
            .filter(|v| !matches!(v, Value::Null));
        let mismatch = || format!("value {v:?} does not fit this column");
        match self {
            Column::Bool(c) => c.push(match v {
                None => None,
                Some(Value::Boolean(b)) => Some(*b),
                _ => return Err(mismatch()),
            }),
            Column::Int4(c) => c.push(match v {
                None => None,
                Some(Value::Int(i)) => Some(*i),
                Some(Value::Long(i)) => Some(i32::try_from(*i).map_err(|_| mismatch())?),
                _ => return Err(mismatch()),
            }),
            Column::Int8(c) => c.push(match v {
                None => None,
                Some(Value::Int(i)) => Some(*i as i64),
                Some(Value::Long(i)) => Some(*i),
                _ => return Err(mismatch()),
            }),
            Column::Float4(c) => c.push(match v {
                None => None,
                Some(Value::Float(f)) => Some(*f),
                _ => return Err(mismatch()),
            }),
            Column::Float8(c) => c.push(match v {
                None => None,
                Some(Value::Float(f)) => Some(*f as f64),
                Some(Value::Double(f)) => Some(*f),
                Some(Value::Int(i)) => Some(*i as f64),
                _ => return Err(mismatch()),
            }),
            Column::Text(c) => c.push(match v {
                None => None,
                Some(Value::String(s)) | Some(Value::Enum(_, s)) => Some(s.clone()),
                Some(Value::Int(i)) => Some(i.to_string()),
                Some(Value::Long(i)) => Some(i.to_string()),
                Some(Value::Uuid(u)) => Some(u.to_string()),
                Some(d @ (Value::Decimal(_) | Value::BigDecimal(_))) => {
                    let scale = match ty {
                        ColumnType::Decimal { scale, .. } => scale,
                        _ => 0,
                    };
                    decimal_string(d, scale)
                }
                Some(other) => Some(to_json(other).to_string()),
            }),
            Column::Bytea(c) => c.push(match v {
                None => None,
                Some(Value::Bytes(b)) | Some(Value::Fixed(_, b)) => Some(b.clone()),
                _ => return Err(mismatch()),
            }),
            Column::Uuid(c) => c.push(match v {
                None => None,
                Some(Value::Uuid(u)) => Some(*u),
                Some(Value::String(s)) => Some(s.parse().map_err(|_| mismatch())?),
                _ => return Err(mismatch()),
            }),
            Column::Date(c) => c.push(match v {
                None => None,
                Some(Value::Date(d)) => {
                    Some(NaiveDate::from_num_days_from_ce_opt(*d + 719_163).ok_or_else(mismatch)?)
                }
                _ => return Err(mismatch()),
            }),
            Column::Time(c) => c.push(match v {
                None => None,
                Some(Value::TimeMillis(ms)) => {
                    Some(micros_to_time(*ms as i64 * 1000).ok_or_else(mismatch)?)
                }
                Some(Value::TimeMicros(us)) => Some(micros_to_time(*us).ok_or_else(mismatch)?),
                _ => return Err(mismatch()),
            }),
            Column::Timestamptz(c) => c.push(match v {
                None => None,
                Some(Value::TimestampMillis(ms)) => {
                    Some(DateTime::from_timestamp_millis(*ms).ok_or_else(mismatch)?)
                }
                Some(Value::TimestampMicros(us)) => {
                    Some(DateTime::from_timestamp_micros(*us).ok_or_else(mismatch)?)
                }
                Some(Value::TimestampNanos(ns)) => Some(DateTime::from_timestamp_nanos(*ns)),
                Some(Value::Long(ms)) => {
                    Some(DateTime::from_timestamp_millis(*ms).ok_or_else(mismatch)?)
                }
                _ => return Err(mismatch()),
            }),
            Column::Timestamp(c) => c.push(match v {
                None => None,
                Some(Value::LocalTimestampMillis(ms)) => Some(
                    DateTime::from_timestamp_millis(*ms)
                        .ok_or_else(mismatch)?
                        .naive_utc(),
                ),
                Some(Value::LocalTimestampMicros(us)) => Some(
                    DateTime::from_timestamp_micros(*us)
                        .ok_or_else(mismatch)?
                        .naive_utc(),
                ),
                Some(Value::LocalTimestampNanos(ns)) => {
                    Some(DateTime::from_timestamp_nanos(*ns).naive_utc())
                }
                _ => return Err(mismatch()),
            }),
            Column::Jsonb(c) => c.push(v.map(to_json)),
        }
        Ok(())
    }

    /// The array as a query parameter.
    pub fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Bool(c) => c,
            Column::Int4(c) => c,
            Column::Int8(c) => c,
            Column::Float4(c) => c,
            Column::Float8(c) => c,
            Column::Text(c) => c,
            Column::Bytea(c) => c,
            Column::Uuid(c) => c,
            Column::Date(c) => c,
            Column::Time(c) => c,
            Column::Timestamptz(c) => c,
            Column::Timestamp(c) => c,
            Column::Jsonb(c) => c,
        }
    }
}

fn micros_to_time(us: i64) -> Option<NaiveTime> {
    let secs = u32::try_from(us.div_euclid(1_000_000)).ok()?;
    let nanos = u32::try_from(us.rem_euclid(1_000_000) * 1000).ok()?;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_accepted_and_narrowing_is_not() {
        assert!(PgType::Int8.accepts(ColumnType::Int));
        assert!(!PgType::Int4.accepts(ColumnType::Long));
        assert!(!PgType::Int8.accepts(ColumnType::String));
        assert!(PgType::Numeric(Some((12, 2))).accepts(ColumnType::Decimal {
            precision: 14,
            scale: 2
        }));
    }

    #[test]
    fn dates_count_from_the_unix_epoch() {
        let mut c = Column::new(&PgType::Date, 1);
        c.push(Some(&Value::Date(1)), ColumnType::Date).unwrap();
        let Column::Date(v) = c else { unreachable!() };
        assert_eq!(v[0], NaiveDate::from_ymd_opt(1970, 1, 2));
    }
}
