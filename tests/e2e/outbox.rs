//! `source: postgres_cdc` in outbox mode against the real servers: a PostgreSQL outbox
//! read through a logical replication slot and produced to Kafka as registered Avro.
//!
//! - 50,000 rows in many transactions (some rolled back) while the daemon is killed with
//!   -9 again and again: every committed row reaches Kafka at least once, in commit order
//!   per key, and no rolled-back row ever does.
//! - End to end: outbox → sinkd capture → Kafka → sinkd sink → MongoDB, in one daemon.
//! - A row that cannot become a record goes to the dead-letter topic with its cause, and
//!   a slot left behind by a deleted pipeline is reported, not dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use sinkd_tests::control::TOKEN;
use sinkd_tests::daemon::{Daemon, Workdir};
use sinkd_tests::outbox::{self, Captured, Written};
use sinkd_tests::stack;
use sinkd_tests::target::MONGO_DATABASE;

fn names(prefix: &str) -> (String, String, String, String) {
    let id = stack::unique(prefix).replace('-', "_").to_lowercase();
    let pipeline = id.replace('_', "-");
    let slot = format!("sinkd_{id}");
    let table = format!("outbox_{id}");
    (id, pipeline, slot, table)
}

fn start(file: &std::path::Path, dir: &Workdir, listen: &str) -> Daemon {
    Daemon::start_with_env(
        file,
        &dir.0.join("sinkd.log"),
        listen,
        &[("SINKD_API_TOKEN", TOKEN)],
    )
}

