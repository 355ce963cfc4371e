//! The Tantivy sink of sinkd: the sidecar's local search index.
//!
//! - [`config`]: the settings under `sink.tantivy` (the index's fields); [`connector`]:
//!   how the engine validates them and builds the sink, admin and checkpoint reader.
//! - [`index`]: the schema from the pipeline file, and opening or creating the directory
//!   (a corrupt or foreign directory is an error, never a silent empty index).
//! - [`error`]: Tantivy's errors classified as retriable (I/O, locks) or fatal (corruption).
//! - [`values`]: Avro values → Tantivy values by declared field type.
//! - [`checkpoint`]: the checkpoint in each commit's payload, and a reader for the source.
//! - [`sink`]: [`TantivySink`]: upsert = delete by key term + add, merges and increments
//!   from the stored previous document, one commit per batch.
//! - [`search`]: queries for the REST API (total hits, stored fields, scores).
//! - [`layout`]: the live generation folder and the rebuild's shadow beside it.
//! - [`admin`]: the shadow's swap (switching `ACTIVE`, reopening readers) and resets.

pub mod admin;
pub mod checkpoint;
pub mod config;
pub mod connector;
pub mod error;
pub mod index;
pub mod layout;
pub mod search;
pub mod sink;
pub mod values;

pub use admin::TantivyAdmin;
pub use config::TantivySinkConfig;
pub use connector::TantivyConnector;
pub use search::SearchHandle;
pub use sink::TantivySink;
