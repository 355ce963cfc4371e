//! The key of an operation: from the Kafka key (a primitive fills the one key column, an
//! Avro record its fields of the same names) or from event fields named like the key
//! columns. Shared by both projections.

use std::sync::Arc;

use apache_avro::types::Value;

use crate::operation::Cell;
use crate::schema::{ColumnType, EventSchema};
use crate::value::{into_unwrapped, is_null, unwrap_union};

/// The pipeline's key columns and how to fill them.
pub struct Keys {
    /// Key column names, in order.
    pub columns: Vec<Arc<str>>,
}

impl Keys {
    /// The key of `key.columns`.
    pub fn new(columns: &[String]) -> Keys {
        Keys {
            columns: columns.iter().map(|c| Arc::from(c.as_str())).collect(),
        }
    }

    /// The key from event fields named like the key columns.
    pub fn from_fields(
        &self,
        fields: &[(String, Value)],
        schema: &EventSchema,
    ) -> Result<Vec<Cell>, String> {
        self.columns
            .iter()
            .map(|column| {
                let value = fields
                    .iter()
                    .find(|(n, _)| **n == **column)
                    .map(|(_, v)| unwrap_union(v))
                    .filter(|v| !is_null(v))
                    .ok_or_else(|| format!("key field `{column}` is missing or null"))?;
                let ty = schema.field_type(column).unwrap_or(ColumnType::String);
                Ok(Cell {
                    column: column.clone(),
                    ty,
                    value: value.clone(),
                })
            })
            .collect()
    }

    /// The key from the Kafka record key.
    pub fn from_kafka(&self, key: Option<Value>) -> Result<Vec<Cell>, String> {
        let key = match key.map(into_unwrapped) {
            None | Some(Value::Null) => return Err("the record has no Kafka key".into()),
            Some(k) => k,
        };
        match key {
            Value::Record(fields) => self
                .columns
                .iter()
                .map(|column| {
                    let value = fields
                        .iter()
                        .find(|(n, _)| **n == **column)
                        .map(|(_, v)| unwrap_union(v).clone())
                        .filter(|v| !is_null(v))
                        .ok_or_else(|| format!("key record has no field `{column}`"))?;
                    Ok(Cell {
                        column: column.clone(),
                        ty: primitive_type(&value),
                        value,
                    })
                })
                .collect(),
            primitive => match self.columns.as_slice() {
                [column] => Ok(vec![Cell {
                    column: column.clone(),
                    ty: primitive_type(&primitive),
                    value: primitive,
                }]),
                _ => Err(format!(
                    "a primitive Kafka key cannot fill {} key columns; use an Avro record key \
                     or `key.from: fields`",
                    self.columns.len()
                )),
            },
        }
    }
}

/// The column type a key value implies when no schema says otherwise: its own type, or
/// JSON for what needs a schema (a decimal's scale) or has none. Unions, times, decimals,
/// and nanosecond or local timestamps stay JSON as they always were for keys: existing
/// tables have `jsonb` key columns for them.
fn primitive_type(v: &Value) -> ColumnType {
    match (v, super::rule::value_type(v)) {
        (Value::Union(..) | Value::TimestampNanos(_), _) => ColumnType::Json,
        (_, Some(ColumnType::Time | ColumnType::LocalTimestamp | ColumnType::Decimal { .. })) => {
            ColumnType::Json
        }
        (_, ty) => ty.unwrap_or(ColumnType::Json),
    }
}
