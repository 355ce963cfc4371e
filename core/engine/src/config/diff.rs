//! What changes between two versions of a pipeline file: the fields that differ (secrets
//! shown as changed, never as values) and what the change means for the read model that
//! the old version wrote. A reload and `sinkd plan` both use it.
//!
//! The comparison is of values after `${VAR}` interpolation, so a rotated password is a
//! change while a comment or a reordered mapping is not.

use serde::Serialize;
use serde_json::Value;

use super::model::redact_text;

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Dotted path from the file's root (`batch.max_events`, `events.OrderPlaced`).
    pub field: String,
    /// The old value in short, `None` when the field was absent; `"***"` for a secret.
    pub old: Option<String>,
    /// The new value in short, `None` when the field is gone; `"***"` for a secret.
    pub new: Option<String>,
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.old, &self.new) {
            (None, Some(new)) => write!(f, "{}: added ({new})", self.field),
            (Some(old), None) => write!(f, "{}: removed (was {old})", self.field),
            (Some(old), Some(new)) => write!(f, "{}: {old} -> {new}", self.field),
            (None, None) => write!(f, "{}", self.field),
        }
    }
}

/// What a changed pipeline means for the target it has written so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Impact {
    /// The fields that decide what the read model holds (rules, key, upcasters, index
    /// fields…): rows already written were made by the old rules, and only a rebuild
    /// makes them follow the new ones.
    pub rebuild_for: Vec<String>,
    /// The fields that name another target (table, collection, database, index path): it
    /// has checkpoints of its own, so it fills from the log's start; the old one stays.
    pub new_target_for: Vec<String>,
}

impl Impact {
    /// Whether the old rows no longer follow the pipeline.
    pub fn needs_rebuild(&self) -> bool {
        !self.rebuild_for.is_empty()
    }
}

/// The fields that differ between `old` and `new`, in path order. Mappings are compared
/// key by key; a list or a scalar that differs is one change.
pub fn diff(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    // A section added or removed as a whole shows its fields, like a changed one.
    let empty = serde_json::Map::new();
    if let (Some(a), Some(b)) = (as_map(old, new, &empty), as_map(new, old, &empty)) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let child = match path {
                "" => key.clone(),
                _ => format!("{path}.{key}"),
            };
            walk(&child, a.get(key), b.get(key), out);
        }
        return;
    }
    out.push(FieldChange {
        field: path.to_owned(),
        old: old.map(|v| shown(path, v)),
        new: new.map(|v| shown(path, v)),
    });
}

/// `v` as a mapping to compare key by key: itself, or an empty one when absent and the
/// other side is a mapping.
fn as_map<'a>(
    v: Option<&'a Value>,
    other: Option<&Value>,
    empty: &'a serde_json::Map<String, Value>,
) -> Option<&'a serde_json::Map<String, Value>> {
    match (v, other) {
        (Some(Value::Object(m)), _) => Some(m),
        (None, Some(Value::Object(_))) => Some(empty),
        _ => None,
    }
}

/// A value as a change shows it: short, URLs without passwords, secrets hidden.
fn shown(path: &str, value: &Value) -> String {
    if is_secret(path) {
        return "***".into();
    }
    let text = match value {
        Value::String(s) => redact_text(s),
        other => redact_text(&other.to_string()),
    };
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Fields whose values are never shown: passwords, tokens, keys of a TLS or SASL setup.
fn is_secret(path: &str) -> bool {
    let path = path.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "private",
        "sasl.jaas",
    ]
    .iter()
    .any(|word| path.contains(word))
}

/// Top-level sections that decide what the read model holds.
const SHAPING: &[&str] = &[
    "key",
    "events",
    "targets",
    "routing",
    "envelope",
    "debezium",
    "upcasters",
    "unknown_events",
    "event_type",
    "event_version",
];

/// Sink settings that only say how to reach or run the sink.
const SINK_RUNTIME: &[&str] = &["url", "heap_mb"];

/// Sink settings that name the target (its checkpoints are stored per target).
const SINK_TARGET: &[&str] = &["table", "schema", "database", "collection", "path"];

