//! The MongoDB sink of sinkd.
//!
//! - [`config`]: the settings under `sink.mongodb`; [`connector`]: how the engine
//!   validates them and builds the sink, admin and checkpoint reader.
//! - [`values`]: Avro values → BSON (decimal → Decimal128, timestamp → Date, uuid → UUID
//!   binary, bytes → Binary, records → sub-documents).
//! - [`statements`]: a compacted batch as unordered `update` / `delete` command statements,
//!   each guarded in the server by the source position stored in the document.
//! - [`guards`]: in a transaction, the stored guards read per chunk, and each statement
//!   decided in sinkd and sent as a plain update (no aggregation pipeline to parse).
//! - [`checkpoint`]: the `sinkd_offsets` collection and its compare-and-set advance.
//! - [`sink`]: [`MongoSink`]: one transaction per batch on a replica set; on a standalone
//!   server the guards alone keep the effect exactly once.
//!
//! - [`recovery`]: ending the transaction a crashed writer left open, so its successor
//!   does not wait for the server to expire it.
//! - [`admin`]: the rebuild's shadow collection, its recoverable swap, checkpoint resets.
//!
//! Batches go through the `update` and `delete` commands rather than the driver's
//! client-level bulk write, which needs server 8.0; their `writeErrors` are read and
//! classified (a reply says `ok: 1` even when statements failed).

pub mod admin;
pub mod checkpoint;
pub mod config;
pub mod connector;
pub mod guards;
pub mod recovery;
pub mod sink;
pub mod statements;
pub mod values;

pub use admin::MongoAdmin;
pub use config::MongoSinkConfig;
pub use connector::MongoConnector;
pub use sink::MongoSink;

use mongodb::error::{Error, ErrorKind};
use sinkd_core::error::SinkError;

/// Server error codes sinkd reacts to.
pub mod codes {
    /// E11000.
    pub const DUPLICATE_KEY: i32 = 11000;
    /// Schema validation refused a document.
    pub const DOCUMENT_VALIDATION_FAILURE: i32 = 121;
    /// Two transactions touched the same document.
    pub const WRITE_CONFLICT: i32 = 112;
}

/// Classifies a driver error.
pub fn classify(e: &Error) -> SinkError {
    if e.contains_label("TransientTransactionError") {
        return SinkError::Conflict(e.to_string());
    }
    if e.contains_label("UnknownTransactionCommitResult") || e.contains_label("RetryableWriteError")
    {
        // Whether the commit landed is unknown: retrying is safe, since the checkpoint's
        // compare-and-set fences a batch that did commit.
        return SinkError::Unavailable(e.to_string());
    }
    match e.kind.as_ref() {
        ErrorKind::Command(c) => classify_code(c.code, &c.message),
        ErrorKind::Authentication { .. } => SinkError::Config(e.to_string()),
        ErrorKind::InvalidArgument { .. } => SinkError::Incompatible(e.to_string()),
        // I/O, server selection, pool cleared, DNS, connection closed…
        _ => SinkError::Unavailable(e.to_string()),
    }
}

/// Classifies a server error code (from a command error or a `writeErrors` entry).
pub fn classify_code(code: i32, message: &str) -> SinkError {
    let detail = format!("{message} (code {code})");
    match code {
        codes::DOCUMENT_VALIDATION_FAILURE | 2 | 52 | 55 | 17419 => SinkError::Rejected { detail },
        // auth failed, unauthorized
        13 | 18 => SinkError::Config(detail),
        // write conflict, no such transaction: another transaction holds the documents.
        codes::WRITE_CONFLICT | 251 => SinkError::Conflict(detail),
        // interrupted, not primary, shutdown in progress, host unreachable, network
        // timeout, exceeded time limit, lock timeout…, out of disk space (as PostgreSQL's
        // disk full, retried until there is room)
        11600 | 11601 | 11602 | 10107 | 13435 | 91 | 189 | 6 | 7 | 89 | 9001 | 50 | 24 | 262
        | 10058 | 14031 => SinkError::Unavailable(detail),
        _ => SinkError::Incompatible(detail),
    }
}
