//! A compacted batch as server-guarded `update` / `delete` command statements: on a
//! standalone server, for deletes by key prefix, and wherever [`crate::guards`] cannot
//! decide a statement in sinkd.
//!
//! Every document carries `_sinkd: {t, p, o}`, the source position of the last event
//! applied to it. Each statement applies only if its event is newer (another topic or
//! partition, or a greater offset). The condition is evaluated inside an
//! aggregation-pipeline update (`$cond` on the stored position), not in the filter: a
//! filtered-out upsert would try to insert a second document with the same `_id` and fail
//! with E11000, which inside a transaction aborts the whole batch. So a stale statement is
//! a no-op, and E11000 means only a real race between writers inserting the same new key.
//!
//! Upserts replace the document (`$replaceWith`); merges set fields; increments add to
//! them (a missing field counts as zero); deletes remove the document, and deletes by key
//! prefix every document whose compound `_id` starts with the prefix.

use mongodb::bson::{Bson, Document, doc};
use sinkd_core::batch::{Compacted, Entry};
use sinkd_core::operation::Cell;

use crate::values::to_bson;

/// The field holding the source position of the last applied event.
pub const GUARD: &str = "_sinkd";

/// Most statements in one command: well under the server's 100,000 and the 16 MiB
/// command limit for documents of a few KiB.
pub const CHUNK: usize = 1_000;

/// `_id` of a key: the value itself for one key column, a sub-document (in key column
/// order) for several.
pub fn key_id(key: &[Cell]) -> Bson {
    match key {
        [one] => to_bson(&one.value, one.ty),
        many => Bson::Document(
            many.iter()
                .map(|c| (c.column.to_string(), to_bson(&c.value, c.ty)))
                .collect(),
        ),
    }
}

/// The guard of a document last written by `e`.
pub(crate) fn position(e: &Entry) -> Document {
    doc! {
        "t": e.position.topic.as_ref(),
        "p": e.position.partition,
        "o": e.position.offset,
    }
}

/// The aggregation expression "the incoming event is newer than the stored document".
fn newer(e: &Entry) -> Document {
    doc! {
        "$or": [
            { "$eq": [ { "$type": "$_sinkd.o" }, "missing" ] },
            { "$ne": [ "$_sinkd.t", { "$literal": e.position.topic.as_ref() } ] },
            { "$ne": [ "$_sinkd.p", e.position.partition ] },
            { "$lt": [ "$_sinkd.o", e.position.offset ] },
        ]
    }
}

fn literal(v: Bson) -> Document {
    doc! { "$literal": v }
}

/// The field a patch pipeline computes first, so the guard is evaluated once per document.
const NEWER_FIELD: &str = "_sinkd_newer";

/// The statement of one entry: a `delete` statement for a delete, an `update` statement
/// (with upsert) for a replace or a patch. Built per chunk just before sending, so a
/// batch's statements never all sit in memory at once.
pub fn statement(e: &Entry) -> Document {
    if e.op == Compacted::DeletePrefix {
        // The first fields of a compound `_id`: every document under the prefix.
        let mut q = Document::new();
        for c in &e.key {
            q.insert(format!("_id.{}", c.column), to_bson(&c.value, c.ty));
        }
        q.insert("$expr", newer(e));
        return doc! { "q": q, "limit": 0 };
    }
    let id = key_id(&e.key);
    match &e.op {
        Compacted::DeletePrefix => unreachable!("handled above"),
        Compacted::Delete => doc! {
            "q": { "_id": id, "$expr": newer(e) },
            "limit": 1,
        },
        Compacted::Replace(cells) => {
            let mut replacement = doc! { "_id": id.clone() };
            for c in cells.iter().filter(|c| &*c.column != "_id") {
                replacement.insert(c.column.to_string(), to_bson(&c.value, c.ty));
            }
            replacement.insert(GUARD, position(e));
            doc! {
                "q": { "_id": id },
                "u": [ { "$replaceWith": { "$cond": [ newer(e), literal(replacement.into()), "$$ROOT" ] } } ],
                "upsert": true,
            }
        }
        Compacted::Patch { set, inc } => {
            let flag = format!("${NEWER_FIELD}");
            let mut stage = Document::new();
            for c in set.iter().filter(|c| &*c.column != "_id") {
                let current = format!("${}", c.column);
                stage.insert(
                    c.column.to_string(),
                    doc! { "$cond": [ &flag, literal(to_bson(&c.value, c.ty)), current ] },
                );
            }
            for c in inc.iter().filter(|c| &*c.column != "_id") {
                let current = format!("${}", c.column);
                stage.insert(
                    c.column.to_string(),
                    doc! { "$cond": [
                        &flag,
                        { "$add": [ { "$ifNull": [ current.clone(), 0 ] }, literal(to_bson(&c.value, c.ty)) ] },
                        current,
                    ] },
                );
            }
            stage.insert(
                GUARD,
                doc! { "$cond": [ &flag, literal(position(e).into()), "$_sinkd" ] },
            );
            doc! {
                "q": { "_id": id },
                "u": [
                    { "$set": { NEWER_FIELD: newer(e) } },
                    { "$set": stage },
                    { "$unset": NEWER_FIELD },
                ],
                "upsert": true,
            }
        }
    }
}
