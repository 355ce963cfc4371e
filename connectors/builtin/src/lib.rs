//! The sink connectors sinkd is built with. A new sink is a crate that implements
//! [`sinkd_core::connector::Connector`] for its settings, and one line here.

use sinkd_core::connector::Connectors;
use sinkd_mongodb::MongoConnector;
use sinkd_postgres::PostgresConnector;
use sinkd_tantivy::TantivyConnector;

/// Every built-in connector, by the kind that names it under a pipeline's `sink:`.
pub fn connectors() -> Connectors {
    let mut connectors = Connectors::default();
    connectors
        .add(PostgresConnector)
        .add(MongoConnector)
        .add(TantivyConnector::default());
    connectors
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use sinkd_core::config::PipelineFile;
    use sinkd_core::config::load::parse_str;
    use sinkd_core::config::validate::validate;

    use super::connectors;

    fn pipeline(sink: &str, key: &str, more: &str) -> PipelineFile {
        let text = format!(
            "name: p\nsource:\n  kafka: {{ bootstrap_servers: b, topics: [t] }}\n  \
             registry: {{ url: 'http://r' }}\nsink:\n{sink}\nkey: {{ columns: [{key}] }}\n\
             events:\n  A: {{ op: upsert }}\n{more}"
        );
        parse_str(Path::new("p.yaml"), &text, &HashMap::new(), &connectors())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(p: &PipelineFile) -> Vec<(String, String)> {
        validate(p).err().unwrap_or_default()
    }

    const PG: &str = "  postgres: { url: 'postgres://u:pw@h/db', table: orders, schema: shop }";
    const MONGO: &str =
        "  mongodb: { url: 'mongodb://u:pw@h', database: shop, collection: orders }";
    const TANTIVY: &str = "  tantivy:\n    path: /tmp/ix\n    key: id\n    fields:\n      - { name: id, type: string }";

    /// `docs/reference.md` is what the config types' doc comments say today;
    /// `SINKD_BLESS=1` writes it again.
    #[test]
    fn the_reference_is_generated_from_the_config_types() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference.md");
        let generated = sinkd_core::config::reference::markdown(&connectors());
        if std::env::var_os("SINKD_BLESS").is_some() {
            std::fs::write(&file, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/reference.md is not what the config types say: run \
             `SINKD_BLESS=1 cargo test -p sinkd-connectors reference` and commit it"
        );
    }

    #[test]
    fn each_sink_names_its_targets() {
        let cases = [
            (PG, "postgres", "shop.orders", "shop.lines"),
            (MONGO, "mongodb", "shop.orders", "shop.lines"),
            (TANTIVY, "tantivy", "/tmp/ix", "lines"),
        ];
        for (sink, kind, label, sibling) in cases {
            let p = pipeline(sink, "id", "");
            assert_eq!(p.sink.kind(), kind);
            assert_eq!(p.sink.target(), label);
            assert_eq!(p.sink.label("lines"), sibling);
            assert_eq!(problems(&p), vec![], "{kind}");
        }
    }

    /// A rebuild's ticket fingerprints the pipeline's `Debug` form: it is the form the
    /// settings had before connectors owned them, and passwords stay hidden.
    #[test]
    fn the_debug_form_is_unchanged_and_hides_passwords() {
        assert_eq!(
            format!("{:?}", pipeline(PG, "id", "").sink),
            "Postgres(PostgresSinkConfig { url: \"postgres://u:***@h/db\", table: \"orders\", \
             schema: \"shop\" })"
        );
        assert_eq!(
            format!("{:?}", pipeline(MONGO, "id", "").sink),
            "Mongodb(MongoSinkConfig { url: \"mongodb://u:***@h\", database: \"shop\", \
             collection: \"orders\" })"
        );
        assert!(
            format!("{:?}", pipeline(TANTIVY, "id", "").sink)
                .starts_with("Tantivy(TantivySinkConfig { path: \"/tmp/ix\"")
        );
    }

    #[test]
    fn each_sink_validates_its_own_settings() {
        let long = "x".repeat(64);
        let cases = [
            (
                PG.replace("orders", &long),
                "id",
                "",
                "sink.postgres.table",
                "must be 1 to 63 characters",
            ),
            (
                MONGO.replace("database: shop", "database: 'a.b'"),
                "id",
                "",
                "sink.mongodb.database",
                "not a valid database name",
            ),
            (
                MONGO.to_owned(),
                "id",
                "targets:\n  'system.x': { key: [id] }",
                "targets.system.x",
                "not a valid collection name",
            ),
            (
                PG.to_owned(),
                "id",
                "targets:\n  orders: { key: [id] }",
                "targets.orders",
                "the sink's own target",
            ),
            (
                TANTIVY.to_owned(),
                "other",
                "",
                "key.columns",
                "a Tantivy index has one key",
            ),
            (
                TANTIVY.to_owned(),
                "id",
                "targets:\n  lines: { key: [id] }",
                "targets.lines",
                "a `tantivy` sink writes one target",
            ),
            (
                TANTIVY.replace("/tmp/ix", "/tmp/ix_{t}"),
                "id",
                "routing:\n  t: [a]",
                "routing",
                "routing needs a sink with several tables or collections",
            ),
            (
                format!("{TANTIVY}\n  parallelism: 2"),
                "id",
                "",
                "sink.parallelism",
                "the tantivy sink has a single writer",
            ),
            (
                format!("{PG}\n  parallelism: 0"),
                "id",
                "",
                "sink.parallelism",
                "expected 1 to 32",
            ),
        ];
        for (sink, key, more, field, message) in cases {
            let found = problems(&pipeline(&sink, key, more));
            assert!(
                found.iter().any(|(f, m)| f == field && m.contains(message)),
                "{field}: {message}: {found:?}"
            );
        }
    }

    /// `parallelism` sits beside the kind under `sink:`, for every sink that has more
    /// than one writer; the rebuild fingerprint (`Debug`) does not see it.
    #[test]
    fn parallelism_sits_beside_the_kind() {
        for sink in [PG, MONGO] {
            let p = pipeline(&format!("  parallelism: 4\n{sink}"), "id", "");
            assert_eq!(p.sink.parallelism(), 4);
            assert_eq!(problems(&p), vec![]);
            assert_eq!(
                format!("{:?}", p.sink),
                format!("{:?}", pipeline(sink, "id", "").sink)
            );
        }
        assert_eq!(pipeline(PG, "id", "").sink.parallelism(), 1);
    }
}
