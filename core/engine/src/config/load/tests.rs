//! Loading pipeline files: interpolation in every scalar style, located errors, the sink
//! section read by its connector.

use super::*;

const BASE: &str = "\
name: orders
source:
  kafka:
    bootstrap_servers: ${KAFKA_BROKERS:-127.0.0.1:9092}
    topics: [shop.orders]
  registry:
    url: ${SCHEMA_REGISTRY_URL}
sink:
  memory:
    table: orders
key:
  columns: [order_id]
events:
  com.shop.OrderPlaced:
    op: upsert
batch:
  max_events: 100
";

fn env() -> HashMap<String, String> {
    HashMap::from([("SCHEMA_REGISTRY_URL".to_owned(), "http://r:8081".to_owned())])
}

fn parse(text: &str, env: &HashMap<String, String>) -> Result<PipelineFile, ConfigError> {
    parse_str(
        Path::new("orders.yaml"),
        text,
        env,
        &crate::testing::connectors(),
    )
}

#[test]
fn interpolates_variables_and_defaults() {
    let p = parse(BASE, &env()).unwrap();
    assert_eq!(p.source.registry.url, "http://r:8081");
    assert_eq!(p.source.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert!(validate::validate(&p).is_ok());
}

#[test]
fn unknown_key_names_file_line_and_field() {
    let text = BASE.replace("    table: orders", "    table: orders\n    tabel: typo");
    let e = parse(&text, &env()).unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.line, Some(11));
    assert!(e.message.contains("tabel"), "{e}");
    assert!(e.to_string().starts_with("orders.yaml:11"), "{e}");
    assert_eq!(e.field.as_deref(), Some("sink.memory.tabel"));
}

#[test]
fn an_unknown_key_in_a_flow_mapping_names_its_field() {
    for (from, to, field) in [
        (
            "  kafka:\n    bootstrap_servers: ${KAFKA_BROKERS:-127.0.0.1:9092}\n    topics: [shop.orders]",
            "  kafka: { bootstrap_servers: b, topics: [t], tpics: x }",
            "source.kafka.tpics",
        ),
        (
            "  memory:\n    table: orders",
            "  memory: { table: orders, tabel: x }",
            "sink.memory.tabel",
        ),
    ] {
        let e = parse(&BASE.replace(from, to), &env()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.message.starts_with("unknown field"), "{e}");
    }
}

#[test]
fn an_unknown_sink_lists_the_known_ones() {
    for (sink, message) in [
        (
            "  nosuch:\n    table: orders",
            "unknown sink `nosuch`, expected one of `memory`",
        ),
        (
            "  memory:\n    table: orders\n  other: {}",
            "name exactly one sink: one of `memory`",
        ),
    ] {
        let text = BASE.replace("  memory:\n    table: orders", sink);
        let e = parse(&text, &env()).unwrap_err();
        assert_eq!(e.message, message, "{e}");
        assert_eq!((e.line, e.field.as_deref()), (Some(8), Some("sink")), "{e}");
    }
}

#[test]
fn a_secret_in_sink_settings_stays_out_of_errors() {
    let text = BASE.replace("    table: orders", "    table: ${TABLE}\n    extra: 1");
    let env = HashMap::from([
        ("SCHEMA_REGISTRY_URL".to_owned(), "http://r:8081".to_owned()),
        ("TABLE".to_owned(), "s3cr3t".to_owned()),
    ]);
    let e = parse(&text, &env).unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert_eq!(e.field.as_deref(), Some("sink.memory.extra"), "{e}");
    let p = parse(&BASE.replace("table: orders", "table: ${TABLE}"), &env).unwrap();
    assert_eq!(p.sink.main_target(), "s3cr3t");
}

#[test]
fn missing_variable_names_it_and_its_line() {
    let e = parse(BASE, &HashMap::new()).unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.line, Some(7));
    assert!(e.message.contains("SCHEMA_REGISTRY_URL"), "{e}");
    assert_eq!(e.field.as_deref(), Some("source.registry.url"));
}

#[test]
fn wrong_type_names_the_field() {
    let text = BASE.replace("max_events: 100", "max_events: lots");
    let e = parse(&text, &env()).unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.line, Some(17));
    assert_eq!(e.field.as_deref(), Some("batch.max_events"));
}

