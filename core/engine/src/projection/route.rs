//! Which concrete target an operation goes to: a declared target whose name has
//! `{placeholders}` is filled from the event's fields of those names, and the value must
//! be one of its `routing` values (see [`crate::config::routing`]).

use std::collections::HashMap;

use apache_avro::types::Value;

use crate::config::PipelineFile;
use crate::config::routing::placeholders;
use crate::value::unwrap_union;

/// Concrete target numbers by declared target and placeholder values.
pub struct Router {
    /// Per declared target, its placeholders in order.
    placeholders: Vec<Vec<String>>,
    index: HashMap<(usize, Vec<String>), usize>,
    routing: Vec<(String, Vec<String>)>,
}

impl Router {
    /// The router of a pipeline's targets.
    pub fn new(p: &PipelineFile) -> Router {
        Router {
            placeholders: p
                .declared_targets()
                .iter()
                .map(|(name, _)| placeholders(name))
                .collect(),
            index: p
                .concrete_targets()
                .into_iter()
                .enumerate()
                .map(|(n, t)| ((t.declared, t.route), n))
                .collect(),
            routing: p
                .routing
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Whether declared target `declared` has placeholders.
    pub fn routed(&self, declared: usize) -> bool {
        !self.placeholders[declared].is_empty()
    }

    /// The concrete target of declared target `declared` for an event with `fields`.
    pub fn resolve(&self, declared: usize, fields: &[(String, Value)]) -> Result<usize, String> {
        let names = &self.placeholders[declared];
        let mut route = Vec::with_capacity(names.len());
        for name in names {
            let value = match fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| unwrap_union(v))
            {
                Some(Value::String(s)) | Some(Value::Enum(_, s)) => s.clone(),
                Some(Value::Int(i)) => i.to_string(),
                Some(Value::Long(i)) => i.to_string(),
                Some(other) => {
                    return Err(format!(
                        "field `{name}` routes to a target, so it must be text or an integer, not {other:?}"
                    ));
                }
                None => {
                    return Err(format!(
                        "field `{name}`, which routes to a target, is missing"
                    ));
                }
            };
            route.push(value);
        }
        let key = (declared, route);
        if let Some(n) = self.index.get(&key) {
            return Ok(*n);
        }
        match names
            .iter()
            .zip(&key.1)
            .find(|(name, value)| !self.allowed(name, value))
        {
            Some((name, value)) => Err(format!(
                "field `{name}` = `{value}` is not one of its routing values ({})",
                self.values(name).join(", ")
            )),
            None => Err(format!("no target for the values {:?}", key.1)),
        }
    }

    fn values(&self, name: &str) -> &[String] {
        self.routing
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[][..], |(_, v)| v.as_slice())
    }

    fn allowed(&self, name: &str, value: &str) -> bool {
        self.values(name).iter().any(|v| v == value)
    }
}
