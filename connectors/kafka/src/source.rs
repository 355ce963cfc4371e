//! The Kafka source.
//!
//! A dedicated thread polls a librdkafka consumer and hands records to the pipeline
//! through a bounded channel (bounded memory, backpressure). The rebalance callback runs
//! on that thread: on assignment it loads the partitions' offsets from the sink and
//! assigns with exactly those offsets, so no record is ever fetched from the group's
//! committed position; on revocation it waits until the pipeline has written what it holds.
//! Assignment and revocation markers travel in the same channel as the records, so the
//! pipeline sees them in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sinkd_core::backoff::Backoff;
use sinkd_core::config::{KafkaSourceConfig, SourceMode, StartPosition};
use sinkd_core::event::TopicPartition;
use sinkd_core::event::{RawRecord, SourcePosition};
use sinkd_core::sink::CheckpointReader;
use sinkd_core::source::{Assigned, Source, SourceError, SourceItem};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::client::consumer_config;
use crate::errors::classify;

/// How long a revocation waits for the pipeline to write its batch before letting go.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// One seek's wait for the fetcher; the runtime tries a few times.
const SEEK_TIMEOUT: Duration = Duration::from_secs(2);

/// One metadata request's wait in replica mode, short so a pause or shutdown that joins
/// the polling thread is not held up by a broker that is away.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// What the polling thread hands the pipeline: items in order, or why it stopped.
type Delivery = Result<SourceItem, SourceError>;

struct Context {
    pipeline: String,
    checkpoints: Arc<dyn CheckpointReader>,
    runtime: Handle,
    tx: mpsc::Sender<Delivery>,
    start: StartPosition,
    stop: Arc<AtomicBool>,
    /// High watermarks from librdkafka's statistics (taken from fetch responses).
    highs: Arc<Mutex<HashMap<TopicPartition, i64>>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut highs = self.highs.lock().expect("highs lock");
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                if *id >= 0 && p.hi_offset >= 0 {
                    highs.insert((Arc::from(name.as_str()), *id), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        if self.stop.load(Ordering::Relaxed) {
            // Closing: the pipeline is gone, nothing to hand over or wait for.
            let _ = if cooperative {
                consumer.incremental_unassign(tpl)
            } else {
                consumer.unassign()
            };
            return;
        }
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions = partitions_of(tpl);
                if let Err(e) = self.assign_from_sink(consumer, &partitions, cooperative) {
                    // Partitions the group gave us but nobody reads: the pipeline must
                    // not go on as if it held them.
                    let e = SourceError::Fatal(format!("cannot assign {partitions:?}: {e}"));
                    let _ = self.tx.blocking_send(Err(e));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions = partitions_of(tpl);
                let (done, wait) = oneshot::channel();
                if self
                    .tx
                    .blocking_send(Ok(SourceItem::Revoked { partitions, done }))
                    .is_ok()
                {
                    let waited = self
                        .runtime
                        .block_on(async { tokio::time::timeout(REVOKE_WAIT, wait).await });
                    if waited.is_err() {
                        warn!(pipeline = %self.pipeline, "pipeline did not release revoked partitions in time; the sink's checkpoint fences it");
                    }
                }
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    error!(pipeline = %self.pipeline, error = %e, "unassign failed");
                }
            }
            other => {
                error!(pipeline = %self.pipeline, error = ?other, "rebalance error; dropping the assignment");
                let _ = consumer.unassign();
            }
        }
    }
}

