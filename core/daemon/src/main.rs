//! The sinkd daemon and CLI.
//!
//! - `sinkd run --config PATH… [--watch]`: runs every pipeline found in the files or
//!   folders; reloads them on SIGHUP, and whenever they change with `--watch`.
//! - `sinkd validate FILE…`: checks pipeline files without connecting to anything.
//! - `sinkd plan FILE…`: what applying the files to a running daemon would change.
//! - `sinkd apply FILE…`: stores the files as pipelines of the daemon's cluster.
//! - `sinkd preview --config FILE INPUT` (or its old name `upcast`): a pipeline's upcasters and projection over sample
//!   events, offline.
//! - `sinkd status|pause|resume|rebuild`: clients of a running daemon's REST API.
//!
//! - [`control`]: one controller per pipeline (its task, pause, offsets, rebuild).
//! - [`api`]: the REST API over the controllers.

mod api;
mod client;
mod cluster;
mod control;
mod preview;
mod reload;
mod serve;
mod wiring;

/// jemalloc, as Vector, TiKV and Materialize use: glibc's allocator showed up in every
/// profile (about a tenth of sinkd's time in malloc and free) and grows one arena per busy
/// thread (Tantivy's indexing and merge threads, librdkafka's, the tokio workers). Its
/// options (freed memory returned within a second, from its own thread) are set where it
/// is built: `.cargo/config.toml`.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sinkd_connectors::connectors;
use sinkd_core::config::{ConfigError, load_paths};

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
    /// Run the pipelines of the given files or folders (and of the cluster, with
    /// `--cluster`) until SIGTERM / Ctrl-C.
    Run {
        /// A pipeline file or a folder of `*.yaml` files; repeatable.
        #[arg(
            long = "config",
            short = 'c',
            required_unless_present = "cluster",
            env = "SINKD_CONFIG"
        )]
        config: Vec<PathBuf>,
        /// Join the cluster of this id: daemons with the same id and cluster brokers share
        /// the pipelines defined over the API (`PUT /pipelines/{name}`), kept in the
        /// compacted topic `_sinkd-<ID>-configs`. Files keep working beside them.
        #[arg(long, env = "SINKD_CLUSTER")]
        cluster: Option<String>,
        /// `host:port[,…]` of the brokers that hold the cluster's topic (default:
        /// `KAFKA_BROKERS`).
        #[arg(long, env = "SINKD_CLUSTER_BOOTSTRAP_SERVERS")]
        cluster_bootstrap_servers: Option<String>,
        /// This daemon's id in the cluster (default: the host name, a pod's name in
        /// Kubernetes): the `group.instance.id` of its shared pipelines' consumers unless a
        /// file sets one. Give each daemon on one host its own.
        #[arg(long, env = "SINKD_NODE_ID")]
        node_id: Option<String>,
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
        /// Reload the files when they change (checked every second): new, changed and
        /// removed pipelines start, restart or stop alone; a file that does not load is
        /// reported and what it held keeps running. SIGHUP reloads with or without it.
        #[arg(long, env = "SINKD_WATCH")]
        watch: bool,
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
    /// Show what applying pipeline files to a running daemon would change (new pipelines,
    /// changed fields, whether a rebuild is needed), checked with the daemon's environment.
    /// Applies nothing; exits 1 if a file does not validate.
    Plan {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Store pipeline files in the daemon's cluster (`PUT /pipelines/{name}`): every
    /// daemon of the cluster starts or restarts them. Each file is validated first.
    Apply {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
            watch,
            cluster,
            cluster_bootstrap_servers,
            node_id,
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
            let brokers = cluster_bootstrap_servers.or_else(|| std::env::var("KAFKA_BROKERS").ok());
            let cluster = match (cluster, brokers) {
                (None, _) => None,
                (Some(id), Some(brokers)) => Some(serve::ClusterOptions {
                    id,
                    brokers,
                    node: node_id.unwrap_or_else(host_name),
                }),
                (Some(_), None) => {
                    eprintln!(
                        "error: --cluster needs the brokers of its topic: --cluster-bootstrap-servers, SINKD_CLUSTER_BOOTSTRAP_SERVERS or KAFKA_BROKERS"
                    );
                    return ExitCode::from(2);
                }
            };
            let options = serve::RunOptions {
                listen,
                auth,
                keep_failed,
                watch,
                config,
                cluster,
            };
            runtime.block_on(serve::run(pipelines, options))
        }
        Command::Apply { files, api } => {
            client_command(&api, |c| async move { c.apply(&files).await })
        }
        Command::Plan { files, api } => {
            client_command(&api, |c| async move { c.plan(&files).await })
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

/// The host's name (`HOSTNAME`, else `/etc/hostname`), a daemon's default id in a cluster.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sinkd".into())
}

fn report(errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    ExitCode::from(2)
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
