//! Handlers for what runners know: registered frameworks (and reloading
//! them) and trainer logs.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{ApiQuery, JobId};
use super::responses::{Unauthorized, Unavailable};
use super::AppState;
use crate::model::{ErrorBody, Framework};
use crate::runner::LogOptions;

/// Registered trainer frameworks.
#[utoipa::path(get, path = "/api/v1/training/frameworks", tag = "jobs",
    responses(
        (status = 200, description = "Frameworks, by name", body = Vec<Framework>),
        (status = 401, response = Unauthorized),
    ))]
pub async fn frameworks(State(st): State<AppState>) -> Json<Vec<Framework>> {
    Json(st.registry.current().frameworks())
}

/// Read the trainers file and directory again (as SIGHUP does), so edits
/// apply without a restart. Jobs created or launched afterwards use the
/// new entries; running trainers are not touched. When the files are
/// invalid nothing changes and the answer says why.
#[utoipa::path(post, path = "/api/v1/training/frameworks/reload", tag = "jobs",
    responses(
        (status = 200, description = "Reloaded: the frameworks now registered", body = Vec<Framework>),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "Only admins may reload frameworks", body = ErrorBody),
        (status = 422, description = "The trainers file or directory is invalid; the frameworks registered before stay", body = ErrorBody),
    ))]
pub async fn reload_frameworks(
    State(st): State<AppState>,
    super::auth::Actor(p): super::auth::Actor,
) -> Result<Json<Vec<Framework>>, ApiError> {
    if !p.is_admin() {
        return Err(ApiError::Forbidden(
            "only admins may reload frameworks".into(),
        ));
    }
    let trainers = st.registry.clone();
    let reloaded = tokio::task::spawn_blocking(move || trainers.reload())
        .await
        .map_err(|e| ApiError::Internal(format!("the reload task failed: {e}")))?;
    match reloaded {
        Ok(registry) => Ok(Json(registry.frameworks())),
        Err(e) => Err(ApiError::invalid(
            "trainers",
            format!("{e}; the frameworks registered before stay in use"),
        )),
    }
}

/// Query of the logs endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Keep streaming until the job ends.
    pub follow: Option<bool>,
    /// Only the last N lines.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub tail: Option<usize>,
}

/// The trainer's stdout and stderr (`text/plain`); `follow=true` streams
/// until the job ends. A job that has not started yet has empty logs, and
/// so has one whose logs retention deleted (`pruned.logs`).
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/logs", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id"), LogQuery),
    responses(
        (status = 200, description = "Log text", content_type = "text/plain"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Invalid query or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn logs(
    State(st): State<AppState>,
    JobId(id): JobId,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let opts = LogOptions {
        follow: q.follow.unwrap_or(false),
        tail: q.tail,
    };
    loop {
        let rec = st.jobs.record(id).await?;
        if rec.job.pruned.as_ref().is_some_and(|p| p.logs) {
            // Retention deleted it: a copy the runner still holds (for a
            // few seconds after archiving) is not served either.
            return Ok(text(Body::empty()));
        }
        let stream =
            st.runner.logs(&rec, opts).await.map_err(|e| {
                ApiError::Internal(format!("cannot read the logs of job {id}: {e}"))
            })?;
        if let Some(stream) = stream {
            // A followed log must not hold up a graceful shutdown.
            let stream =
                futures::StreamExt::take_until(stream, st.shutdown.clone().cancelled_owned());
            return Ok(text(Body::from_stream(stream)));
        }
        // The runner's copy is gone: read the archived log.
        if rec.job.status.is_terminal() {
            if let Some(archived) = st.store.open_log(id).await? {
                let body = match opts.tail {
                    Some(n) => Body::from(tail_of(archived, n).await?),
                    None => Body::from_stream(archived),
                };
                return Ok(text(body));
            }
        }
        // Nothing captured yet: wait for a launch when following.
        if !opts.follow || rec.job.status.is_terminal() {
            return Ok(text(Body::empty()));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = st.shutdown.cancelled() => return Ok(text(Body::empty())),
        }
    }
}

/// The last `n` lines of an archived log (at most the runner's log budget).
async fn tail_of(stream: crate::storage::ByteStream, n: usize) -> Result<Vec<u8>, ApiError> {
    use futures::TryStreamExt;
    let all: Vec<u8> = stream
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read the archived log: {e}")))?;
    Ok(crate::runner::logfile::last_lines(&all, n))
}

fn text(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
