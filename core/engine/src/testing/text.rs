//! Events written as one line of text, `"<Type> <key> <n>"`, decoded into records of the
//! schema [`SCHEMA`] (`id: string, n: long`), and a dead-letter list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::types::Value;
use async_trait::async_trait;

use crate::dead_letter::{DeadLetterCause, DeadLetterError, DeadLetters};
use crate::decode::Decoder;
use crate::error::RecordError;
use crate::event::{Event, RawRecord};
use crate::schema::EventSchema;

/// The record every text event is: its key and one number.
pub const SCHEMA: &str = r#"{"type":"record","name":"Text","fields":[
    {"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;

/// A pipeline of text events into the in-memory store: `Set` replaces a row with `n`,
/// `Add` adds `n` to `total`, `Gone` deletes.
pub const TEXT_PIPELINE: &str = "name: mem
source:
  kafka: { bootstrap_servers: none, topics: [t] }
  registry: { url: 'http://none' }
sink:
  memory: { table: t }
key: { from: fields, columns: [id] }
events:
  Set: { op: upsert }
  Add: { op: increment, columns: { total: n } }
  Gone: { op: delete }
";

/// Decodes `"<Type> <key> <n>"`; anything else is a corrupt datum. Can be told to find the
/// registry unavailable a number of times first.
pub struct TextDecoder {
    schema: Arc<EventSchema>,
    unavailable: AtomicUsize,
}

impl Default for TextDecoder {
    fn default() -> Self {
        let schema = Schema::parse_str(SCHEMA).expect("the text schema parses");
        TextDecoder {
            schema: Arc::new(EventSchema::from_avro(&schema).expect("a record")),
            unavailable: AtomicUsize::new(0),
        }
    }
}

impl TextDecoder {
    /// The next `times` decodes fail as if the schema registry were down.
    pub fn registry_down_for(&self, times: usize) {
        self.unavailable.store(times, Ordering::SeqCst);
    }
}

#[async_trait]
impl Decoder for TextDecoder {
    async fn decode(&self, raw: &RawRecord) -> Result<Event, RecordError> {
        let down = self
            .unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if down.is_ok() {
            return Err(RecordError::RegistryUnavailable(
                "connection refused (injected)".into(),
            ));
        }
        let text = raw
            .value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or_default();
        let corrupt = || RecordError::CorruptDatum {
            schema_id: 0,
            detail: format!("not a text event: {text:?}"),
        };
        let mut parts = text.split(' ');
        let (Some(ty), Some(key), Some(n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        let n: i64 = n.parse().map_err(|_| corrupt())?;
        Ok(Event {
            event_type: Arc::from(ty),
            version: 1,
            key: Some(Value::String(key.to_owned())),
            body: Some(Value::Record(vec![
                ("id".into(), Value::String(key.to_owned())),
                ("n".into(), Value::Long(n)),
            ])),
            schema: Some(self.schema.clone()),
            position: raw.position.clone(),
            timestamp_ms: raw.timestamp_ms,
        })
    }
}

/// Dead letters kept in a list; can be told to fail a number of sends first.
#[derive(Default)]
pub struct MemDeadLetters {
    sent: Mutex<Vec<(RawRecord, DeadLetterCause)>>,
    failures: AtomicUsize,
    refuse: std::sync::atomic::AtomicBool,
}

impl MemDeadLetters {
    /// The records sent, with their causes, in order.
    pub fn sent(&self) -> Vec<(RawRecord, DeadLetterCause)> {
        self.sent.lock().expect("dead letters lock").clone()
    }

    /// The next `times` sends fail as if the broker were down.
    pub fn fail_next(&self, times: usize) {
        self.failures.store(times, Ordering::SeqCst);
    }

    /// Every send is refused, as a topic refuses a record that is too large.
    pub fn refuse_all(&self) {
        self.refuse.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl DeadLetters for MemDeadLetters {
    async fn send(&self, raw: &RawRecord, cause: &DeadLetterCause) -> Result<(), DeadLetterError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(DeadLetterError::Refused(
                "message too large (injected)".into(),
            ));
        }
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(DeadLetterError::Unavailable(
                "broker unavailable (injected)".into(),
            ));
        }
        self.sent
            .lock()
            .expect("dead letters lock")
            .push((raw.clone(), cause.clone()));
        Ok(())
    }
}
