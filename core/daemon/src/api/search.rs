//! `GET /pipelines/{name}/search?q=…&limit=…&offset=…` on Tantivy pipelines.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use sinkd_tantivy::TantivyConnector;
use sinkd_tantivy::search::SearchError;

use super::{Answer, Api, ApiError};

/// Query parameters.
#[derive(Deserialize)]
pub struct SearchParams {
    q: String,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    10
}

/// Runs a query on a Tantivy pipeline's live index.
pub async fn search(
    State(api): State<Api>,
    Path(name): Path<String>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Answer {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let ctl = api.pipeline(&name)?;
    let Some(tantivy) = ctl.file().sink.connector::<TantivyConnector>() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("pipeline `{name}` has no Tantivy sink to search"),
        ));
    };
    let handle = tantivy.search(&name);
    let limit = params.limit.min(1_000);
    let result =
        tokio::task::spawn_blocking(move || handle.search(&params.q, limit, params.offset)).await;
    match result {
        Ok(Ok(body)) => Ok(Json(body).into_response()),
        Ok(Err(e)) => {
            let status = match e {
                SearchError::BadQuery(_) => StatusCode::BAD_REQUEST,
                SearchError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError(status, e.to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}
