//! Every YAML block of the README, `CONTRIBUTING.md` and `docs/` is a pipeline (or a piece
//! of one) that `sinkd validate` accepts, so the documentation cannot drift from the file
//! format. A whole pipeline (it has `name:` and `source:`) is validated as it is; a
//! fragment (`events:`, `upcasters:`, `sink:` …) replaces the same sections of a base
//! pipeline. A block that is not a pipeline starts with `# not a pipeline`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sinkd_tests::daemon::{Workdir, binary};

/// The base a fragment is validated in: the README's minimal pipeline.
const BASE: &str = "\
name: docs
source:
  kafka:
    bootstrap_servers: ${KAFKA_BROKERS}
    topics: [shop.orders]
  registry:
    url: ${SCHEMA_REGISTRY_URL}
sink:
  postgres:
    url: ${POSTGRES_URL}
    table: orders
key:
  columns: [order_id]
events:
  com.shop.OrderPlaced: { op: upsert }
";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The ```yaml blocks of a Markdown text, with the line each starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// The top-level keys of a YAML text.
fn top_keys(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter(|l| !l.starts_with([' ', '#', '-']) && !l.trim().is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

/// `base` without the top-level sections named in `keys`.
fn without(base: &str, keys: &[String]) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in base.lines() {
        if !line.starts_with(' ') {
            skipping = line
                .split_once(':')
                .is_some_and(|(k, _)| keys.iter().any(|key| key == k.trim()));
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn as_pipeline(block: &str) -> String {
    let keys = top_keys(block);
    if keys.iter().any(|k| k == "name") && keys.iter().any(|k| k == "source") {
        return block.to_owned();
    }
    let mut replaced = keys.clone();
    if block.contains("envelope: debezium") {
        // Debezium changes say what to do themselves: no `events`.
        replaced.push("events".into());
    }
    format!("{}{block}", without(BASE, &replaced))
}

#[test]
fn every_pipeline_snippet_in_the_docs_validates() {
    let dir = Workdir::new(&format!("docs-{}", std::process::id()));
    // Capture files name schema files relative to themselves, as the examples do.
    let _ = std::os::unix::fs::symlink(
        root().join("config/examples/schemas"),
        dir.0.join("schemas"),
    );
    let mut checked = 0;
    let mut failures = Vec::new();
    for md in markdown_files() {
        let text = std::fs::read_to_string(&md).unwrap();
        for (line, block) in yaml_blocks(&text) {
            if block.starts_with("# not a pipeline") {
                continue;
            }
            let file = dir.file(&format!("snippet-{checked}.yaml"), &as_pipeline(&block));
            let out = Command::new(binary())
                .arg("validate")
                .arg(&file)
                .env("KAFKA_BROKERS", "127.0.0.1:9092")
                .env("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081")
                .env("POSTGRES_URL", "postgres://u:p@127.0.0.1/db")
                .env("MONGODB_URL", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
                .output()
                .expect("sinkd runs");
            if !out.status.success() {
                failures.push(format!(
                    "{}:{line}: {}",
                    md.strip_prefix(root()).unwrap_or(&md).display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 8, "YAML blocks found: {checked}");
}
