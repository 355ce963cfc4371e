//! Helpers on Avro values that projection, compaction and sinks share.

use apache_avro::types::Value;
use serde_json::{Map, Number, Value as Json};

/// A value without its union wrappers, by value.
pub fn into_unwrapped(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => into_unwrapped(*inner),
        other => other,
    }
}

/// Looks through `["null", T]`-style union wrappers to the value inside.
pub fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

/// Whether the value is Avro null (through unions).
pub fn is_null(v: &Value) -> bool {
    matches!(unwrap_union(v), Value::Null)
}

/// Adds two numeric values for increments. Null counts as zero, so an increment of a
/// missing counter starts it. The result keeps the wider of the two types.
pub fn add(a: &Value, b: &Value) -> Result<Value, String> {
    use Value::*;
    Ok(match (unwrap_union(a), unwrap_union(b)) {
        (Null, x) | (x, Null) => x.clone(),
        (Int(x), Int(y)) => Int(x
            .checked_add(*y)
            .ok_or_else(|| format!("int overflow adding {y} to {x}"))?),
        (Int(x), Long(y)) | (Long(y), Int(x)) => Long(
            (*x as i64)
                .checked_add(*y)
                .ok_or_else(|| format!("long overflow adding {x} to {y}"))?,
        ),
        (Long(x), Long(y)) => Long(
            x.checked_add(*y)
                .ok_or_else(|| format!("long overflow adding {y} to {x}"))?,
        ),
        (Float(x), Float(y)) => Float(x + y),
        (Double(x), Double(y)) => Double(x + y),
        (Float(x), Double(y)) | (Double(y), Float(x)) => Double(*x as f64 + y),
        (Int(x), Double(y)) | (Double(y), Int(x)) => Double(*x as f64 + y),
        (Long(x), Double(y)) | (Double(y), Long(x)) => Double(*x as f64 + y),
        (Int(x), Float(y)) | (Float(y), Int(x)) => Float(*x as f32 + y),
        (Long(x), Float(y)) | (Float(y), Long(x)) => Double(*x as f64 + *y as f64),
        (x, y) => return Err(format!("cannot add non-numeric values {x:?} and {y:?}")),
    })
}

/// The integer inside an integer-like value: int, long, date, time and timestamp kinds
/// (through unions).
pub fn integer(v: &Value) -> Option<i64> {
    match unwrap_union(v) {
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Some(*i as i64),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => Some(*i),
        _ => None,
    }
}

/// Renders a value as JSON for JSON columns, dead-letter messages and the CLI. Bytes become
/// base64-free arrays of numbers would be unreadable, so they are rendered as lowercase hex.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Float(f) => double(*f as f64),
        Value::Double(f) => double(*f),
        Value::Bytes(b) | Value::Fixed(_, b) => Json::String(hex(b)),
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Union(_, inner) => to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Value::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        // Decoders give decimals their scale (`crate::decimals`); a bare `Decimal` has
        // none to give, so its unscaled digits are all there is to render.
        Value::Decimal(d) => {
            let unscaled: num_bigint::BigInt = d.clone().into();
            Json::String(unscaled.to_string())
        }
        // A string, not a JSON number: JSON numbers become doubles in most readers.
        Value::BigDecimal(d) => Json::String(plain(d)),
        Value::Duration(d) => Json::String(format!("{d:?}")),
        Value::Uuid(u) => Json::String(u.to_string()),
        // int, long, and the date, time and timestamp kinds.
        integral => integer(integral).map_or(Json::Null, Json::from),
    }
}

/// Formats an Avro decimal with its scale, e.g. unscaled 12345 with scale 2 → `123.45`.
pub fn decimal_string(v: &Value, scale: u32) -> Option<String> {
    match unwrap_union(v) {
        Value::Decimal(d) => {
            let unscaled: num_bigint::BigInt = d.clone().into();
            Some(scale_digits(&unscaled.to_string(), scale))
        }
        Value::BigDecimal(d) => Some(plain(d)),
        _ => None,
    }
}

/// The largest scale (digits after the point, or zeros before it) written positionally.
const POSITIONAL_SCALE: u64 = 1_000;

