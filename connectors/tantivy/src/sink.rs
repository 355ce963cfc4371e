//! [`TantivySink`]: one commit per batch, with the checkpoint in the commit's payload.
//!
//! An upsert deletes the key's term and adds the new document in the same commit. Merges
//! and increments start from the stored previous document (fields that are not stored
//! cannot be carried over). Every document keeps the position of its last event; an
//! operation whose event is not newer is skipped, so replays change nothing. Tantivy
//! allows one writer per directory: a second process fails to open it, which is the
//! fencing here.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{IndexFieldKind, TantivySinkConfig};
use async_trait::async_trait;
use sinkd_core::batch::{Compacted, Entry};
use sinkd_core::error::SinkError;
use sinkd_core::operation::Cell;
use sinkd_core::sink::{CheckpointAdvance, CheckpointReader, Sink, Target};
use sinkd_core::value::{to_json, unwrap_union};
use tantivy::schema::{Field, IndexRecordOption, OwnedValue, Value};
use tantivy::{
    DocAddress, DocSet, IndexReader, IndexWriter, ReloadPolicy, Searcher, TERMINATED,
    TantivyDocument, Term,
};
use tracing::info;

use crate::checkpoint::{self, TantivyCheckpointReader};
use crate::error::classify;
use crate::index::{self, GUARD_OFFSET, GUARD_PARTITION, GUARD_TOPIC};
use crate::search::{SearchHandle, Searchable};
use crate::{layout, values};

struct Open {
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    key: Field,
    fields: HashMap<String, (Field, IndexFieldKind)>,
    guard: (Field, Field, Field),
}

/// An embedded Tantivy index as a read model.
pub struct TantivySink {
    cfg: TantivySinkConfig,
    pipeline: String,
    open: Option<Open>,
    offsets: HashMap<(String, i32), i64>,
    search: SearchHandle,
    reader: Arc<TantivyCheckpointReader>,
    target: Target,
}

impl TantivySink {
    /// A sink for one pipeline writing `target` (the live index or a rebuild's shadow);
    /// opens the index on [`Sink::open`]. A live sink publishes its reader to `search`.
    pub fn new(
        cfg: &TantivySinkConfig,
        pipeline: &str,
        target: Target,
        search: SearchHandle,
    ) -> TantivySink {
        TantivySink {
            reader: TantivyCheckpointReader::new(&cfg.path, target, pipeline),
            cfg: cfg.clone(),
            pipeline: pipeline.to_owned(),
            open: None,
            offsets: HashMap::new(),
            search,
            target,
        }
    }

    /// The handle the REST API searches through.
    pub fn search_handle(&self) -> SearchHandle {
        self.search.clone()
    }

