//! The sink conformance scenarios on a real mongod replica set.

use sinkd_core::sink::Target as SinkTarget;
use sinkd_mongodb::MongoSink;
use sinkd_mongodb::MongoSinkConfig;
use sinkd_tests::target::{MONGO_DATABASE, Target};
use sinkd_tests::{conformance, stack};

fn config(collection: &str) -> MongoSinkConfig {
    serde_json::from_value(serde_json::json!({
        "url": stack::mongo_url(),
        "database": MONGO_DATABASE,
        "collection": collection,
    }))
    .expect("config")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_with_a_stale_checkpoint_is_fenced_and_applies_nothing() {
    let name = stack::unique("fence");
    let cfg = config(&name);
    conformance::fencing(
        &format!("{name}.t"),
        || MongoSink::new(&cfg, &name, &[], SinkTarget::Live),
        |k| {
            let name = name.clone();
            async move { Target::mongo().counter(&name, k).await }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_an_offset_reset_is_skipped_by_row_guards() {
    let name = stack::unique("guard");
    let cfg = config(&name);
    conformance::replay_is_guarded(
        &format!("{name}.t"),
        |pipeline| MongoSink::new(&cfg, &format!("{name}-{pipeline}"), &[], SinkTarget::Live),
        |k| {
            let name = name.clone();
            async move { Target::mongo().counter(&name, k).await }
        },
    )
    .await;
}
