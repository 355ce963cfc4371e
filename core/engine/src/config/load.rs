//! Reading pipeline files: `${VAR}` / `${VAR:-default}` from the environment, unknown keys
//! rejected, and every error located by file, line and field.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::capture::{self, CaptureFile};
use super::locate::{key_at, line_of_field};
use super::model::PipelineFile;
use super::validate;
use crate::connector::Connectors;
use crate::connector::registry::{FileText, with_sink};

/// A pipeline file that parsed and validated.
#[derive(Clone, Debug)]
pub struct LoadedPipeline {
    /// The file it came from.
    pub path: PathBuf,
    /// Its content.
    pub pipeline: PipelineFile,
    /// Every value of the file after `${VAR}` interpolation, as a tree: what a reload
    /// compares to tell a changed pipeline (secrets included, comments and layout not).
    pub values: serde_json::Value,
}

/// A capture pipeline file (`source: postgres_cdc`) that parsed and validated.
#[derive(Clone, Debug)]
pub struct LoadedCapture {
    /// The file it came from.
    pub path: PathBuf,
    /// Its content.
    pub capture: CaptureFile,
    /// Every value of the file after interpolation (see [`LoadedPipeline::values`]).
    pub values: serde_json::Value,
}

/// Every pipeline the given paths hold, by kind.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Pipelines from Kafka into a sink.
    pub pipelines: Vec<LoadedPipeline>,
    /// Pipelines from a PostgreSQL slot into Kafka.
    pub captures: Vec<LoadedCapture>,
}

impl Loaded {
    /// Every file with its pipeline's name, in load order by kind.
    pub fn names(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.pipelines
            .iter()
            .map(|p| (p.path.as_path(), p.pipeline.name.as_str()))
            .chain(
                self.captures
                    .iter()
                    .map(|c| (c.path.as_path(), c.capture.name.as_str())),
            )
    }
}

/// One pipeline file, of either kind.
#[derive(Clone, Debug)]
pub enum LoadedFile {
    /// A sink pipeline.
    Pipeline(LoadedPipeline),
    /// A capture pipeline.
    Capture(LoadedCapture),
}

impl LoadedFile {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        match self {
            LoadedFile::Pipeline(p) => &p.pipeline.name,
            LoadedFile::Capture(c) => &c.capture.name,
        }
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        match self {
            LoadedFile::Pipeline(p) => &p.path,
            LoadedFile::Capture(c) => &c.path,
        }
    }

    /// Its values after interpolation (see [`LoadedPipeline::values`]).
    pub fn values(&self) -> &serde_json::Value {
        match self {
            LoadedFile::Pipeline(p) => &p.values,
            LoadedFile::Capture(c) => &c.values,
        }
    }
}

/// What [`load_each`] found: every file that loaded, and the problems of the others
/// (`failed` names each file that holds one, so a reload keeps what it ran before).
#[derive(Debug, Default)]
pub struct FileSet {
    /// The files that parsed and validated, in load order.
    pub loaded: Vec<LoadedFile>,
    /// Every problem found.
    pub errors: Vec<ConfigError>,
}

impl FileSet {
    /// Whether `path` (a file, or a folder that could not be listed) has a problem.
    pub fn failed(&self, path: &Path) -> bool {
        self.errors
            .iter()
            .any(|e| e.file == path || path.starts_with(&e.file))
    }
}

/// A problem with a pipeline file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// Dotted path of the field, when known (`source.kafka.topics`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Loads every pipeline under the given paths (files, or folders whose `*.yaml` / `*.yml`
/// files are read in name order). Returns every problem found, not just the first.
/// `connectors` parse each file's `sink:` section.
pub fn load_paths(paths: &[PathBuf], connectors: &Connectors) -> Result<Loaded, Vec<ConfigError>> {
    let set = load_each(paths, connectors);
    if !set.errors.is_empty() {
        return Err(set.errors);
    }
    let mut loaded = Loaded::default();
    for file in set.loaded {
        match file {
            LoadedFile::Pipeline(p) => loaded.pipelines.push(p),
            LoadedFile::Capture(c) => loaded.captures.push(c),
        }
    }
    Ok(loaded)
}

/// Loads every file under the given paths on its own: the files that load are kept even
/// when others do not (a reload applies them and keeps the running version of the rest).
/// A name used by two files is a problem of the second, which is not kept.
pub fn load_each(paths: &[PathBuf], connectors: &Connectors) -> FileSet {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut set = FileSet::default();
    for path in paths {
        match files_under(path) {
            Ok(files) => {
                for file in files {
                    match load_any(&file, &env, connectors) {
                        Ok(f) => set.loaded.push(f),
                        Err(mut e) => set.errors.append(&mut e),
                    }
                }
            }
            Err(e) => set.errors.push(e),
        }
    }
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut kept = Vec::with_capacity(set.loaded.len());
    for file in std::mem::take(&mut set.loaded) {
        match seen.get(file.name()) {
            Some(first) => set.errors.push(ConfigError {
                file: file.path().to_path_buf(),
                line: None,
                field: Some("name".into()),
                message: format!(
                    "pipeline name `{}` is already used by {}",
                    file.name(),
                    first.display()
                ),
            }),
            None => {
                seen.insert(file.name().to_owned(), file.path().to_path_buf());
                kept.push(file);
            }
        }
    }
    set.loaded = kept;
    set
}

