//! Chains end to end on values and schemas, and every start-up error.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;

use super::Upcasters;
use crate::config::UpcasterConfig;
use crate::event::{Event, SourcePosition};
use crate::schema::{ColumnType, EventSchema};

fn upcasters(yaml: &str) -> Result<Upcasters, Vec<(String, String)>> {
    let config: BTreeMap<String, UpcasterConfig> = serde_saphyr::from_str(yaml).unwrap();
    Upcasters::new(&config)
}

fn problems(yaml: &str) -> String {
    match upcasters(yaml) {
        Ok(_) => panic!("expected start-up errors"),
        Err(p) => p
            .iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn event(ty: &str, version: u32, schema: &str, body: Value) -> Event {
    let avro = Schema::parse_str(schema).unwrap();
    Event {
        event_type: Arc::from(ty),
        version,
        key: None,
        body: Some(body),
        schema: Some(Arc::new(EventSchema::from_avro(&avro).unwrap())),
        position: SourcePosition {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
        },
        timestamp_ms: None,
    }
}

const V1: &str = r#"{"type":"record","name":"E","namespace":"x","fields":[
    {"name":"id","type":"string"},
    {"name":"amount","type":"double"},
    {"name":"legacy","type":"int"}]}"#;

const CHAIN: &str = r#"
x.E:
  chain:
    - from: 1
      steps:
        - rename: { from: amount, to: amount_eur }
        - drop: legacy
        - default: { field: meta.source, value: import }
    - from: 2
      steps:
        - compute: { field: cents, type: long, expr: "math.round(amount_eur * 100.0)" }
        - drop: amount_eur
        - move: { from: meta.source, to: source }
"#;

fn v1_body() -> Value {
    Value::Record(vec![
        ("id".into(), Value::String("a".into())),
        ("amount".into(), Value::Double(1.25)),
        ("legacy".into(), Value::Int(7)),
    ])
}

#[test]
fn a_chain_brings_v1_to_the_newest_version_with_its_column_types() {
    let u = upcasters(CHAIN).unwrap();
    assert_eq!(u.current_version("x.E"), Some(3));
    let out = u.upcast(event("x.E", 1, V1, v1_body())).unwrap();
    assert_eq!(out.version, 3);
    assert_eq!(
        out.body.unwrap(),
        Value::Record(vec![
            ("id".into(), Value::String("a".into())),
            ("meta".into(), Value::Record(vec![])),
            ("cents".into(), Value::Long(125)),
            ("source".into(), Value::String("import".into())),
        ])
    );
    let schema = out.schema.unwrap();
    let types: Vec<_> = schema.fields.iter().map(|f| (&*f.name, f.ty)).collect();
    assert_eq!(
        types,
        vec![
            ("id", ColumnType::String),
            ("meta", ColumnType::Json),
            ("cents", ColumnType::Long),
            ("source", ColumnType::String),
        ]
    );
}

#[test]
fn current_events_and_other_types_pass_through_untouched() {
    let u = upcasters(CHAIN).unwrap();
    let current = event("x.E", 3, V1, v1_body());
    let out = u.upcast(current.clone()).unwrap();
    assert_eq!(out.body, current.body);
    assert!(Arc::ptr_eq(
        out.schema.as_ref().unwrap(),
        current.schema.as_ref().unwrap()
    ));
    let other = u.upcast(event("x.Other", 1, V1, v1_body())).unwrap();
    assert_eq!(other.version, 1);
    assert_eq!(other.body, Some(v1_body()));
}

