//! Handlers for scheduling: queues (list: everyone; pause, resume:
//! admins), a pending job's priority (its owner or an admin), and the
//! trainer's heartbeat. Thin wrappers over [`crate::jobs::Jobs`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::audit::{Audited, Draft};
use super::auth::Actor;
use super::error::ApiError;
use super::extract::{JobId, JsonBody};
use super::responses::{BadRequest, Forbidden, NotJson, TooLarge, Unauthorized, Unavailable};
use super::AppState;
use crate::model::{ErrorBody, Job, QueueInfo, UpdateJob};

/// The queue routes (user routes; pausing and resuming for admins).
pub fn queue_routes() -> Router<AppState> {
    let admin = Router::new()
        .route("/api/v1/queues/{name}/pause", post(pause_queue))
        .route("/api/v1/queues/{name}/resume", post(resume_queue))
        .route_layer(middleware::from_fn_with_state(
            "pause or resume queues",
            super::auth::require_admin,
        ));
    Router::new()
        .route("/api/v1/queues", get(list_queues))
        .merge(admin)
}

/// Every queue: limits, whether it is paused, running and pending counts.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    responses(
        (status = 200, description = "Queues, by name (`default` always among them)", body = Vec<QueueInfo>),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_queues(State(st): State<AppState>) -> Result<Json<Vec<QueueInfo>>, ApiError> {
    Ok(Json(st.jobs.queues().await?))
}

/// Stop launching jobs from a queue; running jobs go on. Survives restarts.
#[utoipa::path(post, path = "/api/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "Paused: the queue as it is now", body = QueueInfo),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No queue has this name", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn pause_queue(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<QueueInfo>, ApiError> {
    Ok(Json(st.jobs.pause_queue(&name, true).await?))
}

/// Launch jobs from a paused queue again.
#[utoipa::path(post, path = "/api/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "Resumed: the queue as it is now", body = QueueInfo),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No queue has this name", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn resume_queue(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<QueueInfo>, ApiError> {
    Ok(Json(st.jobs.pause_queue(&name, false).await?))
}

/// Change a pending job's priority (0–100): its owner or an admin.
#[utoipa::path(patch, path = "/api/v1/training/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    request_body = UpdateJob,
    responses(
        (status = 200, description = "Updated", body = Job),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A member updating another user's job; the message names the owner", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 409, description = "A priority change for a job no longer pending; `status` says what it is (tags and notes change in any status)", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, description = "Invalid field or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn update_job(
    State(st): State<AppState>,
    Actor(actor): Actor,
    audit: Draft,
    JobId(id): JobId,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let update: UpdateJob = body.decode()?;
    // An update that changes nothing is left to the audit middleware.
    let changes = update.priority.is_some() || update.tags.is_some() || update.note.is_some();
    let entry = audit.finish(id, StatusCode::OK.as_u16());
    let job = st.jobs.update_as(id, &actor, update, Some(entry)).await?;
    let mut resp = Json(job).into_response();
    if changes {
        resp.extensions_mut().insert(Audited);
    }
    Ok(resp)
}

/// A trainer's sign of life: keeps its job from being marked `stalled`
/// (and clears the condition). Cheap: written at most every few seconds.
#[utoipa::path(post, path = "/api/v1/training/jobs/{id}/heartbeat", tag = "trainer",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    security(("callback_token" = [])),
    responses(
        (status = 204, description = "Noted"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn heartbeat(
    State(st): State<AppState>,
    JobId(id): JobId,
) -> Result<StatusCode, ApiError> {
    st.jobs.heartbeat(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
