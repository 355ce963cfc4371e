//! A cluster's pipeline definitions in Kafka, as Kafka Connect keeps `connect-configs`: a
//! compacted topic of one partition, keyed by pipeline name, whose value is the pipeline
//! file's text (a tombstone removes it). A key `paused/<name>` with any value marks the
//! pipeline paused on every daemon (pipeline names cannot hold `/`); its tombstone
//! resumes it. Both are states, not commands, so a record read twice acts once. Every daemon of the cluster follows the topic
//! from its start, so each one, also one that joins later, sees the same definitions in
//! the same order; writing one is producing a record. Kafka is the only coordinator.
//!
//! `${VAR}` in a stored file is left as written and read from each daemon's own
//! environment when it loads the file, so secrets never travel through the topic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{error, warn};

use crate::client::idempotent_producer;

/// The key prefix of a pause.
const PAUSED: &str = "paused/";

/// How long a write waits for the broker.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The definitions read so far: pipeline name to file text, and the offset after the last
/// record read (a writer waits until its record's offset is below it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Definitions {
    /// Pipeline files by name.
    pub files: BTreeMap<String, String>,
    /// Pipelines paused on every daemon.
    pub paused: BTreeSet<String>,
    /// The next offset to read: every record before it is in `files`.
    pub next: i64,
    /// Whether the follower has read up to the end the topic had when it started (before
    /// that, a daemon would stop pipelines that later records still define).
    pub caught_up: bool,
}

/// The definitions topic of one cluster.
pub struct ConfigLog {
    topic: String,
    producer: FutureProducer,
    client: ClientConfig,
}

impl ConfigLog {
    /// The topic name of cluster `cluster`.
    pub fn topic_of(cluster: &str) -> String {
        format!("_sinkd-{cluster}-configs")
    }

    /// Connects to the cluster's topic on `bootstrap_servers`, creating it (compacted,
    /// one partition so that every daemon reads one order) when it does not exist.
    pub async fn open(
        bootstrap_servers: &str,
        properties: &BTreeMap<String, String>,
        cluster: &str,
    ) -> Result<ConfigLog, String> {
        let topic = Self::topic_of(cluster);
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", bootstrap_servers);
        for (k, v) in properties {
            client.set(k, v);
        }
        let admin: AdminClient<DefaultClientContext> = client
            .create()
            .map_err(|e| format!("cannot create the Kafka admin client: {e}"))?;
        let new =
            NewTopic::new(&topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        let made = admin
            .create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
            )
            .await
            .map_err(|e| format!("cannot create the cluster topic {topic}: {e}"))?;
        for result in made {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(format!("cannot create the cluster topic {topic}: {code}"));
                }
            }
        }
        let producer = idempotent_producer(bootstrap_servers, properties)
            .create()
            .map_err(|e| format!("cannot create the cluster topic's producer: {e}"))?;
        Ok(ConfigLog {
            topic,
            producer,
            client,
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Stores pipeline `name`'s file (`None` removes it); returns the record's offset.
    pub async fn put(&self, name: &str, text: Option<&str>) -> Result<i64, String> {
        self.write(name, text).await
    }

    /// Marks pipeline `name` paused on every daemon, or not; returns the record's offset.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<i64, String> {
        let key = format!("{PAUSED}{name}");
        self.write(&key, paused.then_some("paused")).await
    }

    async fn write(&self, key: &str, value: Option<&str>) -> Result<i64, String> {
        let mut record: FutureRecord<'_, str, str> =
            FutureRecord::to(&self.topic).key(key).partition(0);
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record, TIMEOUT)
            .await
            .map(|delivery| delivery.offset)
            .map_err(|(e, _)| format!("cannot write to the cluster topic {}: {e}", self.topic))
    }

    /// Follows the topic from its start on a thread of its own; the receiver holds every
    /// definition read so far. Stops when every receiver is gone.
    pub fn follow(&self) -> Result<watch::Receiver<Definitions>, String> {
        let mut config = self.client.clone();
        config
            .set("group.id", format!("{}-reader", self.topic))
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| format!("cannot create the cluster topic's consumer: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Beginning)
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let (tx, rx) = watch::channel(Definitions::default());
        let topic = self.topic.clone();
        std::thread::Builder::new()
            .name("sinkd-cluster-configs".into())
            .spawn(move || follow(&consumer, &topic, &tx))
            .map_err(|e| e.to_string())?;
        Ok(rx)
    }
}

/// Reads records into `tx` until every receiver is gone. The definitions are published
/// whenever the follower is idle (nothing new for a poll), so a burst publishes once; they
/// count as caught up once the follower has read up to the end the topic had at start.
fn follow(consumer: &BaseConsumer, topic: &str, tx: &watch::Sender<Definitions>) {
    let end = loop {
        match consumer.fetch_watermarks(topic, 0, TIMEOUT) {
            Ok((_, high)) => break high,
            Err(e) => {
                warn!(%topic, error = %e, "cannot read the end of the cluster topic; retrying");
                std::thread::sleep(Duration::from_secs(1));
                if tx.is_closed() {
                    return;
                }
            }
        }
    };
    let mut defs = Definitions::default();
    while !tx.is_closed() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                defs.caught_up |= defs.next >= end;
                if defs.caught_up && *tx.borrow() != defs {
                    tx.send_replace(defs.clone());
                }
            }
            Some(Ok(m)) => {
                defs.next = m.offset() + 1;
                let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    warn!(%topic, offset = m.offset(), "a record without a key in the cluster topic: skipped");
                    continue;
                };
                match (key.strip_prefix(PAUSED), m.payload()) {
                    (Some(name), Some(_)) => {
                        defs.paused.insert(name.to_owned());
                    }
                    (Some(name), None) => {
                        defs.paused.remove(name);
                    }
                    (None, Some(text)) => {
                        defs.files
                            .insert(key, String::from_utf8_lossy(text).into_owned());
                    }
                    (None, None) => {
                        defs.files.remove(&key);
                    }
                }
            }
            Some(Err(e)) => {
                error!(%topic, error = %e, "reading the cluster topic");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
