//! Typed HTTP client for the daemon's REST API, built on the same
//! [`crate::model`] types the server uses. Used by the CLI and by trainers
//! (`platform report`, the demo trainer).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::errors::root_cause;
use crate::model::webhook::{CreateWebhook, CreatedWebhook, Delivery, Webhook};
use crate::model::{
    AuditEntry, AuditQuery, BatchAck, CallbackAck, CreateJob, Dataset, DatasetSummary, ErrorBody,
    Health, Job, JobListQuery, JobStatus, LaunchPlan, Metric, MetricBatch, MetricQuery, StoredFile,
    TokenInfo, TrainingUpdate, UpdateUser, User, Whoami,
};

/// Why a request failed, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the server URL.
    #[error("cannot reach the platform server at {url}: {reason} — is `platform serve` running?")]
    Unreachable {
        /// The server URL.
        url: String,
        /// The low-level cause, e.g. "connection refused".
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{detail}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The server's `detail`.
        detail: String,
        /// The job's status, on a 409.
        job_status: Option<JobStatus>,
    },
    /// The server answered something this client cannot read.
    #[error("unexpected response from {url}: {reason}")]
    Protocol {
        /// The request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The server URL is not usable.
    #[error("invalid server URL {0:?}: expected e.g. http://127.0.0.1:8000")]
    BadUrl(String),
}

