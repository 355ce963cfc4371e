//! Scenarios every sink must pass (STYLE.md item 10), written once against the [`Sink`]
//! trait. A sink's test supplies a [`Subject`]: a factory and a way to read one counter
//! back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::types::Value;
use sinkd_core::batch::{Compactor, Entry};
use sinkd_core::config::OpKind;
use sinkd_core::error::SinkError;
use sinkd_core::event::SourcePosition;
use sinkd_core::operation::{Cell, Op};
use sinkd_core::schema::ColumnType;
use sinkd_core::sink::{CheckpointAdvance, Sink};

/// A sink under the conformance scenarios, on a target of its own named after `name`.
pub trait Subject {
    /// The sink type.
    type Sink: Sink;
    /// The unique name of this run: the target's, and the prefix of its topic.
    fn name(&self) -> &str;
    /// A new sink of pipeline `pipeline` writing the subject's target.
    fn sink(&self, pipeline: &str) -> Self::Sink;
    /// The `counter` column of the row (document) keyed `key`, if there is one.
    fn counter(&self, key: &'static str) -> impl Future<Output = Option<i64>>;
}

/// One op on key `key` at `offset` of partition 0 of `topic`.
pub fn op(topic: &str, key: &str, kind: OpKind, counter: i64, offset: i64) -> Op {
    let cells = match kind {
        OpKind::Delete => vec![],
        _ => vec![Cell {
            column: Arc::from("counter"),
            ty: ColumnType::Long,
            value: Value::Long(counter),
        }],
    };
    Op {
        target: 0,
        prefix: false,
        key: vec![Cell {
            column: Arc::from("id"),
            ty: ColumnType::String,
            value: Value::String(key.into()),
        }],
        kind,
        cells,
        position: SourcePosition {
            topic: Arc::from(topic),
            partition: 0,
            offset,
        },
    }
}

/// Compacts ops into entries.
pub fn entries(ops: Vec<Op>) -> Vec<Entry> {
    let mut c = Compactor::new();
    for o in ops {
        c.push(o).expect("compacts");
    }
    c.into_entries()
}

/// Writes `ops` with the checkpoint of partition 0 moving from `expected` to `next`,
/// retrying what the runtime retries: a conflict (MongoDB answers a transaction on a
/// collection created a moment ago with a transient `SnapshotUnavailable`).
async fn write(
    sink: &mut impl Sink,
    ops: Vec<Op>,
    (expected, next): (Option<i64>, i64),
) -> Result<(), SinkError> {
    let topic = ops[0].position.topic.clone();
    let (entries, advances) = (entries(ops), advance(&topic, expected, next));
    for _ in 0..50 {
        match sink.write(&entries, &advances).await {
            Err(SinkError::Conflict(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            result => return result,
        }
    }
    panic!("a conflict on every attempt for 5 s");
}

/// Adds `by` to `key`'s counter with the event at `offset` of partition 0, the
/// checkpoint moving from `offset` (none at 0) to the next.
pub async fn increment(
    sink: &mut impl Sink,
    topic: &str,
    key: &str,
    by: i64,
    offset: i64,
) -> Result<(), SinkError> {
    let from = (offset > 0).then_some(offset);
    let ops = vec![op(topic, key, OpKind::Increment, by, offset)];
    write(sink, ops, (from, offset + 1)).await
}

fn advance(topic: &str, expected: Option<i64>, next: i64) -> Vec<CheckpointAdvance> {
    vec![CheckpointAdvance {
        topic: Arc::from(topic),
        partition: 0,
        expected,
        next,
    }]
}

/// Two writers of one pipeline and partition: the one with a stale checkpoint is fenced and
/// applies nothing; the same batch offered twice applies once.
pub async fn fencing(subject: &impl Subject) {
    let (topic, read) = (&format!("{}.t", subject.name()), |k| subject.counter(k));
    let mut a = subject.sink(subject.name());
    let mut b = subject.sink(subject.name());
    a.open().await.expect("open a");
    b.open().await.expect("open b");
    // Both believe the partition is new. A commits first.
    increment(&mut a, topic, "k1", 5, 0)
        .await
        .expect("a writes");
    let stale = increment(&mut b, topic, "k2", 7, 0).await;
    assert!(
        matches!(stale, Err(SinkError::Fenced { .. })),
        "b must be fenced: {stale:?}"
    );
    assert_eq!(read("k2").await, None, "the fenced writer applied nothing");
    // A moves on; B, still one step behind, is fenced again.
    increment(&mut a, topic, "k1", 1, 1)
        .await
        .expect("a writes again");
    let stale = increment(&mut b, topic, "k1", 100, 1).await;
    assert!(matches!(stale, Err(SinkError::Fenced { .. })), "{stale:?}");
    assert_eq!(read("k1").await, Some(6), "only a's increments count");
}

/// A writer whose view of the checkpoint is stale (a zombie that woke after another
/// instance wrote, one after the other rather than side by side, as a sink with one writer
/// per target allows) is fenced and applies nothing; with the stored checkpoint it writes.
pub async fn stale_view_is_fenced(subject: &impl Subject) {
    let (topic, read) = (&format!("{}.t", subject.name()), |k| subject.counter(k));
    let mut a = subject.sink(subject.name());
    a.open().await.expect("open a");
    increment(&mut a, topic, "k1", 5, 0)
        .await
        .expect("a writes");
    drop(a);
    let mut b = subject.sink(subject.name());
    b.open().await.expect("open b");
    let stale = increment(&mut b, topic, "k1", 100, 0).await;
    assert!(
        matches!(stale, Err(SinkError::Fenced { .. })),
        "a stale view must be fenced: {stale:?}"
    );
    assert_eq!(
        read("k1").await,
        Some(5),
        "the fenced write applied nothing"
    );
    increment(&mut b, topic, "k1", 2, 1)
        .await
        .expect("b writes from the stored checkpoint");
    assert_eq!(read("k1").await, Some(7));
}

/// After the checkpoint is lost or moved back (an offset reset), replayed events are
/// skipped by the row guards: increments are not doubled, a replayed older value does not
/// overwrite a newer one, and the rest of the stream applies.
pub async fn replay_is_guarded(subject: &impl Subject) {
    let (topic, read) = (&format!("{}.t", subject.name()), |k| subject.counter(k));
    let make = |pipeline: &str| subject.sink(&format!("{}-{pipeline}", subject.name()));
    let stream = |upto: usize| {
        let all = vec![
            op(topic, "a", OpKind::Upsert, 1, 0),
            op(topic, "a", OpKind::Increment, 10, 1),
            op(topic, "b", OpKind::Increment, 3, 2),
            op(topic, "c", OpKind::Upsert, 9, 3),
            op(topic, "c", OpKind::Delete, 0, 4),
            op(topic, "b", OpKind::Increment, 4, 5),
        ];
        all.into_iter().take(upto).collect::<Vec<_>>()
    };
    let mut first = make("first");
    first.open().await.expect("open");
    write(&mut first, stream(6), (None, 6))
        .await
        .expect("write");
    assert_eq!(
        (read("a").await, read("b").await, read("c").await),
        (Some(11), Some(7), None)
    );
    // A second checkpoint owner (as after a reset) replays the same events from offset 0.
    // The first lets go of the target first (a Tantivy index has one writer at a time).
    drop(first);
    let mut replay = make("replay");
    replay.open().await.expect("open");
    for (i, o) in stream(6).into_iter().enumerate() {
        write(
            &mut replay,
            vec![o],
            ((i > 0).then_some(i as i64), i as i64 + 1),
        )
        .await
        .expect("replay write");
    }
    assert_eq!(
        (read("a").await, read("b").await),
        (Some(11), Some(7)),
        "increments are not applied twice"
    );
}
