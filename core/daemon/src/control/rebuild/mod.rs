//! Rebuilding a read model from the log.
//!
//! **swap** (the default): the shadow target is emptied and given the start offsets as
//! its checkpoints, then a second task (its own consumer, no group, every partition)
//! fills it while the live task keeps serving and consuming. Once the shadow is within
//! one batch of the high watermarks, the sink readies it for a short swap
//! ([`TargetAdmin::prepare_swap`]: PostgreSQL builds the live table's indexes on it), still
//! with the live task running. Then the live task is stopped after writing what it holds;
//! the shadow catches up to at least the live checkpoints, is stopped the same way, and
//! the sink swaps it in with its checkpoints in one step ([`TargetAdmin::swap_in_shadow`]).
//! The live task then starts again from the swapped-in checkpoints. Readers of the live
//! target see the old read model until the swap and the new one after it; only the
//! consumption pauses, for the final catch-up and the swap.
//!
//! **in_place**: the live task is stopped, the target emptied and its checkpoints set to
//! the start offsets in one step, and the task started again; the read model is partial
//! until it has replayed.
//!
//! A daemon restart resumes an unfinished swap rebuild from its shadow's checkpoints when
//! the pipeline is unchanged ([`super::ticket`]); otherwise it abandons it: the shadow is
//! dropped at start-up and the live target is as it was. Cancelling drops the shadow
//! without a restart. An unfinished in-place rebuild is simply a replay that goes on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sinkd_core::event::TopicPartition;
use sinkd_core::runtime::PipelineStats;
use sinkd_core::sink::Target;
use tokio::sync::watch;
use tracing::{error, info, warn};

mod status;

pub use status::{Mode, Phase, RebuildStatus, RebuildView, Start};

use super::task::Lifecycle;
use super::ticket::Ticket;
use super::{ControlError, Controller, State};
use crate::wiring;
use sinkd_kafka::Position;

/// Where a rebuild's progress counts from.
struct Origin {
    /// The start offsets.
    from: Vec<(TopicPartition, i64)>,
    /// Stored positions of partitions the task does not hold yet (a resumed shadow's).
    known: HashMap<TopicPartition, i64>,
}

/// Why a rebuild stopped before its end.
enum Halt {
    Cancelled,
    Failed(String),
}

impl From<ControlError> for Halt {
    fn from(e: ControlError) -> Self {
        Halt::Failed(e.to_string())
    }
}

impl From<sinkd_core::error::SinkError> for Halt {
    fn from(e: sinkd_core::error::SinkError) -> Self {
        Halt::Failed(format!("sink: {e}"))
    }
}

impl Controller {
    /// Starts a rebuild in the background and returns its status.
    pub async fn start_rebuild(
        self: &Arc<Self>,
        mode: Mode,
        start: Start,
    ) -> Result<Arc<RebuildStatus>, ControlError> {
        let target = match mode {
            Mode::Swap => Target::Shadow,
            Mode::InPlace => Target::Live,
        };
        let status = RebuildStatus::new(mode, start, self.admin.describe(target));
        self.launch(mode, start, status, None).await
    }

    /// Goes on with the swap rebuild a restart interrupted, from its shadow's checkpoints.
    pub(super) async fn resume_rebuild(self: &Arc<Self>, ticket: Ticket) {
        let status = RebuildStatus::resumed(&ticket, self.admin.describe(Target::Shadow));
        if let Err(e) = self
            .launch(Mode::Swap, Start::Earliest, status, Some(ticket))
            .await
        {
            warn!(pipeline = %self.name, error = %e, "cannot resume the rebuild");
        }
    }

    async fn launch(
        self: &Arc<Self>,
        mode: Mode,
        start: Start,
        status: RebuildStatus,
        resume: Option<Ticket>,
    ) -> Result<Arc<RebuildStatus>, ControlError> {
        let mut task = self.rebuild_task.lock().await;
        if self.rebuilding() {
            return Err(ControlError::Conflict(format!(
                "pipeline `{}` is already rebuilding; GET its progress or DELETE it",
                self.name
            )));
        }
        match &resume {
            None => info!(pipeline = %self.name, ?mode, ?start, "rebuild started"),
            Some(t) => {
                info!(pipeline = %self.name, started_at = %t.started_at, "rebuild resumed from its shadow")
            }
        }
        let status = Arc::new(status);
        *self.rebuild.lock().expect("rebuild lock") = Some(status.clone());
        let (cancel, cancelled) = watch::channel(false);
        let me = self.clone();
        let st = status.clone();
        let handle = tokio::spawn(async move {
            let result = match mode {
                Mode::Swap => me.swap(&st, start, resume, cancelled).await,
                Mode::InPlace => me.in_place(&st, start, cancelled).await,
            };
            match result {
                Ok(()) => {
                    info!(pipeline = %me.name, "rebuild done");
                    st.phase(Phase::Done);
                }
                Err(Halt::Cancelled) if me.life.closing() => st.phase(Phase::Cancelled),
                Err(Halt::Cancelled) => {
                    info!(pipeline = %me.name, "rebuild cancelled");
                    st.phase(Phase::Cancelled);
                }
                Err(Halt::Failed(e)) => {
                    error!(pipeline = %me.name, error = %e, "rebuild failed");
                    st.failed(e);
                }
            }
            me.life.changed();
        });
        *task = Some((cancel, handle));
        Ok(status)
    }

