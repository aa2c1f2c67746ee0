//! The job lifecycle: every rule about creating, cancelling and updating
//! jobs lives here, between the thin HTTP handlers (and runners) above and
//! the database below.
//!
//! Each operation runs its checks and its changes inside one database write
//! (so a rejected request changes nothing), and publishes the committed
//! result on the [`Events`] hub, where the scheduler and the live streams
//! pick it up.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand::RngCore;
use uuid::Uuid;

use crate::db::{self, jobs::JobRecord, Db, DbError};
use crate::events::{Event, Events};
use crate::model::{
    BatchAck, CallbackAck, CreateJob, Job, JobFilter, JobStatus, Metric, MetricBatch, MetricFilter,
    TrainingUpdate, ValidationError,
};
use crate::trainers::Registry;

/// Why a job operation was refused (each maps to one HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job has this id (404).
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// Missing or wrong callback token (401).
    #[error("missing or invalid callback token for job {0}")]
    Unauthorized(Uuid),
    /// A callback for a job that already ended (409).
    #[error("job {id} is already {status}; it accepts no more updates")]
    Finished {
        /// The job.
        id: Uuid,
        /// Its terminal status.
        status: JobStatus,
    },
    /// Cancelling a job that already ended (400).
    #[error("job {id} is already {status} and cannot be cancelled")]
    NotCancellable {
        /// The job.
        id: Uuid,
        /// Its terminal status.
        status: JobStatus,
    },
    /// A field failed validation (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed (500, or 503 while shutting down).
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The job service; shared by the HTTP handlers and the runners.
pub struct Jobs {
    db: Arc<Db>,
    events: Events,
    registry: Arc<Registry>,
    callback_auth: bool,
    api_token: Option<String>,
    /// Callback tokens of live jobs, so the hot path skips a read.
    /// Tokens never change, so a cached entry is never stale.
    tokens: RwLock<HashMap<Uuid, Arc<str>>>,
}

/// Settings the lifecycle rules depend on.
pub struct JobsConfig {
    /// Whether callbacks need the per-job bearer token.
    pub callback_auth: bool,
    /// The operator's API token, also accepted on callbacks.
    pub api_token: Option<String>,
}

impl Jobs {
    /// A service over `db`, publishing on `events`.
    pub fn new(db: Arc<Db>, events: Events, registry: Arc<Registry>, cfg: JobsConfig) -> Self {
        Self {
            db,
            events,
            registry,
            callback_auth: cfg.callback_auth,
            api_token: cfg.api_token,
            tokens: RwLock::new(HashMap::new()),
        }
    }

    /// The event hub this service publishes on.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The database (for health checks and runners' private state).
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The trainer registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Validates and stores a new `pending` job. The scheduler launches it.
    pub async fn create(&self, req: CreateJob) -> Result<Job, JobError> {
        req.validate()?;
        if !self.registry.contains(&req.framework) {
            return Err(ValidationError::new(
                "framework",
                format!(
                    "unknown framework {:?}; registered frameworks: {}",
                    req.framework,
                    self.registry.names().join(", ")
                ),
            )
            .into());
        }
        let now = db::now();
        let rec = JobRecord {
            job: Job {
                id: Uuid::now_v7(),
                user_id: req.user_id.clone(),
                model_name: req.model_name.clone(),
                framework: req.framework.clone(),
                dataset_s3_uri: req.dataset_s3_uri.clone(),
                config: req.stored_config().cloned(),
                status: JobStatus::Pending,
                progress: 0.0,
                message: None,
                checkpoint_s3_uri: None,
                error: None,
                created_at: now,
                updated_at: now,
                started_at: None,
                completed_at: None,
                runner: None,
                exit_code: None,
            },
            callback_token: new_token(),
            last_sequence: None,
            runner_state: None,
        };
        let job = rec.job.clone();
        let token: Arc<str> = rec.callback_token.as_str().into();
        self.db
            .write(move |c| db::jobs::insert(c, &rec))
            .await
            .map_err(JobError::Db)?;
        self.remember_token(job.id, token);
        metrics::counter!("platform_jobs_created_total").increment(1);
        self.events.publish(Event::Job(Arc::new(job.clone())));
        Ok(job)
    }

    /// One job.
    pub async fn get(&self, id: Uuid) -> Result<Job, JobError> {
        Ok(self.record(id).await?.job)
    }

