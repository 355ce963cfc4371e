//! Checks a pipeline's rules against the reader schemas it names in files
//! (`upcasters.<type>.reader_schema: { file: … }`): every field a rule copies by name or by
//! path (`customer`, `customer.id`, `item.sku`), every `fields:` entry, every `for_each`
//! path and the key fields must be in the schema the rules read, and a field an increment
//! copies must be a number. The schema the rules read is the reader schema after the
//! type's upcaster chain (the reader schema is what the chain starts from), so a rename in
//! the chain is followed. Validation does no network I/O: a reader schema named by a
//! registry subject is checked by the decoder when it fetches it ([`check_reader`]),
//! before any event of the type is applied. The fields CEL expressions read are not
//! checked (cel-rust has no type checker): they surface as bad records.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema;

use super::events::{ColumnSpec, EventConfig, OpKind};
use super::model::{KeySource, PipelineFile};
use super::upcast::ReaderSchemaConfig;
use crate::projection::rule::path_of;
use crate::schema::{EventSchema, collect_named, column_type, nullable};
use crate::upcast::Upcasters;

/// Every problem found, as `(field path, message)`; the reader schema files are read
/// relative to `dir`, the pipeline file's folder.
pub fn check(p: &PipelineFile, dir: &Path) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    // Chains that do not compile are validation's to report.
    let Ok(upcasters) = Upcasters::new(&p.upcasters) else {
        return problems;
    };
    for (event_type, upcaster) in &p.upcasters {
        let Some(ReaderSchemaConfig::File(name)) = &upcaster.reader_schema else {
            continue;
        };
        let field = format!("upcasters.{event_type}.reader_schema");
        let file = dir.join(name);
        let reader = match read_schema(&file) {
            Ok(s) => s,
            Err(message) => {
                problems.push((field, message));
                continue;
            }
        };
        rules_against(p, &upcasters, event_type, &reader, name, &mut problems);
    }
    problems
}

/// The problems of the rules of `event_type` against `reader`, a reader schema that came
/// from the registry (subject `subject`): what [`check`] does for files, for the decoder
/// to run when it fetches one.
pub fn check_reader(
    p: &PipelineFile,
    event_type: &str,
    reader: &Schema,
    subject: &str,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let (Ok(upcasters), Some(reader)) =
        (Upcasters::new(&p.upcasters), EventSchema::from_avro(reader))
    else {
        return problems;
    };
    let label = format!("subject {subject}");
    rules_against(
        p,
        &upcasters,
        event_type,
        &Arc::new(reader),
        &label,
        &mut problems,
    );
    problems
}

/// Runs the chain of `event_type` over `reader` (named `name` in messages) and checks the
/// rules of the type it gives against the result.
fn rules_against(
    p: &PipelineFile,
    upcasters: &Upcasters,
    event_type: &str,
    reader: &Arc<EventSchema>,
    name: &str,
    problems: &mut Vec<(String, String)>,
) {
    let field = format!("upcasters.{event_type}.reader_schema");
    let version = upcasters.first_version(event_type).unwrap_or(1);
    let (read_as, schema) = match upcasters.outcome(reader, event_type, version) {
        Ok(outcome) => outcome,
        Err(e) => {
            problems.push((field, format!("the chain does not fit {name}: {e}")));
            return;
        }
    };
    let Some(rules) = p.events.get(&*read_as) else {
        return;
    };
    let chained = upcasters.first_version(event_type).is_some();
    let shape = Shape::new(&schema.avro, &read_as, name, chained);
    for (i, rule) in rules.0.iter().enumerate() {
        let at = match rules.0.len() {
            1 => format!("events.{read_as}"),
            _ => format!("events.{read_as}[{i}]"),
        };
        rule_problems(p, rule, &at, &shape, problems);
    }
}

fn read_schema(file: &Path) -> Result<Arc<EventSchema>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let avro = Schema::parse_str(&text)
        .map_err(|e| format!("{} is not an Avro schema: {e}", file.display()))?;
    EventSchema::from_avro(&avro)
        .map(Arc::new)
        .ok_or_else(|| format!("{} is not a record schema", file.display()))
}

