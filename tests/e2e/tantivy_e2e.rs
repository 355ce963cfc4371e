//! End to end into an embedded Tantivy index with the real `sinkd` binary: the shared
//! scenarios (replica mode: no consumer group), search over REST, and what happens to a
//! corrupt or foreign index directory.

use std::time::Duration;

use sinkd_tests::control;
use sinkd_tests::daemon::Daemon;
use sinkd_tests::scenarios::Setup;
use sinkd_tests::shop;
use sinkd_tests::target::Target;

fn target() -> Target {
    Target::Tantivy(std::env::temp_dir().join("sinkd-test-indexes"))
}

async fn search(port: u16, pipeline: &str, q: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/pipelines/{pipeline}/search"
        ))
        .query(&[("q", q), ("limit", "1000")])
        .send()
        .await
        .expect("search answers");
    assert!(response.status().is_success(), "{q}: {}", response.status());
    response.json().await.expect("JSON")
}

sinkd_tests::every_sink_scenarios!(target());

sinkd_tests::scenario_tests! { target();
    a_crash_after_the_active_switch_keeps_the_rebuilt_index =>
        control::a_crash_inside_the_swap_leaves_a_consistent_target, "tantivy-swap-switched";
}

#[tokio::test(flavor = "multi_thread")]
async fn search_over_rest_answers_term_phrase_and_range_queries() {
    let t = target();
    let s = Setup::new(&t, "search", 2, "").await;
    let events = shop::generate(2_000, 200, 4);
    let ends = shop::publish(&s.topic, &events).await;
    let port = sinkd_tests::stack::free_port();
    let daemon = Daemon::start_listening(
        &s.file,
        &s.dir.0.join("sinkd.log"),
        &format!("127.0.0.1:{port}"),
    );
    s.caught_up(&ends, &daemon).await;
    let want = shop::expected(&events);
    let total = |v: &serde_json::Value| v["total"].as_u64().unwrap() as usize;

    // Term, on a raw string field.
    let shipped = want
        .values()
        .filter(|r| r.status.as_deref() == Some("shipped"))
        .count();
    let got = search(port, &s.pipeline, "status:shipped").await;
    assert_eq!(total(&got), shipped);
    assert!(got["hits"][0]["score"].as_f64().is_some());
    assert_eq!(got["hits"][0]["doc"]["status"], "shipped");
    // Phrase, on a tokenized text field.
    let (key, row) = want.iter().find(|(_, r)| r.address.is_some()).unwrap();
    let street = row.address.clone().unwrap();
    let got = search(port, &s.pipeline, &format!("address:\"{street}\"")).await;
    let same = want
        .values()
        .filter(|r| r.address.as_deref() == Some(&street))
        .count();
    assert_eq!(total(&got), same, "{street}");
    assert!(
        got["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["doc"]["order_id"] == key.as_str())
    );
    // Range, on a fast i64 field.
    let in_range = want
        .values()
        .filter(|r| r.item_count.is_some_and(|n| (3..=5).contains(&n)))
        .count();
    let got = search(port, &s.pipeline, "item_count:[3 TO 5]").await;
    assert_eq!(total(&got), in_range);
    // A bad query is a 400 with the parser's message.
    let bad = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/pipelines/{}/search?q=item_count:[3 TO",
            s.pipeline
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_that_does_not_exist_stops_a_replica_pipeline_with_its_name() {
    // Replica mode lists the partitions itself, on the polling thread: a missing topic is
    // an error no wait cures, so the pipeline stops and names it.
    let s = Setup::new(&target(), "no-topic", 1, "").await;
    let missing = format!("{}-missing", s.topic);
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace(&s.topic, &missing)).unwrap();
    let mut daemon = s.start();
    daemon.fails_saying(&[&format!("topic {missing} does not exist"), "source failed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_foreign_index_directory_is_a_clear_error() {
    let t = target();
    // Foreign: a non-empty directory without an index.
    let s = Setup::new(&t, "foreign", 1, "").await;
    let Target::Tantivy(base) = &t else {
        unreachable!()
    };
    let dir = base.join(&s.table);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let mut daemon = s.start();
    daemon.fails_saying(&["holds no Tantivy index"]);

    // Corrupt: a real index whose meta.json is damaged.
    let s = Setup::new(&t, "corrupt", 1, "").await;
    let events = shop::generate(100, 10, 1);
    let mut daemon = s.run_through(&events).await;
    daemon.terminate(Duration::from_secs(30));
    let dir = base.join(&s.table);
    std::fs::write(dir.join("meta.json"), "{ not json").unwrap();
    let mut daemon = s.start();
    daemon.fails_saying(&["cannot be opened"]);

    // Missing: the directory and its parent are gone (an unmounted volume).
    let gone = Target::Tantivy(base.join("unmounted-volume"));
    let s = Setup::new(&gone, "missing", 1, "").await;
    std::fs::remove_dir_all(base.join("unmounted-volume")).unwrap();
    let mut daemon = s.start();
    daemon.fails_saying(&["is the volume mounted"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivery_from_offset_zero_changes_nothing() {
    let t = target();
    let s = Setup::new(&t, "replay", 4, "").await;
    let events = shop::generate(5_000, 300, 17);
    let ends = shop::publish(&s.topic, &events).await;
    let mut daemon = s.start();
    s.caught_up(&ends, &daemon).await;
    daemon.stop_cleanly();
    let before = s.orders().await;
    assert_eq!(before, shop::expected(&events));

    // The same index under another pipeline name has no checkpoint: it reads every
    // partition from offset 0 again. The documents' positions make every event a no-op.
    let again = format!("{}-again", s.pipeline);
    let text = std::fs::read_to_string(&s.file).unwrap().replacen(
        &format!("name: {}", s.pipeline),
        &format!("name: {again}"),
        1,
    );
    let file = s.dir.file("again.yaml", &text);
    let daemon = Daemon::start(&file, &s.dir.0.join("again.log"));
    // Its checkpoint lives in the same directory, under its own name.
    t.wait_caught_up_in(&s.table, &again, &ends, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert_eq!(
        s.orders().await,
        before,
        "a full redelivery changed the index"
    );
}

/// A full disk under the index is the disk's fault, not a record's: the write fails, is
/// retried with the same batch (nothing dead-lettered, the pipeline keeps running, the
/// checkpoint stays where the index is), and when space returns the rest is written and
/// the index equals the model.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_stops_writes_until_space_returns() {
    let disk = sinkd_tests::tmpfs::Tmpfs::mount(64);
    let t = Target::Tantivy(disk.path().to_path_buf());
    let (s, dlq) = Setup::dead_lettering(&t, "diskfull", 2).await;
    let events = shop::generate(8_000, 400, 23);
    let (first, second) = events.split_at(4_000);
    let daemon = s.run_through(first).await;
    let before = s.checkpoints().await;
    let filled = disk.fill();
    let ends = shop::publish(&s.topic, second).await;
    // The second half arrives on a full disk: writes fail and are retried.
    let start = std::time::Instant::now();
    while !daemon.log().contains("No space left on device") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the full disk is reported ({filled} bytes filled)\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.checkpoints().await, before, "nothing moved while full");
    disk.free();
    s.caught_up(&ends, &daemon).await;
    assert_eq!(
        s.orders().await,
        shop::expected(&events),
        "after space returned"
    );
    assert_eq!(
        sinkd_tests::stack::topic_end(&dlq, 1),
        0,
        "nothing was dead-lettered"
    );
}
