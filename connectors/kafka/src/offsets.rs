//! Offsets the control plane asks the brokers about: partitions of the topics, watermarks
//! (for lag and rebuild progress) and the offsets of a point in time (offset resets,
//! rebuilds from a timestamp). A group-less consumer that never fetches records; every
//! call blocks on the network, so async callers run it in `spawn_blocking`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sinkd_core::config::KafkaSourceConfig;
use sinkd_core::event::TopicPartition;
use sinkd_core::source::SourceError;

use crate::client::base_config;
use crate::errors::classify;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A partition's retained range: `low` is the first offset, `high` one past the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// First retained offset.
    pub low: i64,
    /// One past the last offset (the high watermark).
    pub high: i64,
}

/// A point in every partition of the topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The first retained offset.
    Earliest,
    /// The end (the high watermark).
    Latest,
    /// The first offset at or after this time (ms since the epoch).
    Time(i64),
}

/// Broker queries for one pipeline's topics.
pub struct KafkaOffsets {
    consumer: BaseConsumer,
    topics: Vec<String>,
}

impl KafkaOffsets {
    /// A client for the pipeline's brokers and topics.
    pub fn new(cfg: &KafkaSourceConfig) -> Result<KafkaOffsets, SourceError> {
        let mut c = base_config(cfg);
        // Needed by librdkafka for a consumer handle; this one never joins the group.
        c.set("group.id", "sinkd-control")
            .set("enable.auto.commit", "false");
        let consumer = c
            .create()
            .map_err(|e| SourceError::Fatal(format!("cannot create the Kafka client: {e}")))?;
        Ok(KafkaOffsets {
            consumer,
            topics: cfg.topics.clone(),
        })
    }

    /// Every partition of the pipeline's topics.
    pub fn partitions(&self) -> Result<Vec<TopicPartition>, SourceError> {
        let mut out = Vec::new();
        for topic in &self.topics {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), TIMEOUT)
                .map_err(|e| classify(&format!("cannot read metadata of {topic}"), &e))?;
            for t in md.topics() {
                out.extend(t.partitions().iter().map(|p| (Arc::from(t.name()), p.id())));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The watermarks of every partition.
    pub fn watermarks(&self) -> Result<HashMap<TopicPartition, Watermarks>, SourceError> {
        let mut out = HashMap::new();
        for tp in self.partitions()? {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&tp.0, tp.1, TIMEOUT)
                .map_err(|e| {
                    classify(&format!("cannot read the offsets of {}/{}", tp.0, tp.1), &e)
                })?;
            out.insert(tp, Watermarks { low, high });
        }
        Ok(out)
    }

    /// The offset of every partition at `position`, sorted by partition.
    pub fn offsets_at(
        &self,
        position: Position,
    ) -> Result<Vec<(TopicPartition, i64)>, SourceError> {
        let pick = |low: bool| {
            self.watermarks().map(|m| {
                let mut v: Vec<_> = m
                    .into_iter()
                    .map(|(tp, w)| (tp, if low { w.low } else { w.high }))
                    .collect();
                v.sort();
                v
            })
        };
        match position {
            Position::Earliest => pick(true),
            Position::Latest => pick(false),
            Position::Time(ms) => self.at_time(ms),
        }
    }

    /// For every partition, the first offset whose record timestamp is at or after
    /// `timestamp_ms` (the high watermark when there is none yet).
    pub fn at_time(&self, timestamp_ms: i64) -> Result<Vec<(TopicPartition, i64)>, SourceError> {
        let marks = self.watermarks()?;
        let mut tpl = TopicPartitionList::new();
        for tp in marks.keys() {
            tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(timestamp_ms))
                .map_err(|e| classify("cannot build the offset lookup", &e))?;
        }
        let found = self
            .consumer
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(|e| classify("cannot look up offsets by time", &e))?;
        let mut out: Vec<(TopicPartition, i64)> = found
            .elements()
            .iter()
            .map(|e| {
                let tp: TopicPartition = (Arc::from(e.topic()), e.partition());
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    // No record at or after that time: start at the end.
                    _ => marks.get(&tp).map_or(0, |w| w.high),
                };
                (tp, offset)
            })
            .collect();
        out.sort();
        Ok(out)
    }
}
