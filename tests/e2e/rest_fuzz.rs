//! The REST API fuzzed from outside: a daemon running a PostgreSQL and a Tantivy pipeline
//! gets seed requests for every route, mutated at random (path, query and body bytes, the
//! content type), for `SINKD_REST_FUZZ_SECONDS` (default 15; `./bench fuzz` runs it for
//! longer). Every answer must be one the API documents: a 2xx, or `{"error": "…"}` with a
//! 4xx that says what was wrong, or 503; never a 5xx of its own, a dropped connection or a
//! panic in the log. Afterwards both pipelines, whatever the requests did to them
//! (paused, offsets moved, rebuilt), resume and apply new events exactly.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use sinkd_fuzz::quick;
use sinkd_tests::control::{Api, TOKEN};
use sinkd_tests::daemon::Workdir;
use sinkd_tests::scenarios::Setup;
use sinkd_tests::shop;
use sinkd_tests::target::Target;

/// One seed request: method, path with query, body.
type Seed = (&'static str, String, Vec<u8>);

/// Seeds for every route of one pipeline, among them values at the edges of what each
/// field takes.
fn seeds(pipeline: &str, topic: &str) -> Vec<Seed> {
    let p = |rest: &str| format!("/pipelines/{pipeline}{rest}");
    let body = |s: &str| s.as_bytes().to_vec();
    let offsets = |o: &str| {
        body(&format!(
            r#"{{"offsets":[{{"topic":"{topic}","partition":0,"offset":{o}}}]}}"#
        ))
    };
    let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
    vec![
        ("GET", "/pipelines".into(), vec![]),
        ("GET", p(""), vec![]),
        ("POST", p("/pause"), vec![]),
        ("POST", p("/resume"), body("{}")),
        ("PUT", p("/offsets"), body(r#"{"to":"earliest"}"#)),
        ("PUT", p("/offsets"), body(r#"{"to":"latest"}"#)),
        (
            "PUT",
            p("/offsets"),
            body(r#"{"to":"2026-01-01T00:00:00Z"}"#),
        ),
        ("PUT", p("/offsets"), body(r#"{"to":1700000000000}"#)),
        ("PUT", p("/offsets"), offsets("3")),
        ("PUT", p("/offsets"), offsets("-1")),
        ("PUT", p("/offsets"), offsets("-2")),
        ("PUT", p("/offsets"), offsets("9223372036854775807")),
        ("PUT", p("/offsets"), offsets("1e400")),
        (
            "PUT",
            p("/offsets"),
            body(&format!(r#"{{"to":{}}}"#, deep("[", "]", 5_000))),
        ),
        ("POST", p("/rebuild"), vec![]),
        ("POST", p("/rebuild"), body(r#"{"mode":"swap"}"#)),
        (
            "POST",
            p("/rebuild"),
            body(r#"{"mode":"in_place","start":"2026-01-01T00:00:00Z"}"#),
        ),
        (
            "POST",
            p("/rebuild"),
            body(r#"{"start":-9223372036854775808}"#),
        ),
        ("GET", p("/rebuild"), vec![]),
        ("DELETE", p("/rebuild"), vec![]),
        (
            "GET",
            p(&format!(
                "/wait?topic={topic}&partition=0&offset=3&timeout=50ms"
            )),
            vec![],
        ),
        (
            "GET",
            p(&format!(
                "/wait?topic={topic}&partition=-1&offset=-9223372036854775808&timeout=1e308"
            )),
            vec![],
        ),
        ("GET", p("/search?q=customer-1&limit=5&offset=0"), vec![]),
        (
            "GET",
            p("/search?q=*&limit=18446744073709551615&offset=18446744073709551615"),
            vec![],
        ),
        ("GET", p("/search?q=status:[a%20TO%20z]"), vec![]),
        (
            "GET",
            p(&format!("/search?q={}", deep("(", ")", 20_000))),
            vec![],
        ),
        (
            "GET",
            p(&format!("/search?q={}", "a%20AND%20".repeat(5_000) + "b")),
            vec![],
        ),
        // Just under the length limit: long flat chains parse without deep recursion.
        (
            "GET",
            p(&format!("/search?q={}", "a%20AND%20".repeat(2_700) + "b")),
            vec![],
        ),
        (
            "GET",
            p(&format!("/search?q={}", "-(a)%20".repeat(2_300))),
            vec![],
        ),
        (
            "GET",
            p(&format!("/search?q={}b", "+".repeat(16_000))),
            vec![],
        ),
        (
            "GET",
            p(&format!("/search?q={}", deep("(", ")", 32))),
            vec![],
        ),
        ("GET", "/metrics".into(), vec![]),
        ("GET", "/readyz".into(), vec![]),
    ]
}

/// Statuses the API documents.
const DOCUMENTED: [u16; 10] = [200, 202, 204, 400, 404, 405, 408, 409, 413, 503];

/// What is wrong with an answer, if anything.
fn problem(status: u16, body: &str) -> Option<String> {
    if !DOCUMENTED.contains(&status) {
        return Some(format!("status {status}"));
    }
    if status >= 400 {
        let error = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        if error.is_none_or(|e| e.trim().is_empty()) {
            return Some(format!("{status} without a JSON error: {body:.200}"));
        }
    }
    None
}

/// A mutated copy of `seed`: its path and query, its body, or both.
fn mutated(rng: &mut StdRng, seed: &Seed, seeds: &[Seed]) -> (String, Vec<u8>) {
    let (_, path, body) = seed;
    let (mut path, mut body) = (path.as_bytes().to_vec(), body.clone());
    let bodies: Vec<Vec<u8>> = seeds.iter().map(|s| s.2.clone()).collect();
    let paths: Vec<Vec<u8>> = seeds.iter().map(|s| s.1.as_bytes().to_vec()).collect();
    let which = rng.random_range(0..4);
    for _ in 0..rng.random_range(1..=4) {
        if which == 0 || which == 3 {
            quick::mutate(rng, &mut path, &paths);
        }
        if which >= 1 {
            quick::mutate(rng, &mut body, &bodies);
        }
    }
    // Bytes a URL cannot hold are sent percent-encoded, as a client would.
    let mut text = String::new();
    for b in path {
        match b {
            b'!'..=b'~' if b != b'#' => text.push(b as char),
            _ => text.push_str(&format!("%{b:02X}")),
        }
    }
    if !text.starts_with('/') {
        text.insert(0, '/');
    }
    (text, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutated_requests_get_documented_answers_and_the_pipelines_survive() {
    let pg = Setup::new(&Target::postgres(), "restfuzz", 2, "").await;
    let index = Target::Tantivy(std::env::temp_dir().join("sinkd-test-indexes"));
    let tv = Setup::new(&index, "restfuzz_tv", 2, "").await;
    let events = shop::generate(600, 60, 17);
    let ends = (
        shop::publish(&pg.topic, &events).await,
        shop::publish(&tv.topic, &events).await,
    );
    let config = Workdir::new("restfuzz_config");
    for s in [&pg, &tv] {
        // Replica mode (no consumer group) for both: pause and resume every few seconds
        // leave and rejoin a group faster than the local broker (Tansu) settles it, and it
        // can then hold a group without assignments for minutes (TEST-STACK.md).
        let text = std::fs::read_to_string(&s.file).unwrap();
        config.file(
            &format!("{}.yaml", s.pipeline),
            &text.replacen(
                "    properties:\n",
                "    mode: replica\n    properties:\n",
                1,
            ),
        );
    }
    let api = Api::start_on(&config.0, &config.0.join("sinkd.log"), &[]).await;
    pg.caught_up(&ends.0, &api.daemon).await;
    tv.caught_up(&ends.1, &api.daemon).await;

    let all: Vec<Seed> = [&pg, &tv]
        .iter()
        .flat_map(|s| seeds(&s.pipeline, &s.topic))
        .collect();
    let budget = Duration::from_secs(
        std::env::var("SINKD_REST_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let content_types = [
        Some("application/json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ];
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let (start, mut sent, mut findings) = (Instant::now(), 0u64, Vec::new());
    let mut i = 0;
    while start.elapsed() < budget && findings.len() < 20 {
        // Every seed as it is first, then mutations.
        let seed = &all[if i < all.len() {
            i
        } else {
            rng.random_range(0..all.len())
        }];
        let (path, body) = if i < all.len() {
            (seed.1.clone(), seed.2.clone())
        } else {
            mutated(&mut rng, seed, &all)
        };
        i += 1;
        let Ok(url) = reqwest::Url::parse(&format!("{}{path}", api.base)) else {
            continue;
        };
        let mut req = http
            .request(seed.0.parse().unwrap(), url)
            .bearer_auth(TOKEN)
            .body(body.clone());
        if let Some(ct) = content_types[rng.random_range(0..content_types.len())] {
            req = req.header(CONTENT_TYPE, ct);
        }
        sent += 1;
        let what = || {
            format!(
                "{} {path:.300} body {:.300}",
                seed.0,
                String::from_utf8_lossy(&body)
            )
        };
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                if let Some(p) = problem(status, &text) {
                    findings.push(format!("{p}\n  for {}", what()));
                }
            }
            // A wait may take its whole (fuzzed) timeout; anything else must answer.
            Err(e) if e.is_timeout() && path.contains("/wait") => {}
            Err(e) => findings.push(format!("no answer ({e})\n  for {}", what())),
        }
    }
    eprintln!("{sent} requests in {:?}", start.elapsed());
    let log = api.daemon.log();
    assert!(
        findings.is_empty(),
        "{} findings:\n{}\n--- log ---\n{log}",
        findings.len(),
        findings.join("\n")
    );
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");

    // Whatever state the requests left: no rebuild, running, and new events applied.
    let fresh = shop::new_orders("after-fuzz", 50);
    for s in [&pg, &tv] {
        let (code, v) = api.on("DELETE", &s.pipeline, "rebuild").await;
        assert!([200, 204, 409].contains(&code), "{code} {v}");
        // The requests may have moved the offsets anywhere, past the end too (which the
        // API allows, with a warning): start from the end of the log again.
        let (code, v) = api.on("POST", &s.pipeline, "pause").await;
        assert_eq!(code, 200, "{v}");
        let (code, v) = api.set_offsets(&s.pipeline, json!({"to": "latest"})).await;
        assert_eq!(code, 200, "{v}");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (_, v) = api.on("POST", &s.pipeline, "resume").await;
            if v["state"] == "running" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not run: {v}",
                s.pipeline
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let ends = shop::publish(&s.topic, &fresh).await;
        for (partition, end) in &ends {
            let (code, v) = api
                .wait_for(&s.pipeline, (&s.topic, *partition, end - 1), "90s")
                .await;
            assert_eq!(code, 200, "{}: {v}\n{}", s.pipeline, api.daemon.log());
        }
        let rows: shop::Expected = s
            .orders()
            .await
            .into_iter()
            .filter(|(k, _)| k.starts_with("after-fuzz"))
            .collect();
        assert_eq!(rows, shop::expected(&fresh), "{}", s.pipeline);
    }
}
