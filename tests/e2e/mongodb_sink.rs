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
