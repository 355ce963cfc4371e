//! Sink connectors as the engine knows them. Each connector crate implements
//! [`Connector`] for its own settings type: how `sink.<kind>` parses, what is wrong with it
//! (no I/O), and how to build its sink, admin and checkpoint reader. The daemon registers
//! every connector in one [`Connectors`] map; a pipeline file's `sink:` section is parsed
//! by the connector it names into a [`SinkSpec`], which the rest of sinkd uses without
//! knowing which sink it is.
//!
//! - [`spec`]: [`SinkSpec`], the parsed settings and their connector behind one type.
//! - [`registry`]: [`Connectors`] and the parsing of the `sink:` section.

pub mod registry;
pub mod spec;

use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::config::{PipelineFile, SourceMode};
use crate::sink::{CheckpointReader, Sink, Target, TargetAdmin};

pub use registry::Connectors;
pub use spec::SinkSpec;

/// A problem found in a pipeline file: the dotted path of the field and what is wrong.
pub type Problem = (String, String);

/// What a sink, its admin or its checkpoint reader is built for.
pub struct SinkContext<'a> {
    /// The pipeline's name: the owner of the checkpoints.
    pub pipeline: &'a str,
    /// Every table or collection written, as (name, key columns), in the order of
    /// operations' targets (see `PipelineFile::sink_targets`); live names.
    pub targets: &'a [(String, Vec<String>)],
    /// The live target, or a rebuild's shadow.
    pub target: Target,
}

/// One kind of sink. Implemented once per connector crate for its settings type, and
/// registered in [`Connectors`]; the blanket erasure in [`registry`] does the rest.
pub trait Connector: Send + Sync + 'static {
    /// The settings under `sink.<kind>`. Its `Debug` form must hide secrets: it is logged
    /// and fingerprints a rebuild.
    /// Its `JsonSchema` (doc comments on every field) is the sink's part of the pipeline
    /// file reference.
    type Config: DeserializeOwned + JsonSchema + fmt::Debug + Send + Sync + 'static;

    /// The key under `sink:` that names this connector (`postgres`).
    const KIND: &'static str;

    /// Whether the sink writes more targets than its own in one transaction: child rows
    /// (`targets:`) and routing need it.
    const MORE_TARGETS: bool = false;

    /// Whether several sinks of one pipeline may write the same target at once
    /// (`sink.parallelism`), each in its own transaction. A sink with a single writer per
    /// target (an index directory's lock) says no.
    const PARALLEL_WRITERS: bool = true;

    /// The name of the sink's own target as configured: a table, a collection, an index
    /// directory (a template with `{placeholders}` when routed).
    fn main_target(&self, config: &Self::Config) -> String;

    /// What users call target `name` of this sink: `schema.table`, `database.collection`,
    /// or the index directory.
    fn label(&self, config: &Self::Config, name: &str) -> String;

    /// Why `name` cannot be one more target of this sink (child rows, a routed name), if
    /// it cannot. Only asked when [`Connector::MORE_TARGETS`] holds.
    fn target_name_problem(&self, config: &Self::Config, name: &str) -> Option<String> {
        let _ = (config, name);
        None
    }

    /// Problems of the settings and of what the rest of the pipeline asks of this sink,
    /// found without I/O; fields as dotted paths from the file's root.
    fn validate(&self, config: &Self::Config, pipeline: &PipelineFile) -> Vec<Problem>;

    /// How instances of a pipeline share partitions unless the file says otherwise.
    fn default_mode(&self) -> SourceMode {
        SourceMode::Shared
    }

    /// The sink writing `ctx.target`. Connects on first use, not here.
    fn sink(&self, config: &Self::Config, ctx: &SinkContext<'_>) -> Box<dyn Sink>;

    /// Whole-target operations (recover, reset, rebuild's shadow and swap).
    fn admin(&self, config: &Self::Config, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin>;

    /// The checkpoints stored with `ctx.target`.
    fn checkpoints(
        &self,
        config: &Self::Config,
        ctx: &SinkContext<'_>,
    ) -> Arc<dyn CheckpointReader>;
}
