//! A swap rebuild, one method a phase: [`SwapRun::prepare`] the shadow (or take up the
//! one a restart left), [`SwapRun::fill`] it while the live task serves,
//! [`SwapRun::ready`] it for a short swap, [`SwapRun::catch_up`] with the live task
//! stopped, and [`SwapRun::swap`]. Progress is read when the shadow commits, not on a
//! timer; a slow timer only notices the end of the log moving while the shadow is idle.
//! An early end of any phase runs [`SwapRun::abandon`]: the shadow is stopped and dropped
//! and the live task serves again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use sinkd_core::error::PipelineError;
use sinkd_core::runtime::PipelineStats;
use sinkd_core::sink::{Reset, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::super::State;
use super::super::task::{Lifecycle, Task};
use super::super::ticket::Ticket;
use super::host::Host;
use super::progress::{Origin, behind, measure};
use super::{Halt, Phase, RebuildStatus, Start};

/// How often progress is read while no commit wakes the run.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

/// One swap rebuild of one pipeline.
pub struct SwapRun<H: Host> {
    host: Arc<H>,
    status: Arc<RebuildStatus>,
    cancelled: watch::Receiver<bool>,
    /// The shadow task's counters; each of its commits wakes the run.
    stats: Arc<PipelineStats>,
}

/// The task filling the shadow.
struct Shadow {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), PipelineError>>>,
}

impl Shadow {
    /// Resolves when the task ends by itself (it never should before it is told to).
    async fn ended(&mut self) -> Halt {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let ended = task.await;
        self.task = None;
        shadow_ended(ended)
    }

    /// Tells the task to stop and waits until it has written what it holds.
    async fn stop(&mut self) -> Result<(), Halt> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Ok(())) => Ok(()),
                ended => Err(shadow_ended(ended)),
            },
            None => Ok(()),
        }
    }
}

fn shadow_ended(ended: Result<Result<(), PipelineError>, tokio::task::JoinError>) -> Halt {
    match ended {
        Ok(Ok(())) => Halt::Failed("the shadow's task stopped".into()),
        Ok(Err(e)) => Halt::Failed(e.to_string()),
        Err(e) => Halt::Failed(format!("the shadow's task panicked: {e}")),
    }
}

impl<H: Host> SwapRun<H> {
    /// A run reporting to `status`, stopped early when `cancelled` changes.
    pub fn new(
        host: Arc<H>,
        status: Arc<RebuildStatus>,
        cancelled: watch::Receiver<bool>,
    ) -> SwapRun<H> {
        SwapRun {
            host,
            status,
            cancelled,
            stats: Arc::new(PipelineStats::default()),
        }
    }

    /// Runs every phase; `resume` is the ticket of a shadow a restart interrupted.
    pub async fn run(mut self, start: Start, resume: Option<Ticket>) -> Result<(), Halt> {
        // Until the shadow's task runs, an early end leaves the shadow for the next start
        // to resume or drop.
        let origin = self.prepare(start, resume).await?;
        let pipeline = self
            .host
            .shadow_pipeline(self.stats.clone())
            .map_err(Halt::Failed)?;
        let (stop, stopped) = watch::channel(false);
        let mut shadow = Shadow {
            stop,
            task: Some(tokio::spawn(pipeline.run(stopped))),
        };
        let outcome = self.complete(&origin, &mut shadow).await;
        if let Err(halt) = &outcome {
            self.abandon(halt, &mut shadow).await;
        }
        outcome
    }

    async fn complete(&mut self, origin: &Origin, shadow: &mut Shadow) -> Result<(), Halt> {
        self.fill(origin, shadow).await?;
        self.ready(shadow).await?;
        let host = self.host.clone();
        // Held from stopping the live task to starting it again: no request interleaves.
        let mut live = host.life().task.lock().await;
        let was_running = host.state() == State::Running;
        self.catch_up(origin, shadow, &mut live).await?;
        self.swap(&mut live, was_running).await
    }

