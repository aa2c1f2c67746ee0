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
use crate::storage::{Store, StoreError};
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
    /// The object store refused or failed (dataset check).
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// The job service; shared by the HTTP handlers and the runners.
pub struct Jobs {
    db: Arc<Db>,
    events: Events,
    registry: Arc<Registry>,
    callback_auth: bool,
    /// Callback tokens of live jobs, so the hot path skips a read.
    /// Tokens never change, so a cached entry is never stale.
    tokens: RwLock<HashMap<Uuid, Arc<str>>>,
    /// The object store, and whether `create` checks datasets in it.
    store: Option<Arc<Store>>,
    dataset_check: bool,
}

/// Settings the lifecycle rules depend on.
pub struct JobsConfig {
    /// Whether callbacks need the per-job bearer token. Only that token
    /// opens a job's trainer routes (not the operator's API token): a
    /// trainer's credentials are separate and per job.
    pub callback_auth: bool,
}

impl Jobs {
    /// A service over `db`, publishing on `events`.
    pub fn new(db: Arc<Db>, events: Events, registry: Arc<Registry>, cfg: JobsConfig) -> Self {
        Self {
            db,
            events,
            registry,
            callback_auth: cfg.callback_auth,
            tokens: RwLock::new(HashMap::new()),
            store: None,
            dataset_check: false,
        }
    }

    /// Attaches the object store; with `dataset_check`, [`Jobs::create`]
    /// rejects dataset URIs that are outside it or hold no objects.
    pub fn with_store(mut self, store: Arc<Store>, dataset_check: bool) -> Self {
        self.store = Some(store);
        self.dataset_check = dataset_check;
        self
    }

    /// The object store, when one is attached.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
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
        let rec = self.draft(req).await?;
        let token: Arc<str> = rec.callback_token.as_str().into();
        let job = self
            .db
            .write(move |c| {
                // Stamped again inside the writer so `updated_at` follows
                // commit order: the event streams resume by it.
                let mut rec = rec;
                let now = db::now();
                (rec.job.created_at, rec.job.updated_at) = (now, now);
                db::jobs::insert(c, &rec)?;
                Ok::<_, DbError>(rec.job)
            })
            .await
            .map_err(JobError::Db)?;
        self.remember_token(job.id, token);
        metrics::counter!("platform_jobs_created_total").increment(1);
        self.events.publish(Event::Job(Arc::new(job.clone())));
        Ok(job)
    }

    /// Runs every check of [`Jobs::create`] and returns the job it would
    /// store, storing nothing (`create` itself, and dry runs).
    pub async fn draft(&self, req: CreateJob) -> Result<JobRecord, JobError> {
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
        if let (true, Some(store)) = (self.dataset_check, &self.store) {
            store.verify_dataset(&req.dataset_s3_uri).await?;
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
        Ok(rec)
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
    /// stops the trainer when it sees the event. `why` becomes the message
    /// of a job that has none yet.
    pub async fn cancel(&self, id: Uuid, why: &'static str) -> Result<Job, JobError> {
        self.change(id, move |rec, now| {
            if rec.job.status.is_terminal() {
                return Err(JobError::NotCancellable {
                    id,
                    status: rec.job.status,
                });
            }
            set_status(&mut rec.job, JobStatus::Cancelled, now);
            rec.job.message.get_or_insert_with(|| why.into());
            Ok(())
        })
        .await
    }

    /// Applies `change` to one stored job in a write, then announces the
    /// committed result (watchers, SSE streams and the scheduler act on it).
    /// Every change made by a user or a runner goes through here.
    async fn change<F>(&self, id: Uuid, change: F) -> Result<Job, JobError>
    where
        F: FnOnce(&mut JobRecord, chrono::DateTime<chrono::Utc>) -> Result<(), JobError>
            + Send
            + 'static,
    {
        let job = self
            .db
            .write(move |c| {
                let mut rec = db::jobs::get(c, id)?.ok_or(JobError::NotFound(id))?;
                change(&mut rec, db::now())?;
                db::jobs::update(c, &rec)?;
                Ok::<_, JobError>(rec.job)
            })
            .await?;
        self.finished(&job);
        self.events.publish(Event::Job(Arc::new(job.clone())));
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
        let ok = bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token.as_bytes()));
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

    /// Records that `runner` launched the job's trainer: a `pending` job
    /// becomes `running` (stamping `started_at`). The runner and its state
    /// are stored whatever the status, so a job cancelled while it was being
    /// launched can still be stopped; the returned job says which happened.
    pub async fn mark_launched(
        &self,
        id: Uuid,
        runner: &'static str,
        state: Option<String>,
    ) -> Result<Job, JobError> {
        self.change(id, move |rec, now| {
            if rec.job.status == JobStatus::Pending {
                set_status(&mut rec.job, JobStatus::Running, now);
            }
            rec.job.runner = Some(runner.to_string());
            rec.job.updated_at = now;
            rec.runner_state = state;
            Ok(())
        })
        .await
    }

    /// Applies how a trainer ended, as seen by its runner. A job that is
    /// still live becomes `completed` on success or `failed` with the
    /// runner's reason; a job that already ended (its trainer reported, or
    /// a user cancelled) keeps its status. The exit code is recorded either way.
    pub async fn finish_by_runner(
        &self,
        id: Uuid,
        outcome: RunnerOutcome,
    ) -> Result<Job, JobError> {
        self.change(id, move |rec, now| {
            if !rec.job.status.is_terminal() {
                let next = match &outcome.failure {
                    None => JobStatus::Completed,
                    Some(_) => JobStatus::Failed,
                };
                set_status(&mut rec.job, next, now);
                if let Some(reason) = outcome.failure {
                    rec.job.error = Some(reason);
                }
            }
            if outcome.exit_code.is_some() {
                rec.job.exit_code = outcome.exit_code;
            }
            rec.job.updated_at = now;
            Ok(())
        })
        .await
    }

    /// Fails a live job for a reason found by its runner (could not start,
    /// vanished, …); a job that already ended is left as it is.
    pub async fn fail_by_runner(&self, id: Uuid, reason: String) {
        let outcome = RunnerOutcome {
            exit_code: None,
            failure: Some(reason),
        };
        if let Err(e) = self.finish_by_runner(id, outcome).await {
            tracing::error!(job_id = %id, error = %e, "cannot mark the job failed");
        }
    }

    /// Number of launched, non-terminal jobs (what the concurrency limit counts).
    pub async fn count_running(&self) -> Result<usize, JobError> {
        Ok(self
            .db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE status = 'running'",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await? as usize)
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

    /// Jobs of `runner` that ended in the last week without their trainer's
    /// exit being recorded (see [`crate::runner::Runner::reap`]).
    pub async fn ended_unsettled(&self, runner: &'static str) -> Result<Vec<JobRecord>, JobError> {
        let since = db::ts(&(db::now() - chrono::Duration::days(7)));
        Ok(self
            .db
            .read(move |c| db::jobs::ended_unsettled(c, runner, &since))
            .await?)
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

/// How a trainer ended, as its runner saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerOutcome {
    /// The exit code, when known (negative: killed by that signal).
    pub exit_code: Option<i32>,
    /// `None` for success; otherwise one readable line (plus, for local
    /// processes, the last lines of the log).
    pub failure: Option<String>,
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
