//! The daemon's HTTP API (minimal for now): `GET /healthz` (the process answers),
//! `GET /readyz` (every pipeline is running) and
//! `GET /pipelines/{name}/search?q=…&limit=…&offset=…` on Tantivy pipelines.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use sinkd_tantivy::SearchHandle;
use sinkd_tantivy::search::SearchError;

/// Search handles by pipeline name.
pub type Searches = Arc<HashMap<String, SearchHandle>>;

/// Whether each pipeline is still running, by name (false once it stopped or failed).
pub type Running = Arc<HashMap<String, Arc<AtomicBool>>>;

#[derive(Clone)]
struct ApiState {
    searches: Searches,
    running: Running,
}

/// The routes.
pub fn router(searches: Searches, running: Running) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/pipelines/{name}/search", get(search))
        .with_state(ApiState { searches, running })
}

/// 200 while every pipeline runs; 503 naming those that stopped (a failed pipeline has
/// logged why). Used as the readiness probe.
async fn readyz(State(state): State<ApiState>) -> Response {
    let mut stopped: Vec<&str> = state
        .running
        .iter()
        .filter(|(_, r)| !r.load(Ordering::Relaxed))
        .map(|(name, _)| name.as_str())
        .collect();
    if stopped.is_empty() {
        return "ready".into_response();
    }
    stopped.sort_unstable();
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("pipelines not running: {}", stopped.join(", ")),
    )
}

#[derive(Deserialize)]
struct SearchParams {
    q: String,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    10
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn search(
    State(ApiState { searches, .. }): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<SearchParams>,
) -> Response {
    let Some(handle) = searches.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no Tantivy pipeline named `{name}`"),
        );
    };
    let handle = handle.clone();
    let limit = params.limit.min(1_000);
    let result =
        tokio::task::spawn_blocking(move || handle.search(&params.q, limit, params.offset)).await;
    match result {
        Ok(Ok(body)) => Json(body).into_response(),
        Ok(Err(e @ SearchError::BadQuery(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(e @ SearchError::NotReady)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
