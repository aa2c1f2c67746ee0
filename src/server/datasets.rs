//! Handlers for `/api/v1/datasets…`: streamed uploads into the object
//! store, listings, and file downloads; a job's own dataset for its
//! trainer (`/api/v1/training/jobs/{id}/dataset…`, with the job's token, so
//! a trainer needs neither the API token nor storage credentials); plus the
//! path extractors and the download response shared with
//! [`super::artifacts`].

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::extract::JobId;
use super::responses::{BadRequest, TooLarge, Unauthorized, Unavailable};
use super::AppState;
use crate::model::names::{DATASET_NAME_PATTERN, MAX_DATASET_NAME, MAX_PATH_BYTES, PATH_PATTERN};
use crate::model::{Dataset, DatasetSummary, ErrorBody, StoredFile, ValidationError};
use crate::storage::{keys, Download, Fetched};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::Required;
use utoipa::IntoParams;

/// The dataset routes (full paths; merged into the app router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/datasets", get(list_datasets))
        .route("/api/v1/datasets/{name}", get(get_dataset))
        .route(
            "/api/v1/datasets/{name}/files/{*path}",
            get(download_dataset_file).put(upload_dataset_file),
        )
        .route_layer(middleware::from_fn(close_after_failed_upload))
}

/// The job's dataset for its trainer, relative to `/api/v1/training`
/// (trainer routes: the job's callback token).
pub fn trainer_routes() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/dataset", get(job_dataset))
        .route("/jobs/{id}/dataset/files/{*path}", get(job_dataset_file))
}

/// A refused upload may leave most of its body unread, so the connection
/// cannot carry another request: say so, or the client's next request on
/// it fails.
pub async fn close_after_failed_upload(req: Request, next: Next) -> Response {
    let put = req.method() == Method::PUT;
    let mut resp = next.run(req).await;
    if put && !resp.status().is_success() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The path parameter `name`, percent-decoded (undecodable: 400), then
/// checked by `check` (422 naming what is wrong).
async fn checked_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &str,
    check: impl Fn(&str) -> Result<(), ValidationError>,
) -> Result<String, ApiError> {
    let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let value = params
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_default();
    check(&value)?;
    Ok(value)
}

/// The `{name}` path parameter as the OpenAPI document describes it.
pub struct DatasetNameParam;

impl IntoParams for DatasetNameParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "name",
            "Dataset name: 1–128 of letters, digits, '.', '_', '-', not starting with '.' or '-'",
            DATASET_NAME_PATTERN,
            MAX_DATASET_NAME,
        )]
    }
}

/// The `{path}` path parameter as the OpenAPI document describes it.
pub struct FilePathParam;

impl IntoParams for FilePathParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "path",
            "File path inside the dataset or the job's outputs: '/'-separated segments \
             (at most 250 bytes each, 768 in all), none empty, '.' or '..'; no backslashes \
             or control characters; no segment ending in '#' and digits",
            PATH_PATTERN,
            MAX_PATH_BYTES,
        )]
    }
}

/// A required string path parameter matching `pattern` (the rules of
/// [`crate::model::names`], written as a regular expression).
fn path_param(name: &str, description: &str, pattern: &str, max_length: usize) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_length))
        .pattern(Some(pattern));
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A validated dataset name from the `{name}` path parameter (422 otherwise).
#[derive(Debug, Clone)]
pub struct DatasetName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for DatasetName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        checked_param(parts, state, "name", keys::dataset_name)
            .await
            .map(DatasetName)
    }
}

/// A validated relative file path from the `{*path}` parameter: decoded,
/// then checked so `..`, `%2e%2e`, absolute paths and backslashes are a 422.
#[derive(Debug, Clone)]
pub struct FilePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for FilePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        checked_param(parts, state, "path", |p| keys::relative_path("path", p))
            .await
            .map(FilePath)
    }
}

