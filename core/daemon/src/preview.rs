//! `sinkd preview` (formerly `sinkd upcast`, still accepted): runs a pipeline's identity
//! rules, upcasters and projection over a file of sample events, offline: no Kafka, no
//! sink. Prints, per event, the upcast event and the operation on the target (after the
//! pipeline's rules chose one), as one JSON document per line.
//!
//! Input formats:
//! - `json` (default): one event per line, `{"type", "version", "key", "value"}` (optionally
//!   `"headers": {name: text}`). The writer schema comes from `--schemas DIR`
//!   (`DIR/<type>/v<version>.avsc`) or, without it, from the pipeline's registry (the
//!   version of the subject `<topic>-value`, `<topic>-<type>` or `<type>`).
//! - `confluent`: one record per line, `base64(value)` or `key<TAB>base64(value)`, decoded
//!   through the registry exactly as the pipeline decodes it.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use base64::Engine;
use serde_json::{Map, Value as Json, json};
use sinkd_core::config::LoadedPipeline;
use sinkd_core::decode::Decoder;
use sinkd_core::error::RecordError;
use sinkd_core::event::{Event, RawRecord, SourcePosition};
use sinkd_core::operation::Op;
use sinkd_core::schema::EventSchema;
use sinkd_core::transform::Transform;
use sinkd_core::upcast::reader::resolve_to_reader;
use sinkd_core::value::to_json;
use sinkd_kafka::{AvroEventDecoder, ReaderSchema, Registry, subject_candidates};

use crate::wiring::reader_schemas;

/// Input format of `sinkd preview`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum InputFormat {
    /// JSON lines: `{"type", "version", "key", "value"}`.
    Json,
    /// Base64 Confluent-framed Avro values, optionally `key<TAB>` first.
    Confluent,
}

/// What `sinkd preview` was asked to do.
pub struct Args {
    /// The pipeline.
    pub pipeline: LoadedPipeline,
    /// Input file, or `-` for standard input.
    pub input: PathBuf,
    /// Input format.
    pub format: InputFormat,
    /// Folder of writer schemas for JSON input.
    pub schemas: Option<PathBuf>,
    /// Topic named in subjects and positions (default: the pipeline's first topic).
    pub topic: Option<String>,
}

/// Runs the command; returns how many lines failed.
pub async fn run(args: Args, out: &mut impl std::io::Write) -> Result<usize, String> {
    let p = &args.pipeline.pipeline;
    let transform = Transform::new(p).map_err(|problems| {
        problems
            .into_iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let topic: Arc<str> = Arc::from(
        args.topic
            .clone()
            .unwrap_or_else(|| p.source.kafka.topics[0].clone())
            .as_str(),
    );
    let target = |n: usize| p.target_label(n);
    let readers = reader_schemas(p, &args.pipeline.path)?;
    let registry = Arc::new(Registry::new(&p.source.registry)?);
    let mut writers = Writers {
        dir: args.schemas.clone(),
        registry: registry.clone(),
        topic: topic.clone(),
        readers: readers.clone(),
        cache: HashMap::new(),
    };
    let decoder = AvroEventDecoder::new(registry, p.source.kafka.key_format)
        .with_readers(readers)
        .with_reader_check(crate::wiring::reader_check(p));
    let reader: Box<dyn BufRead> = if args.input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.input)
                .map_err(|e| format!("cannot read {}: {e}", args.input.display()))?,
        ))
    };
    let mut failed = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", args.input.display()))?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let n = i + 1;
        let position = SourcePosition {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
        };
        let result = match args.format {
            InputFormat::Json => json_event(&line, position, &mut writers).await,
            InputFormat::Confluent => confluent_event(&line, position, &decoder).await,
        };
        let result = result.and_then(|(raw, event)| {
            shown(&transform, &target, &raw, event).map_err(Failure::Line)
        });
        let doc = match result {
            Ok(mut doc) => {
                doc["line"] = json!(n);
                doc
            }
            Err(Failure::Line(e)) => {
                failed += 1;
                json!({"line": n, "error": e})
            }
            Err(Failure::Stop(e)) => return Err(format!("line {n}: {e}")),
        };
        writeln!(out, "{doc}").map_err(|e| e.to_string())?;
    }
    Ok(failed)
}