async fn status(listen: &str, name: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("http://{listen}/pipelines/{name}"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    match r {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Every committed row at least once, in commit order per key; nothing rolled back.
fn check_delivery(written: &Written, got: &[Captured]) {
    let rolled_back: HashSet<i64> = written.rolled_back.iter().copied().collect();
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for c in got {
        assert!(
            !rolled_back.contains(&c.seq),
            "rolled-back row {} reached Kafka",
            c.seq
        );
        // First appearances only: a re-send after a crash repeats rows already sent.
        if seen.insert(c.seq) {
            per_key.entry(c.key.clone()).or_default().push(c.seq);
        }
    }
    let missing = written.rows
        - written
            .committed
            .values()
            .flatten()
            .filter(|s| seen.contains(s))
            .count();
    assert_eq!(missing, 0, "{missing} committed rows never reached Kafka");
    assert_eq!(
        per_key, written.committed,
        "per key, records must follow commit order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_rows_survive_kill9_and_rollbacks() {
    let (id, pipeline, slot, table) = names("obk");
    let dir = Workdir::new(&format!("outbox-{id}"));
    let mut pg = stack::pg().await;
    outbox::create_table(&pg, &table).await;
    let aggregate = format!("order_{id}");
    let topic = format!("outbox.{aggregate}");
    stack::create_topic(&topic, 4).await;
    let file = outbox::capture_file(&dir, &pipeline, &table, "");
    let listen = format!("127.0.0.1:{}", stack::free_port());
    let mut daemon = start(&file, &dir, &listen);
    let log = dir.0.join("sinkd.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    outbox::wait_streaming(&pg, &slot, read_log).await;

    // The writer runs on its own connection while the daemon is killed over and over.
    let writer = {
        let (table, aggregate) = (table.clone(), aggregate.clone());
        tokio::spawn(async move {
            let mut client = stack::pg().await;
            outbox::write(
                &mut client,
                &table,
                &outbox::Plan {
                    aggregate_type: aggregate,
                    rows: 50_000,
                    keys: 200,
                    max_txn: 60,
                    rollback_every: 7,
                    pause: Duration::from_millis(4),
                },
            )
            .await
        })
    };
    let mut kills = 0;
    while kills < 6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        daemon.kill9();
        kills += 1;
        daemon = start(&file, &dir, &listen);
    }
    let written = writer.await.expect("writer");
    assert!(
        written.rolled_back.len() > 1000,
        "some transactions were rolled back"
    );
    eprintln!(
        "{} rows committed, {} rolled back, daemon killed {kills} times",
        written.rows,
        written.rolled_back.len()
    );
    let got = outbox::read_captured(&topic, written.rows, Duration::from_secs(180));
    eprintln!(
        "{} records read ({} distinct rows)",
        got.len(),
        written.rows
    );
    check_delivery(&written, &got);

    // Headers carry the other columns; the registry knows the subject.
    let first = &got[0];
    assert_eq!(first.headers.get("type"), Some(&Some("OrderPlaced".into())));
    assert_eq!(first.headers.get("tenant"), Some(&Some("t1".into())));
    assert!(first.headers.contains_key("id"));
    let subject = format!("{topic}-com.shop.OrderPlaced");
    let reg: serde_json::Value = reqwest::get(format!(
        "{}/subjects/{subject}/versions/latest",
        stack::registry_url()
    ))
    .await
    .expect("registry")
    .json()
    .await
    .expect("json");
    assert_eq!(reg["id"].as_u64(), Some(first.schema_id as u64), "{reg}");

    // The status shows the slot caught up once the last acknowledgements are confirmed.
    let start_wait = Instant::now();
    loop {
        let s = status(&listen, &pipeline).await;
        let lag = s["slot"]["lag_bytes"].as_u64();
        if s["state"] == "running"
            && s["slot"]["confirmed_lsn"].is_string()
            && lag.is_some_and(|l| l < 1_000_000)
        {
            assert_eq!(s["source"], "postgres_cdc");
            break;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(30),
            "slot not caught up: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let metrics = reqwest::Client::new()
        .get(format!("http://{listen}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for series in [
        "sinkd_cdc_slot_lag_bytes",
        "sinkd_cdc_slot_lag_seconds",
        "sinkd_cdc_confirmed_lsn",
        "sinkd_cdc_records_acknowledged_total",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
    daemon.terminate(Duration::from_secs(20));
    outbox::drop_capture(&pg, &slot, &table).await;
    let _ = &mut pg;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_to_kafka_to_mongodb_end_to_end() {
    let (id, pipeline, slot, table) = names("obm");
    let dir = Workdir::new(&format!("outbox-{id}"));
    let pg = stack::pg().await;
    outbox::create_table(&pg, &table).await;
    let aggregate = format!("order_{id}");
    let topic = format!("outbox.{aggregate}");
    stack::create_topic(&topic, 3).await;
    // This capture also deletes each row once the broker has it.
    let file = outbox::capture_file(&dir, &pipeline, &table, "");
    let text = std::fs::read_to_string(&file).expect("capture file");
    std::fs::write(
        &file,
        text.replace(
            "      schemas:",
            "      delete_after_capture: true\n      schemas:",
        ),
    )
    .expect("capture file");
    let collection = format!("orders_{id}");
    dir.file(
        "sink.yaml",
        &format!(
            "name: {pipeline}-read
source:
  kafka:
    bootstrap_servers: {brokers}
    topics: [{topic}]
    properties: {{ session.timeout.ms: \"6000\" }}
  registry:
    url: {registry}
sink:
  mongodb:
    url: {mongo}
    database: {MONGO_DATABASE}
    collection: {collection}
key:
  from: kafka_key
  columns: [order_id]
events:
  com.shop.OrderPlaced:
    op: upsert
  com.shop.OrderShipped:
    op: merge
batch:
  max_events: 500
  max_wait_ms: 100
",
            brokers = stack::brokers(),
            registry = stack::registry_url(),
            mongo = stack::mongo_url(),
        ),
    );
    let listen = format!("127.0.0.1:{}", stack::free_port());
    let mut daemon = start(&dir.0, &dir, &listen);
    let log = dir.0.join("sinkd.log");
    outbox::wait_streaming(&pg, &slot, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;

    // 300 orders placed; every third shipped in a later transaction; one transaction of
    // placements rolled back.
    let mut expected: HashMap<String, (String, i64, Option<String>)> = HashMap::new();
    for batch in 0..30 {
        let mut values = Vec::new();
        for i in 0..10 {
            let n = batch * 10 + i;
            let key = format!("o-{n}");
            values.push(format!(
                "('{aggregate}', '{key}', 'OrderPlaced', '{{\"order_id\": \"{key}\", \"customer\": \"c{n}\", \"total_cents\": {}}}')",
                n * 100
            ));
            expected.insert(key, (format!("c{n}"), (n * 100) as i64, None));
        }
        pg.batch_execute(&format!(
            "BEGIN; INSERT INTO {table} (aggregatetype, aggregateid, type, payload) VALUES {}; COMMIT",
            values.join(",")
        ))
        .await
        .expect("insert");
    }
    pg.batch_execute(&format!(
        "BEGIN; INSERT INTO {table} (aggregatetype, aggregateid, type, payload) VALUES \
         ('{aggregate}', 'ghost', 'OrderPlaced', '{{\"order_id\": \"ghost\", \"customer\": \"x\", \"total_cents\": 1}}'); ROLLBACK"
    ))
    .await
    .expect("rolled back");
    let mut shipped = Vec::new();
    for n in (0..300).step_by(3) {
        let key = format!("o-{n}");
        shipped.push(format!(
            "('{aggregate}', '{key}', 'OrderShipped', '{{\"order_id\": \"{key}\", \"carrier\": \"dhl\"}}')"
        ));
        expected.get_mut(&key).expect("placed").2 = Some("dhl".into());
    }
    pg.batch_execute(&format!(
        "INSERT INTO {table} (aggregatetype, aggregateid, type, payload) VALUES {}",
        shipped.join(",")
    ))
    .await
    .expect("shipped");

    let mongo = mongodb::Client::with_uri_str(stack::mongo_url())
        .await
        .expect("mongo");
    let coll = mongo
        .database(MONGO_DATABASE)
        .collection::<Document>(&collection);
    let start_wait = Instant::now();
    let docs: Vec<Document> = loop {
        let shipped_count = coll
            .count_documents(doc! { "carrier": "dhl" })
            .await
            .unwrap_or(0);
        let all = coll.count_documents(doc! {}).await.unwrap_or(0);
        if all == 300 && shipped_count == 100 {
            break stack::all_documents(&coll).await;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(90),
            "collection has {all} orders ({shipped_count} shipped)\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for d in &docs {
        let key = d.get_str("_id").expect("_id is the order id");
        let (customer, total, carrier) = expected
            .get(key)
            .unwrap_or_else(|| panic!("unexpected {d}"));
        assert_eq!(d.get_str("customer").ok(), Some(customer.as_str()), "{d}");
        assert_eq!(d.get_i64("total_cents").ok(), Some(*total), "{d}");
        assert_eq!(d.get_str("carrier").ok(), carrier.as_deref(), "{d}");
    }
    // Both pipelines show in one status list.
    let s = status(&listen, &pipeline).await;
    assert_eq!(s["counts"]["applied"], 400, "{s}");
    // Every captured row was deleted after its acknowledgement.
    let start_wait = Instant::now();
    loop {
        let left: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(30),
            "{left} rows not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.terminate(Duration::from_secs(20));
    outbox::drop_capture(&pg, &slot, &table).await;
    let _ = coll.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rows_are_dead_lettered_and_left_slots_reported() {
    let (id, pipeline, slot, table) = names("obd");
    let dir = Workdir::new(&format!("outbox-{id}"));
    let pg = stack::pg().await;
    outbox::create_table(&pg, &table).await;
    let aggregate = format!("order_{id}");
    let topic = format!("outbox.{aggregate}");
    let dlq = format!("outbox_dlq_{id}");
    stack::create_topic(&topic, 1).await;
    stack::create_topic(&dlq, 1).await;
    // A slot named like sinkd's that no pipeline claims: reported, never dropped.
    let stale = format!("sinkd_gone_{id}");
    pg.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&stale],
    )
    .await
    .expect("stale slot");
    let file = outbox::capture_file(
        &dir,
        &pipeline,
        &table,
        &format!("on_error: dead_letter\ndead_letter_topic: {dlq}\n"),
    );
    let listen = format!("127.0.0.1:{}", stack::free_port());
    let mut daemon = start(&file, &dir, &listen);
    let log = dir.0.join("sinkd.log");
    outbox::wait_streaming(&pg, &slot, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    pg.batch_execute(&format!(
        "INSERT INTO {table} (aggregatetype, aggregateid, type, payload) VALUES
         ('{aggregate}', 'a', 'OrderPlaced', '{{\"order_id\": \"a\", \"customer\": \"c\", \"total_cents\": 1}}'),
         ('{aggregate}', 'b', 'OrderPlaced', '{{\"order_id\": \"b\", \"total_cents\": \"lots\"}}'),
         ('{aggregate}', 'c', 'Unheard', '{{}}'),
         ('{aggregate}', 'd', 'OrderPlaced', '{{\"order_id\": \"d\", \"customer\": \"c\", \"total_cents\": 4}}')"
    ))
    .await
    .expect("rows");
    let good = outbox::read_captured(&topic, 2, Duration::from_secs(60));
    assert_eq!(
        good.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
        ["a", "d"],
        "{}",
        daemon.log()
    );
    let dead = stack::read_topic(&dlq, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "{}", daemon.log());
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let causes: Vec<String> = dead
        .iter()
        .map(|m| {
            let h = m.headers().expect("headers");
            let cause = h
                .iter()
                .find(|x| x.key == "sinkd.errors.message")
                .expect("cause");
            String::from_utf8_lossy(cause.value.expect("value")).into_owned()
        })
        .collect();
    assert!(
        causes[0].contains(&table) && causes[0].contains("does not fit com.shop.OrderPlaced"),
        "{causes:?}"
    );
    assert!(
        causes[1].contains("no Avro schema is declared for event type `Unheard`"),
        "{causes:?}"
    );
    let body: serde_json::Value =
        serde_json::from_slice(dead[0].payload().expect("row")).expect("JSON row");
    assert_eq!(body["aggregateid"], "b");

    let s = status(&listen, &pipeline).await;
    assert_eq!(s["counts"]["dead_lettered"], 2, "{s}");
    let reported: Vec<&str> = s["unclaimed_slots"]
        .as_array()
        .expect("unclaimed_slots")
        .iter()
        .filter_map(|x| x["slot"].as_str())
        .collect();
    assert!(reported.contains(&stale.as_str()), "{s}");
    assert!(daemon.log().contains(&stale), "the left slot is logged");
    daemon.terminate(Duration::from_secs(20));
    let still: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&stale],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(still, 1, "sinkd never drops a slot");
    pg.execute("SELECT pg_drop_replication_slot($1)", &[&stale])
        .await
        .expect("drop stale");
    outbox::drop_capture(&pg, &slot, &table).await;
}
