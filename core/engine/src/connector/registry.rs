//! [`Connectors`]: every sink connector by kind, and the parsing of a pipeline file's
//! `sink: { <kind>: … }` section by the connector it names.
//!
//! The file is read in three passes over the same text, each a plain typed parse so that
//! every error keeps serde-saphyr's line, field and secret redaction: the kind under
//! `sink:`, then that connector's settings (a `sink: { <kind>: Config }` view of the file,
//! typed by the connector), then the whole pipeline, whose `sink` field takes the settings
//! already read. serde gives a `Deserialize` impl no context, so that hand-over goes
//! through a thread-local for the length of the last parse, which is synchronous.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::{Connector, SinkSpec};
use crate::config::ConfigError;
use crate::config::load::parse_as;
use crate::config::locate::line_of_field;

/// The connectors a daemon knows, by the kind that names them under `sink:`.
#[derive(Clone, Default)]
pub struct Connectors {
    by_kind: BTreeMap<&'static str, Arc<dyn Parse>>,
}

impl fmt::Debug for Connectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

/// The text of one pipeline file and what it is read with.
pub(crate) struct FileText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub env: &'a HashMap<String, String>,
}

impl Connectors {
    /// Adds a connector; a second one of the same kind replaces the first.
    pub fn add<C: Connector>(&mut self, connector: C) -> &mut Connectors {
        self.by_kind.insert(C::KIND, Arc::new(connector));
        self
    }

    /// The kinds known, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_kind.keys().copied()
    }

    /// The sink of a pipeline file, read by the connector its `sink:` section names.
    pub(crate) fn parse_sink(&self, file: &FileText<'_>) -> Result<SinkSpec, ConfigError> {
        let error = |message: String| ConfigError {
            file: file.path.to_path_buf(),
            line: line_of_field(file.text, "sink"),
            field: Some("sink".into()),
            message,
        };
        let kinds: SinkKinds = parse_as(file.path, file.text, file.env)?;
        let mut named = kinds
            .sink
            .into_keys()
            .filter(|k| !COMMON.contains(&k.as_str()));
        let (Some(kind), None) = (named.next(), named.next()) else {
            return Err(error(format!(
                "name exactly one sink: one of {}",
                self.expected()
            )));
        };
        match self.by_kind.get(kind.as_str()) {
            Some(connector) => connector.clone().parse(file),
            None => Err(error(format!(
                "unknown sink `{kind}`, expected one of {}",
                self.expected()
            ))),
        }
    }

    /// Each kind with the schema of its settings (a reference into `generator`'s
    /// definitions), in name order.
    pub fn settings_schemas(&self, generator: &mut SchemaGenerator) -> Vec<(&'static str, Schema)> {
        self.by_kind
            .iter()
            .map(|(kind, c)| (*kind, c.settings_schema(generator)))
            .collect()
    }

    fn expected(&self) -> String {
        self.kinds()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The kinds named under `sink:`; the rest of the file is not looked at.
#[derive(Deserialize)]
struct SinkKinds {
    sink: BTreeMap<String, IgnoredAny>,
}

/// The keys under `sink:` beside the kind, the same for every sink.
const COMMON: [&str; 1] = ["parallelism"];

/// The settings under `sink.<kind>`, typed by that kind's connector.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct SinkSettings<T> {
    sink: SinkSection<T>,
}

/// The `sink:` section: the kind's settings and the [`COMMON`] keys. Read key by key
/// (not through `#[serde(flatten)]`, which buffers the values and loses the line of an
/// error in the kind's settings).
struct SinkSection<T> {
    config: Option<T>,
    parallelism: Option<usize>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for SinkSection<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Section<T>(std::marker::PhantomData<T>);
        impl<'de, T: DeserializeOwned> de::Visitor<'de> for Section<T> {
            type Value = SinkSection<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping naming one sink")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut section = SinkSection {
                    config: None,
                    parallelism: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "parallelism" => section.parallelism = Some(map.next_value()?),
                        _ => section.config = Some(map.next_value()?),
                    }
                }
                Ok(section)
            }
        }
        deserializer.deserialize_map(Section(std::marker::PhantomData))
    }
}

/// A connector with its settings type erased.
trait Parse: Send + Sync {
    fn parse(self: Arc<Self>, file: &FileText<'_>) -> Result<SinkSpec, ConfigError>;
    fn settings_schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

impl<C: Connector> Parse for C {
    fn settings_schema(&self, generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<C::Config>()
    }

    fn parse(self: Arc<Self>, file: &FileText<'_>) -> Result<SinkSpec, ConfigError> {
        let settings: SinkSettings<C::Config> = parse_as(file.path, file.text, file.env)?;
        let config = (settings.sink.config).expect("the kind was read from the same text");
        let mut spec = SinkSpec::new(self, config);
        if let Some(n) = settings.sink.parallelism {
            spec = spec.with_parallelism(n);
        }
        Ok(spec)
    }
}

thread_local! {
    /// The sink of the file being parsed, read before the rest of it.
    static READ: RefCell<Option<SinkSpec>> = const { RefCell::new(None) };
}

/// Runs `parse` with `sink` as what the file's `sink` field deserializes to.
pub(crate) fn with_sink<T>(sink: SinkSpec, parse: impl FnOnce() -> T) -> T {
    let previous = READ.with(|r| r.replace(Some(sink)));
    // Restored even if `parse` unwinds, so a later parse never takes a stale sink.
    struct Restore(Option<SinkSpec>);
    impl Drop for Restore {
        fn drop(&mut self) {
            READ.with(|r| *r.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(previous);
    parse()
}

impl JsonSchema for SinkSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sink".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": format!(
                "Exactly one sink, named by its kind, with that kind's settings (see Sinks); \
                 beside it, `parallelism`: {}",
                super::spec::parallelism_doc()
            ),
            "type": "object",
            "minProperties": 1,
            "maxProperties": 2
        })
    }
}

impl<'de> Deserialize<'de> for SinkSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SinkSpec, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        READ.with(|r| r.borrow().clone()).ok_or_else(|| {
            de::Error::custom("the sink was not read first (a bug in sinkd's config loading)")
        })
    }
}