/// Why a line gave no output.
enum Failure {
    /// The line's own fault: reported on its line; the next lines go on.
    Line(String),
    /// No line can succeed (the registry refused the credentials): the command stops.
    Stop(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Line(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::Line(message.to_owned())
    }
}

impl From<RecordError> for Failure {
    fn from(e: RecordError) -> Failure {
        match e.class() {
            sinkd_core::error::ErrorClass::Fatal => Failure::Stop(e.to_string()),
            _ => Failure::Line(e.to_string()),
        }
    }
}

/// The upcast event and its operation, as JSON.
fn shown(
    transform: &Transform,
    target: &dyn Fn(usize) -> String,
    raw: &RawRecord,
    event: Event,
) -> Result<Json, String> {
    let input = json!({"type": &*event.event_type, "version": event.version});
    let event = transform.prepare(raw, event).map_err(|e| e.to_string())?;
    let shown = json!({
        "type": &*event.event_type,
        "version": event.version,
        "value": event.body.as_ref().map(to_json),
    });
    let ops = transform.project(event).map_err(|e| e.to_string())?;
    let mut doc = json!({"in": input, "event": shown, "op": op_json(&ops[0], &target(0))});
    if ops.len() > 1 {
        // Child rows, in the order they are applied.
        doc["also"] = ops[1..]
            .iter()
            .map(|op| op_json(op, &target(op.target)))
            .collect();
    }
    Ok(doc)
}

fn op_json(op: &Op, target: &str) -> Json {
    let key: Map<String, Json> = op
        .key
        .iter()
        .map(|c| (c.column.to_string(), to_json(&c.value)))
        .collect();
    let columns: Map<String, Json> = op
        .cells
        .iter()
        .map(|c| {
            (
                c.column.to_string(),
                json!({"type": c.ty.to_string(), "value": to_json(&c.value)}),
            )
        })
        .collect();
    let kind = match (op.kind, op.prefix) {
        (sinkd_core::config::OpKind::Delete, true) => "delete_prefix".to_owned(),
        (kind, _) => format!("{kind:?}").to_lowercase(),
    };
    json!({
        "target": target,
        "kind": kind,
        "key": key,
        "columns": columns,
    })
}

async fn confluent_event(
    line: &str,
    position: SourcePosition,
    decoder: &AvroEventDecoder,
) -> Result<(RawRecord, Event), Failure> {
    let (key, value) = match line.split_once('\t') {
        Some((k, v)) => (Some(k.as_bytes().to_vec()), v),
        None => (None, line),
    };
    let value = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| format!("the value is not base64: {e}"))?;
    let raw = RawRecord {
        position,
        timestamp_ms: None,
        key,
        value: Some(value),
        headers: Vec::new(),
    };
    let event = decoder.decode(&raw).await?;
    Ok((raw, event))
}

/// Writer schemas for JSON input, by type and version.
struct Writers {
    dir: Option<PathBuf>,
    registry: Arc<Registry>,
    topic: Arc<str>,
    readers: HashMap<String, ReaderSchema>,
    /// `(type, version)` → the writer schema, the reader schema if any, and the column
    /// view of the schema the value ends up in (one `Arc` per schema, as in the decoder).
    cache: HashMap<(String, u32), WriterEntry>,
}

/// A writer schema, its reader schema if declared, and the column view of the latter.
struct WriterEntry {
    writer: Schema,
    reader: Option<Arc<Schema>>,
    view: Arc<EventSchema>,
}

