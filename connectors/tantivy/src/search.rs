//! Searching the index for the REST API. The reader is the sink's own, reloaded after
//! every commit, so a search sees each batch as soon as it is committed.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value, json};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::QueryParser;
use tantivy::schema::document::Document as _;
use tantivy::schema::{Field, FieldType, Schema};
use tantivy::{Index, IndexReader, TantivyDocument};

/// What a search needs once the sink has opened the index.
#[derive(Clone)]
pub(crate) struct Searchable {
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
}

/// A handle the REST API holds for one Tantivy pipeline.
#[derive(Clone, Default)]
pub struct SearchHandle {
    pub(crate) inner: Arc<RwLock<Option<Searchable>>>,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query does not parse.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// The index is not open yet.
    #[error("the index is not open yet")]
    NotReady,
    /// Tantivy failed.
    #[error("search failed: {0}")]
    Failed(String),
}

fn default_fields(schema: &Schema) -> Vec<Field> {
    schema
        .fields()
        .filter(|(_, entry)| {
            matches!(entry.field_type(), FieldType::Str(_))
                && entry.is_indexed()
                && !entry.name().starts_with("_sinkd")
        })
        .map(|(f, _)| f)
        .collect()
}

/// The deepest page a search reaches: the collector keeps `offset + limit` hits in memory.
pub const MAX_OFFSET: usize = 100_000;
/// The longest query text taken.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// How deep parentheses may nest: Tantivy's query parser recurses once a level, and a
/// query nested thousands deep would overflow the thread's stack and abort the daemon.
pub const MAX_NESTING: usize = 32;

/// Refuses queries too long or too deeply nested to parse safely (parentheses inside a
/// quoted phrase are text, not nesting).
fn check_shape(q: &str) -> Result<(), SearchError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(SearchError::BadQuery(format!(
            "the query is {} bytes; at most {MAX_QUERY_BYTES}",
            q.len()
        )));
    }
    let (mut depth, mut deepest, mut quoted, mut escaped) = (0usize, 0usize, false, false);
    for c in q.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_NESTING {
        return Err(SearchError::BadQuery(format!(
            "the query nests {deepest} levels of brackets; at most {MAX_NESTING}"
        )));
    }
    Ok(())
}

impl SearchHandle {
    /// Runs a query in Tantivy's query language (terms, `"phrases"`, `field:value`,
    /// `field:[a TO b]` ranges, boolean operators) and returns
    /// `{"total": n, "hits": [{"score": s, "doc": {field: value}}]}` with stored fields.
    pub fn search(&self, q: &str, limit: usize, offset: usize) -> Result<Value, SearchError> {
        if offset > MAX_OFFSET {
            return Err(SearchError::BadQuery(format!(
                "offset {offset} is past {MAX_OFFSET}; narrow the query instead of paging that deep"
            )));
        }
        check_shape(q)?;
        let searchable = self
            .inner
            .read()
            .map_err(|_| SearchError::Failed("lock poisoned".into()))?
            .clone()
            .ok_or(SearchError::NotReady)?;
        let schema = searchable.index.schema();
        let parser = QueryParser::for_index(&searchable.index, default_fields(&schema));
        let query = parser
            .parse_query(q)
            .map_err(|e| SearchError::BadQuery(e.to_string()))?;
        let searcher = searchable.reader.searcher();
        let (total, top) = searcher
            .search(
                &query,
                &(
                    Count,
                    TopDocs::with_limit(limit.max(1))
                        .and_offset(offset)
                        .order_by_score(),
                ),
            )
            .map_err(|e| SearchError::Failed(e.to_string()))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top.into_iter().take(limit) {
            let doc: TantivyDocument = searcher
                .doc(address)
                .map_err(|e| SearchError::Failed(e.to_string()))?;
            let full: Value = serde_json::from_str(&doc.to_json(&schema))
                .map_err(|e| SearchError::Failed(e.to_string()))?;
            // Tantivy renders every field as a list; one value reads better as itself.
            let fields: Map<String, Value> = full
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !k.starts_with("_sinkd"))
                .map(|(k, v)| match v {
                    Value::Array(items) if items.len() == 1 => (k.clone(), items[0].clone()),
                    other => (k.clone(), other.clone()),
                })
                .collect();
            hits.push(json!({ "score": score, "doc": fields }));
        }
        Ok(json!({ "total": total, "hits": hits }))
    }
}
