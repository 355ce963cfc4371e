//! Fault scenarios beyond `kill -9`, run against every database sink.

use std::time::{Duration, Instant};

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
