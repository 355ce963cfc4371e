//! What each step does to the event's Avro schema, worked out once per writer schema.
//!
//! The schema is edited as JSON (apache-avro serializes and re-parses it), step by step,
//! so a step that names a field the version does not have fails here, once, with the
//! field and the step, rather than as a puzzling null in the sink. The result is the
//! upcast event's schema, from which the sink's column types come.

use apache_avro::Schema;
use serde_json::{Value as Json, json};

use super::step::{Path, Step};
use crate::config::ValueType;

/// A record schema being edited.
pub struct SchemaDoc(Json);

/// Where a field sits: its parent's field list, and whether a nullable record is on the way.
struct Slot<'a> {
    fields: &'a mut Vec<Json>,
    under_nullable: bool,
}

impl SchemaDoc {
    /// The JSON form of a record schema.
    pub fn new(schema: &Schema) -> Result<SchemaDoc, String> {
        serde_json::to_value(schema)
            .map(SchemaDoc)
            .map_err(|e| format!("cannot read the schema: {e}"))
    }

    /// Parses the edited schema.
    pub fn finish(&self) -> Result<Schema, String> {
        Schema::parse(&self.0).map_err(|e| format!("the upcast schema is not valid Avro: {e}"))
    }

    /// The record's full name.
    pub fn full_name(&self) -> String {
        let name = self.0["name"].as_str().unwrap_or_default();
        match self.0["namespace"].as_str() {
            Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
            _ => name.to_owned(),
        }
    }

    /// The top-level field names.
    fn top_level(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.0["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| (f["name"].as_str().unwrap_or_default(), &f["type"]))
    }

    /// Applies one step to the schema.
    pub fn apply(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Move { from, to } => {
                let mut field = self.remove(from)?;
                field["name"] = json!(last(to));
                if field.get("default").is_some_and(|d| !d.is_null()) {
                    // A default of the old place may not suit the new one; none is needed.
                    field.as_object_mut().map(|o| o.remove("default"));
                }
                self.insert(to, field)
            }
            Step::Drop(path) => self.remove(path).map(|_| ()),
            Step::Default { field, ty, value } => {
                if self.find(field)?.is_some() {
                    return Ok(());
                }
                let field_json = if matches!(value, apache_avro::types::Value::Null) {
                    json!({"name": last(field), "type": ["null", avro_type(*ty)], "default": null})
                } else {
                    json!({"name": last(field), "type": avro_type(*ty)})
                };
                self.insert(field, field_json)
            }
            Step::Convert { field, to, .. } => {
                let slot = self.slot(field, false)?;
                let under_nullable = slot.under_nullable;
                let f = slot
                    .fields
                    .iter_mut()
                    .find(|f| f["name"] == last(field))
                    .ok_or_else(|| missing(field))?;
                let (inner, nullable) = non_null(&f["type"]);
                if !is_scalar(inner) {
                    return Err(format!(
                        "field `{}` is {}, which cannot be converted",
                        field.join("."),
                        inner
                    ));
                }
                f["type"] = maybe_nullable(avro_type(*to), nullable || under_nullable);
                if let Some(o) = f.as_object_mut() {
                    o.remove("default");
                }
                if nullable || under_nullable {
                    f["default"] = Json::Null;
                }
                Ok(())
            }
            Step::Compute { field, expr, ty } => {
                for input in &expr.inputs {
                    let Some((_, t)) = self.top_level().find(|(n, _)| n == input) else {
                        return Err(format!(
                            "the expression reads `{input}`, which this version does not have"
                        ));
                    };
                    if t.to_string().contains("\"decimal\"") {
                        return Err(format!(
                            "the expression reads `{input}`, a decimal: expressions cannot read decimals"
                        ));
                    }
                }
                if self.find(field)?.is_some() {
                    self.remove(field)?;
                }
                self.insert(
                    field,
                    json!({"name": last(field), "type": ["null", avro_type(*ty)], "default": null}),
                )
            }
            Step::RenameType { to, .. } => {
                self.0["name"] = json!(to.as_ref());
                if let Some(o) = self.0.as_object_mut() {
                    o.remove("namespace");
                }
                Ok(())
            }
        }
    }

