//! Handlers for `/api/v1/training/jobs…`: thin wrappers that extract,
//! call [`crate::jobs::Jobs`], and shape the response.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::audit::{Audited, Draft};
use super::auth::Actor;
use super::error::ApiError;
use super::extract::{ApiQuery, JobId, JsonBody};
use super::responses::{BadRequest, Invalid, NotJson, TooLarge, Unauthorized, Unavailable};
use super::AppState;
use crate::jobs::KeyHold;
use crate::model::idempotency::{parse_key, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use crate::model::{
    BatchAck, CallbackAck, CreateJob, ErrorBody, Job, JobListQuery, LaunchPlan, Metric,
    MetricBatch, MetricQuery, Principal, TrainingUpdate,
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
///
/// With an `Idempotency-Key` header, retrying is safe: the same key with
/// the same body within the key's lifetime (`IDEMPOTENCY_TTL`, 24 h by
/// default) answers 201 with the original job as first returned, plus
/// `Idempotent-Replayed: true`, and creates nothing; the same key with a
/// different body is 422; while the first request with the key is still
/// being handled, 409.
#[utoipa::path(post, path = "/api/v1/training/jobs", tag = "jobs",
    params(
        CreateQuery,
        ("Idempotency-Key" = Option<String>, Header,
            pattern = r#"^(?:[!#-~]{1,255}|"[!#-~]{1,255}")$"#,
            description = "Makes the create safe to retry: 1–255 printable ASCII characters (a bare token or a quoted string), e.g. a fresh UUID per job"),
    ),
    request_body = CreateJob,
    responses(
        (status = 201, description = "Created (or, for a repeated Idempotency-Key with the same body, the original answer)", body = Job,
            headers(
                ("Location" = String, description = "The new job's URL path"),
                ("Idempotent-Replayed" = Option<String>, description = "`true` when this answers a repeated Idempotency-Key: nothing was created"),
            )),
        (status = 200, description = "Dry run: what the runner would create; nothing was stored", body = LaunchPlan),
        (status = 400, description = "Malformed JSON body or Idempotency-Key header", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A member submitting with another user's `user_id`", body = ErrorBody),
        (status = 404, description = "A job named in `after` does not exist", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still being handled", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, description = "Invalid field or query, unknown framework or queue, a dataset missing from the store, or an Idempotency-Key already used for a different body", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn create_job(
    State(st): State<AppState>,
    Actor(actor): Actor,
    audit: Draft,
    ApiQuery(q): ApiQuery<CreateQuery>,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: CreateJob = body.decode()?;
    if q.dry_run == Some(true) {
        return Ok(Json(dry_run(&st, &actor, req).await?).into_response());
    }
    // The target (the job's id) is filled in by the write.
    let entry = audit.finish("", StatusCode::CREATED.as_u16());
    let (job, replayed) = match key.0 {
        Some(hold) => {
            let s = st.jobs.create_once(&actor, req, hold, Some(entry)).await?;
            (s.job, s.replayed)
        }
        None => (st.jobs.create_as(&actor, req, Some(entry)).await?, false),
    };
    let location = format!("/api/v1/training/jobs/{}", job.id);
    let mut resp = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response();
    if replayed {
        resp.headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp.extensions_mut().insert(Audited);
    Ok(resp)
}

/// The request's `Idempotency-Key`, held as in flight from before its body
/// is read: a retry sent while the first attempt is still uploading is
/// told so (409) rather than racing it. Keys are the caller's own: two
/// users may use the same key.
pub struct IdempotencyKey(Option<KeyHold>);

impl FromRequestParts<AppState> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let Some(raw) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKey(None));
        };
        let key = parse_key(raw.as_bytes()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let Ok(Actor(actor)) = Actor::from_request_parts(parts, st).await;
        Ok(IdempotencyKey(Some(st.jobs.hold_key(&actor, key)?)))
    }
}

/// What launching `req` would do, with nothing stored.
async fn dry_run(st: &AppState, actor: &Principal, req: CreateJob) -> Result<LaunchPlan, ApiError> {
    let rec = st.jobs.draft_as(actor, req).await?;
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
    params(JobListQuery,
        ("tag" = Option<Vec<String>>, Query, style = Form, explode,
            pattern = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[^\\u0000-\\u001f\\u007f-\\u009f]{0,255}$",
            description = "Only jobs with this tag, `KEY=VALUE`; repeatable (every one must match)"),
    ),
    responses(
        (status = 200, description = "Jobs, newest first", body = Vec<Job>),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_jobs(
    State(st): State<AppState>,
    ApiQuery(mut q): ApiQuery<JobListQuery>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    // `tag` repeats, which the typed query cannot hold: read it raw.
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map_err(|e| ApiError::invalid("tag", e.body_text()))?;
    q.tag = pairs
        .0
        .into_iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v)
        .collect();
    Ok(json_array(st.jobs.list(q.validate()?).await?))
}

/// Bytes of JSON sent per chunk of a streamed list.
const LIST_CHUNK: usize = 64 * 1024;

/// A JSON array, serialized chunk by chunk as the client reads it: a page
/// of large jobs (a config can be big) is never held twice, once as rows
/// and once as one response text, and each job's memory is freed once sent.
fn json_array<T: Serialize + Send + 'static>(items: Vec<T>) -> Response {
    let chunks = JsonChunks {
        items: items.into_iter(),
        opened: false,
        first: true,
        done: false,
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

/// The chunks of [`json_array`]: `[`, items separated by `,`, `]`.
struct JsonChunks<I> {
    items: I,
    opened: bool,
    first: bool,
    done: bool,
}

impl<I: Iterator<Item = T>, T: Serialize> Iterator for JsonChunks<I> {
    type Item = Result<Bytes, serde_json::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::with_capacity(LIST_CHUNK);
        if !self.opened {
            self.opened = true;
            buf.push(b'[');
        }
        while buf.len() < LIST_CHUNK {
            let Some(item) = self.items.next() else {
                buf.push(b']');
                self.done = true;
                break;
            };
            if !std::mem::take(&mut self.first) {
                buf.push(b',');
            }
            if let Err(e) = serde_json::to_writer(&mut buf, &item) {
                // Cannot happen for the API's types; the client sees a cut-off body.
                self.done = true;
                return Some(Err(e));
            }
        }
        Some(Ok(Bytes::from(buf)))
    }
}

/// Get one job.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn get_job(State(st): State<AppState>, JobId(id): JobId) -> Result<Json<Job>, ApiError> {
    let mut job = st.jobs.get(id).await?;
    job.sched.gpu_idle = job.status == crate::model::JobStatus::Running && st.gpus.idle_job(id);
    Ok(Json(job))
}

/// Cancel a job.
#[utoipa::path(delete, path = "/api/v1/training/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 400, description = "Already finished", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A member cancelling another user's job; the message names the owner", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn cancel_job(
    State(st): State<AppState>,
    Actor(actor): Actor,
    audit: Draft,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    let entry = audit.finish(id, StatusCode::NO_CONTENT.as_u16());
    st.jobs.cancel_as(id, &actor, Some(entry)).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.extensions_mut().insert(Audited);
    Ok(resp)
}

/// Trainer callback: status, progress, message and one metric point.
#[utoipa::path(post, path = "/api/v1/training/jobs/{id}/callback", tag = "trainer",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    request_body = TrainingUpdate,
    security(("callback_token" = [])),
    responses(
        (status = 200, description = "Accepted: `applied` says whether it changed the job (false for a `sequence` not above the last applied one)", body = CallbackAck),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 409, description = "The job already ended; `status` says how", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, description = "Invalid field or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
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
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Invalid query or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_metrics(
    State(st): State<AppState>,
    JobId(id): JobId,
    ApiQuery(q): ApiQuery<MetricQuery>,
) -> Result<Response, ApiError> {
    Ok(json_array(st.jobs.metrics(id, q.validate()?).await?))
}

/// Batch metric ingest: up to 1,000 points, all or nothing.
#[utoipa::path(post, path = "/api/v1/training/jobs/{id}/metrics", tag = "trainer",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    request_body = MetricBatch,
    security(("callback_token" = [])),
    responses(
        (status = 200, description = "Stored (`stored` is 0 for an already-applied sequence)", body = BatchAck),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 409, description = "The job already ended; `status` says how", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, description = "Invalid point, too many points, or malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn ingest_metrics(
    State(st): State<AppState>,
    JobId(id): JobId,
    body: JsonBody,
) -> Result<Json<BatchAck>, ApiError> {
    let batch: MetricBatch = body.decode()?;
    Ok(Json(st.jobs.ingest(id, batch).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(items: Vec<serde_json::Value>) -> (usize, serde_json::Value) {
        let chunks: Vec<Bytes> = JsonChunks {
            items: items.into_iter(),
            opened: false,
            first: true,
            done: false,
        }
        .map(|c| c.unwrap())
        .collect();
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        (chunks.len(), serde_json::from_slice(&all).unwrap())
    }

    #[test]
    fn streamed_lists_are_one_json_array() {
        assert_eq!(joined(vec![]), (1, serde_json::json!([])));
        let small: Vec<_> = (0..3).map(|i| serde_json::json!({"i": i})).collect();
        assert_eq!(joined(small.clone()), (1, serde_json::Value::from(small)));
        let big: Vec<_> = (0..5)
            .map(|i| serde_json::json!({"i": i, "blob": "x".repeat(LIST_CHUNK / 2)}))
            .collect();
        let (n, v) = joined(big.clone());
        assert!(n >= 3, "several chunks: {n}");
        assert_eq!(v, serde_json::Value::from(big));
    }
}
