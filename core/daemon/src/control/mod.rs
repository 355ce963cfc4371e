//! The control plane: one [`Controller`] per pipeline supervises its task and carries out
//! what the REST API asks (pause, resume, offset reset, rebuild).
//!
//! Every change of position goes through the sink, never around it: a paused pipeline has
//! no task (its batches were written and its consumer closed), an offset reset rewrites
//! the checkpoints stored in the sink, and resuming starts a fresh task that, as at
//! start-up, reads from exactly those checkpoints. So the exactly-once machinery of the
//! runtime is the only thing that ever decides where reading starts.
//!
//! - [`rebuild`]: the shadow build and its swap, or the in-place replay.
//! - [`status`]: what the API reports: state, per-partition offsets, lag, staleness.
//! - [`capture`]: the controller of a capture pipeline (PostgreSQL slot into Kafka).
//! - [`roster`]: every pipeline of the daemon, a set a reload changes.
//! - [`task`]: what both controllers share: their task, state and change signal.
//! - [`ticket`]: what lets a restart resume a swap rebuild.
//!
//! Pausing is per daemon: in a shared consumer group the partitions of a paused instance
//! go to the other instances.

pub mod capture;
pub mod rebuild;
pub mod roster;
pub mod status;
pub mod task;
pub mod ticket;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sinkd_core::backoff::Backoff;
use sinkd_core::config::PipelineFile;
use sinkd_core::error::{ErrorClass, SinkError};
use sinkd_core::event::TopicPartition;
use sinkd_core::runtime::PipelineStats;
use sinkd_core::sink::{CheckpointReader, Reset, Target, TargetAdmin};
use sinkd_kafka::{KafkaOffsets, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::wiring;
use rebuild::RebuildStatus;
use status::Marks;
use task::{Lifecycle, Task};
use ticket::Ticket;

/// Where a pipeline's task stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Preparing or connecting.
    Starting,
    /// The task runs.
    Running,
    /// Stopped on request; resumable.
    Paused,
    /// Stopped by an error that retrying cannot cure (logged and shown); resumable once
    /// the cause is fixed.
    Failed(String),
}

/// Why a control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request does not fit the pipeline's state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// Kafka or the sink failed (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<SinkError> for ControlError {
    fn from(e: SinkError) -> Self {
        ControlError::Unavailable(format!("sink: {e}"))
    }
}

/// One pipeline under control.
pub struct Controller {
    /// Pipeline name.
    pub name: String,
    file: PipelineFile,
    path: PathBuf,
    /// Counters and progress of the live pipeline, kept across task restarts.
    pub stats: Arc<PipelineStats>,
    admin: Arc<dyn TargetAdmin>,
    checkpoints: Arc<dyn CheckpointReader>,
    kafka: Arc<KafkaOffsets>,
    /// The schema registry client every task of the pipeline decodes through.
    registry: Arc<Registry>,
    /// The live task and the state.
    life: Lifecycle,
    rebuild: Mutex<Option<Arc<RebuildStatus>>>,
    rebuild_task: tokio::sync::Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    marks: Marks,
    /// [`ticket::fingerprint`] of the pipeline as loaded.
    fingerprint: String,
    /// An interrupted rebuild that start-up found resumable.
    resume: Mutex<Option<Ticket>>,
}

impl Controller {
    /// A controller for a validated pipeline file; nothing runs until [`Controller::start`].
    pub fn new(file: PipelineFile, path: PathBuf) -> Result<Arc<Controller>, String> {
        let (admin, checkpoints) = wiring::live_target(&file);
        let kafka = Arc::new(KafkaOffsets::new(&file.source.kafka).map_err(|e| e.to_string())?);
        let registry = Arc::new(Registry::new(&file.source.registry)?);
        Ok(Arc::new(Controller {
            registry,
            name: file.name.clone(),
            fingerprint: ticket::fingerprint(&file, &path),
            resume: Mutex::new(None),
            file,
            path,
            stats: Arc::new(PipelineStats::default()),
            admin,
            checkpoints,
            kafka,
            life: Lifecycle::default(),
            rebuild: Mutex::new(None),
            rebuild_task: tokio::sync::Mutex::new(None),
            marks: Marks::default(),
        }))
    }

    /// The pipeline file.
    pub fn file(&self) -> &PipelineFile {
        &self.file
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.life.state()
    }

