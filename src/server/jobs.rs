//! Handlers for `/api/v1/training/jobs…`: thin wrappers that extract,
//! call [`crate::jobs::Jobs`], and shape the response.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{ApiQuery, JobId, JsonBody};
use super::AppState;
use crate::model::{
    BatchAck, CallbackAck, CreateJob, ErrorBody, Job, JobListQuery, LaunchPlan, Metric,
    MetricBatch, MetricQuery, TrainingUpdate,
};
use crate::runner::{PlanError, MASKED};

/// Query of `POST /api/v1/training/jobs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Validate the job and answer 200 with what the runner would create or
    /// run (Kubernetes manifests, or the process's argv and environment,
    /// secrets masked), storing and starting nothing.
    pub dry_run: Option<bool>,
}

/// Create a training job; it starts `pending` and the scheduler launches it.
/// With `dry_run=true`, answer what would be created instead.
#[utoipa::path(post, path = "/api/v1/training/jobs", tag = "jobs",
    params(CreateQuery),
    request_body = CreateJob,
    responses(
        (status = 201, description = "Created", body = Job),
        (status = 200, description = "Dry run: what the runner would create; nothing was stored", body = LaunchPlan),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field, unknown framework or missing dataset", body = ErrorBody),
    ))]
pub async fn create_job(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<CreateQuery>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: CreateJob = body.decode()?;
    if q.dry_run == Some(true) {
        return Ok(Json(dry_run(&st, req).await?).into_response());
    }
    Ok((StatusCode::CREATED, Json(st.jobs.create(req).await?)).into_response())
}

/// What launching `req` would do, with nothing stored.
async fn dry_run(st: &AppState, req: CreateJob) -> Result<LaunchPlan, ApiError> {
    let rec = st.jobs.draft(req).await?;
    // No token is minted for a plan: its value is masked anyway.
    let spec = st
        .specs
        .build(&rec, MASKED)
        .map_err(|e| ApiError::invalid("framework", e.to_string()))?;
    st.runner.plan(&spec).await.map_err(|e| match e {
        PlanError::Invalid(v) => ApiError::Invalid(v),
        PlanError::Runner(e) => ApiError::Internal(format!("cannot plan the launch: {e}")),
    })
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/api/v1/training/jobs", tag = "jobs",
    params(JobListQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = Vec<Job>),
        (status = 422, description = "Invalid query", body = ErrorBody),
    ))]
pub async fn list_jobs(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> Result<Json<Vec<Job>>, ApiError> {
    Ok(Json(st.jobs.list(q.validate()?).await?))
}

/// Get one job.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
    ))]
pub async fn get_job(State(st): State<AppState>, JobId(id): JobId) -> Result<Json<Job>, ApiError> {
    Ok(Json(st.jobs.get(id).await?))
}

/// Cancel a job.
#[utoipa::path(delete, path = "/api/v1/training/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 400, description = "Already finished", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
    ))]
pub async fn cancel_job(
    State(st): State<AppState>,
    JobId(id): JobId,
) -> Result<StatusCode, ApiError> {
    st.jobs.cancel(id, "cancelled by user").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Trainer callback: status, progress, message and one metric point.
#[utoipa::path(post, path = "/api/v1/training/jobs/{id}/callback", tag = "trainer",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    request_body = TrainingUpdate,
    security(("callback_token" = [])),
    responses(
        (status = 200, description = "Applied (or an already-applied sequence)", body = CallbackAck),
        (status = 401, description = "Missing or wrong callback token", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 409, description = "The job already ended", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ))]
pub async fn callback(
    State(st): State<AppState>,
    JobId(id): JobId,
    body: JsonBody,
) -> Result<Json<CallbackAck>, ApiError> {
    let update: TrainingUpdate = body.decode()?;
    Ok(Json(st.jobs.callback(id, update).await?))
}

/// A job's metric points.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/metrics", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id"), MetricQuery),
    responses(
        (status = 200, description = "Points (newest first unless order=asc)", body = Vec<Metric>),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Invalid query", body = ErrorBody),
    ))]
pub async fn list_metrics(
    State(st): State<AppState>,
    JobId(id): JobId,
    ApiQuery(q): ApiQuery<MetricQuery>,
) -> Result<Json<Vec<Metric>>, ApiError> {
    Ok(Json(st.jobs.metrics(id, q.validate()?).await?))
}

/// Batch metric ingest: up to 1,000 points, all or nothing.
#[utoipa::path(post, path = "/api/v1/training/jobs/{id}/metrics", tag = "trainer",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    request_body = MetricBatch,
    security(("callback_token" = [])),
    responses(
        (status = 200, description = "Stored", body = BatchAck),
        (status = 401, description = "Missing or wrong callback token", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 409, description = "The job already ended", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid point or too many points", body = ErrorBody),
    ))]
pub async fn ingest_metrics(
    State(st): State<AppState>,
    JobId(id): JobId,
    body: JsonBody,
) -> Result<Json<BatchAck>, ApiError> {
    let batch: MetricBatch = body.decode()?;
    Ok(Json(st.jobs.ingest(id, batch).await?))
}
