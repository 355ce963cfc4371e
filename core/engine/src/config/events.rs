//! The `events` section: what each event type does to the read model.
//!
//! ```yaml
//! events:
//!   com.shop.OrderPlaced:              # one rule
//!     op: upsert
//!     columns:
//!       customer: customer_id          # a field, copied exactly as committed
//!       item_count: "items.map(i, i.qty).sum()"   # a CEL expression
//!       status: "'PLACED'"             # a constant (CEL string literal)
//!       small_count: "items.size()"
//!     types: {small_count: int}         # declared type of a computed column
//!     also:                            # child rows in another target
//!       - target: order_lines
//!         for_each: items                # one row per element, read as `item`
//!         op: upsert
//!         key: {order_id: order_id, line_no: "index"}
//!         columns: {sku: "item.sku", qty: "item.qty"}
//!   com.shop.OrderClosed:              # rules tried in order; the first match applies
//!     - when: "reason == 'fraud'"
//!       op: delete
//!     - op: merge
//!       columns: {status: "'CLOSED'"}
//! ```

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

/// The rules of one event type, tried in order: the first whose `when` holds (or that
/// has none) applies. Written as one rule (a mapping) or a list of rules.
///
/// Only the container is told apart here; every scalar inside is read with its declared
/// type, so YAML 1.1 words like `n` or `on` stay field names, as they always were.
#[derive(Clone, Debug)]
pub struct EventRules(pub Vec<EventConfig>);

/// One rule: what an event of the type does when its condition holds.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// A CEL condition over the event's fields; the rule applies when it is true. Absent:
    /// always.
    #[serde(default)]
    pub when: Option<String>,
    /// The operation.
    pub op: OpKind,
    /// Event fields to use as columns of the same name. Default: every field except the
    /// key fields (for `delete`, none).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Columns by name: each a field name (copied exactly, with the type its schema
    /// gives it) or a CEL expression over the event's fields.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Declared types of computed columns (and computed key columns), by column name.
    /// Without one, a computed column takes the type of its value: CEL int → long,
    /// double → double, timestamp → timestamp, lists and maps → JSON.
    #[serde(default)]
    pub types: BTreeMap<String, ColumnKind>,
    /// The key, computed: one entry per key column, each a field or expression.
    /// Absent: the pipeline's `key.from`.
    #[serde(default)]
    pub key: BTreeMap<String, String>,
    /// More writes of the same event into other targets (child rows), in order, after
    /// this rule's own.
    #[serde(default)]
    pub also: Vec<ChildConfig>,
}

/// A write of an event into one of the pipeline's `targets`: one row, or one row per
/// element of a list (`for_each`), or a delete of every row under a key prefix.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildConfig {
    /// The target, a name under the pipeline's `targets`.
    pub target: String,
    /// A CEL expression giving a list: one row per element, which expressions read as
    /// `item` (and its 0-based position as `index`).
    #[serde(default)]
    pub for_each: Option<String>,
    /// A CEL condition (over the event, and `item`/`index` per element); absent: always.
    #[serde(default)]
    pub when: Option<String>,
    /// The operation.
    pub op: OpKind,
    /// The target's key columns, each a field or an expression. A delete may give only
    /// the first ones (a prefix): it removes every row under them.
    pub key: BTreeMap<String, String>,
    /// Columns, as in a rule.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Declared types of computed columns, as in a rule.
    #[serde(default)]
    pub types: BTreeMap<String, ColumnKind>,
}

/// One of the pipeline's extra targets.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Its key columns (for MongoDB, the fields of the `_id` sub-document).
    pub key: Vec<String>,
}

impl ChildConfig {
    /// How a column (or key column) is filled.
    pub fn spec(&self, column: &str, value: &str) -> ColumnSpec {
        ColumnSpec {
            value: value.to_owned(),
            ty: self.types.get(column).copied(),
        }
    }
}

impl EventConfig {
    /// How a column (or computed key column) is filled.
    pub fn spec(&self, column: &str, value: &str) -> ColumnSpec {
        ColumnSpec {
            value: value.to_owned(),
            ty: self.types.get(column).copied(),
        }
    }
}

/// The operation an event performs on the row or document of its key.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Replace the whole row: columns the event does not carry become null.
    Upsert,
    /// Set the given columns, leave the others; creates the row if absent.
    Merge,
    /// Add to numeric columns; a missing row or null column counts as zero.
    Increment,
    /// Remove the row.
    Delete,
}

/// How a column is filled: a field name or an expression, and the declared type. An
/// expression that is a plain identifier names a field and copies its value exactly, with
/// the type its schema gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSpec {
    /// A field name or a CEL expression.
    pub value: String,
    /// The column's declared type; without one a computed column takes the type of its
    /// value.
    pub ty: Option<ColumnKind>,
}

/// The types a computed column can be declared with.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// true / false.
    Boolean,
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    Long,
    /// 32-bit float (only values exactly representable).
    Float,
    /// 64-bit float.
    Double,
    /// Text.
    String,
    /// Bytes.
    Bytes,
    /// An instant, microsecond precision.
    Timestamp,
    /// Any value, stored as JSON.
    Json,
}

impl ColumnSpec {
    /// The field this column copies, when its value is a plain field name.
    pub fn field(&self) -> Option<&str> {
        is_identifier(&self.value).then_some(self.value.as_str())
    }
}

/// An Avro name, which is also a CEL identifier (CEL's reserved words aside, which no one
/// names a field).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(s, "true" | "false" | "null")
}

impl JsonSchema for EventRules {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventRules".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let rule = generator.subschema_for::<EventConfig>();
        schemars::json_schema!({
            "description": "One rule, or a list of rules tried in order: the first whose `when` holds (or that has none) applies.",
            "anyOf": [rule, {"type": "array", "items": rule}]
        })
    }
}

impl<'de> Deserialize<'de> for EventRules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Rules;
        impl<'de> Visitor<'de> for Rules {
            type Value = EventRules;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rule (`op: …`) or a list of rules")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EventRules, A::Error> {
                EventConfig::deserialize(MapAccessDeserializer::new(map))
                    .map(|r| EventRules(vec![r]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<EventRules, A::Error> {
                Vec::<EventConfig>::deserialize(SeqAccessDeserializer::new(seq)).map(EventRules)
            }
        }
        d.deserialize_any(Rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_are_fields_and_the_rest_expressions() {
        let spec = |v: &str| ColumnSpec {
            value: v.into(),
            ty: None,
        };
        assert_eq!(spec("total_cents").field(), Some("total_cents"));
        assert_eq!(spec("_x9").field(), Some("_x9"));
        for expr in [
            "'PLACED'",
            "qty * price",
            "items.size()",
            "true",
            "1",
            "a.b",
        ] {
            assert_eq!(spec(expr).field(), None, "{expr}");
        }
    }
}
