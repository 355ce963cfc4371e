//! The sink conformance scenarios on a real mongod replica set.

use sinkd_core::sink::Target as SinkTarget;
use sinkd_mongodb::MongoSink;
use sinkd_mongodb::MongoSinkConfig;
use sinkd_tests::mongod::set_transaction_lifetime;
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

/// A collection of its own.
struct Collection(String, MongoSinkConfig);

impl Collection {
    fn new(prefix: &str) -> Collection {
        let name = stack::unique(prefix);
        let cfg = config(&name);
        Collection(name, cfg)
    }
}

impl conformance::Subject for Collection {
    type Sink = MongoSink;

    fn name(&self) -> &str {
        &self.0
    }

    fn sink(&self, pipeline: &str) -> MongoSink {
        MongoSink::new(&self.1, pipeline, &[], SinkTarget::Live)
    }

    async fn counter(&self, key: &'static str) -> Option<i64> {
        Target::mongo().counter(&self.0, key).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_with_a_stale_checkpoint_is_fenced_and_applies_nothing() {
    conformance::fencing(&Collection::new("fence")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_an_offset_reset_is_skipped_by_row_guards() {
    conformance::replay_is_guarded(&Collection::new("guard")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_a_dead_writer_left_open_is_ended_not_waited_for() {
    use conformance::Subject;
    use mongodb::bson::{Document, doc};
    use sinkd_core::sink::Sink;
    let c = Collection::new("orphan");
    let topic = format!("{}.t", c.name());
    // The server default: waiting the open transaction out would take a minute.
    let before = set_transaction_lifetime(&stack::mongo_url(), 60).await;
    // A writer of pipeline `p` committed partition 0 up to 1, then died inside its next
    // transaction, which still holds the checkpoint.
    let client = mongodb::Client::with_uri_str(stack::mongo_url())
        .await
        .unwrap();
    let offsets = client
        .database(MONGO_DATABASE)
        .collection::<Document>("sinkd_offsets");
    let id = doc! { "pipeline": "p", "target": c.name(), "topic": &topic, "partition": 0 };
    let mut dead = client.start_session().await.unwrap();
    // Outside a transaction: on a fresh server the collection may be created right here,
    // which a transaction can refuse for a moment (SnapshotUnavailable).
    let first = doc! { "_id": id.clone(), "next": 1i64, "writer": dead.id().clone() };
    offsets.insert_one(first).session(&mut dead).await.unwrap();
    dead.start_transaction().await.unwrap();
    let unfinished = doc! { "$set": { "next": 2i64 } };
    offsets
        .update_one(doc! { "_id": id }, unfinished)
        .session(&mut dead)
        .await
        .unwrap();

    let mut next = c.sink("p");
    next.open().await.expect("open");
    let start = std::time::Instant::now();
    // Conflicts are retried for 5 s, then it panics: the lifetime is put back either way.
    let wrote = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        conformance::increment(&mut next, &topic, "k1", 5, 1),
    ))
    .await;
    let took = start.elapsed();
    set_transaction_lifetime(&stack::mongo_url(), before).await;
    let wrote = wrote.unwrap_or_else(|_| panic!("still conflicting after {took:?}"));
    wrote.expect("the successor writes");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(c.counter("k1").await, Some(5));
    assert!(
        dead.commit_transaction().await.is_err(),
        "the dead writer's transaction was ended"
    );
}
