//! Handlers for `/api/v1/sweeps…`: create a sweep (its jobs through the
//! normal create checks, stored all or nothing), list, get and cancel.
//! Thin wrappers over [`crate::jobs::Jobs`]; a member sees only their own
//! sweeps.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::audit::{Audited, Draft};
use super::auth::Actor;
use super::error::ApiError;
use super::extract::{ApiQuery, JsonBody};
use super::responses::{BadRequest, Invalid, NotJson, TooLarge, Unauthorized, Unavailable};
use super::AppState;
use crate::model::{CreateSweep, ErrorBody, Sweep};

/// The sweep routes (user routes).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sweeps", post(create_sweep).get(list_sweeps))
        .route("/api/v1/sweeps/{id}", get(get_sweep))
        .route("/api/v1/sweeps/{id}/cancel", post(cancel_sweep))
}

/// Query of `GET /api/v1/sweeps`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SweepListQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Sweeps to skip (≥ 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

fn sweep_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::invalid("sweep_id", format!("{raw:?} is not a valid UUID")))
}

/// Create a sweep: the base job's fields (as `POST /api/v1/training/jobs`
/// takes them) plus `parameters`; `method: grid` (default) creates every
/// combination, `method: random` creates `count` jobs drawn with `seed`.
/// Each job gets the base config with its values merged in (dotted keys
/// nest), a name like `lr=0.001,batch=32` and the sweep's id. Every job
/// passes the single create's checks, and all are stored or none.
#[utoipa::path(post, path = "/api/v1/sweeps", tag = "sweeps",
    request_body = CreateSweep,
    responses(
        (status = 201, description = "Created: the sweep with its jobs", body = Sweep,
            headers(("Location" = String, description = "The new sweep's URL path"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A member submitting with another user's `user_id`", body = ErrorBody),
        (status = 404, description = "A job named in `after` does not exist", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, description = "Invalid field, spec (no parameters, a range in a grid, over 500 jobs, …), unknown framework or queue, or a dataset missing from the store", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn create_sweep(
    State(st): State<AppState>,
    Actor(actor): Actor,
    audit: Draft,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: CreateSweep = body.decode()?;
    let entry = audit.finish("", StatusCode::CREATED.as_u16());
    let sweep = st.jobs.create_sweep(&actor, req, Some(entry)).await?;
    let location = format!("/api/v1/sweeps/{}", sweep.sweep.id);
    let mut resp = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(sweep),
    )
        .into_response();
    resp.extensions_mut().insert(Audited);
    Ok(resp)
}

/// List sweeps, newest first, with their jobs' counts by status (not the
/// jobs). Members see their own sweeps; admins every one.
#[utoipa::path(get, path = "/api/v1/sweeps", tag = "sweeps",
    params(SweepListQuery),
    responses(
        (status = 200, description = "Sweeps, newest first", body = Vec<Sweep>),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_sweeps(
    State(st): State<AppState>,
    Actor(actor): Actor,
    ApiQuery(q): ApiQuery<SweepListQuery>,
) -> Result<Json<Vec<Sweep>>, ApiError> {
    Ok(Json(st.jobs.sweeps_as(&actor, q.limit, q.offset).await?))
}

/// One sweep with its jobs (in creation order, with their status) and
/// their counts by status.
#[utoipa::path(get, path = "/api/v1/sweeps/{id}", tag = "sweeps",
    params(("id" = uuid::Uuid, Path, description = "Sweep id")),
    responses(
        (status = 200, description = "The sweep", body = Sweep),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown sweep, or (to a member) another user's", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn get_sweep(
    State(st): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> Result<Json<Sweep>, ApiError> {
    Ok(Json(st.jobs.sweep_as(&actor, sweep_id(&id)?).await?))
}

/// Cancel every job of the sweep that has not ended (jobs that ended
/// stay as they are); answers the sweep afterwards.
#[utoipa::path(post, path = "/api/v1/sweeps/{id}/cancel", tag = "sweeps",
    params(("id" = uuid::Uuid, Path, description = "Sweep id")),
    responses(
        (status = 200, description = "The sweep after cancelling", body = Sweep),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown sweep, or (to a member) another user's", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn cancel_sweep(
    State(st): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> Result<Json<Sweep>, ApiError> {
    Ok(Json(st.jobs.cancel_sweep_as(&actor, sweep_id(&id)?).await?))
}
