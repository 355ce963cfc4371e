//! [`MemConnector`]: the in-memory store as a sink connector, so tests can go through
//! pipeline files (`sink: { memory: { table: t } }`) like users do. It is also the
//! smallest complete example of a connector.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;

use super::MemStore;
use crate::config::PipelineFile;
use crate::connector::{Connector, Connectors, Problem, SinkContext};
use crate::sink::{CheckpointReader, Sink, Target, TargetAdmin};

/// The settings under `sink.memory`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemConfig {
    /// Names the store; pipelines naming the same table share it.
    pub table: String,
}

/// One [`MemStore`] per table name, made on first use.
#[derive(Default)]
pub struct MemConnector {
    stores: Mutex<HashMap<String, MemStore>>,
}

impl MemConnector {
    /// The store of `table`.
    pub fn store(&self, table: &str) -> MemStore {
        let mut stores = self.stores.lock().expect("stores lock");
        stores.entry(table.to_owned()).or_default().clone()
    }

    fn store_for(&self, config: &MemConfig, ctx: &SinkContext<'_>) -> MemStore {
        match ctx.target {
            Target::Live => self.store(&config.table),
            // A store of its own; the store's admin refuses to swap it in.
            Target::Shadow => self.store(&format!("{}__shadow", config.table)),
        }
    }
}

impl Connector for MemConnector {
    type Config = MemConfig;

    const KIND: &'static str = "memory";

    fn main_target(&self, config: &MemConfig) -> String {
        config.table.clone()
    }

    fn label(&self, _config: &MemConfig, name: &str) -> String {
        format!("memory:{name}")
    }

    fn validate(&self, config: &MemConfig, _pipeline: &PipelineFile) -> Vec<Problem> {
        match config.table.is_empty() {
            true => vec![("sink.memory.table".into(), "name the table".into())],
            false => Vec::new(),
        }
    }

    fn sink(&self, config: &MemConfig, ctx: &SinkContext<'_>) -> Box<dyn Sink> {
        Box::new(self.store_for(config, ctx).sink())
    }

    fn admin(&self, config: &MemConfig, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin> {
        Arc::new(self.store_for(config, ctx))
    }

    fn checkpoints(&self, config: &MemConfig, ctx: &SinkContext<'_>) -> Arc<dyn CheckpointReader> {
        Arc::new(self.store_for(config, ctx))
    }
}

/// The connectors of engine tests: the in-memory store alone.
pub fn connectors() -> Connectors {
    let mut connectors = Connectors::default();
    connectors.add(MemConnector::default());
    connectors
}

/// A pipeline file's text parsed with [`connectors`] and no environment; panics with the
/// located error (for tests).
pub fn pipeline(text: &str) -> PipelineFile {
    crate::config::load::parse_str(
        std::path::Path::new("test.yaml"),
        text,
        &HashMap::new(),
        &connectors(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