    /// Preparing: an empty shadow holding the start offsets as its checkpoints, and the
    /// ticket a restart resumes it by; or, resuming, the shadow as the interrupted run
    /// left it, counted from where it is.
    pub(super) async fn prepare(
        &mut self,
        start: Start,
        resume: Option<Ticket>,
    ) -> Result<Origin, Halt> {
        let admin = self.host.admin();
        if let Some(ticket) = resume {
            let from = ticket.start_offsets();
            let partitions: Vec<_> = from.iter().map(|(tp, _)| tp.clone()).collect();
            let known = self.host.shadow_checkpoints().load(&partitions).await?;
            let origin = Origin { from, known };
            if let Ok(p) = measure(&*self.host, &origin, &PipelineStats::default()).await {
                self.status.progress(p.done, p.total);
                self.status.done_at_resume(p.done);
            }
            return Ok(origin);
        }
        let from = self.host.start_offsets(start).await.map_err(Halt::Failed)?;
        admin.drop_shadow().await?;
        admin.reset(Target::Shadow, Reset::emptied(&from)).await?;
        let view = self.status.view();
        let ticket = Ticket {
            fingerprint: self.host.fingerprint().to_owned(),
            start: view.start,
            started_at: view.started_at.unwrap_or_else(chrono::Utc::now),
            from: from
                .iter()
                .map(|((topic, partition), next)| (topic.to_string(), *partition, *next))
                .collect(),
        };
        let ticket = serde_json::to_string(&ticket).map_err(|e| Halt::Failed(e.to_string()))?;
        admin.set_shadow_ticket(&ticket).await?;
        Ok(Origin {
            from,
            known: HashMap::new(),
        })
    }

    /// Building: the shadow fills while the live task serves, until it is connected and
    /// within one batch of the end of the log.
    async fn fill(&mut self, origin: &Origin, shadow: &mut Shadow) -> Result<(), Halt> {
        self.status.phase(Phase::Building);
        let threshold = self.host.batch_events();
        let mut commits = self.stats.subscribe();
        loop {
            match measure(&*self.host, origin, &self.stats).await {
                Ok(p) => {
                    self.status.progress(p.done, p.total);
                    if p.lag <= threshold && self.stats.connected.load(Relaxed) {
                        return Ok(());
                    }
                }
                // Shown while it lasts; the build goes on and the next round asks again.
                Err(e) => self.status.trouble(e),
            }
            tokio::select! {
                _ = self.cancelled.changed() => return Err(Halt::Cancelled),
                halt = shadow.ended() => return Err(halt),
                _ = commits.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Indexing: the sink readies the shadow for a short swap, the live task still
    /// serving.
    async fn ready(&mut self, shadow: &mut Shadow) -> Result<(), Halt> {
        self.status.phase(Phase::Indexing);
        tokio::select! {
            _ = self.cancelled.changed() => Err(Halt::Cancelled),
            halt = shadow.ended() => Err(halt),
            prepared = self.host.admin().prepare_swap() => Ok(prepared?),
        }
    }

    /// Swapping, first half: the live task writes what it holds and stops; the shadow
    /// reads on to at least the live checkpoints, then stops the same way.
    async fn catch_up(
        &mut self,
        origin: &Origin,
        shadow: &mut Shadow,
        live: &mut Option<Task>,
    ) -> Result<(), Halt> {
        self.status.phase(Phase::Swapping);
        Lifecycle::stop(live).await;
        let live_offsets = self
            .host
            .live_checkpoints()
            .load(&origin.partitions())
            .await?;
        info!(pipeline = %self.host.name(), "live task stopped for the swap; the shadow catches up to it");
        let mut commits = self.stats.subscribe();
        while behind(&self.stats, &live_offsets) {
            tokio::select! {
                _ = self.cancelled.changed() => return Err(Halt::Cancelled),
                halt = shadow.ended() => return Err(halt),
                _ = commits.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
        // The last count while the shadow still holds its partitions.
        if let Ok(p) = measure(&*self.host, origin, &self.stats).await {
            self.status.progress(p.done, p.done);
        }
        shadow.stop().await
    }

    /// Swapping, second half: the shadow and its checkpoints become the live target in
    /// one step, and the live task starts again from them.
    async fn swap(&mut self, live: &mut Option<Task>, was_running: bool) -> Result<(), Halt> {
        let admin = self.host.admin();
        admin.swap_in_shadow().await?;
        info!(pipeline = %self.host.name(), target = %admin.describe(Target::Live), "rebuilt target swapped in");
        if was_running || matches!(self.host.state(), State::Failed(_)) {
            self.host.start_live(live);
        }
        Ok(())
    }

    /// After an early end: the shadow's task stops and the shadow is dropped (kept when
    /// the daemon is stopping, for the next start to resume), and a live task stopped for
    /// the swap serves again.
    async fn abandon(&mut self, halt: &Halt, shadow: &mut Shadow) {
        let _ = shadow.stop().await;
        let name = self.host.name();
        if matches!(halt, Halt::Cancelled) && self.host.life().closing() {
            info!(pipeline = %name, "the daemon is stopping: the rebuild's shadow is kept, and the next start resumes it if the pipeline is unchanged");
            return;
        }
        if let Err(e) = self.host.admin().drop_shadow().await {
            warn!(pipeline = %name, error = %e, "cannot drop the shadow; the next start drops it");
        }
        let mut live = self.host.life().task.lock().await;
        if live.is_none() && self.host.state() == State::Running {
            self.host.start_live(&mut live);
        }
    }
}
