//! A keyed store in memory that owns its checkpoints, written through [`MemSink`] with the
//! same contract as the real sinks: a batch and its checkpoint advance apply together or
//! not at all, the advance is a compare-and-set on the stored offset, and every row keeps
//! the position of its last event so a replay changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use apache_avro::types::Value;
use async_trait::async_trait;

use crate::batch::{Compacted, Entry};
use crate::error::SinkError;
use crate::event::SourcePosition;
use crate::event::TopicPartition;
use crate::sink::{CheckpointAdvance, CheckpointReader, Reset, Sink, Target, TargetAdmin};
use crate::value::{add, unwrap_union};

/// A fault the next write meets.
pub enum Fault {
    /// The write fails with this error, applying nothing.
    Fail(SinkError),
    /// The write waits until the receiver resolves (or its sender is dropped), then goes on.
    Stall(tokio::sync::oneshot::Receiver<()>),
}

/// A row: its columns and the position of the last event applied to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Column values.
    pub columns: BTreeMap<String, Value>,
    /// The row guard.
    pub position: SourcePosition,
}

#[derive(Default)]
struct State {
    rows: BTreeMap<String, Row>,
    checkpoints: HashMap<TopicPartition, i64>,
    faults: VecDeque<Fault>,
    rejected_keys: HashSet<String>,
    /// Every write call, applied or not.
    attempts: usize,
    /// Writes that applied.
    commits: usize,
}

/// The store; cheap to clone, every clone sees the same rows.
#[derive(Clone, Default)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
}

impl MemStore {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("store lock"))
    }

    /// A sink writing this store.
    pub fn sink(&self) -> MemSink {
        MemSink {
            store: self.clone(),
        }
    }

    /// Queues a fault for the next write that has none queued before it.
    pub fn inject(&self, fault: Fault) {
        self.with(|s| s.faults.push_back(fault));
    }

    /// From now on, a batch holding this key is rejected as a whole (as a constraint
    /// violation fails a set-based statement).
    pub fn reject_key(&self, key: &str) {
        self.with(|s| s.rejected_keys.insert(key.to_owned()));
    }

    /// The row of a key.
    pub fn row(&self, key: &str) -> Option<Row> {
        self.with(|s| s.rows.get(key).cloned())
    }

    /// A column of a key's row as an integer.
    pub fn int(&self, key: &str, column: &str) -> Option<i64> {
        self.row(key)
            .and_then(|r| crate::value::integer(r.columns.get(column)?))
    }

    /// Every key held.
    pub fn keys(&self) -> Vec<String> {
        self.with(|s| s.rows.keys().cloned().collect())
    }

    /// The stored next offset of a partition.
    pub fn checkpoint(&self, tp: &TopicPartition) -> Option<i64> {
        self.with(|s| s.checkpoints.get(tp).copied())
    }

    /// Every stored checkpoint.
    pub fn checkpoints(&self) -> HashMap<TopicPartition, i64> {
        self.with(|s| s.checkpoints.clone())
    }

    /// Moves a checkpoint as another writer would (between this writer's batches).
    pub fn set_checkpoint(&self, tp: &TopicPartition, next: i64) {
        self.with(|s| s.checkpoints.insert(tp.clone(), next));
    }

    /// Takes `other`'s rows and checkpoints as this store's, leaving `other` empty (a
    /// swap: both locks are held, so no write sees half of it).
    pub fn take_from(&self, other: &MemStore) {
        let mut mine = self.state.lock().expect("store lock");
        let mut theirs = other.state.lock().expect("store lock");
        mine.rows = std::mem::take(&mut theirs.rows);
        mine.checkpoints = std::mem::take(&mut theirs.checkpoints);
    }

    /// How many writes were attempted and how many applied.
    pub fn writes(&self) -> (usize, usize) {
        self.with(|s| (s.attempts, s.commits))
    }

    /// Applies entries and advances, all or nothing (the transaction).
    fn apply(&self, entries: &[Entry], advances: &[CheckpointAdvance]) -> Result<(), SinkError> {
        self.with(|s| {
            for a in advances {
                let tp = (a.topic.clone(), a.partition);
                if s.checkpoints.get(&tp).copied() != a.expected {
                    return Err(SinkError::Fenced {
                        topic: a.topic.to_string(),
                        partition: a.partition,
                        expected: a.expected,
                    });
                }
            }
            let mut rows = s.rows.clone();
            for e in entries {
                let key = key_text(e);
                if s.rejected_keys.contains(&key) {
                    return Err(SinkError::Rejected {
                        detail: format!("key `{key}` violates a constraint"),
                    });
                }
                apply_entry(&mut rows, key, e)?;
            }
            s.rows = rows;
            for a in advances {
                s.checkpoints.insert((a.topic.clone(), a.partition), a.next);
            }
            s.commits += 1;
            Ok(())
        })
    }
}

