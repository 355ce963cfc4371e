//! How far a rebuild is: offsets applied since its start, offsets to the end of the log,
//! and what is left, from the counters of the task that fills the target.

use std::collections::HashMap;

use sinkd_core::event::TopicPartition;
use sinkd_core::runtime::PipelineStats;

use super::host::Host;

/// Where a rebuild's progress counts from.
pub struct Origin {
    /// The start offsets.
    pub from: Vec<(TopicPartition, i64)>,
    /// Stored positions of partitions the task does not hold yet (a resumed shadow's).
    pub known: HashMap<TopicPartition, i64>,
}

impl Origin {
    /// Every partition rebuilt.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.from.iter().map(|(tp, _)| tp.clone()).collect()
    }
}

/// A count of offsets over every partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Applied since the start offsets.
    pub done: i64,
    /// From the start offsets to the end of the log.
    pub total: i64,
    /// From what is applied to the end of the log.
    pub lag: i64,
}

/// The progress of the task counted by `stats` (see [`Host::ends`] for the end).
pub async fn measure<H: Host>(
    host: &H,
    origin: &Origin,
    stats: &PipelineStats,
) -> Result<Progress, String> {
    let ends = host.ends(Some(stats)).await?;
    let applied = stats.partitions();
    let mut p = Progress {
        done: 0,
        total: 0,
        lag: 0,
    };
    for (tp, start) in &origin.from {
        let end = ends.get(tp).copied().unwrap_or(*start);
        // Before the task holds a partition, what the target stored for it.
        let next = applied
            .get(tp)
            .and_then(|p| p.next)
            .or_else(|| origin.known.get(tp).copied())
            .unwrap_or(*start);
        p.done += (next - start).max(0);
        p.total += (end - start).max(0);
        p.lag += (end - next).max(0);
    }
    Ok(p)
}

/// Whether the task counted by `stats` has not yet applied up to `offsets`.
pub fn behind(stats: &PipelineStats, offsets: &HashMap<TopicPartition, i64>) -> bool {
    let applied = stats.partitions();
    offsets
        .iter()
        .any(|(tp, next)| applied.get(tp).and_then(|p| p.next).unwrap_or(0) < *next)
}
