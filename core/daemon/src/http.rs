//! The daemon's HTTP API (minimal for now): `GET /healthz` and
//! `GET /pipelines/{name}/search?q=…&limit=…&offset=…` on Tantivy pipelines.

use std::collections::HashMap;
use std::sync::Arc;

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

/// The routes.
pub fn router(searches: Searches) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pipelines/{name}/search", get(search))
        .with_state(searches)
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
    State(searches): State<Searches>,
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
