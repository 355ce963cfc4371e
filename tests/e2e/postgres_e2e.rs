//! End to end on the real servers: broker, registry and PostgreSQL from `docker/up`, and
//! the real `sinkd` binary.

use std::time::Duration;

use sinkd_tests::daemon::{Daemon, Workdir};
use sinkd_tests::{shop, stack};

/// Sets up a topic and a pipeline file; returns (workdir, pipeline name, topic, table, file).
async fn setup(
    name: &str,
    partitions: i32,
    extra: &str,
) -> (Workdir, String, String, String, std::path::PathBuf) {
    let pipeline = stack::unique(name);
    let topic = format!("{pipeline}.orders");
    let table = pipeline.clone();
    stack::create_topic(&topic, partitions).await;
    let dir = Workdir::new(&pipeline);
    let file = dir.file(
        "pipeline.yaml",
        &shop::pipeline_yaml(&pipeline, &topic, &table, extra),
    );
    (dir, pipeline, topic, table, file)
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_events_over_four_partitions_give_the_expected_table() {
    let (dir, pipeline, topic, table, file) = setup("e2e", 4, "").await;
    let events = shop::generate(10_000, 500, 42);
    let ends = shop::publish(&topic, &events).await;
    let daemon = Daemon::start(&file, &dir.0.join("sinkd.log"));
    let pg = stack::pg().await;
    stack::wait_caught_up(&pg, &pipeline, &ends, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- sinkd log ---\n{}", daemon.log()));
    let got = stack::read_orders(&pg, &table).await;
    let want = shop::expected(&events);
    assert_eq!(got.len(), want.len(), "row count");
    assert_eq!(got, want);
}
