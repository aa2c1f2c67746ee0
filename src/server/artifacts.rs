//! Handlers for `/api/v1/training/jobs/{id}/artifacts…`: trainers upload
//! outputs with their job's callback token; users list and download them.
//!
//! Uploads are accepted whatever the job's status: a trainer typically
//! uploads its final checkpoint right after (or while) reporting
//! `completed`, and the daemon may have marked the job finished on exit a
//! moment earlier. The 256-bit per-job token is what guards the job's
//! prefix, and paths cannot leave it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};

use super::datasets::{close_after_failed_upload, download, store_body, FilePath};
use super::error::ApiError;
use super::extract::JobId;
use super::AppState;
use crate::model::{ErrorBody, StoredFile};
use crate::storage::keys;

/// Listing and download, relative to `/api/v1/training` (user routes).
pub fn user_routes() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/artifacts", get(list_artifacts))
        .route("/jobs/{id}/artifacts/{*path}", get(download_artifact))
}

/// Upload, relative to `/api/v1/training` (trainer routes).
pub fn trainer_routes() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/artifacts/{*path}", put(upload_artifact))
        .route_layer(axum::middleware::from_fn(close_after_failed_upload))
}

/// Upload an artifact (checkpoint, export…) for a job, streamed to the store.
#[utoipa::path(put, path = "/api/v1/training/jobs/{id}/artifacts/{path}", tag = "trainer",
    params(
        ("id" = uuid::Uuid, Path, description = "Job id"),
        ("path" = String, Path, description = "Path under the job's outputs, '/'-separated"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    security(("callback_token" = [])),
    responses(
        (status = 201, description = "Stored", body = StoredFile),
        (status = 400, description = "The upload broke off; nothing was stored", body = ErrorBody),
        (status = 401, description = "Missing or wrong callback token", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 413, description = "Larger than MAX_OBJECT_BYTES", body = ErrorBody),
        (status = 422, description = "Invalid path or id", body = ErrorBody),
        (status = 503, description = "Object store unavailable", body = ErrorBody),
    ))]
pub async fn upload_artifact(
    State(st): State<AppState>,
    JobId(id): JobId,
    FilePath(path): FilePath,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<StoredFile>), ApiError> {
    let key = keys::output_file(id, &path)?;
    store_body(&st.store, &key, path, &headers, body).await
}

/// List a job's artifacts.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/artifacts", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Artifacts, by path", body = Vec<StoredFile>),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
    ))]
pub async fn list_artifacts(
    State(st): State<AppState>,
    JobId(id): JobId,
) -> Result<Json<Vec<StoredFile>>, ApiError> {
    st.jobs.get(id).await?;
    Ok(Json(st.store.artifacts(id).await?))
}

/// Download an artifact (or a 307 to a presigned URL when configured).
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/artifacts/{path}", tag = "jobs",
    params(
        ("id" = uuid::Uuid, Path, description = "Job id"),
        ("path" = String, Path, description = "Artifact path"),
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 307, description = "Redirect to a presigned URL (PRESIGN_DOWNLOADS)"),
        (status = 404, description = "Unknown job or artifact", body = ErrorBody),
        (status = 422, description = "Invalid path or id", body = ErrorBody),
    ))]
pub async fn download_artifact(
    State(st): State<AppState>,
    JobId(id): JobId,
    FilePath(path): FilePath,
) -> Result<Response, ApiError> {
    st.jobs.get(id).await?;
    let key = keys::output_file(id, &path)?;
    download(&st.store, &key, &path).await
}
