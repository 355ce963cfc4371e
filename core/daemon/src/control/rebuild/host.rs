//! [`Host`]: what a rebuild run needs of the pipeline it rebuilds. The daemon's
//! [`Controller`] is one (Kafka for offsets, the sink's admin and checkpoints, the live
//! task's lifecycle); the unit tests drive runs with the engine's in-memory log and store.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sinkd_core::event::TopicPartition;
use sinkd_core::runtime::{Pipeline, PipelineStats};
use sinkd_core::sink::{CheckpointReader, Target, TargetAdmin};
use sinkd_kafka::Position;

use super::super::task::{Lifecycle, Task};
use super::super::{Controller, State};
use super::Start;
use crate::wiring;

/// The pipeline a rebuild runs on.
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// The pipeline's name, for logs.
    fn name(&self) -> &str;

    /// The shadow counts as nearly caught up within this many records of the end of the
    /// log: one batch.
    fn batch_events(&self) -> i64;

    /// What a restart compares to resume the rebuild ([`super::super::ticket`]).
    fn fingerprint(&self) -> &str;

    /// Whole-target operations on the live target and the shadow.
    fn admin(&self) -> &Arc<dyn TargetAdmin>;

    /// The live target's checkpoints.
    fn live_checkpoints(&self) -> Arc<dyn CheckpointReader>;

    /// The shadow's checkpoints.
    fn shadow_checkpoints(&self) -> Arc<dyn CheckpointReader>;

    /// The live task's counters.
    fn live_stats(&self) -> &Arc<PipelineStats>;

    /// The live task and the pipeline's state.
    fn life(&self) -> &Lifecycle;

    /// Where every partition starts for `start`.
    async fn start_offsets(&self, start: Start) -> Result<Vec<(TopicPartition, i64)>, String>;

    /// The end of the log per partition, or further where a task (the live one, and
    /// `also`) has seen further.
    async fn ends(
        &self,
        also: Option<&PipelineStats>,
    ) -> Result<HashMap<TopicPartition, i64>, String>;

    /// A pipeline writing the shadow from the shadow's checkpoints, every partition.
    fn shadow_pipeline(&self, stats: Arc<PipelineStats>) -> Result<Pipeline, String>;

    /// Starts the live task in `slot` (the caller holds [`Lifecycle::task`]).
    fn start_live(self: &Arc<Self>, slot: &mut Option<Task>);

    /// The pipeline's state.
    fn state(&self) -> State {
        self.life().state()
    }
}

#[async_trait]
impl Host for Controller {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_events(&self) -> i64 {
        self.file.batch.max_events as i64
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn admin(&self) -> &Arc<dyn TargetAdmin> {
        &self.admin
    }

    fn live_checkpoints(&self) -> Arc<dyn CheckpointReader> {
        self.checkpoints.clone()
    }

    fn shadow_checkpoints(&self) -> Arc<dyn CheckpointReader> {
        wiring::shadow_checkpoints(&self.file)
    }

    fn live_stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    fn life(&self) -> &Lifecycle {
        &self.life
    }

    async fn start_offsets(&self, start: Start) -> Result<Vec<(TopicPartition, i64)>, String> {
        let kafka = self.kafka();
        let position = match start {
            Start::Earliest => Position::Earliest,
            Start::Timestamp(ms) => Position::Time(ms),
        };
        let found = tokio::task::spawn_blocking(move || kafka.offsets_at(position))
            .await
            .map_err(|e| e.to_string())?;
        found.map_err(|e| format!("Kafka: {e}"))
    }

    async fn ends(
        &self,
        also: Option<&PipelineStats>,
    ) -> Result<HashMap<TopicPartition, i64>, String> {
        Controller::ends(self, also)
            .await
            .map(|(ends, _)| ends)
            .map_err(|e| e.to_string())
    }

    fn shadow_pipeline(&self, stats: Arc<PipelineStats>) -> Result<Pipeline, String> {
        wiring::build(
            &self.file,
            &self.path,
            Target::Shadow,
            stats,
            self.registry.clone(),
        )
    }

    fn start_live(self: &Arc<Self>, slot: &mut Option<Task>) {
        Controller::start_live(self, slot)
    }
}
