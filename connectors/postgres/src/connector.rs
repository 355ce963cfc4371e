//! [`PostgresConnector`]: `sink: { postgres: … }` for the engine — validation of the
//! settings, and the sink, admin and checkpoint reader built from them.

use std::sync::Arc;

use sinkd_core::config::PipelineFile;
use sinkd_core::connector::{Connector, Problem, SinkContext};
use sinkd_core::sink::{CheckpointReader, Sink, TargetAdmin};

use crate::admin::PgAdmin;
use crate::checkpoint::PgCheckpointReader;
use crate::config::PostgresSinkConfig;
use crate::sink::PostgresSink;

/// PostgreSQL identifiers are cut at 63 bytes; a longer name would silently name another
/// table.
const MAX_IDENTIFIER: usize = 63;

/// The PostgreSQL connector.
pub struct PostgresConnector;

impl Connector for PostgresConnector {
    type Config = PostgresSinkConfig;

    const KIND: &'static str = "postgres";
    const MORE_TARGETS: bool = true;

    fn main_target(&self, config: &PostgresSinkConfig) -> String {
        config.table.clone()
    }

    fn label(&self, config: &PostgresSinkConfig, name: &str) -> String {
        format!("{}.{name}", config.schema)
    }

    fn target_name_problem(&self, _config: &PostgresSinkConfig, name: &str) -> Option<String> {
        (name.is_empty() || name.len() > MAX_IDENTIFIER)
            .then(|| format!("`{name}` must be 1 to {MAX_IDENTIFIER} characters"))
    }

    fn validate(&self, config: &PostgresSinkConfig, _pipeline: &PipelineFile) -> Vec<Problem> {
        [
            ("sink.postgres.table", &config.table),
            ("sink.postgres.schema", &config.schema),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_empty() || value.len() > MAX_IDENTIFIER)
        .map(|(field, value)| {
            (
                field.to_owned(),
                format!("`{value}` must be 1 to {MAX_IDENTIFIER} characters"),
            )
        })
        .collect()
    }

    fn sink(&self, config: &PostgresSinkConfig, ctx: &SinkContext<'_>) -> Box<dyn Sink> {
        Box::new(PostgresSink::new(
            config,
            ctx.pipeline,
            ctx.targets,
            ctx.target,
        ))
    }

    fn admin(&self, config: &PostgresSinkConfig, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin> {
        let names: Vec<String> = ctx.targets.iter().map(|(n, _)| n.clone()).collect();
        Arc::new(PgAdmin::new(config, ctx.pipeline, &names))
    }

    fn checkpoints(
        &self,
        config: &PostgresSinkConfig,
        ctx: &SinkContext<'_>,
    ) -> Arc<dyn CheckpointReader> {
        let table = ctx.target.name(&config.table);
        PgCheckpointReader::new(
            &config.url,
            ctx.pipeline,
            &format!("{}.{table}", config.schema),
        )
    }
}