/// Loads one path (file or folder) with the process environment.
pub fn load_path(path: &Path, connectors: &Connectors) -> Result<Loaded, Vec<ConfigError>> {
    load_paths(&[path.to_path_buf()], connectors)
}

fn files_under(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let err = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: None,
        field: None,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| err(format!("cannot list folder: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err("folder holds no *.yaml or *.yml pipeline file".into()));
    }
    Ok(files)
}

fn read(path: &Path) -> Result<String, Vec<ConfigError>> {
    std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            field: None,
            message: format!("cannot read: {e}"),
        }]
    })
}

/// A file whose source is `postgres_cdc:` is a capture pipeline; any other is read as a
/// sink pipeline (and its errors are reported against that model).
fn load_any(
    path: &Path,
    env: &HashMap<String, String>,
    connectors: &Connectors,
) -> Result<LoadedFile, Vec<ConfigError>> {
    load_any_text(path, &read(path)?, env, connectors)
}

/// Loads a pipeline file's text of either kind as a file under `path` would load (reader
/// schema files are looked for beside `path`).
pub fn load_any_text(
    path: &Path,
    text: &str,
    env: &HashMap<String, String>,
    connectors: &Connectors,
) -> Result<LoadedFile, Vec<ConfigError>> {
    let text = text.to_owned();
    let is_capture = text
        .lines()
        .any(|l| l.trim_start().starts_with("postgres_cdc:"));
    if !is_capture {
        return load_text(path, &text, env, connectors).map(LoadedFile::Pipeline);
    }
    let capture: CaptureFile = parse_as(path, &text, env).map_err(|e| vec![e])?;
    capture::validate(&capture).map_err(|p| located(path, &text, p))?;
    Ok(LoadedFile::Capture(LoadedCapture {
        path: path.to_path_buf(),
        capture,
        values: parse_as(path, &text, env).map_err(|e| vec![e])?,
    }))
}

fn located(path: &Path, text: &str, problems: Vec<(String, String)>) -> Vec<ConfigError> {
    problems
        .into_iter()
        .map(|(field, message)| ConfigError {
            file: path.to_path_buf(),
            line: line_of_field(text, &field),
            field: Some(field),
            message,
        })
        .collect()
}

/// Parses one sink pipeline file with the given environment. Public for tests.
pub fn load_file(
    path: &Path,
    env: &HashMap<String, String>,
    connectors: &Connectors,
) -> Result<LoadedPipeline, Vec<ConfigError>> {
    load_text(path, &read(path)?, env, connectors)
}

/// Loads a pipeline file's text as [`load_file`] does (parse, interpolate, validate, check
/// against the schemas it names beside `path`). Public for tests and fuzzing.
pub fn load_text(
    path: &Path,
    text: &str,
    env: &HashMap<String, String>,
    connectors: &Connectors,
) -> Result<LoadedPipeline, Vec<ConfigError>> {
    let pipeline = parse_str(path, text, env, connectors).map_err(|e| vec![e])?;
    let mut problems = validate::validate(&pipeline).err().unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    problems.extend(super::schema_check::check(&pipeline, dir));
    if !problems.is_empty() {
        return Err(located(path, text, problems));
    }
    Ok(LoadedPipeline {
        path: path.to_path_buf(),
        pipeline,
        values: parse_as(path, text, env).map_err(|e| vec![e])?,
    })
}

/// Parses YAML text into a sink pipeline, interpolating the environment; `connectors`
/// parse its `sink:` section.
pub fn parse_str(
    path: &Path,
    text: &str,
    env: &HashMap<String, String>,
    connectors: &Connectors,
) -> Result<PipelineFile, ConfigError> {
    let file = FileText { path, text, env };
    let sink = connectors.parse_sink(&file)?;
    with_sink(sink, || parse_as(path, text, env))
}

