//! The checkpoint in each commit's payload:
//! `{"pipeline": "…", "offsets": [{"topic": "…", "partition": 0, "next": 42}]}`.
//! Documents and offsets become durable in the same commit, or neither does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sinkd_core::error::SinkError;
use sinkd_core::event::TopicPartition;
use sinkd_core::sink::{CheckpointReader, Target};
use tantivy::{Index, IndexWriter, TantivyDocument};

use crate::error::classify;
use crate::layout;

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

/// Commits the writer's pending changes with `offsets` ((topic, partition) → next) as the
/// checkpoint of `pipeline`: documents and offsets become durable together.
pub fn commit<'a>(
    writer: &mut IndexWriter<TantivyDocument>,
    pipeline: &str,
    offsets: impl Iterator<Item = ((&'a str, i32), i64)>,
) -> Result<(), SinkError> {
    let payload = Payload {
        pipeline: pipeline.to_owned(),
        offsets: offsets
            .map(|((topic, partition), next)| Offset {
                topic: topic.to_owned(),
                partition,
                next,
            })
            .collect(),
    };
    let mut prepared = writer
        .prepare_commit()
        .map_err(|e| classify("prepare the commit", e))?;
    prepared.set_payload(&serde_json::to_string(&payload).expect("payload serializes"));
    prepared.commit().map_err(|e| classify("commit", e))?;
    Ok(())
}

/// The offsets of `pipeline` in the last commit of the index, by (topic, partition).
pub fn read(index: &Index, pipeline: &str) -> Result<HashMap<(String, i32), i64>, SinkError> {
    let metas = index
        .load_metas()
        .map_err(|e| classify("read the index's last commit", e))?;
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
    root: PathBuf,
    target: Target,
    pipeline: String,
}

impl TantivyCheckpointReader {
    /// A reader for one index (`sink.tantivy.path`), target and pipeline. The folder is
    /// found on each load, as a rebuild's swap moves the live index.
    pub fn new(path: &str, target: Target, pipeline: &str) -> Arc<TantivyCheckpointReader> {
        Arc::new(TantivyCheckpointReader {
            root: PathBuf::from(path),
            target,
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
        let dir = match self.target {
            Target::Live => layout::live_dir(&self.root)?,
            Target::Shadow => layout::shadow_dir(&self.root)?,
        };
        if !dir.join("meta.json").exists() {
            return Ok(HashMap::new());
        }
        let index = Index::open_in_dir(&dir)
            .map_err(|e| classify(&format!("open the index in {}", dir.display()), e))?;
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
