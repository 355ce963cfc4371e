//! End to end into MongoDB on the real servers with the real `sinkd` binary: the same
//! scenarios as PostgreSQL, then a mongod restart mid-run and the standalone (no
//! transactions) path.

use std::time::Duration;

use sinkd_tests::mongod::Mongod;
use sinkd_tests::scenarios::{self, Setup};
use sinkd_tests::target::Target;
use sinkd_tests::{shop, stack};

sinkd_tests::every_sink_scenarios!(Target::mongo());

sinkd_tests::scenario_tests! { Target::mongo();
    kill_dash_nine_six_times_with_four_writers_leaves_an_exact_table =>
        scenarios::kill_dash_nine_six_times_with_writers, 4;
    a_zombie_writer_is_fenced_when_it_wakes =>
        sinkd_tests::faults::a_zombie_writer_is_fenced_when_it_wakes;
}

#[tokio::test(flavor = "multi_thread")]
async fn mongod_killed_twice_in_the_middle_of_a_run_loses_nothing() {
    let mut mongod = Mongod::start(true).await;
    sinkd_tests::faults::a_database_crash_mid_run_loses_nothing(&mut mongod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_server_gets_the_exact_result_after_kills_and_redelivery() {
    let mongod = Mongod::start(false).await;
    let target = Target::Mongo(mongod.url());
    let s = Setup::new(&target, "standalone", 4, scenarios::QUICK_BATCHES).await;
    let events = shop::generate(10_000, 500, 99);
    let producer = sinkd_tests::faults::publish_in_slices(&s.topic, &events).await;
    let mut daemon = s.start();
    for _ in 0..3 {
        let seen = s.checkpoints().await.values().sum::<i64>();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while s.checkpoints().await.values().sum::<i64>() <= seen {
            assert!(
                std::time::Instant::now() < deadline,
                "no progress\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon.kill9();
        daemon = s.start();
    }
    let ends = producer.await.unwrap();
    s.caught_up(&ends, &daemon).await;
    assert!(
        daemon
            .log()
            .contains("standalone server without transactions"),
        "{}",
        daemon.log()
    );
    assert_eq!(s.orders().await, shop::expected(&events));
    // Redelivery from offset 0: wipe the checkpoint, restart, nothing changes.
    daemon.terminate(Duration::from_secs(30));
    let client = mongodb::Client::with_uri_str(mongod.url()).await.unwrap();
    client
        .database(sinkd_tests::target::MONGO_DATABASE)
        .collection::<mongodb::bson::Document>("sinkd_offsets")
        .delete_many(mongodb::bson::doc! { "_id.pipeline": &s.pipeline })
        .await
        .unwrap();
    let daemon = s.start();
    s.caught_up(&ends, &daemon).await;
    assert_eq!(
        s.orders().await,
        shop::expected(&events),
        "a full replay changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_the_validator_rejects_is_dead_lettered_and_the_rest_applied() {
    let target = Target::mongo();
    let s = Setup::new(
        &target,
        "validate",
        2,
        "on_error: dead_letter\ndead_letter_topic: {dlq}\n",
    )
    .await;
    let dlq = s.with_dead_letter_topic().await;
    let events = shop::generate(1_000, 100, 21);
    // A customer placed exactly once whose document survives: the validator refuses it.
    let customer_of = |e: &shop::ShopEvent| match &e.value {
        apache_avro::types::Value::Record(f) => match &f[1].1 {
            apache_avro::types::Value::String(c) => c.clone(),
            _ => unreachable!(),
        },
        _ => unreachable!(),
    };
    let placed: Vec<String> = events
        .iter()
        .filter(|e| e.kind == shop::Kind::Placed)
        .map(customer_of)
        .collect();
    let banned = shop::expected(&events)
        .values()
        .filter_map(|r| r.customer.clone())
        .find(|c| placed.iter().filter(|p| *p == c).count() == 1)
        .expect("a surviving customer placed once");
    let client = mongodb::Client::with_uri_str(stack::mongo_url())
        .await
        .unwrap();
    client
        .database(sinkd_tests::target::MONGO_DATABASE)
        .create_collection(&s.table)
        .validator(mongodb::bson::doc! { "customer": { "$ne": &banned } })
        .await
        .unwrap();
    let daemon = s.run_through(&events).await;
    let kept: Vec<_> = events
        .iter()
        .filter(|e| !(e.kind == shop::Kind::Placed && customer_of(e) == banned))
        .cloned()
        .collect();
    assert_eq!(kept.len(), events.len() - 1);
    assert_eq!(s.orders().await, shop::expected(&kept));
    let letters = stack::read_topic(&dlq, 1, Duration::from_secs(30));
    assert_eq!(letters.len(), 1, "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swap_keeps_the_live_collections_indexes_and_validator() {
    use futures::TryStreamExt;
    use mongodb::bson::{Document, doc};
    use sinkd_tests::control::Api;
    let target = Target::mongo();
    let s = Setup::new(&target, "swap-keeps", 2, "").await;
    let events = shop::generate(3_000, 300, 32);
    let api = Api::run_through(&s, &events, &[]).await;
    let db = mongodb::Client::with_uri_str(stack::mongo_url())
        .await
        .unwrap()
        .database(sinkd_tests::target::MONGO_DATABASE);
    db.collection::<Document>(&s.table)
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "customer": 1, "status": -1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("by_customer".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .expect("index");
    let validator = doc! { "customer": { "$type": "string" } };
    db.run_command(doc! { "collMod": &s.table, "validator": validator.clone() })
        .await
        .expect("validator");
    api.rebuild_to_done(&s.pipeline, Duration::from_secs(120))
        .await;
    let names = db
        .collection::<Document>(&s.table)
        .list_index_names()
        .await
        .unwrap();
    assert!(names.contains(&"by_customer".to_owned()), "{names:?}");
    let info = db
        .list_collections()
        .filter(doc! { "name": &s.table })
        .await
        .unwrap()
        .try_next()
        .await
        .unwrap()
        .expect("the collection");
    assert_eq!(
        info.options.validator,
        Some(validator),
        "the validator survived"
    );
    assert_eq!(s.orders().await, shop::expected(&events));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_rename_and_the_checkpoint_move_is_completed_at_restart() {
    let log = sinkd_tests::control::a_crash_inside_the_swap_leaves_a_consistent_target(
        &Target::mongo(),
        "mongodb-swap-renamed",
    )
    .await;
    assert!(log.contains("completing an interrupted swap"), "{log}");
}
