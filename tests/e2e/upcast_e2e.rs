//! Upcasters end to end on the real servers: `OrderPlaced` registered as v1, v2 and v3 in
//! one subject (and under its old name `OrderCreated`), produced interleaved with the other
//! shop events, builds exactly the table that the same stream written entirely as v3
//! builds: same rows, same values, same column types.

use std::time::Duration;

use sinkd_tests::daemon::{Daemon, Workdir};
use sinkd_tests::evolution::{self, Writer};
use sinkd_tests::stack;
use sinkd_tests::target::Target;

/// Every business column of the table as one JSON document, in key order.
async fn table_json(client: &tokio_postgres::Client, table: &str) -> serde_json::Value {
    let row = client
        .query_one(
            &format!(
                "SELECT coalesce(json_agg(t ORDER BY order_id), '[]')::text FROM \
                 (SELECT order_id, customer, buyer_email, status, placed_at, total_cents, \
                         currency, note, address, item_count FROM \"{table}\") t"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {e}"));
    serde_json::from_str(row.get::<_, &str>(0)).unwrap()
}

async fn column_types(client: &tokio_postgres::Client, table: &str) -> Vec<(String, String)> {
    client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = $1 ORDER BY column_name",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_of_v1_v2_and_v3_events_builds_the_table_an_all_v3_log_builds() {
    let name = stack::unique("upcast");
    let dir = Workdir::new(&name);
    let stream = evolution::stream(4_000, 400, 11);
    let writers = stream.writers();
    assert_eq!(
        writers.len(),
        4,
        "every writer version is in the stream: {writers:?}"
    );

    let mut ends = Vec::new();
    for (suffix, as_written) in [("mixed", true), ("v3", false)] {
        let topic = format!("{name}.{suffix}");
        stack::create_topic(&topic, 4).await;
        let registered = evolution::register(&topic).await;
        let end = stack::produce(&topic, stream.records(&registered, as_written)).await;
        let pipeline = format!("{name}-{suffix}");
        dir.file(
            &format!("{suffix}.yaml"),
            &evolution::pipeline_yaml(&pipeline, &topic, &pipeline),
        );
        ends.push((pipeline, end));
    }
    // One daemon runs both pipelines (a folder of pipeline files).
    let daemon = Daemon::start(&dir.0, &dir.0.join("sinkd.log"));
    for (pipeline, end) in &ends {
        Target::postgres()
            .wait_caught_up(pipeline, end, Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e}\n--- sinkd log ---\n{}", daemon.log()));
    }

    let pg = stack::pg().await;
    let (mixed, v3) = (&ends[0].0, &ends[1].0);
    let mixed_rows = table_json(&pg, mixed).await;
    let v3_rows = table_json(&pg, v3).await;
    let rows = v3_rows.as_array().unwrap();
    assert!(rows.len() > 100, "a real table: {} rows", rows.len());
    assert!(
        rows.iter().any(|r| r["buyer_email"].is_string())
            && rows.iter().any(|r| r["currency"] == "USD"),
        "the v3 fields carry data"
    );
    assert_eq!(mixed_rows, v3_rows, "the tables differ");
    assert_eq!(column_types(&pg, mixed).await, column_types(&pg, v3).await);
    let log = daemon.log();
    assert!(
        !log.contains("dead-lettered") && !log.contains("ERROR"),
        "{log}"
    );
    // The placements really were written by every version.
    for w in [
        Writer::CreatedV1,
        Writer::PlacedV1,
        Writer::PlacedV2,
        Writer::PlacedV3,
    ] {
        assert!(writers[&w] > 50, "{w:?}: {writers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upcaster_failure_is_dead_lettered_with_its_cause_and_the_rest_applied() {
    use apache_avro::types::Value;
    use rdkafka::message::{Headers, Message};

    let name = stack::unique("upcast-dlq");
    let dir = Workdir::new(&name);
    let topic = format!("{name}.orders");
    let dlq = format!("{name}.dlq");
    stack::create_topic(&topic, 1).await;
    stack::create_topic(&dlq, 1).await;
    let registered = evolution::register(&topic).await;
    let mut records = evolution::stream(200, 20, 5).records(&registered, true);
    // A v2 placement whose amount cannot become cents in a long: the compute step fails.
    let s = |v: &str| Value::String(v.into());
    let poison = Value::Record(vec![
        ("order_id".into(), s("order-poison")),
        (
            "buyer".into(),
            Value::Record(vec![
                ("name".into(), s("Mallory")),
                ("email".into(), Value::Union(0, Box::new(Value::Null))),
            ]),
        ),
        ("status".into(), s("new")),
        ("placed_at".into(), Value::TimestampMillis(0)),
        ("amount_eur".into(), Value::Double(1e300)),
        ("currency".into(), s("EUR")),
        ("note".into(), Value::Union(0, Box::new(Value::Null))),
    ]);
    records.insert(
        100,
        stack::Record {
            key: b"order-poison".to_vec(),
            value: Some(registered.encode(Writer::PlacedV2, &poison)),
            headers: Vec::new(),
        },
    );
    let end = stack::produce(&topic, records).await;
    let yaml = evolution::pipeline_yaml(&name, &topic, &name).replace(
        "on_error: ${ON_ERROR:-fail}",
        &format!("on_error: dead_letter\ndead_letter_topic: {dlq}"),
    );
    let file = dir.file("p.yaml", &yaml);
    let daemon = Daemon::start(&file, &dir.0.join("sinkd.log"));
    Target::postgres()
        .wait_caught_up(&name, &end, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- sinkd log ---\n{}", daemon.log()));

    let letters = stack::read_topic(&dlq, 1, Duration::from_secs(30));
    assert_eq!(letters.len(), 1, "one dead letter");
    let h: std::collections::HashMap<String, String> = letters[0]
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
            )
        })
        .collect();
    assert_eq!(letters[0].key(), Some(&b"order-poison"[..]));
    assert_eq!(h["sinkd.errors.code"], "upcast");
    assert_eq!(h["sinkd.errors.offset"], "100");
    let message = &h["sinkd.errors.message"];
    assert!(
        message.contains("upcasting com.shop.OrderPlaced v2 failed: compute: field `total_cents`"),
        "{message}"
    );
    let pg = stack::pg().await;
    let rows: i64 = pg
        .query_one(&format!("SELECT count(*) FROM \"{name}\""), &[])
        .await
        .unwrap()
        .get(0);
    let poisoned: i64 = pg
        .query_one(
            &format!("SELECT count(*) FROM \"{name}\" WHERE order_id = 'order-poison'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        rows > 0 && poisoned == 0,
        "rows {rows}, poisoned {poisoned}"
    );
}

/// A topic with the evolution fixtures' schemas, a reader schema registered under its own
/// subject, and one `OrderPlaced` v1 record, base64-framed for `sinkd preview`.
struct ReaderCase {
    dir: Workdir,
    topic: String,
    name: String,
    subject: String,
    input: std::path::PathBuf,
}

async fn reader_case(prefix: &str, reader: &str) -> ReaderCase {
    use apache_avro::types::Value;
    use base64::Engine;

    let name = stack::unique(prefix);
    let dir = Workdir::new(&name);
    let topic = format!("{name}.orders");
    let registered = evolution::register(&topic).await;
    let subject = format!("{name}-reader");
    stack::register(&subject, reader).await;
    let s = |v: &str| Value::String(v.into());
    let v1 = Value::Record(vec![
        ("order_id".into(), s("o-1")),
        ("customer".into(), s("Ann")),
        ("status".into(), s("new")),
        ("placed_at_ms".into(), Value::Long(1)),
        ("amount".into(), Value::Double(2.5)),
        ("note".into(), Value::Union(0, Box::new(Value::Null))),
    ]);
    let frame = registered.encode(Writer::PlacedV1, &v1);
    let input = dir.file(
        "in.txt",
        &format!(
            "o-1\t{}\n",
            base64::engine::general_purpose::STANDARD.encode(frame)
        ),
    );
    ReaderCase {
        dir,
        topic,
        name,
        subject,
        input,
    }
}

impl ReaderCase {
    /// The evolution pipeline with `upcasters` (and what follows it) replaced by `tail`.
    fn config(&self, tail: impl FnOnce(&str) -> String) -> std::path::PathBuf {
        let example = evolution::pipeline_yaml(&self.name, &self.topic, &self.name);
        let start = example.find("upcasters:").unwrap();
        let yaml = format!("{}{}", &example[..start], tail(&example[start..]));
        self.dir.file("p.yaml", &yaml)
    }

    /// `sinkd <args…> <config> [input]` against the stack's registry: success, and what it
    /// printed.
    fn sinkd(
        &self,
        args: &[&str],
        config: &std::path::Path,
        input: bool,
    ) -> (bool, String, String) {
        let mut command = std::process::Command::new(sinkd_tests::daemon::binary());
        command.args(args).arg(config);
        if input {
            command.arg(&self.input);
        }
        let out = command
            .env("SCHEMA_REGISTRY_URL", stack::registry_url())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_schema_from_the_registry_resolves_values_in_the_decoder() {
    let case = reader_case(
        "upcast-reader",
        r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
            {"name":"order_id","type":"string"},
            {"name":"amount_eur","type":"double","aliases":["amount"]},
            {"name":"channel","type":"string","default":"web"}]}"#,
    )
    .await;
    let subject = case.subject.clone();
    let config = case.config(|rest| {
        let events = rest.find("\nevents:").unwrap();
        format!(
            "upcasters:\n  com.shop.OrderPlaced:\n    reader_schema: {{ subject: {{ name: {subject} }} }}\n    chain:\n      - from: 1\n        steps:\n          - convert: {{ field: amount_eur, to: long, multiply: 100 }}\n          - rename: {{ from: amount_eur, to: total_cents }}\n{}",
            &rest[events..]
        )
    });
    let (ok, stdout, stderr) = case.sinkd(
        &["upcast", "--format", "confluent", "--config"],
        &config,
        true,
    );
    assert!(ok, "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        doc["in"],
        serde_json::json!({"type": "com.shop.OrderPlaced", "version": 1})
    );
    assert_eq!(
        doc["event"]["value"],
        serde_json::json!({"order_id": "o-1", "total_cents": 250, "channel": "web"})
    );
    assert_eq!(doc["op"]["key"], serde_json::json!({"order_id": "o-1"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_that_do_not_fit_a_reader_schema_from_the_registry_stop_before_applying() {
    let case = reader_case(
        "upcast-reader-check",
        r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
            {"name":"order_id","type":"string"},
            {"name":"amount_eur","type":"double","aliases":["amount"]}]}"#,
    )
    .await;
    let subject = case.subject.clone();
    // `customer` is in the writer schema but not in the reader schema the rules read.
    let config = case.config(|_| {
        format!(
            "upcasters:\n  com.shop.OrderPlaced:\n    reader_schema: {{ subject: {{ name: {subject} }} }}\n    chain:\n      - from: 1\n        steps:\n          - rename: {{ from: amount_eur, to: total }}\nevents:\n  com.shop.OrderPlaced:\n    op: upsert\n    columns: {{ total: total, who: customer }}\nunknown_events: skip\n"
        )
    });
    let (ok, _, stderr) = case.sinkd(&["validate"], &config, false);
    assert!(ok, "validation fetches nothing: {stderr}");
    let (ok, stdout, stderr) = case.sinkd(
        &["preview", "--format", "confluent", "--config"],
        &config,
        true,
    );
    let said = format!("{stdout}{stderr}");
    assert!(!ok, "{said}");
    assert!(
        said.contains("events.com.shop.OrderPlaced.columns.who")
            && said.contains(&format!(
                "`customer` is not a field in com.shop.OrderPlaced from subject {subject} after its upcasters"
            )),
        "{said}"
    );
}