fn rule_problems(
    p: &PipelineFile,
    rule: &EventConfig,
    at: &str,
    shape: &Shape<'_>,
    problems: &mut Vec<(String, String)>,
) {
    let scope = Scope {
        shape,
        item: None,
        index: false,
    };
    for name in rule.fields.iter().flatten() {
        scope.check(&format!("{at}.fields"), name, false, problems);
    }
    scope.check_columns(at, (&rule.key, &rule.columns), rule.op, problems);
    if rule.key.is_empty() && p.key.from == KeySource::Fields && rule.op != OpKind::Delete {
        for column in &p.key.columns {
            scope.check("key.columns", column, false, problems);
        }
    }
    for (j, child) in rule.also.iter().enumerate() {
        let at = format!("{at}.also[{j}]");
        let mut scope = Scope {
            shape,
            item: None,
            index: child.for_each.is_some(),
        };
        if let Some(list) = &child.for_each
            && let Some(path) = field_path(list)
        {
            match shape.walk(&path) {
                Ok(found) => match shape.resolve(found) {
                    Schema::Array(a) => scope.item = Some(&a.items),
                    other => problems.push((
                        format!("{at}.for_each"),
                        format!(
                            "`{list}` is {}, not a list, in {}",
                            describe(other),
                            shape.source
                        ),
                    )),
                },
                Err(message) => problems.push((format!("{at}.for_each"), message)),
            }
        }
        scope.check_columns(&at, (&child.key, &child.columns), child.op, problems);
    }
}

/// The segments of a value that names a field (`customer`) or a path (`customer.id`);
/// `None` for an expression.
fn field_path(value: &str) -> Option<Vec<String>> {
    let spec = ColumnSpec {
        value: value.to_owned(),
        ty: None,
    };
    match spec.field() {
        Some(name) => Some(vec![name.to_owned()]),
        None => path_of(value),
    }
}

/// What a rule's values may read: the event, and in a child row with `for_each` the
/// element (`item`, when its schema is known) and its position (`index`).
struct Scope<'a> {
    shape: &'a Shape<'a>,
    item: Option<&'a Schema>,
    index: bool,
}

/// A rule's `key:` or `columns:`: column name to field path or expression.
type Columns = std::collections::BTreeMap<String, String>;

impl Scope<'_> {
    /// Checks the `key` and `columns` of a rule at `at`: increments need numbers.
    fn check_columns(
        &self,
        at: &str,
        (key, columns): (&Columns, &Columns),
        op: OpKind,
        problems: &mut Vec<(String, String)>,
    ) {
        for (column, value) in key {
            self.check(&format!("{at}.key.{column}"), value, false, problems);
        }
        let increment = op == OpKind::Increment;
        for (column, value) in columns {
            let field = format!("{at}.columns.{column}");
            self.check(&field, value, increment, problems);
        }
    }

    fn check(&self, field: &str, value: &str, number: bool, problems: &mut Vec<(String, String)>) {
        let Some(path) = field_path(value) else {
            return;
        };
        let found = match (path[0].as_str(), self.item) {
            ("index", _) if self.index => return,
            ("item", Some(item)) if self.index => self.shape.walk_from(item, &path[1..], "item"),
            // The element of a list given by an expression: its shape is not known here.
            ("item", None) if self.index => return,
            _ => self.shape.walk(&path),
        };
        match found {
            Ok(schema) => {
                let ty = column_type(schema, &self.shape.named);
                if number && !ty.is_numeric() {
                    problems.push((
                        field.to_owned(),
                        format!(
                            "an increment adds numbers; `{value}` is {ty} in {}",
                            self.shape.source
                        ),
                    ));
                }
            }
            Err(message) => problems.push((field.to_owned(), message)),
        }
    }
}

/// A record schema to walk paths through, with its named types.
struct Shape<'a> {
    root: &'a Schema,
    named: HashMap<String, &'a Schema>,
    /// `com.shop.OrderPlaced from order.avsc after its upcasters`.
    source: String,
}

