//! `POST /api/v1/prune` (admins): retention on demand, the route behind
//! `platform prune`. A thin handler over [`crate::jobs::Jobs::prune`]; the
//! answer comes when the prune has finished (or stopped, when the daemon
//! starts shutting down: what it did stays done and the report says so).

use axum::extract::State;
use axum::middleware;
use axum::routing::post;
use axum::{Json, Router};

use super::error::ApiError;
use super::extract::JsonBody;
use super::responses::{BadRequest, Forbidden, NotJson, TooLarge, Unauthorized, Unavailable};
use super::AppState;
use crate::model::{ErrorBody, PruneReport, PruneRequest};

/// The route (full path; merged into the app router), admins only.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/prune", post(prune))
        .route_layer(middleware::from_fn_with_state(
            "prune old jobs",
            super::auth::require_admin,
        ))
}

/// Remove the metric history (downsampled or deleted), archived logs and,
/// only when asked, artifacts of jobs that ended more than
/// `older_than_days` ago. Job rows stay (status, config, attempts), each
/// marked with what went (`pruned`), so a second prune skips them.
/// Points go in bounded writes that callbacks interleave with.
#[utoipa::path(post, path = "/api/v1/prune", tag = "service",
    request_body = PruneRequest,
    responses(
        (status = 200, description = "What was removed (with `dry_run`: what would be)", body = PruneReport),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "Another prune is running", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, description = "Invalid field (`older_than_days`, `max_points`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn prune(
    State(st): State<AppState>,
    body: JsonBody,
) -> Result<Json<PruneReport>, ApiError> {
    let req: PruneRequest = body.decode()?;
    Ok(Json(st.jobs.prune(&req, "api", &st.shutdown).await?))
}
