//! The PostgreSQL sink of sinkd.
//!
//! - [`config`]: the settings under `sink.postgres`; [`connector`]: how the engine
//!   validates them and builds the sink, admin and checkpoint reader.
//! - [`types`]: Avro column types ↔ PostgreSQL types, and typed arrays for `UNNEST`.
//! - [`table`]: creating the table and adding columns as events gain fields (never drops).
//! - [`statements`]: the set-based statements of a compacted batch, with row guards.
//! - [`checkpoint`]: the `sinkd_offsets` table and its compare-and-set advance.
//! - [`sink`]: [`PostgresSink`], one transaction per batch.
//! - [`admin`]: the rebuild's shadow table, its swap, and checkpoint resets.

pub mod admin;
pub mod checkpoint;
pub mod config;
pub mod connector;
mod indexes;
pub mod sink;
pub mod statements;
pub mod table;
pub mod types;

pub use admin::PgAdmin;
pub use config::PostgresSinkConfig;
pub use connector::PostgresConnector;
pub use sink::PostgresSink;

/// Quotes an identifier for SQL (`"a""b"`), as PostgreSQL's `quote_ident` does. Table and
/// column names come from configuration and schemas; they are never spliced in unquoted.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Classifies a driver error.
pub fn classify(e: &tokio_postgres::Error) -> sinkd_core::error::SinkError {
    use sinkd_core::error::SinkError;
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke or could not be made.
        return SinkError::Unavailable(e.to_string());
    };
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), code.code()),
        None => e.to_string(),
    };
    match &code.code()[..2] {
        // data exception, integrity constraint violation: one row's fault.
        "22" | "23" => SinkError::Rejected { detail },
        // serialization failure, deadlock: another transaction got there first.
        "40" => SinkError::Conflict(detail),
        // connection, resources, shutdown, lock not available, read-only standby.
        "08" | "53" | "57" | "55" | "25" | "58" => SinkError::Unavailable(detail),
        "28" => SinkError::Config(detail),
        _ => SinkError::Incompatible(detail),
    }
}
