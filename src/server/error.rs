//! The API's one error type: every failure becomes `{"detail": …}` with the
//! right status code.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::db::DbError;
use crate::jobs::JobError;
use crate::model::{ErrorBody, JobStatus, ValidationError};
use crate::storage::StoreError;

/// An HTTP error response.
#[derive(Debug)]
pub enum ApiError {
    /// 400.
    BadRequest(String),
    /// 401.
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 409, with the job's current status when one is involved.
    Conflict {
        /// What happened.
        detail: String,
        /// The job's status.
        status: Option<JobStatus>,
    },
    /// 413.
    TooLarge(String),
    /// 415.
    UnsupportedMediaType(String),
    /// 422.
    Invalid(ValidationError),
    /// 429, with `Retry-After` in seconds.
    TooManyRequests {
        /// What happened.
        detail: String,
        /// Seconds until the client may try again.
        retry_after: u64,
    },
    /// 503.
    Unavailable(String),
    /// 507: the disk is full; nothing was stored.
    InsufficientStorage(String),
    /// 500: a bug or an environment failure, never bad input.
    Internal(String),
}

impl ApiError {
    /// 422 for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(ValidationError::new(field, message))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let body = match self {
            ApiError::Conflict { detail, status } => ErrorBody {
                detail,
                status,
                field: None,
            },
            ApiError::Invalid(v) => ErrorBody {
                detail: v.to_string(),
                status: None,
                field: Some(v.field),
            },
            ApiError::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                ErrorBody {
                    detail: "internal server error; see the daemon's log".into(),
                    status: None,
                    field: None,
                }
            }
            ApiError::MethodNotAllowed => plain("Method Not Allowed".into()),
            ApiError::BadRequest(d)
            | ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::TooLarge(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::TooManyRequests { detail: d, .. }
            | ApiError::Unavailable(d)
            | ApiError::InsufficientStorage(d) => plain(d),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}

fn plain(detail: String) -> ErrorBody {
    ErrorBody {
        detail,
        status: None,
        field: None,
    }
}

impl From<ValidationError> for ApiError {
    fn from(v: ValidationError) -> Self {
        ApiError::Invalid(v)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Closed => ApiError::Unavailable("the server is shutting down".into()),
            DbError::Unavailable(_) => ApiError::Unavailable(
                "the database is unavailable; try again shortly".into(),
            ),
            DbError::DiskFull(_) => ApiError::InsufficientStorage(
                "the server's disk is full, so nothing was stored: free disk space on the server and try again".into(),
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(_) | JobError::NoSuchSweep(_) => ApiError::NotFound(e.to_string()),
            JobError::Unauthorized(_) => ApiError::Unauthorized(e.to_string()),
            JobError::Forbidden(_) => ApiError::Forbidden(e.to_string()),
            JobError::Finished { status, .. } | JobError::UploadsClosed { status, .. } => {
                ApiError::Conflict {
                    detail: e.to_string(),
                    status: Some(status),
                }
            }
            JobError::NotCancellable { .. } => ApiError::BadRequest(e.to_string()),
            JobError::KeyInFlight | JobError::PruneRunning => ApiError::Conflict {
                detail: e.to_string(),
                status: None,
            },
            JobError::KeyReused(_) => ApiError::invalid("Idempotency-Key", e.to_string()),
            JobError::NotPending { status, .. } => ApiError::Conflict {
                detail: e.to_string(),
                status: Some(status),
            },
            JobError::UnknownQueue { .. } | JobError::NoSuchDependency(_) => {
                ApiError::NotFound(e.to_string())
            }
            JobError::Invalid(v) => ApiError::Invalid(v),
            JobError::Db(d) => d.into(),
            JobError::Storage(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(v) => ApiError::Invalid(v),
            StoreError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::Exists(_) | StoreError::Clash(_) => ApiError::Conflict {
                detail: e.to_string(),
                status: None,
            },
            StoreError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            StoreError::Interrupted(_) => ApiError::BadRequest(e.to_string()),
            StoreError::Unavailable(m) => {
                ApiError::Unavailable(format!("object store unavailable: {m}"))
            }
            StoreError::DiskFull(m) => ApiError::InsufficientStorage(m),
        }
    }
}

/// `{"detail": "Not Found"}` for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

/// `{"detail": "Method Not Allowed"}` for known routes with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
