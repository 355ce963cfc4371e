//! Each phase of a rebuild run in milliseconds: [`SwapRun`] and [`InPlaceRun`] over an
//! in-memory pipeline (the engine's log, store and text decoder, a live and a shadow
//! store with a real swap), with the faults a sink and a task meet. Time is paused.
//! Increments make every mistake visible: a record applied twice or skipped changes a
//! total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sinkd_core::config::{BadRecordPolicy, PipelineFile, UnknownEventPolicy};
use sinkd_core::error::SinkError;
use sinkd_core::event::TopicPartition;
use sinkd_core::runtime::{Pipeline, PipelineStats, Policies};
use sinkd_core::sink::{CheckpointReader, TargetAdmin};
use sinkd_core::testing::{Fault, MemLog, MemStore, MemTargets, TEXT_PIPELINE, TextDecoder};
use sinkd_core::transform::Transform;
use tokio::sync::{oneshot, watch};

use super::super::State;
use super::super::task::{Lifecycle, Task};
use super::super::ticket::Ticket;
use super::host::Host;
use super::in_place::InPlaceRun;
use super::swap::SwapRun;
use super::{Halt, Mode, Phase, RebuildStatus, Start};

const PARTITIONS: i32 = 2;

/// Every record appended, and the logs of the readers started so far (each task reads
/// its own copy, from its own position).
type Log = (Vec<(TopicPartition, String)>, Vec<MemLog>);

/// A pipeline over two partitions, with a live and a shadow store.
struct Mem {
    file: PipelineFile,
    targets: MemTargets,
    admin: Arc<dyn TargetAdmin>,
    life: Lifecycle,
    stats: Arc<PipelineStats>,
    log: Mutex<Log>,
    batch: i64,
}

fn tp(p: i32) -> TopicPartition {
    (Arc::from("t"), p)
}

impl Mem {
    fn new(batch: i64) -> Arc<Mem> {
        let file = sinkd_core::testing::pipeline(TEXT_PIPELINE);
        let targets = MemTargets::default();
        Arc::new(Mem {
            file,
            admin: Arc::new(targets.clone()),
            targets,
            life: Lifecycle::default(),
            stats: Arc::new(PipelineStats::default()),
            log: Mutex::new((Vec::new(), Vec::new())),
            batch,
        })
    }

    /// Appends `Add <key> <n>` for keys k0..k9 in turn, `count` records.
    fn add(&self, count: usize) {
        let mut log = self.log.lock().unwrap();
        for _ in 0..count {
            let i = log.0.len();
            let key = format!("k{}", i % 10);
            let line = format!("Add {key} {}", i + 1);
            let partition = tp((i % 10) as i32 % PARTITIONS);
            for reader in &log.1 {
                reader.append(&partition, &key, line.as_bytes());
            }
            log.0.push((partition, line));
        }
    }

    /// What every key's total must be.
    fn model(&self) -> HashMap<String, i64> {
        let mut totals = HashMap::new();
        for (_, line) in &self.log.lock().unwrap().0 {
            let mut parts = line.split(' ').skip(1);
            let key = parts.next().unwrap().to_owned();
            *totals.entry(key).or_default() += parts.next().unwrap().parse::<i64>().unwrap();
        }
        totals
    }

    fn totals(store: &MemStore) -> HashMap<String, i64> {
        store
            .keys()
            .into_iter()
            .map(|k| (k.clone(), store.int(&k, "total").unwrap_or(0)))
            .collect()
    }

