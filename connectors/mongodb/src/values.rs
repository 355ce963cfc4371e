//! Avro values → BSON, as a MongoDB user expects them.

use apache_avro::types::Value;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Decimal128, Document};
use sinkd_core::schema::ColumnType;
use sinkd_core::value::{decimal_string, unwrap_union};

/// Converts a value; `ty` is the column type from the writer schema (it carries a
/// top-level decimal's scale).
pub fn to_bson(v: &Value, ty: ColumnType) -> Bson {
    let v = unwrap_union(v);
    match (v, ty) {
        (Value::Decimal(_) | Value::BigDecimal(_), ColumnType::Decimal { scale, .. }) => {
            decimal(v, scale)
        }
        _ => convert(v),
    }
}

fn decimal(v: &Value, scale: u32) -> Bson {
    match decimal_string(v, scale) {
        // Decimal128 holds 34 digits; a wider value stays exact as a string.
        Some(s) => s
            .parse::<Decimal128>()
            .map_or(Bson::String(s), Bson::Decimal128),
        None => Bson::Null,
    }
}

fn binary(subtype: BinarySubtype, bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype,
        bytes: bytes.to_vec(),
    })
}

fn convert(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Boolean(b) => Bson::Boolean(*b),
        Value::Int(i) => Bson::Int32(*i),
        Value::Long(i) => Bson::Int64(*i),
        Value::Float(f) => Bson::Double(*f as f64),
        Value::Double(f) => Bson::Double(*f),
        Value::String(s) | Value::Enum(_, s) => Bson::String(s.clone()),
        Value::Bytes(b) | Value::Fixed(_, b) => binary(BinarySubtype::Generic, b),
        Value::Uuid(u) => binary(BinarySubtype::Uuid, u.as_bytes()),
        // Decoded decimals are `BigDecimal`s that carry their scale (`sinkd_core::decimals`);
        // a bare `Decimal` has no scale to give, and keeps its unscaled digits.
        Value::Decimal(_) | Value::BigDecimal(_) => decimal(v, 0),
        Value::Date(days) => Bson::DateTime(DateTime::from_millis(*days as i64 * 86_400_000)),
        Value::TimeMillis(ms) => Bson::Int32(*ms),
        Value::TimeMicros(us) => Bson::Int64(*us),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            Bson::DateTime(DateTime::from_millis(*ms))
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            Bson::DateTime(DateTime::from_millis(us.div_euclid(1_000)))
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
            Bson::DateTime(DateTime::from_millis(ns.div_euclid(1_000_000)))
        }
        Value::Duration(d) => {
            let mut doc = Document::new();
            doc.insert("months", u32::from(d.months()) as i64);
            doc.insert("days", u32::from(d.days()) as i64);
            doc.insert("millis", u32::from(d.millis()) as i64);
            Bson::Document(doc)
        }
        Value::Union(_, inner) => convert(inner),
        Value::Array(items) => Bson::Array(items.iter().map(convert).collect()),
        Value::Map(m) => Bson::Document(m.iter().map(|(k, v)| (k.clone(), convert(v))).collect()),
        Value::Record(fields) => Bson::Document(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), convert(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_types_map_to_native_bson() {
        let d = to_bson(
            &Value::Decimal(apache_avro::Decimal::from(vec![0x30, 0x39])),
            ColumnType::Decimal {
                precision: 10,
                scale: 2,
            },
        );
        assert_eq!(d, Bson::Decimal128("123.45".parse().unwrap()));
        assert_eq!(
            to_bson(&Value::TimestampMillis(1_000), ColumnType::Timestamp),
            Bson::DateTime(DateTime::from_millis(1_000))
        );
        let u = uuid::Uuid::nil();
        assert!(matches!(
            to_bson(&Value::Uuid(u), ColumnType::Uuid),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                ..
            })
        ));
        let rec = Value::Record(vec![("a".into(), Value::Array(vec![Value::Int(1)]))]);
        assert_eq!(
            to_bson(&rec, ColumnType::Json),
            Bson::Document(mongodb::bson::doc! { "a": [1] })
        );
    }

    #[test]
    fn nested_decimals_keep_their_scale_and_digits() {
        use bigdecimal::BigDecimal;
        let big = |unscaled: &str, scale: i64| {
            Value::BigDecimal(BigDecimal::new(unscaled.parse().unwrap(), scale))
        };
        let cases = [
            (big("10000", 2), "100.00"),
            (big("-1", 6), "-0.000001"),
            // 34 digits, all Decimal128 holds.
            (
                big("9999999999999999999999999999999999", 4),
                "999999999999999999999999999999.9999",
            ),
        ];
        for (v, text) in cases {
            let rec = Value::Record(vec![("line".into(), Value::Array(vec![v.clone()]))]);
            let Bson::Document(doc) = to_bson(&rec, ColumnType::Json) else {
                panic!("not a document")
            };
            let got = &doc.get_array("line").unwrap()[0];
            assert_eq!(got, &Bson::Decimal128(text.parse().unwrap()), "{v:?}");
            let Bson::Decimal128(d) = got else {
                panic!("{got:?} is not a Decimal128")
            };
            assert_eq!(d.to_string(), text);
        }
        // Wider than Decimal128: a string, every digit kept.
        let wide = big("12345678901234567890123456789012345678", 2);
        assert_eq!(
            to_bson(&wide, ColumnType::Json),
            Bson::String("123456789012345678901234567890123456.78".into())
        );
    }
}
