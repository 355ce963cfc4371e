//! The daemon's REST API (documented in `openapi.yaml`, served at `/openapi.yaml`).
//!
//! - [`definitions`]: pipelines created, changed and deleted at runtime in a cluster.
//! - [`pipelines`]: status, pause/resume, offsets, rebuild, read-your-writes wait.
//! - [`plan`]: what applying a pipeline file would change (`…/validate`).
//! - [`search`]: queries on Tantivy pipelines.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`auth`]: bearer token for mutations (and reads unless opened).
//!
//! `/healthz` (the process answers) and `/readyz` (every pipeline connected and running)
//! are open: probes carry no token.

pub mod auth;
pub mod definitions;
pub mod metrics;
pub mod pipelines;
pub mod plan;
pub mod search;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::control::Controller;
use crate::control::capture::CaptureController;
use crate::control::roster::Roster;
use auth::Auth;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.yaml");

/// What every handler can reach.
#[derive(Clone)]
pub struct Api {
    /// Every pipeline, sink and capture (PostgreSQL into Kafka), as the last reload left
    /// them.
    pub roster: Arc<Roster>,
    /// The cluster this daemon belongs to, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Renders the recorded metrics.
    pub metrics: Option<PrometheusHandle>,
}

impl Api {
    /// A sink pipeline; a capture's name is refused with 409, since what is asked (offsets,
    /// rebuild, wait, search) has no meaning for a capture, whose position is its slot's.
    fn pipeline(&self, name: &str) -> Result<Arc<Controller>, ApiError> {
        if self.roster.capture(name).is_some() {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "`{name}` is a capture pipeline (postgres_cdc): its position is its slot's, \
                     so it has no offsets, rebuild, wait or search"
                ),
            ));
        }
        self.roster
            .sink(name)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no pipeline named `{name}`")))
    }

    fn capture(&self, name: &str) -> Option<Arc<CaptureController>> {
        self.roster.capture(name)
    }
}

/// A refused request: its status and message, answered as `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

/// A refused control operation: the status says why, the message has no secrets.
impl From<crate::control::ControlError> for ApiError {
    fn from(e: crate::control::ControlError) -> ApiError {
        use crate::control::ControlError;
        let status = match e {
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, sinkd_core::config::redact_text(&e.to_string()))
    }
}

/// What a handler answers: a response, or an error as JSON with its status.
pub type Answer = Result<Response, ApiError>;

/// A JSON error body: `{"error": "…"}`.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The routes.
pub fn router(api: Api, auth: Auth) -> Router {
    let auth = Arc::new(auth);
    let mutations = Router::new()
        .route(
            "/pipelines/{name}",
            put(definitions::put).delete(definitions::delete),
        )
        .route("/pipelines/{name}/pause", post(pipelines::pause))
        .route("/pipelines/{name}/resume", post(pipelines::resume))
        .route("/pipelines/{name}/offsets", put(pipelines::offsets))
        .route("/pipelines/{name}/validate", post(plan::validate))
        .route(
            "/pipelines/{name}/rebuild",
            post(pipelines::rebuild).delete(pipelines::cancel_rebuild),
        )
        .route_layer(middleware::from_fn_with_state(auth.clone(), auth::mutation));
    let reads = Router::new()
        .route("/pipelines", get(pipelines::list))
        .route("/pipelines/{name}", get(pipelines::status))
        .route(
            "/pipelines/{name}/rebuild",
            get(pipelines::rebuild_progress),
        )
        .route("/pipelines/{name}/wait", get(pipelines::wait))
        .route("/pipelines/{name}/search", get(search::search))
        .route("/metrics", get(metrics::render))
        .route("/openapi.yaml", get(openapi))
        .route_layer(middleware::from_fn_with_state(auth, auth::read));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(mutations)
        .merge(reads)
        .fallback(no_route)
        .layer(middleware::from_fn(json_errors))
        .with_state(api)
}

/// An unknown path: 404 naming it.
async fn no_route(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route {method} {}; see /openapi.yaml", uri.path()),
    )
}

/// Every error answered as `{"error": "…"}`, also those axum answers by itself before a
/// handler runs (a path or query that does not parse, a method the route does not take):
/// clients handle one shape of error.
async fn json_errors(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match text.is_empty() {
        true => format!(
            "{} for {method} {path}",
            status.canonical_reason().unwrap_or("refused")
        ),
        false => text,
    };
    error(status, message)
}

/// The body of a request that takes JSON, whatever its `Content-Type` says (`curl -d`
/// sends a form's): `None` when empty; 400 naming where it does not parse, 413 past the
/// body limit.
pub fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<T>, ApiError> {
    let body = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        ApiError::bad_request(match e.classify() {
            serde_json::error::Category::Data => format!("the request body: {e}"),
            _ => format!("the request body is not JSON: {e}"),
        })
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

/// 200 while every pipeline is connected and running (a rebuild counts as running);
/// 503 naming the others and their state.
async fn readyz(State(api): State<Api>) -> Response {
    let sinks = api.roster.sinks();
    let captures = api.roster.captures();
    let states = sinks
        .iter()
        .map(|c| (&c.name, c.state_name()))
        .chain(captures.iter().map(|c| (&c.name, c.state_name())));
    let not_ready: Vec<String> = states
        .filter(|(_, state)| !matches!(*state, "running" | "rebuilding"))
        .map(|(name, state)| format!("{name} ({state})"))
        .collect();
    if not_ready.is_empty() {
        return "ready".into_response();
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("pipelines not ready: {}", not_ready.join(", ")),
    )
}
