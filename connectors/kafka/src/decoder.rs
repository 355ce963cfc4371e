//! Confluent wire format + Avro → events.
//!
//! The frame is `0x00`, a big-endian u32 schema id, then the Avro datum. The frame is
//! checked here (length, magic byte) so that each failure has its own typed error; the
//! writer schema comes from the registry through the converter (cached, references
//! resolved) and the datum is decoded by `apache-avro` with a reader built once per schema
//! and owned beside it (nothing is leaked: a decoder is rebuilt at every task start).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::types::Value;
use async_trait::async_trait;
use rustc_hash::FxHashMap;
use sinkd_core::config::KeyFormat;
use sinkd_core::decode::Decoder;
use sinkd_core::error::RecordError;
use sinkd_core::event::{Event, RawRecord};
use sinkd_core::schema::EventSchema;

use crate::datum::{ReadError, ValueReader};
use crate::registry::Registry;

/// Splits a Confluent frame into schema id and datum.
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), RecordError> {
    if bytes.len() < 5 {
        return Err(RecordError::ShortPayload { len: bytes.len() });
    }
    if bytes[0] != 0 {
        return Err(RecordError::WrongMagic { found: bytes[0] });
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

/// What one writer schema means for a topic: its event type, version and column view,
/// and the reader schema its values are resolved to, if one is declared.
struct SchemaInfo {
    /// Reads datums of the writer schema into values of the reader schema.
    values: ValueReader,
    event_type: Arc<str>,
    schema: Arc<EventSchema>,
    version: u32,
}

/// A declared reader schema of an event type.
#[derive(Clone, Debug)]
pub enum ReaderSchema {
    /// Parsed at start-up (from a file).
    Parsed(Arc<Schema>),
    /// A registry subject at a version (`None`: the latest), fetched on first use.
    Subject(String, Option<u32>),
}

impl ReaderSchema {
    /// The schema, fetched from the registry for a subject. A subject that is missing or
    /// does not parse is [`RecordError::RegistryRefused`]: the pipeline cannot go on.
    pub async fn load(
        &self,
        registry: &Registry,
        event_type: &str,
    ) -> Result<Arc<Schema>, RecordError> {
        let (subject, version) = match self {
            ReaderSchema::Parsed(s) => return Ok(s.clone()),
            ReaderSchema::Subject(subject, version) => (subject, version),
        };
        let found = registry.subject_schema(subject, *version).await?;
        let schema = Schema::parse_str(&found.schema).map_err(|e| {
            RecordError::RegistryRefused(format!(
                "reader schema of {event_type} (subject {subject} v{}) does not parse: {e}",
                found.version
            ))
        })?;
        tracing::info!(%event_type, %subject, version = found.version, "reader schema loaded from the registry");
        Ok(Arc::new(schema))
    }
}

/// Schema facts by `(schema id, topic)`: the version depends on the topic's subject.
/// Looked up once per record, so FxHash rather than SipHash (the keys are not attacker-chosen
/// in any way that matters: ids and topic names of our own brokers).
type SchemaCache = RwLock<FxHashMap<(u32, Arc<str>), Arc<SchemaInfo>>>;

/// Decodes Confluent-framed Avro values (and keys) into events.
pub struct AvroEventDecoder {
    registry: Arc<Registry>,
    key_format: KeyFormat,
    infos: SchemaCache,
    keys: RwLock<FxHashMap<u32, Arc<ValueReader>>>,
    readers: HashMap<String, ReaderSchema>,
    check: Option<ReaderCheck>,
}

/// Checks a pipeline's rules against a reader schema fetched from the registry (event
/// type, schema, subject): what is wrong, if anything.
pub type ReaderCheck = Arc<dyn Fn(&str, &Schema, &str) -> Result<(), String> + Send + Sync>;

impl AvroEventDecoder {
    /// A decoder using the registry, with keys in the given format.
    pub fn new(registry: Arc<Registry>, key_format: KeyFormat) -> AvroEventDecoder {
        AvroEventDecoder {
            registry,
            key_format,
            infos: RwLock::new(FxHashMap::default()),
            keys: RwLock::new(FxHashMap::default()),
            readers: HashMap::new(),
            check: None,
        }
    }

    /// Runs `check` on each reader schema fetched from the registry; a failed check stops
    /// the pipeline (as a refused registry lookup does) before an event of the type is
    /// applied.
    pub fn with_reader_check(mut self, check: ReaderCheck) -> AvroEventDecoder {
        self.check = Some(check);
        self
    }

    /// Declares reader schemas by event type (the writer record's full name).
    pub fn with_readers(mut self, readers: HashMap<String, ReaderSchema>) -> AvroEventDecoder {
        self.readers = readers;
        self
    }

    /// The reader schema of an event type, fetched from the registry if need be.
    async fn reader(&self, event_type: &str) -> Result<Option<Arc<Schema>>, RecordError> {
        let Some(reader) = self.readers.get(event_type) else {
            return Ok(None);
        };
        let schema = reader.load(&self.registry, event_type).await?;
        if let (ReaderSchema::Subject(subject, _), Some(check)) = (reader, &self.check) {
            check(event_type, &schema, subject).map_err(RecordError::RegistryRefused)?;
        }
        Ok(Some(schema))
    }

    async fn info(&self, id: u32, topic: &Arc<str>) -> Result<Arc<SchemaInfo>, RecordError> {
        let cache_key = (id, topic.clone());
        if let Some(info) = self.infos.read().expect("lock poisoned").get(&cache_key) {
            return Ok(info.clone());
        }
        // Both calls may go to the registry; no lock is held meanwhile.
        let writer = self.registry.schema(id).await?;
        let schema =
            EventSchema::from_avro(&writer.parsed).ok_or_else(|| RecordError::CorruptDatum {
                schema_id: id,
                detail: "the writer schema is not a record; sinkd events are Avro records".into(),
            })?;
        let registered = self.registry.subject_versions(id).await?;
        let version = pick_version(&registered, topic, &schema.full_name);
        let event_type = schema.full_name.clone();
        let reader = self.reader(&event_type).await?;
        let schema = match &reader {
            Some(r) => EventSchema::from_avro(r).ok_or_else(|| {
                RecordError::RegistryRefused(format!(
                    "the reader schema of {event_type} is not a record"
                ))
            })?,
            None => schema,
        };
        let values = ValueReader::new(&writer.parsed, reader).map_err(|detail| {
            RecordError::CorruptDatum {
                schema_id: id,
                detail: format!("the writer schema does not resolve: {detail}"),
            }
        })?;
        let info = Arc::new(SchemaInfo {
            values,
            event_type,
            schema: Arc::new(schema),
            version,
        });
        self.infos
            .write()
            .expect("lock poisoned")
            .insert(cache_key, info.clone());
        Ok(info)
    }

    async fn decode_key(&self, key: Option<&[u8]>) -> Result<Option<Value>, RecordError> {
        let Some(bytes) = key else {
            return Ok(None);
        };
        let bad = |format: &'static str, detail: String| RecordError::BadKey { format, detail };
        Ok(Some(match self.key_format {
            KeyFormat::String => Value::String(
                std::str::from_utf8(bytes)
                    .map_err(|e| bad("string", e.to_string()))?
                    .to_owned(),
            ),
            KeyFormat::Bytes => Value::Bytes(bytes.to_vec()),
            KeyFormat::Avro => {
                let (id, datum) = split_frame(bytes).map_err(|e| bad("avro", e.to_string()))?;
                let reader = self.key_datum(id).await.map_err(|e| match e {
                    e @ (RecordError::RegistryUnavailable(_) | RecordError::RegistryRefused(_)) => {
                        e
                    }
                    other => bad("avro", other.to_string()),
                })?;
                reader
                    .read(datum)
                    .map_err(|e| bad("avro", format!("schema {id}: {e}")))?
            }
        }))
    }

    /// The datum reader of a key schema, cached by id like the value schemas (and, like
    /// them, freed with the decoder).
    async fn key_datum(&self, id: u32) -> Result<Arc<ValueReader>, RecordError> {
        if let Some(d) = self.keys.read().expect("lock poisoned").get(&id) {
            return Ok(d.clone());
        }
        let writer = self.registry.schema(id).await?;
        let datum = Arc::new(ValueReader::new(&writer.parsed, None).map_err(|detail| {
            RecordError::CorruptDatum {
                schema_id: id,
                detail: format!("the key schema does not resolve: {detail}"),
            }
        })?);
        self.keys
            .write()
            .expect("lock poisoned")
            .insert(id, datum.clone());
        Ok(datum)
    }
}

/// The subjects that may name a topic's values of one record type, most specific first:
/// `<topic>-value` (TopicNameStrategy), `<topic>-<record>` (TopicRecordNameStrategy),
/// `<record>` (RecordNameStrategy).
pub fn subject_candidates(topic: &str, record: &str) -> [String; 3] {
    [
        format!("{topic}-value"),
        format!("{topic}-{record}"),
        record.to_owned(),
    ]
}

/// The version of the writer schema in the first of [`subject_candidates`] it is
/// registered under, else in the first subject the registry lists.
fn pick_version(registered: &[crate::registry::SubjectVersion], topic: &str, record: &str) -> u32 {
    subject_candidates(topic, record)
        .iter()
        .find_map(|s| registered.iter().find(|r| &r.subject == s))
        .or_else(|| registered.first())
        .map_or(1, |r| r.version)
}

#[async_trait]
impl Decoder for AvroEventDecoder {
    async fn decode(&self, raw: &RawRecord) -> Result<Event, RecordError> {
        let key = self.decode_key(raw.key.as_deref()).await?;
        let Some(bytes) = raw.value.as_deref() else {
            return Ok(Event {
                event_type: Arc::from("tombstone"),
                version: 0,
                key,
                body: None,
                schema: None,
                position: raw.position.clone(),
                timestamp_ms: raw.timestamp_ms,
            });
        };
        let (id, datum) = split_frame(bytes)?;
        let info = self.info(id, &raw.position.topic).await?;
        let decoded = info.values.read(datum).map_err(|e| match e {
            ReadError::Datum(detail) => RecordError::CorruptDatum {
                schema_id: id,
                detail,
            },
            ReadError::Reader(detail) => RecordError::ReaderSchema {
                event_type: info.event_type.to_string(),
                detail,
            },
        })?;
        Ok(Event {
            event_type: info.event_type.clone(),
            version: info.version,
            key,
            body: Some(decoded),
            schema: Some(info.schema.clone()),
            position: raw.position.clone(),
            timestamp_ms: raw.timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SubjectVersion;

    #[test]
    fn frames_are_checked() {
        assert!(matches!(
            split_frame(&[0, 0, 0]),
            Err(RecordError::ShortPayload { len: 3 })
        ));
        assert!(matches!(
            split_frame(&[1, 0, 0, 0, 7, 2]),
            Err(RecordError::WrongMagic { found: 1 })
        ));
        assert_eq!(split_frame(&[0, 0, 0, 1, 2, 9]).unwrap(), (258, &[9u8][..]));
    }

    #[test]
    fn version_comes_from_the_topic_subject() {
        let r = vec![
            SubjectVersion {
                subject: "other-value".into(),
                version: 7,
            },
            SubjectVersion {
                subject: "orders-value".into(),
                version: 3,
            },
        ];
        assert_eq!(pick_version(&r, "orders", "com.shop.OrderPlaced"), 3);
        assert_eq!(pick_version(&r, "nope", "com.shop.OrderPlaced"), 7);
        assert_eq!(pick_version(&[], "orders", "x"), 1);
    }
}
