//! `/pipelines…`: status, pause and resume, offsets, rebuild, and the read-your-writes
//! wait.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sinkd_core::event::TopicPartition;

use super::{Answer, Api, ApiError, json_body};
use crate::control::rebuild::{Mode, Start};
use sinkd_kafka::Position;

/// `GET /pipelines`: every pipeline's status, and what the last reload of the files could
/// not apply.
pub async fn list(State(api): State<Api>) -> Response {
    let mut out = Vec::new();
    for c in api.roster.sinks() {
        out.push(serde_json::to_value(c.status().await).unwrap_or_default());
    }
    for c in api.roster.captures() {
        out.push(c.status().await);
    }
    Json(json!({ "pipelines": out, "problems": api.roster.problems() })).into_response()
}

/// `GET /pipelines/{name}`.
pub async fn status(State(api): State<Api>, Path(name): Path<String>) -> Answer {
    if let Some(c) = api.capture(&name) {
        return Ok(Json(c.status().await).into_response());
    }
    Ok(Json(api.pipeline(&name)?.status().await).into_response())
}

/// `POST /pipelines/{name}/pause`.
pub async fn pause(State(api): State<Api>, Path(name): Path<String>) -> Answer {
    switch(&api, &name, true).await
}

/// `POST /pipelines/{name}/resume`.
pub async fn resume(State(api): State<Api>, Path(name): Path<String>) -> Answer {
    switch(&api, &name, false).await
}

/// Pauses or resumes what runs under `name`, a capture or a pipeline, and answers with
/// its status afterwards.
async fn switch(api: &Api, name: &str, pause: bool) -> Answer {
    if let Some(cluster) = &api.cluster {
        return switch_cluster(api, cluster, name, pause).await;
    }
    if let Some(c) = api.capture(name) {
        match pause {
            true => c.pause().await,
            false => c.resume().await,
        }
        return Ok(Json(c.status().await).into_response());
    }
    let c = api.pipeline(name)?;
    if pause {
        c.pause().await?
    } else {
        c.resume().await?
    }
    Ok(Json(c.status().await).into_response())
}

/// Pause and resume in a cluster: stored as the pipeline's state in the cluster's topic,
/// which every daemon applies (and one that joins later); answered once applied here. A
/// resume also restarts the pipeline here if it failed here.
async fn switch_cluster(
    api: &Api,
    cluster: &crate::cluster::Cluster,
    name: &str,
    pause: bool,
) -> Answer {
    let capture = api.capture(name);
    let sink = match &capture {
        Some(_) => None,
        None => Some(api.pipeline(name)?),
    };
    if pause && sink.as_ref().is_some_and(|c| c.rebuilding()) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("pipeline `{name}` is rebuilding; cancel the rebuild first"),
        ));
    }
    cluster
        .set_paused(name, pause)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    if let Some(c) = capture {
        if !pause && matches!(c.state(), crate::control::State::Failed(_)) {
            c.resume().await;
        }
        return Ok(Json(c.status().await).into_response());
    }
    let c = sink.expect("a sink pipeline");
    if !pause && matches!(c.state(), crate::control::State::Failed(_)) {
        c.resume().await?;
    }
    Ok(Json(c.status().await).into_response())
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
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let c = api.pipeline(&name)?;
    let req: OffsetsRequest = json_body(body)?.ok_or_else(|| {
        ApiError::bad_request("a JSON body is needed: {\"to\": …} or {\"offsets\": […]}")
    })?;
    let kafka = c.kafka();
    let wanted: Result<Vec<(TopicPartition, i64)>, ApiError> = match (req.to, req.offsets) {
        (Some(to), None) => {
            let position = match to.as_str() {
                Some("earliest") => Ok(Position::Earliest),
                Some("latest") => Ok(Position::Latest),
                _ => parse_time(&to).map(Position::Time),
            };
            match position {
                Err(e) => Err(ApiError::bad_request(format!("to: {e}"))),
                Ok(position) => tokio::task::spawn_blocking(move || kafka.offsets_at(position))
                    .await
                    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
                    .and_then(|r| {
                        r.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
                    }),
            }
        }
        (None, Some(list)) => match list.iter().find(|o| o.offset < 0) {
            // librdkafka reads -1 and -2 as "the end" and "the start": a typo would
            // silently skip the whole log.
            Some(o) => Err(ApiError::bad_request(format!(
                "offsets: {}/{} offset {} is negative; give the next offset to read, or \"to\": \"earliest\" | \"latest\"",
                o.topic, o.partition, o.offset
            ))),
            None => Ok(list
                .into_iter()
                .map(|o| ((Arc::from(o.topic.as_str()), o.partition), o.offset))
                .collect()),
        },
        _ => Err(ApiError::bad_request(
            "give either \"to\" (earliest, latest, or a time) or \"offsets\"",
        )),
    };
    let wanted = wanted?;
    let warnings = past_the_end(&c, &wanted).await;
    let moved = c.set_offsets(wanted).await?;
    for w in &warnings {
        tracing::warn!(pipeline = %name, "{w}");
    }
    let offsets: Vec<_> = moved
        .iter()
        .map(|((t, p), o)| json!({"topic": &**t, "partition": p, "offset": o}))
        .collect();
    Ok(Json(json!({ "offsets": offsets, "warnings": warnings })).into_response())
}

