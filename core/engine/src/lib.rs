//! The sinkd engine: everything between a source of records and a sink that is not specific
//! to one connector.
//!
//! - [`config`]: pipeline files (YAML), environment interpolation, validation without I/O.
//! - [`connector`]: the trait each sink connector implements for its settings, and the
//!   map of connectors that parses a pipeline's `sink:` section.
//! - [`event`]: the decoded event and its source position.
//! - [`expr`]: CEL expressions (computed values, conditions), compiled once, with the
//!   list functions CEL lacks (`sum`, `min`, `max`).
//! - [`json_avro`]: JSON text into Avro values of a schema, exactly (outbox, `sinkd upcast`).
//! - [`decimals`]: decoded decimals given the scale their schema declares.
//! - [`schema`]: column types derived from Avro writer schemas.
//! - [`upcast`]: upcasters that bring old event versions to the newest one.
//! - [`operation`]: the operations on a read model (cells, upsert/merge/increment/delete).
//! - [`projection`]: event → operation on a read model (upsert, merge, increment, delete):
//!   sinkd's events by rules, or Debezium changes, behind one trait.
//! - [`backoff`]: the one retry policy (exponential backoff) of every waiting loop.
//! - [`batch`]: per-key compaction of operations, order kept per key.
//! - [`sink`], [`source`], [`decode`], [`dead_letter`]: the traits connectors implement.
//! - [`transform`]: identity overrides, upcasting and projection of one event, shared by
//!   the runtime and `sinkd upcast`.
//! - [`runtime`]: the pipeline loop that ties them together with exactly-once effect.
//! - [`error`]: errors that classify themselves as retriable, bad record or fatal.
//! - `testing` (tests, or the `testing` feature): an in-memory log, store and decoder for
//!   testing the runtime without servers.

pub mod backoff;
pub mod batch;
pub mod config;
pub mod connector;
pub mod crash;
pub mod dead_letter;
pub mod decimals;
pub mod decode;
pub mod error;
pub mod event;
pub mod expr;
pub mod json_avro;
pub mod operation;
pub mod projection;
pub mod runtime;
pub mod schema;
pub mod sink;
pub mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transform;
pub mod upcast;
pub mod value;
