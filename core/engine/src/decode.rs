//! Turning raw records into events (dead letters are in [`crate::dead_letter`]).

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
