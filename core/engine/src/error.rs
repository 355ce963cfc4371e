//! Errors that say what to do about them.
//!
//! Every error the data path can produce answers [`ErrorClass`]: retry the same batch,
//! route the record per the bad-record policy, or stop the pipeline.

/// What the runtime does with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A server is unavailable or a transaction conflicted: back off and retry the same
    /// batch. Never skips a record.
    Retriable,
    /// This record cannot be applied (undecodable, unknown schema, projection failure,
    /// constraint violation): follow the pipeline's bad-record policy.
    BadRecord,
    /// Configuration or an incompatible change: stop the pipeline with the message.
    Fatal,
}

/// Why one record could not become an operation. Always a [`ErrorClass::BadRecord`] unless
/// the variant says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The payload is shorter than the 5-byte Confluent header.
    #[error("payload of {len} bytes is shorter than the 5-byte Confluent header")]
    ShortPayload {
        /// Length of the payload.
        len: usize,
    },
    /// The first byte is not the Confluent magic byte 0.
    #[error("wrong magic byte {found:#04x}: not Confluent wire format (expected 0x00)")]
    WrongMagic {
        /// The byte found.
        found: u8,
    },
    /// The registry does not know the schema id in the header.
    #[error("schema id {id} is unknown to the registry: {detail}")]
    UnknownSchemaId {
        /// Schema id from the header.
        id: u32,
        /// What the registry said.
        detail: String,
    },
    /// The Avro datum does not decode with its writer schema.
    #[error("Avro datum does not decode with writer schema {schema_id}: {detail}")]
    CorruptDatum {
        /// Schema id from the header.
        schema_id: u32,
        /// The decoder's message.
        detail: String,
    },
    /// The record key could not be decoded in the configured key format.
    #[error("key cannot be decoded as {format}: {detail}")]
    BadKey {
        /// Configured key format.
        format: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The event type is not declared in the pipeline and the policy says so.
    #[error("event type {event_type} is not declared in the pipeline")]
    UnknownEventType {
        /// The event's type.
        event_type: String,
    },
    /// The event type is declared but none of its rules' `when` conditions held; routed
    /// like an undeclared type.
    #[error("no rule of event type {event_type} applies: every `when` is false")]
    Unmatched {
        /// The event's type.
        event_type: String,
    },
    /// The event could not be turned into an operation.
    #[error("projection of {event_type} failed: {detail}")]
    Projection {
        /// The event's type.
        event_type: String,
        /// What went wrong.
        detail: String,
    },
    /// The sink refused the row this record wrote (a constraint, a value the column cannot
    /// hold), found by writing the batch record by record.
    #[error("the sink rejected the row: {detail}")]
    Rejected {
        /// The sink's reason.
        detail: String,
    },
    /// An upcaster could not bring the event to the newest version.
    #[error("upcasting {event_type} v{version} failed: {detail}")]
    Upcast {
        /// The event's type before upcasting.
        event_type: String,
        /// The event's version before upcasting.
        version: u32,
        /// Which step, and what went wrong.
        detail: String,
    },
    /// The value does not resolve to the declared reader schema.
    #[error("{event_type}: the value {detail}")]
    ReaderSchema {
        /// The writer record's full name.
        event_type: String,
        /// What went wrong.
        detail: String,
    },
    /// The schema registry could not be reached; retry, do not skip.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The schema registry refused us (authentication, authorization): stop.
    #[error("schema registry refused the request: {0}")]
    RegistryRefused(String),
}

impl RecordError {
    /// How the runtime handles this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            RecordError::RegistryUnavailable(_) => ErrorClass::Retriable,
            RecordError::RegistryRefused(_) => ErrorClass::Fatal,
            _ => ErrorClass::BadRecord,
        }
    }

    /// A short stable name for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::ShortPayload { .. } => "short_payload",
            RecordError::WrongMagic { .. } => "wrong_magic",
            RecordError::UnknownSchemaId { .. } => "unknown_schema_id",
            RecordError::CorruptDatum { .. } => "corrupt_datum",
            RecordError::BadKey { .. } => "bad_key",
            RecordError::UnknownEventType { .. } => "unknown_event_type",
            RecordError::Unmatched { .. } => "unmatched_event",
            RecordError::Projection { .. } => "projection",
            RecordError::Rejected { .. } => "rejected",
            RecordError::Upcast { .. } => "upcast",
            RecordError::ReaderSchema { .. } => "reader_schema",
            RecordError::RegistryUnavailable(_) => "registry_unavailable",
            RecordError::RegistryRefused(_) => "registry_refused",
        }
    }
}

/// An error from a sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The server is unavailable or the transaction failed for a transient reason.
    #[error("sink unavailable: {0}")]
    Unavailable(String),
    /// Another transaction holds the rows or documents (a write conflict, a serialization
    /// failure, or the open transaction of a crashed writer until the server reaps it):
    /// retry soon and often rather than backing off.
    #[error("write conflict: {0}")]
    Conflict(String),
    /// Another writer advanced the checkpoint of this partition: this writer's view is
    /// stale (it is a zombie, or it lost a race at hand-over). Nothing was applied.
    #[error(
        "checkpoint of {topic}/{partition} moved under us (expected next offset {expected:?}); \
         another writer owns this partition, nothing was applied"
    )]
    Fenced {
        /// Topic of the fenced partition.
        topic: String,
        /// The fenced partition.
        partition: i32,
        /// The next offset this writer expected to find.
        expected: Option<i64>,
    },
    /// A change the sink refuses to make on its own (for example a column type change).
    #[error("{0}")]
    Incompatible(String),
    /// The sink rejected a row (a constraint, a value out of range). A set-based statement
    /// cannot say which: the runtime then writes the batch record by record to find it and
    /// route it per the bad-record policy.
    #[error("the sink rejected a row: {detail}")]
    Rejected {
        /// The sink's message.
        detail: String,
    },
    /// Misconfiguration found when connecting (bad credentials, missing privileges).
    #[error("sink configuration error: {0}")]
    Config(String),
}

impl SinkError {
    /// How the runtime handles this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Unavailable(_) | SinkError::Conflict(_) | SinkError::Fenced { .. } => {
                ErrorClass::Retriable
            }
            SinkError::Rejected { .. } => ErrorClass::BadRecord,
            SinkError::Incompatible(_) | SinkError::Config(_) => ErrorClass::Fatal,
        }
    }
}

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A record could not be applied and the policy is `fail`.
    #[error("pipeline {pipeline} stopped at {position}: {cause}")]
    BadRecord {
        /// Pipeline name.
        pipeline: String,
        /// Where the record is.
        position: String,
        /// Why.
        cause: String,
    },
    /// The sink refused a change it cannot make safely.
    #[error("pipeline {pipeline} stopped: {cause}")]
    Fatal {
        /// Pipeline name.
        pipeline: String,
        /// Why.
        cause: String,
    },
    /// The source failed in a way that cannot be retried.
    #[error("pipeline {pipeline}: source failed: {cause}")]
    Source {
        /// Pipeline name.
        pipeline: String,
        /// Why.
        cause: String,
    },
}
