//! Checks a parsed pipeline without I/O: everything that can be known from the file alone.
//! Problems are returned all at once as `(field path, message)`.

use super::events::OpKind;
use super::model::*;

/// What is wrong with a pipeline name, if anything. It names the pipeline in URLs
/// (`/pipelines/{name}`), consumer groups and files, so it starts with a letter, a digit
/// or `_`: `.` and `..` would be path segments, and `-x` reads as a command-line flag.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    (!ok).then(|| {
        format!(
            "`{name}` is not a valid pipeline name: use up to 200 letters, digits, `-`, `_` \
             and `.`, starting with a letter, a digit or `_`"
        )
    })
}

/// Problems of `routing` and of the target names that use it.
fn routing_problems(p: &PipelineFile, problem: &mut impl FnMut(&str, String)) {
    use super::routing::{MAX_TARGETS, placeholders, valid_value};
    let declared = p.declared_targets();
    let used: Vec<String> = declared.iter().flat_map(|(n, _)| placeholders(n)).collect();
    for (i, (name, _)) in declared.iter().enumerate() {
        let field = if i == 0 {
            format!("sink.{}", p.sink.kind())
        } else {
            format!("targets.{name}")
        };
        for ph in placeholders(name) {
            if !p.routing.contains_key(&ph) {
                problem(
                    &field,
                    format!("`{{{ph}}}` in `{name}` has no values: list them under routing.{ph}"),
                );
            }
        }
    }
    for (name, values) in &p.routing {
        let field = format!("routing.{name}");
        if !used.contains(name) {
            problem(&field, format!("no target name has `{{{name}}}`"));
        }
        if values.is_empty() {
            problem(&field, "list at least one value".into());
        }
        for v in values {
            if !valid_value(v) {
                problem(
                    &field,
                    format!("`{v}` cannot be part of a name: use 1 to 32 letters, digits and `_`"),
                );
            }
        }
    }
    if p.routing.is_empty() {
        return;
    }
    if !p.sink.more_targets() {
        problem(
            "routing",
            format!(
                "routing needs a sink with several tables or collections; a `{}` sink writes one",
                p.sink.kind()
            ),
        );
        return;
    }
    if p.envelope == Envelope::Debezium {
        problem(
            "routing",
            "routing needs sinkd's own events: a Debezium change writes the table it mirrors"
                .into(),
        );
        return;
    }
    let concrete = p.concrete_targets();
    if concrete.len() > MAX_TARGETS {
        problem(
            "routing",
            format!(
                "the values make {} tables or collections; at most {MAX_TARGETS}",
                concrete.len()
            ),
        );
    }
    for t in &concrete {
        // PostgreSQL's identifier limit, the strictest of the sinks that route.
        if t.name.len() > 63 {
            problem(
                "routing",
                format!("`{}` is longer than 63 characters", t.name),
            );
        }
    }
}

/// Every problem of the pipeline, or `Ok` when there is none.
pub fn validate(p: &PipelineFile) -> Result<(), Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| problems.push((field.to_owned(), message));

    if let Some(message) = name_problem(&p.name) {
        problem("name", message);
    }
    if p.source.kafka.topics.is_empty() {
        problem("source.kafka.topics", "name at least one topic".into());
    }
    for owned in [
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.id",
        "bootstrap.servers",
    ] {
        if p.source.kafka.properties.contains_key(owned) {
            problem(
                &format!("source.kafka.properties.{owned}"),
                format!("`{owned}` is set by sinkd and cannot be overridden"),
            );
        }
    }
    if p.key.columns.is_empty() {
        problem("key.columns", "name at least one key column".into());
    }
    match p.envelope {
        Envelope::Events if p.events.is_empty() => {
            problem("events", "declare at least one event type".into());
        }
        Envelope::Events => {}
        Envelope::Debezium => {
            if !p.events.is_empty() {
                problem(
                    "events",
                    "with `envelope: debezium` each change's `op` says what to do; remove `events`"
                        .into(),
                );
            }
            if !p.upcasters.is_empty() {
                problem(
                    "upcasters",
                    "Debezium change events follow the table's schema; upcasters do not apply"
                        .into(),
                );
            }
            if p.key.from != KeySource::KafkaKey {
                problem(
                    "key.from",
                    "with `envelope: debezium` the key is the Kafka key (the table's primary                      key)"
                        .into(),
                );
            }
        }
    }
    let needs_dlq = p.on_error == BadRecordPolicy::DeadLetter
        || p.unknown_events == UnknownEventPolicy::DeadLetter;
    if needs_dlq && p.dead_letter_topic.is_none() {
        problem(
            "dead_letter_topic",
            "a `dead_letter` policy is set but no dead_letter_topic is given".into(),
        );
    }
    if p.batch.max_events == 0 {
        problem("batch.max_events", "must be at least 1".into());
    }
    for (event_type, rules) in &p.events {
        if rules.0.is_empty() {
            problem(
                &format!("events.{event_type}"),
                "give at least one rule".into(),
            );
        }
        for (i, e) in rules.0.iter().enumerate() {
            let field = |name: &str| match rules.0.len() {
                1 => format!("events.{event_type}.{name}"),
                _ => format!("events.{event_type}[{i}].{name}"),
            };
            if e.op == OpKind::Delete && (e.fields.is_some() || !e.columns.is_empty()) {
                problem(
                    &field("op"),
                    "a delete takes no fields or columns: it removes the row of the key".into(),
                );
            }
            for column in e.columns.keys().chain(e.fields.iter().flatten()) {
                if p.key.columns.contains(column) && e.op != OpKind::Upsert {
                    problem(
                        &field("columns"),
                        format!("`{column}` is a key column; a {:?} cannot change it", e.op),
                    );
                }
            }
            if e.op == OpKind::Increment && e.fields.as_ref().is_some_and(|f| f.is_empty()) {
                problem(
                    &field("fields"),
                    "an increment needs at least one field".into(),
                );
            }
        }
    }
    for (name, t) in &p.targets {
        let field = format!("targets.{name}");
        if t.key.is_empty() {
            problem(
                &format!("{field}.key"),
                "name at least one key column".into(),
            );
        }
        if name.ends_with("__sinkd_shadow") || name.starts_with("sinkd_") {
            problem(
                &field,
                format!("`{name}`: names like sinkd's own tables are reserved"),
            );
        }
        if !p.sink.more_targets() {
            problem(
                &field,
                format!(
                    "a `{}` sink writes one target: `targets` (child rows) need a sink with \
                     several tables or collections",
                    p.sink.kind()
                ),
            );
        } else if *name == p.sink.main_target() {
            problem(&field, format!("`{name}` is the sink's own target"));
        } else if let Some(message) = p.sink.target_name_problem(name) {
            problem(&field, message);
        }
    }
    routing_problems(p, &mut problem);
    if p.envelope == Envelope::Debezium && !p.targets.is_empty() {
        problem(
            "targets",
            "Debezium changes write the one table they mirror; remove `targets`".into(),
        );
    }
    if p.envelope == Envelope::Events
        && let Err(rule_problems) = crate::projection::events::EventProjection::new(p)
    {
        for (field, message) in rule_problems {
            problem(&field, message);
        }
    }
    if let Err(upcast_problems) = crate::upcast::Upcasters::new(&p.upcasters) {
        for (field, message) in upcast_problems {
            problem(&field, message);
        }
    }
    for (field, message) in p.sink.validate(p) {
        problem(&field, message);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
