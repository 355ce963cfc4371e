//! [`SinkSpec`]: a pipeline's parsed sink settings together with their connector, behind
//! one type so the rest of sinkd never matches on the kind of sink.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::{Connector, Problem, SinkContext};
use crate::config::{PipelineFile, SourceMode};
use crate::sink::{CheckpointReader, Sink, TargetAdmin};

/// The `sink:` section of a pipeline file, parsed by its connector. Cheap to clone.
#[derive(Clone)]
pub struct SinkSpec {
    with: Arc<dyn Configured>,
    parallelism: usize,
}

/// The most writers a pipeline may have: each holds a database connection.
pub const MAX_PARALLELISM: usize = 32;

/// What `sink.parallelism` does, for the reference and the JSON Schema.
pub fn parallelism_doc() -> String {
    format!(
        "Writers, each with its own connection and transaction: partition p is written by \
         writer p mod N with the checkpoints of its partitions. 1 (the default) to \
         {MAX_PARALLELISM}; the tantivy sink takes only 1."
    )
}

impl SinkSpec {
    /// Settings `config` of `connector`, with one writer.
    pub fn new<C: Connector>(connector: Arc<C>, config: C::Config) -> SinkSpec {
        SinkSpec {
            with: Arc::new(With { connector, config }),
            parallelism: 1,
        }
    }

    /// The same settings written by `n` writers (`sink.parallelism`).
    pub fn with_parallelism(mut self, n: usize) -> SinkSpec {
        self.parallelism = n;
        self
    }

    /// How many writers, each with its own connection and transaction, write the
    /// pipeline's partitions.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    /// The sink's kind as the pipeline file names it (`postgres`).
    pub fn kind(&self) -> &'static str {
        self.with.kind()
    }

    /// The sink's own target's name as configured (a template when routed).
    pub fn main_target(&self) -> String {
        self.with.main_target()
    }

    /// The read model's name as users know it: `schema.table`, `database.collection`, or
    /// the index directory (the sink's own target).
    pub fn target(&self) -> String {
        self.with.label(&self.with.main_target())
    }

    /// What users call target `name` of this sink.
    pub fn label(&self, name: &str) -> String {
        self.with.label(name)
    }

    /// Whether child rows and routing can write more targets than the sink's own.
    pub fn more_targets(&self) -> bool {
        self.with.more_targets()
    }

    /// Why `name` cannot be one more target of this sink, if it cannot.
    pub fn target_name_problem(&self, name: &str) -> Option<String> {
        self.with.target_name_problem(name)
    }

    /// Problems of the settings found without I/O.
    pub fn validate(&self, pipeline: &PipelineFile) -> Vec<Problem> {
        let mut problems = self.with.validate(pipeline);
        let field = || "sink.parallelism".to_owned();
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            problems.push((
                field(),
                format!(
                    "{} writers: expected 1 to {MAX_PARALLELISM}",
                    self.parallelism
                ),
            ));
        } else if self.parallelism > 1 && !self.with.parallel_writers() {
            problems.push((
                field(),
                format!(
                    "the {} sink has a single writer; remove `parallelism` or set it to 1",
                    self.kind()
                ),
            ));
        }
        problems
    }

    /// How instances share partitions unless the file says otherwise.
    pub fn default_mode(&self) -> SourceMode {
        self.with.default_mode()
    }

    /// A sink writing `ctx.target`.
    pub fn sink(&self, ctx: &SinkContext<'_>) -> Box<dyn Sink> {
        self.with.sink(ctx)
    }

    /// Whole-target operations.
    pub fn admin(&self, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin> {
        self.with.admin(ctx)
    }

    /// The checkpoints stored with `ctx.target`.
    pub fn checkpoints(&self, ctx: &SinkContext<'_>) -> Arc<dyn CheckpointReader> {
        self.with.checkpoints(ctx)
    }

    /// The connector, when it is a `C` (for what only one kind of sink offers, such as
    /// searching an index).
    pub fn connector<C: Connector>(&self) -> Option<&C> {
        self.with.connector().downcast_ref()
    }
}

/// The form of the old `enum SinkConfig` (`Postgres(PostgresSinkConfig { … })`): a
/// rebuild's ticket fingerprints the pipeline's `Debug` form, and an upgrade must not
/// abandon a rebuild in flight.
impl fmt::Debug for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind();
        let mut variant = kind[..1].to_ascii_uppercase();
        variant.push_str(&kind[1..]);
        f.debug_tuple(&variant)
            .field(self.with.config_debug())
            .finish()
    }
}

/// [`Connector`] with its settings, object-safe.
trait Configured: Send + Sync {
    fn kind(&self) -> &'static str;
    fn main_target(&self) -> String;
    fn label(&self, name: &str) -> String;
    fn more_targets(&self) -> bool;
    fn parallel_writers(&self) -> bool;
    fn target_name_problem(&self, name: &str) -> Option<String>;
    fn validate(&self, pipeline: &PipelineFile) -> Vec<Problem>;
    fn default_mode(&self) -> SourceMode;
    fn sink(&self, ctx: &SinkContext<'_>) -> Box<dyn Sink>;
    fn admin(&self, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin>;
    fn checkpoints(&self, ctx: &SinkContext<'_>) -> Arc<dyn CheckpointReader>;
    fn connector(&self) -> &dyn Any;
    fn config_debug(&self) -> &dyn fmt::Debug;
}

struct With<C: Connector> {
    connector: Arc<C>,
    config: C::Config,
}

impl<C: Connector> Configured for With<C> {
    fn kind(&self) -> &'static str {
        C::KIND
    }
    fn main_target(&self) -> String {
        self.connector.main_target(&self.config)
    }
    fn label(&self, name: &str) -> String {
        self.connector.label(&self.config, name)
    }
    fn more_targets(&self) -> bool {
        C::MORE_TARGETS
    }
    fn parallel_writers(&self) -> bool {
        C::PARALLEL_WRITERS
    }
    fn target_name_problem(&self, name: &str) -> Option<String> {
        self.connector.target_name_problem(&self.config, name)
    }
    fn validate(&self, pipeline: &PipelineFile) -> Vec<Problem> {
        self.connector.validate(&self.config, pipeline)
    }
    fn default_mode(&self) -> SourceMode {
        self.connector.default_mode()
    }
    fn sink(&self, ctx: &SinkContext<'_>) -> Box<dyn Sink> {
        self.connector.sink(&self.config, ctx)
    }
    fn admin(&self, ctx: &SinkContext<'_>) -> Arc<dyn TargetAdmin> {
        self.connector.admin(&self.config, ctx)
    }
    fn checkpoints(&self, ctx: &SinkContext<'_>) -> Arc<dyn CheckpointReader> {
        self.connector.checkpoints(&self.config, ctx)
    }
    fn connector(&self) -> &dyn Any {
        &*self.connector
    }
    fn config_debug(&self) -> &dyn fmt::Debug {
        &self.config
    }
}
