//! Pipeline files changed while the daemon runs: `sinkd run --watch` looks at the files
//! under `--config` every second, and SIGHUP asks for a reload at any time.
//!
//! A reload loads every file on its own and compares each pipeline with the one running:
//! a new pipeline starts, a changed one restarts (only itself: it writes what it holds,
//! and the new version reads on from the checkpoints in its sink), a removed one stops
//! (its target and checkpoints stay). A file that does not load is reported (log, and
//! `problems` in `GET /pipelines`) and whatever it held keeps running as it was. A paused
//! pipeline stays paused through a change. The comparison is of the values after `${VAR}`
//! interpolation and of the reader schema files named, so a rotated secret restarts the
//! pipeline, and a comment does not.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sinkd_connectors::connectors;
use sinkd_core::config::diff::{diff, impact};
use sinkd_core::config::{ConfigError, FileSet, LoadedFile, load_any_text, load_each};
use sinkd_kafka::config_log::Definitions;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::control::State;
use crate::control::roster::{Built, Roster, Supervised, same};

/// How often `--watch` looks at the files.
pub const POLL: Duration = Duration::from_secs(1);

/// What one reload did, by pipeline name.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    /// New pipelines, started.
    pub started: Vec<String>,
    /// Changed pipelines, restarted with their new version.
    pub restarted: Vec<String>,
    /// Pipelines whose file is gone (or no longer names them), stopped.
    pub stopped: Vec<String>,
    /// What could not be applied: files that do not load, controllers that cannot be
    /// built. Their pipelines keep running as they were.
    pub problems: Vec<String>,
}

/// Reloads the pipeline files under `paths`, and the cluster's definitions, into the
/// roster.
pub struct Reloader {
    paths: Vec<PathBuf>,
    roster: Arc<Roster>,
    /// The cluster's definitions as read from its topic, in a cluster.
    cluster: Option<watch::Receiver<Definitions>>,
    /// The cluster topic's offset that the last reload had read up to (a writer waits
    /// until its record is applied).
    applied: watch::Sender<i64>,
    /// One reload at a time (SIGHUP during a watched change).
    running: tokio::sync::Mutex<()>,
}

/// The path a pipeline defined in the cluster topic is known by (in messages, and to
/// tell it from a file's).
pub fn cluster_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{CLUSTER_PREFIX}{name}"))
}

/// What [`cluster_path`] begins with.
pub const CLUSTER_PREFIX: &str = "cluster:";

/// Whether `path` is a pipeline defined in the cluster topic rather than a file.
pub fn from_cluster(path: &Path) -> bool {
    path.to_string_lossy().starts_with(CLUSTER_PREFIX)
}

