//! The checkpoint in each commit's payload:
//! `{"pipeline": "…", "offsets": [{"topic": "…", "partition": 0, "next": 42}]}`.
//! Documents and offsets become durable in the same commit, or neither does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sinkd_core::error::SinkError;
use sinkd_core::sink::{CheckpointReader, TopicPartition};
use tantivy::Index;

/// The payload of a commit.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Payload {
    /// The pipeline whose offsets these are.
    pub pipeline: String,
    /// Next offset per partition.
    pub offsets: Vec<Offset>,
}

/// One partition's next offset.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Offset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next: i64,
}

/// The offsets of `pipeline` in the last commit of the index, by (topic, partition).
pub fn read(index: &Index, pipeline: &str) -> Result<HashMap<(String, i32), i64>, SinkError> {
    let metas = index
        .load_metas()
        .map_err(|e| SinkError::Config(format!("cannot read the index's commit: {e}")))?;
    let Some(text) = metas.payload else {
        return Ok(HashMap::new());
    };
    let payload: Payload = serde_json::from_str(&text).map_err(|e| {
        SinkError::Config(format!("the index's commit payload is not sinkd's: {e}"))
    })?;
    if payload.pipeline != pipeline {
        return Ok(HashMap::new());
    }
    Ok(payload
        .offsets
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.next))
        .collect())
}

/// Reads the checkpoint straight from the index directory (no writer, no lock), for the
/// source's assignment, which may come before the sink has opened.
pub struct TantivyCheckpointReader {
    path: PathBuf,
    pipeline: String,
}

impl TantivyCheckpointReader {
    /// A reader for one index directory and pipeline.
    pub fn new(path: &str, pipeline: &str) -> Arc<TantivyCheckpointReader> {
        Arc::new(TantivyCheckpointReader {
            path: PathBuf::from(path),
            pipeline: pipeline.to_owned(),
        })
    }
}

#[async_trait]
impl CheckpointReader for TantivyCheckpointReader {
    async fn load(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, SinkError> {
        if !self.path.join("meta.json").exists() {
            return Ok(HashMap::new());
        }
        let index = Index::open_in_dir(&self.path)
            .map_err(|e| SinkError::Config(format!("cannot open the index: {e}")))?;
        let stored = read(&index, &self.pipeline)?;
        Ok(partitions
            .iter()
            .filter_map(|tp| {
                stored
                    .get(&(tp.0.to_string(), tp.1))
                    .map(|n| (tp.clone(), *n))
            })
            .collect())
    }
}
