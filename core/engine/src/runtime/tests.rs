//! The exactly-once core without servers: the runtime over the in-memory log, store and
//! decoder of `crate::testing`, with faults injected where real servers fail. Time is
//! paused and advanced by tokio, so backoffs and batch timers cost nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Pipeline, PipelineStats, Policies};
use crate::config::{BadRecordPolicy, BatchConfig, UnknownEventPolicy};
use crate::error::{PipelineError, SinkError};
use crate::event::TopicPartition;
use crate::source::SourceError;
use crate::testing::{Fault, MemDeadLetters, MemLog, MemStore, TEXT_PIPELINE, TextDecoder};
use crate::transform::Transform;

fn tp() -> TopicPartition {
    (Arc::from("t"), 0)
}

/// A running pipeline and the parts the test drives.
struct Run {
    log: MemLog,
    store: MemStore,
    decoder: Arc<TextDecoder>,
    dlq: Arc<MemDeadLetters>,
    stats: Arc<PipelineStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), PipelineError>>,
}

struct Options {
    on_error: BadRecordPolicy,
    max_events: usize,
    max_wait_ms: u64,
    /// Sinks writing the store (`sink.parallelism`).
    writers: usize,
}

impl Options {
    fn dead_letter() -> Self {
        Options {
            on_error: BadRecordPolicy::DeadLetter,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            on_error: BadRecordPolicy::Fail,
            max_events: 1_000,
            max_wait_ms: 10,
            writers: 1,
        }
    }
}

