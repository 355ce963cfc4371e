//! The capture loop: reads committed transactions from the slot, turns each outbox insert
//! into a record, sends it, and hands the delivery and each commit to [`delivery`] so the
//! slot's position follows the broker's acknowledgements.
//!
//! [`delivery`]: crate::delivery

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pg_walstream::{
    CancellationToken, ChangeEvent, EventType, LogicalReplicationStream, ReplicationError,
    ReplicationStreamConfig,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use sinkd_core::config::BadRecordPolicy;
use sinkd_core::config::capture::CaptureFile;
use sinkd_core::config::redact_text;
use sinkd_kafka::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::delivery::{self, Deleter, Delivery, Pending};
use crate::outbox::{Outbox, OutboxRecord, RowError};
use crate::slot::{self, quote, split_table};
use crate::stats::CaptureStats;

/// Records handed to the acknowledging task and not yet acknowledged, at most.
const IN_FLIGHT: usize = 50_000;

/// Why the capture stopped.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CaptureError {
    /// What happened, with where (table, position) when a row is at fault.
    pub message: String,
    /// Whether starting again may succeed (a server down) or not (a bad row, a bad file).
    pub retriable: bool,
}

impl CaptureError {
    fn retry(message: impl Into<String>) -> Self {
        CaptureError {
            message: redact_text(&message.into()),
            retriable: true,
        }
    }
    fn fatal(message: impl Into<String>) -> Self {
        CaptureError {
            message: redact_text(&message.into()),
            retriable: false,
        }
    }
}

/// Runs one capture pipeline until `stop` turns true (then finishes what is in flight and
/// confirms it) or an error. `base` is the pipeline file's folder.
pub async fn run(
    cfg: &CaptureFile,
    base: &Path,
    stats: Arc<CaptureStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), CaptureError> {
    let pg = &cfg.source.postgres_cdc;
    let slot_name = pg.slot_name(&cfg.name);
    let publication = pg.publication_name(&cfg.name);
    let registry = Arc::new(Registry::new(&cfg.sink.registry).map_err(CaptureError::fatal)?);
    let mut outbox =
        Outbox::new(&pg.outbox, &pg.tables, base, registry).map_err(CaptureError::fatal)?;

    let client = slot::connect(&pg.url).await.map_err(CaptureError::retry)?;
    slot::ensure_publication(&client, &publication, &pg.tables)
        .await
        .map_err(CaptureError::retry)?;
    slot::ensure_slot(&client, &slot_name)
        .await
        .map_err(CaptureError::retry)?;

    let producer = producer(cfg)?;
    let stream_cfg = ReplicationStreamConfig::builder(&slot_name, &publication)
        .with_protocol_version(1)
        .with_feedback_interval(Duration::from_secs(1));
    let mut stream = LogicalReplicationStream::new(&replication_url(&pg.url), stream_cfg)
        .await
        .map_err(|e| CaptureError::retry(format!("replication connection: {e}")))?;
    stream
        .start(None)
        .await
        .map_err(|e| CaptureError::retry(format!("START_REPLICATION on `{slot_name}`: {e}")))?;
    stats.connected.store(true, Relaxed);
    info!(pipeline = %cfg.name, slot = %slot_name, %publication, "capturing");

    let deleter = match pg.outbox.delete_after_capture {
        true => Some(Deleter {
            client: slot::connect(&pg.url).await.map_err(CaptureError::retry)?,
            id_column: quote(&pg.outbox.id_column),
        }),
        false => None,
    };
    let delivery = delivery::start(
        stream.shared_lsn_feedback.clone(),
        stats.clone(),
        deleter,
        IN_FLIGHT,
    );
    let mut capture = Capture {
        cfg,
        producer,
        delivery,
        rows: Vec::new(),
        in_txn: false,
        commit_ms: 0,
        stats: stats.clone(),
    };

    // A quiet slot still has to move: without new outbox rows the server's WAL (other
    // tables, checkpoints) would pile up behind it. When nothing has arrived for a second
    // the read is interrupted, and if every transaction received is confirmed the slot
    // is confirmed up to what the server has sent.
    let shutdown = CancellationToken::new();
    let events = Arc::new(AtomicU64::new(0));
    let idle = Arc::new(std::sync::Mutex::new(shutdown.child_token()));
    let ticker = {
        let (events, idle) = (events.clone(), idle.clone());
        tokio::spawn(async move {
            let mut last = u64::MAX;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = events.load(Relaxed);
                if now == last {
                    idle.lock().expect("lock poisoned").cancel();
                }
                last = now;
            }
        })
    };
    let result = loop {
        if *stop.borrow() {
            break Ok(());
        }
        let token = idle.lock().expect("lock poisoned").clone();
        let event = tokio::select! {
            e = stream.next_event(&token) => e,
            _ = stop.changed() => {
                shutdown.cancel();
                continue;
            }
        };
        match event {
            Ok(event) => {
                events.fetch_add(1, Relaxed);
                if let Err(e) = capture.handle(event, &mut outbox).await {
                    break Err(e);
                }
            }
            Err(e) if e.is_cancelled() => {
                *idle.lock().expect("lock poisoned") = shutdown.child_token();
                if !capture.in_txn && capture.delivery.waiting.lock().expect("lock").is_empty() {
                    let lsn = stream.current_lsn();
                    stream.shared_lsn_feedback.update_flushed_lsn(lsn);
                    stream.shared_lsn_feedback.update_applied_lsn(lsn);
                    stream.maybe_send_feedback().await;
                }
            }
            Err(e) => break Err(stream_error(e, &slot_name)),
        }
    };
    ticker.abort();
    stats.connected.store(false, Relaxed);
    // Let every record already sent be acknowledged and confirmed, then tell the server.
    let Capture {
        delivery, producer, ..
    } = capture;
    drop(delivery.tx);
    let acked = delivery.task.await.unwrap_or_else(|e| Err(e.to_string()));
    drop(producer);
    let _ = stream.send_feedback().await;
    let _ = stream.stop().await;
    result?;
    acked.map_err(CaptureError::retry)
}

