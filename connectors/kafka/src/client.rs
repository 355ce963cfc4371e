//! librdkafka client settings.

use rdkafka::ClientConfig;
use sinkd_core::config::{KafkaSourceConfig, StartPosition};

/// Settings shared by the consumer and the dead-letter producer: the brokers and every
/// pass-through property (security, SASL, TLS, timeouts).
pub fn base_config(cfg: &KafkaSourceConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Consumer settings: sinkd owns offsets, so auto-commit and the offset store are off.
pub fn consumer_config(cfg: &KafkaSourceConfig, group_id: &str) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match cfg.start {
                StartPosition::Earliest => "earliest",
                StartPosition::Latest => "latest",
            },
        );
    // Per-partition high watermarks for lag and rebuild progress, unless set otherwise.
    if !cfg.properties.contains_key("statistics.interval.ms") {
        c.set("statistics.interval.ms", "1000");
    }
    // Consumer-only keys a user may not have set; producer-only keys are filtered by
    // librdkafka with a warning, so the pass-through stays one map.
    c
}

/// Producer settings for dead letters: idempotent, acknowledged by all in-sync replicas.
pub fn producer_config(cfg: &KafkaSourceConfig) -> ClientConfig {
    idempotent_producer(&cfg.bootstrap_servers, &cfg.properties)
}

/// An idempotent producer acknowledged by all in-sync replicas: with it librdkafka keeps
/// each partition's order through retries, and a record is reported delivered only once
/// it is durable. Consumer-only keys of `properties` are left out.
pub fn idempotent_producer(
    bootstrap_servers: &str,
    properties: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers);
    for (k, v) in properties {
        // Consumer-only settings would make the producer refuse to start.
        if !is_consumer_only(k) {
            c.set(k, v);
        }
    }
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

fn is_consumer_only(key: &str) -> bool {
    key.starts_with("session.")
        || key.starts_with("heartbeat.")
        || key.starts_with("fetch.")
        || key.starts_with("group.")
        || key.starts_with("max.poll.")
        || key.starts_with("auto.")
        || key.starts_with("partition.assignment")
        || key.starts_with("isolation.")
        || key.starts_with("queued.")
        || key.starts_with("check.crcs")
}
