//! The index: its schema from the pipeline file, and its directory.

use std::path::Path;

use crate::config::{IndexField, IndexFieldKind, TantivySinkConfig};
use sinkd_core::error::SinkError;
use tantivy::Index;

use crate::error::{classify, is_retriable};
use tantivy::schema::{
    DateOptions, Field, IndexRecordOption, JsonObjectOptions, NumericOptions, STORED, STRING,
    Schema, TextFieldIndexing, TextOptions,
};

/// Guard fields: the position of the last event applied to a document.
pub const GUARD_TOPIC: &str = "_sinkd_topic";
/// See [`GUARD_TOPIC`].
pub const GUARD_PARTITION: &str = "_sinkd_partition";
/// See [`GUARD_TOPIC`].
pub const GUARD_OFFSET: &str = "_sinkd_offset";

/// The schema the pipeline file declares, plus the guard fields.
pub fn schema(cfg: &TantivySinkConfig) -> Schema {
    let mut b = Schema::builder();
    for f in &cfg.fields {
        add_field(&mut b, f);
    }
    b.add_text_field(GUARD_TOPIC, STRING | STORED);
    b.add_i64_field(GUARD_PARTITION, STORED);
    b.add_i64_field(GUARD_OFFSET, STORED);
    b.build()
}

fn numeric(f: &IndexField) -> NumericOptions {
    use NumericOptions as O;
    flags(f, O::set_stored, O::set_indexed, O::set_fast)
}

/// The field's `stored`, `indexed` and `fast` flags as options of its type (numbers and
/// dates have option types of their own with the same setters).
fn flags<O: Default>(
    f: &IndexField,
    stored: fn(O) -> O,
    indexed: fn(O) -> O,
    fast: fn(O) -> O,
) -> O {
    let mut o = O::default();
    for (on, set) in [(f.stored, stored), (f.indexed, indexed), (f.fast, fast)] {
        if on {
            o = set(o);
        }
    }
    o
}

fn add_field(b: &mut tantivy::schema::SchemaBuilder, f: &IndexField) -> Field {
    let name = f.name.as_str();
    match f.kind {
        IndexFieldKind::Text | IndexFieldKind::String => {
            let tokenizer = match f.kind {
                IndexFieldKind::String => "raw",
                _ => f.tokenizer.as_deref().unwrap_or("default"),
            };
            let record = match f.kind {
                IndexFieldKind::String => IndexRecordOption::Basic,
                _ => IndexRecordOption::WithFreqsAndPositions,
            };
            let mut o = TextOptions::default();
            if f.indexed {
                o = o.set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer(tokenizer)
                        .set_index_option(record),
                );
            }
            if f.stored {
                o = o.set_stored();
            }
            if f.fast {
                o = o.set_fast("raw");
            }
            b.add_text_field(name, o)
        }
        IndexFieldKind::I64 => b.add_i64_field(name, numeric(f)),
        IndexFieldKind::U64 => b.add_u64_field(name, numeric(f)),
        IndexFieldKind::F64 => b.add_f64_field(name, numeric(f)),
        IndexFieldKind::Bool => b.add_bool_field(name, numeric(f)),
        IndexFieldKind::Date => {
            use DateOptions as O;
            b.add_date_field(name, flags(f, O::set_stored, O::set_indexed, O::set_fast))
        }
        IndexFieldKind::Json => {
            let mut o = JsonObjectOptions::default();
            if f.stored {
                o = o.set_stored();
            }
            if f.indexed {
                o = o.set_indexing_options(TextFieldIndexing::default().set_tokenizer("default"));
            }
            b.add_json_field(name, o)
        }
    }
}

/// Opens the index of `path` (a generation folder of `cfg.path`, see [`crate::layout`]), or creates it when the directory is empty or does not
/// exist in an existing parent. A missing parent, a directory that holds something else, a
/// corrupt index, or an index whose schema differs from the file is an error that says
/// what to do.
pub fn open(cfg: &TantivySinkConfig, path: &Path) -> Result<Index, SinkError> {
    let wanted = schema(cfg);
    let empty = match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new index goes into an existing folder (a mounted volume). A missing parent
            // more likely means a volume that is not mounted: building an empty index there
            // would silently serve nothing.
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(parent) = parent.filter(|p| !p.is_dir()) {
                return Err(SinkError::Config(format!(
                    "the index directory {} is missing and so is its parent {}; is the volume \
                     mounted? Create the parent folder for a new index",
                    path.display(),
                    parent.display()
                )));
            }
            std::fs::create_dir(path).map_err(|e| {
                SinkError::Config(format!(
                    "cannot create the index directory {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(path = %path.display(), "created a new, empty index; it is built from the start of the topics");
            true
        }
        Err(e) => {
            return Err(SinkError::Config(format!(
                "cannot read the index directory {}: {e}",
                path.display()
            )));
        }
    };
    if empty {
        return Index::create_in_dir(path, wanted)
            .map_err(|e| classify(&format!("cannot create an index in {}", path.display()), e));
    }
    if !path.join("meta.json").exists() {
        return Err(SinkError::Config(format!(
            "{} is not empty and holds no Tantivy index (no meta.json); sinkd will not use it. \
             Point sink.tantivy.path at an empty or new directory",
            path.display()
        )));
    }
    let index = Index::open_in_dir(path).map_err(|e| {
        if is_retriable(&e) {
            return classify(&format!("cannot open the index in {}", path.display()), e);
        }
        SinkError::Config(format!(
            "the index in {} cannot be opened ({e}); it is corrupt or from another Tantivy \
             version. Rebuild it into a new directory",
            path.display()
        ))
    })?;
    if index.schema() != wanted {
        return Err(SinkError::Incompatible(format!(
            "the index in {} was built with other fields than sink.tantivy.fields declares; \
             rebuild it into a new directory",
            path.display()
        )));
    }
    Ok(index)
}
