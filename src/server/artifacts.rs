//! Handlers for `/api/v1/training/jobs/{id}/artifacts…`: trainers upload
//! outputs with their job's callback token; users list and download them.
//!
//! Uploads are accepted while the job is live, and for a grace period
//! after it ends (`--artifact-grace`, 10 minutes by default): a trainer
//! typically uploads its final checkpoint right after (or while) reporting
//! `completed`, and the daemon may have marked the job finished on exit a
//! moment earlier. After the end an upload may only add files, never
//! replace one; after the grace it is refused (409). The rule is
//! [`crate::jobs::Jobs::may_upload`]; the per-job token guards the job's
//! prefix, and paths cannot leave it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};

use super::datasets::{
    close_after_failed_upload, content_length, download, FilePath, FilePathParam,
};
use super::error::ApiError;
use super::extract::JobId;
use super::responses::{BadRequest, TooLarge, Unauthorized, Unavailable};
use super::AppState;
use crate::jobs::UploadPermit;
use crate::model::{ErrorBody, StoredFile};
use crate::storage::StoreError;

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
        FilePathParam,
    ),
    request_body(content = [u8], content_type = "application/octet-stream", description = "The file's bytes (none: an empty file)"),
    security(("callback_token" = [])),
    responses(
        (status = 201, description = "Stored", body = StoredFile),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 409, description = "The job ended longer ago than --artifact-grace, or it ended and this file already exists (an ended job's outputs are never replaced; `status` is the job's); or the local object store cannot hold this path beside an existing one", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 422, description = "Invalid path or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn upload_artifact(
    State(st): State<AppState>,
    JobId(id): JobId,
    FilePath(path): FilePath,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<StoredFile>), ApiError> {
    let permit = st.jobs.may_upload(id).await?;
    let stored = st
        .store
        .put_artifact(
            id,
            &path,
            body.into_data_stream(),
            content_length(&headers),
            permit.mode(),
        )
        .await
        .map_err(|e| match (e, permit) {
            (StoreError::Exists(what), UploadPermit::CreateOnly { status }) => ApiError::Conflict {
                detail: format!(
                    "{what} already exists and the job has ended ({status}): an ended job's outputs are never replaced"
                ),
                status: Some(status),
            },
            (e, _) => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// List a job's artifacts.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/artifacts", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Artifacts, by path", body = Vec<StoredFile>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
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
        FilePathParam,
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 307, description = "Redirect to a presigned URL (PRESIGN_DOWNLOADS)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job or artifact", body = ErrorBody),
        (status = 422, description = "Invalid path or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn download_artifact(
    State(st): State<AppState>,
    JobId(id): JobId,
    FilePath(path): FilePath,
) -> Result<Response, ApiError> {
    st.jobs.get(id).await?;
    download(st.store.fetch_artifact(id, &path).await?, &path)
}
