//! Everything between a decoded event and an operation: the event's identity (type and
//! version, from the schema or overridden by a field or header), the upcasters, and the
//! projection. The runtime and `sinkd upcast` share it, so the offline tool shows exactly
//! what the pipeline would do.

use std::sync::Arc;

use apache_avro::types::Value;

use crate::config::{Locator, PipelineFile};
use crate::error::RecordError;
use crate::event::{Event, RawRecord};
use crate::projection::{Op, Projector};
use crate::upcast::Upcasters;
use crate::value::unwrap_union;

/// Identity, upcasting and projection of one pipeline.
pub struct Transform {
    event_type: Locator,
    event_version: Locator,
    upcasters: Upcasters,
    projector: Projector,
}

impl Transform {
    /// Builds the transform of a pipeline file. Fails only on what validation reports
    /// (an upcaster chain that does not compile).
    pub fn new(p: &PipelineFile) -> Result<Transform, Vec<(String, String)>> {
        Ok(Transform {
            event_type: p.event_type.clone(),
            event_version: p.event_version.clone(),
            upcasters: Upcasters::new(&p.upcasters)?,
            projector: Projector::new(p),
        })
    }

    /// Identity overrides, then upcasting: the event as the projection sees it.
    pub fn prepare(&self, raw: &RawRecord, event: Event) -> Result<Event, RecordError> {
        self.upcasters.upcast(self.identify(raw, event)?)
    }

    /// Projects a prepared event, moving its values (see [`Projector::project`] for the
    /// errors).
    pub fn project(&self, event: Event) -> Result<Op, RecordError> {
        self.projector.project(event)
    }

    /// The upcasters.
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// Applies the `event_type` / `event_version` overrides.
    pub fn identify(&self, raw: &RawRecord, mut event: Event) -> Result<Event, RecordError> {
        if event.body.is_none() {
            return Ok(event);
        }
        let original_type = event.event_type.clone();
        let fail = |what: &str, detail: String| RecordError::Projection {
            event_type: original_type.to_string(),
            detail: format!("{what}: {detail}"),
        };
        match &self.event_type {
            Locator::Schema => {}
            Locator::Field(f) => match event.field(f) {
                Some(Value::String(s)) | Some(Value::Enum(_, s)) => {
                    event.event_type = Arc::from(s.as_str())
                }
                other => {
                    return Err(fail(
                        "event type",
                        format!("field `{f}` is not a string: {other:?}"),
                    ));
                }
            },
            Locator::Header(h) => match raw.header(h).map(std::str::from_utf8) {
                Some(Ok(s)) => event.event_type = Arc::from(s),
                _ => {
                    return Err(fail(
                        "event type",
                        format!("header `{h}` is missing or not UTF-8"),
                    ));
                }
            },
        }
        match &self.event_version {
            Locator::Schema => {}
            Locator::Field(f) => {
                event.version = match event.field(f).map(unwrap_union) {
                    Some(Value::Int(v)) if *v >= 0 => *v as u32,
                    Some(Value::Long(v)) if *v >= 0 => *v as u32,
                    Some(Value::String(s)) => s.parse().map_err(|_| {
                        fail(
                            "event version",
                            format!("field `{f}` = `{s}` is not a number"),
                        )
                    })?,
                    other => {
                        return Err(fail(
                            "event version",
                            format!("field `{f}` is not a version: {other:?}"),
                        ));
                    }
                }
            }
            Locator::Header(h) => {
                event.version = raw
                    .header(h)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| {
                        fail(
                            "event version",
                            format!("header `{h}` is missing or not a number"),
                        )
                    })?;
            }
        }
        Ok(event)
    }
}