    /// The field list holding `path`'s last segment. With `create`, records missing on the
    /// way are added; a nullable record on the way cannot receive fields.
    fn slot(&mut self, path: &[String], create: bool) -> Result<Slot<'_>, String> {
        let mut record = &mut self.0;
        let mut under_nullable = false;
        for (depth, seg) in path[..path.len() - 1].iter().enumerate() {
            let fields = record["fields"]
                .as_array_mut()
                .ok_or_else(|| format!("`{}` is not a record", path[..depth].join(".")))?;
            let idx = match fields.iter().position(|f| f["name"] == seg.as_str()) {
                Some(i) => i,
                None if create => {
                    let name = format!("sinkd_{}", path[..=depth].join("_"));
                    fields.push(json!({"name": seg, "type": {"type": "record", "name": name, "fields": []}}));
                    fields.len() - 1
                }
                None => return Err(missing(&path[..=depth])),
            };
            let ty = &mut fields[idx]["type"];
            let nullable = matches!(ty, Json::Array(_));
            let inner = match ty {
                Json::Array(variants) => variants.iter_mut().find(|v| v["type"] == "record"),
                Json::Object(_) if ty["type"] == "record" => Some(ty),
                _ => None,
            };
            let Some(inner) = inner else {
                return Err(format!(
                    "`{}` is not a record written inline in this schema",
                    path[..=depth].join(".")
                ));
            };
            if nullable && create {
                return Err(format!(
                    "`{}` is a nullable record: fields cannot be added to it",
                    path[..=depth].join(".")
                ));
            }
            under_nullable |= nullable;
            record = inner;
        }
        let fields = record["fields"]
            .as_array_mut()
            .ok_or_else(|| "the schema is not a record".to_owned())?;
        Ok(Slot {
            fields,
            under_nullable,
        })
    }

    fn find(&mut self, path: &[String]) -> Result<Option<&mut Json>, String> {
        match self.slot(path, false) {
            Ok(slot) => Ok(slot.fields.iter_mut().find(|f| f["name"] == last(path))),
            Err(_) => Ok(None),
        }
    }

    /// Removes a field; a field under a nullable record becomes nullable.
    fn remove(&mut self, path: &[String]) -> Result<Json, String> {
        let slot = self.slot(path, false)?;
        let idx = slot
            .fields
            .iter()
            .position(|f| f["name"] == last(path))
            .ok_or_else(|| missing(path))?;
        let mut field = slot.fields.remove(idx);
        if slot.under_nullable {
            let (_, nullable) = non_null(&field["type"]);
            if !nullable {
                field["type"] = json!(["null", field["type"].take()]);
                field["default"] = Json::Null;
            }
        }
        Ok(field)
    }

    fn insert(&mut self, path: &[String], field: Json) -> Result<(), String> {
        let slot = self.slot(path, true)?;
        if slot.fields.iter().any(|f| f["name"] == last(path)) {
            return Err(format!(
                "field `{}` already exists in this version",
                path.join(".")
            ));
        }
        slot.fields.push(field);
        Ok(())
    }
}

fn last(path: &[String]) -> &str {
    &path[path.len() - 1]
}

fn missing(path: &[String]) -> String {
    format!("field `{}` is not in this version", path.join("."))
}

/// The Avro type of a step's value type.
pub fn avro_type(ty: ValueType) -> Json {
    match ty {
        ValueType::Boolean => json!("boolean"),
        ValueType::Int => json!("int"),
        ValueType::Long => json!("long"),
        ValueType::Float => json!("float"),
        ValueType::Double => json!("double"),
        ValueType::String => json!("string"),
        ValueType::TimestampMillis => json!({"type": "long", "logicalType": "timestamp-millis"}),
    }
}

fn maybe_nullable(t: Json, nullable: bool) -> Json {
    if nullable { json!(["null", t]) } else { t }
}

/// The type inside `["null", T]`, and whether it was nullable.
fn non_null(t: &Json) -> (&Json, bool) {
    match t {
        Json::Array(v) if v.len() == 2 && v.iter().any(|x| x == "null") => {
            (v.iter().find(|x| *x != "null").unwrap_or(t), true)
        }
        other => (other, false),
    }
}

fn is_scalar(t: &Json) -> bool {
    let name = match t {
        Json::String(s) => s.as_str(),
        Json::Object(o) => match (o.get("type"), o.get("logicalType")) {
            (_, Some(Json::String(l))) if l == "decimal" || l == "duration" => return false,
            (Some(Json::String(s)), _) => s.as_str(),
            _ => return false,
        },
        _ => return false,
    };
    matches!(
        name,
        "boolean" | "int" | "long" | "float" | "double" | "string" | "enum"
    )
}

/// Splits a dotted path.
pub fn path(s: &str) -> Path {
    s.split('.').map(str::to_owned).collect()
}