    /// A pipeline writing `store`, reading every partition from `store`'s checkpoints.
    fn pipeline(&self, store: &MemStore, stats: Arc<PipelineStats>) -> Pipeline {
        let reader = MemLog::default();
        {
            let mut log = self.log.lock().unwrap();
            for (partition, line) in &log.0 {
                let key = line.split(' ').nth(1).unwrap();
                reader.append(partition, key, line.as_bytes());
            }
            log.1.push(reader.clone());
        }
        let assigned: Vec<_> = (0..PARTITIONS)
            .map(|p| (tp(p), store.checkpoint(&tp(p))))
            .collect();
        reader.assign(&assigned);
        Pipeline {
            name: "mem".into(),
            source: Box::new(reader.source()),
            decoder: Arc::new(TextDecoder::default()),
            transform: Transform::new(&self.file).expect("the test pipeline compiles"),
            sinks: vec![Box::new(store.sink())],
            dead_letters: None,
            policies: Policies {
                on_error: BadRecordPolicy::Fail,
                unknown_events: UnknownEventPolicy::Fail,
            },
            batch: sinkd_core::config::BatchConfig {
                max_events: 20,
                max_wait_ms: 5,
            },
            stats,
        }
    }

    async fn start(self: &Arc<Self>) {
        let mut live = self.life.task.lock().await;
        self.start_live(&mut live);
    }

    fn live_running(&self) -> bool {
        self.life
            .task
            .try_lock()
            .is_ok_and(|t| t.as_ref().is_some_and(Task::running))
    }
}

#[async_trait]
impl Host for Mem {
    fn name(&self) -> &str {
        "mem"
    }

    fn batch_events(&self) -> i64 {
        self.batch
    }

    fn fingerprint(&self) -> &str {
        "mem-1"
    }

    fn admin(&self) -> &Arc<dyn TargetAdmin> {
        &self.admin
    }

    fn live_checkpoints(&self) -> Arc<dyn CheckpointReader> {
        Arc::new(self.targets.live.clone())
    }

    fn shadow_checkpoints(&self) -> Arc<dyn CheckpointReader> {
        Arc::new(self.targets.shadow.clone())
    }

    fn live_stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    fn life(&self) -> &Lifecycle {
        &self.life
    }

    async fn start_offsets(&self, _start: Start) -> Result<Vec<(TopicPartition, i64)>, String> {
        Ok((0..PARTITIONS).map(|p| (tp(p), 0)).collect())
    }

    async fn ends(
        &self,
        _also: Option<&PipelineStats>,
    ) -> Result<HashMap<TopicPartition, i64>, String> {
        let mut ends: HashMap<TopicPartition, i64> = (0..PARTITIONS).map(|p| (tp(p), 0)).collect();
        for (partition, _) in &self.log.lock().unwrap().0 {
            *ends.get_mut(partition).unwrap() += 1;
        }
        Ok(ends)
    }

    fn shadow_pipeline(&self, stats: Arc<PipelineStats>) -> Result<Pipeline, String> {
        Ok(self.pipeline(&self.targets.shadow, stats))
    }

    fn start_live(self: &Arc<Self>, slot: &mut Option<Task>) {
        let pipeline = self.pipeline(&self.targets.live, self.stats.clone());
        let me = self.clone();
        self.life.start(slot, |stop| async move {
            if let Err(e) = pipeline.run(stop).await {
                me.life.set_state(State::Failed(e.to_string()));
            }
        });
    }
}

/// Waits in paused time until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..600_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{what}: not reached within 10 minutes of paused time");
}

fn applied(store: &MemStore) -> i64 {
    store.checkpoints().values().sum()
}

/// The live task serves again: 10 more records reach the live target, exactly.
async fn serves_again(mem: &Mem) {
    let before = applied(&mem.targets.live);
    mem.add(10);
    let live = mem.targets.live.clone();
    until("the live task applies new records", || {
        applied(&live) == before + 10
    })
    .await;
    assert_eq!(Mem::totals(&mem.targets.live), mem.model());
}

/// The run failed for a reason that says `cause`.
fn failed_with(result: Result<(), Halt>, cause: &str) {
    match result {
        Err(Halt::Failed(e)) => assert!(e.contains(cause), "{e}"),
        other => panic!("expected a failure saying {cause:?}, got {other:?}"),
    }
}

/// A swap run of `mem` in the background, and its cancel switch.
struct Running {
    status: Arc<RebuildStatus>,
    cancel: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Halt>>,
}

