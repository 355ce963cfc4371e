//! The `upcasters` section: per event type, the steps that turn version N into N+1.
//!
//! ```yaml
//! upcasters:
//!   com.shop.OrderPlaced:
//!     reader_schema: { subject: shop.orders-com.shop.OrderPlaced }   # optional
//!     chain:
//!       - from: 1                       # v1 → v2
//!         steps:
//!           - rename: { from: amount, to: amount_eur }
//!           - default: { field: currency, value: EUR }
//!       - from: 2                       # v2 → v3
//!         steps:
//!           - compute: { field: total_cents, type: long, expr: "math.round(amount_eur * 100.0)" }
//!           - drop: amount_eur
//! ```

use schemars::JsonSchema;
use serde::Deserialize;

/// The upcasters of one event type.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpcasterConfig {
    /// An Avro reader schema the writer's data is resolved to before the chain runs, so
    /// Avro's own rules (defaults, promotions, field aliases) apply. The event keeps its
    /// writer version: the chain still decides what that version's data means.
    #[serde(default)]
    pub reader_schema: Option<ReaderSchemaConfig>,
    /// One entry per source version, without gaps or duplicates. The newest version is
    /// the last `from` + 1; events of that version or newer pass through untouched.
    #[serde(default)]
    pub chain: Vec<UpcastVersion>,
}

/// Where a reader schema comes from.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ReaderSchemaConfig {
    /// An `.avsc` file, relative to the pipeline file's folder. Read at start-up.
    File(String),
    /// A registry subject, at a version (default: the latest, fetched once on first use).
    Subject(SubjectRef),
}

/// A registry subject and version.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectRef {
    /// Subject name, e.g. `shop.orders-com.shop.OrderPlaced`.
    pub name: String,
    /// Version number; absent means the latest.
    #[serde(default)]
    pub version: Option<u32>,
}

/// The steps from one version to the next.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpcastVersion {
    /// The source version; the steps produce version `from + 1` (or what `rename_type`
    /// says).
    pub from: u32,
    /// The steps, applied in order.
    pub steps: Vec<UpcastStep>,
}

/// One step. Field names may be dotted paths into nested records (`address.street`).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum UpcastStep {
    /// Renames a field in place (same parent record).
    Rename(FromTo),
    /// Moves a field into or out of a nested record; missing records on the way to `to`
    /// are created.
    Move(FromTo),
    /// Sets a field that is absent or null. Adds it when the version lacks it.
    Default(DefaultStep),
    /// Removes a field.
    Drop(String),
    /// Converts a field to another type (e.g. euros as a double into cents as a long).
    Convert(ConvertStep),
    /// Sets a field to the value of a CEL expression over the event's top-level fields.
    Compute(ComputeStep),
    /// Renames the event type itself; the event continues as `to` at `version`. Must be
    /// the last step of its entry.
    RenameType(RenameType),
}

/// A field's old and new path.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FromTo {
    /// Current path.
    pub from: String,
    /// New path.
    pub to: String,
}

/// A constant for a missing field.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultStep {
    /// Field path.
    pub field: String,
    /// The value (a YAML scalar; `null` is allowed).
    pub value: serde_json::Value,
    /// Its type when the field is added; inferred from the value when omitted (string,
    /// long, double, boolean).
    #[serde(default, rename = "type")]
    pub ty: Option<ValueType>,
}

/// A type conversion.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertStep {
    /// Field path.
    pub field: String,
    /// Target type.
    pub to: ValueType,
    /// Factor applied to numbers before the conversion (`100` for euros → cents).
    #[serde(default)]
    pub multiply: Option<f64>,
    /// How a fraction becomes an integer.
    #[serde(default)]
    pub round: Rounding,
}

/// A computed field.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputeStep {
    /// Field path to set (added when absent).
    pub field: String,
    /// A CEL expression. Top-level fields of the event are its variables; `math.*` and
    /// the string extensions are available. Compiled once at start-up.
    pub expr: String,
    /// Type of the result.
    #[serde(rename = "type")]
    pub ty: ValueType,
}

/// A renamed event type.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameType {
    /// New event type.
    pub to: String,
    /// The version the event has as the new type.
    pub version: u32,
}

/// Types a step can produce.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Avro boolean.
    Boolean,
    /// Avro int.
    Int,
    /// Avro long.
    Long,
    /// Avro float.
    Float,
    /// Avro double.
    Double,
    /// Avro string.
    String,
    /// Avro long with logical type timestamp-millis.
    TimestampMillis,
}

/// Rounding of a fraction into an integer.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// To the nearest integer, halves away from zero.
    #[default]
    Nearest,
    /// Towards negative infinity.
    Floor,
    /// Towards positive infinity.
    Ceil,
    /// Towards zero.
    Truncate,
    /// Refuse a value with a fraction (a bad record).
    Exact,
}
