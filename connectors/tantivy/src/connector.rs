//! [`TantivyConnector`]: `sink: { tantivy: … }` for the engine — validation of the index's
//! schema, and the sink, admin and checkpoint reader built from it. It also keeps each
//! pipeline's [`SearchHandle`], the live reader that searches query and a swap reopens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sinkd_core::config::{PipelineFile, SourceMode};
use sinkd_core::connector::{Connector, Problem, SinkContext};
use sinkd_core::sink::{CheckpointReader, Sink, TargetAdmin};

use crate::admin::TantivyAdmin;
use crate::checkpoint::TantivyCheckpointReader;
use crate::config::{IndexFieldKind, TantivySinkConfig};
use crate::search::SearchHandle;
use crate::sink::TantivySink;

/// The Tantivy connector.
#[derive(Default)]
pub struct TantivyConnector {
    searches: Mutex<HashMap<String, SearchHandle>>,
}

impl TantivyConnector {
    /// The live reader of `pipeline`'s index, shared by its sink, its admin and searches.
    pub fn search(&self, pipeline: &str) -> SearchHandle {
        let mut searches = self.searches.lock().expect("search handles lock");
        searches.entry(pipeline.to_owned()).or_default().clone()
    }
}

impl Connector for TantivyConnector {
    type Config = TantivySinkConfig;

    const KIND: &'static str = "tantivy";
    // MORE_TARGETS stays false: an index is one target.
    const PARALLEL_WRITERS: bool = false;

    fn main_target(&self, config: &TantivySinkConfig) -> String {
        config.path.clone()
    }

    fn label(&self, _config: &TantivySinkConfig, name: &str) -> String {
        name.to_owned()
    }

    fn validate(&self, config: &TantivySinkConfig, pipeline: &PipelineFile) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| problems.push((field.to_owned(), message));
        match config.fields.iter().find(|f| f.name == config.key) {
            Some(f) if f.kind == IndexFieldKind::String && f.indexed && f.stored => {}
            Some(_) => problem(
                "sink.tantivy.key",
                format!(
                    "key field `{}` must be a stored, indexed `string` field",
                    config.key
                ),
            ),
            None => problem(
                "sink.tantivy.key",
                format!(
                    "key field `{}` is not declared in sink.tantivy.fields",
                    config.key
                ),
            ),
        }
        for f in &config.fields {
            if f.name.starts_with("_sinkd") {
                problem(
                    "sink.tantivy.fields",
                    format!("`{}`: names starting with `_sinkd` are reserved", f.name),
                );
            }
            match (&f.tokenizer, f.kind) {
                (None, _) => {}
                (Some(tk), IndexFieldKind::Text)
                    if ["default", "raw", "en_stem"].contains(&tk.as_str()) => {}
                (Some(tk), IndexFieldKind::Text) => problem(
                    "sink.tantivy.fields",
                    format!(
                        "`{}`: tokenizer `{tk}` is not one of default, raw, en_stem",
                        f.name
                    ),
                ),
                (Some(_), _) => problem(
                    "sink.tantivy.fields",
                    format!("`{}`: only `text` fields take a tokenizer", f.name),
                ),
            }
        }
        let key = &pipeline.key.columns;
        if key.len() != 1 || key[0] != config.key {
            problem(
                "key.columns",
                format!(
                    "a Tantivy index has one key: set key.columns to [{}]",
                    config.key
                ),
            );
        }
        problems
    }

    /// A local index per sidecar: every instance reads every partition.
    fn default_mode(&self) -> SourceMode {
        SourceMode::Replica
    }

    fn sink(&self, config: &TantivySinkConfig, ctx: &SinkContext<'_>) -> Box<dyn Sink> {
        Box::new(TantivySink::new(
            config,
            ctx.pipeline,
            ctx.target,
            self.search(ctx.pipeline),
        ))
    }

    fn admin(&self, config: &TantivySinkConfig, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin> {
        Arc::new(TantivyAdmin::new(
            config,
            ctx.pipeline,
            self.search(ctx.pipeline),
        ))
    }

    fn checkpoints(
        &self,
        config: &TantivySinkConfig,
        ctx: &SinkContext<'_>,
    ) -> Arc<dyn CheckpointReader> {
        TantivyCheckpointReader::new(&config.path, ctx.target, ctx.pipeline)
    }
}