/// The declared `Content-Length`, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Answers a download: a 307 to a presigned URL, or the streamed bytes.
pub fn download(fetched: Fetched, path: &str) -> Result<Response, ApiError> {
    match fetched {
        Fetched::Redirect(url) => {
            let location = HeaderValue::from_str(&url).map_err(|e| {
                ApiError::Internal(format!("presigned URL is not a header value: {e}"))
            })?;
            Ok((
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response())
        }
        Fetched::Stream(d) => Ok(object_response(d, path)),
    }
}

fn object_response(d: Download, path: &str) -> Response {
    let mut resp = Response::new(Body::from_stream(d.body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(d.size));
    let modified = d
        .last_modified
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = HeaderValue::from_str(&modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(v) = d.e_tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert(header::ETAG, v);
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// Upload one dataset file; the body is streamed to the object store.
#[utoipa::path(put, path = "/api/v1/datasets/{name}/files/{path}", tag = "datasets",
    params(DatasetNameParam, FilePathParam),
    request_body(content = [u8], content_type = "application/octet-stream", description = "The file's bytes (none: an empty file)"),
    responses(
        (status = 201, description = "Stored", body = StoredFile),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, description = "The local object store cannot hold this path beside an existing one (a file where a folder is needed, or the other way round)", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 422, description = "Invalid name or path", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn upload_dataset_file(
    State(st): State<AppState>,
    DatasetName(name): DatasetName,
    FilePath(path): FilePath,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<StoredFile>), ApiError> {
    let stored = st
        .store
        .put_dataset_file(
            &name,
            &path,
            body.into_data_stream(),
            content_length(&headers),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Download one dataset file.
#[utoipa::path(get, path = "/api/v1/datasets/{name}/files/{path}", tag = "datasets",
    params(DatasetNameParam, FilePathParam),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 307, description = "Redirect to a presigned URL (PRESIGN_DOWNLOADS)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 422, description = "Invalid name or path", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn download_dataset_file(
    State(st): State<AppState>,
    DatasetName(name): DatasetName,
    FilePath(path): FilePath,
) -> Result<Response, ApiError> {
    download(st.store.fetch_dataset_file(&name, &path).await?, &path)
}

/// List datasets with their file counts and sizes.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets",
    responses(
        (status = 200, description = "Datasets, by name", body = Vec<DatasetSummary>),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_datasets(
    State(st): State<AppState>,
) -> Result<Json<Vec<DatasetSummary>>, ApiError> {
    Ok(Json(st.store.datasets().await?))
}

/// One dataset: its URI, files, sizes and total.
#[utoipa::path(get, path = "/api/v1/datasets/{name}", tag = "datasets",
    params(DatasetNameParam),
    responses(
        (status = 200, description = "The dataset", body = Dataset),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such dataset", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn get_dataset(
    State(st): State<AppState>,
    DatasetName(name): DatasetName,
) -> Result<Json<Dataset>, ApiError> {
    Ok(Json(st.store.dataset(&name).await?))
}

/// The files of the job's dataset (`dataset_s3_uri`), for its trainer.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/dataset", tag = "trainer",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    security(("callback_token" = [])),
    responses(
        (status = 200, description = "The files under the job's dataset URI, paths relative to it (or the one object it names)", body = Dataset),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job, or its dataset is not in the daemon's object store", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn job_dataset(
    State(st): State<AppState>,
    JobId(id): JobId,
) -> Result<Json<Dataset>, ApiError> {
    let job = st.jobs.get(id).await?;
    Ok(Json(st.store.dataset_at(&job.dataset_s3_uri).await?))
}

/// Download one file of the job's dataset, for its trainer.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/dataset/files/{path}", tag = "trainer",
    params(("id" = uuid::Uuid, Path, description = "Job id"), FilePathParam),
    security(("callback_token" = [])),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 307, description = "Redirect to a presigned URL (PRESIGN_DOWNLOADS)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job or no such file", body = ErrorBody),
        (status = 422, description = "Invalid path or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn job_dataset_file(
    State(st): State<AppState>,
    JobId(id): JobId,
    FilePath(path): FilePath,
) -> Result<Response, ApiError> {
    let job = st.jobs.get(id).await?;
    download(st.store.fetch_at(&job.dataset_s3_uri, &path).await?, &path)
}
