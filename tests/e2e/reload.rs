//! Pipeline files changed while the daemon runs (`sinkd run --watch`, SIGHUP) and `sinkd
//! plan`, on the real servers: a new file starts its pipeline, a changed one restarts
//! alone and goes on from its checkpoints (exact table, nothing applied twice), a file
//! that does not load leaves the running version as it was and is reported, a removed
//! file stops its pipeline and leaves its table, and a paused pipeline stays paused.

use std::time::{Duration, Instant};

use serde_json::Value;
use sinkd_tests::control::Api;
use sinkd_tests::scenarios::{Setup, merge_ends, produce_in_slices};
use sinkd_tests::shop;
use sinkd_tests::target::Target;

/// Waits until `GET /pipelines` satisfies `ok`, for at most 30 s.
async fn until(api: &Api, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, v) = api.call("GET", "/pipelines", None).await;
        if ok(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: never seen; last {v}\n{}",
            api.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["pipelines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    n.sort();
    n
}

fn state_of(v: &Value, name: &str) -> Option<String> {
    v["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["state"]
        .as_str()
        .map(str::to_owned)
}

/// `sinkd plan FILE…` against `api`: success and output.
fn plan(api: &Api, files: &[&std::path::Path]) -> (bool, String) {
    let mut args = vec![std::path::Path::new("plan")];
    args.extend_from_slice(files);
    api.cli(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn watched_files_start_restart_and_stop_pipelines_alone_and_exactly() {
    let a = Setup::new(&Target::postgres(), "reload-a", 2, "").await;
    let b = Setup::new(&Target::postgres(), "reload-b", 2, "").await;
    // One folder for both pipelines: `a` from the start, `b` added later.
    let dir = &a.dir;
    let a_text = std::fs::read_to_string(&a.file).unwrap();
    let b_text = std::fs::read_to_string(&b.file).unwrap();
    std::fs::remove_file(&a.file).unwrap();
    let a_file = dir.file("a.yaml", &a_text);
    let first = shop::generate(1_500, 200, 31);
    let mut ends = shop::publish(&a.topic, &first).await;
    let api = Api::start_on(&dir.0, &dir.0.join("sinkd.log"), &[("SINKD_WATCH", "true")]).await;
    a.caught_up(&ends, &api.daemon).await;

    // A plan before applying: `b` is new; a changed `a` shows its fields and no rebuild.
    let changed_a = a_text.replace(
        "    op: delete\n",
        "    op: delete\nbatch:\n  max_events: 7\n",
    );
    let staged = tempfile_in(dir, "staged-a.yml.txt", &changed_a);
    let (ok, out) = plan(&api, &[&staged, &b.file]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("pipeline `{}`: changed", a.pipeline))
            && out.contains("+ batch.max_events: 7")
            && !out.contains("needs a rebuild"),
        "{out}"
    );
    assert!(
        out.contains(&format!("pipeline `{}`: new pipeline", b.pipeline)),
        "{out}"
    );
    let reshaped = a_text.replace("op: merge", "op: upsert");
    let staged = tempfile_in(dir, "staged-a.yml.txt", &reshaped);
    let (ok, out) = plan(&api, &[&staged]);
    assert!(ok && out.contains("needs a rebuild"), "{out}");
    let broken = tempfile_in(
        dir,
        "staged-a.yml.txt",
        &a_text.replace("topics:", "tpics:"),
    );
    let (ok, out) = plan(&api, &[&broken]);
    assert!(!ok && out.contains("tpics"), "{out}");

    // A new file: its pipeline starts; `a` goes on untouched.
    let b_events = shop::generate(800, 100, 32);
    let b_ends = shop::publish(&b.topic, &b_events).await;
    dir.file("b.yaml", &b_text);
    until(&api, "b listed", |v| names(v).contains(&b.pipeline)).await;
    b.caught_up(&b_ends, &api.daemon).await;
    assert_eq!(b.orders().await, shop::expected(&b_events));

    // A changed file restarts `a` alone, under load, and it goes on from its checkpoints.
    let second = shop::generate(1_500, 200, 33);
    let ids = shop::register_schemas(&a.topic).await;
    // About 6 s of load; the watch sees the change within a second of the write.
    let publisher = produce_in_slices(
        &a.topic,
        shop::records(&ids, &second),
        50,
        Duration::from_millis(200),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&a_file, &changed_a).unwrap();
    let start = Instant::now();
    while !api.daemon.log().contains("batch.max_events: added (7)") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            api.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !publisher.is_finished(),
        "the change was applied after the load ended"
    );
    merge_ends(&mut ends, publisher.await.unwrap());
    a.caught_up(&ends, &api.daemon).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(a.orders().await, shop::expected(&all), "a after its change");

    // A file that does not load: reported, and `a` keeps running its last version.
    std::fs::write(&a_file, a_text.replace("topics:", "tpics:")).unwrap();
    let v = until(&api, "the problem reported", |v| {
        v["problems"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    assert!(v["problems"][0].as_str().unwrap().contains("tpics"), "{v}");
    assert_eq!(state_of(&v, &a.pipeline).as_deref(), Some("running"), "{v}");
    let third = shop::generate(300, 50, 34);
    merge_ends(&mut ends, shop::publish(&a.topic, &third).await);
    a.caught_up(&ends, &api.daemon).await;
    let all: Vec<_> = all.iter().chain(&third).cloned().collect();
    assert_eq!(
        a.orders().await,
        shop::expected(&all),
        "a while its file is broken"
    );

    // Paused, then changed: it stays paused; the problem list empties once it loads.
    let (code, v) = api.on("POST", &a.pipeline, "pause").await;
    assert_eq!(code, 200, "{v}");
    std::fs::write(&a_file, &a_text).unwrap();
    let v = until(&api, "the fix applied", |v| {
        v["problems"].as_array().is_some_and(|p| p.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, v2) = api.call("GET", "/pipelines", None).await;
    assert_eq!(
        state_of(&v2, &a.pipeline).as_deref(),
        Some("paused"),
        "{v}\n{v2}"
    );

    // A removed file stops its pipeline; its table stays.
    std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
    let v = until(&api, "b removed", |v| !names(v).contains(&b.pipeline)).await;
    assert!(names(&v).contains(&a.pipeline), "{v}");
    assert_eq!(
        b.orders().await,
        shop::expected(&b_events),
        "b's table stays"
    );
    let (code, v) = api.on("POST", &a.pipeline, "resume").await;
    assert_eq!(code, 200, "{v}");
    let log = api.daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Writes `text` to `name` in the test's folder under a name the daemon does not load.
fn tempfile_in(dir: &sinkd_tests::daemon::Workdir, name: &str, text: &str) -> std::path::PathBuf {
    dir.file(name, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_watch_files_are_reloaded_on_sighup_only() {
    let a = Setup::new(&Target::postgres(), "hup-a", 1, "").await;
    let b = Setup::new(&Target::postgres(), "hup-b", 1, "").await;
    let dir = &a.dir;
    let b_events = shop::generate(200, 40, 35);
    let ends = shop::publish(&b.topic, &b_events).await;
    let api = Api::start_on(&dir.0, &dir.0.join("sinkd.log"), &[]).await;
    api.wait_state(&a.pipeline, "running").await;
    dir.file("b.yaml", &std::fs::read_to_string(&b.file).unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, v) = api.call("GET", "/pipelines", None).await;
    assert_eq!(
        names(&v),
        vec![a.pipeline.clone()],
        "no reload without --watch"
    );
    api.daemon.signal("HUP");
    until(&api, "b started on SIGHUP", |v| {
        names(v).contains(&b.pipeline)
    })
    .await;
    b.caught_up(&ends, &api.daemon).await;
    assert_eq!(b.orders().await, shop::expected(&b_events));
    let (_, v) = api.call("GET", "/healthz", None).await;
    assert_eq!(v, "ok", "SIGHUP must not end the daemon");
}
