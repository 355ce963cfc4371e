//! Dead letters: the original key, value and headers, plus headers naming the cause and
//! the original position (named like Kafka Connect's `__connect.errors.*`).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sinkd_core::config::KafkaSourceConfig;
use sinkd_core::dead_letter::{DeadLetterCause, DeadLetterError, DeadLetters};
use sinkd_core::event::RawRecord;

use crate::client::producer_config;

/// The largest dead letter sent when `properties` set no `message.max.bytes`: librdkafka's
/// default `receive.message.max.bytes`, the largest response a consumer takes in.
const DEAD_LETTER_MAX_BYTES: u32 = 100_000_000;

/// Produces dead letters to one topic and waits for the broker's acknowledgement.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
    pipeline: String,
}

impl KafkaDeadLetters {
    /// A dead-letter producer for the pipeline's brokers.
    pub fn new(cfg: &KafkaSourceConfig, topic: &str, pipeline: &str) -> Result<Self, String> {
        let mut config = producer_config(cfg);
        // A dead letter is a record the consumer could read, plus the cause's headers: it
        // can be larger than librdkafka's own 1 MB default allows a producer. The dead-letter
        // topic's `max.message.bytes` is what decides; its refusal stops the pipeline at
        // the record and says so.
        if !cfg.properties.contains_key("message.max.bytes") {
            config.set("message.max.bytes", DEAD_LETTER_MAX_BYTES.to_string());
        }
        let producer = config
            .create()
            .map_err(|e| format!("cannot create the dead-letter producer: {e}"))?;
        Ok(KafkaDeadLetters {
            producer,
            topic: topic.to_owned(),
            pipeline: pipeline.to_owned(),
        })
    }
}

#[async_trait]
impl DeadLetters for KafkaDeadLetters {
    async fn send(&self, raw: &RawRecord, cause: &DeadLetterCause) -> Result<(), DeadLetterError> {
        let partition = raw.position.partition.to_string();
        let offset = raw.position.offset.to_string();
        let timestamp = raw.timestamp_ms.map(|t| t.to_string());
        let mut headers = OwnedHeaders::new_with_capacity(raw.headers.len() + 8);
        for (k, v) in &raw.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let ours: [(&str, Option<&str>); 8] = [
            ("sinkd.errors.pipeline", Some(&self.pipeline)),
            ("sinkd.errors.class", Some(cause.class)),
            ("sinkd.errors.code", Some(cause.code)),
            ("sinkd.errors.message", Some(&cause.message)),
            ("sinkd.errors.topic", Some(&raw.position.topic)),
            ("sinkd.errors.partition", Some(&partition)),
            ("sinkd.errors.offset", Some(&offset)),
            ("sinkd.errors.timestamp", timestamp.as_deref()),
        ];
        for (key, value) in ours {
            headers = headers.insert(Header {
                key,
                value: value.map(str::as_bytes),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = &raw.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &raw.value {
            record = record.payload(v.as_slice());
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                let message = format!("produce to {} failed: {e}", self.topic);
                if refused(&e) {
                    DeadLetterError::Refused(message)
                } else {
                    DeadLetterError::Unavailable(message)
                }
            })
    }
}

/// Whether the broker will refuse this record again, however long we wait: the record
/// itself does not fit, we are not allowed, or the idempotent producer hit a fatal error
/// (after one, every send fails). Everything else (timeouts, leader changes, a topic
/// being created) is worth retrying.
fn refused(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::MessageBatchTooLarge
                | C::InvalidMessageSize
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidTopic
                | C::PolicyViolation
                | C::InvalidRecord
                | C::UnsupportedForMessageFormat
                | C::InvalidRequiredAcks
                | C::InvalidArgument
                | C::Fatal
                | C::OutOfOrderSequenceNumber
                | C::InvalidProducerEpoch
                | C::UnknownProducerId
        )
    )
}
