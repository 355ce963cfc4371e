//! Computed values: CEL expressions, compiled once, evaluated per event.
//!
//! CEL (the Common Expression Language of Kubernetes validation rules, Envoy and Google
//! Cloud IAM) through the `cel` crate. It was chosen over jq (`jaq`) after measuring both
//! on this machine: a jq filter sees the whole event as its input, so every evaluation
//! first converts every field (≈1.1 µs for a six-field record) and then runs (≈1.2 µs);
//! a CEL program names its inputs, so only the fields it references are bound (≈0.4 µs
//! in all). CEL is also typed (int, uint, double stay apart), cannot loop, and always
//! terminates, which suits a per-event expression.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value as Cel};
use chrono::{DateTime, FixedOffset, TimeZone, Utc};

use crate::config::ValueType;

pub mod column;
pub mod depth;
pub mod lists;
pub mod scope;

pub use scope::{Bound, Scope};

/// Names CEL resolves as function namespaces, not variables.
const NAMESPACES: [&str; 4] = ["math", "strings", "base64", "lists"];

/// The environment every expression is compiled in: the standard library, the math,
/// string and list extensions, and sinkd's `sum`, `min` and `max` ([`lists`]).
pub fn environment() -> Arc<Env> {
    let mut env = Env::stdlib();
    // The extensions only add functions; a failure would be a bug in the crate.
    let _ = cel::extensions::math(&mut env);
    let _ = cel::extensions::strings(&mut env);
    let _ = cel::extensions::lists(&mut env);
    lists::register(&mut env);
    Arc::new(env)
}

/// A compiled expression and the event fields it reads.
pub struct Expression {
    env: Arc<Env>,
    program: Program,
    /// Top-level fields the expression reads, bound per evaluation.
    pub inputs: Vec<String>,
    source: String,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl Expression {
    /// Compiles an expression. The error is the parser's message, or says that the
    /// expression nests too deep to evaluate safely ([`depth`]).
    pub fn compile(env: &Arc<Env>, source: &str) -> Result<Expression, String> {
        let program = depth::compile(env, source)?;
        let mut inputs: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .filter(|v| !NAMESPACES.contains(v))
            .map(str::to_owned)
            .collect();
        inputs.sort();
        Ok(Expression {
            env: env.clone(),
            program,
            inputs,
            source: source.to_owned(),
        })
    }

    /// Evaluates over a record's top-level fields and converts the result to `ty`.
    pub fn eval(&self, fields: &[(String, Value)], ty: ValueType) -> Result<Value, String> {
        let out = self.eval_cel(fields)?;
        from_cel(out, ty).map_err(|e| format!("`{}` {e}", self.source))
    }

    /// Evaluates over a record's top-level fields, giving CEL's own value. The error
    /// quotes the expression.
    pub fn eval_cel(&self, fields: &[(String, Value)]) -> Result<Cel, String> {
        self.eval_in(&Scope::new(fields).plain())
    }

    /// Evaluates in a scope (an event's fields converted once for all its expressions,
    /// and a child row's `item` and `index`), giving CEL's own value.
    pub fn eval_in(&self, vars: &Bound<'_, '_>) -> Result<Cel, String> {
        let mut ctx = Context::with_env(self.env.clone());
        ctx.set_variable_resolver(vars);
        self.program.execute(&ctx).map_err(|e| {
            // A field CEL cannot read looks undeclared to it: say what it holds instead.
            let unreadable = self.inputs.iter().find_map(|name| {
                let (_, v) = vars.fields().iter().find(|(n, _)| n == name)?;
                to_cel(v).err().map(|why| format!("field `{name}`: {why}"))
            });
            match unreadable {
                Some(why) => format!("`{}` cannot read {why}", self.source),
                None => format!("`{}` failed: {e}", self.source),
            }
        })
    }

    /// Evaluates a condition: `true` or `false`, anything else is an error.
    pub fn eval_bool(&self, fields: &[(String, Value)]) -> Result<bool, String> {
        self.eval_bool_in(&Scope::new(fields).plain())
    }

    /// [`Expression::eval_bool`] in a scope.
    pub fn eval_bool_in(&self, vars: &Bound<'_, '_>) -> Result<bool, String> {
        match self.eval_in(vars)? {
            Cel::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gave {} where a condition needs true or false",
                self.source,
                lists::kind(&other)
            )),
        }
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Avro → CEL. Decimals are refused before any event is seen (see the plan).
pub(crate) fn to_cel(v: &Value) -> Result<Cel, String> {
    Ok(match v {
        Value::Null => Cel::Null,
        Value::Boolean(b) => Cel::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Cel::Int(*i as i64),
        Value::Long(i) | Value::TimeMicros(i) => Cel::Int(*i),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            Cel::Timestamp(timestamp(Utc.timestamp_millis_opt(*ms).single(), *ms)?)
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            Cel::Timestamp(timestamp(DateTime::from_timestamp_micros(*us), *us)?)
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
            Cel::Timestamp(DateTime::from_timestamp_nanos(*ns).fixed_offset())
        }
        Value::Float(f) => Cel::Float(*f as f64),
        Value::Double(f) => Cel::Float(*f),
        Value::String(s) | Value::Enum(_, s) => Cel::String(Arc::new(s.clone())),
        Value::Uuid(u) => Cel::String(Arc::new(u.to_string())),
        Value::Bytes(b) | Value::Fixed(_, b) => Cel::Bytes(Arc::new(b.clone())),
        Value::Union(_, inner) => to_cel(inner)?,
        Value::Array(items) => Cel::List(Arc::new(
            items.iter().map(to_cel).collect::<Result<_, _>>()?,
        )),
        Value::Map(m) => map(m.iter().map(|(k, v)| (k.as_str(), v)))?,
        Value::Record(fields) => map(fields.iter().map(|(k, v)| (k.as_str(), v)))?,
        Value::Decimal(_) | Value::BigDecimal(_) | Value::Duration(_) => {
            return Err(
                "it holds a decimal or duration, which expressions cannot read exactly; copy \
                 the field by name instead"
                    .into(),
            );
        }
    })
}