fn start(log: &MemLog, store: &MemStore, o: Options) -> Run {
    let file = crate::testing::pipeline(TEXT_PIPELINE);
    let decoder = Arc::new(TextDecoder::default());
    let dlq = Arc::new(MemDeadLetters::default());
    let stats = Arc::new(PipelineStats::default());
    let pipeline = Pipeline {
        name: "mem".into(),
        source: Box::new(log.source()),
        decoder: decoder.clone(),
        transform: Transform::new(&file).expect("the test pipeline compiles"),
        sinks: (0..o.writers)
            .map(|_| Box::new(store.sink()) as Box<dyn crate::sink::Sink>)
            .collect(),
        dead_letters: Some(dlq.clone()),
        policies: Policies {
            on_error: o.on_error,
            unknown_events: UnknownEventPolicy::Fail,
        },
        batch: BatchConfig {
            max_events: o.max_events,
            max_wait_ms: o.max_wait_ms,
        },
        stats: stats.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    Run {
        log: log.clone(),
        store: store.clone(),
        decoder,
        dlq,
        stats,
        stop,
        task: tokio::spawn(pipeline.run(stopped)),
    }
}

/// A pipeline on a log and a store of its own.
fn fresh(o: Options) -> Run {
    start(&MemLog::default(), &MemStore::default(), o)
}

impl Run {
    /// Appends `lines` to the partition and assigns it from the start.
    fn feed<S: AsRef<str>>(&self, lines: impl IntoIterator<Item = S>) {
        for line in lines {
            self.append(line.as_ref());
        }
        self.log.assign(&[(tp(), None)]);
    }

    fn append(&self, line: &str) -> i64 {
        let key = line.split(' ').nth(1).unwrap_or("");
        self.log.append(&tp(), key, line.as_bytes())
    }

    /// Waits (in paused time) until the store's checkpoint of the partition is `next`.
    async fn until_checkpoint(&self, next: i64) {
        until(|| self.store.checkpoint(&tp()) == Some(next)).await;
    }

    async fn stop(self) -> Result<(), PipelineError> {
        let _ = self.stop.send(true);
        self.task.await.expect("the pipeline task")
    }
}

async fn until(done: impl Fn() -> bool) {
    for _ in 0..600_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("not reached within 10 minutes of paused time");
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_with_the_same_batch_and_nothing_is_skipped() {
    let r = fresh(Options::default());
    r.store.inject(Fault::Fail(SinkError::Unavailable(
        "connection reset".into(),
    )));
    r.store.inject(Fault::Fail(SinkError::Conflict(
        "serialization failure".into(),
    )));
    for i in 0..10 {
        r.append(&format!("Add k{} {}", i % 3, i));
    }
    r.log.assign(&[(tp(), None)]);
    r.until_checkpoint(10).await;
    assert_eq!(r.store.int("k0", "total"), Some(18)); // 0 + 3 + 6 + 9
    assert_eq!(r.store.int("k1", "total"), Some(12)); // 1 + 4 + 7
    assert_eq!(r.store.int("k2", "total"), Some(15)); // 2 + 5 + 8
    let (attempts, commits) = r.store.writes();
    assert_eq!(
        attempts - commits,
        2,
        "the two failures were retried, nothing else"
    );
    assert_eq!(r.stats.applied.load(Ordering::Relaxed), 10);
    assert_eq!(
        r.log.committed().get(&tp()),
        Some(&10),
        "advisory commit follows"
    );
    r.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_fenced_writer_reloads_the_checkpoint_seeks_and_applies_nothing_twice() {
    let (log, store) = (MemLog::default(), MemStore::default());
    // Writer A applies the first four records and goes away.
    let a = start(&log, &store, Options::default());
    a.feed((0..4).map(|i| format!("Add k {i}")));
    a.until_checkpoint(4).await;
    a.stop().await.unwrap();
    // Writer B was assigned the partition with a stale view (no checkpoint): its first
    // write is fenced, it takes the store's word, seeks, and applies only the rest.
    let b = start(&log, &store, Options::default());
    b.feed((4..10).map(|i| format!("Add k {i}")));
    b.until_checkpoint(10).await;
    assert_eq!(store.int("k", "total"), Some((0..10).sum()));
    assert!(b.log.seeks().contains(&(tp(), 4)), "{:?}", b.log.seeks());
    b.stop().await.unwrap();
}

/// Writer A applies four records; writer B, fenced on its stale view, must seek to 4 while
/// the first `faults` seeks fail as passing trouble. Returns B, started.
async fn fenced_with_failing_seeks(faults: usize) -> (Run, MemStore) {
    let (log, store) = (MemLog::default(), MemStore::default());
    let a = start(&log, &store, Options::default());
    a.feed((0..4).map(|i| format!("Add k {i}")));
    a.until_checkpoint(4).await;
    a.stop().await.unwrap();
    for _ in 0..faults {
        log.fail_seek(SourceError::Retriable("Local: Timed out".into()));
    }
    let b = start(&log, &store, Options::default());
    b.feed((4..10).map(|i| format!("Add k {i}")));
    (b, store)
}

#[tokio::test(start_paused = true)]
async fn a_seek_that_fails_for_a_moment_is_retried_and_nothing_is_applied_twice() {
    let (b, store) = fenced_with_failing_seeks(2).await;
    b.until_checkpoint(10).await;
    assert_eq!(store.int("k", "total"), Some((0..10).sum()));
    assert_eq!(b.log.seeks(), vec![(tp(), 4)], "one seek went through");
    b.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_seek_that_keeps_failing_stops_the_pipeline_instead_of_reading_on() {
    let (b, store) = fenced_with_failing_seeks(5).await;
    let e = b.task.await.unwrap().expect_err("the pipeline stops");
    assert!(
        matches!(&e, PipelineError::Source { cause, .. } if cause.contains("Timed out")),
        "{e}"
    );
    assert_eq!(
        store.int("k", "total"),
        Some((0..4).sum()),
        "A's writes only"
    );
    assert!(b.log.seeks().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_passing_source_error_is_waited_out_and_a_fatal_one_stops_with_its_cause() {
    let r = fresh(Options::default());
    r.log
        .fail_read(SourceError::Retriable("broker unreachable".into()));
    r.feed(["Add a 1", "Add a 2"]);
    r.until_checkpoint(2).await;
    assert_eq!(r.store.int("a", "total"), Some(3));
    r.log
        .fail_read(SourceError::Fatal("not authorized to read topic t".into()));
    let e = r.task.await.unwrap().expect_err("the pipeline stops");
    assert!(
        matches!(&e, PipelineError::Source { cause, .. } if cause.contains("not authorized")),
        "{e}"
    );
    assert_eq!(r.store.checkpoint(&tp()), Some(2), "nothing moved");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_row_is_found_record_by_record_and_only_it_is_dead_lettered() {
    let r = fresh(Options::dead_letter());
    r.store.reject_key("bad");
    r.feed(["Add a 1", "Add b 1", "Add bad 1", "Set c 7", "Add a 1"]);
    r.until_checkpoint(5).await;
    assert_eq!(r.store.int("a", "total"), Some(2));
    assert_eq!(r.store.int("b", "total"), Some(1));
    assert_eq!(r.store.int("c", "n"), Some(7));
    assert_eq!(r.store.row("bad"), None);
    let sent = r.dlq.sent();
    assert_eq!(sent.len(), 1, "only the rejected record");
    assert_eq!(sent[0].0.position.offset, 2);
    assert_eq!(sent[0].1.class, "rejected");
    r.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_row_under_fail_stops_exactly_at_it() {
    let r = fresh(Options::default());
    r.store.reject_key("bad");
    r.feed(["Add a 1", "Add a 1", "Add bad 1", "Add a 1"]);
    let e = r.task.await.unwrap().expect_err("the pipeline stops");
    assert!(
        matches!(&e, PipelineError::BadRecord { position, .. } if position.ends_with("offset 2")),
        "{e}"
    );
    assert_eq!(
        r.store.checkpoint(&tp()),
        Some(2),
        "what came before is written"
    );
    assert_eq!(r.store.int("a", "total"), Some(2));
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_record_under_fail_stops_after_writing_what_came_before() {
    let r = fresh(Options::default());
    r.feed(["Add a 1", "garbage", "Add a 1"]);
    let e = r.task.await.unwrap().expect_err("the pipeline stops");
    assert!(matches!(e, PipelineError::BadRecord { .. }), "{e}");
    assert_eq!(r.store.checkpoint(&tp()), Some(1));
    assert_eq!(r.store.int("a", "total"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_topic_that_is_down_is_waited_for_and_the_offset_waits_too() {
    let r = fresh(Options::dead_letter());
    r.dlq.fail_next(3);
    r.feed(["Add a 1", "garbage", "Add a 1"]);
    r.until_checkpoint(3).await;
    assert_eq!(r.dlq.sent().len(), 1);
    assert_eq!(r.store.int("a", "total"), Some(2));
    r.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_topic_refuses_stops_the_pipeline_at_the_record() {
    let r = fresh(Options::dead_letter());
    r.dlq.refuse_all();
    r.feed(["Add a 1", "garbage", "Add a 1"]);
    // What came before is written; the checkpoint stops exactly at the refused record.
    r.until_checkpoint(1).await;
    let e = r
        .task
        .await
        .expect("the pipeline task")
        .unwrap_err()
        .to_string();
    assert!(e.contains("offset 1") && e.contains("refused"), "{e}");
    assert_eq!(r.store.checkpoint(&tp()), Some(1));
    assert_eq!(r.store.int("a", "total"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_registry_outage_is_waited_out_without_skipping_a_record() {
    let r = fresh(Options::default());
    r.decoder.registry_down_for(5);
    r.feed((0..6).map(|i| format!("Add a {i}")));
    r.until_checkpoint(6).await;
    assert_eq!(r.store.int("a", "total"), Some(15));
    assert!(r.dlq.sent().is_empty());
    r.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_revoked_partition_is_released_only_after_its_batch_is_durable() {
    let r = fresh(Options {
        max_wait_ms: 3_600_000,
        ..Options::default()
    });
    r.feed((0..3).map(|i| format!("Add a {i}")));
    until(|| r.stats.consumed.load(Ordering::Relaxed) == 3).await;
    assert_eq!(
        r.store.checkpoint(&tp()),
        None,
        "held in the batch, not written yet"
    );
    r.log.revoke(&[tp()]).await.expect("released");
    assert_eq!(
        r.store.checkpoint(&tp()),
        Some(3),
        "written before the hand-over"
    );
    assert_eq!(r.store.int("a", "total"), Some(3));
    r.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_slow_write_lets_it_finish() {
    let r = fresh(Options::default());
    let (release, stalled) = tokio::sync::oneshot::channel();
    r.store.inject(Fault::Stall(stalled));
    r.feed((0..4).map(|i| format!("Add a {i}")));
    until(|| r.store.writes().0 == 1).await;
    let _ = r.stop.send(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    release.send(()).unwrap();
    r.task.await.unwrap().expect("a clean stop");
    assert_eq!(r.store.checkpoint(&tp()), Some(4));
    assert_eq!(r.store.int("a", "total"), Some(6));
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_write_that_hangs_abandons_it_without_moving_the_offset() {
    let r = fresh(Options::default());
    let (_hold, stalled) = tokio::sync::oneshot::channel::<()>();
    r.store.inject(Fault::Stall(stalled));
    r.feed((0..4).map(|i| format!("Add a {i}")));
    until(|| r.store.writes().0 == 1).await;
    let asked = tokio::time::Instant::now();
    let _ = r.stop.send(true);
    r.task.await.unwrap().expect("a clean stop");
    assert!(
        asked.elapsed() <= Duration::from_secs(11),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        r.store.checkpoint(&tp()),
        None,
        "nothing durable, nothing skipped"
    );
    assert_eq!(r.store.row("a"), None);
}

#[tokio::test(start_paused = true)]
async fn a_redelivery_below_the_checkpoint_is_dropped_and_a_replay_changes_nothing() {
    let (log, store) = (MemLog::default(), MemStore::default());
    let a = start(&log, &store, Options::default());
    a.feed(["Set k 5", "Add k 1", "Gone x 0", "Add k 2"]);
    a.until_checkpoint(4).await;
    a.stop().await.unwrap();
    let before = store.row("k");
    // The checkpoint is moved back (an offset reset) and the same log read again: the row
    // guards skip every event already applied.
    store.set_checkpoint(&tp(), 0);
    let b = start(&log, &store, Options::default());
    b.log.assign(&[(tp(), Some(0))]);
    b.until_checkpoint(4).await;
    assert_eq!(store.row("k"), before);
    assert_eq!(store.int("k", "total"), Some(3));
    b.stop().await.unwrap();
}

/// Partition `p` of topic `t`.
fn part(p: i32) -> TopicPartition {
    (Arc::from("t"), p)
}

/// Appends `Add <key> 1` for keys k0..k11 over four partitions (key `kN` in partition
/// N mod 4), once.
fn append_round(log: &MemLog) {
    for k in 0..12 {
        let line = format!("Add k{k} 1");
        log.append(&part(k % 4), &format!("k{k}"), line.as_bytes());
    }
}

/// [`append_round`] `rounds` times, and the four partitions assigned from the start.
fn feed_four_partitions(r: &Run, rounds: usize) {
    for _ in 0..rounds {
        append_round(&r.log);
    }
    r.log
        .assign(&(0..4).map(|p| (part(p), None)).collect::<Vec<_>>());
}

async fn until_partitions_at(r: &Run, next: i64) {
    until(|| (0..4).all(|p| r.store.checkpoint(&part(p)) == Some(next))).await;
}

#[tokio::test(start_paused = true)]
async fn parallel_writers_each_commit_their_partitions_and_a_failed_one_is_retried_alone() {
    let r = fresh(Options {
        writers: 2,
        max_events: 10,
        ..Options::default()
    });
    r.store.inject(Fault::Fail(SinkError::Unavailable(
        "connection reset".into(),
    )));
    feed_four_partitions(&r, 5);
    // 12 keys × 5 rounds = 60 records, 15 per partition.
    until_partitions_at(&r, 15).await;
    for k in 0..12 {
        assert_eq!(r.store.int(&format!("k{k}"), "total"), Some(5), "k{k}");
    }
    assert_eq!(r.stats.applied.load(Ordering::Relaxed), 60);
    let (attempts, commits) = r.store.writes();
    assert_eq!(attempts - commits, 1, "one failure, retried once");
    r.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_row_in_one_writer_is_found_alone_and_the_other_writer_is_not_replayed() {
    let r = fresh(Options {
        on_error: BadRecordPolicy::DeadLetter,
        writers: 2,
        ..Options::default()
    });
    // k5 lives in partition 1 (writer 1); partitions 0 and 2 (writer 0) commit as a batch.
    r.store.reject_key("k5");
    feed_four_partitions(&r, 2);
    until_partitions_at(&r, 6).await;
    for k in 0..12 {
        let expected = if k == 5 { None } else { Some(2) };
        assert_eq!(r.store.int(&format!("k{k}"), "total"), expected, "k{k}");
    }
    let sent = r.dlq.sent();
    assert_eq!(sent.len(), 2, "both records of k5, nothing else: {sent:?}");
    assert!(sent.iter().all(|(raw, _)| raw.position.partition == 1));
    r.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_writer_fenced_on_one_partition_reloads_every_checkpoint_and_applies_nothing_twice() {
    let (log, store) = (MemLog::default(), MemStore::default());
    let a = start(
        &log,
        &store,
        Options {
            writers: 4,
            ..Options::default()
        },
    );
    feed_four_partitions(&a, 1);
    until_partitions_at(&a, 3).await;
    a.stop().await.unwrap();
    // B holds a stale view of partition 3 only: its writer 3 is fenced, the others commit.
    let b = start(
        &log,
        &store,
        Options {
            writers: 4,
            ..Options::default()
        },
    );
    append_round(&log);
    let mut assigned: Vec<_> = (0..3).map(|p| (part(p), Some(3))).collect();
    assigned.push((part(3), None));
    log.assign(&assigned);
    until_partitions_at(&b, 6).await;
    for k in 0..12 {
        assert_eq!(store.int(&format!("k{k}"), "total"), Some(2), "k{k}");
    }
    assert!(log.seeks().contains(&(part(3), 3)), "{:?}", log.seeks());
    b.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lane_whose_write_hangs_does_not_hold_up_the_others() {
    let r = fresh(Options {
        writers: 2,
        max_events: 3,
        ..Options::default()
    });
    let (release, stalled) = tokio::sync::oneshot::channel();
    r.store.inject(Fault::Stall(stalled));
    for i in 0..3 {
        r.log.append(&part(0), "a", format!("Add a {i}").as_bytes());
    }
    r.log.assign(&[(part(0), None), (part(1), None)]);
    until(|| r.store.writes().0 == 1).await;
    // Partition 0's lane hangs in its write; partition 1's lane writes on.
    for i in 0..9 {
        r.log.append(&part(1), "b", format!("Add b {i}").as_bytes());
    }
    until(|| r.store.checkpoint(&part(1)) == Some(9)).await;
    assert_eq!(r.store.checkpoint(&part(0)), None, "still hanging");
    assert_eq!(r.store.int("b", "total"), Some((0..9).sum()));
    let _ = release.send(());
    until(|| r.store.checkpoint(&part(0)) == Some(3)).await;
    assert_eq!(r.store.int("a", "total"), Some(3));
    r.stop().await.unwrap();
}