/// What changing a pipeline from `old` to `new` means for the target already written
/// (see [`Impact`]).
pub fn impact(old: &Value, new: &Value) -> Impact {
    let mut impact = Impact::default();
    for change in diff(old, new) {
        let parts: Vec<&str> = change.field.split('.').collect();
        let field = change.field.clone();
        match parts.as_slice() {
            [top, ..] if SHAPING.contains(top) => impact.rebuild_for.push(field),
            ["source", "kafka", "key_format", ..] => impact.rebuild_for.push(field),
            // A topic no longer read leaves its rows behind; a new one is read from
            // `start` like any partition without a checkpoint.
            ["source", "kafka", "topics", ..] if topics_removed(old, new) => {
                impact.rebuild_for.push(field)
            }
            // How many connections write: the rows are the same.
            ["sink", "parallelism"] => {}
            ["sink", _, setting, ..] if SINK_RUNTIME.contains(setting) => {}
            ["sink", _, setting, ..] if SINK_TARGET.contains(setting) => {
                impact.new_target_for.push(field)
            }
            ["sink", ..] => impact.rebuild_for.push(field),
            _ => {}
        }
    }
    impact
}

/// Whether `new` reads none of a topic that `old` read.
fn topics_removed(old: &Value, new: &Value) -> bool {
    let topics = |v: &Value| -> Vec<Value> {
        v.pointer("/source/kafka/topics")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let new = topics(new);
    topics(old).iter().any(|t| !new.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "name": "orders",
            "source": {"kafka": {"bootstrap_servers": "k:9092", "topics": ["a", "b"],
                                 "properties": {"sasl.password": "hunter2"}},
                       "registry": {"url": "http://r"}},
            "sink": {"postgres": {"url": "postgres://u:pw@h/db", "table": "orders"}},
            "key": {"columns": ["id"]},
            "events": {"Placed": {"upsert": {"total": "total"}}},
            "batch": {"max_events": 5000}
        })
    }

    #[test]
    fn equal_files_have_no_changes() {
        assert!(diff(&base(), &base()).is_empty());
    }

    #[test]
    fn a_runtime_setting_is_a_change_without_a_rebuild() {
        let mut new = base();
        new["batch"]["max_events"] = json!(200);
        new["dead_letter_topic"] = json!("orders.dlq");
        new["source"]["kafka"]["properties"] = json!({});
        let changes = diff(&base(), &new);
        assert_eq!(
            changes,
            vec![
                FieldChange {
                    field: "batch.max_events".into(),
                    old: Some("5000".into()),
                    new: Some("200".into()),
                },
                FieldChange {
                    field: "dead_letter_topic".into(),
                    old: None,
                    new: Some("orders.dlq".into()),
                },
                FieldChange {
                    field: "source.kafka.properties.sasl.password".into(),
                    old: Some("***".into()),
                    new: None,
                },
            ]
        );
        assert_eq!(impact(&base(), &new), Impact::default());
    }

    #[test]
    fn a_section_added_whole_shows_its_fields() {
        let mut new = base();
        new["debezium"] = json!({"unavailable_value": "?"});
        let text: Vec<String> = diff(&base(), &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text, vec!["debezium.unavailable_value: added (?)"]);
    }

    #[test]
    fn secrets_are_changes_whose_values_are_hidden() {
        let mut new = base();
        new["source"]["kafka"]["properties"]["sasl.password"] = json!("correct horse");
        new["sink"]["postgres"]["url"] = json!("postgres://u:pw2@h/db");
        let changes = diff(&base(), &new);
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "sink.postgres.url: postgres://u:***@h/db -> postgres://u:***@h/db",
                "source.kafka.properties.sasl.password: *** -> ***",
            ]
        );
        assert!(!format!("{changes:?}").contains("hunter2"));
        assert!(!impact(&base(), &new).needs_rebuild());
    }

    #[test]
    fn rules_and_removed_topics_need_a_rebuild_and_a_new_table_fills_itself() {
        let mut new = base();
        new["events"]["Placed"]["upsert"]["total"] = json!("amount");
        new["source"]["kafka"]["topics"] = json!(["a"]);
        new["sink"]["postgres"]["table"] = json!("orders_v2");
        let i = impact(&base(), &new);
        assert_eq!(
            i.rebuild_for,
            vec!["events.Placed.upsert.total", "source.kafka.topics"]
        );
        assert_eq!(i.new_target_for, vec!["sink.postgres.table"]);

        let mut added = base();
        added["source"]["kafka"]["topics"] = json!(["a", "b", "c"]);
        assert!(!impact(&base(), &added).needs_rebuild());
    }

    #[test]
    fn more_writers_change_the_pipeline_but_not_its_rows() {
        let mut new = base();
        new["sink"]["parallelism"] = json!(4);
        assert_eq!(diff(&base(), &new).len(), 1);
        let i = impact(&base(), &new);
        assert!(!i.needs_rebuild() && i.new_target_for.is_empty(), "{i:?}");
    }
}
