//! The settings under `sink.postgres` in a pipeline file.

use schemars::JsonSchema;
use serde::Deserialize;
use sinkd_core::config::redact_url;

/// A PostgreSQL table as the read model.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// libpq-style URL: `postgres://user:password@host:port/db`; the password is never logged.
    pub url: String,
    /// Table name (created if absent).
    pub table: String,
    /// Schema of the table.
    #[serde(default = "default_pg_schema")]
    pub schema: String,
}

fn default_pg_schema() -> String {
    "public".to_owned()
}

impl std::fmt::Debug for PostgresSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("schema", &self.schema)
            .finish()
    }
}
