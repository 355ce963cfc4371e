//! Daemons of one cluster (`--cluster`) on the real servers: a pipeline stored over the
//! API of one daemon runs on every daemon (a shared consumer group splits its partitions)
//! and gives the exact table; an invalid definition changes nothing; a changed one
//! restarts everywhere and goes on exactly; a pause through one daemon pauses every
//! daemon, also one that joins later, and a resume through that one resumes them all; a delete stops it everywhere and leaves the table; a pipeline that
//! comes from a file is not changed over the API.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sinkd_tests::control::{Api, TOKEN};
use sinkd_tests::scenarios::{Setup, merge_ends, produce_in_slices};
use sinkd_tests::target::Target;
use sinkd_tests::{shop, stack};

/// A daemon of cluster `id` without pipeline files.
async fn node(s: &Setup, id: &str, n: usize) -> Api {
    let log = s.dir.0.join(format!("node{n}.log"));
    let name = format!("{id}-node{n}");
    Api::start_run(
        &[OsStr::new("--cluster"), OsStr::new(id)],
        &log,
        &[("SINKD_NODE_ID", &name)],
    )
    .await
}

/// Waits until `ok` holds for `GET /pipelines` of `api`.
async fn until(api: &Api, what: &str, ok: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let (_, v) = api.call("GET", "/pipelines", None).await;
        if ok(&v) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: never seen; last {v}\n{}",
            api.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn state_of<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["state"]
        .as_str()
}

fn lists(v: &Value, name: &str) -> bool {
    v["pipelines"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["name"] == name))
}

/// `PUT /pipelines/{name}` with a YAML body.
async fn put(api: &Api, name: &str, text: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(format!("{}/pipelines/{name}", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .body(text.to_owned())
        .send()
        .await
        .expect("PUT answers");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_put_on_one_daemon_runs_on_every_daemon_of_the_cluster_exactly() {
    let s = Setup::new(&Target::postgres(), "cluster", 4, "").await;
    let text = std::fs::read_to_string(&s.file).unwrap();
    let id = stack::unique("c");
    let a = node(&s, &id, 1).await;
    let b = node(&s, &id, 2).await;
    let first = shop::generate(2_000, 300, 41);
    let mut ends = shop::publish(&s.topic, &first).await;

    // Stored through one daemon (the CLI), run by both.
    let (ok, out) = a.cli(&[OsStr::new("apply"), s.file.as_os_str()]);
    assert!(ok, "{out}\n{}", a.daemon.log());
    for n in [&a, &b] {
        until(n, "the pipeline runs", |v| lists(v, &s.pipeline)).await;
    }
    let log = a.daemon.log();
    assert!(log.contains(&format!("{id}-node1")), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    s.caught_up(&ends, &a.daemon).await;
    assert_eq!(s.orders().await, shop::expected(&first));
    // One consumer group: the partitions are split between the two daemons.
    let start = Instant::now();
    loop {
        let mut held = Vec::new();
        for n in [&a, &b] {
            let (_, v) = n
                .call("GET", &format!("/pipelines/{}", s.pipeline), None)
                .await;
            let here = v["partitions"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["held_here"] == true).count());
            held.push(here);
        }
        if held.iter().all(|h| *h > 0) && held.iter().sum::<usize>() == 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "partitions held {held:?}\n{}\n{}",
            a.daemon.log(),
            b.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Invalid: refused with its line, and nothing changes.
    let (code, v) = put(&b, &s.pipeline, &text.replace("topics:", "tpics:")).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["errors"][0]["line"].as_u64().is_some(), "{v}");
    let (code, v) = put(&b, "another-name", &text).await;
    assert_eq!(code, 400, "a file under another name: {v}");

    // Changed through the other daemon, under load: both restart it and go on exactly.
    let changed = format!("{text}batch:\n  max_events: 50\n");
    let second = shop::generate(2_000, 300, 42);
    let ids = shop::register_schemas(&s.topic).await;
    let publisher = produce_in_slices(
        &s.topic,
        shop::records(&ids, &second),
        100,
        Duration::from_millis(30),
    );
    let (code, v) = put(&b, &s.pipeline, &changed).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["pipeline"]["name"], s.pipeline.as_str(), "{v}");
    merge_ends(&mut ends, publisher.await.unwrap());
    s.caught_up(&ends, &a.daemon).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(s.orders().await, shop::expected(&all));
    let start = Instant::now();
    while !a.daemon.log().contains("batch.max_events: added (50)") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            a.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Paused through one daemon: paused on both, and on a daemon that joins later, which
    // runs what the cluster defines in its last version.
    let (code, v) = a.on("POST", &s.pipeline, "pause").await;
    assert_eq!((code, v["state"].as_str()), (200, Some("paused")), "{v}");
    until(&b, "paused on the other daemon", |v| {
        state_of(v, &s.pipeline) == Some("paused")
    })
    .await;
    let c = node(&s, &id, 3).await;
    until(&c, "the late daemon has it, paused", |v| {
        state_of(v, &s.pipeline) == Some("paused")
    })
    .await;
    let third = shop::generate(500, 100, 43);
    merge_ends(&mut ends, shop::publish(&s.topic, &third).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.orders().await,
        shop::expected(&all),
        "nothing applied while paused"
    );
    // Resumed through the late daemon: running everywhere, and the rest lands exactly.
    let (code, v) = c.on("POST", &s.pipeline, "resume").await;
    assert_eq!(code, 200, "{v}");
    for n in [&a, &b, &c] {
        until(n, "running again", |v| {
            matches!(state_of(v, &s.pipeline), Some("running" | "starting"))
        })
        .await;
    }
    s.caught_up(&ends, &a.daemon).await;
    let all: Vec<_> = all.iter().chain(&third).cloned().collect();
    assert_eq!(s.orders().await, shop::expected(&all));

    // A pipeline from a file is not the API's to change.
    let own = s.dir.file("own.yaml", &text);
    let d = Api::start_run(
        &[
            OsStr::new("--config"),
            own.as_os_str(),
            OsStr::new("--cluster"),
            OsStr::new(&id),
        ],
        &s.dir.0.join("node4.log"),
        &[("SINKD_NODE_ID", &format!("{id}-node4"))],
    )
    .await;
    let (code, v) = put(&d, &s.pipeline, &changed).await;
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("own.yaml"), "{v}");
    drop(d);

    // Deleted through the late daemon: stopped everywhere; the table stays.
    let (code, v) = c
        .call("DELETE", &format!("/pipelines/{}", s.pipeline), None)
        .await;
    assert_eq!(code, 200, "{v}");
    for n in [&a, &b, &c] {
        until(n, "the pipeline is gone", |v| !lists(v, &s.pipeline)).await;
    }
    assert_eq!(s.orders().await, shop::expected(&all));
    let (code, v) = c
        .call("DELETE", &format!("/pipelines/{}", s.pipeline), None)
        .await;
    assert_eq!(code, 404, "{v}");
    for n in [&a, &b, &c] {
        let log = n.daemon.log();
        assert!(!log.contains("panicked") && !log.contains(TOKEN), "{log}");
    }
}
