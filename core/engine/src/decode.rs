//! Turning raw records into events, and where dead letters go.

use async_trait::async_trait;

use crate::error::RecordError;
use crate::event::{Event, RawRecord};

/// Decodes a raw record into an event (type, version, key, body, schema).
#[async_trait]
pub trait Decoder: Send + Sync {
    /// Decodes one record. A retriable error (registry unavailable) is retried by the
    /// caller; any other error is a bad record.
    async fn decode(&self, raw: &RawRecord) -> Result<Event, RecordError>;
}

/// The cause attached to a dead letter.
#[derive(Clone, Debug)]
pub struct DeadLetterCause {
    /// Error class: `bad_record`, `unknown_event_type`, `rejected`.
    pub class: &'static str,
    /// Stable error code (`corrupt_datum`, …).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// A place for records that cannot be applied.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Sends the original record with its cause and waits until it is durable. An error is
    /// retried by the caller: the record's offset does not advance until this succeeds.
    async fn send(&self, raw: &RawRecord, cause: &DeadLetterCause) -> Result<(), String>;
}
