//! Upcasters and projections through the real binary, offline (`sinkd preview`, under its
//! old name `sinkd upcast` too, and `sinkd validate`): golden files, errors per line,
//! start-up errors in a pipeline file, and a reader schema.
//!
//! Golden files: every `tests/fixtures/upcast/<type>/v<N>.json` (the same order written by
//! each version) must become exactly `tests/golden/upcast/<type>/v3.json`: the upcast event
//! and the operation, with column types. `tests/fixtures/projection/events.jsonl` through
//! `config/examples/shop-orders-computed.yaml` (computed columns, `when` rules) must give
//! exactly `tests/golden/projection/events.json`. `SINKD_UPDATE_GOLDEN=1` rewrites them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use sinkd_tests::daemon::{Workdir, binary};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `sinkd upcast` and returns (success, stdout lines as JSON, stderr).
fn upcast(config: &Path, input: &Path, schemas: Option<&Path>) -> (bool, Vec<Json>, String) {
    let mut cmd = Command::new(binary());
    cmd.arg("upcast").arg("--config").arg(config).arg(input);
    if let Some(dir) = schemas {
        cmd.arg("--schemas").arg(dir);
    }
    let out = cmd.output().expect("sinkd runs");
    let docs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect();
    (
        out.status.success(),
        docs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_fixture_version_upcasts_to_its_golden_file() {
    let config = root().join("config/examples/shop-orders-upcast.yaml");
    let fixtures = root().join("tests/fixtures/upcast");
    let update = std::env::var("SINKD_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut checked = 0;
    for type_dir in std::fs::read_dir(&fixtures).unwrap() {
        let type_dir = type_dir.unwrap().path();
        let ty = type_dir.file_name().unwrap().to_string_lossy().into_owned();
        let golden_path = root().join(format!("tests/golden/upcast/{ty}/v3.json"));
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&type_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        inputs.sort();
        for input in inputs {
            let (ok, docs, err) = upcast(&config, &input, Some(&fixtures));
            assert!(ok, "{}: {err}", input.display());
            let [doc] = docs.as_slice() else {
                panic!("{}: one event, one document: {docs:?}", input.display())
            };
            let got = serde_json::json!({"event": doc["event"], "op": doc["op"]});
            if update {
                std::fs::create_dir_all(golden_path.parent().unwrap()).unwrap();
                let text = serde_json::to_string_pretty(&sorted(&got)).unwrap();
                std::fs::write(&golden_path, text + "\n").unwrap();
            }
            let golden: Json =
                serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (run with SINKD_UPDATE_GOLDEN=1 to write it)",
                        golden_path.display()
                    )
                }))
                .unwrap();
            assert_eq!(
                got,
                golden,
                "{} no longer upcasts to {}",
                input.display(),
                golden_path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "fixtures found: {checked}");
}

#[test]
fn a_bad_line_is_reported_with_its_cause_and_the_rest_still_shown() {
    let dir = Workdir::new(&format!("upcast-lines-{}", std::process::id()));
    let config = root().join("config/examples/shop-orders-upcast.yaml");
    let good =
        std::fs::read_to_string(root().join("tests/fixtures/upcast/com.shop.OrderPlaced/v1.json"))
            .unwrap();
    let good = good.trim();
    // An amount that is not a number does not fit the writer schema, a line that is not
    // JSON is reported as such, and the good line after them still comes out.
    let bad_amount = good.replace("123.45", "\"lots\"");
    let input = dir.file("in.jsonl", &format!("{bad_amount}\nnot json\n{good}"));
    let (ok, docs, err) = upcast(&config, &input, Some(&root().join("tests/fixtures/upcast")));
    assert!(!ok);
    assert!(err.contains("2 event(s) failed"), "{err}");
    assert_eq!(docs.len(), 3);
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains("does not fit com.shop.OrderPlaced v1"),
        "{docs:?}"
    );
    assert!(
        docs[1]["error"].as_str().unwrap().contains("not JSON"),
        "{docs:?}"
    );
    assert_eq!(docs[2]["event"]["version"], 3);
    assert_eq!(docs[2]["line"], 3);
}

