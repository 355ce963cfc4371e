//! The source side: records and partition hand-over markers, in one ordered stream.

use async_trait::async_trait;

use crate::error::ErrorClass;
use crate::event::RawRecord;
use crate::event::TopicPartition;

/// One partition given to this instance, with where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset stored in the sink (`None`: no checkpoint yet).
    pub stored: Option<i64>,
}

/// What a source delivers, in order.
#[derive(Debug)]
pub enum SourceItem {
    /// A record.
    Record(RawRecord),
    /// Partitions were assigned; records of them follow.
    Assigned(Vec<Assigned>),
    /// Partitions are being taken away. The runtime writes what it holds and then answers
    /// on `done`, so the hand-over happens only after the last durable write.
    Revoked {
        /// The partitions.
        partitions: Vec<TopicPartition>,
        /// Answered once the runtime let go of them.
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// What went wrong reading the log, and whether waiting can mend it.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Passing trouble (a broker unreachable, a leader moving, a seek timing out): the
    /// same request is worth repeating after a wait; nothing is skipped meanwhile.
    #[error("{0}")]
    Retriable(String),
    /// Nothing changes without an operator (no permission to read the topic or join the
    /// group, failed authentication, a topic that does not exist, a consumer that cannot
    /// be created): the pipeline stops and says why.
    #[error("{0}")]
    Fatal(String),
}

impl SourceError {
    /// Whether a retry can succeed.
    pub fn class(&self) -> ErrorClass {
        match self {
            SourceError::Retriable(_) => ErrorClass::Retriable,
            SourceError::Fatal(_) => ErrorClass::Fatal,
        }
    }
}

/// A stream of records with partition hand-over markers.
#[async_trait]
pub trait Source: Send + Sync {
    /// The next item. Must be cancel-safe: the runtime races it against its batch timer.
    async fn next(&mut self) -> Result<SourceItem, SourceError>;

    /// Records that the sink durably holds everything before these next offsets: committed
    /// to the consumer group for lag tools only; sinkd never resumes from it.
    fn committed(&self, offsets: &[(TopicPartition, i64)]);

    /// Moves a partition to an offset (after fencing, to the sink's stored offset).
    fn seek(&self, partition: &TopicPartition, offset: i64) -> Result<(), SourceError>;

    /// The partition's high watermark as the source last saw it while reading (no I/O);
    /// `None` when unknown.
    fn high_watermark(&self, _partition: &TopicPartition) -> Option<i64> {
        None
    }
}
