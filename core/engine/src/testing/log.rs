//! A partitioned log in memory, read through [`MemSource`] as a Kafka consumer reads a
//! topic: in offset order per partition, from wherever it was sought to, with partition
//! assignments and revocations delivered in line with the records.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::event::TopicPartition;
use crate::event::{RawRecord, SourcePosition};
use crate::source::{Assigned, Source, SourceError, SourceItem};

#[derive(Default)]
struct State {
    partitions: BTreeMap<TopicPartition, Vec<RawRecord>>,
    /// The next offset to deliver, per assigned partition.
    positions: HashMap<TopicPartition, i64>,
    control: VecDeque<SourceItem>,
    seeks: Vec<(TopicPartition, i64)>,
    committed: HashMap<TopicPartition, i64>,
    /// Errors the next reads return, one each, before any item.
    read_faults: VecDeque<SourceError>,
    /// Errors the next seeks return, one each (a failed seek moves nothing).
    seek_faults: VecDeque<SourceError>,
}

/// The log; cheap to clone, every clone sees the same records.
#[derive(Clone)]
pub struct MemLog {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for MemLog {
    fn default() -> Self {
        MemLog {
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl MemLog {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state.lock().expect("log lock"));
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// Appends a record with value `value` and key `key` to a partition; returns its offset.
    pub fn append(&self, tp: &TopicPartition, key: &str, value: &[u8]) -> i64 {
        self.with(|s| {
            let records = s.partitions.entry(tp.clone()).or_default();
            let offset = records.len() as i64;
            records.push(RawRecord {
                position: SourcePosition {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset,
                },
                timestamp_ms: Some(1_700_000_000_000 + offset),
                key: Some(key.as_bytes().to_vec()),
                value: Some(value.to_vec()),
                headers: Vec::new(),
            });
            offset
        })
    }

    /// Assigns partitions to the reader, each starting at `stored` (what the sink holds,
    /// as a real source loads it at assignment), or at 0.
    pub fn assign(&self, partitions: &[(TopicPartition, Option<i64>)]) {
        self.with(|s| {
            for (tp, stored) in partitions {
                s.positions.insert(tp.clone(), stored.unwrap_or(0));
            }
            s.control.push_back(SourceItem::Assigned(
                partitions
                    .iter()
                    .map(|(partition, stored)| Assigned {
                        partition: partition.clone(),
                        stored: *stored,
                    })
                    .collect(),
            ));
        });
    }

    /// Revokes partitions; the receiver resolves once the runtime has let go of them.
    pub fn revoke(&self, partitions: &[TopicPartition]) -> tokio::sync::oneshot::Receiver<()> {
        let (done, released) = tokio::sync::oneshot::channel();
        self.with(|s| {
            for tp in partitions {
                s.positions.remove(tp);
            }
            s.control.push_back(SourceItem::Revoked {
                partitions: partitions.to_vec(),
                done,
            });
        });
        released
    }

    /// Makes the next read return `e` (queued behind faults already injected).
    pub fn fail_read(&self, e: SourceError) {
        self.with(|s| s.read_faults.push_back(e));
    }

    /// Makes the next seek fail with `e` (queued behind faults already injected).
    pub fn fail_seek(&self, e: SourceError) {
        self.with(|s| s.seek_faults.push_back(e));
    }

    /// Every seek the runtime made, in order.
    pub fn seeks(&self) -> Vec<(TopicPartition, i64)> {
        self.state.lock().expect("log lock").seeks.clone()
    }

    /// The advisory commits the runtime made, latest per partition.
    pub fn committed(&self) -> HashMap<TopicPartition, i64> {
        self.state.lock().expect("log lock").committed.clone()
    }

    /// A reader of this log.
    pub fn source(&self) -> MemSource {
        MemSource {
            log: self.clone(),
            changes: self.changed.subscribe(),
        }
    }

    /// The next item to deliver, if any: control items first, then the lowest assigned
    /// partition with records left.
    fn take(&self) -> Option<Result<SourceItem, SourceError>> {
        let mut s = self.state.lock().expect("log lock");
        if let Some(e) = s.read_faults.pop_front() {
            return Some(Err(e));
        }
        if let Some(item) = s.control.pop_front() {
            return Some(Ok(item));
        }
        let State {
            partitions,
            positions,
            ..
        } = &mut *s;
        for (tp, records) in partitions.iter() {
            let Some(next) = positions.get_mut(tp) else {
                continue;
            };
            if let Some(record) = usize::try_from(*next).ok().and_then(|i| records.get(i)) {
                *next += 1;
                return Some(Ok(SourceItem::Record(record.clone())));
            }
        }
        None
    }
}

/// A reader of a [`MemLog`].
pub struct MemSource {
    log: MemLog,
    changes: watch::Receiver<u64>,
}

#[async_trait]
impl Source for MemSource {
    async fn next(&mut self) -> Result<SourceItem, SourceError> {
        loop {
            // Marked seen before looking, so a record appended meanwhile wakes us.
            self.changes.borrow_and_update();
            if let Some(item) = self.log.take() {
                return item;
            }
            // Cancel-safe: nothing was taken before this await.
            if self.changes.changed().await.is_err() {
                return Err(SourceError::Fatal("the log was dropped".into()));
            }
        }
    }

    fn committed(&self, offsets: &[(TopicPartition, i64)]) {
        let mut s = self.log.state.lock().expect("log lock");
        for (tp, next) in offsets {
            s.committed.insert(tp.clone(), *next);
        }
    }

    fn seek(&self, partition: &TopicPartition, offset: i64) -> Result<(), SourceError> {
        self.log.with(|s| {
            if let Some(e) = s.seek_faults.pop_front() {
                return Err(e);
            }
            s.seeks.push((partition.clone(), offset));
            if let Some(p) = s.positions.get_mut(partition) {
                *p = offset;
            }
            Ok(())
        })
    }

    fn high_watermark(&self, partition: &TopicPartition) -> Option<i64> {
        let s = self.log.state.lock().expect("log lock");
        s.partitions.get(partition).map(|r| r.len() as i64)
    }
}
