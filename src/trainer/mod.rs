//! The trainer side of the contract: code that runs *inside* a trainer
//! process (the built-in demo trainer and `platform report`), reading the
//! SPEC §4 environment and calling back over HTTP.

pub mod demo;

use std::time::Duration;

use uuid::Uuid;

use crate::client::{Client, ClientError};
use crate::model::{JobStatus, MetricBatch, TrainingUpdate};

/// Why a report did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The job already ended (the daemon answered 409): stop training.
    #[error("the job is already {0}; stop training")]
    Ended(JobStatus),
    /// Anything else, after retries.
    #[error(transparent)]
    Failed(#[from] ClientError),
}

/// Sends a trainer's callbacks, retrying transient failures with backoff.
#[derive(Debug, Clone)]
pub struct Reporter {
    client: Client,
    callback_url: String,
    job_id: Option<Uuid>,
    retries: u32,
}

/// A required variable of the trainer contract is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not set: run this inside a trainer launched by `platform serve` (it sets CALLBACK_URL and CALLBACK_TOKEN)")]
pub struct MissingEnv(pub &'static str);

impl Reporter {
    /// A reporter from `CALLBACK_URL`, `CALLBACK_TOKEN`, `BACKEND_BASE_URL`
    /// and `JOB_ID`.
    pub fn from_env(retries: u32) -> Result<Self, anyhow::Error> {
        let var = |k: &'static str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let callback_url = var("CALLBACK_URL").ok_or(MissingEnv("CALLBACK_URL"))?;
        let token = var("CALLBACK_TOKEN");
        // The metrics endpoint sits next to the callback one.
        let base = var("BACKEND_BASE_URL").unwrap_or_else(|| {
            callback_url
                .split("/api/v1/")
                .next()
                .unwrap_or(&callback_url)
                .to_string()
        });
        let job_id = var("JOB_ID").and_then(|j| Uuid::parse_str(&j).ok());
        Ok(Self {
            client: Client::new(&base, token)?,
            callback_url,
            job_id,
            retries,
        })
    }

    /// The job id from `JOB_ID`.
    pub fn job_id(&self) -> Option<Uuid> {
        self.job_id
    }

    /// Posts one callback.
    pub async fn send(&self, update: &TrainingUpdate) -> Result<(), ReportError> {
        self.retrying(|| self.client.callback_to(&self.callback_url, update))
            .await
            .map(|_| ())
    }

    /// Posts a batch of metric points.
    pub async fn points(&self, batch: &MetricBatch) -> Result<(), ReportError> {
        let Some(id) = self.job_id else {
            return Err(ReportError::Failed(ClientError::BadUrl(
                "JOB_ID is not set".into(),
            )));
        };
        self.retrying(|| self.client.ingest(id, batch))
            .await
            .map(|_| ())
    }

    /// Uploads an output file through the daemon's artifact endpoint (no
    /// storage credentials needed) and returns its URI in the object store.
    pub async fn upload_artifact(
        &self,
        path: &str,
        bytes: bytes::Bytes,
    ) -> Result<String, ReportError> {
        let Some(id) = self.job_id else {
            return Err(ReportError::Failed(ClientError::BadUrl(
                "JOB_ID is not set".into(),
            )));
        };
        let len = bytes.len() as u64;
        self.retrying(|| {
            self.client
                .upload_artifact(id, path, reqwest::Body::from(bytes.clone()), len)
        })
        .await
        .map(|f| f.uri)
    }

    async fn retrying<T, F, Fut>(&self, mut f: F) -> Result<T, ReportError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(ClientError::Api {
                    job_status: Some(s),
                    status,
                    ..
                }) if status.as_u16() == 409 => return Err(ReportError::Ended(s)),
                Err(e) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "callback failed; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
