//! Projection: what one event does to the read model, as an [`Op`] on a key.
//!
//! Two projections sit behind one trait, chosen by the pipeline's `envelope`:
//! - [`events`]: sinkd's own events, per the `events` rules ([`rule`]: conditions,
//!   columns copied from fields or computed by CEL expressions, computed keys);
//! - [`debezium`]: Debezium change events, where each change's `op` says what to do.
//!
//! [`key`] fills key columns from the Kafka key or from fields, for both. A rule's `also`
//! writes child rows into the pipeline's other targets (`child.rs`); [`route`] picks the
//! concrete table of a routed target (`orders_{tenant}`).

mod child;
pub mod debezium;
pub mod events;
pub mod key;
pub mod route;
pub mod rule;

use crate::config::{Envelope, PipelineFile};
use crate::error::RecordError;
use crate::event::Event;
use crate::operation::Op;

pub use rule::Problems;

/// Turns one event into operations, moving its values (this runs once per record): the
/// main target's first, then child rows in rule order. Errors are bad records, except
/// [`RecordError::UnknownEventType`] and [`RecordError::Unmatched`], which the caller
/// routes per `unknown_events`.
pub trait Projection: Send + Sync {
    /// The operations of one event.
    fn project(&self, event: Event) -> Result<Vec<Op>, RecordError>;
}

/// The projection of a pipeline, compiled; the problems are what validation reports.
pub fn for_pipeline(p: &PipelineFile) -> Result<Box<dyn Projection>, Problems> {
    Ok(match p.envelope {
        Envelope::Events => Box::new(events::EventProjection::new(p)?),
        Envelope::Debezium => Box::new(debezium::Debezium::new(
            &p.debezium.unavailable_value,
            &p.key.columns,
        )),
    })
}

#[cfg(test)]
mod tests;