    /// Changes whenever the state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.life.subscribe()
    }

    /// The current or last rebuild.
    pub fn rebuild_status(&self) -> Option<Arc<RebuildStatus>> {
        self.rebuild.lock().expect("rebuild lock").clone()
    }

    /// Whether a rebuild is under way.
    pub fn rebuilding(&self) -> bool {
        self.rebuild_status().is_some_and(|r| !r.finished())
    }

    /// Repairs the target after a crash (an interrupted swap), then starts the live task
    /// and resumes an interrupted rebuild (or drops its shadow when it cannot be resumed).
    /// Waits out a sink that is not up yet.
    pub async fn start(self: &Arc<Self>) {
        let mut backoff = Backoff::between(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.prepare().await {
                Ok(()) => break,
                Err(e) if e.class() == ErrorClass::Retriable => {
                    let wait = backoff.wait();
                    warn!(pipeline = %self.name, error = %e, retry_in = ?wait, "sink not ready for start-up checks");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    error!(pipeline = %self.name, error = %e, "cannot prepare the sink");
                    self.life.set_state(State::Failed(e.to_string()));
                    return;
                }
            }
        }
        {
            let mut live = self.life.task.lock().await;
            // A pause (or a resume) may have come while the sink was being prepared.
            if live.is_none() && self.state() == State::Starting {
                self.start_live(&mut live);
            }
        }
        let resume = self.resume.lock().expect("resume lock").take();
        if let Some(ticket) = resume {
            self.resume_rebuild(ticket).await;
        }
    }

    async fn prepare(&self) -> Result<(), SinkError> {
        self.admin.recover().await?;
        if !self.admin.shadow_exists().await? {
            return Ok(());
        }
        let shadow = self.admin.describe(Target::Shadow);
        let why = match self.admin.shadow_ticket().await? {
            None => {
                "it has no ticket or its data is gone (it stopped as it began, an older sinkd \
                 made it, or it was dropped by hand)"
            }
            Some(text) => match serde_json::from_str::<Ticket>(&text) {
                Ok(t) if t.fingerprint == self.fingerprint => {
                    info!(pipeline = %self.name, %shadow, started_at = %t.started_at,
                          "a rebuild was interrupted by a restart; the pipeline is unchanged, so it \
                           resumes from its shadow's checkpoints");
                    *self.resume.lock().expect("resume lock") = Some(t);
                    return Ok(());
                }
                Ok(_) => "the pipeline file or sinkd's version changed since it began",
                Err(_) => "its ticket cannot be read",
            },
        };
        warn!(pipeline = %self.name, %shadow,
              "a rebuild was interrupted by a restart; it is abandoned and its shadow dropped \
               because {why} (the live target was never touched). Start it again to rebuild");
        self.admin.drop_shadow().await?;
        *self.rebuild.lock().expect("rebuild lock") = Some(Arc::new(RebuildStatus::abandoned()));
        Ok(())
    }

    /// Starts the live task (the caller holds the lifecycle's task lock).
    fn start_live(self: &Arc<Self>, live: &mut Option<Task>) {
        if self.life.closing() {
            return;
        }
        let built = wiring::build(
            &self.file,
            &self.path,
            Target::Live,
            self.stats.clone(),
            self.registry.clone(),
        );
        let pipeline = match built {
            Ok(p) => p,
            Err(e) => {
                error!(pipeline = %self.name, error = %e, "cannot start the pipeline");
                self.life.set_state(State::Failed(e));
                return;
            }
        };
        let me = self.clone();
        self.life.start(live, |stop| async move {
            if let Err(e) = pipeline.run(stop).await {
                error!(pipeline = %me.name, error = %e, "pipeline failed");
                me.life.set_state(State::Failed(e.to_string()));
            }
        });
    }

    /// Writes what the live task holds, stops it and keeps it stopped.
    pub async fn pause(&self) -> Result<(), ControlError> {
        if self.rebuilding() {
            return Err(ControlError::Conflict(format!(
                "pipeline `{}` is rebuilding; cancel the rebuild first",
                self.name
            )));
        }
        self.life.pause(&self.name).await;
        Ok(())
    }

    /// Starts a paused or failed pipeline from the offsets stored in its sink.
    pub async fn resume(self: &Arc<Self>) -> Result<(), ControlError> {
        self.life
            .resume(&self.name, |live| self.start_live(live))
            .await;
        Ok(())
    }

    /// Moves a paused pipeline: stores `offsets` as its checkpoints (partitions not listed
    /// keep theirs).
    pub async fn set_offsets(
        &self,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> Result<Vec<(TopicPartition, i64)>, ControlError> {
        let live = self.life.task.lock().await;
        if live.is_some() || self.state() != State::Paused {
            return Err(ControlError::Conflict(format!(
                "pipeline `{}` must be paused to move its offsets (POST /pipelines/{}/pause)",
                self.name, self.name
            )));
        }
        let partitions = self.partitions().await?;
        for (tp, _) in &offsets {
            if !partitions.contains(tp) {
                return Err(ControlError::BadRequest(format!(
                    "{}/{} is not a partition of the pipeline's topics",
                    tp.0, tp.1
                )));
            }
        }
        // The reset replaces every checkpoint of the target: keep the unlisted ones.
        let mut all = self.checkpoints.load(&partitions).await?;
        for (tp, next) in &offsets {
            all.insert(tp.clone(), *next);
        }
        let mut all: Vec<(TopicPartition, i64)> = all.into_iter().collect();
        all.sort();
        self.admin.reset(Target::Live, Reset::offsets(&all)).await?;
        info!(pipeline = %self.name, offsets = ?offsets, "offsets moved");
        Ok(offsets)
    }

    /// Every partition of the pipeline's topics.
    pub async fn partitions(&self) -> Result<Vec<TopicPartition>, ControlError> {
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || kafka.partitions())
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?
            .map_err(|e| ControlError::Unavailable(e.to_string()))
    }

    /// The broker client, for offset lookups.
    pub fn kafka(&self) -> Arc<KafkaOffsets> {
        self.kafka.clone()
    }

    /// The live target's checkpoints.
    pub fn checkpoints(&self) -> Arc<dyn CheckpointReader> {
        self.checkpoints.clone()
    }

    /// Stops everything at daemon shutdown: an unfinished rebuild is left for the next
    /// start to abandon; the live task writes what it holds.
    pub async fn shutdown(&self) {
        // First, so a cancelled rebuild does not start the live task again.
        self.life.begin_closing();
        if let Some((cancel, handle)) = self.rebuild_task.lock().await.take() {
            let _ = cancel.send(true);
            let _ = handle.await;
        }
        self.life.close().await;
    }
}
