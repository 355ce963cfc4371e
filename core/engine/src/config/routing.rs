//! Targets by name, after routing: the concrete tables or collections a pipeline writes.
//!
//! A target's name may hold `{placeholder}`s (`table: "orders_{tenant}"`), each with its
//! allowed values under `routing` (`tenant: [acme, globex]`): the target stands for one
//! table per combination of values, all known at start-up, so a rebuild shadows and swaps
//! every one of them, and a value from an event that is not allowed is a bad record, never
//! a table named by whoever wrote the event.
//!
//! Concrete targets are numbered as [`crate::operation::Op::target`]: the sink's own
//! target's tables first, then each of `targets` (in name order).

use std::collections::BTreeMap;

use super::model::PipelineFile;

/// Most concrete targets one pipeline may write.
pub const MAX_TARGETS: usize = 100;

/// One table or collection a pipeline writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcreteTarget {
    /// Its name (placeholders filled).
    pub name: String,
    /// Its key columns.
    pub key: Vec<String>,
    /// Which declared target it comes from: 0 the sink's own, `n` the `n`-th of `targets`.
    pub declared: usize,
    /// The placeholders' values, in the order of [`placeholders`] of the declared name.
    pub route: Vec<String>,
}

/// The `{placeholder}` names of a target name, in order of first appearance.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
        rest = &rest[open + close + 1..];
    }
    out
}

/// Every name a template stands for, with the values that fill it (cartesian product, in
/// the order of the values lists). A placeholder without values stays unfilled.
pub fn expand(
    template: &str,
    routing: &BTreeMap<String, Vec<String>>,
) -> Vec<(String, Vec<String>)> {
    let mut out = vec![(template.to_owned(), Vec::new())];
    for name in placeholders(template) {
        let values = routing.get(&name).cloned().unwrap_or_default();
        let slot = format!("{{{name}}}");
        let mut next = Vec::with_capacity(out.len() * values.len());
        for (t, route) in &out {
            for v in &values {
                let mut route = route.clone();
                route.push(v.clone());
                next.push((t.replace(&slot, v), route));
            }
        }
        out = next;
    }
    out
}

/// Whether a routing value may become part of a table or collection name.
pub fn valid_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= 32 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl PipelineFile {
    /// The sink's own target's name as configured (a template when routed).
    pub fn main_target_name(&self) -> String {
        self.sink.main_target()
    }

    /// The declared targets: the sink's own, then `targets`, as (name template, key).
    pub fn declared_targets(&self) -> Vec<(String, Vec<String>)> {
        std::iter::once((self.main_target_name(), self.key.columns.clone()))
            .chain(self.targets.iter().map(|(n, t)| (n.clone(), t.key.clone())))
            .collect()
    }

    /// Every table or collection the pipeline writes, numbered as operations' targets.
    pub fn concrete_targets(&self) -> Vec<ConcreteTarget> {
        self.declared_targets()
            .into_iter()
            .enumerate()
            .flat_map(|(declared, (template, key))| {
                expand(&template, &self.routing)
                    .into_iter()
                    .map(move |(name, route)| ConcreteTarget {
                        name,
                        key: key.clone(),
                        declared,
                        route,
                    })
            })
            .collect()
    }

    /// The concrete targets as (name, key), for the sinks.
    pub fn sink_targets(&self) -> Vec<(String, Vec<String>)> {
        self.concrete_targets()
            .into_iter()
            .map(|t| (t.name, t.key))
            .collect()
    }

    /// What users call concrete target `n`: `schema.table`, `database.collection`, or the
    /// index directory.
    pub fn target_label(&self, n: usize) -> String {
        match self.concrete_targets().get(n) {
            Some(t) => self.sink.label(&t.name),
            None => self.sink.target(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_to_every_combination() {
        assert_eq!(placeholders("o_{a}_{b}_{a}"), vec!["a", "b"]);
        let routing = BTreeMap::from([
            ("a".to_owned(), vec!["x".to_owned(), "y".to_owned()]),
            ("b".to_owned(), vec!["1".to_owned()]),
        ]);
        assert_eq!(
            expand("o_{a}_{b}", &routing),
            vec![
                ("o_x_1".to_owned(), vec!["x".to_owned(), "1".to_owned()]),
                ("o_y_1".to_owned(), vec!["y".to_owned(), "1".to_owned()]),
            ]
        );
        assert_eq!(
            expand("plain", &routing),
            vec![("plain".to_owned(), vec![])]
        );
        assert!(
            valid_value("acme_2")
                && !valid_value("a-b")
                && !valid_value("")
                && !valid_value("x\"y")
        );
    }

    #[test]
    fn routing_problems_are_named() {
        let yaml = "name: p\nsource:\n  kafka: {bootstrap_servers: b, topics: [t]}\n  registry: {url: u}\n\
                    sink:\n  memory: {table: \"orders_{tenant}_{region}\"}\nkey: {columns: [id]}\n\
                    routing:\n  tenant: [acme, \"bad-name\"]\n  unused: [x]\nevents:\n  A: {op: upsert}\n";
        let p = crate::testing::pipeline(yaml);
        let problems = crate::config::validate::validate(&p).unwrap_err();
        let text = format!("{problems:?}");
        assert!(
            text.contains("`{region}` in `orders_{tenant}_{region}` has no values"),
            "{text}"
        );
        assert!(
            text.contains("`bad-name` cannot be part of a name"),
            "{text}"
        );
        assert!(
            text.contains("routing.unused") && text.contains("no target name has `{unused}`"),
            "{text}"
        );
    }
}
