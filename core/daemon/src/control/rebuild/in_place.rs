//! An in-place rebuild: [`InPlaceRun::reset`] stops the live task, empties the target and
//! sets its checkpoints to the start offsets in one step, and starts the task again;
//! [`InPlaceRun::replay`] follows it to the end of the log as it was when it began.

use std::collections::HashMap;
use std::sync::Arc;

use sinkd_core::event::TopicPartition;
use sinkd_core::sink::{Reset, Target};
use tokio::sync::watch;

use super::super::State;
use super::super::task::Lifecycle;
use super::host::Host;
use super::progress::{Origin, behind, measure};
use super::swap::RECHECK;
use super::{Halt, Phase, RebuildStatus, Start};

/// One in-place rebuild of one pipeline.
pub struct InPlaceRun<H: Host> {
    host: Arc<H>,
    status: Arc<RebuildStatus>,
    cancelled: watch::Receiver<bool>,
}

impl<H: Host> InPlaceRun<H> {
    /// A run reporting to `status`, stopped early when `cancelled` changes.
    pub fn new(
        host: Arc<H>,
        status: Arc<RebuildStatus>,
        cancelled: watch::Receiver<bool>,
    ) -> InPlaceRun<H> {
        InPlaceRun {
            host,
            status,
            cancelled,
        }
    }

    /// Runs both phases.
    pub async fn run(mut self, start: Start) -> Result<(), Halt> {
        let origin = Origin {
            from: self.host.start_offsets(start).await.map_err(Halt::Failed)?,
            known: HashMap::new(),
        };
        let end = self.reset(&origin).await?;
        self.replay(&origin, &end).await
    }

    /// The live target emptied, at the start offsets, and its task started again; returns
    /// the end of the log as it was, where the replay is done.
    async fn reset(&mut self, origin: &Origin) -> Result<HashMap<TopicPartition, i64>, Halt> {
        let mut live = self.host.life().task.lock().await;
        Lifecycle::stop(&mut live).await;
        let end = self.host.ends(None).await.map_err(Halt::Failed)?;
        self.host
            .admin()
            .reset(Target::Live, Reset::emptied(&origin.from))
            .await?;
        self.host.start_live(&mut live);
        Ok(end)
    }

    /// Replaying: the live task reads from the start offsets to `end`.
    async fn replay(
        &mut self,
        origin: &Origin,
        end: &HashMap<TopicPartition, i64>,
    ) -> Result<(), Halt> {
        self.status.phase(Phase::Replaying);
        let stats = self.host.live_stats().clone();
        let mut commits = stats.subscribe();
        let mut changes = self.host.life().subscribe();
        loop {
            match measure(&*self.host, origin, &stats).await {
                Ok(p) => self.status.progress(p.done, p.total),
                Err(e) => self.status.trouble(e),
            }
            if !behind(&stats, end) {
                return Ok(());
            }
            if let State::Failed(e) = self.host.state() {
                return Err(Halt::Failed(e));
            }
            tokio::select! {
                _ = self.cancelled.changed() => return Err(Halt::Cancelled),
                _ = commits.changed() => {}
                _ = changes.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}
