//! The sinkd daemon and CLI.
//!
//! - `sinkd run --config PATH…`: runs every pipeline found in the files or folders.
//! - `sinkd validate FILE…`: checks pipeline files without connecting to anything.
//! - `sinkd upcast --config FILE INPUT`: a pipeline's upcasters and projection over sample
//!   events, offline.

mod http;
mod upcast_cmd;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use sinkd_core::config::{ConfigError, load_paths};
use tokio::sync::watch;
use tracing::{error, info};

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
        /// Address of the HTTP API (health, search).
        #[arg(long, env = "SINKD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
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
    /// operation, one JSON document per input line. Touches no broker and no sink.
    Upcast {
        /// The pipeline file.
        #[arg(long = "config", short = 'c')]
        config: PathBuf,
        /// Events, one per line; `-` reads standard input.
        input: PathBuf,
        /// `json`: {"type","version","key","value"} per line; `confluent`: base64 of the
        /// Confluent-framed value, optionally `key<TAB>` first (needs the registry).
        #[arg(long, value_enum, default_value = "json")]
        format: upcast_cmd::InputFormat,
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
        Command::Validate { files } => match load_paths(&files) {
            Ok(pipelines) => {
                for p in pipelines {
                    println!("ok: {} (pipeline `{}`)", p.path.display(), p.pipeline.name);
                }
                ExitCode::SUCCESS
            }
            Err(errors) => report(&errors),
        },
        Command::Healthcheck { listen } => healthcheck(&listen),
        Command::Upcast {
            config,
            input,
            format,
            schemas,
            topic,
        } => {
            let pipeline = match load_paths(std::slice::from_ref(&config)) {
                Ok(mut p) if p.len() == 1 => p.remove(0),
                Ok(_) => {
                    eprintln!("error: {}: give one pipeline file", config.display());
                    return ExitCode::from(2);
                }
                Err(errors) => return report(&errors),
            };
            let args = upcast_cmd::Args {
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
            match runtime.block_on(upcast_cmd::run(args, &mut out)) {
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
        Command::Run { config, listen } => {
            let pipelines = match load_paths(&config) {
                Ok(p) => p,
                Err(errors) => return report(&errors),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(run(pipelines, listen))
        }
    }
}

/// `GET http://<listen>/healthz` with a 2-second timeout.
fn healthcheck(listen: &str) -> ExitCode {
    let address = listen.replacen("0.0.0.0", "127.0.0.1", 1);
    let url = format!("http://{address}/healthz");
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

async fn run(pipelines: Vec<sinkd_core::config::LoadedPipeline>, listen: String) -> ExitCode {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut searches = std::collections::HashMap::new();
    let mut running = std::collections::HashMap::new();
    for loaded in pipelines {
        let name = loaded.pipeline.name.clone();
        match wiring::build(&loaded.pipeline, &loaded.path) {
            Ok(built) => {
                if let Some(search) = built.search {
                    searches.insert(name.clone(), search);
                }
                let stop = stop_rx.clone();
                let alive = Arc::new(AtomicBool::new(true));
                running.insert(name.clone(), alive.clone());
                let task = tokio::spawn(async move {
                    let result = built.pipeline.run(stop).await;
                    alive.store(false, Ordering::Relaxed);
                    result
                });
                tasks.push((name, task));
            }
            Err(e) => {
                error!(pipeline = %name, file = %loaded.path.display(), error = %e, "cannot start the pipeline");
                return ExitCode::from(2);
            }
        }
    }
    match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => {
            info!(%listen, "HTTP API listening");
            let app = http::router(Arc::new(searches), Arc::new(running));
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
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested; finishing in-flight batches");
        let _ = stop_tx.send(true);
    });
    let mut failed = false;
    for (name, task) in tasks {
        match task.await {
            Ok(Ok(())) => info!(pipeline = %name, "pipeline stopped"),
            Ok(Err(e)) => {
                error!(pipeline = %name, error = %e, "pipeline failed");
                eprintln!("error: {e}");
                failed = true;
            }
            Err(e) => {
                error!(pipeline = %name, error = %e, "pipeline task panicked");
                failed = true;
            }
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
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
