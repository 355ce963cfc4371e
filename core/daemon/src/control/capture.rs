//! The controller of a capture pipeline (`source: postgres_cdc`): supervises its task,
//! restarts it after errors that may pass (a server down, a slot busy with another
//! instance), and reports its slot.
//!
//! A capture's only checkpoint is the slot's confirmed position, which the server keeps;
//! so a restart, a pause or a crash all resume from the same place, and there is no
//! offset to move or target to rebuild here.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sinkd_core::backoff::Backoff;
use sinkd_core::config::CaptureFile;
use sinkd_core::config::redact_text;
use sinkd_postgres_cdc::{CaptureStats, SlotProbe};
use tokio::sync::watch;
use tracing::{error, warn};

use super::State;
use super::task::{Lifecycle, Task};

/// One capture pipeline under control.
pub struct CaptureController {
    /// Pipeline name.
    pub name: String,
    file: CaptureFile,
    path: PathBuf,
    /// Counters and positions, kept across task restarts.
    pub stats: Arc<CaptureStats>,
    /// The slot's name.
    pub slot: String,
    probe: SlotProbe,
    /// Every slot the loaded pipelines use, to tell which `sinkd_…` slots are unclaimed.
    claimed: Vec<String>,
    unclaimed: Mutex<Vec<Value>>,
    /// The task and the state.
    life: Lifecycle,
    /// The last error of a task that is being restarted.
    retrying: Mutex<Option<String>>,
}

impl CaptureController {
    /// A controller for a validated capture file; `claimed` names every slot of the
    /// loaded pipelines. Nothing runs until [`CaptureController::start`].
    pub fn new(file: CaptureFile, path: PathBuf, claimed: Vec<String>) -> Arc<Self> {
        let slot = file.source.postgres_cdc.slot_name(&file.name);
        Arc::new(CaptureController {
            name: file.name.clone(),
            probe: SlotProbe::new(&file.source.postgres_cdc.url, &slot),
            slot,
            file,
            path,
            stats: Arc::new(CaptureStats::default()),
            claimed,
            unclaimed: Mutex::new(Vec::new()),
            life: Lifecycle::default(),
            retrying: Mutex::new(None),
        })
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.life.state()
    }

    /// Changes whenever the state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.life.subscribe()
    }

    /// The state's name as the API shows it.
    pub fn state_name(&self) -> &'static str {
        match self.state() {
            State::Failed(_) => "failed",
            State::Paused => "paused",
            State::Starting => "starting",
            State::Running if !self.stats.connected.load(Relaxed) => "starting",
            State::Running => "running",
        }
    }

    /// Reports slots left behind on this server, then starts the task.
    pub async fn start(self: &Arc<Self>) {
        match self.probe.unclaimed(&self.claimed).await {
            Ok(found) => *self.unclaimed.lock().expect("lock") = found,
            Err(e) => {
                warn!(pipeline = %self.name, error = %redact_text(&e), "cannot list replication slots")
            }
        }
        let mut live = self.life.task.lock().await;
        if live.is_none() && self.state() == State::Starting {
            self.start_task(&mut live);
        }
    }

    fn start_task(self: &Arc<Self>, live: &mut Option<Task>) {
        *self.retrying.lock().expect("lock") = None;
        let me = self.clone();
        self.life.start(live, |mut stop| async move {
            let base = me.path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let mut backoff =
                Backoff::between(Duration::from_millis(500), Duration::from_secs(30));
            loop {
                let result =
                    sinkd_postgres_cdc::run(&me.file, &base, me.stats.clone(), stop.clone()).await;
                match result {
                    Ok(()) => break,
                    Err(_) if *stop.borrow() => break,
                    Err(e) if e.retriable => {
                        let wait = backoff.wait();
                        warn!(pipeline = %me.name, error = %e, retry_in = ?wait, "capture interrupted; starting again from the slot's confirmed position");
                        *me.retrying.lock().expect("lock") = Some(e.message);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.changed() => break,
                        }
                    }
                    Err(e) => {
                        error!(pipeline = %me.name, error = %e, "capture failed");
                        me.life.set_state(State::Failed(e.message));
                        break;
                    }
                }
            }
        });
    }

    /// Stops reading the slot (what was sent is confirmed first) and stays stopped. The
    /// slot keeps the position; WAL accumulates on the server while paused.
    pub async fn pause(&self) {
        self.life.pause(&self.name).await;
    }

    /// Starts a paused or failed capture from the slot's confirmed position.
    pub async fn resume(self: &Arc<Self>) {
        let start = |live: &mut Option<Task>| self.start_task(live);
        self.life.resume(&self.name, start).await;
    }

    /// Leaves the task stopped when the controller starts: a paused capture that a reload
    /// replaces stays paused.
    pub fn hold(&self) {
        self.life.set_state(State::Paused);
    }

    /// Stops at daemon shutdown.
    pub async fn shutdown(&self) {
        self.life.close().await;
    }

    /// The slot's position and lag as the server reports them, with this process's view.
    pub async fn slot_view(&self) -> (Value, Option<String>) {
        let s = &self.stats;
        let now = chrono::Utc::now().timestamp_millis();
        let (server, problem) = match self.probe.status().await {
            Ok(Some(st)) => (Some(st), None),
            Ok(None) => (
                None,
                Some(format!("slot `{}` does not exist yet", self.slot)),
            ),
            Err(e) => (None, Some(redact_text(&e))),
        };
        let confirmed_commit = match s.confirmed_commit_ms.load(Relaxed) {
            0 => None,
            ms => chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()),
        };
        let view = json!({
            "slot": self.slot,
            "publication": self.file.source.postgres_cdc.publication_name(&self.name),
            "confirmed_lsn": server.as_ref().and_then(|x| x.confirmed_lsn.clone()),
            "lag_bytes": server.as_ref().and_then(|x| x.lag_bytes),
            "lag_seconds": s.lag_seconds(now),
            "active": server.as_ref().map(|x| x.active),
            "last_confirmed_commit": confirmed_commit,
        });
        (view, problem)
    }

    /// The full status, in the shape of a sink pipeline's where they share fields.
    pub async fn status(&self) -> Value {
        let s = &self.stats;
        let (slot, problem) = self.slot_view().await;
        let pg = &self.file.source.postgres_cdc;
        let error = match self.state() {
            State::Failed(e) => Some(redact_text(&e)),
            _ => self.retrying.lock().expect("lock").clone(),
        };
        json!({
            "name": self.name,
            "state": self.state_name(),
            "error": error,
            "source": "postgres_cdc",
            "sink": "kafka",
            "target": format!("{} ({})", pg.outbox.topic, pg.tables.join(", ")),
            "counts": {
                "rows": s.rows.load(Relaxed),
                "applied": s.acknowledged.load(Relaxed),
                "dead_lettered": s.dead_lettered.load(Relaxed),
                "ignored": s.ignored.load(Relaxed),
                "transactions": s.transactions.load(Relaxed),
            },
            "slot": slot,
            "unclaimed_slots": *self.unclaimed.lock().expect("lock"),
            "partitions": [],
            "problems": problem.into_iter().collect::<Vec<_>>(),
        })
    }
}
