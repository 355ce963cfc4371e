//! The Kafka connector of sinkd.
//!
//! - [`client`]: librdkafka settings from the pipeline file (pass-through of SASL/TLS).
//! - [`source`]: the consumer. No auto-commit; every assignment seeks to the offsets the
//!   sink stores; the group commit is advisory.
//! - [`registry`]: the Confluent-compatible schema registry (schema by id, version lookup).
//! - [`decoder`]: Confluent framing + Avro → [`sinkd_core::event::Event`].
//! - [`datum`]: one Avro datum into a value, with its writer (and reader) schema.
//! - [`dead_letter`]: the dead-letter producer.
//! - [`offsets`]: partitions, watermarks and offsets by time, for the control plane.
//! - [`config_log`]: a cluster's pipeline definitions, in a compacted topic.
//! - [`errors`]: which Kafka errors a pipeline waits out and which stop it.

pub mod client;
pub mod config_log;
pub mod datum;
pub mod dead_letter;
pub mod decoder;
pub mod errors;
pub mod offsets;
pub mod registry;
pub mod source;

pub use dead_letter::KafkaDeadLetters;
pub use decoder::{AvroEventDecoder, ReaderSchema, subject_candidates};
pub use offsets::{KafkaOffsets, Position, Watermarks};
pub use registry::{Registry, SubjectSchema};
pub use source::KafkaSource;
