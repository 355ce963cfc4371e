//! The decoded event: what every connector turns a record into before projection.

use std::fmt;
use std::sync::Arc;

use apache_avro::types::Value;

use crate::schema::EventSchema;

/// A topic partition: the unit the source assigns and the sink checkpoints.
pub type TopicPartition = (Arc<str>, i32);

/// Where a record came from: the unit of ordering, checkpointing and row guards.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourcePosition {
    /// Kafka topic.
    pub topic: Arc<str>,
    /// Kafka partition.
    pub partition: i32,
    /// Offset of the record within the partition.
    pub offset: i64,
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic {} partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// A record as the source delivered it, before decoding. Kept whole so a bad record can
/// be dead-lettered byte for byte.
#[derive(Clone, Debug)]
pub struct RawRecord {
    /// Position of the record.
    pub position: SourcePosition,
    /// Record timestamp in milliseconds since the epoch, when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Raw key bytes.
    pub key: Option<Vec<u8>>,
    /// Raw value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Record headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl RawRecord {
    /// The first header with this name, as bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// A decoded event, ready for projection.
#[derive(Clone, Debug)]
pub struct Event {
    /// Event type: by default the writer record's full name, e.g. `com.shop.OrderPlaced`.
    pub event_type: Arc<str>,
    /// Event version: by default the writer schema's version in its registry subject.
    pub version: u32,
    /// The decoded Kafka key, if any.
    pub key: Option<Value>,
    /// The event body (an Avro record); `None` for a tombstone.
    pub body: Option<Value>,
    /// Column view of the writer schema; `None` for a tombstone.
    pub schema: Option<Arc<EventSchema>>,
    /// Source position of the record.
    pub position: SourcePosition,
    /// Record timestamp in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Event {
    /// The value of a top-level field of the body, unwrapping unions.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match &self.body {
            Some(Value::Record(fields)) => fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| crate::value::unwrap_union(v)),
            _ => None,
        }
    }
}