impl Reloader {
    /// A reloader of the files under `paths` and, in a cluster, of its definitions.
    pub fn new(
        paths: Vec<PathBuf>,
        roster: Arc<Roster>,
        cluster: Option<watch::Receiver<Definitions>>,
    ) -> Reloader {
        Reloader {
            paths,
            roster,
            cluster,
            applied: watch::channel(0).0,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Changes to the offset of the cluster topic that the last reload applied.
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Loads the files and the cluster's definitions again, and starts, restarts and
    /// stops pipelines to match them.
    pub async fn reload(&self) -> Outcome {
        let _one = self.running.lock().await;
        let paths = self.paths.clone();
        // One reading of the cluster's definitions for the whole reload: the offset it
        // reports applied below must be that of the definitions actually loaded.
        let defs = self.cluster.as_ref().map(|rx| rx.borrow().clone());
        let loaded = defs.clone();
        let loading = tokio::task::spawn_blocking(move || {
            let mut set = load_each(&paths, &connectors());
            if let Some(defs) = &loaded {
                add_definitions(&mut set, defs);
            }
            set
        });
        let set = match loading.await {
            Ok(set) => set,
            Err(e) => {
                error!(error = %e, "reload failed");
                return Outcome::default();
            }
        };
        let mut out = Outcome {
            problems: set.errors.iter().map(ToString::to_string).collect(),
            ..Outcome::default()
        };
        let claimed: Vec<String> = set
            .loaded
            .iter()
            .filter_map(|f| match f {
                LoadedFile::Capture(c) => {
                    Some(c.capture.source.postgres_cdc.slot_name(&c.capture.name))
                }
                LoadedFile::Pipeline(_) => None,
            })
            .collect();
        let wanted = |name: &str, capture: bool| {
            set.loaded
                .iter()
                .find(|f| f.name() == name && matches!(f, LoadedFile::Capture(_)) == capture)
        };
        // A pipeline whose file has a problem is left as it runs, whatever else changed.
        let sinks = self.roster.sink_entries();
        let captures = self.roster.capture_entries();
        let running = sinks
            .iter()
            .map(|(n, e)| {
                (
                    n,
                    &e.path,
                    false,
                    e.controller.clone() as Arc<dyn Supervised>,
                )
            })
            .chain(captures.iter().map(|(n, e)| {
                (
                    n,
                    &e.path,
                    true,
                    e.controller.clone() as Arc<dyn Supervised>,
                )
            }));
        let mut untouchable = Vec::new();
        let cluster_unread = defs.as_ref().is_some_and(|d| !d.caught_up);
        for (name, path, capture, controller) in running {
            if set.failed(path) || (cluster_unread && from_cluster(path)) {
                untouchable.push(name.clone());
            } else if wanted(name, capture).is_none() {
                controller.end().await;
                self.roster.remove(name);
                info!(pipeline = %name, file = %path.display(), "pipeline removed from the files: stopped (its target and checkpoints stay)");
                out.stopped.push(name.clone());
            }
        }
        for file in &set.loaded {
            let name = file.name();
            if untouchable.iter().any(|n| n == name) {
                continue;
            }
            let current = match file {
                LoadedFile::Pipeline(_) => sinks.get(name).map(|e| {
                    (
                        same(e, file, self.roster.node()),
                        e.values.clone(),
                        e.controller.clone() as Arc<dyn Supervised>,
                    )
                }),
                LoadedFile::Capture(_) => captures.get(name).map(|e| {
                    (
                        same(e, file, self.roster.node()),
                        e.values.clone(),
                        e.controller.clone() as Arc<dyn Supervised>,
                    )
                }),
            };
            if matches!(current, Some((true, _, _))) {
                continue;
            }
            let built = match Built::new(file, &claimed, self.roster.node()) {
                Ok(b) => b,
                Err(e) => {
                    let problem = format!(
                        "{}: pipeline `{name}` cannot start: {}",
                        file.path().display(),
                        sinkd_core::config::redact_text(&e)
                    );
                    out.problems.push(problem);
                    continue;
                }
            };
            let controller = built.controller();
            if defs.as_ref().is_some_and(|d| d.paused.contains(name)) {
                controller.hold_paused();
            }
            match current {
                Some((_, old_values, old)) => {
                    let paused = old.state() == State::Paused;
                    old.end().await;
                    if paused {
                        controller.hold_paused();
                    }
                    report_change(name, &old_values, file.values());
                    out.restarted.push(name.to_owned());
                }
                None => {
                    info!(pipeline = %name, file = %file.path().display(), "new pipeline: starting");
                    out.started.push(name.to_owned());
                }
            }
            built.enlist(&self.roster);
            tokio::spawn(controller.begin());
        }
        if let Some(d) = defs.as_ref().filter(|d| d.caught_up) {
            self.follow_pauses(d, &mut out).await;
        }
        for problem in &out.problems {
            error!(%problem, "pipeline file not applied; what it held keeps running as it was");
        }
        self.roster.set_problems(out.problems.clone());
        if let Some(d) = defs.filter(|d| d.caught_up) {
            self.applied.send_replace(d.next);
        }
        out
    }

    /// Pauses here what the cluster has paused, and resumes what it no longer has (in a
    /// cluster, pause and resume are the cluster's: a paused pipeline here that the
    /// cluster does not pause is resumed). A failed pipeline is left as it is.
    async fn follow_pauses(&self, defs: &Definitions, out: &mut Outcome) {
        for c in self.roster.all() {
            let paused = defs.paused.contains(c.name());
            let result = match (paused, c.state()) {
                (true, State::Starting | State::Running) => c.clone().pause_here().await,
                (false, State::Paused) => c.clone().resume_here().await,
                _ => continue,
            };
            if let Err(e) = result {
                out.problems
                    .push(format!("pipeline `{}`: the cluster's pause: {e}", c.name()));
            }
        }
    }

    /// Reloads whenever a file under the paths changes (content, added, removed), until
    /// the daemon stops. Polling rather than file events: it sees a Kubernetes ConfigMap's
    /// symlink swap and network file systems alike, and a few small files a second cost
    /// nothing.
    pub async fn watch(self: Arc<Self>) {
        let mut last = self.snapshot().await;
        loop {
            tokio::time::sleep(POLL).await;
            let now = self.snapshot().await;
            if now != last {
                last = now;
                info!("pipeline files changed; reloading");
                self.reload().await;
            }
        }
    }

    /// Reloads whenever the cluster's definitions change, until the daemon stops.
    pub async fn follow_cluster(self: Arc<Self>) {
        let Some(mut defs) = self.cluster.clone() else {
            return;
        };
        loop {
            if defs.borrow_and_update().caught_up {
                self.reload().await;
            }
            if defs.changed().await.is_err() {
                return;
            }
        }
    }

    async fn snapshot(&self) -> u64 {
        let paths = self.paths.clone();
        tokio::task::spawn_blocking(move || {
            let mut h = DefaultHasher::new();
            for path in &paths {
                hash_tree(path, 0, &mut h);
            }
            h.finish()
        })
        .await
        .unwrap_or_default()
    }
}

/// Extensions of the files `--watch` looks at under a folder.
const WATCHED: &[&str] = &["yaml", "yml", "avsc", "json"];

/// Hashes the names and contents of the [`WATCHED`] files under `path` (reader schema
/// files live beside or below the pipeline files), or of `path` itself when it is a file;
/// hidden entries are skipped (a ConfigMap's `..data` links point at the same files).
fn hash_tree(path: &Path, depth: usize, h: &mut DefaultHasher) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_file() {
        // Pipeline files and the schema files they name; not logs or anything else
        // that may live beside them and change all the time.
        let watched = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| WATCHED.contains(&e));
        if depth == 0 || watched {
            path.hash(h);
            std::fs::read(path).ok().hash(h);
        }
        return;
    }
    if depth > 3 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        hash_tree(&child, depth + 1, h);
    }
}