impl ClientError {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying may help (connection trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// A connection to one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8000`), sending `token`
    /// as a bearer token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(base));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("platform/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Protocol {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base,
            http,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The server URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether requests carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// A request to `path` with the bearer token attached.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends `rb`, mapping transport failures and error statuses.
    pub async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = rb.send().await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let url = resp.url().to_string();
        let body = resp.bytes().await.unwrap_or_default();
        let (detail, job_status) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => (e.detail, e.status),
            Err(_) => (
                format!(
                    "the server answered {status} for {url}{}",
                    if body.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": {}",
                            String::from_utf8_lossy(&body)
                                .chars()
                                .take(200)
                                .collect::<String>()
                        )
                    }
                ),
                None,
            ),
        };
        Err(ClientError::Api {
            status,
            detail,
            job_status,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(rb).await?;
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url,
            reason: e.to_string(),
        })
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        }
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(
            self.request(Method::GET, "/health")
                .timeout(Duration::from_secs(5)),
        )
        .await
    }

    /// `POST /api/v1/training/jobs`, with an `Idempotency-Key` when given
    /// (a retry with the same key and body gets the same job back).
    pub async fn create_job(
        &self,
        req: &CreateJob,
        idempotency_key: Option<&str>,
    ) -> Result<Job, ClientError> {
        let rb = self
            .request(Method::POST, "/api/v1/training/jobs")
            .json(req);
        let rb = match idempotency_key {
            Some(k) => rb.header(crate::model::idempotency::IDEMPOTENCY_KEY, k),
            None => rb,
        };
        self.json(rb).await
    }

    /// `POST /api/v1/training/jobs?dry_run=true`: what creating `req`
    /// would launch, with nothing stored.
    pub async fn plan_job(&self, req: &CreateJob) -> Result<LaunchPlan, ClientError> {
        self.json(
            self.request(Method::POST, "/api/v1/training/jobs")
                .query(&[("dry_run", "true")])
                .json(req),
        )
        .await
    }

    /// `GET /api/v1/training/jobs`.
    pub async fn list_jobs(&self, q: &JobListQuery) -> Result<Vec<Job>, ClientError> {
        let mut rb = self.request(Method::GET, "/api/v1/training/jobs").query(q);
        for t in &q.tag {
            rb = rb.query(&[("tag", t)]);
        }
        self.json(rb).await
    }

    /// `GET /api/v1/training/jobs/{id}`.
    pub async fn get_job(&self, id: Uuid) -> Result<Job, ClientError> {
        self.json(self.request(Method::GET, &format!("/api/v1/training/jobs/{id}")))
            .await
    }

    /// `DELETE /api/v1/training/jobs/{id}`.
    pub async fn cancel_job(&self, id: Uuid) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &format!("/api/v1/training/jobs/{id}")))
            .await
            .map(|_| ())
    }

    /// `GET /api/v1/training/jobs/{id}/metrics`.
    pub async fn metrics(&self, id: Uuid, q: &MetricQuery) -> Result<Vec<Metric>, ClientError> {
        self.json(
            self.request(Method::GET, &format!("/api/v1/training/jobs/{id}/metrics"))
                .query(q),
        )
        .await
    }

    /// Every metric point of a job, oldest first (pages through `after_id`).
    pub async fn all_metrics(
        &self,
        id: Uuid,
        after_id: Option<i64>,
    ) -> Result<Vec<Metric>, ClientError> {
        self.all_points(id, after_id, false).await
    }

    /// Every point of a job's training metrics, or with `system` of its
    /// system metrics (GPU telemetry), oldest first.
    pub async fn all_points(
        &self,
        id: Uuid,
        after_id: Option<i64>,
        system: bool,
    ) -> Result<Vec<Metric>, ClientError> {
        let mut out: Vec<Metric> = Vec::new();
        let mut after = after_id;
        loop {
            let q = MetricQuery {
                limit: Some(crate::model::metric::MAX_METRIC_LIMIT),
                order: Some("asc".into()),
                after_id: after,
                max_points: None,
                system: system.then_some(true),
            };
            let page = self.metrics(id, &q).await?;
            let full = page.len() as i64 == crate::model::metric::MAX_METRIC_LIMIT;
            after = page.last().map(|m| m.id).or(after);
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// `POST {callback_url}` with a trainer's token.
    pub async fn callback_to(
        &self,
        callback_url: &str,
        update: &TrainingUpdate,
    ) -> Result<CallbackAck, ClientError> {
        let rb = self.http.post(callback_url).json(update);
        let rb = match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        self.json(rb).await
    }

    /// `POST /api/v1/training/jobs/{id}/heartbeat` with a trainer's token.
    pub async fn heartbeat(&self, id: Uuid) -> Result<(), ClientError> {
        self.send(self.request(
            Method::POST,
            &format!("/api/v1/training/jobs/{id}/heartbeat"),
        ))
        .await
        .map(|_| ())
    }

    /// `PATCH /api/v1/training/jobs/{id}`.
    pub async fn update_job(
        &self,
        id: Uuid,
        update: &crate::model::UpdateJob,
    ) -> Result<Job, ClientError> {
        self.json(
            self.request(Method::PATCH, &format!("/api/v1/training/jobs/{id}"))
                .json(update),
        )
        .await
    }

    /// `POST /api/v1/sweeps`: the sweep with its jobs.
    pub async fn create_sweep(
        &self,
        req: &crate::model::CreateSweep,
    ) -> Result<crate::model::Sweep, ClientError> {
        self.call(Method::POST, "/api/v1/sweeps", req).await
    }

    /// `GET /api/v1/sweeps/{id}`, or (`cancel`) `POST …/{id}/cancel`.
    pub async fn sweep(&self, id: Uuid, cancel: bool) -> Result<crate::model::Sweep, ClientError> {
        let (method, path) = match cancel {
            true => (Method::POST, format!("/api/v1/sweeps/{id}/cancel")),
            false => (Method::GET, format!("/api/v1/sweeps/{id}")),
        };
        self.json(self.request(method, &path)).await
    }

    /// `GET /api/v1/sweeps`.
    pub async fn sweeps(&self, limit: i64) -> Result<Vec<crate::model::Sweep>, ClientError> {
        self.json(
            self.request(Method::GET, "/api/v1/sweeps")
                .query(&[("limit", limit)]),
        )
        .await
    }

    /// `GET /api/v1/queues`.
    pub async fn queues(&self) -> Result<Vec<crate::model::QueueInfo>, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/queues")).await
    }

    /// `GET /api/v1/gpus`.
    pub async fn gpus(&self) -> Result<Vec<crate::model::GpuInfo>, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/gpus")).await
    }

    /// `POST /api/v1/queues/{name}/pause` (or `resume`).
    pub async fn pause_queue(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<crate::model::QueueInfo, ClientError> {
        let what = if paused { "pause" } else { "resume" };
        let name: String =
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        self.json(self.request(Method::POST, &format!("/api/v1/queues/{name}/{what}")))
            .await
    }

    /// `POST /api/v1/training/jobs/{id}/metrics` with a trainer's token.
    pub async fn ingest(&self, id: Uuid, batch: &MetricBatch) -> Result<BatchAck, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/api/v1/training/jobs/{id}/metrics"))
                .json(batch),
        )
        .await
    }

    /// `GET /api/v1/training/frameworks`.
    pub async fn frameworks(&self) -> Result<Vec<crate::model::Framework>, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/training/frameworks"))
            .await
    }

    /// `POST /api/v1/training/frameworks/reload`: the frameworks registered
    /// after the daemon re-read its trainers file and directory.
    pub async fn reload_frameworks(&self) -> Result<Vec<crate::model::Framework>, ClientError> {
        self.json(self.request(Method::POST, "/api/v1/training/frameworks/reload"))
            .await
    }

    /// `GET /api/v1/training/jobs/{id}/logs` as a byte stream.
    pub async fn logs(
        &self,
        id: Uuid,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut rb = self
            .request(Method::GET, &format!("/api/v1/training/jobs/{id}/logs"))
            .query(&[("follow", follow.to_string())]);
        if let Some(n) = tail {
            rb = rb.query(&[("tail", n.to_string())]);
        }
        self.send(rb).await
    }

    /// Sends a JSON body with `method` and decodes the answer.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(method, path).json(body)).await
    }
}

