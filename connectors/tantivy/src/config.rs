//! The settings under `sink.tantivy` in a pipeline file: the index's directory and
//! schema.

use schemars::JsonSchema;
use serde::Deserialize;

/// An embedded Tantivy index as the read model. The schema is declared here; every
/// commit carries the checkpoint in its payload.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TantivySinkConfig {
    /// The index directory. Created (with its parent) when it does not exist; an existing
    /// directory must hold a Tantivy index or be empty.
    pub path: String,
    /// The key field: a `string` field, one document per key.
    pub key: String,
    /// The fields of the index. Event fields of other names are not indexed.
    pub fields: Vec<IndexField>,
    /// Indexing memory budget in MiB.
    #[serde(default = "default_heap_mb")]
    pub heap_mb: usize,
}

fn default_heap_mb() -> usize {
    64
}

/// One field of a Tantivy index.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexField {
    /// Field name (and the event field or column it takes its value from).
    pub name: String,
    /// Field type.
    #[serde(rename = "type")]
    pub kind: IndexFieldKind,
    /// Kept in the index and returned by searches. Merges and increments need it.
    #[serde(default = "yes")]
    pub stored: bool,
    /// Searchable.
    #[serde(default = "yes")]
    pub indexed: bool,
    /// Column-oriented for sorting and range queries on numbers.
    #[serde(default)]
    pub fast: bool,
    /// For `text`: `default`, `raw` or `en_stem`.
    #[serde(default)]
    pub tokenizer: Option<String>,
}

fn yes() -> bool {
    true
}

/// Tantivy field types.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IndexFieldKind {
    /// Tokenized full text.
    Text,
    /// A whole string as one term (ids, enums).
    String,
    /// Signed integer.
    I64,
    /// Unsigned integer.
    U64,
    /// Floating point.
    F64,
    /// Boolean.
    Bool,
    /// Date and time.
    Date,
    /// A JSON object (records, maps).
    Json,
}
