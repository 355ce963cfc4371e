//! A private PostgreSQL server for tests that crash it, so the shared server of
//! `docker/up` is never disturbed. Uses the PostgreSQL 15 binaries `docker/up` installed,
//! run as the `postgres` OS user when the tests run as root (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server on a free port, with the `sinkd` role and database of the stack.
pub struct Postgres {
    /// The port.
    pub port: u16,
    data: PathBuf,
}

/// A PostgreSQL program, to run as the server's OS user.
fn program(name: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(Path::new(BIN).join(name));
        c
    } else {
        Command::new(Path::new(BIN).join(name))
    }
}

/// Runs a PostgreSQL program; its output goes to the server's log beside the data dir.
fn run(data: &Path, name: &str, args: &[&str]) {
    let log_path = data.with_extension("log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("server log");
    let status = program(name)
        .args(args)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .status()
        .unwrap_or_else(|e| panic!("{name} runs (docker/up installs PostgreSQL): {e}"));
    assert!(
        status.success(),
        "{name} {args:?} failed; see {}",
        log_path.display()
    );
}

/// Whether this process runs as root (the server then runs as the `postgres` user).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Postgres {
    /// Creates a cluster (fsync off: the tests crash the server process, never the
    /// machine, so what was written survives in the page cache), starts it, and adds the
    /// `sinkd` role and database.
    pub async fn start() -> Postgres {
        let port = crate::stack::free_port();
        let data = std::env::temp_dir().join(format!("sinkd-postgres-{port}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("data dir");
        if is_root() {
            let owned = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .status()
                .expect("chown runs");
            assert!(owned.success(), "chown of {}", data.display());
        }
        let dir = data.to_str().expect("UTF-8 path");
        run(
            &data,
            "initdb",
            &[
                "-D",
                dir,
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth=trust",
                "-N",
            ],
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             fsync = off\nmax_connections = 50\nshared_buffers = 32MB\n"
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        text.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), text).expect("conf");
        let server = Postgres { port, data };
        server.pg_ctl(&["start", "-w", "-t", "60"]);
        let admin = crate::stack::pg_at(&format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres"
        ))
        .await;
        for statement in [
            "CREATE ROLE sinkd LOGIN SUPERUSER PASSWORD 'sinkd'",
            "CREATE DATABASE sinkd OWNER sinkd",
        ] {
            admin.batch_execute(statement).await.expect(statement);
        }
        server
    }

    fn pg_ctl(&self, args: &[&str]) {
        let dir = self.data.to_str().expect("UTF-8 path");
        let mut all = vec!["-D", dir];
        all.extend_from_slice(args);
        run(&self.data, "pg_ctl", &all);
    }

    /// The URL sinkd and the tests use.
    pub fn url(&self) -> String {
        self.url_via(self.port)
    }

    /// The URL through `port` (a proxy in front of it).
    pub fn url_via(&self, port: u16) -> String {
        format!("postgres://sinkd:sinkd@127.0.0.1:{port}/sinkd")
    }
}

impl crate::faults::CrashableServer for Postgres {
    fn target(&self) -> crate::target::Target {
        crate::target::Target::Postgres(self.url())
    }

    /// `pg_ctl stop -m immediate` (every server process quits at once, no shutdown
    /// checkpoint, so the next start replays the WAL), 3 s down, started again.
    async fn crash(&mut self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.pg_ctl(&["start", "-w", "-t", "60"]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(self.data.with_extension("log"));
    }
}
