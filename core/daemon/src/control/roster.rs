//! The pipelines this daemon runs, which a reload changes while the daemon runs: each
//! controller with the file and values it was built from, the problems of the last
//! reload, and a signal when the set changes (the daemon's main loop and the API read it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::watch;

use super::State;
use super::capture::CaptureController;
use super::{Controller, ticket};
use sinkd_core::config::{LoadedFile, PipelineFile, SourceMode};

/// What the daemon does with a controller of either kind.
#[async_trait]
pub trait Supervised: Send + Sync + 'static {
    /// Pipeline name.
    fn name(&self) -> &str;
    /// The current state.
    fn state(&self) -> State;
    /// Changes whenever the state does.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// Prepares the sink and starts the task (or only prepares, when held paused).
    async fn begin(self: Arc<Self>);
    /// Makes [`Supervised::begin`] leave the task stopped: a paused pipeline that a reload
    /// replaces stays paused.
    fn hold_paused(&self);
    /// Writes what the task holds and stops it for good.
    async fn end(&self);
    /// Pauses the pipeline here (what a cluster's pause does on each daemon).
    async fn pause_here(&self) -> Result<(), String>;
    /// Resumes a paused pipeline here.
    async fn resume_here(self: Arc<Self>) -> Result<(), String>;
}

/// One running pipeline and what it was built from.
pub struct Entry<T> {
    /// Its controller.
    pub controller: Arc<T>,
    /// The file it came from.
    pub path: PathBuf,
    /// The file's values after interpolation (what a reload compares).
    pub values: Value,
    /// The fingerprint of the loaded pipeline, which also covers the reader schema files
    /// it names.
    pub fingerprint: String,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            controller: self.controller.clone(),
            path: self.path.clone(),
            values: self.values.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// Every pipeline of the daemon, by kind and name.
#[derive(Default)]
pub struct Roster {
    sinks: RwLock<BTreeMap<String, Entry<Controller>>>,
    captures: RwLock<BTreeMap<String, Entry<CaptureController>>>,
    /// What the last reload could not apply (files that do not load), as messages.
    problems: Mutex<Vec<String>>,
    /// This daemon's id in a cluster.
    node: Option<String>,
    changes: watch::Sender<u64>,
}

impl Roster {
    /// An empty roster of a daemon with id `node` in a cluster (`None`: standalone).
    pub fn new(node: Option<String>) -> Roster {
        Roster {
            node,
            ..Roster::default()
        }
    }

    /// This daemon's id in a cluster.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// A sink pipeline.
    pub fn sink(&self, name: &str) -> Option<Arc<Controller>> {
        let sinks = self.sinks.read().expect("roster lock");
        sinks.get(name).map(|e| e.controller.clone())
    }

    /// A capture pipeline.
    pub fn capture(&self, name: &str) -> Option<Arc<CaptureController>> {
        let captures = self.captures.read().expect("roster lock");
        captures.get(name).map(|e| e.controller.clone())
    }

    /// Every sink pipeline, by name.
    pub fn sinks(&self) -> Vec<Arc<Controller>> {
        let sinks = self.sinks.read().expect("roster lock");
        sinks.values().map(|e| e.controller.clone()).collect()
    }

    /// Every capture pipeline, by name.
    pub fn captures(&self) -> Vec<Arc<CaptureController>> {
        let captures = self.captures.read().expect("roster lock");
        captures.values().map(|e| e.controller.clone()).collect()
    }

    /// The entries of sink pipelines (for a reload to compare).
    pub fn sink_entries(&self) -> BTreeMap<String, Entry<Controller>> {
        self.sinks.read().expect("roster lock").clone()
    }

    /// The entries of capture pipelines.
    pub fn capture_entries(&self) -> BTreeMap<String, Entry<CaptureController>> {
        self.captures.read().expect("roster lock").clone()
    }

    /// The file (or cluster definition) pipeline `name` runs from, and its values.
    pub fn origin(&self, name: &str) -> Option<(PathBuf, Value)> {
        let of = |path: &PathBuf, values: &Value| (path.clone(), values.clone());
        let sinks = self.sinks.read().expect("roster lock");
        if let Some(e) = sinks.get(name) {
            return Some(of(&e.path, &e.values));
        }
        let captures = self.captures.read().expect("roster lock");
        captures.get(name).map(|e| of(&e.path, &e.values))
    }

    /// Every controller of either kind.
    pub fn all(&self) -> Vec<Arc<dyn Supervised>> {
        let sinks = self.sinks().into_iter().map(|c| c as Arc<dyn Supervised>);
        let captures = self
            .captures()
            .into_iter()
            .map(|c| c as Arc<dyn Supervised>);
        sinks.chain(captures).collect()
    }

    /// Adds or replaces a sink pipeline.
    pub fn put_sink(&self, entry: Entry<Controller>) {
        let name = entry.controller.name.clone();
        self.sinks.write().expect("roster lock").insert(name, entry);
        self.changed();
    }

    /// Adds or replaces a capture pipeline.
    pub fn put_capture(&self, entry: Entry<CaptureController>) {
        let name = entry.controller.name.clone();
        self.captures
            .write()
            .expect("roster lock")
            .insert(name, entry);
        self.changed();
    }

