//! Fault scenarios beyond `kill -9`, run against every database sink.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use crate::daemon::Daemon;
use crate::scenarios::{Setup, merge_ends};
use crate::target::Target;
use crate::{shop, stack};

/// Scenario: a zombie writer. Instance A is stopped (SIGSTOP) in the middle of a run, past
/// its group session timeout; B takes every partition over and writes on. When A wakes
/// (SIGCONT), the batch it held is fenced and applies nothing (a transaction it had open
/// was ended meanwhile, so B was never held up for long); A reloads, rejoins the group,
/// and the two share the rest. The target ends equal to the model.
pub async fn a_zombie_writer_is_fenced_when_it_wakes(target: &Target) {
    let s = Setup::new(target, "zombie", 4, "").await;
    let events = shop::generate(45_000, 2_000, 43);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events);
    let mut later = records.split_off(30_000);
    let rest = later.split_off(7_500);
    let mut ends = stack::produce(&s.topic, records).await;
    let mut a = s.start();
    let start = Instant::now();
    while s.applied().await < 5_000 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "A made no progress\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.signal("STOP");
    let assigned = |log: String| log.matches("partition assigned").count();
    let assigned_before = assigned(a.log());
    let b = Daemon::start(&s.file, &s.dir.0.join("sinkd-b.log"));
    merge_ends(&mut ends, stack::produce(&s.topic, later).await);
    s.caught_up(&ends, &b).await;
    a.signal("CONT");
    // Awake, A writes what it held (fenced), reloads and rejoins; the rest is shared.
    merge_ends(&mut ends, stack::produce(&s.topic, rest).await);
    s.caught_up(&ends, &b).await;
    assert_eq!(s.orders().await, shop::expected(&events));
    let start = Instant::now();
    while !a.log().contains("fenced") || assigned(a.log()) <= assigned_before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "A's held batch is fenced and A rejoins\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop_cleanly();
    assert_eq!(
        s.orders().await,
        shop::expected(&events),
        "after A rejoined"
    );
}

/// Scenario: the schema registry goes away in the middle of a run while the records
/// produced meanwhile carry schema ids sinkd has not seen: first it hangs (SIGSTOP: the
/// port accepts, nothing answers) for 10 s, then it is down (connections refused) for
/// 30 s. The pipeline waits on the record it cannot decode yet and retries it (nothing is
/// dead-lettered, nothing skipped, the daemon keeps running), then catches up when the
/// registry is back with the same ids (its state replayed, as Confluent's registry
/// replays `_schemas`). The target ends equal to the model.
pub async fn a_registry_outage_is_waited_out(target: &Target) {
    let mut registry = stack::OwnRegistry::start_durable();
    let (s, dlq) = Setup::dead_lettering(target, "regdown", 4).await;
    let events = shop::generate(12_000, 600, 61);
    let ids = shop::register_schemas_at(&registry.url, None, &s.topic).await;
    let (first, later) = events.split_at(6_000);
    let (hung, down) = later.split_at(3_000);
    let mut ends = stack::produce(&s.topic, shop::records(&ids, first)).await;
    let url = registry.url.clone();
    let daemon = Daemon::start_with_env(
        &s.file,
        &s.dir.0.join("sinkd.log"),
        "127.0.0.1:0",
        &[("SCHEMA_REGISTRY_URL", &url)],
    );
    s.caught_up(&ends, &daemon).await;

    // Each phase's orders placed meanwhile are written with a schema id sinkd has never
    // looked up, registered just before the registry goes away.
    let mut outage = async |events: &[shop::ShopEvent], kind: shop::Kind, hangs: bool| {
        let (id, schema) = shop::register_evolved_at(&url, &s.topic, kind).await;
        if hangs {
            registry.signal("STOP");
        } else {
            registry.stop();
        }
        let records = shop::records(&ids, events)
            .into_iter()
            .zip(events)
            .map(|(mut r, e)| {
                if e.kind == kind {
                    r.value = Some(stack::encode(id, &schema, &shop::evolved(e)));
                }
                r
            })
            .collect();
        merge_ends(&mut ends, stack::produce(&s.topic, records).await);
        let waiting = Instant::now();
        let wanted: i64 = ends.values().sum();
        while waiting.elapsed() < Duration::from_secs(if hangs { 10 } else { 30 }) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            s.applied().await < wanted,
            "the registry is away (hanging: {hangs}): records of the new id wait"
        );
        if hangs {
            registry.signal("CONT");
        } else {
            registry.restart();
        }
    };
    outage(hung, shop::Kind::ItemAdded, true).await;
    outage(down, shop::Kind::Placed, false).await;
    s.caught_up(&ends, &daemon).await;
    assert_eq!(s.orders().await, shop::expected(&events));
    assert_eq!(stack::topic_end(&dlq, 1), 0, "nothing was dead-lettered");
    let log = daemon.log();
    assert!(
        log.contains("cannot decode yet; retrying the same record"),
        "the wait is in the log\n{log}"
    );
}

/// Registers the shop's schemas and produces `events` in slices of 2,000, 300 ms apart,
/// in the background (see [`crate::scenarios::produce_in_slices`]).
pub async fn publish_in_slices(
    topic: &str,
    events: &[shop::ShopEvent],
) -> tokio::task::JoinHandle<HashMap<i32, i64>> {
    let ids = shop::register_schemas(topic).await;
    let records = shop::records(&ids, events);
    crate::scenarios::produce_in_slices(topic, records, 2_000, Duration::from_millis(300))
}

/// A database server of a test's own that the test may crash.
pub trait CrashableServer {
    /// The target writing to it.
    fn target(&self) -> Target;
    /// Kills it abruptly, keeps it down a few seconds, and starts it again on the same
    /// data; returns once it accepts connections.
    fn crash(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// Scenario: the database server crashes twice under load (killed abruptly, started again
/// on the same data). The batch in flight fails or its commit's fate is
/// unknown; sinkd reconnects, reloads its checkpoints from the sink and goes on from
/// there, so nothing is lost and nothing applied twice (increments included): the target
/// ends equal to the model, and each crash happened mid-run.
pub async fn a_database_crash_mid_run_loses_nothing(server: &mut impl CrashableServer) {
    let s = Setup::new(
        &server.target(),
        "crash",
        4,
        crate::scenarios::QUICK_BATCHES,
    )
    .await;
    let events = shop::generate(24_000, 1_000, 77);
    let producer = publish_in_slices(&s.topic, &events).await;
    let daemon = s.start();
    let mut crashed_at = Vec::new();
    for goal in [2_000, 8_000] {
        let deadline = Instant::now() + Duration::from_secs(90);
        while s.applied().await < goal {
            assert!(Instant::now() < deadline, "no progress\n{}", daemon.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        crashed_at.push(s.applied().await);
        server.crash().await;
    }
    let ends = producer.await.expect("producer");
    s.caught_up(&ends, &daemon).await;
    assert_eq!(s.orders().await, shop::expected(&events));
    let total: i64 = ends.values().sum();
    assert!(
        crashed_at.iter().all(|&at| at < total),
        "crashes mid-run: {crashed_at:?} of {total}"
    );
    let log = daemon.log();
    assert!(
        log.contains("sink write failed; retrying the same batch"),
        "the crashes hit writes, which were retried\n{log}"
    );
}