    /// One job with its private columns (runners need the token and state).
    pub async fn record(&self, id: Uuid) -> Result<JobRecord, JobError> {
        self.db
            .read(move |c| db::jobs::get(c, id))
            .await?
            .ok_or(JobError::NotFound(id))
    }

    /// A page of jobs, newest first.
    pub async fn list(&self, filter: JobFilter) -> Result<Vec<Job>, JobError> {
        Ok(self.db.read(move |c| db::jobs::list(c, &filter)).await?)
    }

    /// A job's metric points.
    pub async fn metrics(&self, id: Uuid, filter: MetricFilter) -> Result<Vec<Metric>, JobError> {
        self.db
            .read(move |c| {
                if db::jobs::get(c, id)?.is_none() {
                    return Ok(None);
                }
                db::metrics::list(c, id, &filter).map(Some)
            })
            .await?
            .ok_or(JobError::NotFound(id))
    }

    /// Cancels a live job: `cancelled` is committed at once; the runner
    /// stops the trainer when it sees the event.
    pub async fn cancel(&self, id: Uuid) -> Result<Job, JobError> {
        let job = self
            .db
            .write(move |c| {
                let mut rec = db::jobs::get(c, id)?.ok_or(JobError::NotFound(id))?;
                if rec.job.status.is_terminal() {
                    return Err(JobError::NotCancellable {
                        id,
                        status: rec.job.status,
                    });
                }
                set_status(&mut rec.job, JobStatus::Cancelled, db::now());
                rec.job
                    .message
                    .get_or_insert_with(|| "cancelled by user".into());
                db::jobs::update(c, &rec)?;
                Ok(rec.job)
            })
            .await?;
        self.finished(&job);
        Ok(job)
    }

    /// Checks a trainer's bearer token for `id` (404 for unknown jobs).
    pub async fn authorize(&self, id: Uuid, bearer: Option<&str>) -> Result<(), JobError> {
        let token = match self.cached_token(id) {
            Some(t) => t,
            None => {
                let rec = self.record(id).await?;
                let t: Arc<str> = rec.callback_token.into();
                if !rec.job.status.is_terminal() {
                    self.remember_token(id, t.clone());
                }
                t
            }
        };
        if !self.callback_auth {
            return Ok(());
        }
        let ok = bearer.is_some_and(|b| {
            constant_time_eq(b.as_bytes(), token.as_bytes())
                || self
                    .api_token
                    .as_deref()
                    .is_some_and(|a| constant_time_eq(b.as_bytes(), a.as_bytes()))
        });
        if ok {
            Ok(())
        } else {
            Err(JobError::Unauthorized(id))
        }
    }

    /// Applies a trainer callback (after [`Jobs::authorize`]).
    pub async fn callback(&self, id: Uuid, body: TrainingUpdate) -> Result<CallbackAck, JobError> {
        let update = body.validate(id)?;
        let applied = self
            .db
            .write(move |c| {
                let mut rec = db::jobs::get(c, id)?.ok_or(JobError::NotFound(id))?;
                if already_applied(&rec, update.sequence) {
                    return Ok(None);
                }
                if !rec.job.status.can_become(update.status) {
                    return Err(JobError::Finished {
                        id,
                        status: rec.job.status,
                    });
                }
                let now = db::now();
                let job = &mut rec.job;
                set_status(job, update.status, now);
                if let Some(p) = update.progress {
                    job.progress = p;
                }
                replace_if_some(&mut job.message, update.message);
                replace_if_some(&mut job.checkpoint_s3_uri, update.checkpoint_s3_uri);
                replace_if_some(&mut job.error, update.error);
                if update.sequence.is_some() {
                    rec.last_sequence = update.sequence;
                }
                db::jobs::update(c, &rec)?;
                let metric = update
                    .point
                    .map(|p| db::metrics::insert(c, id, &p, &now))
                    .transpose()?;
                Ok(Some((rec.job, metric)))
            })
            .await;
        let outcome = match &applied {
            Ok(Some(_)) => "applied",
            Ok(None) => "duplicate",
            Err(JobError::Finished { .. }) => "conflict",
            Err(_) => "error",
        };
        metrics::counter!("platform_callbacks_total", "outcome" => outcome).increment(1);
        if let Some((job, metric)) = applied? {
            if let Some(m) = metric {
                self.events.publish(Event::Metric(Arc::new(m)));
            }
            self.finished(&job);
            self.events.publish(Event::Job(Arc::new(job)));
        }
        Ok(CallbackAck {
            status: "ok".into(),
            job_id: id,
        })
    }