    /// Cancels the rebuild under way and waits until its shadow is gone.
    pub async fn cancel_rebuild(&self) -> Result<(), ControlError> {
        let taken = self.rebuild_task.lock().await.take();
        match taken {
            Some((cancel, handle)) if !handle.is_finished() => {
                let _ = cancel.send(true);
                let _ = handle.await;
                Ok(())
            }
            _ => Err(ControlError::Conflict(format!(
                "pipeline `{}` is not rebuilding",
                self.name
            ))),
        }
    }

    /// The start offsets of every partition.
    async fn start_offsets(&self, start: Start) -> Result<Vec<(TopicPartition, i64)>, Halt> {
        let kafka = self.kafka();
        let position = match start {
            Start::Earliest => Position::Earliest,
            Start::Timestamp(ms) => Position::Time(ms),
        };
        let found = tokio::task::spawn_blocking(move || kafka.offsets_at(position))
            .await
            .map_err(|e| Halt::Failed(e.to_string()))?;
        found.map_err(|e| Halt::Failed(format!("Kafka: {}", e.0)))
    }

    /// Offsets `stats`' task applied since the origin, offsets from there to the end of
    /// the log (see [`Controller::ends`]), and what is left.
    async fn measure(
        &self,
        origin: &Origin,
        stats: &PipelineStats,
    ) -> Result<(i64, i64, i64), ControlError> {
        let (ends, _) = self.ends(Some(stats)).await?;
        let applied = stats.partitions();
        let (mut done, mut total, mut lag) = (0, 0, 0);
        for (tp, start) in &origin.from {
            let end = ends.get(tp).copied().unwrap_or(*start);
            // Before the task holds a partition, what the target stored for it.
            let next = applied
                .get(tp)
                .and_then(|p| p.next)
                .or_else(|| origin.known.get(tp).copied())
                .unwrap_or(*start);
            done += (next - start).max(0);
            total += (end - start).max(0);
            lag += (end - next).max(0);
        }
        Ok((done, total, lag))
    }

    async fn swap(
        self: &Arc<Self>,
        status: &RebuildStatus,
        start: Start,
        resume: Option<Ticket>,
        mut cancelled: watch::Receiver<bool>,
    ) -> Result<(), Halt> {
        let origin = match resume {
            // The shadow and its checkpoints are as the interrupted build left them.
            Some(ticket) => {
                let from = ticket.start_offsets();
                let partitions: Vec<TopicPartition> =
                    from.iter().map(|(tp, _)| tp.clone()).collect();
                let known = wiring::shadow_checkpoints(&self.file)
                    .load(&partitions)
                    .await?;
                let origin = Origin { from, known };
                if let Ok((done, total, _)) = self.measure(&origin, &PipelineStats::default()).await
                {
                    status.progress(done, total);
                    status.done_at_resume(done);
                }
                origin
            }
            None => {
                let from = self.start_offsets(start).await?;
                self.admin.drop_shadow().await?;
                self.admin.reset(Target::Shadow, true, &from).await?;
                let view = status.view();
                let ticket = Ticket {
                    fingerprint: self.fingerprint.clone(),
                    start: view.start,
                    started_at: view.started_at.unwrap_or_else(chrono::Utc::now),
                    from: from
                        .iter()
                        .map(|((topic, partition), next)| (topic.to_string(), *partition, *next))
                        .collect(),
                };
                let ticket =
                    serde_json::to_string(&ticket).map_err(|e| Halt::Failed(e.to_string()))?;
                self.admin.set_shadow_ticket(&ticket).await?;
                Origin {
                    from,
                    known: HashMap::new(),
                }
            }
        };
        let stats = Arc::new(PipelineStats::default());
        let pipeline = wiring::build(
            &self.file,
            &self.path,
            Target::Shadow,
            stats.clone(),
            self.registry.clone(),
        )
        .map_err(Halt::Failed)?;
        let (stop_shadow, stop_rx) = watch::channel(false);
        let mut shadow = tokio::spawn(pipeline.run(stop_rx));
        status.phase(Phase::Building);
        let outcome = self
            .fill_and_swap(
                status,
                &origin,
                &stats,
                &mut shadow,
                &stop_shadow,
                &mut cancelled,
            )
            .await;
        if outcome.is_err() {
            let _ = stop_shadow.send(true);
            if !shadow.is_finished() {
                let _ = (&mut shadow).await;
            }
            if matches!(outcome, Err(Halt::Cancelled)) && self.life.closing() {
                info!(pipeline = %self.name, "the daemon is stopping: the rebuild's shadow is kept, and the next start resumes it if the pipeline is unchanged");
                return outcome;
            }
            if let Err(e) = self.admin.drop_shadow().await {
                warn!(pipeline = %self.name, error = %e, "cannot drop the shadow; the next start drops it");
            }
            // The live task may have been stopped for the swap: it serves again.
            let mut live = self.life.task.lock().await;
            if live.is_none() && self.state() == State::Running {
                self.start_live(&mut live);
            }
        }
        outcome
    }

