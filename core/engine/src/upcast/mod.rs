//! Upcasters: old event versions become the newest one before projection.
//!
//! - [`chain`]: the pipeline file's `upcasters` section compiled, with the start-up checks.
//! - [`step`]: the step kinds (rename, move, default, drop, convert, compute, rename_type)
//!   applied to a value.
//! - [`schema_edit`]: the same steps applied to the Avro schema, once per writer schema,
//!   giving the upcast event's column types and catching steps that do not fit.
//! - computed values are CEL expressions of [`crate::expr`], shared with the projection.
//! - [`reader`]: resolution against a declared reader schema.
//!
//! An event runs the chain of its type from its version until the newest declared
//! version; an event already at (or past) it passes through untouched. The plan for a
//! `(writer schema, type, version)` is worked out on first sight and cached, so the per
//! event work is only the value edits.

pub mod chain;
pub mod reader;
pub mod schema_edit;
pub mod step;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use crate::config::UpcasterConfig;
use crate::error::RecordError;
use crate::event::Event;
use crate::schema::EventSchema;
use chain::{Block, Chain, Chains, Problems};
use schema_edit::SchemaDoc;

/// What the chain does to events of one writer schema at one type and version.
struct Plan {
    blocks: Vec<Arc<Block>>,
    event_type: Arc<str>,
    version: u32,
    schema: Arc<EventSchema>,
}

/// The cache key: the writer schema (by identity; the cache holds it, so its address is
/// never reused), the event type and the version.
type PlanKey = (usize, Arc<str>, u32);
type Planned = (Arc<EventSchema>, Result<Option<Arc<Plan>>, String>);

/// The compiled upcasters of a pipeline.
pub struct Upcasters {
    chains: Chains,
    /// Looked up once per event: FxHash, as the key is a pointer, a short name and a number.
    plans: RwLock<FxHashMap<PlanKey, Arc<Planned>>>,
}

impl Upcasters {
    /// Compiles the `upcasters` section. Errors name the field and say what is wrong.
    pub fn new(config: &BTreeMap<String, UpcasterConfig>) -> Result<Upcasters, Problems> {
        let env = crate::expr::environment();
        Ok(Upcasters {
            chains: chain::build(config, &env)?,
            plans: RwLock::new(FxHashMap::default()),
        })
    }

    /// The newest version of an event type, when it has a chain.
    pub fn current_version(&self, event_type: &str) -> Option<u32> {
        self.chains.get(event_type).map(Chain::current)
    }

    /// Upcasts an event to the newest version of its type (or of the type it is renamed
    /// to). Tombstones and events without a chain pass through. An error is a bad record:
    /// it names the type, the version and the step.
    pub fn upcast(&self, mut event: Event) -> Result<Event, RecordError> {
        let (Some(schema), Some(body)) = (&event.schema, &mut event.body) else {
            return Ok(event);
        };
        let outdated = |c: &Chain| event.version < c.current();
        if !self.chains.get(&*event.event_type).is_some_and(outdated) {
            return Ok(event);
        }
        let fail = |detail: String| RecordError::Upcast {
            event_type: event.event_type.to_string(),
            version: event.version,
            detail,
        };
        let plan = self.plan(schema, &event.event_type, event.version);
        let plan = match &plan.1 {
            Ok(Some(plan)) => plan.clone(),
            Ok(None) => return Ok(event),
            Err(e) => return Err(fail(e.clone())),
        };
        for block in &plan.blocks {
            for step in &block.steps {
                step.apply(body)
                    .map_err(|e| fail(format!("{}: {e}", step.kind())))?;
            }
        }
        event.event_type = plan.event_type.clone();
        event.version = plan.version;
        event.schema = Some(plan.schema.clone());
        Ok(event)
    }

    /// What the rules of a pipeline read of an event whose data has `schema` at `version`
    /// of `event_type`: the type and schema after the chain (both unchanged when nothing
    /// upcasts it). An error says which step does not fit the schema.
    pub fn outcome(
        &self,
        schema: &Arc<EventSchema>,
        event_type: &str,
        version: u32,
    ) -> Result<(Arc<str>, Arc<EventSchema>), String> {
        let event_type: Arc<str> = Arc::from(event_type);
        match self.make_plan(schema, &event_type, version)? {
            Some(plan) => Ok((plan.event_type.clone(), plan.schema.clone())),
            None => Ok((event_type, schema.clone())),
        }
    }

    /// The first version a type's chain upcasts from, when it has a chain.
    pub fn first_version(&self, event_type: &str) -> Option<u32> {
        self.chains.get(event_type).map(|c| c.first)
    }

    fn plan(&self, schema: &Arc<EventSchema>, event_type: &Arc<str>, version: u32) -> Arc<Planned> {
        let key = (Arc::as_ptr(schema) as usize, event_type.clone(), version);
        if let Some(p) = self.plans.read().expect("lock poisoned").get(&key) {
            return p.clone();
        }
        let planned = Arc::new((schema.clone(), self.make_plan(schema, event_type, version)));
        self.plans
            .write()
            .expect("lock poisoned")
            .insert(key, planned.clone());
        planned
    }

    /// Walks the chain over the schema: every step checked against the version it meets.
    fn make_plan(
        &self,
        schema: &EventSchema,
        event_type: &Arc<str>,
        version: u32,
    ) -> Result<Option<Arc<Plan>>, String> {
        let mut doc = SchemaDoc::new(&schema.avro)?;
        let (mut t, mut v) = (event_type.clone(), version);
        let mut blocks = Vec::new();
        while let Some(chain) = self.chains.get(&t) {
            if v >= chain.current() {
                break;
            }
            if v < chain.first {
                return Err(format!(
                    "no upcaster from {t} v{v}: the chain starts at v{}",
                    chain.first
                ));
            }
            let block = &chain.blocks[(v - chain.first) as usize];
            for (i, step) in block.steps.iter().enumerate() {
                doc.apply(step).map_err(|e| {
                    format!(
                        "upcaster {t} v{v}→v{}, step {i} ({}): {e}",
                        v + 1,
                        step.kind()
                    )
                })?;
            }
            blocks.push(block.clone());
            (t, v) = block.then.clone();
            if blocks.len() > 10_000 {
                return Err("the chain does not end".into());
            }
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        let avro = doc.finish()?;
        let schema = EventSchema::from_avro(&avro).ok_or("the upcast schema is not a record")?;
        Ok(Some(Arc::new(Plan {
            blocks,
            event_type: t,
            version: v,
            schema: Arc::new(schema),
        })))
    }
}

#[cfg(test)]
mod tests;
