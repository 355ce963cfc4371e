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

/// In a transaction, statements are decided in sinkd from the stored guards and sent
/// without aggregation pipelines. At the edges of each number type, and with the stored
/// values `$inc` and `$add` treat differently, the resulting document (or the refusal)
/// must be the one the server-guarded statement gives, except a long that overflows.
#[tokio::test(flavor = "multi_thread")]
async fn decided_statements_leave_the_documents_server_guarded_ones_leave() {
    use apache_avro::types::Value;
    use mongodb::bson::{Bson, Decimal128, Document, doc};
    use sinkd_core::batch::{Compacted, Entry};
    use sinkd_core::event::SourcePosition;
    use sinkd_core::operation::Cell;
    use sinkd_core::schema::ColumnType;
    use sinkd_mongodb::checkpoint::{run, write_errors};
    use sinkd_mongodb::{guards, statements};

    let client = mongodb::Client::with_uri_str(stack::mongo_url())
        .await
        .unwrap();
    let db = client.database(MONGO_DATABASE);
    let (server, decided) = (stack::unique("guarded"), stack::unique("decided"));
    let cell = |column: &str, ty: ColumnType, value: Value| Cell {
        column: column.into(),
        ty,
        value,
    };
    let long = |n: i64| cell("n", ColumnType::Long, Value::Long(n));
    let int = |n: i32| cell("n", ColumnType::Int, Value::Int(n));
    let inc = |c: Cell| Compacted::Patch {
        set: vec![],
        inc: vec![c],
    };
    let guard = |o: i64| doc! { "t": "t", "p": 0, "o": o };
    let stored = |n: Bson| doc! { "n": n, "_sinkd": guard(5) };
    let decimal = |s: &str| Bson::Decimal128(s.parse::<Decimal128>().unwrap());
    // (stored document or none, operation, offset of the event)
    let cases: Vec<(Option<Document>, Compacted, i64)> = vec![
        (Some(stored(Bson::Int32(i32::MAX))), inc(int(1)), 6),
        (Some(stored(Bson::Int32(i32::MIN))), inc(int(-1)), 6),
        (Some(stored(Bson::Int64(i64::MAX))), inc(long(1)), 6),
        (Some(stored(Bson::Int64(i64::MIN))), inc(long(-1)), 6),
        (Some(stored(Bson::Double(f64::MAX))), inc(long(1)), 6),
        (Some(stored(Bson::Double(-0.0))), inc(long(0)), 6),
        (
            Some(stored(Bson::Double(-0.0))),
            inc(cell("n", ColumnType::Double, Value::Double(-0.0))),
            6,
        ),
        (Some(stored(decimal("-0"))), inc(long(0)), 6),
        (Some(stored(decimal("-0E+10"))), inc(long(0)), 6),
        (Some(stored(Bson::Double(f64::NAN))), inc(long(1)), 6),
        (Some(stored(Bson::Double(f64::INFINITY))), inc(long(-1)), 6),
        (
            Some(stored(decimal("9.999999999999999999999999999999999E+6144"))),
            inc(long(1)),
            6,
        ),
        (
            Some(stored(Bson::Int32(1))),
            inc(cell("n", ColumnType::Double, Value::Double(0.1))),
            6,
        ),
        (Some(stored(Bson::Null)), inc(long(3)), 6),
        (Some(stored(Bson::String("x".into()))), inc(long(3)), 6),
        (Some(doc! { "_sinkd": guard(5) }), inc(long(3)), 6),
        (None, inc(int(3)), 6),
        (Some(stored(Bson::Int64(1))), inc(long(3)), 5),
        (Some(stored(Bson::Int64(1))), inc(long(3)), 4),
        (
            Some(stored(Bson::Int64(1))),
            Compacted::Patch {
                set: vec![cell("s", ColumnType::String, Value::String("a".into()))],
                inc: vec![long(2)],
            },
            6,
        ),
        (
            Some(stored(Bson::Int64(1))),
            Compacted::Replace(vec![long(9)]),
            6,
        ),
        (
            Some(stored(Bson::Int64(1))),
            Compacted::Replace(vec![long(9)]),
            5,
        ),
        (None, Compacted::Replace(vec![long(9)]), 6),
        (Some(stored(Bson::Int64(1))), Compacted::Delete, 6),
        (Some(stored(Bson::Int64(1))), Compacted::Delete, 5),
        (None, Compacted::Delete, 6),
    ];
    let long_overflow = [2, 3];
    for (i, (before, op, offset)) in cases.into_iter().enumerate() {
        let key = format!("k{i}");
        if let Some(before) = &before {
            let mut d = doc! { "_id": &key };
            d.extend(before.clone());
            for name in [&server, &decided] {
                db.collection::<Document>(name)
                    .insert_one(d.clone())
                    .await
                    .unwrap();
            }
        }
        let e = Entry {
            target: 0,
            key: vec![cell("id", ColumnType::String, Value::String(key.clone()))],
            op,
            position: SourcePosition {
                topic: "t".into(),
                partition: 0,
                offset,
            },
        };
        let update = |name: &str, statement: Document| {
            let kind = if statement.contains_key("u") {
                ("update", "updates")
            } else {
                ("delete", "deletes")
            };
            doc! { kind.0: name, kind.1: [statement], "ordered": false }
        };
        let refused = |reply: Result<Document, _>| match reply {
            Ok(r) => write_errors(&r).into_iter().map(|e| e.code).next(),
            Err(e) => panic!("command failed: {e:?}"),
        };
        let by_server = refused(run(&db, update(&server, statements::statement(&e)), None).await);
        let mut session = client.start_session().await.unwrap();
        session.start_transaction().await.unwrap();
        let found = guards::read(&db, &decided, &[&e], &mut session)
            .await
            .unwrap();
        let by_sinkd = match guards::decide(&e, &found) {
            Some(s) => refused(run(&db, update(&decided, s), Some(&mut session)).await),
            None => None,
        };
        if by_sinkd.is_none() {
            session.commit_transaction().await.unwrap();
        }
        let (server_docs, decided_docs) = (
            db.collection::<Document>(&server),
            db.collection::<Document>(&decided),
        );
        let a = server_docs.find_one(doc! { "_id": &key }).await.unwrap();
        let b = decided_docs.find_one(doc! { "_id": &key }).await.unwrap();
        if long_overflow.contains(&i) {
            // `$add` turns a long that overflows into a double; sinkd refuses the sum (code
            // 2, a bad record), as its compactor and the PostgreSQL sink do.
            assert!(matches!(
                a.as_ref().and_then(|d| d.get("n")),
                Some(Bson::Double(_))
            ));
            assert_eq!((by_server, by_sinkd), (None, Some(2)), "case {i}");
            continue;
        }
        assert_eq!(
            by_server.is_some(),
            by_sinkd.is_some(),
            "case {i} ({e:?}): server {by_server:?}, sinkd {by_sinkd:?}"
        );
        if by_server.is_none() {
            // Values compared bit for bit (through their debug form: NaN, -0.0, the type of
            // each number); the order of fields a patch creates is the server's own (its
            // update operators add new fields in name order).
            let fields = |d: Option<Document>| {
                d.map(|d| {
                    let mut f: Vec<String> = d.iter().map(|kv| format!("{kv:?}")).collect();
                    f.sort();
                    f
                })
            };
            assert_eq!(fields(a), fields(b), "case {i} ({e:?})");
        }
    }
}
