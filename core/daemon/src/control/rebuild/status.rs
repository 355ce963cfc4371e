//! What a rebuild shows while it runs and after: its mode, start, phase, progress, rate
//! and ETA, shared between the run and the REST API.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::ticket::Ticket;

/// How a rebuild treats the live target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Build a shadow beside the live target and swap it in.
    #[default]
    Swap,
    /// Empty the live target and replay into it.
    InPlace,
}

/// Where a rebuild starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first retained offset of every partition.
    Earliest,
    /// The first offset at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Where a rebuild is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Finding the start offsets, emptying the shadow.
    Preparing,
    /// The shadow is being filled.
    Building,
    /// The shadow, nearly caught up, gets what the swap must carry over that takes time
    /// to build (PostgreSQL: the live table's secondary indexes); the live target still
    /// serves and consumes.
    Indexing,
    /// The live task is paused while the shadow catches up and is swapped in.
    Swapping,
    /// In place: the live target is replaying.
    Replaying,
    /// Finished.
    Done,
    /// Stopped by an error; the live target is as it was (swap) or replaying (in place).
    Failed,
    /// Cancelled on request.
    Cancelled,
    /// Interrupted by a restart that could not resume it (no ticket, or the pipeline or
    /// sinkd changed meanwhile); its shadow was dropped at start-up.
    Abandoned,
}

/// A rebuild's progress, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RebuildView {
    /// swap or in_place.
    pub mode: Mode,
    /// Where it is.
    pub phase: Phase,
    /// `earliest` or the RFC 3339 start time.
    pub start: String,
    /// The target being filled.
    pub target: String,
    /// When it was asked for.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When a restart resumed it from its shadow (the last time, if several).
    pub resumed_at: Option<DateTime<Utc>>,
    /// Offsets the shadow already held when it was resumed.
    pub events_done_at_resume: Option<i64>,
    /// Offsets applied so far, over all partitions.
    pub events_done: i64,
    /// Offsets from the start to the current high watermarks.
    pub events_total: i64,
    /// Events per second since the build started.
    pub rate: f64,
    /// Seconds left at that rate.
    pub eta_seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A rebuild's live status.
pub struct RebuildStatus {
    view: Mutex<RebuildView>,
    began: Instant,
    /// Events done at the first measure of this process: the rate counts from there, so
    /// a resumed rebuild's earlier work does not inflate it.
    first_done: Mutex<Option<i64>>,
}

impl RebuildStatus {
    pub(super) fn new(mode: Mode, start: Start, target: String) -> RebuildStatus {
        let start = match start {
            Start::Earliest => "earliest".to_owned(),
            Start::Timestamp(ms) => DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| ms.to_string()),
        };
        RebuildStatus {
            view: Mutex::new(RebuildView {
                mode,
                phase: Phase::Preparing,
                start,
                target,
                started_at: Some(Utc::now()),
                finished_at: None,
                resumed_at: None,
                events_done_at_resume: None,
                events_done: 0,
                events_total: 0,
                rate: 0.0,
                eta_seconds: None,
                error: None,
            }),
            began: Instant::now(),
            first_done: Mutex::new(None),
        }
    }

    /// A swap rebuild a restart resumes, as its ticket describes it.
    pub(super) fn resumed(ticket: &Ticket, target: String) -> RebuildStatus {
        let status = RebuildStatus::new(Mode::Swap, Start::Earliest, target);
        {
            let mut v = status.view.lock().expect("rebuild lock");
            v.start = ticket.start.clone();
            v.started_at = Some(ticket.started_at);
            v.resumed_at = Some(Utc::now());
        }
        status
    }

    /// A rebuild found interrupted at start-up.
    pub fn abandoned() -> RebuildStatus {
        let status = RebuildStatus::new(Mode::Swap, Start::Earliest, String::new());
        {
            let mut v = status.view.lock().expect("rebuild lock");
            v.phase = Phase::Abandoned;
            v.started_at = None;
            v.finished_at = Some(Utc::now());
        }
        status
    }

    /// A copy of the status.
    pub fn view(&self) -> RebuildView {
        self.view.lock().expect("rebuild lock").clone()
    }

    /// Whether it has ended (done, failed, cancelled or abandoned).
    pub fn finished(&self) -> bool {
        matches!(
            self.view().phase,
            Phase::Done | Phase::Failed | Phase::Cancelled | Phase::Abandoned
        )
    }

    pub(super) fn phase(&self, phase: Phase) {
        let mut v = self.view.lock().expect("rebuild lock");
        v.phase = phase;
        if matches!(phase, Phase::Done | Phase::Failed | Phase::Cancelled) {
            v.finished_at = Some(Utc::now());
            v.eta_seconds = None;
        }
    }

    pub(super) fn failed(&self, error: String) {
        self.view.lock().expect("rebuild lock").error =
            Some(sinkd_core::config::redact_text(&error));
        self.phase(Phase::Failed);
    }

    /// A passing problem (progress cannot be measured), shown until the next measure.
    pub(super) fn trouble(&self, error: String) {
        self.view.lock().expect("rebuild lock").error =
            Some(sinkd_core::config::redact_text(&error));
    }

    /// Records the progress a resumed shadow had already made.
    pub(super) fn done_at_resume(&self, done: i64) {
        self.view
            .lock()
            .expect("rebuild lock")
            .events_done_at_resume = Some(done);
    }

    pub(super) fn progress(&self, done: i64, total: i64) {
        let mut v = self.view.lock().expect("rebuild lock");
        v.error = None;
        let secs = self.began.elapsed().as_secs_f64().max(0.001);
        let first = *self
            .first_done
            .lock()
            .expect("rebuild lock")
            .get_or_insert(if v.resumed_at.is_some() { done } else { 0 });
        v.events_done = done;
        v.events_total = total.max(done);
        v.rate = (done - first).max(0) as f64 / secs;
        v.eta_seconds = (v.rate > 0.0).then(|| (total - done).max(0) as f64 / v.rate);
    }
}