impl Writers {
    async fn get(&mut self, ty: &str, version: u32) -> Result<&WriterEntry, Failure> {
        let key = (ty.to_owned(), version);
        if !self.cache.contains_key(&key) {
            let writer = self.writer(ty, version).await?;
            let reader = match self.readers.get(ty) {
                None => None,
                Some(r) => Some(r.load(&self.registry, ty).await?),
            };
            let view = EventSchema::from_avro(reader.as_deref().unwrap_or(&writer))
                .ok_or_else(|| format!("the schema of {ty} v{version} is not a record"))?;
            self.cache.insert(
                key.clone(),
                WriterEntry {
                    writer,
                    reader,
                    view: Arc::new(view),
                },
            );
        }
        Ok(&self.cache[&key])
    }

    async fn writer(&self, ty: &str, version: u32) -> Result<Schema, Failure> {
        if let Some(dir) = &self.dir {
            let path = dir.join(ty).join(format!("v{version}.avsc"));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "no writer schema for {ty} v{version}: {}: {e}",
                    path.display()
                )
            })?;
            return Schema::parse_str(&text)
                .map_err(|e| Failure::Line(format!("{}: {e}", path.display())));
        }
        let topic = &self.topic;
        let subjects = subject_candidates(topic, ty);
        for subject in &subjects {
            let found = match self.registry.subject_schema(subject, Some(version)).await {
                Ok(found) => found,
                // An unreachable registry, or one that refuses the credentials, is not
                // "no such schema": say so (a refusal stops the command).
                Err(
                    e @ (RecordError::RegistryUnavailable(_) | RecordError::RegistryRefused(_)),
                ) => {
                    return Err(e.into());
                }
                Err(_) => continue,
            };
            let schema = Schema::parse_str(&found.schema)
                .map_err(|e| format!("{subject} v{version}: {e}"))?;
            if matches!(&schema, Schema::Record(r) if r.name.fullname(None) == ty) {
                return Ok(schema);
            }
        }
        Err(Failure::Line(format!(
            "no writer schema for {ty} v{version}: not in the registry under {} (or pass --schemas DIR)",
            subjects.join(", ")
        )))
    }
}

async fn json_event(
    line: &str,
    position: SourcePosition,
    writers: &mut Writers,
) -> Result<(RawRecord, Event), Failure> {
    let doc: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let ty = doc["type"]
        .as_str()
        .ok_or("`type` (the event type) is missing")?;
    let version = doc["version"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("`version` (a number) is missing")?;
    let WriterEntry {
        writer,
        reader,
        view,
    } = writers.get(ty, version).await?;
    let value = match &doc["value"] {
        Json::Null => None,
        v => {
            let value = sinkd_core::json_avro::from_json(v.clone(), writer)
                .map_err(|e| format!("`value` does not fit {ty} v{version}: {e}"))?;
            Some(match reader {
                Some(r) => {
                    resolve_to_reader(value, r).map_err(|e| format!("{ty}: the value {e}"))?
                }
                None => value,
            })
        }
    };
    let key = match &doc["key"] {
        Json::Null => None,
        Json::String(s) => Some(Value::String(s.clone())),
        Json::Object(o) => Some(Value::Record(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), Value::try_from(v.clone())?)))
                .collect::<Result<_, apache_avro::Error>>()
                .map_err(|e| format!("`key`: {e}"))?,
        )),
        other => Some(Value::try_from(other.clone()).map_err(|e| format!("`key`: {e}"))?),
    };
    let headers = doc["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(|s| s.as_bytes().to_vec())))
                .collect()
        })
        .unwrap_or_default();
    let raw = RawRecord {
        position: position.clone(),
        timestamp_ms: None,
        key: None,
        value: None,
        headers,
    };
    let schema = value.as_ref().map(|_| view.clone());
    Ok((
        raw,
        Event {
            event_type: Arc::from(ty),
            version,
            key,
            body: value,
            schema,
            position,
            timestamp_ms: None,
        },
    ))
}
