//! `config/pipeline.schema.json` is what the config types say today (`SINKD_BLESS=1`
//! writes it again), and it accepts every pipeline file the project ships while it
//! refuses the mistakes sinkd refuses: editors that use it agree with `sinkd validate`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sinkd_connectors::connectors;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generated() -> Value {
    sinkd_core::config::schema::json_schema(&connectors())
}

#[test]
fn the_committed_schema_is_generated_from_the_config_types() {
    let file = root().join("config/pipeline.schema.json");
    let text = serde_json::to_string_pretty(&generated()).unwrap() + "\n";
    if std::env::var_os("SINKD_BLESS").is_some() {
        std::fs::write(&file, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == text,
        "config/pipeline.schema.json is not what the config types say: run \
         `SINKD_BLESS=1 cargo test -p sinkd-connectors --test schema` and commit it"
    );
}

/// Every `*.yaml` of the folders, as written (before `${VAR}` interpolation).
fn files(folders: &[&str]) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for folder in folders {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(folder))
            .unwrap_or_else(|e| panic!("{folder}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path, value));
        }
    }
    out
}

#[test]
fn every_shipped_pipeline_file_is_valid_by_the_schema_and_typos_are_not() {
    let validator = jsonschema::validator_for(&generated()).expect("a valid schema");
    let shipped = files(&[
        "config/examples",
        "config/pipelines",
        "docker/compose/pipelines",
    ]);
    assert!(shipped.len() >= 7, "{} files", shipped.len());
    for (path, value) in &shipped {
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
    let (_, orders) = shipped
        .iter()
        .find(|(p, _)| p.ends_with("config/pipelines/shop-orders.yaml"))
        .expect("the demo pipeline");
    let mut typo = orders.clone();
    let kafka = typo["source"]["kafka"].as_object_mut().unwrap();
    let topics = kafka.remove("topics").unwrap();
    kafka.insert("tpics".into(), topics);
    assert!(!validator.is_valid(&typo), "an unknown key");
    let mut two_sinks = orders.clone();
    two_sinks["sink"]["mongodb"] =
        serde_json::json!({"url": "mongodb://h", "database": "d", "collection": "c"});
    assert!(!validator.is_valid(&two_sinks), "two sinks");
    let mut bad_op = orders.clone();
    let events = bad_op["events"].as_object_mut().unwrap();
    let first = events.values_mut().next().unwrap();
    first["op"] = "upsertt".into();
    assert!(!validator.is_valid(&bad_op), "an unknown op");
}
