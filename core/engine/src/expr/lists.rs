//! The list functions CEL lacks and read models need: `sum()`, `min()` and `max()`.
//!
//! CEL has macros that map and filter (`items.map(i, i.qty)`) but no fold, so a total
//! over an array could only be spelled out element by element. These three follow CEL's
//! own typing: no implicit conversion between `int`, `uint` and `double`.
//!
//! - `sum()` of an empty list is the int `0`; of ints an int, of uints a uint, of doubles
//!   a double (added in ascending order, so the bits do not depend on the list's order). A list that mixes number kinds is an error, as `1 + 1.0` is in CEL (convert
//!   with `double(…)` first). Integer overflow is an error, never a wrapped value.
//! - `min()` / `max()` of an empty list is an error; the elements must be of one kind
//!   (numbers of one kind, strings, timestamps, durations, booleans).

use std::cmp::Ordering;

use cel::common::types::LIST_TYPE;
use cel::common::value::CowVal;
use cel::{Env, ExecutionError, Value as Cel};

/// Adds `list.sum()`, `list.min()` and `list.max()` to `env`.
pub fn register(env: &mut Env) {
    // Each name is new to the environment: a failure would be a bug in this module.
    for (name, id, op) in [
        ("sum", "list.sum()", sum as cel::common::functions::Function),
        ("min", "list.min()", min),
        ("max", "list.max()", max),
    ] {
        env.add_member_overload(name, id, LIST_TYPE, vec![], op)
            .expect("list functions are declared once");
    }
}

/// The one argument, the receiver list, as plain values.
fn elements(function: &str, args: Vec<CowVal<'_, '_>>) -> Result<Vec<Cel>, ExecutionError> {
    let [list]: [CowVal<'_, '_>; 1] = args
        .try_into()
        .map_err(|a: Vec<_>| ExecutionError::invalid_argument_count(1, a.len()))?;
    match Cel::try_from(list.as_ref())? {
        Cel::List(items) => Ok(items.to_vec()),
        other => Err(ExecutionError::function_error(
            function,
            format!("needs a list, found {}", kind(&other)),
        )),
    }
}

fn result<'b, 'v>(value: Cel) -> Result<CowVal<'b, 'v>, ExecutionError> {
    Ok(CowVal::Owned(value.try_into()?))
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let mut items = elements("sum", args)?;
    // Doubles are added in ascending order, so the total does not depend on the order the
    // list came in (a map's keys come in no fixed order; float addition is not associative):
    // a replay gives the same bits.
    if items.iter().all(|i| matches!(i, Cel::Float(_))) {
        items.sort_by(|a, b| match (a, b) {
            (Cel::Float(a), Cel::Float(b)) => a.total_cmp(b),
            _ => Ordering::Equal,
        });
    }
    let overflow = || ExecutionError::function_error("sum", "integer overflow");
    let mut total = match items.first() {
        None => return result(Cel::Int(0)),
        Some(Cel::Int(_)) => Cel::Int(0),
        Some(Cel::UInt(_)) => Cel::UInt(0),
        Some(Cel::Float(_)) => Cel::Float(0.0),
        Some(other) => {
            return Err(ExecutionError::function_error(
                "sum",
                format!("adds numbers, found {}", kind(other)),
            ));
        }
    };
    for item in &items {
        total = match (total, item) {
            (Cel::Int(a), Cel::Int(b)) => Cel::Int(a.checked_add(*b).ok_or_else(overflow)?),
            (Cel::UInt(a), Cel::UInt(b)) => Cel::UInt(a.checked_add(*b).ok_or_else(overflow)?),
            (Cel::Float(a), Cel::Float(b)) => Cel::Float(a + b),
            (total, item) => {
                return Err(ExecutionError::function_error(
                    "sum",
                    format!(
                        "the list mixes {} and {}; convert first, e.g. `list.map(x, double(x)).sum()`",
                        kind(&total),
                        kind(item)
                    ),
                ));
            }
        };
    }
    result(total)
}

fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("min", elements("min", args)?, Ordering::Less)
}

fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("max", elements("max", args)?, Ordering::Greater)
}

