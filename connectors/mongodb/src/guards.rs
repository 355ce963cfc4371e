//! Statements decided in sinkd from the stored guards, inside the batch's transaction.
//!
//! Each chunk first reads the `_sinkd` position (and the fields it increments) of its
//! documents with one `find` by `_id`, in the batch's transaction. An entry whose event is
//! not newer is dropped; the others go as plain updates: a replacement document, `$set`
//! and `$inc`, or a delete by `_id`. mongod then parses no aggregation pipeline per
//! statement, which the profile of the guarded statements showed to be most of its time
//! (see issue 17's note).
//!
//! Why reading first is as safe as the server-side guard: the reads and the writes see the
//! transaction's one snapshot, and a document another writer changes after that snapshot
//! makes our write of it fail with a write conflict, which aborts and retries the whole
//! batch. A new key another writer inserts first fails our upsert with E11000, handled as
//! for the guarded statements. Without transactions (a standalone server) there is no
//! snapshot to rely on, and every statement keeps its server-side guard.
//!
//! Whenever the stored document does not let sinkd decide exactly as the server would (an
//! unexpected guard, a field to increment holding null or a non-number, a column name
//! starting with `$`, a stored `_id` that does not match any entry byte for byte), the
//! entry goes as its server-guarded statement instead.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document, doc};
use mongodb::{ClientSession, Database};
use sinkd_core::batch::{Compacted, Entry};
use sinkd_core::error::SinkError;

use crate::classify;
use crate::statements::{GUARD, key_id, position, statement};
use crate::values::to_bson;

/// The stored documents of a chunk's keys, by the bytes of their `_id`.
pub struct Stored {
    by_id: HashMap<Vec<u8>, Document>,
    /// A returned `_id` matched no entry byte for byte (for example an integer key stored
    /// as another integer type): a missing entry may then exist after all.
    unmatched: bool,
}

fn id_bytes(id: &Bson) -> Vec<u8> {
    let mut out = Vec::new();
    // A one-field document always serializes.
    let _ = doc! { "_id": id.clone() }.to_writer(&mut out);
    out
}

/// Reads the guard and incremented fields of the documents of `entries` in `collection`.
pub async fn read(
    db: &Database,
    collection: &str,
    entries: &[&Entry],
    session: &mut ClientSession,
) -> Result<Stored, SinkError> {
    let mut keys = HashMap::with_capacity(entries.len());
    let mut ids = Vec::with_capacity(entries.len());
    let mut projection = doc! { GUARD: 1 };
    for e in entries {
        let id = key_id(&e.key);
        keys.insert(id_bytes(&id), ());
        ids.push(id);
        if let Compacted::Patch { inc, .. } = &e.op {
            // A projection refuses a `$…` or empty path; such an entry keeps its
            // server-side guard (see `decide`) and needs no stored value.
            for c in inc
                .iter()
                .filter(|c| !c.column.is_empty() && !c.column.starts_with('$'))
            {
                projection.insert(c.column.to_string(), 1);
            }
        }
    }
    let mut cursor = db
        .collection::<Document>(collection)
        .find(doc! { "_id": { "$in": ids } })
        .projection(projection)
        .batch_size(entries.len().max(1) as u32)
        .session(&mut *session)
        .await
        .map_err(|e| classify(&e))?;
    let mut stored = Stored {
        by_id: HashMap::with_capacity(entries.len()),
        unmatched: false,
    };
    while let Some(d) = cursor.next(&mut *session).await {
        let d = d.map_err(|e| classify(&e))?;
        let bytes = d.get("_id").map(id_bytes).unwrap_or_default();
        if keys.contains_key(&bytes) {
            stored.by_id.insert(bytes, d);
        } else {
            stored.unmatched = true;
        }
    }
    Ok(stored)
}

/// What sinkd knows of an entry's stored document.
enum Found<'a> {
    Missing,
    Document(&'a Document),
    /// sinkd cannot tell: the server decides.
    Unknown,
}

fn number(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

/// The types `$inc` and the guarded `$add` treat alike.
fn numeric(v: &Bson) -> bool {
    matches!(
        v,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_)
    )
}

fn negative_zero(v: &Bson) -> bool {
    match v {
        Bson::Double(d) => *d == 0.0 && d.is_sign_negative(),
        Bson::Decimal128(d) => d.to_string().starts_with("-0"),
        _ => false,
    }
}