fn key_text(e: &Entry) -> String {
    e.key
        .iter()
        .map(|c| match unwrap_union(&c.value) {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `stored` already reflects an event at or after `position`.
fn stale(stored: &SourcePosition, position: &SourcePosition) -> bool {
    stored.topic == position.topic
        && stored.partition == position.partition
        && stored.offset >= position.offset
}

fn apply_entry(rows: &mut BTreeMap<String, Row>, key: String, e: &Entry) -> Result<(), SinkError> {
    if rows
        .get(&key)
        .is_some_and(|r| stale(&r.position, &e.position))
    {
        return Ok(());
    }
    let reject = |detail: String| SinkError::Rejected { detail };
    match &e.op {
        // One target, one key column: the in-memory store has no child rows.
        Compacted::DeletePrefix => {
            return Err(SinkError::Incompatible(
                "the in-memory store has no child targets".into(),
            ));
        }
        Compacted::Delete => {
            rows.remove(&key);
        }
        Compacted::Replace(cells) => {
            let columns = cells
                .iter()
                .map(|c| (c.column.to_string(), c.value.clone()))
                .collect();
            rows.insert(
                key,
                Row {
                    columns,
                    position: e.position.clone(),
                },
            );
        }
        Compacted::Patch { set, inc } => {
            let row = rows.entry(key).or_insert_with(|| Row {
                columns: BTreeMap::new(),
                position: e.position.clone(),
            });
            for c in set {
                row.columns.insert(c.column.to_string(), c.value.clone());
            }
            for c in inc {
                let before = row.columns.get(&*c.column).cloned().unwrap_or(Value::Null);
                let sum = add(&before, &c.value).map_err(reject)?;
                row.columns.insert(c.column.to_string(), sum);
            }
            row.position = e.position.clone();
        }
    }
    Ok(())
}

/// Writes a [`MemStore`].
pub struct MemSink {
    store: MemStore,
}

#[async_trait]
impl Sink for MemSink {
    async fn open(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn checkpoint_reader(&self) -> Arc<dyn CheckpointReader> {
        Arc::new(self.store.clone())
    }

    async fn write(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError> {
        let fault = self.store.with(|s| {
            s.attempts += 1;
            s.faults.pop_front()
        });
        match fault {
            Some(Fault::Fail(e)) => return Err(e),
            Some(Fault::Stall(until)) => {
                let _ = until.await;
            }
            None => {}
        }
        self.store.apply(entries, advances)
    }
}

#[async_trait]
impl CheckpointReader for MemStore {
    async fn load(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, SinkError> {
        Ok(self.with(|s| {
            partitions
                .iter()
                .filter_map(|tp| s.checkpoints.get(tp).map(|n| (tp.clone(), *n)))
                .collect()
        }))
    }
}

/// The live target only: the store has no shadow to rebuild into.
#[async_trait]
impl TargetAdmin for MemStore {
    fn describe(&self, target: Target) -> String {
        format!("the in-memory store ({target:?})")
    }

    async fn shadow_exists(&self) -> Result<bool, SinkError> {
        Ok(false)
    }

    async fn drop_shadow(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn set_shadow_ticket(&self, _ticket: &str) -> Result<(), SinkError> {
        Err(no_shadow())
    }

    async fn shadow_ticket(&self) -> Result<Option<String>, SinkError> {
        Ok(None)
    }

    async fn swap_in_shadow(&self) -> Result<(), SinkError> {
        Err(no_shadow())
    }

    async fn reset(&self, target: Target, to: Reset<'_>) -> Result<(), SinkError> {
        let Reset { truncate, offsets } = to;
        if target == Target::Shadow {
            return Err(no_shadow());
        }
        self.with(|s| {
            if truncate {
                s.rows.clear();
            }
            s.checkpoints = offsets.iter().cloned().collect();
        });
        Ok(())
    }
}

fn no_shadow() -> SinkError {
    SinkError::Incompatible("the in-memory store has no shadow target".into())
}
