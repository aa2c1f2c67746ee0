//! Handlers for `/api/v1/datasets…`: streamed uploads into the object
//! store, listings, and file downloads; plus the path extractors and the
//! download response shared with [`super::artifacts`].

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::AppState;
use crate::model::{Dataset, DatasetSummary, ErrorBody, StoredFile, ValidationError};
use crate::storage::{keys, Download, Fetched, Store};

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

/// Streams a request body to `key`; the answer names the file by `path`.
pub async fn store_body(
    store: &Store,
    key: &str,
    path: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<StoredFile>), ApiError> {
    let mut stored = store
        .put_stream(key, body.into_data_stream(), content_length(headers))
        .await?;
    stored.path = path;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Answers a download: a 307 to a presigned URL, or the streamed bytes.
pub async fn download(store: &Store, key: &str, path: &str) -> Result<Response, ApiError> {
    match store.fetch(key).await? {
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
    params(
        ("name" = String, Path, description = "Dataset name: letters, digits, '.', '_', '-'"),
        ("path" = String, Path, description = "File path inside the dataset, '/'-separated"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, description = "Stored", body = StoredFile),
        (status = 400, description = "The upload broke off; nothing was stored", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 413, description = "Larger than MAX_OBJECT_BYTES", body = ErrorBody),
        (status = 422, description = "Invalid name or path", body = ErrorBody),
        (status = 503, description = "Object store unavailable", body = ErrorBody),
    ))]
pub async fn upload_dataset_file(
    State(st): State<AppState>,
    DatasetName(name): DatasetName,
    FilePath(path): FilePath,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<StoredFile>), ApiError> {
    let key = keys::dataset_file(&name, &path)?;
    store_body(&st.store, &key, path, &headers, body).await
}

/// Download one dataset file.
#[utoipa::path(get, path = "/api/v1/datasets/{name}/files/{path}", tag = "datasets",
    params(
        ("name" = String, Path, description = "Dataset name"),
        ("path" = String, Path, description = "File path inside the dataset"),
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 307, description = "Redirect to a presigned URL (PRESIGN_DOWNLOADS)"),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 422, description = "Invalid name or path", body = ErrorBody),
    ))]
pub async fn download_dataset_file(
    State(st): State<AppState>,
    DatasetName(name): DatasetName,
    FilePath(path): FilePath,
) -> Result<Response, ApiError> {
    let key = keys::dataset_file(&name, &path)?;
    download(&st.store, &key, &path).await
}

/// List datasets with their file counts and sizes.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets",
    responses(
        (status = 200, description = "Datasets, by name", body = Vec<DatasetSummary>),
        (status = 503, description = "Object store unavailable", body = ErrorBody),
    ))]
pub async fn list_datasets(
    State(st): State<AppState>,
) -> Result<Json<Vec<DatasetSummary>>, ApiError> {
    Ok(Json(st.store.datasets().await?))
}

/// One dataset: its URI, files, sizes and total.
#[utoipa::path(get, path = "/api/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "Dataset name")),
    responses(
        (status = 200, description = "The dataset", body = Dataset),
        (status = 404, description = "No such dataset", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
pub async fn get_dataset(
    State(st): State<AppState>,
    DatasetName(name): DatasetName,
) -> Result<Json<Dataset>, ApiError> {
    Ok(Json(st.store.dataset(&name).await?))
}