/// Whether the event of `e` is newer than the stored guard, as the server-side `$or` of
/// [`crate::statements`] decides; `None` when the guard has a shape sinkd never writes.
fn newer(stored: &Document, e: &Entry) -> Option<bool> {
    let Some(Bson::Document(guard)) = stored.get(GUARD) else {
        return stored.get(GUARD).is_none().then_some(true);
    };
    let Some(offset) = guard.get("o") else {
        return Some(true);
    };
    let (Some(Bson::String(t)), Some(p), Some(o)) = (
        guard.get("t"),
        guard.get("p").and_then(number),
        number(offset),
    ) else {
        return None;
    };
    Some(
        t != e.position.topic.as_ref() || p != e.position.partition as i64 || o < e.position.offset,
    )
}

/// The statement for `e` given its stored document, or `None` when it changes nothing (the
/// event is stale, or it deletes a document that does not exist).
pub fn decide(e: &Entry, stored: &Stored) -> Option<Document> {
    if e.op == Compacted::DeletePrefix {
        return Some(statement(e));
    }
    let id = key_id(&e.key);
    let found = match stored.by_id.get(&id_bytes(&id)) {
        Some(d) => Found::Document(d),
        None if stored.unmatched => Found::Unknown,
        None => Found::Missing,
    };
    let prev = match found {
        Found::Unknown => return Some(statement(e)),
        Found::Missing => None,
        Found::Document(d) => match newer(d, e) {
            None => return Some(statement(e)),
            Some(false) => return None,
            Some(true) => Some(d),
        },
    };
    match &e.op {
        Compacted::DeletePrefix => unreachable!("handled above"),
        Compacted::Delete => prev.map(|_| doc! { "q": { "_id": id }, "limit": 1 }),
        Compacted::Replace(cells) => {
            if cells.iter().any(|c| c.column.starts_with('$')) {
                return Some(statement(e));
            }
            let mut replacement = doc! { "_id": id.clone() };
            for c in cells.iter().filter(|c| &*c.column != "_id") {
                replacement.insert(c.column.to_string(), to_bson(&c.value, c.ty));
            }
            replacement.insert(GUARD, position(e));
            Some(doc! { "q": { "_id": id }, "u": replacement, "upsert": true })
        }
        Compacted::Patch { set, inc } => {
            let odd_name = set
                .iter()
                .chain(inc)
                .any(|c| c.column.is_empty() || c.column.starts_with('$'));
            // `$inc` refuses a stored null where the guarded `$add` counts it as zero, and
            // types other than numbers (stored or added) are left to the server's own error.
            // `$inc` by zero leaves a negative zero as it is, where IEEE addition (`$add`,
            // and sinkd's compactor) makes it a positive zero.
            let odd_value = inc.iter().any(|c| {
                prev.and_then(|d| d.get(&*c.column))
                    .is_some_and(|v| !numeric(v) || negative_zero(v))
            });
            let overlap = inc.iter().any(|i| set.iter().any(|s| s.column == i.column));
            if odd_name || odd_value || overlap {
                return Some(statement(e));
            }
            let adds: Document = inc
                .iter()
                .filter(|c| &*c.column != "_id")
                .map(|c| (c.column.to_string(), to_bson(&c.value, c.ty)))
                .collect();
            if adds.iter().any(|(_, v)| !numeric(v)) {
                return Some(statement(e));
            }
            let mut fields = Document::new();
            for c in set.iter().filter(|c| &*c.column != "_id") {
                fields.insert(c.column.to_string(), to_bson(&c.value, c.ty));
            }
            fields.insert(GUARD, position(e));
            let mut update = doc! { "$set": fields };
            if !adds.is_empty() {
                update.insert("$inc", adds);
            }
            Some(doc! { "q": { "_id": id }, "u": update, "upsert": true })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use apache_avro::types::Value;
    use sinkd_core::event::SourcePosition;
    use sinkd_core::operation::Cell;
    use sinkd_core::schema::ColumnType;

    use super::*;

    fn cell(column: &str, value: Value) -> Cell {
        let ty = match value {
            Value::String(_) => ColumnType::String,
            _ => ColumnType::Long,
        };
        Cell {
            column: column.into(),
            ty,
            value,
        }
    }

    fn entry(key: &str, offset: i64, op: Compacted) -> Entry {
        Entry {
            target: 0,
            key: vec![cell("id", Value::String(key.into()))],
            op,
            position: SourcePosition {
                topic: Arc::from("orders"),
                partition: 3,
                offset,
            },
        }
    }

    fn stored(docs: Vec<Document>, unmatched: bool) -> Stored {
        Stored {
            by_id: docs
                .into_iter()
                .map(|d| (id_bytes(d.get("_id").unwrap()), d))
                .collect(),
            unmatched,
        }
    }

    fn at(key: &str, offset: i64) -> Document {
        doc! { "_id": key, "n": 5_i64, GUARD: { "t": "orders", "p": 3, "o": offset } }
    }

    fn server_guarded(statement: &Document) -> bool {
        matches!(statement.get("u"), Some(Bson::Array(_)))
            || statement.contains_key("$expr")
            || statement
                .get_document("q")
                .is_ok_and(|q| q.contains_key("$expr"))
    }

    #[test]
    fn a_stale_event_sends_nothing_and_a_newer_one_a_plain_replacement() {
        let replace = |o| entry("k", o, Compacted::Replace(vec![cell("n", Value::Long(7))]));
        let s = stored(vec![at("k", 10)], false);
        assert_eq!(
            decide(&replace(10), &s),
            None,
            "same position: applied already"
        );
        assert_eq!(decide(&replace(9), &s), None, "older");
        let sent = decide(&replace(11), &s).expect("newer");
        assert!(!server_guarded(&sent));
        assert_eq!(
            sent.get_document("u").unwrap(),
            &doc! { "_id": "k", "n": 7_i64, GUARD: { "t": "orders", "p": 3, "o": 11_i64 } }
        );
        // Another partition or topic is always newer: its order is not comparable.
        let mut other = replace(1);
        other.position.partition = 4;
        assert!(decide(&other, &s).is_some());
    }

    #[test]
    fn a_missing_document_is_upserted_and_not_deleted() {
        let s = stored(vec![], false);
        assert_eq!(decide(&entry("k", 1, Compacted::Delete), &s), None);
        let patch = Compacted::Patch {
            set: vec![cell("name", Value::String("a".into()))],
            inc: vec![cell("n", Value::Long(2))],
        };
        let sent = decide(&entry("k", 1, patch), &s).expect("upsert");
        assert_eq!(
            sent.get_document("u").unwrap(),
            &doc! {
                "$set": { "name": "a", GUARD: { "t": "orders", "p": 3, "o": 1_i64 } },
                "$inc": { "n": 2_i64 },
            }
        );
        assert_eq!(sent.get_bool("upsert"), Ok(true));
    }

    #[test]
    fn whatever_sinkd_cannot_decide_as_the_server_would_keeps_the_server_guard() {
        let inc = |o| {
            entry(
                "k",
                o,
                Compacted::Patch {
                    set: vec![],
                    inc: vec![cell("n", Value::Long(1))],
                },
            )
        };
        // `$add` counts a stored null as zero; `$inc` would fail.
        let mut null = at("k", 1);
        null.insert("n", Bson::Null);
        assert!(server_guarded(
            &decide(&inc(2), &stored(vec![null], false)).unwrap()
        ));
        // An `_id` came back that matches no entry: "missing" is not certain.
        let s = stored(vec![at("other", 1)], true);
        assert!(server_guarded(&decide(&inc(2), &s).unwrap()));
        assert!(server_guarded(
            &decide(&entry("k", 2, Compacted::Delete), &s).unwrap()
        ));
        // A guard of a shape sinkd never writes.
        let mut odd = at("k", 1);
        odd.insert(GUARD, doc! { "t": 1, "p": 3, "o": 1 });
        assert!(server_guarded(
            &decide(&inc(2), &stored(vec![odd], false)).unwrap()
        ));
        // A delete of an existing, older document is a plain delete by `_id`.
        let del = decide(
            &entry("k", 2, Compacted::Delete),
            &stored(vec![at("k", 1)], false),
        );
        assert_eq!(del, Some(doc! { "q": { "_id": "k" }, "limit": 1 }));
    }
}