    async fn fill_and_swap(
        self: &Arc<Self>,
        status: &RebuildStatus,
        origin: &Origin,
        stats: &PipelineStats,
        shadow: &mut tokio::task::JoinHandle<Result<(), sinkd_core::error::PipelineError>>,
        stop_shadow: &watch::Sender<bool>,
        cancelled: &mut watch::Receiver<bool>,
    ) -> Result<(), Halt> {
        let threshold = self.file.batch.max_events as i64;
        // Build until the shadow is within one batch of the end of the log.
        loop {
            tokio::select! {
                _ = cancelled.changed() => return Err(Halt::Cancelled),
                ended = &mut *shadow => return Err(shadow_ended(ended)),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            match self.measure(origin, stats).await {
                Ok((done, total, lag)) => {
                    status.progress(done, total);
                    if lag <= threshold
                        && stats.connected.load(std::sync::atomic::Ordering::Relaxed)
                    {
                        break;
                    }
                }
                // Shown while it lasts; the build goes on and the next round asks again.
                Err(e) => status.trouble(e.to_string()),
            }
        }
        status.phase(Phase::Indexing);
        tokio::select! {
            _ = cancelled.changed() => return Err(Halt::Cancelled),
            ended = &mut *shadow => return Err(shadow_ended(ended)),
            prepared = self.admin.prepare_swap() => prepared?,
        }
        status.phase(Phase::Swapping);
        let mut live = self.life.task.lock().await;
        let was_running = self.state() == State::Running;
        Lifecycle::stop(&mut live).await;
        let partitions: Vec<TopicPartition> =
            origin.from.iter().map(|(tp, _)| tp.clone()).collect();
        let live_offsets: HashMap<TopicPartition, i64> = self.checkpoints.load(&partitions).await?;
        info!(pipeline = %self.name, "live task stopped for the swap; the shadow catches up to it");
        // The shadow reads on to at least where the live target is.
        loop {
            let applied = stats.partitions();
            let behind = live_offsets.iter().any(|(tp, live_next)| {
                applied.get(tp).and_then(|p| p.next).unwrap_or(0) < *live_next
            });
            if !behind {
                break;
            }
            tokio::select! {
                _ = cancelled.changed() => {
                    drop(live);
                    return Err(Halt::Cancelled);
                }
                ended = &mut *shadow => {
                    drop(live);
                    return Err(shadow_ended(ended));
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        // The last count while the shadow still holds its partitions.
        if let Ok((done, _, _)) = self.measure(origin, stats).await {
            status.progress(done, done);
        }
        let _ = stop_shadow.send(true);
        match (&mut *shadow).await {
            Ok(Ok(())) => {}
            ended => {
                drop(live);
                return Err(shadow_ended(ended));
            }
        }
        self.admin.swap_in_shadow().await?;
        info!(pipeline = %self.name, target = %self.admin.describe(Target::Live), "rebuilt target swapped in");
        if was_running || matches!(self.state(), State::Failed(_)) {
            self.start_live(&mut live);
        }
        Ok(())
    }

    async fn in_place(
        self: &Arc<Self>,
        status: &RebuildStatus,
        start: Start,
        mut cancelled: watch::Receiver<bool>,
    ) -> Result<(), Halt> {
        let origin = Origin {
            from: self.start_offsets(start).await?,
            known: HashMap::new(),
        };
        let end = {
            let mut live = self.life.task.lock().await;
            Lifecycle::stop(&mut live).await;
            // Done once the replay reaches the end of the log as it was when it began.
            let (end, _) = self.ends(None).await?;
            self.admin.reset(Target::Live, true, &origin.from).await?;
            self.start_live(&mut live);
            end
        };
        status.phase(Phase::Replaying);
        loop {
            match self.measure(&origin, &self.stats).await {
                Ok((done, total, _)) => status.progress(done, total),
                Err(e) => status.trouble(e.to_string()),
            }
            let applied = self.stats.partitions();
            let behind = end
                .iter()
                .any(|(tp, high)| applied.get(tp).and_then(|p| p.next).unwrap_or(0) < *high);
            if !behind {
                return Ok(());
            }
            if let State::Failed(e) = self.state() {
                return Err(Halt::Failed(e));
            }
            tokio::select! {
                _ = cancelled.changed() => return Err(Halt::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

fn shadow_ended(
    ended: Result<Result<(), sinkd_core::error::PipelineError>, tokio::task::JoinError>,
) -> Halt {
    match ended {
        Ok(Ok(())) => Halt::Failed("the shadow's task stopped".into()),
        Ok(Err(e)) => Halt::Failed(e.to_string()),
        Err(e) => Halt::Failed(format!("the shadow's task panicked: {e}")),
    }
}