/// Warnings for explicit offsets past a partition's known end: the records produced up to
/// them will not be read. A warning, not a refusal: the end is the furthest known (the
/// brokers' answer now, what the pipeline's consumer saw, what its sink stores), and some
/// brokers' ListOffsets lags well behind the log (Tansu answers 1 after one batch of 100),
/// so a refusal would stop an operator skipping a poisoned record there.
async fn past_the_end(
    c: &crate::control::Controller,
    list: &[(TopicPartition, i64)],
) -> Vec<String> {
    let kafka = c.kafka();
    let fresh = tokio::task::spawn_blocking(move || kafka.watermarks())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let known = c.ends(None).await.map(|(e, _)| e).unwrap_or_default();
    list.iter()
        .filter_map(|(tp, offset)| {
            let end = fresh.get(tp).map(|w| w.high).max(known.get(tp).copied())?;
            (*offset > end).then(|| {
                format!(
                    "{}/{} offset {offset} is past the end the brokers report ({end}): the \
                     records produced up to it will not be read",
                    tp.0, tp.1
                )
            })
        })
        .collect()
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
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let c = api.pipeline(&name)?;
    let req: RebuildRequest = json_body(body)?.unwrap_or_default();
    let start = match &req.start {
        None => Start::Earliest,
        Some(v) if v.as_str() == Some("earliest") => Start::Earliest,
        Some(v) => Start::Timestamp(
            parse_time(v).map_err(|e| ApiError::bad_request(format!("start: {e}")))?,
        ),
    };
    let status = c.start_rebuild(req.mode, start).await?;
    Ok((StatusCode::ACCEPTED, Json(status.view())).into_response())
}

/// `GET /pipelines/{name}/rebuild`: the current or last rebuild.
pub async fn rebuild_progress(State(api): State<Api>, Path(name): Path<String>) -> Answer {
    match api.pipeline(&name)?.rebuild_status() {
        Some(r) => Ok(Json(r.view()).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("pipeline `{name}` has not been rebuilt since the daemon started"),
        )),
    }
}

/// `DELETE /pipelines/{name}/rebuild`: cancels and drops the shadow.
pub async fn cancel_rebuild(State(api): State<Api>, Path(name): Path<String>) -> Answer {
    let c = api.pipeline(&name)?;
    c.cancel_rebuild().await?;
    Ok(match c.rebuild_status() {
        Some(r) => Json(r.view()).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
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
    let seconds = match s.strip_suffix("ms") {
        Some(ms) => ms.parse::<u64>().ok().map(|ms| ms as f64 / 1000.0),
        None => s.strip_suffix('s').unwrap_or(s).parse::<f64>().ok(),
    };
    // Capped before it becomes a Duration, which a number past u64 seconds would panic.
    seconds
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v.min(300.0)))
        .ok_or_else(|| format!("timeout {s:?} is not a duration (250ms, 5s, 2.5)"))
}

/// `GET /pipelines/{name}/wait?topic=…&partition=…&offset=…&timeout=…`: 200 once the
/// record at that offset is applied (the sink's offset is past it), 408 on timeout.
pub async fn wait(
    State(api): State<Api>,
    Path(name): Path<String>,
    p: Result<Query<WaitParams>, QueryRejection>,
) -> Answer {
    let Query(p) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let c = api.pipeline(&name)?;
    let timeout = parse_timeout(p.timeout.as_deref()).map_err(ApiError::bad_request)?;
    let tp: TopicPartition = (Arc::from(p.topic.as_str()), p.partition);
    // A typo would otherwise wait out the whole timeout.
    if !c.has_partition(&tp).await? {
        return Err(ApiError::bad_request(format!(
            "{}/{} is not a partition of pipeline `{name}`'s topics",
            p.topic, p.partition
        )));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut commits = c.stats.subscribe();
    let mut asked: Option<tokio::time::Instant> = None;
    loop {
        // A partition this process holds is applied when its own commit says so: that is
        // counted after the sink has made the batch readable (a Tantivy reader reloads
        // after the commit, so the checkpoint on disk leads searches by an instant). The
        // sink's checkpoint covers partitions another instance applies, and is asked
        // every 250 ms at most.
        let held = c.stats.partition(&tp);
        let mut applied = held.and_then(|p| p.next);
        if held.is_none() && asked.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
            asked = Some(tokio::time::Instant::now());
            if let Ok(stored) = c.checkpoints().load(std::slice::from_ref(&tp)).await {
                applied = applied.max(stored.get(&tp).copied());
            }
        }
        if let Some(next) = applied.filter(|n| *n > p.offset) {
            return Ok(Json(json!({ "applied": true, "sink_offset": next })).into_response());
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(ApiError(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("{}/{} offset {} not applied within {timeout:?} (sink offset {applied:?})",
                            p.topic, p.partition, p.offset),
                ));
            }
            _ = commits.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