impl<'a> Shape<'a> {
    fn new(root: &'a Schema, event_type: &str, file: &str, chained: bool) -> Shape<'a> {
        let mut named = HashMap::new();
        collect_named(root, &mut named);
        let after = if chained { " after its upcasters" } else { "" };
        Shape {
            root,
            named,
            source: format!("{event_type} from {file}{after}"),
        }
    }

    /// `schema` without references and without the null of a nullable union.
    fn resolve(&self, schema: &'a Schema) -> &'a Schema {
        match schema {
            Schema::Ref { name } => match self.named.get(&name.fullname(None)) {
                Some(target) => self.resolve(target),
                None => schema,
            },
            Schema::Union(u) => match nullable(u) {
                Some(only) => self.resolve(only),
                None => schema,
            },
            other => other,
        }
    }

    fn walk(&self, path: &[String]) -> Result<&'a Schema, String> {
        self.walk_from(self.root, path, "")
    }

    /// The schema at `path` below `from` (named `prefix` in messages): through record
    /// fields, and any key of a map.
    fn walk_from(
        &self,
        from: &'a Schema,
        path: &[String],
        prefix: &str,
    ) -> Result<&'a Schema, String> {
        let mut at = from;
        let mut walked = prefix.to_owned();
        for segment in path {
            match self.resolve(at) {
                Schema::Record(r) => match r.fields.iter().find(|f| &f.name == segment) {
                    Some(f) => at = &f.schema,
                    None => {
                        let known: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
                        let whose = match walked.is_empty() {
                            true => String::new(),
                            false => format!(" of `{walked}`"),
                        };
                        return Err(format!(
                            "`{segment}` is not a field{whose} in {}; its fields: {}",
                            self.source,
                            known.join(", ")
                        ));
                    }
                },
                Schema::Map(m) => at = &m.types,
                other => {
                    return Err(format!(
                        "`{walked}` is {}, it has no field `{segment}`, in {}",
                        describe(other),
                        self.source
                    ));
                }
            }
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(segment);
        }
        Ok(at)
    }
}

