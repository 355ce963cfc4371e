//! Where records that cannot be applied go: the dead-letter trait, the cause attached to
//! each dead letter, and the two ways a send can fail.

use async_trait::async_trait;

use crate::event::RawRecord;

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

/// Why a dead letter was not stored. The runtime decides by the variant: an unavailable
/// topic is waited for, a refusal stops the pipeline at the record (its offset never
/// moves past a record that is neither applied nor stored).
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The broker or topic is not reachable now; retried with backoff.
    #[error("dead-letter topic unavailable: {0}")]
    Unavailable(String),
    /// The topic refuses this record and will refuse it again: too large, not
    /// authorized, an invalid topic name.
    #[error("dead-letter topic refused the record: {0}")]
    Refused(String),
}

/// A place for records that cannot be applied.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Sends the original record with its cause and waits until it is durable.
    async fn send(&self, raw: &RawRecord, cause: &DeadLetterCause) -> Result<(), DeadLetterError>;
}
