//! `/pipelines…`: status, pause and resume, offsets, rebuild, and the read-your-writes
//! wait.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sinkd_core::event::TopicPartition;

use super::{Api, ApiError, error};
use crate::control::ControlError;
use crate::control::rebuild::{Mode, Start};
use sinkd_kafka::Position;

fn refused(e: ControlError) -> Response {
    let status = match e {
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, sinkd_core::config::redact_text(&e.to_string()))
}

/// `GET /pipelines`: every pipeline's status.
pub async fn list(State(api): State<Api>) -> Response {
    let mut out = Vec::new();
    for c in api.pipelines.values() {
        out.push(serde_json::to_value(c.status().await).unwrap_or_default());
    }
    for c in api.captures.values() {
        out.push(c.status().await);
    }
    Json(json!({ "pipelines": out })).into_response()
}

/// `GET /pipelines/{name}`.
pub async fn status(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if let Some(c) = api.capture(&name) {
        return Json(c.status().await).into_response();
    }
    match api.pipeline(&name) {
        Ok(c) => Json(c.status().await).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /pipelines/{name}/pause`.
pub async fn pause(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if let Some(c) = api.capture(&name) {
        return match c.pause().await {
            Ok(()) => Json(c.status().await).into_response(),
            Err(e) => refused(e),
        };
    }
    let c = match api.pipeline(&name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match c.pause().await {
        Ok(()) => Json(c.status().await).into_response(),
        Err(e) => refused(e),
    }
}

/// `POST /pipelines/{name}/resume`.
pub async fn resume(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if let Some(c) = api.capture(&name) {
        return match c.resume().await {
            Ok(()) => Json(c.status().await).into_response(),
            Err(e) => refused(e),
        };
    }
    let c = match api.pipeline(&name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match c.resume().await {
        Ok(()) => Json(c.status().await).into_response(),
        Err(e) => refused(e),
    }
}

/// Where `PUT /pipelines/{name}/offsets` moves a paused pipeline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetsRequest {
    /// `earliest`, `latest`, an RFC 3339 time, or a number of ms since the epoch.
    to: Option<serde_json::Value>,
    /// Explicit offsets instead.
    offsets: Option<Vec<ExplicitOffset>>,
}

/// One partition's new next offset.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitOffset {
    topic: String,
    partition: i32,
    offset: i64,
}

/// `earliest`, an RFC 3339 time or epoch ms.
fn parse_time(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{n} is not a time in ms since the epoch")),
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})")),
        other => Err(format!("{other} is not a time")),
    }
}

/// `PUT /pipelines/{name}/offsets`.
pub async fn offsets(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Result<Json<OffsetsRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let c = match api.pipeline(&name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let kafka = c.kafka();
    let wanted: Result<Vec<(TopicPartition, i64)>, ApiError> = match (req.to, req.offsets) {
        (Some(to), None) => {
            let position = match to.as_str() {
                Some("earliest") => Ok(Position::Earliest),
                Some("latest") => Ok(Position::Latest),
                _ => parse_time(&to).map(Position::Time),
            };
            match position {
                Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, format!("to: {e}"))),
                Ok(position) => tokio::task::spawn_blocking(move || kafka.offsets_at(position))
                    .await
                    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
                    .and_then(|r| r.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.0))),
            }
        }
        (None, Some(list)) => Ok(list
            .into_iter()
            .map(|o| ((Arc::from(o.topic.as_str()), o.partition), o.offset))
            .collect()),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give either \"to\" (earliest, latest, or a time) or \"offsets\"".into(),
        )),
    };
    let wanted = match wanted {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    match c.set_offsets(wanted).await {
        Ok(moved) => {
            let offsets: Vec<_> = moved
                .iter()
                .map(|((t, p), o)| json!({"topic": &**t, "partition": p, "offset": o}))
                .collect();
            Json(json!({ "offsets": offsets })).into_response()
        }
        Err(e) => refused(e),
    }
}

/// `POST /pipelines/{name}/rebuild` body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    #[serde(default)]
    mode: Mode,
    /// `earliest` (default), an RFC 3339 time or epoch ms.
    start: Option<serde_json::Value>,
}

/// `POST /pipelines/{name}/rebuild`: 202 with the progress.
pub async fn rebuild(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Option<Json<RebuildRequest>>,
) -> Response {
    let c = match api.pipeline(&name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let start = match &req.start {
        None => Start::Earliest,
        Some(v) if v.as_str() == Some("earliest") => Start::Earliest,
        Some(v) => match parse_time(v) {
            Ok(ms) => Start::Timestamp(ms),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("start: {e}")),
        },
    };
    match c.start_rebuild(req.mode, start).await {
        Ok(status) => (StatusCode::ACCEPTED, Json(status.view())).into_response(),
        Err(e) => refused(e),
    }
}

/// `GET /pipelines/{name}/rebuild`: the current or last rebuild.
pub async fn rebuild_progress(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let c = match api.pipeline(&name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match c.rebuild_status() {
        Some(r) => Json(r.view()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("pipeline `{name}` has not been rebuilt since the daemon started"),
        ),
    }
}

/// `DELETE /pipelines/{name}/rebuild`: cancels and drops the shadow.
pub async fn cancel_rebuild(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let c = match api.pipeline(&name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match c.cancel_rebuild().await {
        Ok(()) => match c.rebuild_status() {
            Some(r) => Json(r.view()).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        Err(e) => refused(e),
    }
}

/// `GET /pipelines/{name}/wait` parameters.
#[derive(Deserialize)]
pub struct WaitParams {
    topic: String,
    partition: i32,
    offset: i64,
    /// `250ms`, `5s` or seconds; default 30 s, at most 300 s.
    timeout: Option<String>,
}

fn parse_timeout(s: Option<&str>) -> Result<Duration, String> {
    let Some(s) = s else {
        return Ok(Duration::from_secs(30));
    };
    let d = if let Some(ms) = s.strip_suffix("ms") {
        ms.parse::<u64>().map(Duration::from_millis).ok()
    } else {
        s.strip_suffix('s')
            .unwrap_or(s)
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64)
    };
    d.map(|d| d.min(Duration::from_secs(300)))
        .ok_or_else(|| format!("timeout {s:?} is not a duration (250ms, 5s, 2.5)"))
}

/// `GET /pipelines/{name}/wait?topic=…&partition=…&offset=…&timeout=…`: 200 once the
/// record at that offset is applied (the sink's offset is past it), 408 on timeout.
pub async fn wait(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<WaitParams>,
) -> Response {
    let c = match api.pipeline(&name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let timeout = match parse_timeout(p.timeout.as_deref()) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let tp: TopicPartition = (Arc::from(p.topic.as_str()), p.partition);
    // A typo would otherwise wait out the whole timeout.
    match c.has_partition(&tp).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}/{} is not a partition of pipeline `{name}`'s topics",
                    p.topic, p.partition
                ),
            );
        }
        Err(e) => return refused(e),
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut commits = c.stats.subscribe();
    let mut asked: Option<tokio::time::Instant> = None;
    loop {
        // This process's own progress first; the sink's checkpoint covers partitions
        // another instance applies, and is asked every 250 ms at most.
        let mut applied = c.stats.partition(&tp).and_then(|p| p.next);
        if applied.is_none_or(|n| n <= p.offset)
            && asked.is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
        {
            asked = Some(tokio::time::Instant::now());
            if let Ok(stored) = c.checkpoints().load(std::slice::from_ref(&tp)).await {
                applied = applied.max(stored.get(&tp).copied());
            }
        }
        if let Some(next) = applied.filter(|n| *n > p.offset) {
            return Json(json!({ "applied": true, "sink_offset": next })).into_response();
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("{}/{} offset {} not applied within {timeout:?} (sink offset {applied:?})",
                            p.topic, p.partition, p.offset),
                );
            }
            _ = commits.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