fn swap(mem: &Arc<Mem>, resume: Option<Ticket>) -> Running {
    let status = Arc::new(RebuildStatus::new(
        Mode::Swap,
        Start::Earliest,
        "shadow".into(),
    ));
    let (cancel, cancelled) = watch::channel(false);
    let run = SwapRun::new(mem.clone(), status.clone(), cancelled);
    Running {
        status,
        cancel,
        task: tokio::spawn(run.run(Start::Earliest, resume)),
    }
}

/// The live task, caught up with `count` records.
async fn serving(batch: i64, count: usize) -> Arc<Mem> {
    let mem = Mem::new(batch);
    mem.add(count);
    mem.start().await;
    let live = mem.targets.live.clone();
    until("the live task catches up", || {
        applied(&live) == count as i64
    })
    .await;
    mem
}

#[tokio::test(start_paused = true)]
async fn a_swap_fills_the_shadow_and_catches_up_to_the_live_task_before_the_swap() {
    // A batch of 1,000 makes the shadow "nearly caught up" at once: the catch-up with the
    // live task stopped must then read everything before the swap.
    let mem = serving(1_000, 300).await;
    let run = swap(&mem, None);
    run.task.await.unwrap().expect("the rebuild succeeds");
    assert_eq!(mem.targets.swaps(), (1, 1), "readied once, swapped once");
    assert_eq!(
        mem.targets.swapped_in(),
        vec![300],
        "the shadow held every record the live task had when it was swapped in"
    );
    assert_eq!(Mem::totals(&mem.targets.live), mem.model());
    assert!(!mem.admin.shadow_exists().await.unwrap());
    // The live task serves again, from the swapped-in checkpoints.
    assert!(mem.live_running());
    serves_again(&mem).await;
    let view = run.status.view();
    assert_eq!((view.events_done, view.events_total), (300, 300));
}

