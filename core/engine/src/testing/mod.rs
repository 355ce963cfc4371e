//! In-memory parts for testing the runtime without servers: a partitioned log as the
//! [`Source`](crate::source::Source), a keyed store that owns its checkpoints as the
//! [`Sink`](crate::sink::Sink), a decoder of one-line text events, and a dead-letter list.
//!
//! They keep the contracts the real connectors keep, not shortcuts of them: the log
//! redelivers from wherever it is sought to, the store applies a batch and its
//! compare-and-set checkpoint advance all or nothing and keeps a row guard per key, and
//! faults are injected at the points a real server fails (a write that fails, a
//! checkpoint another writer moved, a row the store refuses, a write that hangs).
//!
//! - [`connector`]: [`MemConnector`], the store as a sink connector of pipeline files.
//! - [`log`]: [`MemLog`] and its [`MemSource`].
//! - [`store`]: [`MemStore`] and its [`MemSink`], with [`Fault`]s.
//! - [`targets`]: [`MemTargets`], a live and a shadow store with a rebuild's admin.
//! - [`text`]: [`TextDecoder`] (`"Type key n"` lines) and [`MemDeadLetters`].

pub mod connector;
pub mod log;
pub mod store;
pub mod targets;
pub mod text;

pub use connector::{MemConfig, MemConnector, connectors, pipeline};
pub use log::{MemLog, MemSource};
pub use store::{Fault, MemSink, MemStore};
pub use targets::MemTargets;
pub use text::{MemDeadLetters, TEXT_PIPELINE, TextDecoder};
