//! The sinkd daemon and CLI.
//!
//! - `sinkd run --config PATH…`: runs every pipeline found in the files or folders.
//! - `sinkd validate FILE…`: checks pipeline files without connecting to anything.
//! - `sinkd preview --config FILE INPUT` (or its old name `upcast`): a pipeline's upcasters and projection over sample
//!   events, offline.
//! - `sinkd status|pause|resume|rebuild`: clients of a running daemon's REST API.
//!
//! - [`control`]: one controller per pipeline (its task, pause, offsets, rebuild).
//! - [`api`]: the REST API over the controllers.

mod api;
mod client;
mod control;
mod preview;
mod wiring;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use sinkd_connectors::connectors;
use sinkd_core::config::{ConfigError, load_paths};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "sinkd",
    version,
    about = "Kafka event topics into read models, exactly once"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SINKD_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where the client commands find the daemon. The token comes from SINKD_API_TOKEN or
/// SINKD_API_TOKEN_FILE, as for the daemon.
#[derive(clap::Args)]
struct ApiArgs {
    /// The daemon's API (default: from SINKD_LISTEN, else http://127.0.0.1:8080).
    #[arg(long = "api", env = "SINKD_API_URL")]
    url: Option<String>,
}

impl ApiArgs {
    fn client(&self) -> Result<client::Client, String> {
        let url = self.url.clone().unwrap_or_else(|| {
            client::url_of_listen(
                &std::env::var("SINKD_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into()),
            )
        });
        client::Client::new(&url)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines of the given files or folders until SIGTERM / Ctrl-C.
    Run {
        /// A pipeline file or a folder of `*.yaml` files; repeatable.
        #[arg(long = "config", short = 'c', required = true, env = "SINKD_CONFIG")]
        config: Vec<PathBuf>,
        /// Address of the HTTP API.
        #[arg(long, env = "SINKD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Serve reads (status, metrics, search, wait) without the token. The token itself
        /// comes from SINKD_API_TOKEN or the file named by SINKD_API_TOKEN_FILE; without
        /// one, nothing can be changed over the API.
        #[arg(long, env = "SINKD_API_OPEN_READS")]
        open_reads: bool,
        /// Stay up when every pipeline has failed, so the API shows why and can resume or
        /// rebuild them (by default the daemon then exits 1, for its supervisor to see).
        #[arg(long, env = "SINKD_KEEP_FAILED")]
        keep_failed: bool,
    },
    /// Show the pipelines of a running daemon: state, counts, lag (per partition with NAME).
    Status {
        /// One pipeline.
        name: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Pause a pipeline: write what it holds and stop consuming.
    Pause {
        /// The pipeline.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Resume a paused or failed pipeline from the offsets stored in its sink.
    Resume {
        /// The pipeline.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Rebuild a pipeline's read model from the log (a shadow swapped in when caught up).
    Rebuild {
        /// The pipeline.
        name: String,
        /// Empty the live target and replay into it instead (the read model is partial
        /// meanwhile).
        #[arg(long)]
        in_place: bool,
        /// Start at this time (RFC 3339 or ms since the epoch) instead of the earliest
        /// offsets.
        #[arg(long)]
        from: Option<String>,
        /// Show a progress bar until the rebuild ends; exit 1 if it fails. Follows the
        /// rebuild under way if there is one.
        #[arg(long)]
        follow: bool,
        /// Cancel the rebuild under way and drop its shadow.
        #[arg(long, conflicts_with_all = ["in_place", "from"])]
        cancel: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Check pipeline files (syntax, unknown keys, variables, consistency) without I/O.
    Validate {
        /// Pipeline files or folders.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Exit 0 if the daemon's `/healthz` answers: the container HEALTHCHECK, without curl.
    Healthcheck {
        /// The daemon's HTTP address (`0.0.0.0` is asked on 127.0.0.1).
        #[arg(long, env = "SINKD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Show what a pipeline does to sample events, offline: the upcast event and the
    /// operation on the target, one JSON document per input line. Touches no broker and
    /// no sink. (`sinkd upcast` is the old name.)
    #[command(alias = "upcast")]
    Preview {
        /// The pipeline file.
        #[arg(long = "config", short = 'c')]
        config: PathBuf,
        /// Events, one per line; `-` reads standard input.
        input: PathBuf,
        /// `json`: {"type","version","key","value"} per line; `confluent`: base64 of the
        /// Confluent-framed value, optionally `key<TAB>` first (needs the registry).
        #[arg(long, value_enum, default_value = "json")]
        format: preview::InputFormat,
        /// Writer schemas for JSON input, as DIR/<type>/v<version>.avsc. Without it they
        /// come from the pipeline's registry.
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// Topic used for subject names (default: the pipeline's first topic).
        #[arg(long)]
        topic: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Validate { files } => match load_paths(&files, &connectors()) {
            Ok(loaded) => {
                for (path, name) in loaded.names() {
                    println!("ok: {} (pipeline `{name}`)", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(errors) => report(&errors),
        },
        Command::Healthcheck { listen } => healthcheck(&listen),
        Command::Preview {
            config,
            input,
            format,
            schemas,
            topic,
        } => {
            let pipeline = match load_paths(std::slice::from_ref(&config), &connectors()) {
                Ok(mut p) if p.pipelines.len() == 1 => p.pipelines.remove(0),
                Ok(_) => {
                    eprintln!("error: {}: give one pipeline file", config.display());
                    return ExitCode::from(2);
                }
                Err(errors) => return report(&errors),
            };
            let args = preview::Args {
                pipeline,
                input,
                format,
                schemas,
                topic,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let mut out = std::io::stdout().lock();
            match runtime.block_on(preview::run(args, &mut out)) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(n) => {
                    eprintln!("error: {n} event(s) failed; see the \"error\" lines");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run {
            config,
            listen,
            open_reads,
            keep_failed,
        } => {
            let pipelines = match load_paths(&config, &connectors()) {
                Ok(p) => p,
                Err(errors) => return report(&errors),
            };
            let token = match client::token_from_env() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let auth = api::auth::Auth::new(token, open_reads);
            runtime.block_on(run(pipelines, listen, auth, keep_failed))
        }
        Command::Status { name, json, api } => {
            client_command(
                &api,
                |c| async move { c.status(name.as_deref(), json).await },
            )
        }
        Command::Pause { name, api } => {
            client_command(
                &api,
                |c| async move { c.pause_resume(&name, "pause").await },
            )
        }
        Command::Resume { name, api } => {
            client_command(
                &api,
                |c| async move { c.pause_resume(&name, "resume").await },
            )
        }
        Command::Rebuild {
            name,
            in_place,
            from,
            follow,
            cancel,
            api,
        } => client_command(&api, |c| async move {
            c.rebuild(&name, in_place, from.as_deref(), follow, cancel)
                .await
        }),
    }
}

/// Runs one client command; errors go to stderr with exit code 1.
fn client_command<F, Fut>(api: &ApiArgs, f: F) -> ExitCode
where
    F: FnOnce(client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = api.client().map(|c| runtime.block_on(f(c)));
    match result.and_then(|r| r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET http://<listen>/healthz` with a 2-second timeout.
fn healthcheck(listen: &str) -> ExitCode {
    let url = format!("{}/healthz", client::url_of_listen(listen));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let answer = runtime.block_on(async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()?
            .get(&url)
            .send()
            .await?
            .error_for_status()
    });
    match answer {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    ExitCode::from(2)
}

async fn run(
    loaded: sinkd_core::config::Loaded,
    listen: String,
    auth: api::auth::Auth,
    keep_failed: bool,
) -> ExitCode {
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
    let captures: BTreeMap<String, Arc<control::capture::CaptureController>> = loaded
        .captures
        .into_iter()
        .map(|c| {
            let name = c.capture.name.clone();
            (
                name,
                control::capture::CaptureController::new(c.capture, c.path, claimed.clone()),
            )
        })
        .collect();
    let captures = Arc::new(captures);
    let mut controllers = BTreeMap::new();
    for loaded in loaded.pipelines {
        let name = loaded.pipeline.name.clone();
        let file = loaded.path.clone();
        match control::Controller::new(loaded.pipeline, loaded.path) {
            Ok(c) => {
                controllers.insert(name, c);
            }
            Err(e) => {
                error!(pipeline = %name, file = %file.display(), error = %e, "cannot start the pipeline");
                return ExitCode::from(2);
            }
        }
    }
    if !auth.has_token() {
        warn!(
            "no API token (SINKD_API_TOKEN / SINKD_API_TOKEN_FILE): reads are open and nothing can be changed over the API"
        );
    }
    let controllers = Arc::new(controllers);
    match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => {
            info!(%listen, "HTTP API listening");
            let app = api::router(
                api::Api {
                    pipelines: controllers.clone(),
                    captures: captures.clone(),
                    metrics,
                },
                auth,
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
    for c in controllers.values() {
        let c = c.clone();
        tokio::spawn(async move { c.start().await });
    }
    for c in captures.values() {
        let c = c.clone();
        tokio::spawn(async move { c.start().await });
    }
    // Runs until SIGTERM / Ctrl-C, or until every pipeline has failed (a daemon that can
    // do nothing exits, so its supervisor sees it) unless told to keep failed pipelines.
    let mut changes: Vec<_> = controllers
        .values()
        .map(|c| c.subscribe())
        .chain(captures.values().map(|c| c.subscribe()))
        .collect();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let all_failed = controllers
            .values()
            .map(|c| c.state())
            .chain(captures.values().map(|c| c.state()))
            .all(|s| matches!(s, control::State::Failed(_)));
        if all_failed && !keep_failed {
            break;
        }
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
    futures::future::join_all(controllers.values().map(|c| c.shutdown())).await;
    futures::future::join_all(captures.values().map(|c| c.shutdown())).await;
    let mut failed = false;
    let ends = controllers
        .values()
        .map(|c| (&c.name, c.state()))
        .chain(captures.values().map(|c| (&c.name, c.state())));
    for (name, state) in ends {
        match state {
            control::State::Failed(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
            _ => info!(pipeline = %name, "pipeline stopped"),
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // pg_walstream logs every status update at info, and warns of a slot that
        // exists, which sinkd creates itself beforehand; its real failures reach sinkd.
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn,pg_walstream=error")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