impl Context {
    /// Loads the sink's offsets (retrying until the sink answers: assigning without them
    /// would read from the wrong place) and assigns exactly there.
    fn assign_from_sink(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &[TopicPartition],
        cooperative: bool,
    ) -> Result<(), KafkaError> {
        let mut backoff = Backoff::new();
        let stored = loop {
            match self.runtime.block_on(self.checkpoints.load(partitions)) {
                Ok(s) => break s,
                Err(e) if !self.stop.load(Ordering::Relaxed) => {
                    let wait = backoff.wait();
                    warn!(pipeline = %self.pipeline, error = %e, retry_in = ?wait, "cannot read checkpoints from the sink");
                    std::thread::sleep(wait);
                }
                Err(_) => return Ok(()),
            }
        };
        let mut tpl = TopicPartitionList::new();
        let mut assigned = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let offset = match (stored.get(tp), self.start) {
                (Some(&next), _) => Offset::Offset(next),
                (None, StartPosition::Earliest) => Offset::Beginning,
                (None, StartPosition::Latest) => Offset::End,
            };
            tpl.add_partition_offset(&tp.0, tp.1, offset)?;
            assigned.push(Assigned {
                partition: tp.clone(),
                stored: stored.get(tp).copied(),
            });
        }
        // The marker goes first so the pipeline knows the partitions before any record.
        if self
            .tx
            .blocking_send(Ok(SourceItem::Assigned(assigned)))
            .is_err()
        {
            return Ok(());
        }
        if cooperative {
            consumer.incremental_assign(&tpl)
        } else {
            consumer.assign(&tpl)
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

/// A Kafka source whose offsets live in the sink.
pub struct KafkaSource {
    highs: Arc<Mutex<HashMap<TopicPartition, i64>>>,
    consumer: Arc<BaseConsumer<Context>>,
    rx: mpsc::Receiver<Delivery>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    advisory_commits: bool,
}

impl KafkaSource {
    /// Creates the consumer and starts its polling thread. Must be called inside a tokio
    /// runtime. `queue` bounds the records buffered ahead of the pipeline.
    pub fn start(
        cfg: &KafkaSourceConfig,
        pipeline: &str,
        checkpoints: Arc<dyn CheckpointReader>,
        queue: usize,
    ) -> Result<KafkaSource, SourceError> {
        let group_id = cfg
            .group_id
            .clone()
            .unwrap_or_else(|| format!("sinkd-{pipeline}"));
        let (tx, rx) = mpsc::channel(queue.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let highs = Arc::new(Mutex::new(HashMap::new()));
        let context = Context {
            highs: highs.clone(),
            pipeline: pipeline.to_owned(),
            checkpoints,
            runtime: Handle::current(),
            tx: tx.clone(),
            start: cfg.start,
            stop: stop.clone(),
        };
        let consumer: BaseConsumer<Context> = consumer_config(cfg, &group_id)
            .create_with_context(context)
            .map_err(|e| SourceError::Fatal(format!("cannot create the Kafka consumer: {e}")))?;
        let consumer = Arc::new(consumer);
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        // Replica mode assigns every partition itself, on the polling thread (loading
        // checkpoints blocks, which must not happen on the async runtime).
        let mode = cfg.mode.unwrap_or(SourceMode::Shared);
        let replica = match mode {
            SourceMode::Shared => {
                consumer.subscribe(&topics).map_err(|e| {
                    SourceError::Fatal(format!("cannot subscribe to {topics:?}: {e}"))
                })?;
                false
            }
            SourceMode::Replica => true,
        };
        info!(pipeline, group_id, mode = ?mode, topics = ?cfg.topics, "Kafka source started");
        let thread = {
            let consumer = consumer.clone();
            let stop = stop.clone();
            let pipeline = pipeline.to_owned();
            let topics = cfg.topics.clone();
            std::thread::Builder::new()
                .name(format!("kafka-{pipeline}"))
                .spawn(move || {
                    if replica && let Err(e) = assign_all(&consumer, &topics, &stop) {
                        if !stop.load(Ordering::Relaxed) {
                            error!(pipeline, error = %e, "cannot assign partitions");
                            let _ = tx.blocking_send(Err(e));
                        }
                        return;
                    }
                    poll_loop(&consumer, &tx, &stop, &pipeline)
                })
                .map_err(|e| SourceError::Fatal(format!("cannot start the polling thread: {e}")))?
        };
        Ok(KafkaSource {
            highs,
            consumer,
            rx,
            stop,
            thread: Some(thread),
            advisory_commits: mode == SourceMode::Shared,
        })
    }
}

/// Replica mode (no consumer group): assigns every partition of the topics, each from the
/// sink's checkpoint. Waits out a broker that is not there yet, as a group member would.
fn assign_all(
    consumer: &BaseConsumer<Context>,
    topics: &[String],
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    // Short waits: a pause or shutdown joins this thread.
    let mut backoff = Backoff::between(Duration::from_millis(100), Duration::from_secs(2));
    let partitions = loop {
        match all_partitions(consumer, topics) {
            Err(e @ SourceError::Retriable(_)) if !stop.load(Ordering::Relaxed) => {
                let wait = backoff.wait();
                warn!(pipeline = %consumer.context().pipeline, error = %e, retry_in = ?wait,
                      "cannot list the partitions");
                std::thread::sleep(wait);
            }
            other => break other?,
        }
    };
    let assigned = consumer
        .context()
        .assign_from_sink(consumer, &partitions, false);
    assigned.map_err(|e| SourceError::Fatal(format!("cannot assign {partitions:?}: {e}")))
}

/// Every partition of the topics.
fn all_partitions(
    consumer: &BaseConsumer<Context>,
    topics: &[String],
) -> Result<Vec<TopicPartition>, SourceError> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| classify(&format!("cannot read metadata of topic {topic}"), &e))?;
        for t in md.topics() {
            if let Some(code) = t.error() {
                return Err(topic_error(topic, code.into()));
            }
            if t.partitions().is_empty() {
                return Err(SourceError::Fatal(format!(
                    "topic {topic} has no partitions"
                )));
            }
            out.extend(t.partitions().iter().map(|p| (Arc::from(t.name()), p.id())));
        }
    }
    Ok(out)
}

