//! End to end on the real servers: broker, registry and PostgreSQL from `docker/up`, and
//! the real `sinkd` binary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;
use rdkafka::message::{Headers, Message};
use sinkd_tests::daemon::{Daemon, Workdir};
use sinkd_tests::{shop, stack};

struct Setup {
    dir: Workdir,
    pipeline: String,
    topic: String,
    table: String,
    file: PathBuf,
}

impl Setup {
    async fn new(name: &str, partitions: i32, extra: &str) -> Setup {
        let pipeline = stack::unique(name);
        let topic = format!("{pipeline}.orders");
        let table = pipeline.clone();
        stack::create_topic(&topic, partitions).await;
        let dir = Workdir::new(&pipeline);
        let file = dir.file(
            "pipeline.yaml",
            &shop::pipeline_yaml(&pipeline, &topic, &table, extra),
        );
        Setup {
            dir,
            pipeline,
            topic,
            table,
            file,
        }
    }

    fn start(&self) -> Daemon {
        Daemon::start(&self.file, &self.dir.0.join("sinkd.log"))
    }

    async fn caught_up(
        &self,
        pg: &tokio_postgres::Client,
        ends: &HashMap<i32, i64>,
        daemon: &Daemon,
    ) {
        stack::wait_caught_up(pg, &self.pipeline, ends, Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e}\n--- sinkd log ---\n{}", daemon.log()));
    }
}

