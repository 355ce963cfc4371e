//! A cluster's pipeline definitions in Kafka, as Kafka Connect keeps `connect-configs`: a
//! compacted topic of one partition, keyed by pipeline name, whose value is the pipeline
//! file's text (a tombstone removes it). Every daemon of the cluster follows the topic
//! from its start, so each one, also one that joins later, sees the same definitions in
//! the same order; writing one is producing a record. Kafka is the only coordinator.
//!
//! `${VAR}` in a stored file is left as written and read from each daemon's own
//! environment when it loads the file, so secrets never travel through the topic.

use std::collections::BTreeMap;
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

/// How long a write waits for the broker.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The definitions read so far: pipeline name to file text, and the offset after the last
/// record read (a writer waits until its record's offset is below it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Definitions {
    /// Pipeline files by name.
    pub files: BTreeMap<String, String>,
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
        let mut record: FutureRecord<'_, str, str> =
            FutureRecord::to(&self.topic).key(name).partition(0);
        if let Some(text) = text {
            record = record.payload(text);
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
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
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

/// Reads records into `tx` until every receiver is gone.
fn follow(consumer: &BaseConsumer, topic: &str, tx: &watch::Sender<Definitions>) {
    let mut defs = Definitions::default();
    while !tx.is_closed() {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        match message {
            Ok(m) => {
                let Some(name) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    warn!(%topic, offset = m.offset(), "a record without a key in the cluster topic: skipped");
                    defs.next = m.offset() + 1;
                    continue;
                };
                match m.payload() {
                    Some(text) => {
                        defs.files
                            .insert(name, String::from_utf8_lossy(text).into_owned());
                    }
                    None => {
                        defs.files.remove(&name);
                    }
                }
                defs.next = m.offset() + 1;
                // Only the latest state matters: a burst of records publishes once, at
                // its end.
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => {
                defs.caught_up = true;
                if *tx.borrow() != defs {
                    tx.send_replace(defs.clone());
                }
            }
            Err(e) => {
                error!(%topic, error = %e, "reading the cluster topic");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
