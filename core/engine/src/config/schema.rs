//! The JSON Schema of pipeline files (`config/pipeline.schema.json`), generated from the
//! config types like the reference, so that editors complete and check pipeline files
//! (`# yaml-language-server: $schema=…` or the editor's schema settings). It covers both
//! kinds of file, with each registered sink's settings under `sink.<kind>`. Files are
//! checked as written, before `${VAR}` interpolation: wherever a number, a boolean or one
//! of a list of words is expected, a `${VAR}` or `${VAR:-default}` reference is accepted
//! too (sinkd checks the value once the variable is read).

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::capture::CaptureFile;
use super::model::PipelineFile;
use crate::connector::Connectors;
use crate::connector::spec::{MAX_PARALLELISM, parallelism_doc};

/// The schema as JSON.
pub fn json_schema(connectors: &Connectors) -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let sinks = connectors.settings_schemas(&mut generator);
    let pipeline = generator.subschema_for::<PipelineFile>().to_value();
    let capture = generator.subschema_for::<CaptureFile>().to_value();
    let mut defs: Map<String, Value> = generator.definitions().clone();
    let one_kind: Vec<Value> = sinks
        .iter()
        .map(|(kind, _)| json!({ "required": [kind] }))
        .collect();
    let mut properties: Map<String, Value> = sinks
        .into_iter()
        .map(|(kind, schema)| (kind.to_owned(), schema.to_value()))
        .collect();
    properties.insert(
        "parallelism".into(),
        json!({
            "description": parallelism_doc(),
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_PARALLELISM
        }),
    );
    // The sink section is parsed by the connector it names: one kind, its settings, and
    // the settings every sink has.
    defs.insert(
        "Sink".into(),
        json!({
            "description": "Exactly one sink, named by its kind, with that kind's settings, and the settings every sink has.",
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
            "oneOf": one_kind
        }),
    );
    let mut defs = Value::Object(defs);
    accept_references(&mut defs);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sinkd pipeline file",
        "description": "A sink pipeline (Kafka into a sink), or a capture pipeline when its source is `postgres_cdc`. Generated from sinkd's config types: do not edit.",
        "if": {
            "type": "object",
            "properties": {"source": {"type": "object", "required": ["postgres_cdc"]}},
            "required": ["source"]
        },
        "then": capture,
        "else": pipeline,
        "$defs": defs
    })
}

/// A `${NAME}` or `${NAME:-default}` reference, the whole value.
const REFERENCE: &str = r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}$";

/// Makes every schema of a number, a boolean or a closed list of words also accept a
/// whole-value `${VAR}` reference (strings accept it already).
fn accept_references(schema: &mut Value) {
    match schema {
        Value::Object(map) if is_scalar(map) => {
            let description = map.remove("description");
            let inner = std::mem::take(map);
            map.insert(
                "anyOf".into(),
                json!([inner, {"type": "string", "pattern": REFERENCE}]),
            );
            if let Some(d) = description {
                map.insert("description".into(), d);
            }
        }
        Value::Object(map) => map.values_mut().for_each(accept_references),
        Value::Array(items) => items.iter_mut().for_each(accept_references),
        _ => {}
    }
}

/// Whether `schema` takes only a number, a boolean or one of some words.
fn is_scalar(schema: &Map<String, Value>) -> bool {
    let scalar_type = |t: &Value| {
        matches!(t.as_str(), Some("integer" | "number" | "boolean"))
            || t.as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| matches!(t.as_str(), Some("integer" | "number" | "boolean")))
                    && ts.iter().all(|t| t.as_str() != Some("object"))
            })
    };
    let words = |list: &Value| {
        list.as_array().is_some_and(|members| {
            !members.is_empty()
                && members
                    .iter()
                    .all(|m| m.get("const").is_some() || m.get("enum").is_some())
        })
    };
    schema.contains_key("enum")
        || schema.contains_key("const")
        || schema.get("type").is_some_and(scalar_type)
        || schema.get("oneOf").is_some_and(words)
        || schema.get("anyOf").is_some_and(words)
}