#[tokio::test(start_paused = true)]
async fn records_written_while_the_shadow_fills_reach_the_rebuilt_target_once() {
    let mem = serving(10, 200).await;
    let run = swap(&mem, None);
    for _ in 0..20 {
        mem.add(10);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    run.task.await.unwrap().expect("the rebuild succeeds");
    let live = mem.targets.live.clone();
    until("the live task applies the rest", || applied(&live) == 400).await;
    assert_eq!(Mem::totals(&mem.targets.live), mem.model());
    assert_eq!(mem.targets.swaps(), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_shadow_is_not_readied_while_it_is_more_than_a_batch_behind() {
    let mem = serving(10, 200).await;
    let (release, stalled) = oneshot::channel();
    mem.targets.shadow.inject(Fault::Stall(stalled));
    let run = swap(&mem, None);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(run.status.view().phase, Phase::Building);
    assert_eq!(mem.targets.swaps(), (0, 0));
    assert!(
        mem.live_running(),
        "the live task serves while the shadow fills"
    );
    let _ = release.send(());
    run.task.await.unwrap().expect("the rebuild succeeds");
    assert_eq!(mem.targets.swaps(), (1, 1));
    assert_eq!(Mem::totals(&mem.targets.live), mem.model());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_rebuild_drops_the_shadow_and_the_live_task_keeps_serving() {
    let mem = serving(10, 200).await;
    // The shadow's first write hangs until the cancel has been asked for.
    let (release, stalled) = oneshot::channel::<()>();
    mem.targets.shadow.inject(Fault::Stall(stalled));
    let run = swap(&mem, None);
    until("the shadow exists", || {
        mem.targets.shadow.checkpoints().len() == PARTITIONS as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = run.cancel.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = release.send(());
    assert!(matches!(run.task.await.unwrap(), Err(Halt::Cancelled)));
    assert!(!mem.admin.shadow_exists().await.unwrap());
    assert_eq!(mem.targets.swaps(), (0, 0));
    serves_again(&mem).await;
}

#[tokio::test(start_paused = true)]
async fn a_shadow_that_fails_fails_the_rebuild_and_leaves_the_live_target_as_it_was() {
    let mem = serving(10, 200).await;
    mem.targets
        .shadow
        .inject(Fault::Fail(SinkError::Incompatible(
            "a column changed type".into(),
        )));
    let run = swap(&mem, None);
    failed_with(run.task.await.unwrap(), "a column changed type");
    assert!(!mem.admin.shadow_exists().await.unwrap());
    assert_eq!(Mem::totals(&mem.targets.live), mem.model());
    assert!(mem.live_running());
}

#[tokio::test(start_paused = true)]
async fn a_failed_swap_starts_the_live_task_it_stopped_again() {
    let mem = serving(10, 200).await;
    mem.targets
        .fail_next_swap(SinkError::Unavailable("connection reset".into()));
    let run = swap(&mem, None);
    failed_with(run.task.await.unwrap(), "connection reset");
    assert_eq!(mem.targets.swaps(), (1, 0));
    assert!(!mem.admin.shadow_exists().await.unwrap());
    assert!(
        mem.live_running(),
        "the task stopped for the swap serves again"
    );
    serves_again(&mem).await;
}

#[tokio::test(start_paused = true)]
async fn a_resumed_rebuild_goes_on_from_its_shadow_and_counts_what_it_held() {
    let mem = serving(10, 200).await;
    // An interrupted run: a fresh shadow with its ticket, filled with the first 200
    // records, and the shadow's task gone with the daemon.
    let status = Arc::new(RebuildStatus::new(
        Mode::Swap,
        Start::Earliest,
        "shadow".into(),
    ));
    let (_cancel, cancelled) = watch::channel(false);
    SwapRun::new(mem.clone(), status, cancelled)
        .prepare(Start::Earliest, None)
        .await
        .expect("the shadow is prepared");
    let ticket: Ticket =
        serde_json::from_str(&mem.admin.shadow_ticket().await.unwrap().expect("a ticket")).unwrap();
    let stats = Arc::new(PipelineStats::default());
    let (stop, stopped) = watch::channel(false);
    let interrupted = tokio::spawn(mem.shadow_pipeline(stats).unwrap().run(stopped));
    let shadow = mem.targets.shadow.clone();
    until("the interrupted shadow has read 200", || {
        applied(&shadow) == 200
    })
    .await;
    let _ = stop.send(true);
    interrupted.await.unwrap().unwrap();
    mem.add(100);

    let run = swap(&mem, Some(ticket));
    run.task
        .await
        .unwrap()
        .expect("the resumed rebuild succeeds");
    assert_eq!(run.status.view().events_done_at_resume, Some(200));
    assert_eq!(mem.targets.swaps(), (1, 1));
    let live = mem.targets.live.clone();
    until("the live task is caught up", || applied(&live) == 300).await;
    assert_eq!(Mem::totals(&mem.targets.live), mem.model());
}

#[tokio::test(start_paused = true)]
async fn an_in_place_rebuild_empties_the_live_target_and_replays_it_to_the_end() {
    let mem = serving(10, 300).await;
    let status = Arc::new(RebuildStatus::new(
        Mode::InPlace,
        Start::Earliest,
        "live".into(),
    ));
    let (_cancel, cancelled) = watch::channel(false);
    let stats = mem.stats.clone();
    let before = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    InPlaceRun::new(mem.clone(), status.clone(), cancelled)
        .run(Start::Earliest)
        .await
        .expect("the replay succeeds");
    assert!(
        stats.batches.load(std::sync::atomic::Ordering::Relaxed) > before,
        "the live task wrote the replay"
    );
    assert_eq!(Mem::totals(&mem.targets.live), mem.model());
    let view = status.view();
    assert_eq!(
        (view.phase, view.events_done, view.events_total),
        (Phase::Replaying, 300, 300)
    );
    assert_eq!(mem.targets.swaps(), (0, 0));
    assert!(mem.live_running());
}
