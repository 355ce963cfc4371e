//! The settings under `sink.mongodb` in a pipeline file.

use schemars::JsonSchema;
use serde::Deserialize;
use sinkd_core::config::redact_url;

/// A MongoDB collection as the read model.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MongoSinkConfig {
    /// Connection string, e.g. `mongodb://host:27017/?replicaSet=rs0`; the password is
    /// never logged. On a replica set each batch and its checkpoint commit in one
    /// transaction; on a standalone server row guards alone keep the effect exactly once.
    pub url: String,
    /// Database name.
    pub database: String,
    /// Collection name (created on first write).
    pub collection: String,
}

impl std::fmt::Debug for MongoSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("collection", &self.collection)
            .finish()
    }
}
