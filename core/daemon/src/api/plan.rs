//! `POST /pipelines/{name}/validate`: checks a pipeline file (YAML or JSON, the body as it
//! is) with this daemon's environment and connectors, and tells what applying it would
//! change: a new pipeline, the fields that differ from the running version, and whether
//! the rows already written would need a rebuild. Nothing is applied. `sinkd plan FILE…`
//! calls it for each file.
//!
//! It takes the token like a mutation: `${VAR}` in the body is read from the daemon's
//! environment, and the answer shows values.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use sinkd_connectors::connectors;
use sinkd_core::config::diff::{diff, impact};
use sinkd_core::config::{ConfigError, LoadedFile, load_any_text};

use super::{Answer, Api, ApiError};

/// `POST /pipelines/{name}/validate`: 200 with `valid`, the `errors` (line, field,
/// message) or the `plan`.
pub async fn validate(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let text = file_text(body)?;
    let running = api.roster.origin(&name);
    // Reader schema files are found beside the running version's file.
    let path = running
        .as_ref()
        .map(|(path, _)| path.clone())
        .unwrap_or_else(|| PathBuf::from(format!("{name}.yaml")));
    let loaded = load(path, text).await?;
    let file = match loaded {
        Ok(f) if f.name() == name => f,
        Ok(f) => {
            let message = not_named(&f, &name);
            return Ok(invalid(&[json!({"field": "name", "message": message})]));
        }
        Err(errors) => {
            let errors: Vec<Value> = errors.iter().map(located).collect();
            return Ok(invalid(&errors));
        }
    };
    let plan = match running {
        None => json!({"action": "create", "kind": kind(&file), "changes": [],
                       "needs_rebuild": false, "rebuild_for": [], "new_target_for": []}),
        Some((_, old)) => {
            let changes = diff(&old, file.values());
            let impact = impact(&old, file.values());
            json!({
                "action": if changes.is_empty() { "unchanged" } else { "update" },
                "kind": kind(&file),
                "changes": changes,
                "needs_rebuild": impact.needs_rebuild(),
                "rebuild_for": impact.rebuild_for,
                "new_target_for": impact.new_target_for,
            })
        }
    };
    Ok(Json(json!({"valid": true, "errors": [], "plan": plan})).into_response())
}

/// The body of a request that carries a pipeline file: UTF-8 text, not empty.
pub(super) fn file_text(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let body = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the body is the pipeline file, in YAML or JSON",
        ));
    }
    Ok(text.to_owned())
}

/// Loads `text` as the file at `path` would load, with this daemon's environment and
/// connectors, off the async runtime.
pub(super) async fn load(
    path: PathBuf,
    text: String,
) -> Result<Result<LoadedFile, Vec<ConfigError>>, ApiError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    tokio::task::spawn_blocking(move || load_any_text(&path, &text, &env, &connectors()))
        .await
        .map_err(|e| ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Why a file sent for pipeline `name` is refused when it is another pipeline.
pub(super) fn not_named(file: &LoadedFile, name: &str) -> String {
    format!(
        "the file is pipeline `{}`, not `{name}`: a pipeline's name is its identity",
        file.name()
    )
}

fn kind(file: &LoadedFile) -> &'static str {
    match file {
        LoadedFile::Pipeline(_) => "sink",
        LoadedFile::Capture(_) => "capture",
    }
}

pub(super) fn located(e: &ConfigError) -> Value {
    json!({"line": e.line, "field": e.field, "message": e.message})
}

fn invalid(errors: &[Value]) -> axum::response::Response {
    Json(json!({"valid": false, "errors": errors, "plan": null})).into_response()
}