/// The first element that no other element is `wanted`-of (the least or the greatest).
fn extreme<'b, 'v>(
    function: &str,
    items: Vec<Cel>,
    wanted: Ordering,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let mut items = items.into_iter();
    let Some(mut best) = items.next() else {
        return Err(ExecutionError::function_error(
            function,
            "the list is empty",
        ));
    };
    let comparable = matches!(
        best,
        Cel::Int(_)
            | Cel::UInt(_)
            | Cel::Float(_)
            | Cel::String(_)
            | Cel::Bool(_)
            | Cel::Timestamp(_)
            | Cel::Duration(_)
    );
    if !comparable {
        return Err(ExecutionError::function_error(
            function,
            format!("cannot order {}", kind(&best)),
        ));
    }
    for item in items {
        if std::mem::discriminant(&item) != std::mem::discriminant(&best) {
            return Err(ExecutionError::function_error(
                function,
                format!("the list mixes {} and {}", kind(&best), kind(&item)),
            ));
        }
        match item.partial_cmp(&best) {
            Some(o) if o == wanted => best = item,
            Some(_) => {}
            // NaN: no order, as in CEL's comparisons; the result would depend on position.
            None => {
                return Err(ExecutionError::function_error(
                    function,
                    "the list holds NaN, which has no order",
                ));
            }
        }
    }
    if let Cel::Float(f) = best
        && f.is_nan()
    {
        return Err(ExecutionError::function_error(
            function,
            "the list holds NaN, which has no order",
        ));
    }
    result(best)
}

/// CEL's name of a value's type, for messages.
pub(crate) fn kind(v: &Cel) -> &'static str {
    match v {
        Cel::Int(_) => "int",
        Cel::UInt(_) => "uint",
        Cel::Float(_) => "double",
        Cel::String(_) => "string",
        Cel::Bool(_) => "bool",
        Cel::Bytes(_) => "bytes",
        Cel::Null => "null",
        Cel::List(_) => "list",
        Cel::Map(_) => "map",
        Cel::Timestamp(_) => "timestamp",
        Cel::Duration(_) => "duration",
        _ => "value",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cel::{Context, Value as Cel};

    fn eval(source: &str) -> Result<Cel, String> {
        let env = crate::expr::environment();
        let program = env.compile(source).map_err(|e| e.to_string())?;
        program
            .execute(&Context::with_env(Arc::clone(&env)))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sum_follows_cel_typing() {
        assert_eq!(eval("[].sum()"), Ok(Cel::Int(0)));
        assert_eq!(eval("[1, 2, 3].sum()"), Ok(Cel::Int(6)));
        assert_eq!(eval("[1u, 2u].sum()"), Ok(Cel::UInt(3)));
        assert_eq!(eval("[0.5, 0.25].sum()"), Ok(Cel::Float(0.75)));
        // The same doubles in any order give the same bits.
        assert_eq!(
            eval("[1e16, 1.0, -1e16, 1.0].sum()"),
            eval("[1.0, -1e16, 1.0, 1e16].sum()")
        );
        assert_eq!(
            eval("[{'q': 2}, {'q': 5}].map(i, i.q).sum()"),
            Ok(Cel::Int(7))
        );
        let mixed = eval("[1, 2.5].sum()").unwrap_err();
        assert!(mixed.contains("mixes int and double"), "{mixed}");
        assert_eq!(
            eval("[1, 2.5].map(x, double(x)).sum()"),
            Ok(Cel::Float(3.5))
        );
        let overflow = eval("[9223372036854775807, 1].sum()").unwrap_err();
        assert!(overflow.contains("overflow"), "{overflow}");
        assert!(eval("['a'].sum()").unwrap_err().contains("adds numbers"));
    }

    #[test]
    fn min_and_max_need_one_kind_and_at_least_one_element() {
        assert_eq!(eval("[3, 1, 2].min()"), Ok(Cel::Int(1)));
        assert_eq!(eval("[3, 1, 2].max()"), Ok(Cel::Int(3)));
        assert_eq!(eval("[-0.5, 2.0].min()"), Ok(Cel::Float(-0.5)));
        assert_eq!(
            eval("['b', 'a'].min()"),
            Ok(Cel::String(Arc::new("a".into())))
        );
        assert!(eval("[].max()").unwrap_err().contains("empty"));
        assert!(eval("[1, 2u].max()").unwrap_err().contains("mixes"));
        assert!(
            eval("[1.0, double('NaN')].max()")
                .unwrap_err()
                .contains("NaN")
        );
    }
}
