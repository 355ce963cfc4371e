//! Column types derived from Avro writer schemas.
//!
//! Sinks create and evolve their tables from these: the Avro type decides the native
//! column type (decimal → numeric, timestamp → timestamptz, uuid → uuid, records, maps and
//! arrays → a JSON column).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use apache_avro::Schema;

/// The sink-neutral type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Avro boolean.
    Boolean,
    /// Avro int (32 bits).
    Int,
    /// Avro long (64 bits).
    Long,
    /// Avro float.
    Float,
    /// Avro double.
    Double,
    /// Avro string or enum symbol.
    String,
    /// Avro bytes or fixed.
    Bytes,
    /// Avro decimal with precision and scale.
    Decimal {
        /// Total digits.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// Avro uuid.
    Uuid,
    /// Avro date (days since the epoch).
    Date,
    /// Avro time-millis / time-micros.
    Time,
    /// Avro timestamp-millis / -micros / -nanos (an instant, UTC).
    Timestamp,
    /// Avro local-timestamp-* (a wall-clock time without zone).
    LocalTimestamp,
    /// Records, arrays, maps, non-trivial unions, durations: stored as JSON.
    Json,
}

impl ColumnType {
    /// Whether increments may add to this type.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int | ColumnType::Long | ColumnType::Float | ColumnType::Double
        )
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            other => write!(f, "{}", format!("{other:?}").to_lowercase()),
        }
    }
}

/// One top-level field of an event record, as a column.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldColumn {
    /// Field name.
    pub name: Arc<str>,
    /// Column type.
    pub ty: ColumnType,
}

/// The column view of one writer schema; computed once per schema id and shared.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSchema {
    /// Full name of the writer record, e.g. `com.shop.OrderPlaced`.
    pub full_name: Arc<str>,
    /// Top-level fields in schema order.
    pub fields: Vec<FieldColumn>,
    /// The Avro schema itself, for upcasters that reshape it.
    pub avro: Arc<Schema>,
}

impl EventSchema {
    /// Derives the column view of a record schema. Returns `None` when the schema is not a
    /// record (sinkd events are records).
    pub fn from_avro(schema: &Schema) -> Option<EventSchema> {
        let Schema::Record(record) = schema else {
            return None;
        };
        let mut named = HashMap::new();
        collect_named(schema, &mut named);
        let fields = record
            .fields
            .iter()
            .map(|f| FieldColumn {
                name: Arc::from(f.name.as_str()),
                ty: column_type(&f.schema, &named),
            })
            .collect();
        Some(EventSchema {
            full_name: Arc::from(record.name.fullname(None).as_str()),
            fields,
            avro: Arc::new(schema.clone()),
        })
    }

    /// The type of a field by name.
    pub fn field_type(&self, name: &str) -> Option<ColumnType> {
        self.fields.iter().find(|f| &*f.name == name).map(|f| f.ty)
    }
}

/// Collects every named type so `Ref`s can be resolved to what they name.
pub(crate) fn collect_named<'a>(schema: &'a Schema, named: &mut HashMap<String, &'a Schema>) {
    match schema {
        Schema::Record(r) => {
            named.insert(r.name.fullname(None), schema);
            for f in &r.fields {
                collect_named(&f.schema, named);
            }
        }
        Schema::Enum(e) => {
            named.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(x) => {
            named.insert(x.name.fullname(None), schema);
        }
        Schema::Array(a) => collect_named(&a.items, named),
        Schema::Map(m) => collect_named(&m.types, named),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_named(v, named)),
        _ => {}
    }
}

/// `T` of a union `["null", T]` (in either order); `None` for any other union.
pub(crate) fn nullable(union: &apache_avro::schema::UnionSchema) -> Option<&Schema> {
    let mut non_null = union
        .variants()
        .iter()
        .filter(|s| !matches!(s, Schema::Null));
    match (non_null.next(), non_null.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// The column type of any schema (a field's, or one found along a path).
pub(crate) fn column_type(schema: &Schema, named: &HashMap<String, &Schema>) -> ColumnType {
    match schema {
        Schema::Boolean => ColumnType::Boolean,
        Schema::Int => ColumnType::Int,
        Schema::Long => ColumnType::Long,
        Schema::Float => ColumnType::Float,
        Schema::Double => ColumnType::Double,
        Schema::String | Schema::Enum(_) => ColumnType::String,
        Schema::Bytes | Schema::Fixed(_) => ColumnType::Bytes,
        Schema::Decimal(d) => ColumnType::Decimal {
            precision: d.precision as u32,
            scale: d.scale as u32,
        },
        Schema::BigDecimal => ColumnType::Decimal {
            precision: 0,
            scale: 0,
        },
        Schema::Uuid(_) => ColumnType::Uuid,
        Schema::Date => ColumnType::Date,
        Schema::TimeMillis | Schema::TimeMicros => ColumnType::Time,
        Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos => {
            ColumnType::Timestamp
        }
        Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => ColumnType::LocalTimestamp,
        // `["null", T]` is a nullable T; any richer union is stored as JSON.
        Schema::Union(u) => match nullable(u) {
            Some(only) => column_type(only, named),
            None => ColumnType::Json,
        },
        Schema::Ref { name } => match named.get(&name.fullname(None)) {
            Some(target) => column_type(target, named),
            None => ColumnType::Json,
        },
        Schema::Null
        | Schema::Record(_)
        | Schema::Array(_)
        | Schema::Map(_)
        | Schema::Duration(_) => ColumnType::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_logical_types_and_nullable_unions() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
                {"name":"id","type":"string"},
                {"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"ref","type":["null",{"type":"string","logicalType":"uuid"}],"default":null},
                {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
                {"name":"prev","type":["null","Status"],"default":null},
                {"name":"lines","type":{"type":"array","items":"string"}}
            ]}"#,
        )
        .unwrap();
        let s = EventSchema::from_avro(&schema).unwrap();
        assert_eq!(&*s.full_name, "com.shop.OrderPlaced");
        let types: Vec<_> = s.fields.iter().map(|f| f.ty).collect();
        assert_eq!(
            types,
            vec![
                ColumnType::String,
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2
                },
                ColumnType::Timestamp,
                ColumnType::Uuid,
                ColumnType::String,
                ColumnType::String,
                ColumnType::Json,
            ]
        );
    }
}
