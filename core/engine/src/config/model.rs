//! The pipeline file, field by field. Every struct rejects unknown keys so that a typo is
//! an error naming the file, line and field rather than a silently ignored setting.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// One pipeline: a source, the events it projects, and a sink.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Unique name of the pipeline; also the checkpoint's owner in the sink.
    pub name: String,
    /// Where records come from.
    pub source: SourceConfig,
    /// Where operations go: `sink: { <kind>: <settings> }`, the settings read by the
    /// connector of that kind.
    pub sink: crate::connector::SinkSpec,
    /// How the read model's key is formed.
    pub key: KeyConfig,
    /// What each event type does to the read model, by event type name (none with
    /// `envelope: debezium`, where each change's `op` says it).
    #[serde(default)]
    pub events: BTreeMap<String, super::events::EventRules>,
    /// More tables (PostgreSQL) or collections (MongoDB) of the same sink, by name, that
    /// rules write with `also:` (child rows). They commit in the same transaction as the
    /// main target and share its checkpoints; a rebuild swaps them all together.
    #[serde(default)]
    pub targets: BTreeMap<String, super::events::TargetConfig>,
    /// The allowed values of each `{placeholder}` in a target's name (`table:
    /// "orders_{tenant}"`): one table or collection per value, created as rows arrive. An
    /// event whose field holds another value is a bad record.
    #[serde(default)]
    pub routing: BTreeMap<String, Vec<String>>,
    /// The shape of record values: sinkd's own events (default) or Debezium change events.
    #[serde(default)]
    pub envelope: Envelope,
    /// Settings of `envelope: debezium`.
    #[serde(default)]
    pub debezium: DebeziumConfig,
    /// Upcasters by event type: the steps that bring old versions to the newest one.
    #[serde(default)]
    pub upcasters: BTreeMap<String, super::upcast::UpcasterConfig>,
    /// What happens to an event type not listed in `events`.
    #[serde(default)]
    pub unknown_events: UnknownEventPolicy,
    /// What happens to a record that cannot be decoded or projected.
    #[serde(default)]
    pub on_error: BadRecordPolicy,
    /// Topic for dead letters; required when either policy is `dead_letter`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// How the event type is found (default: the writer schema's record full name).
    #[serde(default)]
    pub event_type: Locator,
    /// How the event version is found (default: the writer schema's version in its subject).
    #[serde(default)]
    pub event_version: Locator,
    /// Batch bounds.
    #[serde(default)]
    pub batch: BatchConfig,
}

/// The shape of record values.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// Events: one record type per event, projected by `events`.
    #[default]
    Events,
    /// Debezium change events: `before`, `after`, `source`, `op`, `ts_ms`; the Kafka key
    /// holds the primary key.
    Debezium,
}

/// Settings of `envelope: debezium`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DebeziumConfig {
    /// The connector's `unavailable.value.placeholder`: columns holding it (unchanged
    /// TOAST columns) are not written.
    #[serde(default = "default_placeholder")]
    pub unavailable_value: String,
}

impl Default for DebeziumConfig {
    fn default() -> Self {
        DebeziumConfig {
            unavailable_value: default_placeholder(),
        }
    }
}

fn default_placeholder() -> String {
    crate::projection::debezium::DEFAULT_PLACEHOLDER.to_owned()
}

/// The source section. Only Kafka exists today.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Kafka consumer settings.
    pub kafka: KafkaSourceConfig,
    /// Confluent-compatible schema registry.
    pub registry: RegistryConfig,
}

/// Kafka consumer settings.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port…]` of the brokers.
    pub bootstrap_servers: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Consumer group (default `sinkd-<pipeline name>`). The group's committed offsets are
    /// advisory (for lag tools): sinkd always resumes from the offsets stored in the sink.
    #[serde(default)]
    pub group_id: Option<String>,
    /// `shared`: instances form one consumer group and split partitions. `replica`: every
    /// instance reads every partition. Default: `replica` for a Tantivy index (one per
    /// sidecar), `shared` otherwise.
    #[serde(default)]
    pub mode: Option<SourceMode>,
    /// Where a partition with no checkpoint in the sink starts.
    #[serde(default)]
    pub start: StartPosition,
    /// Format of the Kafka key.
    #[serde(default)]
    pub key_format: KeyFormat,
    /// librdkafka settings passed through as they are (`security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`, `session.timeout.ms`, …). sinkd owns
    /// `enable.auto.commit`, `enable.auto.offset.store`, `group.id` and `bootstrap.servers`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// How partitions are shared between instances of a pipeline.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    /// One consumer group; partitions are split between instances.
    #[default]
    Shared,
    /// Every instance reads every partition (for local read models like a search index).
    Replica,
}

/// Where to start a partition that has no checkpoint yet.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// From the first retained record.
    #[default]
    Earliest,
    /// From the end: only records produced from now on.
    Latest,
}

/// Format of the Kafka record key.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// UTF-8 string.
    #[default]
    String,
    /// Confluent-framed Avro, schema from the registry.
    Avro,
    /// Raw bytes.
    Bytes,
}

/// Schema registry connection.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Request timeout in milliseconds.
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_registry_timeout_ms() -> u64 {
    10_000
}

/// Basic authentication credentials.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password; never logged.
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// [`redact_url`] for every URL inside a message (driver errors may quote them).
pub fn redact_text(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            if word.contains("://") && word.contains('@') {
                let trimmed = word.trim_end();
                let start = trimmed.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
                format!(
                    "{}{}{}",
                    &trimmed[..start],
                    redact_url(&trimmed[start..]),
                    &word[trimmed.len()..]
                )
            } else {
                word.to_owned()
            }
        })
        .collect()
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The key of the read model.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Where the key comes from.
    #[serde(default)]
    pub from: KeySource,
    /// Key column names in the sink. With `from: fields` these are also the event fields
    /// read; with `from: kafka_key` a string/bytes key fills the single column, and an Avro
    /// record key fills columns of the same names.
    pub columns: Vec<String>,
}

/// Where the key comes from.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The Kafka record key.
    #[default]
    KafkaKey,
    /// Fields of the event body named like the key columns. Tombstones still use the
    /// Kafka key.
    Fields,
}

/// What to do with an event type not declared in `events`.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownEventPolicy {
    /// Skip it (counted and logged at debug level); its offset still advances.
    #[default]
    Skip,
    /// Stop the pipeline.
    Fail,
    /// Send it to the dead-letter topic.
    DeadLetter,
}

/// What to do with a record that cannot be decoded or projected.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Stop the pipeline with a message naming topic, partition, offset and cause.
    #[default]
    Fail,
    /// Send the original record to the dead-letter topic with headers naming the cause,
    /// and go on.
    DeadLetter,
}

/// Where a piece of event identity (type or version) is read from.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Locator {
    /// From the writer schema (record full name, or version in its subject).
    #[default]
    Schema,
    /// From a top-level field of the event.
    Field(String),
    /// From a record header (UTF-8).
    Header(String),
}

/// Batch bounds: a batch is written when either is reached.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records in one batch (one sink transaction).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Longest time in milliseconds a record waits before its batch is written.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_max_events() -> usize {
    5_000
}

fn default_max_wait_ms() -> u64 {
    200
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: default_max_events(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}