    fn open_sync(&mut self) -> Result<(), SinkError> {
        let root = std::path::Path::new(&self.cfg.path);
        let dir = match self.target {
            Target::Live => layout::live_dir(root)?,
            Target::Shadow => layout::shadow_dir(root)?,
        };
        let index = index::open(&self.cfg, &dir)?;
        let writer = index
            .writer_with_num_threads(1, self.cfg.heap_mb.max(15) * 1024 * 1024)
            .map_err(|e| match e {
                // Retried: the holder may be a writer on its way out (the previous task, a
                // container being replaced); one sinkd writes an index directory.
                tantivy::TantivyError::LockFailure(..) => SinkError::Unavailable(format!(
                    "another writer holds the lock of the index in {}; waiting for it to \
                     let go (one sinkd writes an index directory)",
                    self.cfg.path
                )),
                other => classify("cannot open the index writer", other),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| classify("cannot open an index reader", e))?;
        let schema = index.schema();
        let field = |name: &str| {
            schema
                .get_field(name)
                .map_err(|e| classify("index field", e))
        };
        let fields = self
            .cfg
            .fields
            .iter()
            .map(|f| Ok((f.name.clone(), (field(&f.name)?, f.kind))))
            .collect::<Result<HashMap<_, _>, SinkError>>()?;
        let open = Open {
            key: field(&self.cfg.key)?,
            guard: (
                field(GUARD_TOPIC)?,
                field(GUARD_PARTITION)?,
                field(GUARD_OFFSET)?,
            ),
            fields,
            reader: reader.clone(),
            writer,
        };
        self.offsets = checkpoint::read(&index, &self.pipeline)?;
        if self.target == Target::Live {
            *self.search.inner.write().expect("lock") = Some(Searchable { index, reader });
        }
        self.open = Some(open);
        info!(pipeline = %self.pipeline, path = %dir.display(), "Tantivy index ready");
        Ok(())
    }

    fn write_sync(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError> {
        if self.open.is_none() {
            self.open_sync()?;
        }
        for a in advances {
            let stored = self
                .offsets
                .get(&(a.topic.to_string(), a.partition))
                .copied();
            if stored != a.expected {
                return Err(SinkError::Fenced {
                    topic: a.topic.to_string(),
                    partition: a.partition,
                    expected: a.expected,
                });
            }
        }
        let mut offsets = self.offsets.clone();
        for a in advances {
            offsets.insert((a.topic.to_string(), a.partition), a.next);
        }
        let open = self.open.as_mut().expect("opened");
        let written = write_open(open, entries, &self.pipeline, &offsets);
        match written {
            Ok(()) => self.offsets = offsets,
            Err(SinkError::Rejected { .. }) => {
                // One document's fault: nothing of the batch stays pending, and the
                // runtime writes it record by record to find that document.
                let _ = open.writer.rollback();
            }
            Err(_) => {
                // An index or disk failure may leave the writer unusable (a dead indexing
                // thread, a half-prepared commit): drop it, and the retry of the same batch
                // reopens the index from its last commit and its checkpoint.
                self.open = None;
            }
        }
        written
    }
}

/// Adds the batch and commits it with the checkpoint `offsets`, then shows it to searches.
fn write_open(
    open: &mut Open,
    entries: &[Entry],
    pipeline: &str,
    offsets: &HashMap<(String, i32), i64>,
) -> Result<(), SinkError> {
    let searcher = open.reader.searcher();
    // Stored documents are read in the order of their addresses: each compressed block of
    // the doc store is then decompressed once per batch, not once per key (the bench's
    // profile showed block decompression and its allocations leading the write).
    let mut located = entries
        .iter()
        .map(|e| {
            let key = key_text(&e.key);
            let term = Term::from_field_text(open.key, &key);
            Ok((locate(&searcher, &term)?, key, term, e))
        })
        .collect::<Result<Vec<_>, SinkError>>()?;
    located.sort_by_key(|(address, ..)| address.map(|a| (a.segment_ord, a.doc_id)));
    for (address, key, term, e) in located {
        let prev = match address {
            Some(a) => Some(
                searcher
                    .doc(a)
                    .map_err(|e| classify("read the stored document", e))?,
            ),
            None => None,
        };
        apply(open, key, term, prev, e)?;
    }
    checkpoint::commit(
        &mut open.writer,
        pipeline,
        offsets
            .iter()
            .map(|((t, p), next)| ((t.as_str(), *p), *next)),
    )?;
    open.reader
        .reload()
        .map_err(|e| classify("reload the reader", e))
}

fn key_text(key: &[Cell]) -> String {
    match key.first().map(|c| unwrap_union(&c.value)) {
        Some(apache_avro::types::Value::String(s)) => s.clone(),
        Some(other) => match to_json(other) {
            serde_json::Value::String(s) => s,
            json => json.to_string(),
        },
        None => String::new(),
    }
}

/// Where the live document of a key is, if it has one: the key's postings in each
/// segment, skipping deleted documents (an upsert deletes the key's term before adding).
/// A direct postings lookup, without a query's scoring and collector.
fn locate(searcher: &Searcher, term: &Term) -> Result<Option<DocAddress>, SinkError> {
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let inverted = segment
            .inverted_index(term.field())
            .map_err(|e| classify("look up the stored document", e))?;
        let postings = inverted
            .read_postings(term, IndexRecordOption::Basic)
            .map_err(|e| classify("look up the stored document", e.into()))?;
        let Some(mut postings) = postings else {
            continue;
        };
        let alive = segment.alive_bitset();
        let mut doc = postings.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                return Ok(Some(DocAddress::new(ord as u32, doc)));
            }
            doc = postings.advance();
        }
    }
    Ok(None)
}

/// A dead indexing thread is reported only as dead; its own error (most often a full
/// disk) comes out when the writer joins its threads, which preparing a commit does. The
/// writer is discarded after any such failure (see `write_sync`), so nothing prepared here
/// is ever committed.
fn thread_failure(
    writer: &mut IndexWriter<TantivyDocument>,
    what: &str,
    e: tantivy::TantivyError,
) -> SinkError {
    if let tantivy::TantivyError::ErrorInThread(_) = e
        && let Err(cause) = writer.prepare_commit()
    {
        return classify(what, cause);
    }
    classify(what, e)
}