/// Users, tokens, the audit trail.
impl Client {
    /// `GET /api/v1/whoami`.
    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/whoami")).await
    }

    /// `GET /api/v1/users`.
    pub async fn users(&self) -> Result<Vec<User>, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/users")).await
    }

    /// `PATCH /api/v1/users/{name}`.
    pub async fn update_user(&self, name: &str, req: &UpdateUser) -> Result<User, ClientError> {
        let path = format!("/api/v1/users/{}", encode_path(name));
        self.call(Method::PATCH, &path, req).await
    }

    /// `GET /api/v1/tokens`.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, ClientError> {
        let mut rb = self.request(Method::GET, "/api/v1/tokens");
        if let Some(u) = user {
            rb = rb.query(&[("user", u)]);
        }
        self.json(rb).await
    }

    /// `DELETE /api/v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        let path = format!("/api/v1/tokens/{}", encode_path(id));
        self.json(self.request(Method::DELETE, &path)).await
    }

    /// `GET /api/v1/audit`.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/audit").query(q))
            .await
    }
}

/// Dataset and artifact transfers.
impl Client {
    /// `GET /api/v1/datasets`.
    pub async fn list_datasets(&self) -> Result<Vec<DatasetSummary>, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/datasets"))
            .await
    }

    /// `GET /api/v1/datasets/{name}`; `None` when it does not exist.
    pub async fn get_dataset(&self, name: &str) -> Result<Option<Dataset>, ClientError> {
        let path = format!("/api/v1/datasets/{}", encode_path(name));
        match self.json(self.request(Method::GET, &path)).await {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /api/v1/datasets/{name}/files/{path}` with a streamed body of `len` bytes.
    pub async fn upload_dataset_file(
        &self,
        name: &str,
        path: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<StoredFile, ClientError> {
        let url = format!(
            "/api/v1/datasets/{}/files/{}",
            encode_path(name),
            encode_path(path)
        );
        self.upload(&url, body, len).await
    }

    /// `PUT /api/v1/training/jobs/{id}/artifacts/{path}` (send the job's callback token).
    pub async fn upload_artifact(
        &self,
        id: Uuid,
        path: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<StoredFile, ClientError> {
        let url = format!("/api/v1/training/jobs/{id}/artifacts/{}", encode_path(path));
        self.upload(&url, body, len).await
    }

    async fn upload(
        &self,
        url: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<StoredFile, ClientError> {
        self.json(
            self.request(Method::PUT, url)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body),
        )
        .await
    }

    /// `GET /api/v1/training/jobs/{id}/artifacts`.
    pub async fn artifacts(&self, id: Uuid) -> Result<Vec<StoredFile>, ClientError> {
        self.json(self.request(
            Method::GET,
            &format!("/api/v1/training/jobs/{id}/artifacts"),
        ))
        .await
    }

    /// `GET /api/v1/training/jobs/{id}/artifacts/{path}`: the response, to
    /// stream (presigned redirects are followed).
    pub async fn download_artifact(
        &self,
        id: Uuid,
        path: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("/api/v1/training/jobs/{id}/artifacts/{}", encode_path(path));
        self.send(self.request(Method::GET, &url)).await
    }

    /// Maps a failure while streaming a response body.
    pub fn body_error(&self, e: reqwest::Error) -> ClientError {
        self.transport(e)
    }
}

/// Retention (admins).
impl Client {
    /// `POST /api/v1/prune`: what was (or, in a dry run, would be) removed.
    pub async fn prune(
        &self,
        req: &crate::model::PruneRequest,
    ) -> Result<crate::model::PruneReport, ClientError> {
        self.call(Method::POST, "/api/v1/prune", req).await
    }
}

/// Webhook endpoints (admin: the API token).
impl Client {
    /// `POST /api/v1/webhooks`: the endpoint with its signing secret
    /// (shown only in this answer).
    pub async fn add_webhook(&self, req: &CreateWebhook) -> Result<CreatedWebhook, ClientError> {
        self.call(Method::POST, "/api/v1/webhooks", req).await
    }

    /// `GET /api/v1/webhooks`.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/webhooks"))
            .await
    }

    /// `DELETE /api/v1/webhooks/{id}`.
    pub async fn remove_webhook(&self, id: Uuid) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &format!("/api/v1/webhooks/{id}")))
            .await
            .map(|_| ())
    }

    /// `POST /api/v1/webhooks/{id}/test`: the queued delivery.
    pub async fn test_webhook(&self, id: Uuid) -> Result<Delivery, ClientError> {
        self.json(self.request(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
            .await
    }

    /// `GET /api/v1/webhooks/{id}/deliveries`, newest first.
    pub async fn webhook_deliveries(
        &self,
        id: Uuid,
        limit: Option<u32>,
    ) -> Result<Vec<Delivery>, ClientError> {
        let mut rb = self.request(Method::GET, &format!("/api/v1/webhooks/{id}/deliveries"));
        if let Some(n) = limit {
            rb = rb.query(&[("limit", n)]);
        }
        self.json(rb).await
    }
}

/// Characters left as they are in a URL path segment (RFC 3986 unreserved).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes each `/`-separated segment of `path`, keeping the `/`s.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}
