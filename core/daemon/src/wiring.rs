//! Builds a runnable pipeline from its file: the one place where connectors are chosen.
//! Adding a sink means one new match arm here ([`sink_for`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema;
use sinkd_core::config::{PipelineFile, ReaderSchemaConfig, SinkConfig, SourceMode};
use sinkd_core::dead_letter::DeadLetters;
use sinkd_core::runtime::{Pipeline, PipelineStats, Policies};
use sinkd_core::sink::{CheckpointReader, Sink, Target, TargetAdmin};
use sinkd_core::transform::Transform;
use sinkd_kafka::{AvroEventDecoder, KafkaDeadLetters, KafkaSource, ReaderSchema, Registry};
use sinkd_mongodb::MongoSink;
use sinkd_postgres::PostgresSink;
use sinkd_tantivy::{SearchHandle, TantivySink};

/// The sink of a pipeline file for `target`, and the source mode it runs in by default.
/// A Tantivy sink publishes its live reader to `search`.
fn sink_for(
    p: &PipelineFile,
    target: Target,
    search: &SearchHandle,
) -> (Box<dyn Sink>, SourceMode) {
    match &p.sink {
        SinkConfig::Postgres(cfg) => (
            Box::new(PostgresSink::new(cfg, &p.name, &p.sink_targets(), target)),
            SourceMode::Shared,
        ),
        SinkConfig::Mongodb(cfg) => (
            Box::new(MongoSink::new(cfg, &p.name, &p.sink_targets(), target)),
            SourceMode::Shared,
        ),
        // A local index per sidecar: every instance reads every partition.
        SinkConfig::Tantivy(cfg) => (
            Box::new(TantivySink::new(cfg, &p.name, target, search.clone())),
            SourceMode::Replica,
        ),
    }
}

/// What the control plane holds for a pipeline across restarts of its task: whole-target
/// operations and a reader of the live checkpoints.
pub fn live_target(
    p: &PipelineFile,
    search: &SearchHandle,
) -> (Arc<dyn TargetAdmin>, Arc<dyn CheckpointReader>) {
    let (sink, _) = sink_for(p, Target::Live, search);
    (sink.admin(), sink.checkpoint_reader())
}

/// The checkpoints of a rebuild's shadow.
pub fn shadow_checkpoints(p: &PipelineFile, search: &SearchHandle) -> Arc<dyn CheckpointReader> {
    sink_for(p, Target::Shadow, search).0.checkpoint_reader()
}

/// Connects the parts of a validated pipeline read from `file`, writing `target`. A
/// rebuild's shadow reads every partition itself (no consumer group), from the offsets
/// stored for the shadow. `registry` is the pipeline's client, kept by its controller
/// across task starts (building one costs about 0.1 s of TLS set-up; its schema caches are
/// bounded by the registry's schemas). Must run inside the tokio runtime.
pub fn build(
    p: &PipelineFile,
    file: &Path,
    target: Target,
    stats: Arc<PipelineStats>,
    search: &SearchHandle,
    registry: Arc<Registry>,
) -> Result<Pipeline, String> {
    let (sink, default_mode) = sink_for(p, target, search);
    let mut kafka = p.source.kafka.clone();
    let name = match target {
        Target::Live => {
            kafka.mode.get_or_insert(default_mode);
            p.name.clone()
        }
        Target::Shadow => {
            kafka.mode = Some(SourceMode::Replica);
            format!("{}:rebuild", p.name)
        }
    };
    registry.forget_failures();
    let decoder = Arc::new(
        AvroEventDecoder::new(registry, p.source.kafka.key_format)
            .with_readers(reader_schemas(p, file)?),
    );
    let dead_letters: Option<Arc<dyn DeadLetters>> = match &p.dead_letter_topic {
        Some(topic) => Some(Arc::new(KafkaDeadLetters::new(
            &p.source.kafka,
            topic,
            &p.name,
        )?)),
        None => None,
    };
    // The queue ahead of the pipeline holds at most two batches: bounded memory.
    let queue = p.batch.max_events.saturating_mul(2);
    let source =
        KafkaSource::start(&kafka, &name, sink.checkpoint_reader(), queue).map_err(|e| e.0)?;
    Ok(Pipeline {
        name,
        source: Box::new(source),
        decoder,
        transform: Transform::new(p).map_err(|problems| {
            problems
                .into_iter()
                .map(|(field, message)| format!("{field}: {message}"))
                .collect::<Vec<_>>()
                .join("; ")
        })?,
        sink,
        dead_letters,
        policies: Policies {
            on_error: p.on_error,
            unknown_events: p.unknown_events,
        },
        batch: p.batch.clone(),
        stats,
    })
}

/// The declared reader schemas: files are read and parsed now (relative to the pipeline
/// file's folder), registry subjects on first use.
pub fn reader_schemas(
    p: &PipelineFile,
    file: &Path,
) -> Result<HashMap<String, ReaderSchema>, String> {
    let mut readers = HashMap::new();
    for (event_type, u) in &p.upcasters {
        let reader = match &u.reader_schema {
            None => continue,
            Some(ReaderSchemaConfig::Subject(s)) => {
                ReaderSchema::Subject(s.name.clone(), s.version)
            }
            Some(ReaderSchemaConfig::File(f)) => {
                let path = file.parent().unwrap_or(Path::new(".")).join(f);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "upcasters.{event_type}.reader_schema: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                let schema = Schema::parse_str(&text).map_err(|e| {
                    format!(
                        "upcasters.{event_type}.reader_schema: {} is not an Avro schema: {e}",
                        path.display()
                    )
                })?;
                ReaderSchema::Parsed(Arc::new(schema))
            }
        };
        readers.insert(event_type.clone(), reader);
    }
    Ok(readers)
}