/// A double as JSON. JSON has no NaN or infinity; they are written as the strings
/// `"NaN"`, `"Infinity"` and `"-Infinity"` (as Protobuf's JSON mapping does) rather than
/// lost as null.
fn double(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".into()),
        None if f > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// A decimal in positional notation with exactly its scale's digits after the point
/// (`100.00` stays `100.00`; `BigDecimal`'s `Display` may switch to exponents). A scale
/// beyond [`POSITIONAL_SCALE`] either way (only a `big-decimal`, whose scale is in the
/// datum, can have one) is written with an exponent, `12E-5000`: the same number, without
/// thousands of padding zeros.
fn plain(d: &bigdecimal::BigDecimal) -> String {
    let (unscaled, scale) = d.as_bigint_and_exponent();
    if scale.unsigned_abs() > POSITIONAL_SCALE {
        return format!("{unscaled}E{}", -i128::from(scale));
    }
    match u32::try_from(scale) {
        Ok(scale) => scale_digits(&unscaled.to_string(), scale),
        // A negative scale (only a `big-decimal` can have one) multiplies by 10^-scale.
        Err(_) if unscaled.sign() == num_bigint::Sign::NoSign => "0".into(),
        Err(_) => format!("{unscaled}{}", "0".repeat(scale.unsigned_abs() as usize)),
    }
}

fn scale_digits(digits: &str, scale: u32) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_with_null_as_zero_and_widening() {
        assert_eq!(add(&Value::Null, &Value::Int(3)).unwrap(), Value::Int(3));
        assert_eq!(
            add(&Value::Int(2), &Value::Long(3)).unwrap(),
            Value::Long(5)
        );
        assert!(add(&Value::Int(i32::MAX), &Value::Int(1)).is_err());
        assert!(add(&Value::String("a".into()), &Value::Int(1)).is_err());
    }

    #[test]
    fn scales_decimals() {
        assert_eq!(scale_digits("12345", 2), "123.45");
        assert_eq!(scale_digits("-5", 2), "-0.05");
        assert_eq!(scale_digits("7", 0), "7");
    }

    #[test]
    fn big_decimals_render_every_digit_of_their_scale() {
        use bigdecimal::BigDecimal;
        use num_bigint::BigInt;
        let big = |unscaled: &str, scale: i64| {
            Value::BigDecimal(BigDecimal::new(unscaled.parse::<BigInt>().unwrap(), scale))
        };
        let cases = [
            (big("10000", 2), "100.00"),
            (big("-1", 38), "-0.00000000000000000000000000000000000001"),
            (
                big("99999999999999999999999999999999999999", 0),
                "99999999999999999999999999999999999999",
            ),
            (big("12", -3), "12000"),
            (big("0", -3), "0"),
            (big("0", 4), "0.0000"),
            // A big-decimal's scale comes from the datum: any i64, never padded out.
            (big("12", 5_000), "12E-5000"),
            (big("-12", -5_000), "-12E5000"),
            (big("7", i64::MIN), "7E9223372036854775808"),
            (big("7", i64::MAX), "7E-9223372036854775807"),
        ];
        for (v, text) in cases {
            assert_eq!(to_json(&v), Json::String(text.into()), "{v:?}");
            assert_eq!(decimal_string(&v, 9).as_deref(), Some(text), "{v:?}");
        }
    }

    #[test]
    fn doubles_without_a_json_number_stay_readable() {
        assert_eq!(
            to_json(&Value::Double(f64::NAN)),
            Json::String("NaN".into())
        );
        assert_eq!(
            to_json(&Value::Float(f32::INFINITY)),
            Json::String("Infinity".into())
        );
        assert_eq!(
            to_json(&Value::Double(f64::NEG_INFINITY)),
            Json::String("-Infinity".into())
        );
        // Finite edges keep every bit through their JSON text.
        for f in [f64::MAX, f64::MIN_POSITIVE, 5e-324, -0.0, 0.1 + 0.2] {
            let Json::Number(n) = to_json(&Value::Double(f)) else {
                panic!("{f} is not a number")
            };
            let back: f64 = n.to_string().parse().unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{f}");
        }
    }
}