/// A schema's kind in a sentence.
fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Record(_) => "a record".into(),
        Schema::Array(_) => "a list".into(),
        Schema::Map(_) => "a map".into(),
        Schema::Union(_) => "a union".into(),
        other => format!("a {}", column_type(other, &HashMap::new())),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    const READER: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
        {"name":"order_id","type":"string"},
        {"name":"amount_eur","type":"double","aliases":["amount"]},
        {"name":"customer","type":["null",{"type":"record","name":"Customer","fields":[
            {"name":"id","type":"string"},{"name":"tier","type":"string"}]}]},
        {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
            {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
        {"name":"note","type":"string"}]}"#;

    /// Problems of a pipeline with `upcasters` and `events` sections, the reader schema
    /// beside it.
    fn problems(upcasters: &str, events: &str) -> Vec<(String, String)> {
        let dir = std::env::temp_dir().join(format!(
            "sinkd-schema-check-{}-{}",
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("t")
                .replace("::", "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("reader.avsc"), READER).unwrap();
        let text = format!(
            "name: p\nsource:\n  kafka: {{ bootstrap_servers: b, topics: [t] }}\n  \
             registry: {{ url: 'http://r' }}\nsink:\n  memory: {{ table: t }}\n\
             key: {{ from: fields, columns: [order_id] }}\n{upcasters}\n{events}"
        );
        let p = crate::testing::pipeline(&text);
        let found = check(&p, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        found
    }

    const NO_CHAIN: &str =
        "upcasters:\n  com.shop.OrderPlaced:\n    reader_schema: { file: reader.avsc }";

    #[test]
    fn fields_and_paths_that_the_reader_schema_has_pass() {
        let events = "events:\n  com.shop.OrderPlaced:\n    op: upsert\n    columns:\n      \
                      who: customer.id\n      amount: amount_eur\n      n: \"items.size()\"\n    \
                      also:\n      - target: lines\n        for_each: items\n        op: upsert\n        \
                      key: { order_id: order_id, line_no: index }\n        \
                      columns: { sku: item.sku, qty: item.qty }";
        assert_eq!(problems(NO_CHAIN, events), vec![]);
    }

    #[test]
    fn a_field_the_reader_schema_lacks_is_named_with_the_fields_it_has() {
        let events = "events:\n  com.shop.OrderPlaced:\n    - when: \"note == 'x'\"\n      op: merge\n      \
                      columns: { who: customer.name, total: amout_eur }\n    - op: increment\n      \
                      columns: { note: note }\n      fields: [order_id, nope]";
        let found = problems(NO_CHAIN, events);
        let has =
            |field: &str, text: &str| found.iter().any(|(f, m)| f == field && m.contains(text));
        assert!(
            has(
                "events.com.shop.OrderPlaced[0].columns.total",
                "`amout_eur` is not a field in com.shop.OrderPlaced from reader.avsc; its fields: \
                 order_id, amount_eur, customer, items, note"
            ),
            "{found:#?}"
        );
        assert!(
            has(
                "events.com.shop.OrderPlaced[0].columns.who",
                "`name` is not a field of `customer`"
            ),
            "{found:#?}"
        );
        assert!(
            has(
                "events.com.shop.OrderPlaced[1].columns.note",
                "an increment adds numbers; `note` is string"
            ),
            "{found:#?}"
        );
        assert!(
            has(
                "events.com.shop.OrderPlaced[1].fields",
                "`nope` is not a field"
            ),
            "{found:#?}"
        );
        assert_eq!(found.len(), 4, "{found:#?}");
    }

    #[test]
    fn child_rows_read_the_elements_of_their_list() {
        let events = "events:\n  com.shop.OrderPlaced:\n    op: upsert\n    also:\n      \
                      - target: lines\n        for_each: note\n        op: upsert\n        \
                      key: { order_id: order_id }\n      - target: lines\n        \
                      for_each: items\n        op: upsert\n        key: { order_id: order_id }\n        \
                      columns: { price: item.price }";
        let found = problems(NO_CHAIN, events);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].0, "events.com.shop.OrderPlaced.also[0].for_each");
        assert!(
            found[0].1.contains("`note` is a string, not a list"),
            "{found:#?}"
        );
        assert_eq!(
            found[1].0,
            "events.com.shop.OrderPlaced.also[1].columns.price"
        );
        assert!(
            found[1].1.contains("`price` is not a field of `item`"),
            "{found:#?}"
        );
    }

    #[test]
    fn the_rules_read_the_reader_schema_after_its_chain() {
        let chain = "upcasters:\n  com.shop.OrderPlaced:\n    reader_schema: { file: reader.avsc }\n    \
                     chain:\n      - from: 1\n        steps:\n          \
                     - rename: { from: amount_eur, to: total_cents }";
        let ok =
            "events:\n  com.shop.OrderPlaced:\n    op: upsert\n    columns: { t: total_cents }";
        assert_eq!(problems(chain, ok), vec![]);
        let stale =
            "events:\n  com.shop.OrderPlaced:\n    op: upsert\n    columns: { t: amount_eur }";
        let found = problems(chain, stale);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].1.contains("`amount_eur` is not a field"),
            "{found:#?}"
        );
        let misfit = "upcasters:\n  com.shop.OrderPlaced:\n    reader_schema: { file: reader.avsc }\n    \
                      chain:\n      - from: 1\n        steps:\n          \
                      - rename: { from: amount, to: total_cents }";
        let found = problems(misfit, ok);
        assert_eq!(found[0].0, "upcasters.com.shop.OrderPlaced.reader_schema");
        assert!(
            found[0].1.contains("the chain does not fit reader.avsc"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_reader_schema_from_the_registry_is_checked_the_same_way() {
        let text = "name: p\nsource:\n  kafka: { bootstrap_servers: b, topics: [t] }\n  \
                    registry: { url: 'http://r' }\nsink:\n  memory: { table: t }\n\
                    key: { columns: [order_id] }\nupcasters:\n  com.shop.OrderPlaced:\n    \
                    reader_schema: { subject: { name: orders-value } }\nevents:\n  \
                    com.shop.OrderPlaced:\n    op: upsert\n    columns: { c: customer.tier, x: nope }";
        let p = crate::testing::pipeline(text);
        assert_eq!(
            check(&p, Path::new(".")),
            vec![],
            "subjects are not fetched"
        );
        let reader = Schema::parse_str(READER).unwrap();
        let found = check_reader(&p, "com.shop.OrderPlaced", &reader, "orders-value");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, "events.com.shop.OrderPlaced.columns.x");
        assert!(
            found[0].1.contains(
                "`nope` is not a field in com.shop.OrderPlaced from subject orders-value"
            ),
            "{found:#?}"
        );
    }

    #[test]
    fn an_unreadable_reader_schema_is_a_problem_of_its_field() {
        let missing =
            "upcasters:\n  com.shop.OrderPlaced:\n    reader_schema: { file: nowhere.avsc }";
        let events = "events:\n  com.shop.OrderPlaced: { op: upsert }";
        let found = problems(missing, events);
        assert_eq!(found[0].0, "upcasters.com.shop.OrderPlaced.reader_schema");
        assert!(found[0].1.contains("cannot read"), "{found:#?}");
    }
}