/// What a topic's metadata error means for a replica pipeline: a topic that is not there
/// (or not readable) needs an operator; one being created or moving is waited for.
fn topic_error(topic: &str, code: RDKafkaErrorCode) -> SourceError {
    match code {
        RDKafkaErrorCode::UnknownTopicOrPartition => {
            SourceError::Fatal(format!("topic {topic} does not exist"))
        }
        RDKafkaErrorCode::TopicAuthorizationFailed => {
            SourceError::Fatal(format!("not authorized to read topic {topic}"))
        }
        other => SourceError::Retriable(format!("topic {topic}: {other}")),
    }
}

fn poll_loop(
    consumer: &BaseConsumer<Context>,
    tx: &mpsc::Sender<Delivery>,
    stop: &AtomicBool,
    pipeline: &str,
) {
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        // Short, so a stop (pause, rebuild, shutdown) is seen within 20 ms; an idle poll
        // costs microseconds.
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Ok(msg)) => {
                let topic = match topics.get(msg.topic()) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = Arc::from(msg.topic());
                        topics.insert(msg.topic().to_owned(), t.clone());
                        t
                    }
                };
                let headers = msg
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                let raw = RawRecord {
                    position: SourcePosition {
                        topic,
                        partition: msg.partition(),
                        offset: msg.offset(),
                    },
                    timestamp_ms: msg.timestamp().to_millis(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec),
                    headers,
                };
                if tx.blocking_send(Ok(SourceItem::Record(raw))).is_err() {
                    break;
                }
            }
            Some(Err(e)) => match classify("Kafka consumer", &e) {
                // librdkafka retries broker and network failures itself; these are reports.
                SourceError::Retriable(_) => warn!(pipeline, error = %e, "Kafka consumer error"),
                fatal @ SourceError::Fatal(_) => {
                    let _ = tx.blocking_send(Err(fatal));
                    break;
                }
            },
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn next(&mut self) -> Result<SourceItem, SourceError> {
        let delivered = self.rx.recv().await;
        delivered.unwrap_or_else(|| {
            Err(SourceError::Fatal(
                "the Kafka polling thread stopped".into(),
            ))
        })
    }

    fn committed(&self, offsets: &[(TopicPartition, i64)]) {
        if !self.advisory_commits {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .is_err()
            {
                return;
            }
        }
        // Advisory only (lag tools): a failure here loses nothing.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "advisory offset commit failed");
        }
    }

    fn high_watermark(&self, partition: &TopicPartition) -> Option<i64> {
        self.cached_high(partition)
    }

    fn seek(&self, partition: &TopicPartition, offset: i64) -> Result<(), SourceError> {
        // librdkafka waits for the fetcher to take the new position: blocking, so off the
        // async workers' hands, and short, since the runtime retries a failed seek.
        let sought = tokio::task::block_in_place(|| {
            let at = Offset::Offset(offset);
            self.consumer
                .seek(&partition.0, partition.1, at, SEEK_TIMEOUT)
        });
        sought.map_err(|e| {
            let doing = format!("cannot seek {}/{} to {offset}", partition.0, partition.1);
            classify(&doing, &e)
        })
    }
}

impl KafkaSource {
    fn cached_high(&self, partition: &TopicPartition) -> Option<i64> {
        // From fetch responses: right even where a broker's ListOffsets answer lags.
        self.highs
            .lock()
            .expect("highs lock")
            .get(partition)
            .copied()
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the channel unblocks a polling thread waiting for room.
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            // The thread may be waiting on this runtime (loading the sink's checkpoints for
            // an assignment). Joining it on a runtime worker would hold that worker's
            // tasks, and with them what the thread waits for: hand them to another
            // thread first. (Found by the REST fuzz test: a rebuild cancelled as its
            // shadow's consumer was assigned hung the daemon's cancel for good.)
            let on_worker = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if on_worker {
                tokio::task::block_in_place(|| {
                    let _ = t.join();
                });
            } else {
                let _ = t.join();
            }
        }
    }
}