#[test]
fn a_step_that_does_not_fit_the_writer_schema_names_type_version_step_and_field() {
    let u = upcasters(CHAIN).unwrap();
    let v2_schema =
        r#"{"type":"record","name":"E","namespace":"x","fields":[{"name":"id","type":"string"}]}"#;
    let e = u
        .upcast(event(
            "x.E",
            2,
            v2_schema,
            Value::Record(vec![("id".into(), Value::String("a".into()))]),
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("upcasting x.E v2 failed"), "{e}");
    assert!(e.contains("v2→v3, step 0 (compute)"), "{e}");
    assert!(e.contains("`amount_eur`"), "{e}");
    // Below the chain's start.
    let u = upcasters("x.E:\n  chain:\n    - from: 2\n      steps: []\n").unwrap();
    let e = u
        .upcast(event("x.E", 1, V1, v1_body()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no upcaster from x.E v1: the chain starts at v2"),
        "{e}"
    );
}

#[test]
fn a_failing_expression_is_a_bad_record_naming_the_step() {
    let u = upcasters(
        "x.E:\n  chain:\n    - from: 1\n      steps:\n        - compute: { field: q, type: long, expr: \"legacy / (legacy - 7)\" }\n",
    )
    .unwrap();
    let e = u.upcast(event("x.E", 1, V1, v1_body())).unwrap_err();
    assert_eq!(e.code(), "upcast");
    assert!(e.to_string().contains("compute: field `q`"), "{e}");
}

#[test]
fn renamed_types_continue_on_the_new_types_chain() {
    let u = upcasters(&format!(
        "{CHAIN}\nx.Old:\n  chain:\n    - from: 1\n      steps:\n        - rename_type: {{ to: x.E, version: 1 }}\n"
    ))
    .unwrap();
    let out = u
        .upcast(event(
            "x.Old",
            1,
            &V1.replace("\"E\"", "\"Old\""),
            v1_body(),
        ))
        .unwrap();
    assert_eq!((&*out.event_type, out.version), ("x.E", 3));
    assert_eq!(&*out.schema.unwrap().full_name, "x.E");
}

#[test]
fn start_up_errors_name_the_event_type_and_versions() {
    // (upcasters, what the problems must say)
    let cases: [(&str, &[&str]); 9] = [
        (
            "x.E:\n  chain:\n    - { from: 1, steps: [] }\n    - { from: 3, steps: [] }\n",
            &["x.E: the chain has a gap: nothing upcasts version 2"],
        ),
        (
            "x.E:\n  chain:\n    - { from: 1, steps: [] }\n    - { from: 1, steps: [] }\n",
            &["x.E: two entries upcast from version 1"],
        ),
        (
            "x.E:\n  chain:\n    - { from: 0, steps: [] }\n",
            &["x.E: versions start at 1"],
        ),
        (
            "x.E:\n  chain:\n    - from: 1\n      steps:\n        - compute: { field: a, type: long, expr: \"amount * (\" }\n",
            &[
                "upcasters.x.E.chain[from 1].steps[0]",
                "x.E v1→v2: expression `amount * (` does not compile",
            ],
        ),
        (
            "x.E:\n  chain:\n    - from: 1\n      steps:\n        - rename_type: { to: x.F, version: 1 }\n        - drop: a\n",
            &["x.E v1→v2: rename_type must be the last step"],
        ),
        (
            "x.A:\n  chain:\n    - from: 1\n      steps: [ { rename_type: { to: x.B, version: 1 } } ]\nx.B:\n  chain:\n    - from: 1\n      steps: [ { rename_type: { to: x.A, version: 1 } } ]\n",
            &["renamed event types loop: x.A v1 → x.B v1 → x.A v1"],
        ),
        (
            "x.E:\n  chain:\n    - from: 1\n      steps: [ { rename: { from: a.b, to: c } } ]\n",
            &["changes the record it is in: use `move`"],
        ),
        (
            "x.E:\n  chain:\n    - from: 1\n      steps: [ { default: { field: a, value: null } } ]\n",
            &["give a `type`"],
        ),
        (
            "x.E:\n  chain:\n    - from: 1\n      steps: [ { default: { field: a, value: abc, type: long } } ]\n",
            &["\"abc\" is not a Long"],
        ),
    ];
    for (yaml, says) in cases {
        let found = problems(yaml);
        for s in says {
            assert!(found.contains(s), "{yaml}\nshould say {s:?}:\n{found}");
        }
    }
}
