//! Everything between a decoded event and an operation: the event's identity (type and
//! version, from the schema or overridden by a field or header), the upcasters, and the
//! projection. The runtime and `sinkd upcast` share it, so the offline tool shows exactly
//! what the pipeline would do.

use std::sync::Arc;

use apache_avro::types::Value;

use crate::config::{Locator, PipelineFile};
use crate::error::RecordError;
use crate::event::{Event, RawRecord};
use crate::operation::Op;
use crate::projection::{self, Projection};
use crate::upcast::Upcasters;
use crate::value::unwrap_union;

/// Identity, upcasting and projection of one pipeline.
pub struct Transform {
    event_type: Locator,
    event_version: Locator,
    upcasters: Upcasters,
    projection: Box<dyn Projection>,
}

impl Transform {
    /// Builds the transform of a pipeline file. Fails only on what validation reports
    /// (an upcaster chain or a projection rule that does not compile).
    pub fn new(p: &PipelineFile) -> Result<Transform, Vec<(String, String)>> {
        Ok(Transform {
            event_type: p.event_type.clone(),
            event_version: p.event_version.clone(),
            upcasters: Upcasters::new(&p.upcasters)?,
            projection: projection::for_pipeline(p)?,
        })
    }

    /// Identity overrides, then upcasting: the event as the projection sees it.
    pub fn prepare(&self, raw: &RawRecord, event: Event) -> Result<Event, RecordError> {
        self.upcasters.upcast(self.identify(raw, event)?)
    }

    /// Projects a prepared event, moving its values (see [`Projection::project`] for the
    /// errors).
    pub fn project(&self, event: Event) -> Result<Vec<Op>, RecordError> {
        self.projection.project(event)
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
                    Some(Value::Int(v)) => version(i64::from(*v), f, &fail)?,
                    Some(Value::Long(v)) => version(*v, f, &fail)?,
                    Some(Value::String(s)) => s.parse().map_err(|_| {
                        fail(
                            "event version",
                            format!(
                                "field `{f}` = `{s}` is not a version from 0 to {}",
                                u32::MAX
                            ),
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

/// A version read from an event field: out of the range 0..=u32::MAX is a bad record, never
/// wrapped into another version.
fn version(
    v: i64,
    field: &str,
    fail: &impl Fn(&str, String) -> RecordError,
) -> Result<u32, RecordError> {
    u32::try_from(v).map_err(|_| {
        fail(
            "event version",
            format!(
                "field `{field}` = {v} is not a version from 0 to {}",
                u32::MAX
            ),
        )
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::error::ErrorClass;
    use crate::event::SourcePosition;

    fn transform() -> Transform {
        let text = "name: p\nsource:\n  kafka: { bootstrap_servers: b, topics: [t] }\n  \
                    registry: { url: 'http://r' }\nsink:\n  memory: { table: t }\n\
                    key: { columns: [id] }\nevent_version: { field: v }\n\
                    events:\n  E: { op: upsert }\n";
        let p = crate::testing::pipeline(text);
        Transform::new(&p).unwrap()
    }

    fn event(v: Value) -> (RawRecord, Event) {
        let position = SourcePosition {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
        };
        let raw = RawRecord {
            position: position.clone(),
            timestamp_ms: None,
            key: None,
            value: None,
            headers: vec![],
        };
        let event = Event {
            event_type: Arc::from("E"),
            version: 1,
            key: None,
            body: Some(Value::Record(vec![("v".into(), v)])),
            schema: None,
            position,
            timestamp_ms: None,
        };
        (raw, event)
    }

    #[test]
    fn a_version_field_beyond_u32_is_a_bad_record_not_truncated() {
        let t = transform();
        let version_of = |v: Value| {
            let (raw, e) = event(v);
            t.identify(&raw, e).map(|e| e.version)
        };
        assert_eq!(
            version_of(Value::Long(i64::from(u32::MAX))).unwrap(),
            u32::MAX
        );
        assert_eq!(version_of(Value::Int(3)).unwrap(), 3);
        for bad in [
            Value::Long(i64::from(u32::MAX) + 1),
            Value::Long(1 << 32 | 2),
            Value::Long(-1),
            Value::Int(-1),
            Value::String("4294967298".into()),
        ] {
            let e = version_of(bad.clone()).expect_err(&format!("{bad:?}"));
            assert_eq!(e.class(), ErrorClass::BadRecord, "{e}");
            assert!(e.to_string().contains("field `v`"), "{e}");
        }
    }
}
