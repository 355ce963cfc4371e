//! Each fuzz target, replayed over its corpus and regressions and then mutated for a few
//! seconds (`SINKD_FUZZ_SECONDS`, default 8): no input may make it panic.

use std::time::Duration;

use sinkd_fuzz::{TARGETS, quick};

fn quick_run(name: &str) {
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target of that name");
    let seconds = std::env::var("SINKD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seeds = quick::inputs(name);
    // A fixed seed per target: a failure here reproduces run after run.
    let seed = name.bytes().map(u64::from).sum();
    match quick::run(*target, &seeds, Duration::from_secs(seconds), seed) {
        Ok(runs) => eprintln!("{name}: {runs} inputs, no panic"),
        Err(finding) => panic!("{name}: {finding}"),
    }
}

#[test]
fn avro_datum_never_panics() {
    quick_run("avro_datum");
}

#[test]
fn pipeline_file_never_panics() {
    quick_run("pipeline_file");
}

#[test]
fn expression_never_panics() {
    quick_run("expression");
}

#[test]
fn upcasters_never_panics() {
    quick_run("upcasters");
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_entry() {
    for (name, _) in TARGETS {
        assert!(
            !quick::inputs(name).is_empty(),
            "fuzz/corpus/{name}/ has seeds"
        );
        let entry = quick::folder("libfuzzer/fuzz_targets", "").join(format!("{name}.rs"));
        assert!(entry.exists(), "{} exists", entry.display());
    }
}
