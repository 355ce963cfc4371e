//! What happens to one record: redelivery filter, decode (retrying while the registry is
//! unavailable), identity, upcasting and projection (see `transform`), and the bad-record
//! policies.

use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Backoff, Runner, Stop};
use crate::config::{BadRecordPolicy, UnknownEventPolicy};
use crate::dead_letter::{DeadLetterCause, DeadLetterError};
use crate::error::{ErrorClass, PipelineError, RecordError};
use crate::event::TopicPartition;
use crate::event::{Event, RawRecord};
use crate::operation::Op;

impl Runner {
    /// Takes one record into the batch, or drops it as a redelivery.
    pub(super) async fn accept(&mut self, raw: RawRecord) -> Result<(), Stop> {
        let tp: TopicPartition = (raw.position.topic.clone(), raw.position.partition);
        let Some(state) = self.partitions.get_mut(&tp) else {
            debug!(pipeline = %self.name, position = %raw.position, "record of a partition not assigned here; dropped");
            return Ok(());
        };
        if raw.position.offset < state.next {
            debug!(pipeline = %self.name, position = %raw.position, "redelivered record below the checkpoint; dropped");
            return Ok(());
        }
        state.next = raw.position.offset + 1;
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        let lane = self.lane_of(&tp);
        let has_op = match self.to_ops(&raw).await? {
            Some(ops) => match self.lanes[lane].pending.compactor.push_all(ops) {
                Ok(()) => true,
                Err(detail) => {
                    let e = RecordError::Projection {
                        event_type: "increment".into(),
                        detail,
                    };
                    self.bad_record(&raw, &e, "bad_record").await?;
                    false
                }
            },
            None => false,
        };
        let pending = &mut self.lanes[lane].pending;
        pending.advances.insert(tp, raw.position.offset + 1);
        pending.started.get_or_insert_with(Instant::now);
        pending.records.push((raw, has_op));
        Ok(())
    }

    /// Decodes and projects one record, applying the policies. `None`: nothing to apply
    /// (skipped or dead-lettered), but the offset advances.
    pub(super) async fn to_ops(&self, raw: &RawRecord) -> Result<Option<Vec<Op>>, Stop> {
        let event = match self.decode_waiting(raw).await? {
            Ok(event) => event,
            Err(e) if e.class() == ErrorClass::Fatal => {
                return Err(self.fatal(format!("at {}: {e}", raw.position)));
            }
            Err(e) => {
                self.bad_record(raw, &e, "bad_record").await?;
                return Ok(None);
            }
        };
        let event = match self.transform.prepare(raw, event) {
            Ok(event) => event,
            Err(e) => {
                self.bad_record(raw, &e, "bad_record").await?;
                return Ok(None);
            }
        };
        match self.transform.project(event) {
            Ok(ops) => Ok(Some(ops)),
            Err(e @ (RecordError::UnknownEventType { .. } | RecordError::Unmatched { .. })) => {
                match self.policies.unknown_events {
                    UnknownEventPolicy::Skip => {
                        debug!(pipeline = %self.name, position = %raw.position, error = %e,
                           "event skipped per unknown_events");
                        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        Ok(None)
                    }
                    UnknownEventPolicy::Fail => Err(self.stop_at(raw, &e)),
                    UnknownEventPolicy::DeadLetter => {
                        self.dead_letter(raw, &e, "unknown_event_type").await?;
                        Ok(None)
                    }
                }
            }
            Err(e) => {
                self.bad_record(raw, &e, "bad_record").await?;
                Ok(None)
            }
        }
    }

    /// Decodes and projects a record again, for the record-by-record fallback. Only
    /// called for records that produced an operation the first time, so decoding and
    /// projection are deterministic; a registry that is briefly unavailable is waited
    /// for, as on the first pass. Any other failure stops the pipeline: applying nothing
    /// and moving the offset on would lose the record.
    pub(super) async fn reproject(&self, raw: &RawRecord) -> Result<Vec<Op>, Stop> {
        let decoded = self
            .decode_waiting(raw)
            .await?
            .map_err(|e| self.changed_on_second_pass(raw, &e))?;
        self.transform
            .prepare(raw, decoded)
            .and_then(|event| self.transform.project(event))
            .map_err(|e| self.changed_on_second_pass(raw, &e))
    }

    /// Decodes a record, waiting out a registry that is unavailable (never skipping the
    /// record). Returns the first error that retrying cannot cure, for the caller to route.
    async fn decode_waiting(&self, raw: &RawRecord) -> Result<Result<Event, RecordError>, Stop> {
        let mut backoff = Backoff::new();
        loop {
            match self.decoder.decode(raw).await {
                Err(e) if e.class() == ErrorClass::Retriable => {
                    let wait = backoff.wait();
                    warn!(pipeline = %self.name, position = %raw.position, error = %e, retry_in = ?wait,
                          "cannot decode yet; retrying the same record");
                    self.retry_after(wait).await?;
                }
                other => return Ok(other),
            }
        }
    }

    fn changed_on_second_pass(&self, raw: &RawRecord, e: &RecordError) -> Stop {
        self.fatal(format!(
            "at {}: the record decoded the first time but not when written alone: {e}",
            raw.position
        ))
    }

    pub(super) fn stop_at(&self, raw: &RawRecord, e: &dyn std::fmt::Display) -> Stop {
        Stop::Failed(PipelineError::BadRecord {
            pipeline: self.name.clone(),
            position: raw.position.to_string(),
            cause: e.to_string(),
        })
    }

    /// Routes a bad record per the `on_error` policy.
    pub(super) async fn bad_record(
        &self,
        raw: &RawRecord,
        e: &RecordError,
        class: &'static str,
    ) -> Result<(), Stop> {
        match self.policies.on_error {
            BadRecordPolicy::Fail => Err(self.stop_at(raw, e)),
            BadRecordPolicy::DeadLetter => self.dead_letter(raw, e, class).await,
        }
    }

    /// Sends a record to the dead-letter topic, retrying until the broker has it. A topic
    /// that refuses it stops the pipeline at the record: neither applied nor stored, its
    /// offset must not move.
    async fn dead_letter(
        &self,
        raw: &RawRecord,
        e: &RecordError,
        class: &'static str,
    ) -> Result<(), Stop> {
        let Some(dlq) = &self.dead_letters else {
            return Err(self.stop_at(raw, e));
        };
        let cause = DeadLetterCause {
            class,
            code: e.code(),
            message: e.to_string(),
        };
        let mut backoff = Backoff::new();
        loop {
            match dlq.send(raw, &cause).await {
                Ok(()) => {
                    warn!(pipeline = %self.name, position = %raw.position, error = %e, "record dead-lettered");
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(refused @ DeadLetterError::Refused(_)) => {
                    return Err(self.stop_at(raw, &format!("{e}; {refused}")));
                }
                Err(err @ DeadLetterError::Unavailable(_)) => {
                    let wait = backoff.wait();
                    warn!(pipeline = %self.name, position = %raw.position, error = %err, retry_in = ?wait,
                          "dead letter not stored; retrying");
                    self.retry_after(wait).await?;
                }
            }
        }
    }
}