    /// Stores a batch of metric points, all or nothing (after [`Jobs::authorize`]).
    pub async fn ingest(&self, id: Uuid, batch: MetricBatch) -> Result<BatchAck, JobError> {
        let points = batch.validate()?;
        let sequence = batch.sequence;
        let stored = self
            .db
            .write(move |c| {
                let mut rec = db::jobs::get(c, id)?.ok_or(JobError::NotFound(id))?;
                if already_applied(&rec, sequence) {
                    return Ok(Vec::new());
                }
                if rec.job.status.is_terminal() {
                    return Err(JobError::Finished {
                        id,
                        status: rec.job.status,
                    });
                }
                let now = db::now();
                let stored = points
                    .iter()
                    .map(|p| db::metrics::insert(c, id, p, &now))
                    .collect::<Result<Vec<_>, _>>()?;
                if sequence.is_some() {
                    rec.last_sequence = sequence;
                    rec.job.updated_at = now;
                    db::jobs::update(c, &rec)?;
                }
                Ok(stored)
            })
            .await?;
        metrics::counter!("platform_metric_points_total").increment(stored.len() as u64);
        let n = stored.len();
        for m in stored {
            self.events.publish(Event::Metric(Arc::new(m)));
        }
        Ok(BatchAck {
            status: "ok".into(),
            job_id: id,
            stored: n,
        })
    }

    /// Applies a change decided by a runner (launched, exited, vanished…)
    /// under the same rules as callbacks: a job that already ended is left
    /// alone and `Ok(None)` says so.
    pub async fn runner_update<F>(&self, id: Uuid, change: F) -> Result<Option<Job>, JobError>
    where
        F: FnOnce(&mut JobRecord) + Send + 'static,
    {
        let job = self
            .db
            .write(move |c| {
                let Some(mut rec) = db::jobs::get(c, id)? else {
                    return Ok(None);
                };
                if rec.job.status.is_terminal() {
                    return Ok(None);
                }
                change(&mut rec);
                rec.job.updated_at = db::now();
                db::jobs::update(c, &rec)?;
                Ok::<_, JobError>(Some(rec.job))
            })
            .await?;
        if let Some(job) = &job {
            self.finished(job);
            self.events.publish(Event::Job(Arc::new(job.clone())));
        }
        Ok(job)
    }

    /// Stores runner-private state on any job (terminal ones included).
    pub async fn set_runner_state(&self, id: Uuid, state: Option<String>) -> Result<(), JobError> {
        self.db
            .write(move |c| {
                c.execute(
                    "UPDATE jobs SET runner_state = ?2 WHERE id = ?1",
                    rusqlite::params![id.to_string(), state],
                )
                .map_err(DbError::from)?;
                Ok::<_, JobError>(())
            })
            .await
    }

    /// Jobs in `status`, oldest first.
    pub async fn in_status(
        &self,
        status: JobStatus,
        limit: i64,
    ) -> Result<Vec<JobRecord>, JobError> {
        Ok(self
            .db
            .read(move |c| db::jobs::in_status(c, status, limit))
            .await?)
    }

    fn finished(&self, job: &Job) {
        if job.status.is_terminal() {
            if let Ok(mut t) = self.tokens.write() {
                t.remove(&job.id);
            }
        }
    }

    fn cached_token(&self, id: Uuid) -> Option<Arc<str>> {
        self.tokens.read().ok()?.get(&id).cloned()
    }

    fn remember_token(&self, id: Uuid, token: Arc<str>) {
        if let Ok(mut t) = self.tokens.write() {
            t.insert(id, token);
        }
    }
}

/// Moves `job` to `next`, stamping `started_at` on the first `running` and
/// `completed_at` on any terminal status. Callers check
/// [`JobStatus::can_become`] first.
pub fn set_status(job: &mut Job, next: JobStatus, now: chrono::DateTime<chrono::Utc>) {
    job.status = next;
    job.updated_at = now;
    if next == JobStatus::Running && job.started_at.is_none() {
        job.started_at = Some(now);
    }
    if next.is_terminal() && job.completed_at.is_none() {
        job.completed_at = Some(now);
    }
}

fn already_applied(rec: &JobRecord, sequence: Option<i64>) -> bool {
    matches!((sequence, rec.last_sequence), (Some(s), Some(last)) if s <= last)
}

fn replace_if_some(slot: &mut Option<String>, value: Option<String>) {
    if value.is_some() {
        *slot = value;
    }
}

/// A fresh 256-bit callback token, hex-encoded.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