    /// Removes a pipeline of either kind from the set (its controller is not stopped here).
    pub fn remove(&self, name: &str) {
        self.sinks.write().expect("roster lock").remove(name);
        self.captures.write().expect("roster lock").remove(name);
        self.changed();
    }

    /// What the last reload could not apply.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().expect("roster lock").clone()
    }

    /// Records what the last reload could not apply.
    pub fn set_problems(&self, problems: Vec<String>) {
        *self.problems.lock().expect("roster lock") = problems;
        self.changed();
    }

    /// Changes whenever a pipeline is added, replaced or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A new entry for a loaded file: the controller is built (no I/O happens yet) but not
/// started. `claimed` names every capture slot in use, for a capture's report of others.
pub enum Built {
    /// A sink pipeline.
    Sink(Entry<Controller>),
    /// A capture pipeline.
    Capture(Entry<CaptureController>),
}

impl Built {
    /// Builds the controller of `file`; `node` is this daemon's id in a cluster.
    pub fn new(file: &LoadedFile, claimed: &[String], node: Option<&str>) -> Result<Built, String> {
        let values = file.values().clone();
        let path = file.path().to_path_buf();
        Ok(match file {
            LoadedFile::Pipeline(p) => {
                let pipeline = effective(&p.pipeline, node);
                let fingerprint = ticket::fingerprint(&pipeline, &p.path);
                Built::Sink(Entry {
                    controller: Controller::new(pipeline, path.clone())?,
                    path,
                    values,
                    fingerprint,
                })
            }
            LoadedFile::Capture(c) => Built::Capture(Entry {
                controller: CaptureController::new(
                    c.capture.clone(),
                    path.clone(),
                    claimed.to_vec(),
                ),
                path,
                values,
                fingerprint: String::new(),
            }),
        })
    }

    /// The controller.
    pub fn controller(&self) -> Arc<dyn Supervised> {
        match self {
            Built::Sink(e) => e.controller.clone(),
            Built::Capture(e) => e.controller.clone(),
        }
    }

    /// Puts it in the roster.
    pub fn enlist(self, roster: &Roster) {
        match self {
            Built::Sink(e) => roster.put_sink(e),
            Built::Capture(e) => roster.put_capture(e),
        }
    }
}

/// The pipeline as this daemon runs it. In a cluster every daemon restarts a changed
/// pipeline at once, and a shared pipeline's consumer joins as a static member of its
/// group (`group.instance.id` = the daemon's id) unless the file sets one: a restarted
/// member rejoins as itself, without a rebalance where the broker allows, and a broker
/// that is slow to act on LeaveGroup (Tansu held two such rejoins 180 s without
/// assignments) is not asked to.
pub fn effective(pipeline: &PipelineFile, node: Option<&str>) -> PipelineFile {
    let mut pipeline = pipeline.clone();
    let kafka = &mut pipeline.source.kafka;
    let mode = kafka.mode.unwrap_or(pipeline.sink.default_mode());
    if let Some(node) = node
        && mode == SourceMode::Shared
    {
        kafka
            .properties
            .entry("group.instance.id".into())
            .or_insert_with(|| node.to_owned());
    }
    pipeline
}

/// Whether `entry` was built from exactly what `file` holds now (`node` as for
/// [`Built::new`]).
pub fn same<T>(entry: &Entry<T>, file: &LoadedFile, node: Option<&str>) -> bool {
    let fingerprint = match file {
        LoadedFile::Pipeline(p) => ticket::fingerprint(&effective(&p.pipeline, node), &p.path),
        LoadedFile::Capture(_) => String::new(),
    };
    entry.path == file.path() && entry.values == *file.values() && entry.fingerprint == fingerprint
}

#[async_trait]
impl Supervised for Controller {
    fn name(&self) -> &str {
        &self.name
    }
    fn state(&self) -> State {
        Controller::state(self)
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        Controller::subscribe(self)
    }
    async fn begin(self: Arc<Self>) {
        self.start().await
    }
    fn hold_paused(&self) {
        self.life.set_state(State::Paused)
    }
    async fn end(&self) {
        self.shutdown().await
    }
    async fn pause_here(&self) -> Result<(), String> {
        self.pause().await.map_err(|e| e.to_string())
    }
    async fn resume_here(self: Arc<Self>) -> Result<(), String> {
        self.resume().await.map_err(|e| e.to_string())
    }
}

#[async_trait]
impl Supervised for CaptureController {
    fn name(&self) -> &str {
        &self.name
    }
    fn state(&self) -> State {
        CaptureController::state(self)
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        CaptureController::subscribe(self)
    }
    async fn begin(self: Arc<Self>) {
        self.start().await
    }
    fn hold_paused(&self) {
        self.hold()
    }
    async fn end(&self) {
        self.shutdown().await
    }
    async fn pause_here(&self) -> Result<(), String> {
        self.pause().await;
        Ok(())
    }
    async fn resume_here(self: Arc<Self>) -> Result<(), String> {
        self.resume().await;
        Ok(())
    }
}
