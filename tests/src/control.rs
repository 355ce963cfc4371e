//! The control plane from outside: a client of a test daemon's REST API, and the rebuild
//! scenarios every sink runs (under load; interrupted by kill -9).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::Daemon;
use crate::scenarios::{SMALL_BATCHES, Setup, merge_ends};
use crate::shop::Expected;
use crate::target::Target;
use crate::{shop, stack};

/// The API token test daemons run with.
pub const TOKEN: &str = "test-token-5f0c";

/// A daemon with its API on a known port and [`TOKEN`] set.
pub struct Api {
    /// The daemon.
    pub daemon: Daemon,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    /// Starts sinkd on the setup's pipeline file with `env` added, and waits for the API.
    pub async fn start(s: &Setup, env: &[(&str, &str)]) -> Api {
        Api::start_on(&s.file, &s.dir.0.join("sinkd.log"), env).await
    }

    /// Starts sinkd on `config` (a file or a folder of them), logging to `log`.
    pub async fn start_on(
        config: &std::path::Path,
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Api {
        let args = [std::ffi::OsStr::new("--config"), config.as_os_str()];
        Api::start_run(&args, log, env).await
    }

    /// Starts `sinkd run ARGS…` (with the API's port and [`TOKEN`]), logging to `log`.
    pub async fn start_run(
        args: &[&std::ffi::OsStr],
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Api {
        let port = stack::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut vars = vec![("SINKD_API_TOKEN", TOKEN)];
        vars.extend_from_slice(env);
        let daemon = Daemon::start_run(args, log, &listen, &vars);
        let api = Api {
            daemon,
            base: format!("http://{listen}"),
            http: reqwest::Client::new(),
        };
        let start = Instant::now();
        while api.raw("GET", "/healthz", None, None).await.0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the API did not come up\n{}",
                api.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api
    }

    /// A request with an explicit token (`None`: no Authorization header); returns the
    /// status and the body (JSON, or a string).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// Publishes `events`, starts sinkd as [`Api::start`] does and waits until it has
    /// applied them all.
    pub async fn run_through(s: &Setup, events: &[shop::ShopEvent], env: &[(&str, &str)]) -> Api {
        let ends = shop::publish(&s.topic, events).await;
        let api = Api::start(s, env).await;
        s.caught_up(&ends, &api.daemon).await;
        api
    }

    /// Runs a CLI client command (`sinkd status …`) against this daemon with the right
    /// token; returns success and stdout + stderr.
    pub fn cli<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> (bool, String) {
        let out = std::process::Command::new(crate::daemon::binary())
            .args(args)
            .env("SINKD_API_URL", &self.base)
            .env("SINKD_API_TOKEN", TOKEN)
            .output()
            .expect("sinkd runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `method /pipelines/{pipeline}/{action}` without a body, with the right token.
    pub async fn on(&self, method: &str, pipeline: &str, action: &str) -> (u16, Value) {
        let path = format!("/pipelines/{pipeline}/{action}");
        self.call(method, &path, None).await
    }

    /// A request with the right token.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.raw(method, path, Some(TOKEN), body).await
    }

    /// `PUT /pipelines/{pipeline}/offsets` with `body`.
    pub async fn set_offsets(&self, pipeline: &str, body: Value) -> (u16, Value) {
        let path = format!("/pipelines/{pipeline}/offsets");
        self.call("PUT", &path, Some(body)).await
    }

    /// `GET /pipelines/{pipeline}/wait` until `offset` of `topic`/`partition` is written,
    /// for at most `timeout` (the API's syntax: `500ms`, `60s`).
    pub async fn wait_for(
        &self,
        pipeline: &str,
        (topic, partition, offset): (&str, i32, i64),
        timeout: &str,
    ) -> (u16, Value) {
        let query = format!("topic={topic}&partition={partition}&offset={offset}");
        let path = format!("/pipelines/{pipeline}/wait?{query}&timeout={timeout}");
        self.call("GET", &path, None).await
    }

    /// Waits until the pipeline reports `state`.
    pub async fn wait_state(&self, pipeline: &str, state: &str) -> Value {
        let start = Instant::now();
        loop {
            let (code, v) = self
                .call("GET", &format!("/pipelines/{pipeline}"), None)
                .await;
            if code == 200 && v["state"] == state {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "pipeline never {state}: {v}\n{}",
                self.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many orders the live read model holds, read the way its readers do: the table
    /// or collection itself, or the sidecar's search API for an index.
    pub async fn live_count(&self, target: &Target, s: &Setup) -> Result<u64, String> {
        match target {
            Target::Tantivy(_) => {
                let (code, v) = self
                    .call(
                        "GET",
                        &format!("/pipelines/{}/search?q=*&limit=1", s.pipeline),
                        None,
                    )
                    .await;
                if code != 200 {
                    return Err(format!("{code}: {v}"));
                }
                v["total"].as_u64().ok_or_else(|| format!("no total: {v}"))
            }
            _ => target.try_count(&s.table).await,
        }
    }

    /// Starts a swap rebuild and waits until it is done (fails on any other ending).
    pub async fn rebuild_to_done(&self, pipeline: &str, timeout: Duration) -> Value {
        let (code, v) = self.on("POST", pipeline, "rebuild").await;
        assert_eq!(code, 202, "{v}");
        let (done, _) = self.wait_rebuild(pipeline, timeout).await;
        assert_eq!(done["phase"], "done", "{done}\n{}", self.daemon.log());
        done
    }

    /// Polls the rebuild until it leaves the running phases; returns its last view and
    /// every phase seen.
    pub async fn wait_rebuild(&self, pipeline: &str, timeout: Duration) -> (Value, Vec<String>) {
        let start = Instant::now();
        let mut phases: Vec<String> = Vec::new();
        loop {
            let (code, v) = self.on("GET", pipeline, "rebuild").await;
            assert_eq!(code, 200, "{v}");
            let phase = v["phase"].as_str().unwrap_or("").to_owned();
            if phases.last() != Some(&phase) {
                phases.push(phase.clone());
            }
            if matches!(
                phase.as_str(),
                "done" | "failed" | "cancelled" | "abandoned"
            ) {
                return (v, phases);
            }
            assert!(
                start.elapsed() < timeout,
                "rebuild still {phase} after {timeout:?}: {v}\n{}",
                self.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Scenario: while a producer keeps adding orders and a reader polls the live target, a
/// swap rebuild completes; the reader never saw the target empty or shrink (a partial
/// shadow would have fewer rows), and afterwards the target is exactly the whole log.
pub async fn a_rebuild_under_load_never_shows_a_partial_target_and_misses_nothing(target: &Target) {
    let s = Setup::new(target, "rebuild", 4, "").await;
    let mut events = shop::generate(40_000, 4_000, 11);
    let mut ends = shop::publish(&s.topic, &events).await;
    let api = Api::start(&s, &[]).await;
    s.caught_up(&ends, &api.daemon).await;
    // The checkpoint on disk can lead what searches see by the instant a Tantivy reader
    // takes to reload; the daemon's read-your-writes wait is what a reader relies on.
    for (partition, end) in &ends {
        let (code, v) = api
            .wait_for(&s.pipeline, (&s.topic, *partition, end - 1), "60s")
            .await;
        assert_eq!(code, 200, "{v}");
    }
    let api = Arc::new(api);
    let s = Arc::new(s);
    let before = api.live_count(target, &s).await.expect("live count");
    assert!(before > 500, "the log leaves a good number of orders");

    // A reader of the live target, as the application would be.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, target, api, s) = (stop.clone(), target.clone(), api.clone(), s.clone());
        tokio::spawn(async move {
            let (mut reads, mut last, mut problems) = (0u64, before, Vec::new());
            let mut killed = 0;
            while !stop.load(Ordering::Relaxed) {
                match api.live_count(&target, &s).await {
                    Ok(n) if n < last => problems.push(format!("count fell from {last} to {n}")),
                    Ok(n) => last = n,
                    // MongoDB kills the queries running on a collection that
                    // renameCollection drops (code 175, QueryPlanKilled); the retry reads
                    // the new collection. Readers see a failed query, never a partial one.
                    Err(e)
                        if matches!(target, Target::Mongo(_))
                            && (e.contains("QueryPlanKilled") || e.contains("code 175")) =>
                    {
                        killed += 1
                    }
                    Err(e) => problems.push(format!("a read failed: {e}")),
                }
                reads += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if killed > 3 {
                problems.push(format!(
                    "{killed} reads killed: more than the swap's instant"
                ));
            }
            eprintln!("live reader: {reads} reads, {killed} killed by the swap");
            (reads, problems)
        })
    };
    // A producer of new orders throughout the rebuild.
    let producer = {
        let (stop, topic) = (stop.clone(), s.topic.clone());
        tokio::spawn(async move {
            let ids = shop::register_schemas(&topic).await;
            let (mut produced, mut ends) = (Vec::new(), HashMap::new());
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) || round < 5 {
                let batch = shop::new_orders(&format!("live{round:03}"), 300);
                merge_ends(
                    &mut ends,
                    stack::produce(&topic, shop::records(&ids, &batch)).await,
                );
                produced.extend(batch);
                round += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (produced, ends)
        })
    };

    let (code, started) = api
        .call(
            "POST",
            &format!("/pipelines/{}/rebuild", s.pipeline),
            Some(serde_json::json!({"mode": "swap"})),
        )
        .await;
    assert_eq!(code, 202, "{started}");
    let (done, phases) = api
        .wait_rebuild(&s.pipeline, Duration::from_secs(240))
        .await;
    assert_eq!(done["phase"], "done", "{done}\n{}", api.daemon.log());
    // The swap itself can be shorter than the poll above (a Tantivy swap takes a few
    // tens of ms), so the daemon's own account of it is what shows it happened.
    assert!(
        phases.iter().any(|p| p == "building"),
        "phases seen: {phases:?}"
    );
    assert!(
        api.daemon
            .log()
            .contains("live task stopped for the swap; the shadow catches up to it"),
        "phases seen: {phases:?}\n{}",
        api.daemon.log()
    );
    assert!(
        done["events_done"].as_i64().unwrap_or(0) >= 40_000,
        "{done}"
    );

    stop.store(true, Ordering::Relaxed);
    let (produced, produced_ends) = producer.await.expect("producer");
    merge_ends(&mut ends, produced_ends);
    events.extend(produced);
    // Read-your-writes: the last offset of each partition is applied.
    for (partition, end) in &ends {
        let (code, v) = api
            .wait_for(&s.pipeline, (&s.topic, *partition, end - 1), "60s")
            .await;
        assert_eq!(code, 200, "{v}");
    }
    let (reads, problems) = reader.await.expect("reader");
    assert!(
        problems.is_empty(),
        "the live target went back: {problems:?}"
    );
    assert!(reads >= 10, "the reader polled throughout ({reads} reads)");
    assert_eq!(s.orders().await, shop::expected(&events));
    assert_eq!(s.checkpoints().await, ends);
    assert!(!target.shadow_exists(&s.table).await, "the shadow is gone");
    let (_, status) = api
        .call("GET", &format!("/pipelines/{}", s.pipeline), None)
        .await;
    assert_eq!(status["state"], "running", "{status}");
}

/// How a test stops the daemon.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stop {
    /// SIGKILL.
    Kill9,
    /// SIGTERM, as a container runtime stops it; the daemon must exit 0.
    Term,
}

/// Starts a swap rebuild of a 60,000-event log and stops the daemon once the shadow
/// holds part of it; returns how many offsets the shadow had applied by then. The live
/// target must be exactly as before the rebuild right after the stop.
async fn rebuild_then_stop(s: &Setup, api: &mut Api, want: &Expected, stop: Stop) -> i64 {
    let (code, v) = api.on("POST", &s.pipeline, "rebuild").await;
    assert_eq!(code, 202, "{v}");
    let start = Instant::now();
    let done = loop {
        let (_, v) = api.on("GET", &s.pipeline, "rebuild").await;
        let done = v["events_done"].as_i64().unwrap_or(0);
        if v["phase"] == "building" && done > 2_000 {
            assert!(done < 60_000, "the rebuild was too quick to interrupt: {v}");
            break done;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match stop {
        Stop::Kill9 => api.daemon.kill9(),
        Stop::Term => api.daemon.stop_cleanly(),
    }
    assert_eq!(
        &s.orders().await,
        want,
        "the live target right after the {stop:?}"
    );
    done
}

/// The rebuild a restarted daemon reports, once it has one (it is resumed or abandoned
/// while the daemon starts).
async fn rebuild_after_restart(api: &Api, pipeline: &str) -> Value {
    let start = Instant::now();
    loop {
        let (code, _) = api.on("GET", pipeline, "rebuild").await;
        if code == 200 {
            return api.wait_rebuild(pipeline, Duration::from_secs(240)).await.0;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no rebuild after the restart\n{}",
            api.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scenario: kill -9 (or SIGTERM) in the middle of a swap rebuild, restart with the same
/// pipeline file → the live target was never touched, and the restarted daemon resumes
/// the rebuild from the shadow's checkpoints (nothing the shadow held is built again) and
/// swaps it in.
pub async fn a_rebuild_interrupted_by_a_restart_resumes(target: &Target, stop: Stop) {
    let s = Setup::new(target, "rebuild-kill", 4, SMALL_BATCHES).await;
    let events = shop::generate(60_000, 5_000, 12);
    let ends = shop::publish(&s.topic, &events).await;
    let mut api = Api::start(&s, &[]).await;
    s.caught_up(&ends, &api.daemon).await;
    let want = shop::expected(&events);
    assert_eq!(s.orders().await, want);
    let held = rebuild_then_stop(&s, &mut api, &want, stop).await;

    let api = Api::start(&s, &[]).await;
    let v = rebuild_after_restart(&api, &s.pipeline).await;
    assert_eq!(v["phase"], "done", "{v}\n{}", api.daemon.log());
    assert!(v["resumed_at"].is_string(), "{v}");
    let at_resume = v["events_done_at_resume"].as_i64().unwrap_or(0);
    assert!(
        at_resume >= held,
        "the shadow kept the {held} offsets it had applied before the {stop:?}: {v}"
    );
    assert!(
        api.daemon
            .log()
            .contains("resumes from its shadow's checkpoints"),
        "{}",
        api.daemon.log()
    );
    s.caught_up(&ends, &api.daemon).await;
    assert_eq!(s.orders().await, want);
    assert!(
        !target.shadow_exists(&s.table).await,
        "the shadow was swapped in"
    );
    assert_eq!(s.checkpoints().await, ends);
}

/// Scenario: as above, but the pipeline file changes before the restart → the half-built
/// shadow no longer matches the pipeline, so the rebuild is abandoned and its shadow
/// dropped; the live target is intact and a new rebuild completes.
pub async fn a_rebuild_interrupted_by_a_changed_pipeline_is_abandoned(target: &Target) {
    let s = Setup::new(target, "rebuild-changed", 4, SMALL_BATCHES).await;
    let events = shop::generate(60_000, 5_000, 13);
    let ends = shop::publish(&s.topic, &events).await;
    let mut api = Api::start(&s, &[]).await;
    s.caught_up(&ends, &api.daemon).await;
    let want = shop::expected(&events);
    rebuild_then_stop(&s, &mut api, &want, Stop::Kill9).await;

    let yaml = std::fs::read_to_string(&s.file).expect("pipeline file");
    let changed = yaml.replace("max_events: 500", "max_events: 400");
    assert_ne!(yaml, changed);
    std::fs::write(&s.file, changed).expect("pipeline file");
    let api = Api::start(&s, &[]).await;
    let v = rebuild_after_restart(&api, &s.pipeline).await;
    assert_eq!(v["phase"], "abandoned", "{v}\n{}", api.daemon.log());
    assert!(
        api.daemon
            .log()
            .contains("because the pipeline file or sinkd's version changed"),
        "{}",
        api.daemon.log()
    );
    api.wait_state(&s.pipeline, "running").await;
    assert!(
        !target.shadow_exists(&s.table).await,
        "the shadow was dropped"
    );
    assert_eq!(s.orders().await, want);
    assert_eq!(s.checkpoints().await, ends);

    api.rebuild_to_done(&s.pipeline, Duration::from_secs(240))
        .await;
    s.caught_up(&ends, &api.daemon).await;
    assert_eq!(s.orders().await, want);
}

/// Scenario: the process dies at `point` inside the swap (`SINKD_CRASH_AT`); after a
/// restart the target is consistent (exactly the log, checkpoints at the ends, no shadow
/// left) whichever side of the crash the swap was on. Returns the restarted daemon's log.
pub async fn a_crash_inside_the_swap_leaves_a_consistent_target(
    target: &Target,
    point: &str,
) -> String {
    let s = Setup::new(target, "swap-crash", 2, "").await;
    let events = shop::generate(5_000, 600, 34);
    let ends = shop::publish(&s.topic, &events).await;
    let mut api = Api::start(&s, &[("SINKD_CRASH_AT", point)]).await;
    s.caught_up(&ends, &api.daemon).await;
    let (code, v) = api.on("POST", &s.pipeline, "rebuild").await;
    assert_eq!(code, 202, "{v}");
    let start = Instant::now();
    while !api.daemon.log().contains("SINKD_CRASH_AT: crashing at") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never reached {point}\n{}",
            api.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.daemon.kill9();

    let api = Api::start(&s, &[]).await;
    // Where the shadow survived the crash, the restart resumes the rebuild: let it end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _) = api.on("GET", &s.pipeline, "rebuild").await;
    if code == 200 {
        let (v, _) = api
            .wait_rebuild(&s.pipeline, Duration::from_secs(120))
            .await;
        assert_eq!(v["phase"], "done", "{v}\n{}", api.daemon.log());
    }
    api.wait_state(&s.pipeline, "running").await;
    s.caught_up(&ends, &api.daemon).await;
    assert_eq!(
        s.orders().await,
        shop::expected(&events),
        "{}",
        api.daemon.log()
    );
    assert_eq!(s.checkpoints().await, ends);
    assert!(!target.shadow_exists(&s.table).await, "no shadow left");
    // And the next rebuild works from there.
    api.rebuild_to_done(&s.pipeline, Duration::from_secs(120))
        .await;
    assert_eq!(s.orders().await, shop::expected(&events));
    api.daemon.log()
}
