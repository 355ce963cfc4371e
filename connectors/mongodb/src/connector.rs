//! [`MongoConnector`]: `sink: { mongodb: … }` for the engine — validation of the settings,
//! and the sink, admin and checkpoint reader built from them.

use std::sync::Arc;

use sinkd_core::config::PipelineFile;
use sinkd_core::connector::{Connector, Problem, SinkContext};
use sinkd_core::sink::{CheckpointReader, Sink, TargetAdmin};

use crate::admin::MongoAdmin;
use crate::checkpoint::MongoCheckpointReader;
use crate::config::MongoSinkConfig;
use crate::sink::MongoSink;

/// The MongoDB connector.
pub struct MongoConnector;

/// Whether the server accepts `name` for a collection sinkd may write.
fn valid_collection(name: &str) -> bool {
    !name.is_empty() && !name.starts_with("system.") && !name.contains('$')
}

impl Connector for MongoConnector {
    type Config = MongoSinkConfig;

    const KIND: &'static str = "mongodb";
    const MORE_TARGETS: bool = true;

    fn main_target(&self, config: &MongoSinkConfig) -> String {
        config.collection.clone()
    }

    fn label(&self, config: &MongoSinkConfig, name: &str) -> String {
        format!("{}.{name}", config.database)
    }

    fn target_name_problem(&self, _config: &MongoSinkConfig, name: &str) -> Option<String> {
        (!valid_collection(name)).then(|| format!("`{name}` is not a valid collection name"))
    }

    fn validate(&self, config: &MongoSinkConfig, _pipeline: &PipelineFile) -> Vec<Problem> {
        let mut problems = Vec::new();
        if config.database.is_empty() || config.database.contains(['/', '\\', '.', ' ', '"', '$']) {
            problems.push((
                "sink.mongodb.database".to_owned(),
                format!("`{}` is not a valid database name", config.database),
            ));
        }
        if !valid_collection(&config.collection) {
            problems.push((
                "sink.mongodb.collection".to_owned(),
                format!("`{}` is not a valid collection name", config.collection),
            ));
        }
        problems
    }

    fn sink(&self, config: &MongoSinkConfig, ctx: &SinkContext<'_>) -> Box<dyn Sink> {
        Box::new(MongoSink::new(
            config,
            ctx.pipeline,
            ctx.targets,
            ctx.target,
        ))
    }

    fn admin(&self, config: &MongoSinkConfig, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin> {
        let names: Vec<String> = ctx.targets.iter().map(|(n, _)| n.clone()).collect();
        Arc::new(MongoAdmin::new(config, ctx.pipeline, &names))
    }

    fn checkpoints(
        &self,
        config: &MongoSinkConfig,
        ctx: &SinkContext<'_>,
    ) -> Arc<dyn CheckpointReader> {
        let collection = ctx.target.name(&config.collection);
        MongoCheckpointReader::new(&config.url, &config.database, ctx.pipeline, &collection)
    }
}
