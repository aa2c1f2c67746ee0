//! Handlers for what runners know: registered frameworks and trainer logs.

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
use super::AppState;
use crate::model::{ErrorBody, Framework};
use crate::runner::LogOptions;

/// Registered trainer frameworks.
#[utoipa::path(get, path = "/api/v1/training/frameworks", tag = "jobs",
    responses((status = 200, description = "Frameworks, by name", body = Vec<Framework>)))]
pub async fn frameworks(State(st): State<AppState>) -> Json<Vec<Framework>> {
    Json(st.jobs.registry().frameworks())
}

/// Query of the logs endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Keep streaming until the job ends.
    pub follow: Option<bool>,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// The trainer's stdout and stderr (`text/plain`); `follow=true` streams
/// until the job ends. A job that has not started yet has empty logs.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/logs", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id"), LogQuery),
    responses(
        (status = 200, description = "Log text", content_type = "text/plain"),
        (status = 404, description = "Unknown job", body = ErrorBody),
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
        let stream =
            st.runner.logs(&rec, opts).await.map_err(|e| {
                ApiError::Internal(format!("cannot read the logs of job {id}: {e}"))
            })?;
        if let Some(stream) = stream {
            return Ok(text(Body::from_stream(stream)));
        }
        // Nothing captured yet: wait for a launch when following.
        if !opts.follow || rec.job.status.is_terminal() {
            return Ok(text(Body::empty()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
