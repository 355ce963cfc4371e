//! Builds a runnable pipeline from its file: the one place where connectors are chosen.
//! Adding a sink means one new match arm here.

use std::sync::Arc;

use sinkd_core::config::{PipelineFile, SinkConfig, SourceMode};
use sinkd_core::decode::DeadLetters;
use sinkd_core::projection::Projector;
use sinkd_core::runtime::{Pipeline, PipelineStats, Policies};
use sinkd_core::sink::Sink;
use sinkd_kafka::{AvroEventDecoder, KafkaDeadLetters, KafkaSource, Registry};
use sinkd_mongodb::MongoSink;
use sinkd_postgres::PostgresSink;
use sinkd_tantivy::{SearchHandle, TantivySink};

/// A pipeline ready to run, and what the REST API can ask of it.
pub struct Built {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Search, for a Tantivy pipeline.
    pub search: Option<SearchHandle>,
}

/// Connects the parts of a validated pipeline. Must run inside the tokio runtime.
pub fn build(p: &PipelineFile) -> Result<Built, String> {
    let mut search = None;
    let (sink, default_mode): (Box<dyn Sink>, SourceMode) = match &p.sink {
        SinkConfig::Postgres(cfg) => (
            Box::new(PostgresSink::new(cfg, &p.name, &p.key.columns)),
            SourceMode::Shared,
        ),
        SinkConfig::Mongodb(cfg) => (Box::new(MongoSink::new(cfg, &p.name)), SourceMode::Shared),
        // A local index per sidecar: every instance reads every partition.
        SinkConfig::Tantivy(cfg) => {
            let sink = TantivySink::new(cfg, &p.name);
            search = Some(sink.search_handle());
            (Box::new(sink), SourceMode::Replica)
        }
    };
    let mut kafka = p.source.kafka.clone();
    kafka.mode.get_or_insert(default_mode);
    let registry = Arc::new(Registry::new(&p.source.registry)?);
    let decoder = Arc::new(AvroEventDecoder::new(registry, p.source.kafka.key_format));
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
        KafkaSource::start(&kafka, &p.name, sink.checkpoint_reader(), queue).map_err(|e| e.0)?;
    let pipeline = Pipeline {
        name: p.name.clone(),
        source: Box::new(source),
        decoder,
        projector: Projector::new(p),
        sink,
        dead_letters,
        policies: Policies {
            on_error: p.on_error,
            unknown_events: p.unknown_events,
            event_type: p.event_type.clone(),
            event_version: p.event_version.clone(),
        },
        batch: p.batch.clone(),
        stats: Arc::new(PipelineStats::default()),
    };
    Ok(Built { pipeline, search })
}
