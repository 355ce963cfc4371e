//! The control plane's REST API and CLI on the real servers (PostgreSQL sink): tokens,
//! pause and resume, offset moves, the read-your-writes wait, an in-place rebuild,
//! `/metrics`, and the OpenAPI document against the routes actually served.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use sinkd_tests::control::{Api, TOKEN};
use sinkd_tests::scenarios::{Setup, merge_ends};
use sinkd_tests::shop;
use sinkd_tests::target::Target;

/// The mutating endpoints of pipeline `p`: method, path, body.
fn mutations(p: &str) -> Vec<(&'static str, String, Option<serde_json::Value>)> {
    vec![
        ("POST", format!("/pipelines/{p}/pause"), None),
        ("POST", format!("/pipelines/{p}/resume"), None),
        (
            "PUT",
            format!("/pipelines/{p}/offsets"),
            Some(json!({"to": "earliest"})),
        ),
        (
            "POST",
            format!("/pipelines/{p}/rebuild"),
            Some(json!({"mode": "in_place"})),
        ),
        ("DELETE", format!("/pipelines/{p}/rebuild"), None),
        ("POST", format!("/pipelines/{p}/validate"), None),
    ]
}

/// Runs a CLI client command against `api`; returns success and stdout + stderr.
fn cli(api: &Api, args: &[&str]) -> (bool, String) {
    api.cli(args)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_token_nothing_changes_and_reads_need_it_unless_opened() {
    let s = Setup::new(&Target::postgres(), "auth", 2, "").await;
    let events = shop::generate(2_000, 300, 21);
    let ends = shop::publish(&s.topic, &events).await;
    let mut api = Api::start(&s, &[]).await;
    s.caught_up(&ends, &api.daemon).await;
    for (method, path, body) in mutations(&s.pipeline) {
        for token in [None, Some("wrong-token")] {
            let (code, v) = api.raw(method, &path, token, body.clone()).await;
            assert_eq!(code, 401, "{method} {path} with {token:?}: {v}");
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains("token")),
                "{v}"
            );
        }
    }
    let (_, status) = api
        .call("GET", &format!("/pipelines/{}", s.pipeline), None)
        .await;
    assert_eq!(status["state"], "running", "nothing changed: {status}");
    assert!(status["rebuild"].is_null(), "no rebuild started: {status}");
    assert_eq!(s.checkpoints().await, ends, "no offset moved");
    // Reads need the token too; probes do not.
    assert_eq!(api.raw("GET", "/pipelines", None, None).await.0, 401);
    assert_eq!(api.raw("GET", "/metrics", None, None).await.0, 401);
    assert_eq!(api.raw("GET", "/healthz", None, None).await.0, 200);
    assert_eq!(api.raw("GET", "/readyz", None, None).await.0, 200);
    assert!(
        !api.daemon.log().contains(TOKEN),
        "the token is never logged"
    );
    api.daemon.stop_cleanly();

    // Opened reads: status without a token, mutations still refused.
    let api = Api::start(&s, &[("SINKD_API_OPEN_READS", "true")]).await;
    let (code, v) = api.raw("GET", "/pipelines", None, None).await;
    assert_eq!(code, 200, "{v}");
    assert!(!v.to_string().contains(TOKEN));
    let (code, _) = api
        .raw(
            "POST",
            &format!("/pipelines/{}/pause", s.pipeline),
            None,
            None,
        )
        .await;
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_offsets_resume_wait_and_an_in_place_rebuild_keep_the_table_exact() {
    let s = Setup::new(&Target::postgres(), "control", 3, "").await;
    let mut events = shop::generate(3_000, 400, 22);
    let mut ends = shop::publish(&s.topic, &events).await;
    let api = Api::start(&s, &[]).await;
    s.caught_up(&ends, &api.daemon).await;
    let p = s.pipeline.clone();

    let (code, v) = api.set_offsets(&p, json!({"to": "earliest"})).await;
    assert_eq!(code, 409, "offsets move only while paused: {v}");

    let (ok, out) = cli(&api, &["pause", &p]);
    assert!(ok && out.contains("paused"), "{out}");
    let more = shop::generate(1_000, 400, 23);
    let more_ends = shop::publish(&s.topic, &more).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s.checkpoints().await,
        ends,
        "a paused pipeline applies nothing"
    );
    let (code, v) = api
        .wait_for(&p, (&s.topic, 0, more_ends[&0] - 1), "500ms")
        .await;
    assert_eq!(code, 408, "{v}");
    let (code, v) = api
        .call(
            "GET",
            &format!("/pipelines/{p}/wait?topic={}&partition=7&offset=0", s.topic),
            None,
        )
        .await;
    assert_eq!(code, 400, "a partition the topic does not have: {v}");

    // Back to the start of the log, then partition 0 a little further on.
    let (code, v) = api.set_offsets(&p, json!({"to": "earliest"})).await;
    assert_eq!(code, 200, "{v}");
    assert!(s.checkpoints().await.values().all(|o| *o == 0));
    let (code, v) = api
        .set_offsets(
            &p,
            json!({"offsets": [{"topic": s.topic, "partition": 0, "offset": 5}]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let stored = s.checkpoints().await;
    assert_eq!((stored[&0], stored[&1], stored[&2]), (5, 0, 0));
    for bad in [
        json!({}),
        json!({"to": "yesterday"}),
        json!({"offsets": [{"topic": s.topic, "partition": 99, "offset": 0}]}),
    ] {
        let (code, v) = api.set_offsets(&p, bad.clone()).await;
        assert_eq!(code, 400, "{bad}: {v}");
    }
    assert_eq!(
        s.checkpoints().await,
        stored,
        "a refused move moves nothing"
    );
    // Past the end: moved, with a warning that names the partition.
    let far = json!({"offsets": [{"topic": s.topic, "partition": 1, "offset": 1_000_000}]});
    let (code, v) = api.set_offsets(&p, far).await;
    assert_eq!(code, 200, "{v}");
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("/1 offset 1000000 is past the end")),
        "{v}"
    );
    let back = json!({"offsets": [{"topic": s.topic, "partition": 1, "offset": 0}]});
    let (code, v) = api.set_offsets(&p, back).await;
    assert_eq!(
        (code, v["warnings"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );

    // Resuming re-reads everything; the row guards keep it from applying twice.
    let (ok, out) = cli(&api, &["resume", &p]);
    assert!(ok, "{out}");
    merge_ends(&mut ends, more_ends);
    events.extend(more);
    for (partition, end) in &ends {
        let (code, v) = api
            .wait_for(&p, (&s.topic, *partition, end - 1), "60s")
            .await;
        assert_eq!(code, 200, "{v}");
    }
    let want = shop::expected(&events);
    assert_eq!(s.orders().await, want);

    // An in-place rebuild through the CLI, followed to its end.
    let (ok, out) = cli(&api, &["rebuild", &p, "--in-place", "--follow"]);
    assert!(ok, "{out}\n{}", api.daemon.log());
    assert!(out.contains("rebuilt"), "{out}");
    s.caught_up(&ends, &api.daemon).await;
    assert_eq!(s.orders().await, want);

    let (ok, out) = cli(&api, &["status", &p]);
    assert!(
        ok && out.contains("running") && out.contains(&s.topic),
        "{out}"
    );

    let (code, text) = api.call("GET", "/metrics", None).await;
    assert_eq!(code, 200);
    let text = text.as_str().unwrap_or_default().to_owned();
    for series in [
        "sinkd_events_consumed_total",
        "sinkd_events_applied_total",
        "sinkd_events_dead_lettered_total",
        "sinkd_batch_events_bucket",
        "sinkd_write_seconds_bucket",
        "sinkd_partition_lag",
        "sinkd_partition_staleness_seconds",
        "sinkd_rebuild_events_done",
        "sinkd_rebuild_events_total",
    ] {
        assert!(
            text.contains(&format!("{series}{{")),
            "{series} missing from:\n{text}"
        );
    }
    let applied: HashMap<&str, &str> = text
        .lines()
        .filter(|l| l.starts_with("sinkd_partition_lag{"))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    assert!(
        applied.values().all(|v| *v == "0"),
        "no lag left: {applied:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_route_is_served_and_the_document_is_served_as_kept() {
    let s = Setup::new(&Target::postgres(), "openapi", 1, "").await;
    let api = Api::start(&s, &[]).await;
    api.wait_state(&s.pipeline, "running").await;
    let kept = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/daemon/src/api/openapi.yaml"
    ))
    .expect("openapi.yaml");
    let (code, served) = api.call("GET", "/openapi.yaml", None).await;
    assert_eq!((code, served.as_str()), (200, Some(kept.as_str())));
    let doc: serde_json::Value = serde_saphyr::from_str(&kept).expect("YAML");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 12, "{:?}", paths.keys());
    for (path, ops) in paths {
        for method in ["get", "post", "put", "delete"] {
            if ops.get(method).is_none() {
                continue;
            }
            // An unknown pipeline: the route must exist and answer with sinkd's own error.
            let url = path.replace("{name}", "no-such-pipeline")
                + if path.ends_with("/wait") {
                    "?topic=t&partition=0&offset=0&timeout=1ms"
                } else if path.ends_with("/search") {
                    "?q=x"
                } else {
                    ""
                };
            let body = (method == "put").then(|| json!({"to": "earliest"}));
            let (code, v) = api.call(&method.to_uppercase(), &url, body).await;
            assert_ne!(code, 405, "{method} {path} is documented but not routed");
            if path == "/pipelines/{name}" && method != "get" {
                // Definitions over the API are a cluster's: this daemon has files only.
                assert_eq!(code, 409, "{method} {url}: {v}");
                assert!(v["error"].as_str().unwrap().contains("cluster"), "{v}");
            } else if path.ends_with("/validate") {
                // Any name can be planned: without a body, the body is what is missing.
                assert_eq!(code, 400, "{method} {url}: {v}");
            } else if path.contains("{name}") {
                assert_eq!(code, 404, "{method} {url}: {v}");
                assert!(
                    v["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("no-such-pipeline")),
                    "{method} {path} answered {v}, not sinkd's 404"
                );
            } else {
                assert_eq!(code, 200, "{method} {path}: {v}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_pipeline_stays_up_with_keep_failed_and_an_operator_can_skip_the_record() {
    let s = Setup::new(&Target::postgres(), "keep-failed", 1, "").await;
    let events = shop::generate(100, 10, 5);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events[..50]);
    records.push(sinkd_tests::stack::Record {
        key: b"k".to_vec(),
        value: Some(vec![0, 0, 0]),
        headers: vec![],
    });
    records.extend(shop::records(&ids, &events[50..]));
    let ends = sinkd_tests::stack::produce(&s.topic, records).await;
    let mut api = Api::start(&s, &[("SINKD_KEEP_FAILED", "true")]).await;
    let status = api.wait_state(&s.pipeline, "failed").await;
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("partition 0 offset 50")),
        "{status}"
    );
    assert_eq!(
        api.daemon.wait(Duration::from_secs(2)),
        None,
        "the daemon stays up"
    );
    assert_eq!(api.raw("GET", "/readyz", None, None).await.0, 503);
    // The operator looks at the record, decides to skip it, and resumes.
    let p = &s.pipeline;
    assert_eq!(api.on("POST", p, "pause").await.0, 200);
    let (code, v) = api
        .set_offsets(
            p,
            json!({"offsets": [{"topic": s.topic, "partition": 0, "offset": 51}]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(api.on("POST", p, "resume").await.0, 200);
    s.caught_up(&ends, &api.daemon).await;
    assert_eq!(s.orders().await, shop::expected(&events));
    api.wait_state(p, "running").await;
}

/// Secrets stay out of the log (at debug level) and out of every API answer, also when a
/// pipeline fails on them: a PostgreSQL password in the sink URL, a registry password,
/// the API token. Bodies that are not JSON or are huge, and paths that try to climb out
/// of `/pipelines/`, are refused with a clear status, and the daemon serves on.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_stay_out_of_logs_and_answers_and_bad_requests_are_refused() {
    const PG_PASSWORD: &str = "pg-pass-9f3e1b";
    const WRONG_PASSWORD: &str = "wrong-pass-4e2a77";
    const REGISTRY_PASSWORD: &str = "reg-pass-77c1d0";
    sinkd_tests::stack::pg()
        .await
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE secret_writer LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}'; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ))
        .await
        .expect("role");
    let registry = sinkd_tests::stack::OwnRegistry::start(&[(
        "REGISTRY_BASIC_AUTH",
        &format!("reader:{REGISTRY_PASSWORD}"),
    )]);
    let as_user = |password: &str| {
        sinkd_tests::stack::postgres_url()
            .replace("sinkd:sinkd@", &format!("secret_writer:{password}@"))
    };
    // One pipeline that works, one whose database password is wrong: both in one daemon.
    let good = Setup::new(&Target::Postgres(as_user(PG_PASSWORD)), "secrets", 2, "").await;
    let bad = Setup::new(&Target::Postgres(as_user(WRONG_PASSWORD)), "wrongpw", 1, "").await;
    let dir = sinkd_tests::daemon::Workdir::new("secrets-both");
    for s in [&good, &bad] {
        let text = std::fs::read_to_string(&s.file).unwrap().replace(
            "    url: ${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}\n",
            &format!(
                "    url: {}\n    basic_auth: {{ username: reader, password: \"${{REGISTRY_PASSWORD}}\" }}\n",
                registry.url
            ),
        );
        dir.file(&format!("{}.yaml", s.pipeline), &text);
    }
    let ids = shop::register_schemas_at(
        &registry.url,
        Some(("reader", REGISTRY_PASSWORD)),
        &good.topic,
    )
    .await;
    let events = shop::generate(500, 50, 5);
    let ends = sinkd_tests::stack::produce(&good.topic, shop::records(&ids, &events)).await;
    let api = Api::start_on(
        &dir.0,
        &dir.0.join("sinkd.log"),
        &[
            ("REGISTRY_PASSWORD", REGISTRY_PASSWORD),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    good.caught_up(&ends, &api.daemon).await;
    assert_eq!(good.orders().await, shop::expected(&events));
    let failed = api.wait_state(&bad.pipeline, "failed").await;

    let mut answers = vec![failed.to_string()];
    for path in [
        "/pipelines".to_owned(),
        format!("/pipelines/{}", good.pipeline),
        format!("/pipelines/{}", bad.pipeline),
        "/metrics".to_owned(),
    ] {
        let (code, body) = api.raw("GET", &path, Some(TOKEN), None).await;
        assert_eq!(code, 200, "{path}: {body}");
        answers.push(body.to_string());
    }
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: String, body: Vec<u8>| {
        http.request(method, format!("{}{path}", api.base))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let offsets = format!("/pipelines/{}/offsets", good.pipeline);
    let put = reqwest::Method::PUT;
    let not_json = send(put.clone(), offsets.clone(), b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    let said = not_json.text().await.unwrap();
    assert!(said.to_lowercase().contains("json"), "{said}");
    answers.push(said);
    let huge = send(put, offsets, vec![b' '; 100 << 20]).await;
    match huge {
        Ok(r) => assert_eq!(r.status().as_u16(), 413, "a 100 MB body"),
        // The daemon may close the connection before reading it all: refused either way.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    for path in ["/pipelines/..%2F..%2Fetc/pause", "/pipelines/%2e%2e/pause"] {
        let r = send(reqwest::Method::POST, path.to_owned(), b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    let (code, _) = api.raw("GET", "/pipelines", Some(TOKEN), None).await;
    assert_eq!(code, 200, "the daemon serves on");

    let log = api.daemon.log();
    for secret in [PG_PASSWORD, WRONG_PASSWORD, REGISTRY_PASSWORD, TOKEN] {
        assert!(!log.contains(secret), "{secret} is in the log");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "{secret} is in an answer: {answer}"
            );
        }
    }
}