/// A registry that refuses the credentials stops the command with its status and message
/// (exit 2), instead of answering every line "no writer schema … not in the registry".
#[test]
fn a_registry_that_refuses_the_credentials_stops_sinkd_upcast() {
    let registry = sinkd_tests::stack::OwnRegistry::start(&[
        ("REGISTRY_BASIC_AUTH", "alice:s3cret"),
        ("REGISTRY_STYLE", "karapace"),
    ]);
    let config = root().join("config/examples/shop-orders-upcast.yaml");
    let input = root().join("tests/fixtures/upcast/com.shop.OrderPlaced/v1.json");
    let out = Command::new(binary())
        .arg("upcast")
        .arg("--config")
        .arg(&config)
        .arg(&input)
        .env("SCHEMA_REGISTRY_URL", &registry.url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(err.contains("401 Unauthorized: Unauthorized"), "{err}");
    assert!(!err.contains("not in the registry"), "{err}");
}

/// Runs `sinkd validate` on a pipeline text: (exit code, stderr).
fn validate(dir: &Workdir, yaml: &str) -> (Option<i32>, String) {
    let file = dir.file("p.yaml", yaml);
    let out = Command::new(binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_chain_with_a_gap_stops_validation_naming_file_type_and_versions() {
    let dir = Workdir::new(&format!("upcast-gap-{}", std::process::id()));
    let example =
        std::fs::read_to_string(root().join("config/examples/shop-orders-upcast.yaml")).unwrap();
    let gap = example.replace(
        "      - from: 2                                   # v2 → v3",
        "      - from: 3",
    );
    let (code, err) = validate(&dir, &gap);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("p.yaml"), "{err}");
    assert!(
        err.contains("field `upcasters.com.shop.OrderPlaced.chain`"),
        "{err}"
    );
    assert!(
        err.contains("com.shop.OrderPlaced: the chain has a gap: nothing upcasts version 2"),
        "{err}"
    );
    let bad_expr = example.replace(
        "math.round(amount_eur * 100.0)",
        "math.round(amount_eur * 100.0",
    );
    let (code, err) = validate(&dir, &bad_expr);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("com.shop.OrderPlaced v2→v3: expression"),
        "{err}"
    );
    assert!(err.contains("does not compile"), "{err}");
}

#[test]
fn a_reader_schema_file_resolves_values_before_the_chain() {
    let dir = Workdir::new(&format!("upcast-reader-{}", std::process::id()));
    // The reader renames `amount` by alias and adds `channel` with a default; the chain
    // then only has to do what Avro cannot: euros to cents.
    dir.file(
        "reader.avsc",
        r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
            {"name":"order_id","type":"string"},
            {"name":"amount_eur","type":"double","aliases":["amount"]},
            {"name":"channel","type":"string","default":"web"}]}"#,
    );
    let example =
        std::fs::read_to_string(root().join("config/examples/shop-orders-upcast.yaml")).unwrap();
    let start = example.find("upcasters:").unwrap();
    let end = example.find("\nevents:").unwrap();
    let pipeline = format!(
        "{}upcasters:\n  com.shop.OrderPlaced:\n    reader_schema: {{ file: reader.avsc }}\n    chain:\n      - from: 1\n        steps:\n          - convert: {{ field: amount_eur, to: long, multiply: 100 }}\n          - rename: {{ from: amount_eur, to: total_cents }}\n{}",
        &example[..start],
        &example[end..]
    );
    let config = dir.file("p.yaml", &pipeline);
    let input = dir.file(
        "in.jsonl",
        r#"{"type":"com.shop.OrderPlaced","version":1,"key":"o-1","value":{"order_id":"o-1","customer":"Ann","status":"new","placed_at_ms":1,"amount":2.5,"note":null}}"#,
    );
    let (ok, docs, err) = upcast(&config, &input, Some(&root().join("tests/fixtures/upcast")));
    assert!(ok, "{err}");
    assert_eq!(
        docs[0]["event"]["value"],
        serde_json::json!({"order_id": "o-1", "total_cents": 250, "channel": "web"})
    );
    assert_eq!(docs[0]["op"]["columns"]["total_cents"]["type"], "long");
}

/// Keys in name order, so golden files read the same whatever order fields came in.
/// (Comparisons ignore key order.)
fn sorted(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            Json::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[test]
fn computed_columns_and_rules_preview_to_their_golden_file() {
    let config = root().join("config/examples/shop-orders-computed.yaml");
    let fixtures = root().join("tests/fixtures/projection");
    let out = Command::new(binary())
        .arg("preview")
        .arg("-c")
        .arg(&config)
        .arg(fixtures.join("events.jsonl"))
        .arg("--schemas")
        .arg(fixtures.join("schemas"))
        .output()
        .expect("sinkd runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let docs: Vec<Json> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect();
    let got = sorted(&Json::Array(docs));
    let golden_path = root().join("tests/golden/projection/events.json");
    if std::env::var("SINKD_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        let text = serde_json::to_string_pretty(&got).unwrap();
        std::fs::write(&golden_path, text + "\n").unwrap();
    }
    let golden: Json = serde_json::from_str(
        &std::fs::read_to_string(&golden_path)
            .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display())),
    )
    .unwrap();
    assert_eq!(got, golden, "{} changed", golden_path.display());
}

/// The example pipeline shows the rules the end-to-end test runs against real servers.
#[test]
fn the_computed_example_holds_the_rules_tested_end_to_end() {
    let example =
        std::fs::read_to_string(root().join("config/examples/shop-orders-computed.yaml")).unwrap();
    assert!(
        example.contains(sinkd_tests::projected::EVENTS),
        "config/examples/shop-orders-computed.yaml no longer holds projected::EVENTS"
    );
}
