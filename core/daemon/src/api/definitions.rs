//! `PUT` and `DELETE /pipelines/{name}`: pipelines defined at runtime, in a cluster
//! (`--cluster`). The definition is validated here first (an invalid one changes
//! nothing), stored in the cluster's topic, and applied by every daemon of the cluster;
//! the answer comes once this daemon has applied it. A pipeline that comes from a file
//! is changed in its file, never over the API.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::plan::{file_text, load, located, not_named};
use super::{Answer, Api, ApiError};
use crate::cluster::Cluster;
use crate::reload::{cluster_path, from_cluster};

/// `PUT /pipelines/{name}`: the body is the pipeline file, YAML or JSON. 201 when
/// created, 200 when updated, with the pipeline's status here.
pub async fn put(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let cluster = cluster_of(&api)?;
    let text = file_text(body)?;
    file_owned(&api, &name)?;
    let loaded = load(cluster_path(&name), text.clone()).await?;
    match loaded {
        Ok(f) if f.name() == name => {}
        Ok(f) => return Err(ApiError::bad_request(not_named(&f, &name))),
        Err(errors) => {
            let list: Vec<_> = errors.iter().map(located).collect();
            let first = errors.first().map(ToString::to_string).unwrap_or_default();
            let body = json!({"error": format!("the pipeline does not validate: {first}"), "errors": list});
            return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
        }
    }
    let created = !cluster.defines(&name);
    cluster
        .put(&name, Some(&text))
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied(&api, &name).await)).into_response())
}

/// `DELETE /pipelines/{name}`: stops the pipeline on every daemon of the cluster and
/// removes its definition; its target and checkpoints stay.
pub async fn delete(
    State(api): State<Api>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let cluster = cluster_of(&api)?;
    if query.is_some_and(|q| q.contains("drop_target")) {
        return Err(ApiError::bad_request(
            "drop_target is not supported yet: the target and its checkpoints stay; drop them in the sink",
        ));
    }
    file_owned(&api, &name)?;
    if !cluster.defines(&name) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no pipeline named `{name}` in cluster `{}`", cluster.id),
        ));
    }
    cluster
        .put(&name, None)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({"deleted": name})).into_response())
}

fn cluster_of(api: &Api) -> Result<&Cluster, ApiError> {
    api.cluster.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            "this daemon is not in a cluster (--cluster / SINKD_CLUSTER): its pipelines come \
             from its files; change them there (with --watch, or SIGHUP)"
                .into(),
        )
    })
}

/// 409 when pipeline `name` runs here from a file.
fn file_owned(api: &Api, name: &str) -> Result<(), ApiError> {
    match api.roster.origin(name) {
        Some((p, _)) if !from_cluster(&p) => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "pipeline `{name}` comes from the file {} on this daemon: change it there",
                p.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// The pipeline's status here after a write, with what kept it from applying, if anything.
async fn applied(api: &Api, name: &str) -> serde_json::Value {
    let problems: Vec<String> = api
        .roster
        .problems()
        .into_iter()
        .filter(|p| p.starts_with(&cluster_path(name).display().to_string()))
        .collect();
    let status = match (api.roster.sink(name), api.roster.capture(name)) {
        (Some(c), _) => serde_json::to_value(c.status().await).unwrap_or_default(),
        (None, Some(c)) => c.status().await,
        (None, None) => serde_json::Value::Null,
    };
    json!({"pipeline": status, "problems": problems})
}