/// A value of this document that its field cannot take: the document's own fault.
fn rejected(column: &str, message: String) -> SinkError {
    SinkError::Rejected {
        detail: format!("field `{column}`: {message}"),
    }
}

/// Whether the stored document already reflects an event at or after this one.
fn stale(open: &Open, prev: &TantivyDocument, e: &Entry) -> bool {
    let (t, p, o) = open.guard;
    let same_topic = prev
        .get_first(t)
        .and_then(|v| v.as_str().map(str::to_owned))
        .as_deref()
        == Some(&*e.position.topic);
    let same_partition =
        prev.get_first(p).and_then(|v| v.as_i64()) == Some(e.position.partition as i64);
    let offset = prev.get_first(o).and_then(|v| v.as_i64());
    same_topic && same_partition && offset.is_some_and(|o| o >= e.position.offset)
}

/// Applies `e` to the key `key` (its `term`), whose stored document is `prev`.
fn apply(
    open: &mut Open,
    key: String,
    term: Term,
    prev: Option<TantivyDocument>,
    e: &Entry,
) -> Result<(), SinkError> {
    if prev.as_ref().is_some_and(|p| stale(open, p, e)) {
        return Ok(());
    }
    let (set, inc): (&[Cell], &[Cell]) = match &e.op {
        // Validation refuses `targets` with a Tantivy sink: an index is one target.
        Compacted::DeletePrefix => {
            return Err(SinkError::Incompatible(
                "a Tantivy index has no child targets to delete from".into(),
            ));
        }
        Compacted::Delete => {
            open.writer.delete_term(term);
            return Ok(());
        }
        Compacted::Replace(cells) => (cells, &[]),
        Compacted::Patch { set, inc } => (set, inc),
    };
    let touched = |name: &str| set.iter().chain(inc).any(|c| &*c.column == name);
    let mut doc = TantivyDocument::default();
    // A patch keeps every stored field it does not touch; a replace starts empty.
    if let (Some(prev), Compacted::Patch { .. }) = (&prev, &e.op) {
        for (name, (field, _)) in &open.fields {
            if *field != open.key && !touched(name) {
                for v in prev.get_all(*field) {
                    doc.add_field_value(*field, v);
                }
            }
        }
    }
    for c in set {
        if let Some((field, kind)) = open.fields.get(&*c.column).copied() {
            if field == open.key {
                continue;
            }
            if let Some(v) = values::convert(&c.value, kind).map_err(|m| rejected(&c.column, m))? {
                doc.add_field_value(field, &v);
            }
        }
    }
    for c in inc {
        if let Some((field, kind)) = open.fields.get(&*c.column).copied() {
            let Some(v) = values::convert(&c.value, kind).map_err(|m| rejected(&c.column, m))?
            else {
                continue;
            };
            let before: Option<OwnedValue> = prev
                .as_ref()
                .and_then(|p| p.get_first(field))
                .map(OwnedValue::from);
            let sum = values::add(before.as_ref(), &v).map_err(|m| rejected(&c.column, m))?;
            doc.add_field_value(field, &sum);
        }
    }
    doc.add_text(open.key, &key);
    let (t, p, o) = open.guard;
    doc.add_text(t, &*e.position.topic);
    doc.add_i64(p, e.position.partition as i64);
    doc.add_i64(o, e.position.offset);
    open.writer.delete_term(term);
    if let Err(e) = open.writer.add_document(doc) {
        return Err(thread_failure(&mut open.writer, "add the document", e));
    }
    Ok(())
}

#[async_trait]
impl Sink for TantivySink {
    async fn open(&mut self) -> Result<(), SinkError> {
        tokio::task::block_in_place(|| self.open_sync())
    }

    fn checkpoint_reader(&self) -> Arc<dyn CheckpointReader> {
        self.reader.clone()
    }

    async fn write(
        &mut self,
        entries: &[Entry],
        advances: &[CheckpointAdvance],
    ) -> Result<(), SinkError> {
        // Indexing and committing are CPU and disk work: off the async workers' hands.
        tokio::task::block_in_place(|| self.write_sync(entries, advances))
    }
}
