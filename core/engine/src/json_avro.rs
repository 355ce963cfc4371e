//! JSON text → Avro values of a schema, exactly: the one conversion that the outbox
//! capture (JSON payload columns) and `sinkd upcast` (JSON sample events) share.
//!
//! Exactness rests on two things. The JSON is parsed with `serde_json`'s
//! `float_roundtrip` feature (set for the whole workspace), so a number's text becomes the
//! nearest double, not one a unit in the last place away. And a number going into an
//! Avro `float` is checked here, because `apache-avro` narrows the parsed double with `as
//! f32`: a value beyond `f32` range would become infinity; it is refused with the
//! field's path instead (see [`narrow`] for what narrowing keeps exact).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;

/// `json` as a value of `schema` (Avro's schema resolution: defaults for missing fields,
/// promotions, unions). The error names the field and what does not fit.
pub fn from_json(json: Json, schema: &Schema) -> Result<Value, String> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
    check_floats(&json, schema, resolved.get_names(), "")?;
    let value = Value::try_from(json).map_err(|e| e.to_string())?;
    value.resolve(schema).map_err(|e| e.to_string())
}

/// Walks `json` beside `schema` and refuses numbers that an Avro `float` cannot take
/// without being altered (see the module's comment).
fn check_floats(
    json: &Json,
    schema: &Schema,
    names: &HashMap<Name, &Schema>,
    path: &str,
) -> Result<(), String> {
    let at = |field: &str| {
        if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    match (schema, json) {
        (Schema::Ref { name }, _) => match names.get(name) {
            Some(s) => check_floats(json, s, names, path),
            None => Ok(()),
        },
        (Schema::Float, Json::Number(n)) => match n.as_f64() {
            Some(x) => narrow(x).map(|_| ()).map_err(|why| {
                let field = if path.is_empty() { "the value" } else { path };
                format!("field `{field}`: {n} {why}")
            }),
            None => Ok(()),
        },
        (Schema::Record(r), Json::Object(fields)) => r.fields.iter().try_for_each(|f| {
            fields
                .get(&f.name)
                .map_or(Ok(()), |v| check_floats(v, &f.schema, names, &at(&f.name)))
        }),
        (Schema::Array(a), Json::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_floats(v, &a.items, names, &at(&i.to_string()))),
        (Schema::Map(m), Json::Object(entries)) => entries
            .iter()
            .try_for_each(|(k, v)| check_floats(v, &m.types, names, &at(k))),
        (Schema::Union(u), _) => u.variants().iter().try_for_each(|s| match (s, json) {
            // A number meets the float branch only when no wider branch takes it first.
            (Schema::Float, Json::Number(_)) if !u.variants().contains(&Schema::Double) => {
                check_floats(json, s, names, path)
            }
            (Schema::Float, _) => Ok(()),
            _ => check_floats(json, s, names, path),
        }),
        _ => Ok(()),
    }
}

/// `x` narrowed to an Avro float, refusing what would overflow to infinity. A float written
/// in any form that reads back as that float (its shortest text, or its value widened to a
/// double and printed, as JavaScript does) arrives bit for bit: such a text is read into a
/// double exactly, or into one no further from the float, and narrowing rounds to nearest
/// (ties to even, as reading the text as a float would). Only a text that is no float's
/// and lies within half a double's unit of the midpoint between two floats may come out
/// as the other neighbour; the text itself is gone by then.
pub fn narrow(x: f64) -> Result<f32, &'static str> {
    let y = x as f32;
    if y.is_infinite() && x.is_finite() {
        return Err("is beyond the range of an Avro float");
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOUBLES: &str = r#"{"type":"record","name":"D","fields":[
        {"name":"d","type":"double"},
        {"name":"o","type":["null","double"],"default":null},
        {"name":"l","type":{"type":"array","items":"double"},"default":[]}]}"#;
    const FLOATS: &str = r#"{"type":"record","name":"F","fields":[
        {"name":"f","type":"float"},
        {"name":"m","type":{"type":"map","values":["null","float"]},"default":{}}]}"#;

    fn field(v: &Value, name: &str) -> Value {
        let Value::Record(fields) = v else {
            panic!("not a record: {v:?}")
        };
        fields.iter().find(|(n, _)| n == name).unwrap().1.clone()
    }

    fn double_from_text(text: &str) -> f64 {
        let schema = Schema::parse_str(DOUBLES).unwrap();
        let json: Json = serde_json::from_str(&format!(r#"{{"d": {text}}}"#)).unwrap();
        match field(&from_json(json, &schema).unwrap(), "d") {
            Value::Double(d) => d,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// Doubles whose text needs all 17 significant digits, the type's edges, subnormals,
    /// signed zeros, and 20,000 bit patterns spread over the whole range: each must come
    /// out bit for bit as Rust's own (correctly rounded) parser reads the same text.
    #[test]
    fn doubles_keep_every_bit() {
        let mut texts: Vec<String> = [
            "0.11500462567076519",
            "0.1150046256707652",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "2.2250738585072014e-308",
            "2.2250738585072009e-308",
            "4.9406564584124654e-324",
            "5e-324",
            "-5e-324",
            "0.0",
            "-0.0",
            "9007199254740993",
            "1e23",
            "8.98846567431158e307",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut bits = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let x = f64::from_bits(bits);
            if x.is_finite() {
                texts.push(format!("{x:e}"));
                texts.push(format!("{x:.16e}"));
            }
        }
        for text in &texts {
            let want: f64 = text.parse().unwrap();
            let got = double_from_text(text);
            assert_eq!(got.to_bits(), want.to_bits(), "{text}: {got:e} != {want:e}");
        }
    }

    #[test]
    fn doubles_in_unions_and_arrays_keep_every_bit() {
        let schema = Schema::parse_str(DOUBLES).unwrap();
        let text =
            r#"{"d": -0.0, "o": 0.11500462567076519, "l": [5e-324, 1.7976931348623157e308]}"#;
        let v = from_json(serde_json::from_str(text).unwrap(), &schema).unwrap();
        assert_eq!(field(&v, "d"), Value::Double(-0.0));
        assert!(matches!(field(&v, "d"), Value::Double(z) if z.is_sign_negative()));
        assert_eq!(
            field(&v, "o"),
            Value::Union(1, Box::new(Value::Double(0.115_004_625_670_765_19)))
        );
        assert_eq!(
            field(&v, "l"),
            Value::Array(vec![Value::Double(5e-324), Value::Double(f64::MAX)])
        );
    }

    #[test]
    fn floats_are_the_nearest_float_to_their_text() {
        let schema = Schema::parse_str(FLOATS).unwrap();
        let mut values = vec![
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            0.1,
            -0.0,
            16_777_217.0,
        ];
        let mut bits = 0x2545_f491u32;
        for _ in 0..20_000 {
            bits ^= bits << 13;
            bits ^= bits >> 17;
            bits ^= bits << 5;
            values.push(f32::from_bits(bits));
        }
        for want in values.into_iter().filter(|f| f.is_finite()) {
            // Rust prints the shortest text that reads back as the same float; JavaScript
            // prints a float widened to a double.
            for text in [
                format!("{want:?}"),
                format!("{want:e}"),
                format!("{:?}", f64::from(want)),
            ] {
                let json: Json = serde_json::from_str(&format!(r#"{{"f": {text}}}"#)).unwrap();
                let v = from_json(json, &schema).unwrap();
                let Value::Float(got) = field(&v, "f") else {
                    panic!("{text}")
                };
                assert_eq!(got.to_bits(), want.to_bits(), "{text}");
            }
        }
    }

    #[test]
    fn a_number_beyond_a_float_is_refused_with_its_field() {
        let schema = Schema::parse_str(FLOATS).unwrap();
        let e = from_json(serde_json::json!({"f": 1e39}), &schema).unwrap_err();
        assert!(e.contains("field `f`") && e.contains("range"), "{e}");
        let e = from_json(serde_json::json!({"f": 1.0, "m": {"k": -1e300}}), &schema).unwrap_err();
        assert!(e.contains("field `m.k`"), "{e}");
        assert_eq!(narrow(f64::from(f32::MAX)), Ok(f32::MAX));
        assert_eq!(narrow(1e-50), Ok(0.0), "the nearest float to 1e-50 is zero");
    }

    #[test]
    fn integers_out_of_an_int_range_are_refused_not_wrapped() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"I","fields":[{"name":"i","type":"int"}]}"#,
        )
        .unwrap();
        assert!(from_json(serde_json::json!({"i": 2_147_483_648i64}), &schema).is_err());
        assert_eq!(
            field(
                &from_json(serde_json::json!({"i": -2_147_483_648i64}), &schema).unwrap(),
                "i"
            ),
            Value::Int(i32::MIN)
        );
    }
}
