//! The pipeline file reference (`docs/reference.md`), written from the JSON Schema of the
//! config types, whose descriptions are their `///` doc comments: the reference cannot
//! drift from the format. The sinks' sections come from the registered connectors'
//! settings types. `sinkd_connectors`' tests compare the committed file with this output.

use std::collections::{HashSet, VecDeque};

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::model::PipelineFile;
use crate::connector::Connectors;

/// The reference as Markdown.
pub fn markdown(connectors: &Connectors) -> String {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let sinks = connectors.settings_schemas(&mut generator);
    let root = generator.root_schema_for::<PipelineFile>().to_value();
    let empty = Map::new();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut doc = Doc {
        out: String::new(),
        seen: HashSet::new(),
        queue: VecDeque::new(),
    };
    doc.out.push_str(
        "# Pipeline file reference\n\n\
         <!-- Generated from the doc comments of the config types: do not edit. \
         `SINKD_BLESS=1 cargo test -p sinkd-connectors reference` writes it again. -->\n\n\
         Every key of a pipeline file, section by section. Unknown keys are errors; \
         `${VAR}` and `${VAR:-default}` are read from the environment in every value \
         (see [the pipeline file](pipeline.md)).\n\n## The file\n\n",
    );
    doc.body(&root);
    doc.out
        .push_str("\n## Sinks\n\nThe settings under `sink.<kind>`, one kind per pipeline.\n");
    for (kind, schema) in &sinks {
        doc.out.push_str(&format!("\n### `sink.{kind}`\n\n"));
        let named = reference(schema.as_value());
        if let Some(name) = named {
            doc.seen.insert(name.to_owned());
        }
        match named.and_then(|name| defs.get(name)) {
            Some(def) => doc.body(def),
            None => doc.body(schema.as_value()),
        }
    }
    doc.out.push_str("\n## Types\n");
    while let Some(name) = doc.queue.pop_front() {
        let Some(def) = defs.get(&name) else {
            continue;
        };
        doc.out.push_str(&format!("\n### {name}\n\n"));
        doc.body(def);
    }
    doc.out
}

struct Doc {
    out: String,
    seen: HashSet<String>,
    /// Definitions named so far and not yet written, in the order they were first named.
    queue: VecDeque<String>,
}

/// The definition a `{"$ref": "#/$defs/Name"}` names.
fn reference(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/$defs/")
}

impl Doc {
    /// A definition's description, then its fields (a table) or its choices (a list).
    fn body(&mut self, schema: &Value) {
        if let Some(text) = description(schema) {
            self.out.push_str(&text);
            self.out.push_str("\n\n");
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            self.out
                .push_str("| Key | Type | Default | Description |\n|---|---|---|---|\n");
            for (key, field) in properties {
                let default = match field.get("default") {
                    _ if required.contains(&key.as_str()) => "required".to_owned(),
                    Some(Value::Null) | None => "optional".to_owned(),
                    Some(v) => format!("`{}`", compact(v)),
                };
                let row = format!(
                    "| `{key}` | {} | {default} | {} |\n",
                    self.type_of(field),
                    cell(&description(field).unwrap_or_default())
                );
                self.out.push_str(&row);
            }
        }
        let choices = ["oneOf", "anyOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(Value::as_array));
        if let Some(choices) = choices
            && schema.get("properties").is_none()
        {
            self.out.push_str("One of:\n\n");
            for choice in choices.iter().filter(|c| !is_null(c)) {
                let text = description(choice).map(|d| format!(": {}", cell(&d)));
                let line = format!("- {}{}\n", self.type_of(choice), text.unwrap_or_default());
                self.out.push_str(&line);
            }
        }
    }

    /// A field's type in a sentence, linking the definitions it names.
    fn type_of(&mut self, schema: &Value) -> String {
        if let Some(name) = reference(schema) {
            if self.seen.insert(name.to_owned()) {
                self.queue.push_back(name.to_owned());
            }
            return format!("[{name}](#{})", name.to_lowercase());
        }
        if let Some(value) = schema.get("const") {
            return format!("`{}`", compact(value));
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            let names: Vec<String> = values.iter().map(|v| format!("`{}`", compact(v))).collect();
            return names.join(" \\| ");
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(choices) = schema.get(key).and_then(Value::as_array) {
                let types: Vec<String> = choices
                    .iter()
                    .filter(|c| !is_null(c))
                    .map(|c| self.type_of(c))
                    .collect();
                return types.join(" or ");
            }
        }
        // An externally tagged variant: `{ name: value }`.
        if let (Some(properties), Some(Value::Array(required))) = (
            schema.get("properties").and_then(Value::as_object),
            schema.get("required"),
        ) && properties.len() == 1
            && required.len() == 1
        {
            let (name, value) = properties.iter().next().expect("one property");
            return format!("`{name}:` {}", self.type_of(value));
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let names: Vec<String> = types
            .into_iter()
            .filter(|t| *t != "null")
            .map(|t| match t {
                "array" => match schema.get("items") {
                    Some(items) => format!("list of {}", self.type_of(items)),
                    None => "list".to_owned(),
                },
                "object" => match schema.get("additionalProperties") {
                    Some(values) if values.is_object() => {
                        format!("map of {}", self.type_of(values))
                    }
                    _ => "mapping".to_owned(),
                },
                "integer" => match schema.get("minimum").and_then(Value::as_i64) {
                    Some(0) => "integer ≥ 0".to_owned(),
                    _ => "integer".to_owned(),
                },
                "number" => "number".to_owned(),
                other => other.to_owned(),
            })
            .collect();
        match names.is_empty() {
            true => "any value".to_owned(),
            false => names.join(" or "),
        }
    }
}

fn is_null(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
        || schema.get("const") == Some(&Value::Null)
}

/// A value as JSON on one line (strings without quotes).
fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The doc comment, with rustdoc's intra-doc link brackets removed (`[`x`]` → `x`).
fn description(schema: &Value) -> Option<String> {
    let text = schema.get("description")?.as_str()?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find("`]") {
            Some(end) if !after[end + 2..].starts_with('(') => {
                out.push_str(&after[..end + 1]);
                rest = &after[end + 2..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// Text fit for one table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}
