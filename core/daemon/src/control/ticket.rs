//! What a restart needs to resume a swap rebuild instead of abandoning it.
//!
//! The shadow and its checkpoints survive a restart in the sink, and the shadow is always
//! consistent with its own checkpoints, so a new task can go on filling it from there. That
//! is only right if the pipeline would still write the shadow the same way: the ticket,
//! kept beside the shadow ([`sinkd_core::sink::TargetAdmin::set_shadow_ticket`]), holds a
//! fingerprint of the pipeline as loaded (after `${VAR}` interpolation, with its reader
//! schema files) and of sinkd's version. A restart with the same fingerprint resumes; any
//! difference, or no ticket, abandons the rebuild and drops the shadow as before.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sinkd_core::config::PipelineFile;
use sinkd_core::config::upcast::ReaderSchemaConfig;
use sinkd_core::event::TopicPartition;

/// The ticket of a swap rebuild.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ticket {
    /// [`fingerprint`] of the pipeline the rebuild began with.
    pub fingerprint: String,
    /// Where it started reading, as the status shows it (`earliest` or a time).
    pub start: String,
    /// When it was asked for.
    pub started_at: DateTime<Utc>,
    /// The start offsets, for the progress count.
    pub from: Vec<(String, i32, i64)>,
}

impl Ticket {
    /// The start offsets, as the rebuild uses them.
    pub fn start_offsets(&self) -> Vec<(TopicPartition, i64)> {
        self.from
            .iter()
            .map(|(topic, partition, next)| ((topic.as_str().into(), *partition), *next))
            .collect()
    }
}

/// Identifies what decides how a pipeline writes its target: the loaded file (its `Debug`
/// form holds every setting; all its maps are ordered), the reader schema files it names,
/// and this binary's version. Stable across restarts of the same binary and settings.
pub fn fingerprint(file: &PipelineFile, path: &Path) -> String {
    let mut h = DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{file:?}").hash(&mut h);
    let dir = path.parent().unwrap_or(Path::new("."));
    for upcaster in file.upcasters.values() {
        if let Some(ReaderSchemaConfig::File(name)) = &upcaster.reader_schema {
            std::fs::read(dir.join(name)).ok().hash(&mut h);
        }
    }
    format!("{}-{:016x}", env!("CARGO_PKG_VERSION"), h.finish())
}