fn merge_ends(a: &mut HashMap<i32, i64>, b: HashMap<i32, i64>) {
    for (p, o) in b {
        let e = a.entry(p).or_insert(0);
        *e = (*e).max(o);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_events_over_four_partitions_give_the_expected_table() {
    let s = Setup::new("e2e", 4, "").await;
    let events = shop::generate(10_000, 500, 42);
    let ends = shop::publish(&s.topic, &events).await;
    let daemon = s.start();
    let pg = stack::pg().await;
    s.caught_up(&pg, &ends, &daemon).await;
    let got = stack::read_orders(&pg, &s.table).await;
    let want = shop::expected(&events);
    assert!(want.len() > 100, "the stream keeps a good share of orders");
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_six_times_during_a_run_leaves_an_exact_table() {
    let s = Setup::new(
        "crash",
        8,
        "batch:\n  max_events: 2000\n  max_wait_ms: 100\n",
    )
    .await;
    let events = shop::generate(50_000, 2_000, 7);
    let ids = shop::register_schemas(&s.topic).await;
    let records = shop::records(&ids, &events);
    // Produce while the daemon is being killed: ten slices, a second apart.
    let topic = s.topic.clone();
    let producer = tokio::spawn(async move {
        let mut ends = HashMap::new();
        let mut records = records;
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(5_000));
            merge_ends(&mut ends, stack::produce(&topic, records).await);
            records = rest;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        ends
    });
    let pg = stack::pg().await;
    let mut kills = 0;
    let mut last_progress = 0i64;
    let mut daemon = s.start();
    while kills < 6 {
        // Wait for progress, then kill at a random moment of the next stretch of work.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let done: i64 = stack::checkpoints(&pg, &s.pipeline).await.values().sum();
            if done > last_progress {
                last_progress = done;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no progress\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..400))).await;
        daemon.kill9();
        kills += 1;
        daemon = s.start();
    }
    let ends = producer.await.unwrap();
    s.caught_up(&pg, &ends, &daemon).await;
    assert_eq!(ends.values().sum::<i64>(), 50_000);
    let got = stack::read_orders(&pg, &s.table).await;
    assert_eq!(got, shop::expected(&events), "after {kills} kills");
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_the_group_offsets_back_does_not_reapply_anything() {
    let s = Setup::new("redeliver", 4, "").await;
    let first = shop::generate(3_000, 300, 11);
    let mut ends = shop::publish(&s.topic, &first).await;
    let pg = stack::pg().await;
    let mut daemon = s.start();
    s.caught_up(&pg, &ends, &daemon).await;
    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.log()
    );
    let before = stack::read_orders(&pg, &s.table).await;
    assert_eq!(before, shop::expected(&first));

    // Behind the daemon's back: the group's committed offsets go back to the start.
    let group = format!("sinkd-{}", s.pipeline);
    let zeros: HashMap<i32, i64> = (0..4).map(|p| (p, 0)).collect();
    stack::commit_group_offsets(&group, &s.topic, &zeros);
    assert_eq!(stack::group_offsets(&group, &s.topic, 4), zeros);

    let daemon = s.start();
    // New events after the restart prove the daemon ran; the old ones must not count twice.
    let second = shop::generate(500, 300, 12);
    let ids = shop::register_schemas(&s.topic).await;
    merge_ends(
        &mut ends,
        stack::produce(&s.topic, shop::records(&ids, &second)).await,
    );
    s.caught_up(&pg, &ends, &daemon).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        stack::read_orders(&pg, &s.table).await,
        shop::expected(&all)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_record_is_dead_lettered_and_the_rest_applied() {
    let s = Setup::new(
        "dlq",
        1,
        "on_error: dead_letter\nunknown_events: dead_letter\ndead_letter_topic: {dlq}\n",
    )
    .await;
    let dlq = format!("{}.dlq", s.pipeline);
    std::fs::write(
        &s.file,
        std::fs::read_to_string(&s.file)
            .unwrap()
            .replace("{dlq}", &dlq),
    )
    .unwrap();
    stack::create_topic(&dlq, 1).await;

    let events = shop::generate(400, 40, 3);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events[..200]);
    let poison = vec![1u8, 0, 0, 0, 1, 42, 42];
    records.push(stack::Record {
        key: b"order-poison".to_vec(),
        value: Some(poison.clone()),
        headers: vec![("trace".into(), "abc".into())],
    });
    // An event type the pipeline does not declare.
    let gift = r#"{"type":"record","name":"GiftWrapped","namespace":"com.shop","fields":[{"name":"order_id","type":"string"}]}"#;
    let gift_id = stack::register(&format!("{}-com.shop.GiftWrapped", s.topic), gift).await;
    let gift_value = stack::encode(
        gift_id,
        &apache_avro::Schema::parse_str(gift).unwrap(),
        &apache_avro::types::Value::Record(vec![(
            "order_id".into(),
            apache_avro::types::Value::String("order-000001".into()),
        )]),
    );
    records.push(stack::Record {
        key: b"order-000001".to_vec(),
        value: Some(gift_value.clone()),
        headers: vec![],
    });
    records.extend(shop::records(&ids, &events[200..]));
    // A tombstone deletes by key.
    let victim = shop::expected(&events).keys().next().unwrap().clone();
    records.push(stack::Record {
        key: victim.clone().into_bytes(),
        value: None,
        headers: vec![],
    });
    let ends = stack::produce(&s.topic, records).await;
    let daemon = s.start();
    let pg = stack::pg().await;
    s.caught_up(&pg, &ends, &daemon).await;

    let mut want = shop::expected(&events);
    want.remove(&victim);
    assert_eq!(stack::read_orders(&pg, &s.table).await, want);

    let letters = stack::read_topic(&dlq, 2, Duration::from_secs(30));
    assert_eq!(letters.len(), 2, "two dead letters");
    let headers = |m: &rdkafka::message::OwnedMessage| -> HashMap<String, String> {
        m.headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect()
    };
    let letter = &letters[0];
    assert_eq!(letter.payload(), Some(&poison[..]));
    assert_eq!(letter.key(), Some(&b"order-poison"[..]));
    let h = headers(letter);
    assert_eq!(h["trace"], "abc");
    assert_eq!(h["sinkd.errors.code"], "wrong_magic");
    assert_eq!(h["sinkd.errors.class"], "bad_record");
    assert_eq!(h["sinkd.errors.topic"], s.topic);
    assert_eq!(h["sinkd.errors.partition"], "0");
    assert_eq!(h["sinkd.errors.offset"], "200");
    assert!(h["sinkd.errors.message"].contains("magic byte"));
    assert_eq!(letters[1].payload(), Some(&gift_value[..]));
    let h = headers(&letters[1]);
    assert_eq!(h["sinkd.errors.class"], "unknown_event_type");
    assert_eq!(h["sinkd.errors.offset"], "201");
    assert!(h["sinkd.errors.message"].contains("com.shop.GiftWrapped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_fail_policy_a_poisoned_record_stops_the_pipeline_and_says_where() {
    let s = Setup::new("fail", 1, "").await;
    let events = shop::generate(100, 10, 5);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events[..50]);
    records.push(stack::Record {
        key: b"k".to_vec(),
        value: Some(vec![0, 0, 0]),
        headers: vec![],
    });
    records.extend(shop::records(&ids, &events[50..]));
    stack::produce(&s.topic, records).await;
    let mut daemon = s.start();
    let code = daemon.wait(Duration::from_secs(60));
    let log = daemon.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("topic {} partition 0 offset 50", s.topic))
            && log.contains("shorter than the 5-byte Confluent header"),
        "{log}"
    );
    // Everything before the bad record is applied and checkpointed; nothing after it.
    let pg = stack::pg().await;
    assert_eq!(
        stack::checkpoints(&pg, &s.pipeline).await.get(&0),
        Some(&50)
    );
    assert_eq!(
        stack::read_orders(&pg, &s.table).await,
        shop::expected(&events[..50])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_the_table_rejects_is_dead_lettered_and_the_rest_applied() {
    let s = Setup::new(
        "reject",
        2,
        "on_error: dead_letter\ndead_letter_topic: {dlq}\n",
    )
    .await;
    let dlq = format!("{}.dlq", s.pipeline);
    std::fs::write(
        &s.file,
        std::fs::read_to_string(&s.file)
            .unwrap()
            .replace("{dlq}", &dlq),
    )
    .unwrap();
    stack::create_topic(&dlq, 1).await;
    let events = shop::generate(1_000, 100, 21);
    // A customer placed exactly once: the table refuses that row.
    let mut placed_by: HashMap<String, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.kind == shop::Kind::Placed) {
        let apache_avro::types::Value::Record(f) = &e.value else {
            unreachable!()
        };
        let apache_avro::types::Value::String(c) = &f[1].1 else {
            unreachable!()
        };
        *placed_by.entry(c.clone()).or_default() += 1;
    }
    // ...and whose row survives, so compaction cannot fold it away before the table sees it.
    let survivors = shop::expected(&events);
    let banned = survivors
        .values()
        .filter_map(|r| r.customer.clone())
        .find(|c| placed_by.get(c) == Some(&1))
        .expect("a surviving customer placed once");
    let pg = stack::pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE \"{t}\" (order_id text PRIMARY KEY, customer text CHECK (customer <> '{banned}'))",
        t = s.table
    ))
    .await
    .unwrap();
    let ends = shop::publish(&s.topic, &events).await;
    let daemon = s.start();
    s.caught_up(&pg, &ends, &daemon).await;
    let kept: Vec<_> = events
        .iter()
        .filter(|e| {
            let apache_avro::types::Value::Record(f) = &e.value else {
                unreachable!()
            };
            !(e.kind == shop::Kind::Placed
                && f[1].1 == apache_avro::types::Value::String(banned.clone()))
        })
        .cloned()
        .collect();
    assert_eq!(kept.len(), events.len() - 1);
    assert_eq!(
        stack::read_orders(&pg, &s.table).await,
        shop::expected(&kept)
    );
    let letters = stack::read_topic(&dlq, 1, Duration::from_secs(30));
    assert_eq!(letters.len(), 1);
    let class = letters[0]
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "sinkd.errors.class")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(class.as_deref(), Some("rejected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn new_fields_add_columns_and_a_type_change_stops_with_the_column_named() {
    let s = Setup::new("evolve", 1, "").await;
    let events = shop::generate(200, 20, 8);
    let mut ends = shop::publish(&s.topic, &events).await;
    let pg = stack::pg().await;
    let mut daemon = s.start();
    s.caught_up(&pg, &ends, &daemon).await;

    // OrderPlaced v2 gains `channel` (BACKWARD compatible: it has a default).
    let v2 = shop::ORDER_PLACED.replace(
        r#"{"name":"note","#,
        r#"{"name":"channel","type":"string","default":"web"},{"name":"note","#,
    );
    let subject = format!("{}-com.shop.OrderPlaced", s.topic);
    let id = stack::register(&subject, &v2).await;
    let schema = apache_avro::Schema::parse_str(&v2).unwrap();
    let value = apache_avro::types::Value::Record(vec![
        (
            "order_id".into(),
            apache_avro::types::Value::String("order-new".into()),
        ),
        (
            "customer".into(),
            apache_avro::types::Value::String("c".into()),
        ),
        (
            "status".into(),
            apache_avro::types::Value::String("placed".into()),
        ),
        (
            "placed_at".into(),
            apache_avro::types::Value::TimestampMillis(0),
        ),
        (
            "channel".into(),
            apache_avro::types::Value::String("app".into()),
        ),
        (
            "note".into(),
            apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
        ),
    ]);
    merge_ends(
        &mut ends,
        stack::produce(
            &s.topic,
            vec![stack::Record {
                key: b"order-new".to_vec(),
                value: Some(stack::encode(id, &schema, &value)),
                headers: vec![],
            }],
        )
        .await,
    );
    s.caught_up(&pg, &ends, &daemon).await;
    let channel: Option<String> = pg
        .query_one(
            &format!(
                "SELECT channel FROM \"{}\" WHERE order_id = 'order-new'",
                s.table
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(channel.as_deref(), Some("app"));

    // OrderUpdated with `status` as an int cannot be merged into the text column status.
    let updated_subject = format!("{}-com.shop.OrderUpdated", s.topic);
    reqwest::Client::new()
        .put(format!(
            "{}/config/{updated_subject}",
            stack::registry_url()
        ))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"compatibility":"NONE"}"#)
        .send()
        .await
        .unwrap();
    let bad =
        shop::ORDER_UPDATED.replace(r#""status","type":"string""#, r#""status","type":"int""#);
    let id = stack::register(&updated_subject, &bad).await;
    let schema = apache_avro::Schema::parse_str(&bad).unwrap();
    let value = apache_avro::types::Value::Record(vec![
        (
            "order_id".into(),
            apache_avro::types::Value::String("order-new".into()),
        ),
        ("status".into(), apache_avro::types::Value::Int(2)),
        (
            "address".into(),
            apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
        ),
    ]);
    stack::produce(
        &s.topic,
        vec![stack::Record {
            key: b"order-new".to_vec(),
            value: Some(stack::encode(id, &schema, &value)),
            headers: vec![],
        }],
    )
    .await;
    assert_eq!(
        daemon.wait(Duration::from_secs(60)),
        Some(1),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("column `status`") && log.contains("never changes a column's type"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_partitions_and_one_takes_over_from_a_crashed_one() {
    let s = Setup::new(
        "shared",
        8,
        "batch:\n  max_events: 1000\n  max_wait_ms: 100\n",
    )
    .await;
    let events = shop::generate(30_000, 1_000, 31);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events);
    let rest = records.split_off(10_000);
    let mut ends = stack::produce(&s.topic, records).await;
    let pg = stack::pg().await;
    let mut a = s.start();
    let b = Daemon::start(&s.file, &s.dir.0.join("sinkd-b.log"));
    let assigned = |log: String| log.matches("partition assigned").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while assigned(a.log()) + assigned(b.log()) < 8
        || assigned(a.log()) == 0
        || assigned(b.log()) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no split\nA:\n{}\nB:\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A dies; everything produced from now on in A's partitions must reach the table
    // through B, which takes them over from the table's checkpoints.
    a.kill9();
    merge_ends(&mut ends, stack::produce(&s.topic, rest).await);
    s.caught_up(&pg, &ends, &b).await;
    assert_eq!(
        stack::read_orders(&pg, &s.table).await,
        shop::expected(&events)
    );
    let b_log = b.log();
    assert!(
        assigned(b_log.clone()) >= 8,
        "B took over every partition\n{b_log}"
    );
}