fn timestamp(t: Option<DateTime<Utc>>, raw: i64) -> Result<DateTime<FixedOffset>, String> {
    t.map(|t| t.fixed_offset())
        .ok_or_else(|| format!("timestamp {raw} is out of range"))
}

fn map<'a>(entries: impl Iterator<Item = (&'a str, &'a Value)>) -> Result<Cel, String> {
    let mut out = HashMap::new();
    for (k, v) in entries {
        out.insert(Key::String(Arc::new(k.to_owned())), to_cel(v)?);
    }
    Ok(Cel::Map(Map { map: Arc::new(out) }))
}

/// CEL → Avro of the declared type, exactly or not at all: the same rules as computed
/// columns ([`column`]: an int for a float or double only when it is exactly one, a
/// double with a fraction never for an integer), and a timestamp for `timestamp_millis`
/// only without a sub-millisecond part.
fn from_cel(v: Cel, ty: ValueType) -> Result<Value, String> {
    use crate::config::ColumnKind as K;
    let kind = match ty {
        ValueType::Boolean => K::Boolean,
        ValueType::Int => K::Int,
        ValueType::Long => K::Long,
        ValueType::Float => K::Float,
        ValueType::Double => K::Double,
        ValueType::String => K::String,
        ValueType::TimestampMillis => {
            return match v {
                Cel::Timestamp(t) if t.timestamp_subsec_nanos() % 1_000_000 == 0 => {
                    Ok(Value::TimestampMillis(t.timestamp_millis()))
                }
                Cel::Timestamp(t) => Err(format!(
                    "gave the timestamp {t}, finer than the milliseconds of the field"
                )),
                other => match column::to_cell(other, Some(K::Long))?.1 {
                    Value::Long(ms) => Ok(Value::TimestampMillis(ms)),
                    other => Ok(other),
                },
            };
        }
    };
    column::to_cell(v, Some(kind)).map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<(String, Value)> {
        vec![
            ("amount_eur".into(), Value::Double(12.345)),
            ("status".into(), Value::String("new".into())),
            ("qty".into(), Value::Int(3)),
            ("at".into(), Value::TimestampMillis(1_700_000_000_000)),
        ]
    }

    #[test]
    fn binds_only_referenced_fields_and_types_the_result() {
        let env = environment();
        let e = Expression::compile(&env, "int(math.round(amount_eur * 100.0))").unwrap();
        assert_eq!(e.inputs, vec!["amount_eur".to_owned()]);
        assert_eq!(
            e.eval(&fields(), ValueType::Long).unwrap(),
            Value::Long(1235)
        );
        let evaluates = |text: &str, ty: ValueType, want: Value| {
            let e = Expression::compile(&env, text).unwrap();
            assert_eq!(e.eval(&fields(), ty).unwrap(), want, "{text}");
        };
        evaluates(
            "status == 'new' ? 'placed' : status",
            ValueType::String,
            Value::String("placed".into()),
        );
        evaluates(
            "at + duration('1s')",
            ValueType::TimestampMillis,
            Value::TimestampMillis(1_700_000_001_000),
        );
        evaluates("qty * 2", ValueType::Double, Value::Double(6.0));
    }

    #[test]
    fn refuses_to_narrow_and_reports_runtime_errors() {
        let env = environment();
        let e = Expression::compile(&env, "amount_eur * 100.0").unwrap();
        let err = e.eval(&fields(), ValueType::Long).unwrap_err();
        assert!(err.contains("round it with math.round"), "{err}");
        let e = Expression::compile(&env, "qty / 0").unwrap();
        assert!(e.eval(&fields(), ValueType::Long).is_err());
        assert!(Expression::compile(&env, "amount_eur * (").is_err());
    }

    #[test]
    fn upcast_values_are_exact_or_refused() {
        let env = environment();
        let eval = |src: &str, ty| Expression::compile(&env, src).unwrap().eval(&fields(), ty);
        assert!(eval("16777217", ValueType::Float).is_err());
        assert_eq!(
            eval("16777216", ValueType::Float),
            Ok(Value::Float(16_777_216.0))
        );
        assert!(eval("0.1", ValueType::Float).is_err());
        assert!(eval("9007199254740993", ValueType::Double).is_err());
        assert!(eval("at + duration('1500us')", ValueType::TimestampMillis).is_err());
        assert_eq!(
            eval("at + duration('2ms')", ValueType::TimestampMillis),
            Ok(Value::TimestampMillis(1_700_000_000_002))
        );
    }

    #[test]
    fn a_field_expressions_cannot_read_is_named_with_why() {
        let env = environment();
        let mut f = fields();
        f.push((
            "price".into(),
            Value::Decimal(apache_avro::Decimal::from(vec![1u8, 2])),
        ));
        let e = Expression::compile(&env, "price * 2").unwrap();
        let err = e.eval(&f, ValueType::Long).unwrap_err();
        assert!(
            err.contains("field `price`") && err.contains("decimal"),
            "{err}"
        );
    }
}
