//! The real `sinkd` binary, run as a child process on a pipeline file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `sinkd` binary: `$SINKD_BIN`, else the workspace's debug build (`cargo build -p
/// sinkd` first; the test command does).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SINKD_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sinkd");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p sinkd` (the test command does)",
        p.display()
    );
    p
}

/// A folder for one test's files, removed when dropped.
pub struct Workdir(pub PathBuf);

impl Workdir {
    /// A fresh folder.
    pub fn new(name: &str) -> Workdir {
        let dir = std::env::temp_dir().join(format!("sinkd-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Workdir(dir)
    }

    /// Writes a file in it and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running `sinkd run`.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `sinkd run --config <config>`, logging to `<log>`, with its HTTP API on an
    /// ephemeral port (tests run many daemons at once).
    pub fn start(config: &Path, log: &Path) -> Daemon {
        Daemon::start_listening(config, log, "127.0.0.1:0")
    }

    /// Like [`Daemon::start`], with the HTTP API on `listen`.
    pub fn start_listening(config: &Path, log: &Path, listen: &str) -> Daemon {
        Daemon::start_with_env(config, log, listen, &[])
    }

    /// Like [`Daemon::start_listening`], with extra environment variables.
    pub fn start_with_env(config: &Path, log: &Path, listen: &str, env: &[(&str, &str)]) -> Daemon {
        let args = [std::ffi::OsStr::new("--config"), config.as_os_str()];
        Daemon::start_run(&args, log, listen, env)
    }

    /// `sinkd run ARGS… --listen LISTEN` with the test environment and `env`, logging to
    /// `log`.
    pub fn start_run(
        args: &[&std::ffi::OsStr],
        log: &Path,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(binary())
            .arg("run")
            .args(args)
            .args(["--listen", listen])
            .env(
                "RUST_LOG",
                std::env::var("SINKD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // The pipeline files name `${KAFKA_BROKERS:-…}` and `${SCHEMA_REGISTRY_URL:-…}`.
            .env("KAFKA_BROKERS", crate::stack::brokers())
            .env("SCHEMA_REGISTRY_URL", crate::stack::registry_url())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("sinkd starts");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, …) without waiting.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait(timeout)
    }

    /// Waits for it to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends SIGTERM and asserts the daemon stops cleanly (exit code 0) within 30 s.
    pub fn stop_cleanly(&mut self) {
        let code = self.terminate(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{}", self.log());
    }

    /// Waits (up to a minute) for the daemon to stop on its own with exit code 1, a
    /// pipeline having failed, and asserts that its log says every one of `says`.
    /// Returns the log.
    pub fn fails_saying(&mut self, says: &[&str]) -> String {
        let code = self.wait(Duration::from_secs(60));
        let log = self.log();
        assert_eq!(code, Some(1), "{log}");
        for s in says {
            assert!(log.contains(s), "the log does not say `{s}`:\n{log}");
        }
        log
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`, …), when readable.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
