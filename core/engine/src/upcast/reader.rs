//! Avro schema resolution against a declared reader schema, before the upcasters run.
//!
//! apache-avro resolves a value to a reader schema (defaults, promotions, unions, enum
//! defaults) but does not look at the reader's field aliases; a field renamed with an
//! alias is renamed here first, in nested records too, and then resolved.

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use apache_avro::types::Value;

/// Resolves a decoded value (of its writer schema) to the reader schema.
pub fn resolve_to_reader(value: Value, reader: &Schema) -> Result<Value, String> {
    let mut value = value;
    apply_aliases(&mut value, reader);
    value
        .resolve(reader)
        .map_err(|e| format!("does not resolve to the reader schema: {e}"))
}

fn apply_aliases(value: &mut Value, schema: &Schema) {
    match (value, schema) {
        (Value::Union(_, inner), Schema::Union(u)) => {
            for variant in u.variants() {
                if let Schema::Record(_) = variant {
                    apply_aliases(inner, variant);
                }
            }
        }
        (Value::Record(fields), Schema::Record(record)) => rename_fields(fields, record),
        _ => {}
    }
}

fn rename_fields(fields: &mut [(String, Value)], record: &RecordSchema) {
    for rf in &record.fields {
        let has_name = fields.iter().any(|(n, _)| *n == rf.name);
        if !has_name && let Some(f) = fields.iter_mut().find(|(n, _)| rf.aliases.contains(n)) {
            f.0 = rf.name.clone();
        }
        if let Some((_, v)) = fields.iter_mut().find(|(n, _)| *n == rf.name) {
            apply_aliases(v, &rf.schema);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_defaults_promotions_and_aliases() {
        let writer = Schema::parse_str(
            r#"{"type":"record","name":"E","fields":[
                {"name":"qty","type":"int"},
                {"name":"amount","type":"double"}]}"#,
        )
        .unwrap();
        let reader = Schema::parse_str(
            r#"{"type":"record","name":"E","fields":[
                {"name":"qty","type":"long"},
                {"name":"amount_eur","type":"double","aliases":["amount"]},
                {"name":"currency","type":"string","default":"EUR"}]}"#,
        )
        .unwrap();
        let v = Value::Record(vec![
            ("qty".into(), Value::Int(3)),
            ("amount".into(), Value::Double(1.5)),
        ]);
        assert!(v.validate(&writer));
        assert_eq!(
            resolve_to_reader(v, &reader).unwrap(),
            Value::Record(vec![
                ("qty".into(), Value::Long(3)),
                ("amount_eur".into(), Value::Double(1.5)),
                ("currency".into(), Value::String("EUR".into())),
            ])
        );
        let bad = Value::Record(vec![("qty".into(), Value::String("x".into()))]);
        assert!(resolve_to_reader(bad, &reader).is_err());
    }
}
