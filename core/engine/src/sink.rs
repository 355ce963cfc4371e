//! The sink side of the checkpoint protocol (modelled on Kafka Connect's `SinkTask`).
//!
//! A sink applies a compacted batch and advances the per-partition checkpoint in ONE
//! transaction (or commit). The checkpoint advance is a compare-and-set on the previous
//! value, so a writer with a stale view (a zombie after a rebalance) fails and applies
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::batch::Entry;
use crate::error::SinkError;
use crate::event::TopicPartition;

/// The move of one partition's checkpoint that a batch makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointAdvance {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// The next offset this writer believes is stored (`None`: no checkpoint yet). The
    /// write fails with [`SinkError::Fenced`] if the stored value differs.
    pub expected: Option<i64>,
    /// The next offset to store: one past the last record of the batch.
    pub next: i64,
}

/// Reads stored checkpoints. Shared with the source, which calls it on every partition
/// assignment to seek to the sink's offsets.
#[async_trait]
pub trait CheckpointReader: Send + Sync {
    /// The stored next offset of each partition that has one.
    async fn load(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, SinkError>;
}

/// A read model that owns its offsets.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Connects and prepares the checkpoint storage. Retriable errors are retried by the
    /// caller.
    async fn open(&mut self) -> Result<(), SinkError>;

    /// A reader of this sink's checkpoints, for the source.
    fn checkpoint_reader(&self) -> Arc<dyn CheckpointReader>;

    /// Applies the entries and advances the checkpoints atomically. On any error nothing
    /// was applied.
    async fn write(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError>;
}

/// Which copy of a read model a sink writes: the one readers use, or the shadow a rebuild
/// fills beside it (its own table, collection or index directory, with its own checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The target readers use.
    Live,
    /// The rebuild's copy, swapped in when it has caught up.
    Shadow,
}

impl Target {
    /// The name of this copy of a table or collection called `live`: the shadow sits
    /// beside it under the same name with a suffix no user name is expected to carry.
    pub fn name(self, live: &str) -> String {
        match self {
            Target::Live => live.to_owned(),
            Target::Shadow => format!("{live}__sinkd_shadow"),
        }
    }
}

/// What [`TargetAdmin::reset`] leaves in a target.
#[derive(Clone, Copy, Debug)]
pub struct Reset<'a> {
    /// Empties the target's data too, in the same transaction where the sink has one (a
    /// rebuild from scratch); without it only the checkpoints move (an offset reset).
    pub truncate: bool,
    /// The checkpoints the target keeps: exactly these, the pipeline's others removed.
    pub offsets: &'a [(TopicPartition, i64)],
}

impl<'a> Reset<'a> {
    /// Moves the checkpoints to `offsets`, data untouched.
    pub fn offsets(offsets: &'a [(TopicPartition, i64)]) -> Self {
        Reset {
            truncate: false,
            offsets,
        }
    }

    /// Empties the target and starts its checkpoints at `offsets`.
    pub fn emptied(offsets: &'a [(TopicPartition, i64)]) -> Self {
        Reset {
            truncate: true,
            offsets,
        }
    }
}

/// Operations on a read model as a whole, for the control plane: rebuilds and offset
/// resets. Each runs while no pipeline writes the target concerned.
#[async_trait]
pub trait TargetAdmin: Send + Sync {
    /// What the target is called in the sink (`public.orders`, `shop.orders`, a folder).
    fn describe(&self, target: Target) -> String;

    /// Completes or rolls back a swap that a crash interrupted, so the live target and its
    /// checkpoints agree. Called before the live pipeline starts. Nothing to do where every
    /// change is one transaction (the default).
    async fn recover(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Whether a shadow (data or checkpoints) is present: a rebuild was interrupted.
    async fn shadow_exists(&self) -> Result<bool, SinkError>;

    /// Removes the shadow, its checkpoints and its ticket; nothing to remove is fine.
    async fn drop_shadow(&self) -> Result<(), SinkError>;

    /// Records `ticket` beside the shadow: what a restart needs to decide whether it may
    /// resume the rebuild (the control plane writes and reads it; the sink only keeps it).
    /// Removed with the shadow, by [`TargetAdmin::drop_shadow`] or the swap.
    async fn set_shadow_ticket(&self, ticket: &str) -> Result<(), SinkError>;

    /// The ticket recorded beside the shadow, if any, and only while the shadow's data is
    /// there to be resumed (a shadow dropped by hand would skip what it lost).
    async fn shadow_ticket(&self) -> Result<Option<String>, SinkError>;

    /// Readies a filled shadow for [`TargetAdmin::swap_in_shadow`] while the live target
    /// still serves and consumes, so the swap itself stays short: PostgreSQL builds the
    /// live table's secondary indexes on the shadow here rather than inside the swap's
    /// transaction, where readers would wait for them. The shadow's writer may still be
    /// appending. Nothing to do by default.
    async fn prepare_swap(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Replaces the live target and its checkpoints with the shadow's, atomically for
    /// readers, and drops the old live data.
    async fn swap_in_shadow(&self) -> Result<(), SinkError>;

    /// Sets `target`'s checkpoints and, when asked, empties it: see [`Reset`].
    async fn reset(&self, target: Target, to: Reset<'_>) -> Result<(), SinkError>;
}
