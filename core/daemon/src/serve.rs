//! `sinkd run`: the daemon. Builds a controller per pipeline, serves the API, joins the
//! cluster with `--cluster`, reloads on SIGHUP and `--watch`, and runs until SIGTERM /
//! Ctrl-C or until every pipeline has failed.

use std::process::ExitCode;
use std::sync::Arc;

use sinkd_core::config::LoadedFile;
use tracing::{error, info, warn};

use crate::control::roster::{Built, Roster};
use crate::{api, cluster, control, reload};

/// How `sinkd run` was asked to run.
pub struct RunOptions {
    /// Address of the HTTP API.
    pub listen: String,
    /// Who may call it.
    pub auth: api::auth::Auth,
    /// Stay up when every pipeline has failed.
    pub keep_failed: bool,
    /// Reload the files when they change.
    pub watch: bool,
    /// The files and folders of pipelines.
    pub config: Vec<std::path::PathBuf>,
    /// The cluster to join, if any.
    pub cluster: Option<ClusterOptions>,
}

/// `--cluster` and what goes with it.
pub struct ClusterOptions {
    /// The cluster id.
    pub id: String,
    /// The brokers of its topic.
    pub brokers: String,
    /// This daemon's id in the cluster (its static group membership).
    pub node: String,
}

/// Runs the daemon until it is told to stop; the exit code says how it ended.
pub async fn run(loaded: sinkd_core::config::Loaded, options: RunOptions) -> ExitCode {
    let metrics = match api::metrics::install() {
        Ok(handle) => Some(handle),
        Err(e) => {
            warn!(error = %e, "metrics recorder not installed; /metrics is unavailable");
            None
        }
    };
    let claimed: Vec<String> = loaded
        .captures
        .iter()
        .map(|c| c.capture.source.postgres_cdc.slot_name(&c.capture.name))
        .collect();
    let node = options.cluster.as_ref().map(|c| c.node.clone());
    let roster = Arc::new(Roster::new(node));
    let files = loaded
        .pipelines
        .into_iter()
        .map(LoadedFile::Pipeline)
        .chain(loaded.captures.into_iter().map(LoadedFile::Capture));
    for file in files {
        match Built::new(&file, &claimed, roster.node()) {
            Ok(built) => built.enlist(&roster),
            Err(e) => {
                error!(pipeline = %file.name(), file = %file.path().display(), error = %e, "cannot start the pipeline");
                return ExitCode::from(2);
            }
        }
    }
    if !options.auth.has_token() {
        warn!(
            "no API token (SINKD_API_TOKEN / SINKD_API_TOKEN_FILE): reads are open and nothing can be changed over the API"
        );
    }
    let (reloader, cluster) = match join_cluster(&options, &roster).await {
        Ok(joined) => joined,
        Err(e) => {
            error!(error = %e, "cannot join the cluster");
            return ExitCode::from(2);
        }
    };
    let listen = &options.listen;
    match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => {
            info!(%listen, "HTTP API listening");
            let app = api::router(
                api::Api {
                    roster: roster.clone(),
                    cluster,
                    metrics,
                },
                options.auth,
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    error!(error = %e, "HTTP API stopped");
                }
            });
        }
        Err(e) => {
            error!(%listen, error = %e, "cannot listen for the HTTP API (set --listen / SINKD_LISTEN)");
            return ExitCode::from(2);
        }
    }
    for c in roster.all() {
        tokio::spawn(c.begin());
    }
    spawn_reloads(&reloader, options.watch);
    // Runs until SIGTERM / Ctrl-C, or until every pipeline has failed (a daemon that can
    // do nothing exits, so its supervisor sees it) unless told to keep failed pipelines.
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let all = roster.all();
        let all_failed = !all.is_empty()
            && all
                .iter()
                .all(|c| matches!(c.state(), control::State::Failed(_)));
        if all_failed && !options.keep_failed {
            break;
        }
        let mut changes: Vec<_> = all.iter().map(|c| c.subscribe()).collect();
        changes.push(roster.subscribe());
        let changed =
            futures::future::select_all(changes.iter_mut().map(|r| Box::pin(r.changed())));
        tokio::select! {
            _ = &mut signal => {
                info!("shutdown requested; finishing in-flight batches");
                break;
            }
            _ = changed => {}
        }
    }
    let all = roster.all();
    futures::future::join_all(all.iter().map(|c| c.end())).await;
    let mut failed = false;
    for c in &all {
        match c.state() {
            control::State::Failed(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
            _ => info!(pipeline = %c.name(), "pipeline stopped"),
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The reloader of the files and, with `--cluster`, of the cluster's definitions.
async fn join_cluster(
    options: &RunOptions,
    roster: &Arc<Roster>,
) -> Result<(Arc<reload::Reloader>, Option<Arc<cluster::Cluster>>), String> {
    let Some(ClusterOptions { id, brokers, node }) = &options.cluster else {
        let reloader = reload::Reloader::new(options.config.clone(), roster.clone(), None);
        return Ok((Arc::new(reloader), None));
    };
    let log = sinkd_kafka::config_log::ConfigLog::open(brokers, &Default::default(), id).await?;
    let defs = log.follow()?;
    info!(cluster = %id, %node, topic = %log.topic(), "joined the cluster");
    let reloader = Arc::new(reload::Reloader::new(
        options.config.clone(),
        roster.clone(),
        Some(defs.clone()),
    ));
    tokio::spawn(reloader.clone().follow_cluster());
    let cluster = cluster::Cluster::new(id.clone(), log, defs, reloader.clone());
    Ok((reloader, Some(Arc::new(cluster))))
}

/// Reloads on SIGHUP, and on every change of the files with `--watch`.
fn spawn_reloads(reloader: &Arc<reload::Reloader>, watch: bool) {
    if watch {
        info!(every = ?reload::POLL, "watching the pipeline files");
        tokio::spawn(reloader.clone().watch());
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let reloader = reloader.clone();
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        info!("SIGHUP: reloading the pipeline files");
                        reloader.reload().await;
                    }
                });
            }
            Err(e) => warn!(error = %e, "no SIGHUP handler: reload with --watch only"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