#[test]
fn validation_problems_are_located() {
    let dir = std::env::temp_dir().join(format!("sinkd-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    let text = BASE
        .replace("  columns: [order_id]", "  columns: []")
        .replace("\nevents:", "\non_error: dead_letter\nevents:");
    std::fs::write(&file, text).unwrap();
    let errors = load_file(&file, &env(), &crate::testing::connectors()).unwrap_err();
    let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    eprintln!("{all:#?}");
    assert!(
        all.iter().any(|e| e.contains(":12: field `key.columns`")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|e| e.contains("field `dead_letter_topic`")),
        "{all:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `BASE` with the registry's url line written in another YAML form.
fn with_url(form: &str) -> String {
    BASE.replace(
        "  registry:\n    url: ${SCHEMA_REGISTRY_URL}",
        &format!("  registry:{form}"),
    )
}

/// Every YAML scalar style, and a flow mapping: each is interpolated, and an unset
/// variable is an error naming it, its line and its field.
const FORMS: [(&str, &str, u64); 7] = [
    ("plain", "\n    url: ${SCHEMA_REGISTRY_URL}", 7),
    ("single-quoted", "\n    url: '${SCHEMA_REGISTRY_URL}'", 7),
    ("double-quoted", "\n    url: \"${SCHEMA_REGISTRY_URL}\"", 7),
    (
        "literal block",
        "\n    url: |-\n      ${SCHEMA_REGISTRY_URL}",
        7,
    ),
    (
        "folded block",
        "\n    url: >-\n      ${SCHEMA_REGISTRY_URL}",
        7,
    ),
    (
        "flow, double-quoted",
        " { url: \"${SCHEMA_REGISTRY_URL}\", timeout_ms: 5 }",
        6,
    ),
    (
        "flow, single-quoted",
        " { timeout_ms: 5, url: '${SCHEMA_REGISTRY_URL}' }",
        6,
    ),
];

#[test]
fn every_scalar_style_is_interpolated() {
    for (style, form, _) in FORMS {
        let p = parse(&with_url(form), &env()).unwrap_or_else(|e| panic!("{style}: {e}"));
        assert_eq!(p.source.registry.url, "http://r:8081", "{style}");
    }
}

#[test]
fn an_unset_variable_is_an_error_in_every_scalar_style() {
    for (style, form, line) in FORMS {
        let e = parse(&with_url(form), &HashMap::new())
            .expect_err(&format!("{style}: an unset variable must not validate"));
        eprintln!("{style}: {e}");
        assert!(e.message.contains("SCHEMA_REGISTRY_URL"), "{style}: {e}");
        assert!(
            e.line.is_some_and(|l| l >= line && l <= line + 1),
            "{style}: {e}"
        );
        assert_eq!(
            e.field.as_deref(),
            Some("source.registry.url"),
            "{style}: {e}"
        );
    }
}

#[test]
fn dollars_that_are_not_references_stay_literal() {
    let env = HashMap::from([
        ("SCHEMA_REGISTRY_URL".to_owned(), "http://r:8081".to_owned()),
        ("word".to_owned(), "SECRET".to_owned()),
    ]);
    for (form, want) in [
        (r#""pa$word""#, "pa$word"),
        ("pa$word", "pa$word"),
        (r#""pa$${word}""#, "pa${word}"),
        (r#"'a$$b'"#, "a$b"),
        (r#""${word}$""#, "SECRET$"),
        (r#""${NOPE:-fallback}""#, "fallback"),
        (r#""${NOPE-}""#, ""),
    ] {
        let text = BASE.replace(
            "    topics: [shop.orders]",
            &format!("    topics: [shop.orders]\n    properties:\n      sasl.password: {form}"),
        );
        let p = parse(&text, &env).unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(p.source.kafka.properties["sasl.password"], want, "{form}");
    }
}

#[test]
fn an_unquoted_reference_in_a_flow_mapping_says_to_quote_it() {
    let e = parse(&with_url(" { url: ${SCHEMA_REGISTRY_URL} }"), &env()).unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.line, Some(6));
    assert!(e.message.contains("quote"), "{e}");
}

#[test]
fn validation_messages_are_clean_sentences() {
    let p = parse(&format!("{BASE}envelope: debezium\n"), &env()).unwrap();
    let problems = validate::validate(&p).unwrap_err();
    let events = problems
        .iter()
        .find(|(field, _)| field == "events")
        .expect("events are refused with a Debezium envelope");
    assert_eq!(
        events.1,
        "with `envelope: debezium` each change's `op` says what to do; remove `events`"
    );
    for (field, message) in &problems {
        assert!(!message.contains("  "), "{field}: {message:?}");
    }
}

#[test]
fn pipeline_names_are_url_and_file_safe() {
    use crate::config::validate::name_problem;
    for good in ["orders", "shop.orders-v2", "0day", "a_b", "_private"] {
        assert_eq!(name_problem(good), None, "{good}");
    }
    let long = "a".repeat(201);
    for bad in [
        "", ".", "..", ".hidden", "-x", "a/b", "../etc", "a b", "é", "a%2F", &long,
    ] {
        assert!(name_problem(bad).is_some(), "{bad}");
    }
    let text = BASE.replace("name: orders", "name: \"..\"");
    let problems = crate::config::validate::validate(&parse(&text, &env()).unwrap()).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|(field, m)| field == "name" && m.contains("starting with a letter")),
        "{problems:?}"
    );
}
