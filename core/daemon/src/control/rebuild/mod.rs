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
//!
//! Each run is its own type with one method a phase ([`swap::SwapRun`],
//! [`in_place::InPlaceRun`]), over the [`host::Host`] it rebuilds: the daemon's
//! [`Controller`], or the in-memory pipeline of the unit tests.

use std::sync::Arc;

use sinkd_core::sink::Target;
use tokio::sync::watch;
use tracing::{error, info, warn};

mod host;
mod in_place;
mod progress;
mod status;
mod swap;
#[cfg(test)]
mod tests;

pub use status::{Mode, Phase, RebuildStatus, RebuildView, Start};

use super::ticket::Ticket;
use super::{ControlError, Controller};
use in_place::InPlaceRun;
use swap::SwapRun;

/// Why a rebuild stopped before its end.
#[derive(Debug)]
pub enum Halt {
    /// Cancelled on request, or by the daemon stopping.
    Cancelled,
    /// Failed, for this reason.
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
                Mode::Swap => {
                    SwapRun::new(me.clone(), st.clone(), cancelled)
                        .run(start, resume)
                        .await
                }
                Mode::InPlace => {
                    InPlaceRun::new(me.clone(), st.clone(), cancelled)
                        .run(start)
                        .await
                }
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
}
