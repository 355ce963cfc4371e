//! Builds a runnable pipeline from its file: the one place where connectors are chosen.
//! Adding a sink means one new match arm here.

use std::sync::Arc;

use sinkd_core::config::{PipelineFile, SinkConfig};
use sinkd_core::decode::DeadLetters;
use sinkd_core::projection::Projector;
use sinkd_core::runtime::{Pipeline, PipelineStats, Policies};
use sinkd_core::sink::Sink;
use sinkd_kafka::{AvroEventDecoder, KafkaDeadLetters, KafkaSource, Registry};
use sinkd_mongodb::MongoSink;
use sinkd_postgres::PostgresSink;

/// Connects the parts of a validated pipeline. Must run inside the tokio runtime.
pub fn build(p: &PipelineFile) -> Result<Pipeline, String> {
    let sink: Box<dyn Sink> = match &p.sink {
        SinkConfig::Postgres(cfg) => Box::new(PostgresSink::new(cfg, &p.name, &p.key.columns)),
        SinkConfig::Mongodb(cfg) => Box::new(MongoSink::new(cfg, &p.name)),
    };
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
    let source = KafkaSource::start(&p.source.kafka, &p.name, sink.checkpoint_reader(), queue)
        .map_err(|e| e.0)?;
    Ok(Pipeline {
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
    })
}