/// Parses YAML text into `T`, interpolating the environment; errors are located.
pub(crate) fn parse_as<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    env: &HashMap<String, String>,
) -> Result<T, ConfigError> {
    // Only the variables the file names are handed to the parser: the rest of the
    // environment has no business in a config error (and would be redacted from it).
    let named = referenced_names(text);
    let referenced: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| named.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Compose-style interpolation is the one serde-saphyr applies to every scalar style
    // (plain, quoted, block); the rewrite keeps sinkd's rules on top of it.
    let mut options = serde_saphyr::options! {}.with_properties(referenced);
    options.property_syntax = serde_saphyr::PropertySyntax::DockerCompose;
    let text = &compose_rules(text);
    // serde_path_to_error knows the field; serde-saphyr knows the line. The path is kept
    // aside and the error handed back to serde-saphyr so it stays located.
    let mut field: Option<String> = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            let path = e.path().to_string();
            if path != "." && !path.is_empty() {
                field = Some(path);
            }
            e.into_inner()
        })
    });
    let error = match result {
        Ok(pipeline) => return Ok(pipeline),
        Err(e) => e,
    };
    let line = error.location().map(|l| l.line());
    // Errors raised while reading a scalar (a missing variable) are reported before the
    // path tracker has entered the key: complete the path with the key of that scalar.
    let key = error
        .location()
        .and_then(|l| key_at(text, l.line(), l.column()));
    // A syntax error leaves unknown steps (`?`) in the path: keep the known part.
    if let Some(f) = &mut field
        && let Some(unknown) = f.find(".?")
    {
        f.truncate(unknown);
    }
    // Only a key the path has not reached yet: an error inside a flow mapping
    // (`kafka: { …, tpics: x }`) is located at the mapping, whose key is already in it.
    if let (Some(f), Some(key)) = (&mut field, key)
        && !f.split('.').any(|segment| segment == key)
        && !key.starts_with('-')
    {
        f.push('.');
        f.push_str(&key);
    }
    let mut message = first_line(&error.to_string());
    if line.is_some_and(|l| unquoted_reference_in_flow(text, l)) {
        message.push_str(
            "; inside a flow mapping `{ … }` a value holding `${VAR}` must be quoted, as in \
             `{ url: \"${VAR}\" }`",
        );
    }
    // serde-saphyr hides key names in mappings that hold an interpolated value; the path
    // tracker knows the key, and a key is never a secret.
    if let Some(key) = field.as_deref().and_then(|f| f.rsplit('.').next()) {
        message = message.replace("`an interpolated field`", &format!("`{key}`"));
    }
    Err(ConfigError {
        file: path.to_path_buf(),
        line,
        field,
        message,
    })
}

/// Whether line `line` holds `${` unquoted after a `{`: YAML reads `{` and `}` there as
/// the flow mapping's own brackets, so the parser's complaint needs a hint.
fn unquoted_reference_in_flow(text: &str, line: u64) -> bool {
    let Some(l) = line
        .checked_sub(1)
        .and_then(|i| text.lines().nth(usize::try_from(i).ok()?))
    else {
        return false;
    };
    let Some(open) = l.find('{') else {
        return false;
    };
    l[open..]
        .match_indices("${")
        .any(|(i, _)| !matches!(l[..open + i].chars().last(), Some('"' | '\'')))
}

/// The names of the variables that `${NAME…}` references in the text mention.
fn referenced_names(text: &str) -> std::collections::HashSet<&str> {
    text.match_indices("${")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            let end = rest
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

/// Rewrites a pipeline file so that Compose-style interpolation follows sinkd's rules:
/// `${NAME}` of an unset variable is an error (Compose would make it empty: it becomes
/// `${NAME?}`), and a bare `$NAME` stays literal text (it becomes `$$NAME`). `$$` stays the
/// escape of a literal `$`, and the `${NAME:-default}` family is untouched. Characters are
/// only inserted within a line, so the parser's line numbers still point into the file.
fn compose_rules(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            let next = text[i..].find('$').map_or(text.len(), |n| i + n);
            out.push_str(&text[i..next]);
            i = next;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'$').count();
        out.push_str(&text[i..i + run]);
        i += run;
        if run % 2 == 0 {
            continue; // only escapes
        }
        match bytes.get(i) {
            Some(b'{') => {
                let name_len = bytes[i + 1..]
                    .iter()
                    .take_while(|&&b| b == b'_' || b.is_ascii_alphanumeric())
                    .count();
                if name_len > 0 && bytes.get(i + 1 + name_len) == Some(&b'}') {
                    out.push('{');
                    out.push_str(&text[i + 1..i + 1 + name_len]);
                    out.push_str("?}");
                    i += name_len + 2;
                }
            }
            Some(b) if *b == b'_' || b.is_ascii_alphabetic() => out.push('$'),
            _ => {}
        }
    }
    out
}

/// The parser's message without its source snippet (the file and line are printed by us).
fn first_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    // serde-saphyr prefixes "error: line L column C: "; we print the line ourselves.
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") => rest.to_owned(),
        _ => first.to_owned(),
    }
}

#[cfg(test)]
mod tests;
