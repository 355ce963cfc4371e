//! End to end into PostgreSQL on the real servers (broker, registry, PostgreSQL from
//! `docker/up`) with the real `sinkd` binary: the shared scenarios, then what only a
//! table has (constraints, columns) and the consumer-group hand-over.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use sinkd_tests::control;
use sinkd_tests::daemon::Daemon;
use sinkd_tests::scenarios::{self, Setup, merge_ends};
use sinkd_tests::target::Target;
use sinkd_tests::{shop, stack};

sinkd_tests::every_sink_scenarios!(Target::postgres());

#[tokio::test(flavor = "multi_thread")]
async fn postgres_crashed_twice_in_the_middle_of_a_run_loses_nothing() {
    let mut server = sinkd_tests::postgres::Postgres::start().await;
    sinkd_tests::faults::a_database_crash_mid_run_loses_nothing(&mut server).await;
}

sinkd_tests::scenario_tests! { Target::postgres();
    kill_dash_nine_six_times_with_four_writers_leaves_an_exact_table =>
        scenarios::kill_dash_nine_six_times_with_writers, 4;
    a_zombie_writer_is_fenced_when_it_wakes =>
        sinkd_tests::faults::a_zombie_writer_is_fenced_when_it_wakes;
    a_registry_outage_is_waited_out =>
        sinkd_tests::faults::a_registry_outage_is_waited_out;
    sigterm_during_a_rebuild_keeps_the_shadow_and_the_restart_resumes_it =>
        control::a_rebuild_interrupted_by_a_restart_resumes, control::Stop::Term;
    a_rebuild_interrupted_by_a_changed_pipeline_is_abandoned =>
        control::a_rebuild_interrupted_by_a_changed_pipeline_is_abandoned;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_the_table_rejects_is_dead_lettered_and_the_rest_applied() {
    let s = Setup::new(
        &Target::postgres(),
        "reject",
        2,
        "on_error: dead_letter\ndead_letter_topic: {dlq}\n",
    )
    .await;
    let dlq = s.with_dead_letter_topic().await;
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
    let _daemon = s.run_through(&events).await;
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
    assert_eq!(s.orders().await, shop::expected(&kept));
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
    let s = Setup::new(&Target::postgres(), "evolve", 1, "").await;
    let events = shop::generate(200, 20, 8);
    let mut ends = shop::publish(&s.topic, &events).await;
    let pg = stack::pg().await;
    let mut daemon = s.start();
    s.caught_up(&ends, &daemon).await;

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
    merge_ends(&mut ends, order_new(&s.topic, id, &schema, &value).await);
    s.caught_up(&ends, &daemon).await;
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
    order_new(&s.topic, id, &schema, &value).await;
    daemon.fails_saying(&["column `status`", "never changes a column's type"]);
}

/// Produces `value` (schema id `id`) under the key `order-new`; returns the ends.
async fn order_new(
    topic: &str,
    id: u32,
    schema: &apache_avro::Schema,
    value: &apache_avro::types::Value,
) -> HashMap<i32, i64> {
    let record = stack::Record {
        key: b"order-new".to_vec(),
        value: Some(stack::encode(id, schema, value)),
        headers: vec![],
    };
    stack::produce(topic, vec![record]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_partitions_and_one_takes_over_from_a_crashed_one() {
    let s = Setup::new(&Target::postgres(), "shared", 8, scenarios::BATCHES_OF_1000).await;
    let events = shop::generate(30_000, 1_000, 31);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events);
    let rest = records.split_off(10_000);
    let mut ends = stack::produce(&s.topic, records).await;
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
    s.caught_up(&ends, &b).await;
    assert_eq!(s.orders().await, shop::expected(&events));
    let b_log = b.log();
    assert!(
        assigned(b_log.clone()) >= 8,
        "B took over every partition\n{b_log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swap_keeps_the_live_tables_indexes_and_grants() {
    use sinkd_tests::control::Api;
    // Batches smaller than the log: the shadow has written (so its table exists) before
    // it is within a batch of the end, when the indexes are built on it.
    let s = Setup::new(
        &Target::postgres(),
        "swap-keeps",
        2,
        scenarios::SMALL_BATCHES,
    )
    .await;
    let events = shop::generate(3_000, 300, 31);
    let api = Api::run_through(&s, &events, &[]).await;
    let pg = stack::pg().await;
    let reader = format!("{}_reader", s.table);
    pg.batch_execute(&format!(
        "CREATE ROLE \"{reader}\"; \
         CREATE INDEX \"{t}_by_customer\" ON \"{t}\" (customer); \
         GRANT SELECT ON \"{t}\" TO \"{reader}\"",
        t = s.table
    ))
    .await
    .expect("index and grant");
    api.rebuild_to_done(&s.pipeline, Duration::from_secs(120))
        .await;
    let indexes: Vec<String> = pg
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = $1 ORDER BY 1",
            &[&s.table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes,
        [
            format!("{}_by_customer", s.table),
            format!("{}_pkey", s.table)
        ],
        "the user's index is back and the key has its usual name"
    );
    let granted: bool = pg
        .query_one(
            "SELECT has_table_privilege($1, $2, 'SELECT')",
            &[&reader, &format!("public.\"{}\"", s.table)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(granted, "the grant survived the swap");
    let log = api.daemon.log();
    let swap_ddl: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("swapping in the rebuilt table"))
        .collect();
    assert!(
        swap_ddl.iter().any(|l| l.contains("ALTER INDEX"))
            && !swap_ddl.iter().any(|l| l.contains("CREATE INDEX")),
        "the index was built on the shadow before the swap, which only renamed it: {swap_ddl:#?}"
    );
    assert_eq!(s.orders().await, shop::expected(&events));
    // A second rebuild finds the shadow's names free again.
    api.rebuild_to_done(&s.pipeline, Duration::from_secs(120))
        .await;
    assert_eq!(s.orders().await, shop::expected(&events));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_rebuild_drops_the_shadow_and_leaves_the_table_serving() {
    use sinkd_tests::control::Api;
    let s = Setup::new(&Target::postgres(), "cancel", 4, scenarios::SMALL_BATCHES).await;
    let events = shop::generate(60_000, 5_000, 33);
    let ends = shop::publish(&s.topic, &events).await;
    let api = Api::start(&s, &[]).await;
    s.caught_up(&ends, &api.daemon).await;
    let (code, v) = api.on("POST", &s.pipeline, "rebuild").await;
    assert_eq!(code, 202, "{v}");
    let start = std::time::Instant::now();
    loop {
        let (_, v) = api.on("GET", &s.pipeline, "rebuild").await;
        if v["phase"] == "building" && v["events_done"].as_i64().unwrap_or(0) > 2_000 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Target::postgres().shadow_exists(&s.table).await);
    let (code, v) = api.on("DELETE", &s.pipeline, "rebuild").await;
    assert_eq!((code, v["phase"].as_str()), (200, Some("cancelled")), "{v}");
    assert!(
        !Target::postgres().shadow_exists(&s.table).await,
        "the shadow is gone"
    );
    let (code, _) = api.on("DELETE", &s.pipeline, "rebuild").await;
    assert_eq!(code, 409, "nothing left to cancel");
    api.wait_state(&s.pipeline, "running").await;
    assert_eq!(s.orders().await, shop::expected(&events));
    assert_eq!(s.checkpoints().await, ends);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_swap_commits_leaves_the_old_table() {
    let log = sinkd_tests::control::a_crash_inside_the_swap_leaves_a_consistent_target(
        &Target::postgres(),
        "postgres-swap-before-commit",
    )
    .await;
    assert!(
        log.contains("a rebuild was interrupted by a restart"),
        "{log}"
    );
}