/// Logs what changed in a restarted pipeline, and warns when the rows already written
/// no longer follow it.
fn report_change(name: &str, old: &serde_json::Value, new: &serde_json::Value) {
    let changes: Vec<String> = diff(old, new).iter().map(ToString::to_string).collect();
    info!(pipeline = %name, changes = %changes.join("; "), "pipeline changed: restarting it alone, from the checkpoints in its sink");
    let impact = impact(old, new);
    if impact.needs_rebuild() {
        warn!(pipeline = %name, fields = %impact.rebuild_for.join(", "),
              "these changes decide what the read model holds: rows written before follow the old version until the pipeline is rebuilt (sinkd rebuild {name})");
    }
    if !impact.new_target_for.is_empty() {
        warn!(pipeline = %name, fields = %impact.new_target_for.join(", "),
              "the pipeline now writes another target, which has no checkpoints yet and fills from `source.kafka.start` (the log's start by default); the old one stays as it is");
    }
}

/// Adds the cluster's definitions to what the files hold. A name that a file defines too is
/// a problem of the definition: the file's version runs.
fn add_definitions(set: &mut FileSet, defs: &Definitions) {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let connectors = connectors();
    for (name, text) in &defs.files {
        let path = cluster_path(name);
        let problem = |message: String| ConfigError {
            file: path.clone(),
            line: None,
            field: None,
            message,
        };
        if let Some(file) = set.loaded.iter().find(|f| f.name() == name) {
            set.errors.push(problem(format!(
                "pipeline `{name}` is defined both by the file {} and in the cluster (PUT \
                 /pipelines/{name}); the version already running stays, no other starts: \
                 delete one of them",
                file.path().display()
            )));
            continue;
        }
        match load_any_text(&path, text, &env, &connectors) {
            Ok(file) if file.name() == name => set.loaded.push(file),
            Ok(file) => set.errors.push(problem(format!(
                "the definition stored as `{name}` is pipeline `{}`",
                file.name()
            ))),
            Err(mut errors) => set.errors.append(&mut errors),
        }
    }
}
