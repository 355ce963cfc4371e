//! The outbox side of the capture tests and benchmark: an outbox table in the local
//! PostgreSQL, a capture pipeline file for it, transactions of rows (some rolled back),
//! and reading what reached Kafka.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value;
use rdkafka::Message;
use rdkafka::message::Headers;

use crate::daemon::Workdir;
use crate::stack;

/// The example's `OrderPlaced` schema (order_id, customer, total_cents, note).
pub const ORDER_PLACED: &str = include_str!("../../config/examples/schemas/order-placed.avsc");
/// The example's `OrderShipped` schema (order_id, carrier).
pub const ORDER_SHIPPED: &str = include_str!("../../config/examples/schemas/order-shipped.avsc");

/// Creates (again) an outbox table with Debezium's column names and one extra column.
pub async fn create_table(client: &tokio_postgres::Client, table: &str) {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (
               id bigserial PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
               type text NOT NULL, payload jsonb NOT NULL, tenant text)"
        ))
        .await
        .expect("outbox table");
}

/// Drops what a capture pipeline left: its slot (waiting for its walsender to go), its
/// publication and the table. The test plays the operator here; sinkd never drops slots.
pub async fn drop_capture(client: &tokio_postgres::Client, slot: &str, table: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let r = client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        if r.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {slot}; DROP TABLE IF EXISTS {table}"
        ))
        .await;
}

/// Writes the schema files and a capture pipeline for `table` into `dir`; `extra` is
/// appended at the top level (e.g. `on_error: dead_letter`). Returns the file.
pub fn capture_file(dir: &Workdir, name: &str, table: &str, extra: &str) -> PathBuf {
    dir.file("order-placed.avsc", ORDER_PLACED);
    dir.file("order-shipped.avsc", ORDER_SHIPPED);
    dir.file(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}
source:
  postgres_cdc:
    url: {url}
    tables: [public.{table}]
    outbox:
      topic: \"outbox.{{aggregate_type}}\"
      schemas:
        OrderPlaced: order-placed.avsc
        OrderShipped: order-shipped.avsc
sink:
  kafka:
    bootstrap_servers: {brokers}
  registry:
    url: {registry}
{extra}",
            url = stack::postgres_url(),
            brokers = stack::brokers(),
            registry = stack::registry_url(),
        ),
    )
}

/// Waits until `slot` exists and a walsender streams from it.
pub async fn wait_streaming(client: &tokio_postgres::Client, slot: &str, log: impl Fn() -> String) {
    let start = Instant::now();
    loop {
        let active: Option<bool> = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("pg_replication_slots")
            .map(|r| r.get(0));
        if active == Some(true) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "slot {slot} is not streaming\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a writer committed: per aggregate id, the sequence numbers in commit order; and
/// the sequence numbers of rows whose transaction was rolled back.
#[derive(Debug, Default)]
pub struct Written {
    /// Committed sequence numbers per aggregate id, in commit order.
    pub committed: BTreeMap<String, Vec<i64>>,
    /// Rolled-back sequence numbers.
    pub rolled_back: Vec<i64>,
    /// Committed rows.
    pub rows: usize,
}

/// What [`write`] writes.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The `aggregatetype` of every row.
    pub aggregate_type: String,
    /// Committed rows to write.
    pub rows: usize,
    /// Distinct aggregate ids.
    pub keys: usize,
    /// Rows per transaction are 1..=this.
    pub max_txn: usize,
    /// Every this-th transaction is rolled back (0: none).
    pub rollback_every: usize,
    /// Sleep between transactions.
    pub pause: Duration,
}

/// Inserts `OrderPlaced` rows as planned; rolled-back rows are extra (`rows` counts
/// committed ones). Sequence numbers (`total_cents`) rise across all rows, so per key
/// they follow commit order.
pub async fn write(client: &mut tokio_postgres::Client, table: &str, plan: &Plan) -> Written {
    let Plan {
        aggregate_type,
        rows,
        keys,
        max_txn,
        rollback_every,
        pause,
    } = plan.clone();
    let mut w = Written::default();
    let mut seq: i64 = 0;
    let mut txn = 0usize;
    while w.rows < rows {
        txn += 1;
        let rollback = rollback_every > 0 && txn.is_multiple_of(rollback_every);
        let size = 1 + (txn * 7919) % max_txn;
        let size = if rollback {
            size
        } else {
            size.min(rows - w.rows)
        };
        let mut values = Vec::with_capacity(size);
        let mut batch = Vec::with_capacity(size);
        for _ in 0..size {
            seq += 1;
            let key = format!("agg-{}", (seq as usize * 31) % keys);
            values.push(format!(
                "('{aggregate_type}', '{key}', 'OrderPlaced', \
                 '{{\"order_id\": \"{key}\", \"customer\": \"c{txn}\", \"total_cents\": {seq}}}', 't1')"
            ));
            batch.push((key, seq));
        }
        let t = client.transaction().await.expect("begin");
        t.batch_execute(&format!(
            "INSERT INTO {table} (aggregatetype, aggregateid, type, payload, tenant) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert");
        if rollback {
            t.rollback().await.expect("rollback");
            w.rolled_back.extend(batch.into_iter().map(|(_, s)| s));
        } else {
            t.commit().await.expect("commit");
            w.rows += batch.len();
            for (key, s) in batch {
                w.committed.entry(key).or_default().push(s);
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    w
}

/// One record read back: key, sequence number (`total_cents`), headers.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The Kafka key.
    pub key: String,
    /// The order's `total_cents`, the writer's sequence number.
    pub seq: i64,
    /// The record's headers as text.
    pub headers: HashMap<String, Option<String>>,
    /// The registry id in the value's frame.
    pub schema_id: u32,
}

/// Reads `topic` from the start until it holds every one of `expected` distinct sequence
/// numbers or `timeout` passes; decodes each value with the `OrderPlaced` schema.
pub fn read_captured(topic: &str, expected: usize, timeout: Duration) -> Vec<Captured> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let schema = Schema::parse_str(ORDER_PLACED).expect("schema");
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .expect("reader");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", stack::brokers())
        .set("group.id", stack::unique("outbox-reader"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let start = Instant::now();
    let mut out = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    while distinct.len() < expected && start.elapsed() < timeout {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let key = String::from_utf8_lossy(m.key().expect("key")).into_owned();
        let value = m.payload().expect("value");
        assert_eq!(value[0], 0, "Confluent magic byte");
        let schema_id = u32::from_be_bytes(value[1..5].try_into().expect("id"));
        let datum = reader.read_value(&mut &value[5..]).expect("Avro");
        let Value::Record(fields) = datum else {
            panic!("not a record")
        };
        let seq = match &fields[2].1 {
            Value::Long(n) => *n,
            other => panic!("total_cents is {other:?}"),
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            x.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        distinct.insert(seq);
        out.push(Captured {
            key,
            seq,
            headers,
            schema_id,
        });
    }
    out
}