struct Capture<'a> {
    cfg: &'a CaptureFile,
    producer: FutureProducer,
    delivery: Delivery,
    rows: Vec<(String, String)>,
    in_txn: bool,
    commit_ms: i64,
    stats: Arc<CaptureStats>,
}

impl Capture<'_> {
    async fn handle(
        &mut self,
        event: ChangeEvent,
        outbox: &mut Outbox,
    ) -> Result<(), CaptureError> {
        match event.event_type {
            EventType::Begin {
                commit_timestamp, ..
            } => {
                self.in_txn = true;
                self.commit_ms = commit_timestamp.timestamp_millis();
                self.rows.clear();
            }
            EventType::Insert {
                schema,
                table,
                data,
                ..
            } if outbox.captures(&schema, &table) => {
                self.stats.rows.fetch_add(1, Relaxed);
                match outbox.record(&data).await {
                    Ok(record) => {
                        if self.cfg.source.postgres_cdc.outbox.delete_after_capture
                            && let Some(id) = &record.id
                        {
                            let qualified = format!("{}.{}", quote(&schema), quote(&table));
                            self.rows.push((qualified, id.clone()));
                        }
                        self.send(record).await?;
                    }
                    Err(RowError::Unavailable(m)) => return Err(CaptureError::retry(m)),
                    Err(RowError::Bad(m)) => {
                        let at = format!(
                            "{schema}.{table} row at WAL position {} (transaction committed \
                             at {}): {m}",
                            pg_walstream::format_lsn(event.lsn.value()),
                            chrono::DateTime::from_timestamp_millis(self.commit_ms)
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_default()
                        );
                        match (self.cfg.on_error, &self.cfg.dead_letter_topic) {
                            (BadRecordPolicy::DeadLetter, Some(topic)) => {
                                warn!(pipeline = %self.cfg.name, "dead-lettered {at}");
                                self.dead_letter(topic, &data, &at).await?;
                            }
                            _ => return Err(CaptureError::fatal(at)),
                        }
                    }
                }
            }
            EventType::Insert { .. } => {}
            EventType::Update { .. } | EventType::Delete { .. } | EventType::Truncate { .. } => {
                self.stats.ignored.fetch_add(1, Relaxed);
            }
            EventType::Commit {
                end_lsn,
                commit_timestamp,
                ..
            } => {
                self.in_txn = false;
                let commit_ms = commit_timestamp.timestamp_millis();
                {
                    let mut waiting = self.delivery.waiting.lock().expect("lock poisoned");
                    if waiting.is_empty() {
                        self.stats
                            .oldest_pending_commit_ms
                            .store(commit_ms, Relaxed);
                    }
                    waiting.push_back(commit_ms);
                }
                let rows = std::mem::take(&mut self.rows);
                self.hand_over(Pending::Commit {
                    end_lsn: end_lsn.value(),
                    commit_ms,
                    rows,
                })
                .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn send(&mut self, r: OutboxRecord) -> Result<(), CaptureError> {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref().map(str::as_bytes),
            });
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&r.topic)
            .payload(r.value.as_slice())
            .headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k.as_str());
        }
        self.produce(record).await
    }

    async fn dead_letter(
        &mut self,
        topic: &str,
        row: &pg_walstream::RowData,
        cause: &str,
    ) -> Result<(), CaptureError> {
        let json: serde_json::Map<String, serde_json::Value> = row
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    pg_walstream::ColumnValue::Null => serde_json::Value::Null,
                    other => String::from_utf8_lossy(other.as_bytes())
                        .into_owned()
                        .into(),
                };
                (k.to_string(), v)
            })
            .collect();
        let body = serde_json::Value::Object(json).to_string();
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "sinkd.errors.pipeline",
                value: Some(self.cfg.name.as_bytes()),
            })
            .insert(Header {
                key: "sinkd.errors.class",
                value: Some("bad_row".as_bytes()),
            })
            .insert(Header {
                key: "sinkd.errors.message",
                value: Some(cause.as_bytes()),
            });
        let record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
            .payload(body.as_str())
            .headers(headers);
        self.stats.dead_lettered.fetch_add(1, Relaxed);
        self.produce(record).await
    }

    /// Sends, waiting while librdkafka's queue is full, and hands the delivery over.
    async fn produce<K, P>(
        &mut self,
        mut record: FutureRecord<'_, K, P>,
    ) -> Result<(), CaptureError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return self.hand_over(Pending::Record(future)).await,
                Err((e, back)) => {
                    if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                        return Err(CaptureError::retry(format!("producing: {e}")));
                    }
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }

    async fn hand_over(&mut self, p: Pending) -> Result<(), CaptureError> {
        if self.delivery.tx.send(p).await.is_ok() {
            return Ok(());
        }
        // The acknowledging task ended early: its error is the cause.
        let (tx, _) = tokio::sync::mpsc::channel(1);
        let task = std::mem::replace(&mut self.delivery.task, tokio::spawn(async { Ok(()) }));
        self.delivery.tx = tx;
        match task.await {
            Ok(Err(e)) => Err(CaptureError::retry(e)),
            _ => Err(CaptureError::retry("the acknowledging task ended")),
        }
    }
}

