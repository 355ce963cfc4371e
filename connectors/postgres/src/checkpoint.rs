//! The checkpoint table `sinkd_offsets`: the next offset per pipeline, target table and
//! partition, advanced in the batch's own transaction as a compare-and-set.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sinkd_core::error::SinkError;
use sinkd_core::event::TopicPartition;
use sinkd_core::sink::{CheckpointAdvance, CheckpointReader};
use tokio::sync::Mutex;
use tokio_postgres::{Client, GenericClient, NoTls, Transaction};
use tracing::warn;

use crate::classify;

/// Creates the checkpoint table if absent.
pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS sinkd_offsets (
    pipeline text NOT NULL,
    target text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, target, topic, partition)
)";

/// Advances every partition of a batch in one statement and returns the partitions that
/// moved. A partition whose stored offset is not the expected one does not move: its
/// writer is fenced.
const ADVANCE: &str = "WITH input AS (
    SELECT * FROM UNNEST($3::text[], $4::int[], $5::bigint[], $6::bigint[])
        AS i(topic, partition, expected, next)
), moved AS (
    UPDATE sinkd_offsets o SET next_offset = i.next, updated_at = now()
    FROM input i
    WHERE o.pipeline = $1 AND o.target = $2 AND o.topic = i.topic
      AND o.partition = i.partition AND i.expected IS NOT NULL
      AND o.next_offset = i.expected
    RETURNING o.topic, o.partition
), created AS (
    INSERT INTO sinkd_offsets (pipeline, target, topic, partition, next_offset)
    SELECT $1, $2, topic, partition, next FROM input WHERE expected IS NULL
    ON CONFLICT DO NOTHING
    RETURNING topic, partition
)
SELECT topic, partition FROM moved UNION ALL SELECT topic, partition FROM created";

/// Advances the checkpoints inside the caller's transaction; `Fenced` if any did not move.
pub async fn advance(
    client: &impl GenericClient,
    pipeline: &str,
    target: &str,
    advances: &[CheckpointAdvance],
) -> Result<(), SinkError> {
    let topics: Vec<&str> = advances.iter().map(|a| &*a.topic).collect();
    let partitions: Vec<i32> = advances.iter().map(|a| a.partition).collect();
    let expected: Vec<Option<i64>> = advances.iter().map(|a| a.expected).collect();
    let next: Vec<i64> = advances.iter().map(|a| a.next).collect();
    let rows = client
        .query(
            ADVANCE,
            &[&pipeline, &target, &topics, &partitions, &expected, &next],
        )
        .await
        .map_err(|e| classify(&e))?;
    if rows.len() == advances.len() {
        return Ok(());
    }
    let moved: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let stuck = advances
        .iter()
        .find(|a| {
            !moved
                .iter()
                .any(|(t, p)| *t == *a.topic && *p == a.partition)
        })
        .expect("fewer rows than advances");
    Err(SinkError::Fenced {
        topic: stuck.topic.to_string(),
        partition: stuck.partition,
        expected: stuck.expected,
    })
}

/// Loads stored checkpoints.
pub async fn load(
    client: &impl GenericClient,
    pipeline: &str,
    target: &str,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, i64>, SinkError> {
    let rows = client
        .query(
            "SELECT topic, partition, next_offset FROM sinkd_offsets \
             WHERE pipeline = $1 AND target = $2",
            &[&pipeline, &target],
        )
        .await
        .map_err(|e| classify(&e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let topic: String = r.get(0);
            let partition: i32 = r.get(1);
            let tp = partitions
                .iter()
                .find(|(t, p)| **t == *topic && *p == partition)?;
            Some((tp.clone(), r.get::<_, i64>(2)))
        })
        .collect())
}

/// A checkpoint reader with its own connection, used by the source on assignment.
pub struct PgCheckpointReader {
    url: String,
    pipeline: String,
    target: String,
    client: Mutex<Option<Client>>,
}

impl PgCheckpointReader {
    /// A reader for one pipeline and target table (`schema.table`).
    pub fn new(url: &str, pipeline: &str, target: &str) -> Arc<PgCheckpointReader> {
        Arc::new(PgCheckpointReader {
            url: url.to_owned(),
            pipeline: pipeline.to_owned(),
            target: target.to_owned(),
            client: Mutex::new(None),
        })
    }
}

/// Connects and drives the connection on the runtime.
pub async fn connect(url: &str) -> Result<Client, SinkError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| classify(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    // sinkd's DDL is idempotent (`IF NOT EXISTS`, `IF EXISTS`): the server's notices that
    // it skipped something would only fill the log at info level.
    client
        .batch_execute("SET client_min_messages TO warning")
        .await
        .map_err(|e| classify(&e))?;
    Ok(client)
}

/// Begins a transaction the server ends if it stays idle for 15 s.
///
/// sinkd never waits on anything else inside a transaction, so one left idle belongs to a
/// writer that is paused (SIGSTOP, a frozen VM) or cut off by the network: the server ends
/// it, so its locks on rows and checkpoints do not hold up the instance that took its
/// partitions over. Woken up, the writer finds its connection gone, reconnects and is
/// fenced. `SET LOCAL`, so a connection pooler's shared session is left as it was.
pub async fn begin(client: &mut Client) -> Result<Transaction<'_>, SinkError> {
    let tx = client.transaction().await.map_err(|e| classify(&e))?;
    tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = '15s'")
        .await
        .map_err(|e| classify(&e))?;
    Ok(tx)
}

#[async_trait]
impl CheckpointReader for PgCheckpointReader {
    async fn load(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, SinkError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let client = connect(&self.url).await?;
            client
                .batch_execute(CREATE)
                .await
                .map_err(|e| classify(&e))?;
            *guard = Some(client);
        }
        let client = guard.as_ref().expect("connected above");
        let result = load(client, &self.pipeline, &self.target, partitions).await;
        if result.is_err() {
            *guard = None;
        }
        result
    }
}
