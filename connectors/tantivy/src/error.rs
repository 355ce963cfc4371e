//! Tantivy's errors, classified the way the runtime acts on them (as the PostgreSQL
//! connector's `classify` does for SQLSTATEs): retry the same batch, stop the pipeline, or
//! treat one record as bad. Only what a document itself causes is a bad record, and that
//! never comes from Tantivy: it is found while converting values (see `sink::apply`).

use sinkd_core::error::SinkError;
use tantivy::TantivyError;
use tantivy::directory::error::{OpenDirectoryError, OpenReadError, OpenWriteError};

/// `e`, met while doing `what`, as a sink error:
/// - retriable ([`SinkError::Unavailable`]): I/O (a full disk, a missing volume), a lock
///   another writer holds, a dead or poisoned indexing thread. The writer is reopened
///   from the last commit and the same batch is written again.
/// - fatal ([`SinkError::Incompatible`]): a corrupt index, one of another Tantivy version
///   or schema, and Tantivy's own invariants. Retrying cannot cure them.
pub fn classify(what: &str, e: TantivyError) -> SinkError {
    let message = format!("{what}: {e}");
    if is_retriable(&e) {
        SinkError::Unavailable(message)
    } else {
        SinkError::Incompatible(message)
    }
}

/// Whether retrying may cure `e` (see [`classify`]).
pub fn is_retriable(e: &TantivyError) -> bool {
    match e {
        TantivyError::IoError(_)
        | TantivyError::LockFailure(..)
        | TantivyError::ErrorInThread(_)
        | TantivyError::Poisoned
        | TantivyError::SystemError(_) => true,
        TantivyError::OpenWriteError(w) => matches!(w, OpenWriteError::IoError { .. }),
        TantivyError::OpenReadError(r) => matches!(r, OpenReadError::IoError { .. }),
        TantivyError::OpenDirectoryError(d) => matches!(
            d,
            OpenDirectoryError::IoError { .. }
                | OpenDirectoryError::FailedToCreateTempDir(_)
                | OpenDirectoryError::DoesNotExist(_)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use sinkd_core::error::ErrorClass;
    use tantivy::directory::error::{Incompatibility, LockError};

    fn class(e: TantivyError) -> ErrorClass {
        classify("writing", e).class()
    }

    #[test]
    fn io_locks_and_dead_threads_are_retried_corruption_stops() {
        let full = std::io::Error::from_raw_os_error(28); // ENOSPC
        assert_eq!(
            class(TantivyError::IoError(Arc::new(full))),
            ErrorClass::Retriable
        );
        let write = OpenWriteError::wrap_io_error(
            std::io::Error::from_raw_os_error(28),
            PathBuf::from("/i/seg"),
        );
        assert_eq!(class(write.into()), ErrorClass::Retriable);
        assert_eq!(
            class(TantivyError::LockFailure(LockError::LockBusy, None)),
            ErrorClass::Retriable
        );
        assert_eq!(
            class(TantivyError::ErrorInThread("indexing thread died".into())),
            ErrorClass::Retriable
        );
        assert_eq!(
            class(TantivyError::DataCorruption(
                tantivy::error::DataCorruption::comment_only("bad checksum")
            )),
            ErrorClass::Fatal
        );
        assert_eq!(
            class(TantivyError::IncompatibleIndex(
                Incompatibility::CompressionMismatch {
                    library_compression_format: "zstd".into(),
                    index_compression_format: "lz4".into(),
                }
            )),
            ErrorClass::Fatal
        );
        assert_eq!(
            class(TantivyError::SchemaError("no such field".into())),
            ErrorClass::Fatal
        );
    }
}