fn producer(cfg: &CaptureFile) -> Result<FutureProducer, CaptureError> {
    let props = &cfg.sink.kafka.properties;
    let mut c = sinkd_kafka::client::idempotent_producer(&cfg.sink.kafka.bootstrap_servers, props);
    // Keys land where Java producers (and Kafka Connect) would put them.
    if !props.contains_key("partitioner") {
        c.set("partitioner", "murmur2_random");
    }
    if !props.contains_key("linger.ms") {
        c.set("linger.ms", "5");
    }
    c.create()
        .map_err(|e| CaptureError::fatal(format!("cannot create the producer: {e}")))
}

/// The URL with `replication=database`, which opens a logical replication connection.
fn replication_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}replication=database")
}

fn stream_error(e: ReplicationError, slot: &str) -> CaptureError {
    let message = format!("replication stream of slot `{slot}`: {e}");
    if e.is_permanent() && !matches!(e, ReplicationError::ReplicationSlot(_)) {
        CaptureError::fatal(message)
    } else {
        // An active slot (another instance streams from it) is retried: it frees when
        // that instance stops.
        CaptureError::retry(message)
    }
}

/// The outbox table's rows are in `schema.table`; re-exported for tests.
pub fn qualified(table: &str) -> String {
    let (s, t) = split_table(table);
    format!("{}.{}", quote(&s), quote(&t))
}
