//! Avro decimals that keep their scale.
//!
//! `apache-avro` decodes a `decimal` into [`Value::Decimal`], the unscaled integer alone:
//! the scale lives only in the schema. A decimal that is a top-level field reaches a sink
//! with its column type (which carries the scale), but one inside a record, an array or a
//! map reaches a JSON column or a sub-document with nothing to say where the point goes,
//! and `123.45` would be written as `12345`. So a decoder turns every decimal into a
//! [`Value::BigDecimal`] (unscaled integer *and* scale) right after decoding, with the
//! schema the value was read with: from there on a decimal means the same everywhere.

use std::collections::{HashMap, HashSet};

use apache_avro::Schema;
use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value;
use bigdecimal::BigDecimal;

/// Puts each decimal's scale into its value, for the values of one schema. Built once per
/// schema (it resolves the schema's named types), applied to every value of it.
pub struct DecimalScales {
    root: Schema,
    /// The schema's named types, for its references.
    names: HashMap<Name, Schema>,
}

impl DecimalScales {
    /// `None` when no decimal appears anywhere in `schema`: its values need no walk.
    pub fn of(schema: &Schema) -> Option<DecimalScales> {
        let resolved = ResolvedSchema::try_from(schema).ok()?;
        let names: HashMap<Name, Schema> = resolved
            .get_names()
            .iter()
            .map(|(name, s)| (name.clone(), (*s).clone()))
            .collect();
        has_decimal(schema, &names, &mut HashSet::new()).then(|| DecimalScales {
            root: schema.clone(),
            names,
        })
    }

    /// Replaces every [`Value::Decimal`] in `value` (a value of the schema, as decoded or
    /// resolved) by the [`Value::BigDecimal`] of the same number.
    pub fn apply(&self, value: &mut Value) {
        self.walk(value, &self.root);
    }

    fn walk(&self, value: &mut Value, schema: &Schema) {
        if let (Value::Decimal(d), Schema::Decimal(ds)) = (&*value, schema) {
            let unscaled: num_bigint::BigInt = d.clone().into();
            *value = Value::BigDecimal(BigDecimal::new(unscaled, ds.scale as i64));
            return;
        }
        match (value, schema) {
            (Value::Union(i, inner), Schema::Union(u)) => {
                if let Some(variant) = u.variants().get(*i as usize) {
                    self.walk(inner, variant);
                }
            }
            (Value::Record(fields), Schema::Record(r)) => {
                for (name, v) in fields.iter_mut() {
                    if let Some(&at) = r.lookup.get(name.as_str()) {
                        self.walk(v, &r.fields[at].schema);
                    }
                }
            }
            (Value::Array(items), Schema::Array(a)) => {
                for v in items {
                    self.walk(v, &a.items);
                }
            }
            (Value::Map(m), Schema::Map(ms)) => {
                for v in m.values_mut() {
                    self.walk(v, &ms.types);
                }
            }
            (value, Schema::Ref { name }) => {
                if let Some(target) = self.names.get(name) {
                    self.walk(value, target);
                }
            }
            _ => {}
        }
    }
}

/// Whether a decimal appears anywhere under `schema`; `seen` stops recursive named types.
fn has_decimal(schema: &Schema, names: &HashMap<Name, Schema>, seen: &mut HashSet<Name>) -> bool {
    match schema {
        Schema::Decimal(_) => true,
        Schema::Union(u) => u.variants().iter().any(|s| has_decimal(s, names, seen)),
        Schema::Record(r) => {
            seen.insert(r.name.clone());
            r.fields.iter().any(|f| has_decimal(&f.schema, names, seen))
        }
        Schema::Array(a) => has_decimal(&a.items, names, seen),
        Schema::Map(m) => has_decimal(&m.types, names, seen),
        Schema::Ref { name } => {
            seen.insert(name.clone())
                && names.get(name).is_some_and(|s| has_decimal(s, names, seen))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Decimal;

    fn unscaled(i: i64) -> Value {
        Value::Decimal(Decimal::from(i.to_be_bytes()))
    }

    fn big(i: i64, scale: i64) -> Value {
        Value::BigDecimal(BigDecimal::new(i.into(), scale))
    }

    #[test]
    fn every_decimal_gets_the_scale_of_its_own_schema() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"Order","fields":[
                {"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
                {"name":"line","type":{"type":"record","name":"Line","fields":[
                    {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":3}},
                    {"name":"next","type":["null","Line"],"default":null}]}},
                {"name":"lines","type":{"type":"array","items":"Line"}},
                {"name":"rates","type":{"type":"map","values":["null",
                    {"type":"fixed","name":"Rate","size":8,"logicalType":"decimal","precision":18,"scale":6}]}},
                {"name":"note","type":"string"}
            ]}"#,
        )
        .unwrap();
        let line = |price: i64, next: Option<Value>| {
            Value::Record(vec![
                ("price".into(), unscaled(price)),
                (
                    "next".into(),
                    match next {
                        Some(n) => Value::Union(1, Box::new(n)),
                        None => Value::Union(0, Box::new(Value::Null)),
                    },
                ),
            ])
        };
        let mut v = Value::Record(vec![
            ("total".into(), unscaled(12_345)),
            ("line".into(), line(1, Some(line(-2, None)))),
            ("lines".into(), Value::Array(vec![line(10_000, None)])),
            (
                "rates".into(),
                Value::Map(
                    [(
                        "eur".to_owned(),
                        Value::Union(1, Box::new(unscaled(1_000_000))),
                    )]
                    .into_iter()
                    .collect(),
                ),
            ),
            ("note".into(), Value::String("kept".into())),
        ]);
        assert!(v.validate(&schema));
        DecimalScales::of(&schema).unwrap().apply(&mut v);
        let Value::Record(fields) = &v else { panic!() };
        assert_eq!(fields[0].1, big(12_345, 2));
        let Value::Record(line) = &fields[1].1 else {
            panic!()
        };
        assert_eq!(line[0].1, big(1, 3));
        let Value::Union(1, next) = &line[1].1 else {
            panic!()
        };
        let Value::Record(next) = &**next else {
            panic!()
        };
        assert_eq!(next[0].1, big(-2, 3), "through a recursive reference");
        let Value::Array(lines) = &fields[2].1 else {
            panic!()
        };
        let Value::Record(first) = &lines[0] else {
            panic!()
        };
        assert_eq!(first[0].1, big(10_000, 3));
        let Value::Map(rates) = &fields[3].1 else {
            panic!()
        };
        assert_eq!(rates["eur"], Value::Union(1, Box::new(big(1_000_000, 6))));
        assert_eq!(fields[4].1, Value::String("kept".into()));
    }

    #[test]
    fn a_schema_without_decimals_needs_no_walk() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"children","type":{"type":"array","items":"Node"}},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#,
        )
        .unwrap();
        assert!(DecimalScales::of(&schema).is_none());
    }
}
