//! Builds a runnable pipeline from its file. The sink comes from the connector the file's
//! `sink:` section names (`sinkd_connectors::connectors`); the source, decoder and dead
//! letters are Kafka's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema;
use sinkd_core::config::schema_check::check_reader;
use sinkd_core::config::{PipelineFile, ReaderSchemaConfig, SourceMode};
use sinkd_core::connector::SinkContext;
use sinkd_core::dead_letter::DeadLetters;
use sinkd_core::runtime::{Pipeline, PipelineStats, Policies};
use sinkd_core::sink::{CheckpointReader, Target, TargetAdmin};
use sinkd_core::transform::Transform;
use sinkd_kafka::decoder::ReaderCheck;
use sinkd_kafka::{AvroEventDecoder, KafkaDeadLetters, KafkaSource, ReaderSchema, Registry};

/// Runs `f` with what the pipeline's sink is built for when writing `target`.
fn with_context<T>(p: &PipelineFile, target: Target, f: impl FnOnce(&SinkContext<'_>) -> T) -> T {
    let targets = p.sink_targets();
    f(&SinkContext {
        pipeline: &p.name,
        targets: &targets,
        target,
    })
}

/// What the control plane holds for a pipeline across restarts of its task: whole-target
/// operations and a reader of the live checkpoints.
pub fn live_target(p: &PipelineFile) -> (Arc<dyn TargetAdmin>, Arc<dyn CheckpointReader>) {
    with_context(p, Target::Live, |ctx| {
        (p.sink.admin(ctx), p.sink.checkpoints(ctx))
    })
}

/// The checkpoints of a rebuild's shadow.
pub fn shadow_checkpoints(p: &PipelineFile) -> Arc<dyn CheckpointReader> {
    with_context(p, Target::Shadow, |ctx| p.sink.checkpoints(ctx))
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
    registry: Arc<Registry>,
) -> Result<Pipeline, String> {
    // One sink per writer, each with its own connection.
    let sinks: Vec<_> = (0..p.sink.parallelism().max(1))
        .map(|_| with_context(p, target, |ctx| p.sink.sink(ctx)))
        .collect();
    let default_mode = p.sink.default_mode();
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
            .with_readers(reader_schemas(p, file)?)
            .with_reader_check(reader_check(p)),
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
    let source = KafkaSource::start(&kafka, &name, sinks[0].checkpoint_reader(), queue)
        .map_err(|e| e.to_string())?;
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
        sinks,
        dead_letters,
        policies: Policies {
            on_error: p.on_error,
            unknown_events: p.unknown_events,
        },
        batch: p.batch.clone(),
        stats,
    })
}

/// The check of the pipeline's rules against each reader schema the decoder fetches
/// from the registry (files are checked when the pipeline is loaded).
pub fn reader_check(p: &PipelineFile) -> ReaderCheck {
    let rules = p.clone();
    Arc::new(move |event_type, schema, subject| {
        let problems = check_reader(&rules, event_type, schema, subject);
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems
                .into_iter()
                .map(|(field, message)| format!("{field}: {message}"))
                .collect::<Vec<_>>()
                .join("; ")),
        }
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
