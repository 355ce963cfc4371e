//! Capture pipelines: a PostgreSQL logical replication slot as the source and Kafka as the
//! sink (`source: postgres_cdc`). In `outbox` mode rows of an outbox table become Avro
//! records, following the outbox-event-router convention.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::model::{BadRecordPolicy, RegistryConfig};

/// One capture pipeline file.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureFile {
    /// Unique name of the pipeline (shares the namespace of sink pipelines).
    pub name: String,
    /// The PostgreSQL side.
    pub source: CaptureSource,
    /// The Kafka side.
    pub sink: CaptureSink,
    /// What happens to a row that cannot become a record (no schema for its type, a
    /// payload the schema refuses): `fail` (default: the pipeline stops, the slot stays
    /// before that transaction) or
    /// `dead_letter` (the row as JSON, with the cause in headers).
    #[serde(default)]
    pub on_error: BadRecordPolicy,
    /// Topic for dead letters; required with `on_error: dead_letter`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// `source:` of a capture pipeline.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureSource {
    /// The replication settings.
    pub postgres_cdc: PostgresCdcConfig,
}

/// A logical replication slot read with the pgoutput plugin.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresCdcConfig {
    /// `postgres://user:password@host:port/db`; the user needs the REPLICATION attribute
    /// (and ownership of the tables to create the publication).
    pub url: String,
    /// Tables to capture, `schema.table` or `table` (schema `public`).
    pub tables: Vec<String>,
    /// Replication slot (default `sinkd_<name>`, `-` and `.` as `_`). Created when absent;
    /// sinkd never drops a slot.
    #[serde(default)]
    pub slot: Option<String>,
    /// Publication (default: the slot's name). Created `FOR TABLE <tables>` with
    /// `publish = 'insert'` when absent; an existing one is used as it is.
    #[serde(default)]
    pub publication: Option<String>,
    /// What rows become. Only `outbox` today.
    #[serde(default)]
    pub mode: CaptureMode,
    /// The outbox convention.
    #[serde(default)]
    pub outbox: OutboxConfig,
}

impl PostgresCdcConfig {
    /// The slot's name for the pipeline `name`.
    pub fn slot_name(&self, name: &str) -> String {
        self.slot.clone().unwrap_or_else(|| default_slot(name))
    }

    /// The publication's name for the pipeline `name`.
    pub fn publication_name(&self, name: &str) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| self.slot_name(name))
    }
}

/// The slot name sinkd gives a pipeline that names none. The `sinkd_` prefix is how
/// sinkd recognises its own slots when it reports ones no pipeline uses.
pub fn default_slot(pipeline: &str) -> String {
    let mut s = String::from(SLOT_PREFIX);
    s.extend(pipeline.chars().map(|c| match c {
        'a'..='z' | '0'..='9' | '_' => c,
        'A'..='Z' => c.to_ascii_lowercase(),
        _ => '_',
    }));
    s
}

/// Prefix of the slots sinkd names itself.
pub const SLOT_PREFIX: &str = "sinkd_";

/// What captured rows become.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Each inserted row is one event: topic from the aggregate type, key from the
    /// aggregate id, value from the payload. Updates and deletes of the table are ignored.
    #[default]
    Outbox,
}

/// Column names and routing of `mode: outbox`. The defaults are Debezium's outbox event
/// router's, so an existing outbox table works unchanged.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// The event id column; a header `id`.
    pub id_column: String,
    /// The column naming the aggregate type; routes to the topic.
    pub aggregate_type_column: String,
    /// The column with the aggregate id; the Kafka key (as a string).
    pub aggregate_id_column: String,
    /// The column with the event type; chooses the Avro schema.
    pub type_column: String,
    /// The column with the payload (`jsonb`, `json` or `text` holding JSON).
    pub payload_column: String,
    /// Topic template; `{aggregate_type}` is replaced by the row's aggregate type.
    pub topic: String,
    /// Avro schema file per event type (the `type` column's value), relative to the
    /// pipeline file. Registered under `<topic>-<record full name>` (Confluent's
    /// TopicRecordNameStrategy), so several event types share a topic.
    pub schemas: BTreeMap<String, String>,
    /// Delete each row once its record is acknowledged by the broker (default: false;
    /// most applications insert and delete in the same transaction instead).
    pub delete_after_capture: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            id_column: "id".into(),
            aggregate_type_column: "aggregatetype".into(),
            aggregate_id_column: "aggregateid".into(),
            type_column: "type".into(),
            payload_column: "payload".into(),
            topic: "outbox.event.{aggregate_type}".into(),
            schemas: BTreeMap::new(),
            delete_after_capture: false,
        }
    }
}

/// `sink:` of a capture pipeline: the brokers and the registry.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureSink {
    /// The producer.
    pub kafka: KafkaSinkConfig,
    /// Where value schemas are registered.
    pub registry: RegistryConfig,
}

/// Kafka producer settings.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port…]` of the brokers.
    pub bootstrap_servers: String,
    /// librdkafka producer settings passed through (`compression.type`, `linger.ms`,
    /// security…). sinkd owns `enable.idempotence` and `acks`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Every problem of a capture file that can be known without I/O.
pub fn validate(c: &CaptureFile) -> Result<(), Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| problems.push((field.to_owned(), message));
    if let Some(message) = super::validate::name_problem(&c.name) {
        problem("name", message);
    }
    let pg = &c.source.postgres_cdc;
    if pg.tables.is_empty() {
        problem(
            "source.postgres_cdc.tables",
            "name at least one table".into(),
        );
    }
    for (field, name) in [
        ("slot", pg.slot.as_ref()),
        ("publication", pg.publication.as_ref()),
    ] {
        if let Some(n) = name
            && (n.is_empty()
                || n.len() > 63
                || !n
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'))
        {
            problem(
                &format!("source.postgres_cdc.{field}"),
                format!("`{n}`: use at most 63 lower-case letters, digits and `_`"),
            );
        }
    }
    let o = &pg.outbox;
    if !o.topic.contains("{aggregate_type}") && o.topic.contains('{') {
        problem(
            "source.postgres_cdc.outbox.topic",
            format!(
                "`{}`: the only placeholder is `{{aggregate_type}}`",
                o.topic
            ),
        );
    }
    if o.schemas.is_empty() {
        problem(
            "source.postgres_cdc.outbox.schemas",
            "declare the Avro schema file of at least one event type".into(),
        );
    }
    for owned in ["enable.idempotence", "acks", "bootstrap.servers"] {
        if c.sink.kafka.properties.contains_key(owned) {
            problem(
                &format!("sink.kafka.properties.{owned}"),
                format!("`{owned}` is set by sinkd and cannot be overridden"),
            );
        }
    }
    if c.on_error == BadRecordPolicy::DeadLetter && c.dead_letter_topic.is_none() {
        problem(
            "dead_letter_topic",
            "`on_error: dead_letter` needs a dead_letter_topic".into(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_slot_is_a_valid_slot_name() {
        assert_eq!(default_slot("Shop-Outbox.v2"), "sinkd_shop_outbox_v2");
    }
}
