//! What the API reports about a pipeline: its state, and per partition the offset stored
//! in the sink, the high watermark, the lag and the event-time staleness.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use sinkd_core::event::TopicPartition;
use sinkd_core::runtime::PipelineStats;
use sinkd_kafka::Watermarks;

use super::rebuild::RebuildView;
use super::{ControlError, Controller, State};

/// Watermarks are read at most this often, however many clients ask.
const MARKS_TTL: Duration = Duration::from_secs(1);

/// A short-lived cache of the brokers' watermarks.
#[derive(Default)]
pub struct Marks {
    cached: tokio::sync::Mutex<Option<(Instant, HashMap<TopicPartition, Watermarks>)>>,
}

impl Marks {
    /// The watermarks of every partition, at most [`MARKS_TTL`] old.
    pub async fn get(
        &self,
        ctl: &Controller,
    ) -> Result<HashMap<TopicPartition, Watermarks>, ControlError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, marks)) = cached.as_ref()
            && at.elapsed() < MARKS_TTL
        {
            return Ok(marks.clone());
        }
        let kafka = ctl.kafka();
        let marks = tokio::task::spawn_blocking(move || kafka.watermarks())
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?
            .map_err(|e| ControlError::Unavailable(format!("Kafka: {e}")))?;
        *cached = Some((Instant::now(), marks.clone()));
        Ok(marks)
    }
}

/// One partition in a status.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset stored in the sink (`null`: nothing applied yet).
    pub sink_offset: Option<i64>,
    /// One past the last offset in Kafka.
    pub high_watermark: Option<i64>,
    /// Offsets not yet applied.
    pub lag: Option<i64>,
    /// Age of the last applied event when there is lag (0 without lag): how far behind
    /// in time the read model is. `null` when unknown (partition held elsewhere).
    pub staleness_seconds: Option<f64>,
    /// Whether this process holds the partition (shared mode spreads them).
    pub held_here: bool,
}

/// Counts since the daemon started.
#[derive(Clone, Debug, Serialize)]
pub struct Counts {
    /// Records taken from Kafka.
    pub consumed: u64,
    /// Records whose effect is in the sink.
    pub applied: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Records of undeclared types skipped.
    pub skipped: u64,
    /// Sink transactions.
    pub batches: u64,
}

/// A pipeline's status.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineStatus {
    /// Name.
    pub name: String,
    /// starting, running, paused, rebuilding or failed.
    pub state: &'static str,
    /// Why it failed.
    pub error: Option<String>,
    /// Sink kind.
    pub sink: &'static str,
    /// The live target.
    pub target: String,
    /// Counts.
    pub counts: Counts,
    /// Per partition (empty when Kafka or the sink could not be asked; see `problems`).
    pub partitions: Vec<PartitionStatus>,
    /// The current or last rebuild.
    pub rebuild: Option<RebuildView>,
    /// What could not be read for this status.
    pub problems: Vec<String>,
}

impl Controller {
    /// The state's name, with `rebuilding` while a rebuild runs.
    pub fn state_name(&self) -> &'static str {
        match self.state() {
            State::Failed(_) => "failed",
            State::Paused => "paused",
            _ if self.rebuilding() => "rebuilding",
            State::Starting => "starting",
            State::Running if !self.stats.connected.load(Ordering::Relaxed) => "starting",
            State::Running => "running",
        }
    }

    /// Whether `tp` is a partition of the pipeline's topics (from the watermark cache).
    pub async fn has_partition(&self, tp: &TopicPartition) -> Result<bool, ControlError> {
        Ok(self.marks.get(self).await?.contains_key(tp))
    }

    /// The best known end of every partition, and the live checkpoints. The end is the
    /// furthest of the brokers' watermark (ListOffsets), the high watermark the consumers
    /// (the live one and `also`'s) saw in fetch responses, and what is stored: some
    /// brokers' ListOffsets answer lags behind the log.
    pub async fn ends(
        &self,
        also: Option<&PipelineStats>,
    ) -> Result<(HashMap<TopicPartition, i64>, HashMap<TopicPartition, i64>), ControlError> {
        let marks = self.marks.get(self).await?;
        let partitions: Vec<TopicPartition> = marks.keys().cloned().collect();
        let stored = self.checkpoints().load(&partitions).await?;
        let mut seen = self.stats.partitions();
        if let Some(other) = also {
            for (tp, p) in other.partitions() {
                let e = seen.entry(tp).or_insert(p);
                e.high = e.high.max(p.high).max(p.next);
            }
        }
        let ends = partitions
            .into_iter()
            .map(|tp| {
                let local = seen.get(&tp);
                let end = marks[&tp]
                    .high
                    .max(local.and_then(|p| p.high.max(p.next)).unwrap_or(0))
                    .max(stored.get(&tp).copied().unwrap_or(0));
                (tp, end)
            })
            .collect();
        Ok((ends, stored))
    }

    /// Every partition with its offsets, lag and staleness.
    pub async fn partition_status(&self) -> Result<Vec<PartitionStatus>, ControlError> {
        let marks = self.marks.get(self).await?;
        let (ends, stored) = self.ends(None).await?;
        let mut partitions: Vec<TopicPartition> = ends.keys().cloned().collect();
        partitions.sort();
        let here = self.stats.partitions();
        let now_ms = chrono::Utc::now().timestamp_millis();
        Ok(partitions
            .into_iter()
            .map(|tp| {
                let local = here.get(&tp);
                let sink_offset = match (stored.get(&tp).copied(), local.and_then(|p| p.next)) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                let high = ends.get(&tp).copied();
                let low = marks.get(&tp).map_or(0, |w| w.low);
                let lag = high.map(|h| (h - sink_offset.unwrap_or(low).max(low)).max(0));
                let staleness_seconds = match lag {
                    Some(0) => Some(0.0),
                    _ => local
                        .and_then(|p| p.last_event_ms)
                        .map(|ts| ((now_ms - ts).max(0)) as f64 / 1000.0),
                };
                PartitionStatus {
                    topic: tp.0.to_string(),
                    partition: tp.1,
                    sink_offset,
                    high_watermark: high,
                    lag,
                    staleness_seconds,
                    held_here: local.is_some(),
                }
            })
            .collect())
    }

    /// The full status.
    pub async fn status(&self) -> PipelineStatus {
        let mut problems = Vec::new();
        let partitions = match self.partition_status().await {
            Ok(p) => p,
            Err(e) => {
                problems.push(sinkd_core::config::redact_text(&e.to_string()));
                Vec::new()
            }
        };
        let s = &self.stats;
        PipelineStatus {
            name: self.name.clone(),
            state: self.state_name(),
            error: match self.state() {
                State::Failed(e) => Some(sinkd_core::config::redact_text(&e)),
                _ => None,
            },
            sink: self.file().sink.kind(),
            target: self.admin.describe(sinkd_core::sink::Target::Live),
            counts: Counts {
                consumed: s.consumed.load(Ordering::Relaxed),
                applied: s.applied.load(Ordering::Relaxed),
                dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
                skipped: s.skipped.load(Ordering::Relaxed),
                batches: s.batches.load(Ordering::Relaxed),
            },
            partitions,
            rebuild: self.rebuild_status().map(|r| r.view()),
            problems,
        }
    }
}
