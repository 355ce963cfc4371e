//! Network faults between sinkd and a server, for one test's own servers: a TCP proxy in
//! front of each that adds latency, and firewall rules (iptables, on loopback) on the
//! proxy's port that drop a share of the packets or all of them (a partition: nothing
//! is refused, nothing arrives). The machines have no `netem` qdisc (their kernel lacks
//! it), so latency is the proxy's; loss and partitions are the kernel's, and TCP's own
//! retransmissions are what sinkd has to ride out.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A TCP proxy on a free loopback port to `upstream`, delaying every chunk of bytes by
/// the current latency (each direction) and keeping their order.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    latency_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let port = listener.local_addr().expect("address").port();
        let latency_ms = Arc::new(AtomicU64::new(0));
        let latency = latency_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let latency = latency.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(forward(cr, sw, latency.clone()));
                    tokio::spawn(forward(sr, cw, latency));
                });
            }
        });
        Proxy {
            port,
            latency_ms,
            task,
        }
    }

    /// Sets the one-way latency added to each direction (the round trip grows by twice).
    pub fn set_latency(&self, one_way: Duration) {
        self.latency_ms
            .store(one_way.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk held back until it is `latency` old.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let delay = Duration::from_millis(latency.load(Ordering::Relaxed));
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Firewall rules dropping loopback packets to and from some ports, removed when dropped.
pub struct Firewall {
    ports: Vec<u16>,
    rules: Vec<Vec<String>>,
}

impl Firewall {
    /// Rules for these ports (none yet).
    pub fn on(ports: &[u16]) -> Firewall {
        Firewall {
            ports: ports.to_vec(),
            rules: Vec::new(),
        }
    }

    /// Drops each packet to or from the ports with probability `share` (1.0: all of them,
    /// a partition), replacing what was set before.
    pub fn drop_packets(&mut self, share: f64) {
        self.clear();
        for port in &self.ports {
            for direction in ["--dport", "--sport"] {
                let mut rule: Vec<String> = ["OUTPUT", "-o", "lo", "-p", "tcp", direction]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                rule.push(port.to_string());
                if share < 1.0 {
                    rule.extend(
                        ["-m", "statistic", "--mode", "random", "--probability"]
                            .iter()
                            .map(|s| (*s).to_owned()),
                    );
                    rule.push(share.to_string());
                }
                rule.extend(["-j", "DROP"].iter().map(|s| (*s).to_owned()));
                iptables("-A", &rule);
                self.rules.push(rule);
            }
        }
    }

    /// Lets every packet through again.
    pub fn clear(&mut self) {
        for rule in std::mem::take(&mut self.rules) {
            iptables("-D", &rule);
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.clear();
    }
}

fn iptables(action: &str, rule: &[String]) {
    let status = Command::new("iptables")
        .arg(action)
        .args(rule)
        .status()
        .expect("iptables runs (the network tests need root, as CI has)");
    assert!(status.success(), "iptables {action} {}", rule.join(" "));
}

/// A broker, a registry, a PostgreSQL and a mongod of the caller's own, each behind a
/// [`Proxy`], with every helper of the test binary pointed at this broker and registry
/// ([`crate::stack::use_own_servers`]): what the network-fault test and the soak break.
pub struct ProxiedServers {
    /// In front of the broker (which advertises it).
    pub kafka: Proxy,
    /// The registry (durable: it can be stopped and restarted).
    pub registry: crate::stack::OwnRegistry,
    /// In front of the registry.
    pub registry_proxy: Proxy,
    /// The PostgreSQL server.
    pub pg: crate::postgres::Postgres,
    /// In front of it.
    pub pg_proxy: Proxy,
    /// The mongod (a one-node replica set).
    pub mongod: crate::mongod::Mongod,
    /// In front of it.
    pub mongo_proxy: Proxy,
    _broker: crate::stack::OwnBroker,
}

impl ProxiedServers {
    /// Starts them all. Once per test binary (it points the binary's helpers at them).
    pub async fn start() -> ProxiedServers {
        let broker_port = crate::stack::free_port();
        let kafka = Proxy::start(broker_port).await;
        let broker = crate::stack::OwnBroker::start(broker_port, kafka.port);
        let registry = crate::stack::OwnRegistry::start_durable();
        let registry_proxy = Proxy::start(registry.port()).await;
        let pg = crate::postgres::Postgres::start().await;
        let pg_proxy = Proxy::start(pg.port).await;
        let mongod = crate::mongod::Mongod::start(true).await;
        let mongo_proxy = Proxy::start(mongod.port).await;
        crate::stack::use_own_servers(
            format!("127.0.0.1:{}", kafka.port),
            format!("http://127.0.0.1:{}", registry_proxy.port),
        );
        ProxiedServers {
            kafka,
            registry,
            registry_proxy,
            pg,
            pg_proxy,
            mongod,
            mongo_proxy,
            _broker: broker,
        }
    }

    /// The proxies, broker's first.
    pub fn proxies(&self) -> [&Proxy; 4] {
        [
            &self.kafka,
            &self.registry_proxy,
            &self.pg_proxy,
            &self.mongo_proxy,
        ]
    }

    /// The PostgreSQL target, through its proxy.
    pub fn postgres(&self) -> crate::target::Target {
        crate::target::Target::Postgres(self.pg.url_via(self.pg_proxy.port))
    }

    /// The MongoDB target, through its proxy.
    pub fn mongo(&self) -> crate::target::Target {
        crate::target::Target::Mongo(self.mongod.url_via(self.mongo_proxy.port))
    }
}
