//! Checks a parsed pipeline without I/O: everything that can be known from the file alone.
//! Problems are returned all at once as `(field path, message)`.

use super::events::OpKind;
use super::model::*;

/// What is wrong with a pipeline name, if anything.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    (!ok).then(|| {
        format!("`{name}` is not a valid pipeline name: use letters, digits, `-`, `_` and `.`")
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
    if matches!(p.sink, SinkConfig::Tantivy(_)) || p.envelope == Envelope::Debezium {
        problem(
            "routing",
            "routing needs a PostgreSQL or MongoDB sink of sinkd's own events".into(),
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
        match &p.sink {
            SinkConfig::Postgres(pg) if name.is_empty() || name.len() > 63 || *name == pg.table => {
                problem(
                    &field,
                    format!("`{name}` must be 1 to 63 characters and not the sink's own table"),
                );
            }
            SinkConfig::Mongodb(m)
                if name.is_empty()
                    || name.contains('$')
                    || name.starts_with("system.")
                    || *name == m.collection =>
            {
                problem(
                    &field,
                    format!("`{name}` is not a valid collection name besides the sink's own"),
                );
            }
            SinkConfig::Tantivy(_) => problem(
                &field,
                "a Tantivy index is one target: `targets` (child rows) need PostgreSQL or MongoDB"
                    .into(),
            ),
            _ => {}
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
    match &p.sink {
        SinkConfig::Postgres(pg) => {
            for (name, value) in [
                ("sink.postgres.table", &pg.table),
                ("sink.postgres.schema", &pg.schema),
            ] {
                if value.is_empty() || value.len() > 63 {
                    problem(name, format!("`{value}` must be 1 to 63 characters"));
                }
            }
        }
        SinkConfig::Tantivy(t) => {
            match t.fields.iter().find(|f| f.name == t.key) {
                Some(f) if f.kind == IndexFieldKind::String && f.indexed && f.stored => {}
                Some(_) => problem(
                    "sink.tantivy.key",
                    format!(
                        "key field `{}` must be a stored, indexed `string` field",
                        t.key
                    ),
                ),
                None => problem(
                    "sink.tantivy.key",
                    format!(
                        "key field `{}` is not declared in sink.tantivy.fields",
                        t.key
                    ),
                ),
            }
            for f in &t.fields {
                if f.name.starts_with("_sinkd") {
                    problem(
                        "sink.tantivy.fields",
                        format!("`{}`: names starting with `_sinkd` are reserved", f.name),
                    );
                }
                match (&f.tokenizer, f.kind) {
                    (None, _) => {}
                    (Some(tk), IndexFieldKind::Text)
                        if ["default", "raw", "en_stem"].contains(&tk.as_str()) => {}
                    (Some(tk), IndexFieldKind::Text) => problem(
                        "sink.tantivy.fields",
                        format!(
                            "`{}`: tokenizer `{tk}` is not one of default, raw, en_stem",
                            f.name
                        ),
                    ),
                    (Some(_), _) => problem(
                        "sink.tantivy.fields",
                        format!("`{}`: only `text` fields take a tokenizer", f.name),
                    ),
                }
            }
            if p.key.columns.len() != 1 || p.key.columns[0] != t.key {
                problem(
                    "key.columns",
                    format!(
                        "a Tantivy index has one key: set key.columns to [{}]",
                        t.key
                    ),
                );
            }
        }
        SinkConfig::Mongodb(m) => {
            if m.database.is_empty() || m.database.contains(['/', '\\', '.', ' ', '"', '$']) {
                problem(
                    "sink.mongodb.database",
                    format!("`{}` is not a valid database name", m.database),
                );
            }
            if m.collection.is_empty()
                || m.collection.starts_with("system.")
                || m.collection.contains('$')
            {
                problem(
                    "sink.mongodb.collection",
                    format!("`{}` is not a valid collection name", m.collection),
                );
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
