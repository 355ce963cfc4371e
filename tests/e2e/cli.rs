//! `sinkd validate`: errors name the file, the line and the field.

use std::process::Command;

use sinkd_tests::daemon::{Workdir, binary};
use sinkd_tests::shop;

fn validate(dir: &Workdir, yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let file = dir.file("p.yaml", yaml);
    let mut cmd = Command::new(binary());
    cmd.arg("validate").arg(&file).env_remove("KAFKA_BROKERS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("sinkd runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_pipelines_are_valid() {
    for dir in ["/../config/pipelines", "/../config/examples"] {
        let out = Command::new(binary())
            .args(["validate", &format!("{}{dir}", env!("CARGO_MANIFEST_DIR"))])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn config_errors_name_file_line_and_field() {
    let dir = Workdir::new(&format!("cli-{}", std::process::id()));
    let good = shop::pipeline_yaml("p", "t", "orders", "");
    let (ok, err) = validate(&dir, &good, &[]);
    assert!(ok, "{err}");

    let typo = good.replace("    table: orders", "    table: orders\n    tabel: x");
    let (ok, err) = validate(&dir, &typo, &[]);
    assert!(!ok);
    assert!(
        err.contains("p.yaml:16: field `sink.postgres.tabel`: unknown field `tabel`"),
        "{err}"
    );

    let missing = good.replace("${KAFKA_BROKERS:-127.0.0.1:9092}", "${KAFKA_BROKERS}");
    let (ok, err) = validate(&dir, &missing, &[]);
    assert!(!ok);
    assert!(
        err.contains("p.yaml:4: field `source.kafka.bootstrap_servers`")
            && err.contains("KAFKA_BROKERS"),
        "{err}"
    );

    let wrong_type = format!("{good}batch:\n  max_events: many\n");
    let (ok, err) = validate(&dir, &wrong_type, &[]);
    assert!(!ok);
    assert!(
        err.contains("field `batch.max_events`") && err.contains("p.yaml:32:"),
        "{err}"
    );
}

#[test]
fn the_compose_and_kubernetes_pipelines_are_valid() {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(binary())
        .args(["validate", &format!("{root}/docker/compose/pipelines")])
        .env("KAFKA_BROKERS", "kafka:9092")
        .env("SCHEMA_REGISTRY_URL", "http://schema-registry:8081")
        .env("POSTGRES_URL", "postgres://sinkd:sinkd@postgres:5432/sinkd")
        .env("MONGODB_URL", "mongodb://mongo:27017/?replicaSet=rs0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The pipeline inside the Kubernetes ConfigMap, taken out of the manifest.
    let manifest = std::fs::read_to_string(format!("{root}/docker/k8s/sidecar.yaml")).unwrap();
    let start = manifest.find("  orders.yaml: |\n").unwrap() + "  orders.yaml: |\n".len();
    let end = manifest[start..].find("---").unwrap() + start;
    let pipeline: String = manifest[start..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = Workdir::new(&format!("cli-k8s-{}", std::process::id()));
    let (ok, err) = validate(
        &dir,
        &pipeline,
        &[
            ("KAFKA_BROKERS", "kafka:9092"),
            ("SCHEMA_REGISTRY_URL", "http://schema-registry:8081"),
            ("POSTGRES_URL", "postgres://sinkd:x@postgres:5432/sinkd"),
        ],
    );
    assert!(ok, "{err}");
}

#[test]
fn a_debezium_pipeline_takes_no_events_or_upcasters() {
    let dir = Workdir::new(&format!("cli-dbz-{}", std::process::id()));
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/examples/inventory-customers-debezium.yaml"
    ))
    .unwrap();
    let with_events = format!("{example}events:\n  x.Envelope:\n    op: upsert\n");
    let (ok, err) = validate(&dir, &with_events, &[]);
    assert!(!ok);
    assert!(
        err.contains("field `events`") && err.contains("each change's `op`"),
        "{err}"
    );
    let from_fields = example.replace("key:\n  columns", "key:\n  from: fields\n  columns");
    let (ok, err) = validate(&dir, &from_fields, &[]);
    assert!(!ok && err.contains("field `key.from`"), "{err}");
}
