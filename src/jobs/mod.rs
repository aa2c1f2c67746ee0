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

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{self, Changes, Db, DbError, Modified};
use crate::events::{Event, Events};
use crate::model::{
    AuditEntry, BatchAck, CallbackAck, CreateJob, FeedPage, FeedPos, FeedRead, Job, JobFilter,
    JobRecord, JobStatus, Metric, MetricBatch, MetricFilter, TrainingUpdate, ValidationError,
};
use crate::queues::Queues;
use crate::storage::{Store, StoreError, WriteMode};
use crate::trainers::Trainers;

mod idempotency;
mod sweeps;

pub use attempts::RunnerOutcome;
pub use idempotency::KeyHold;

/// Why a job operation was refused (each maps to one HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job has this id (404).
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// No sweep has this id, or it is another user's (404).
    #[error("sweep {0} not found")]
    NoSuchSweep(Uuid),
    /// Missing or wrong callback token (401).
    #[error("missing or invalid callback token for job {0}")]
    Unauthorized(Uuid),
    /// The caller may not do this to this job (403); says why, naming the
    /// owner.
    #[error("{0}")]
    Forbidden(String),
    /// A callback for a job that already ended (409).
    #[error("job {id} is already {status}; it accepts no more updates")]
    Finished {
        /// The job.
        id: Uuid,
        /// Its terminal status.
        status: JobStatus,
    },
    /// An artifact upload for a job that ended longer ago than the grace (409).
    #[error("job {id} ended ({status}) at {ended} and accepts artifact uploads only for {grace_secs} s after its end (--artifact-grace)")]
    UploadsClosed {
        /// The job.
        id: Uuid,
        /// Its terminal status.
        status: JobStatus,
        /// When it ended.
        ended: DateTime<Utc>,
        /// The configured grace, in seconds.
        grace_secs: u64,
    },
    /// Cancelling a job that already ended (400).
    #[error("job {id} is already {status} and cannot be cancelled")]
    NotCancellable {
        /// The job.
        id: Uuid,
        /// Its terminal status.
        status: JobStatus,
    },
    /// An `Idempotency-Key` reused for a different request body (422).
    #[error("this Idempotency-Key was already used for a different request (job {0}); use a new key for a new job")]
    KeyReused(Uuid),
    /// A request with this `Idempotency-Key` is still being handled (409).
    #[error("a request with this Idempotency-Key is still being handled; retry when it has been answered")]
    KeyInFlight,
    /// Changing what only a pending job may change (409).
    #[error("job {id} is already {status}; only a pending job's priority can change")]
    NotPending {
        /// The job.
        id: Uuid,
        /// Its status.
        status: JobStatus,
    },
    /// A job named in `after` does not exist (404).
    #[error("job {0} named in `after` does not exist; a job can only wait for existing jobs")]
    NoSuchDependency(Uuid),
    /// No queue has this name (404).
    #[error("unknown queue {name:?}; configured queues: {known}")]
    UnknownQueue {
        /// The name asked for.
        name: String,
        /// The configured ones, comma-separated.
        known: String,
    },
    /// A prune while another one runs (409).
    #[error("a prune is already running (started by a request or the retention policy); try again when it has finished")]
    PruneRunning,
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

/// Settings the lifecycle rules depend on.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The configured queues (a job must name one of them).
    pub queues: Arc<Queues>,
    /// `--max-job-duration`: each job's default and largest `max_duration`.
    pub max_job_duration: Option<f64>,
    /// `--heartbeat-timeout`: the default `heartbeat_timeout`.
    pub heartbeat_timeout: Option<f64>,
    /// `--stale-after`: the default `stale_after`.
    pub stale_after: Option<f64>,
    /// Whether callbacks need the per-job bearer token. Only that token
    /// opens a job's trainer routes (not the operator's API token): a
    /// trainer's credentials are separate and per job.
    pub callback_auth: bool,
    /// Whether `create` rejects dataset URIs that are outside the store or
    /// hold no objects.
    pub dataset_check: bool,
    /// How long after a job ends its trainer may still upload artifacts
    /// (new files only; see [`Jobs::may_upload`]).
    pub artifact_grace: std::time::Duration,
    /// How long an `Idempotency-Key` answers with its job (see
    /// [`Jobs::create_once`]).
    pub idempotency_ttl: std::time::Duration,
    /// GPUs of the machine trainers run on, when the daemon accounts for
    /// them (the subprocess runner): a job asking for more is refused.
    /// `None`: no local accounting (Kubernetes).
    pub gpu_capacity: Option<u32>,
}

/// What an artifact upload may do ([`Jobs::may_upload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadPermit {
    /// The job is live: write, replacing an earlier upload of the same path.
    Replace,
    /// The job ended within the grace: store new files only.
    CreateOnly {
        /// The job's terminal status.
        status: JobStatus,
    },
}

impl UploadPermit {
    /// How the store may write the file.
    pub fn mode(self) -> WriteMode {
        match self {
            UploadPermit::Replace => WriteMode::Replace,
            UploadPermit::CreateOnly { .. } => WriteMode::CreateOnly,
        }
    }
}

/// The job service; shared by the HTTP handlers and the runners. It owns
/// the database, the dataset check and the event hub's publishing side;
/// callers reach them only through its operations.
pub struct Jobs {
    db: Arc<Db>,
    events: Events,
    registry: Arc<Trainers>,
    store: Arc<Store>,
    cfg: JobsConfig,
    /// Token hashes of live jobs, so the hot path skips a read. An entry
    /// is replaced when a launch mints a new token and dropped when the
    /// job ends, or changes on another replica (`remote.rs`), so it is
    /// never stale.
    tokens: RwLock<HashMap<Uuid, Arc<str>>>,
    /// Idempotency keys of creates being handled.
    in_flight: Arc<idempotency::InFlight>,
    /// When each live job's heartbeat was last written, and how often it
    /// may be (see [`Jobs::heartbeat`]).
    beats: std::sync::Mutex<HashMap<Uuid, sched::Beat>>,
    /// Held while a prune runs (one at a time; see `retention.rs`).
    pruning: tokio::sync::Mutex<()>,
}

impl Jobs {
    /// A service over `db`, publishing committed changes on `events`,
    /// checking frameworks against `registry` and datasets in `store`.
    pub fn new(
        db: Arc<Db>,
        events: Events,
        registry: Arc<Trainers>,
        store: Arc<Store>,
        cfg: JobsConfig,
    ) -> Self {
        Self {
            db,
            events,
            registry,
            store,
            cfg,
            tokens: RwLock::new(HashMap::new()),
            in_flight: Arc::default(),
            beats: std::sync::Mutex::new(HashMap::new()),
            pruning: tokio::sync::Mutex::new(()),
        }
    }

    /// A subscription to committed changes (the scheduler and live
    /// streams wake up on these, then read what changed).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Validates and stores a new `pending` job. The scheduler launches it.
    pub async fn create(&self, req: CreateJob) -> Result<Job, JobError> {
        let rec = self.draft(req).await?;
        self.insert(rec, None).await
    }

    /// Runs every check of [`Jobs::create`] and returns the job it would
    /// store, storing nothing (`create` itself, and dry runs).
    pub async fn draft(&self, req: CreateJob) -> Result<JobRecord, JobError> {
        req.validate()?;
        let registry = self.registry.current();
        if !registry.contains(&req.framework) {
            return Err(ValidationError::new(
                "framework",
                format!(
                    "unknown framework {:?}; registered frameworks: {} ({})",
                    req.framework,
                    registry.names().join(", "),
                    self.registry.reload_hint()
                ),
            )
            .into());
        }
        let sched = self.scheduling(&req, &registry).await?;
        if self.cfg.dataset_check {
            self.store.verify_dataset(&req.dataset_s3_uri).await?;
        }
        let now = db::now();
        let rec = JobRecord {
            job: Job {
                id: Uuid::now_v7(),
                // Assigned by the database when the job is stored.
                number: 0,
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
                sched,
                labels: req.labels.stored(None),
                pruned: None,
            },
            token_hash: None,
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
        self.db.job(id).await?.ok_or(JobError::NotFound(id))
    }

    /// A page of jobs, newest first.
    pub async fn list(&self, filter: JobFilter) -> Result<Vec<Job>, JobError> {
        Ok(self.db.jobs(filter).await?)
    }

    /// A job's metric points.
    pub async fn metrics(&self, id: Uuid, filter: MetricFilter) -> Result<Vec<Metric>, JobError> {
        self.db
            .metrics(id, filter)
            .await?
            .ok_or(JobError::NotFound(id))
    }

    /// What a live feed has not sent yet (see [`Db::read_feed`]).
    pub async fn read_feed(&self, read: FeedRead) -> Result<FeedPage, JobError> {
        Ok(self.db.read_feed(read).await?)
    }

    /// Where a feed of every job starts: the positions of the points and
    /// job versions already stored.
    pub async fn feed_start(&self) -> Result<(FeedPos, FeedPos), JobError> {
        Ok(self.db.feed_start().await?)
    }

    /// How many jobs are in each status (for `/metrics`).
    pub async fn count_by_status(&self) -> Result<Vec<(JobStatus, i64)>, JobError> {
        Ok(self.db.count_by_status().await?)
    }

    /// Whether the database answers (for `/health`).
    pub async fn check_database(&self) -> Result<(), JobError> {
        Ok(self.db.ping().await?)
    }

    /// Cancels a live job: `cancelled` is committed at once; the runner
    /// stops the trainer when it sees the event. `why` becomes the message
    /// of a job that has none yet.
    pub async fn cancel(&self, id: Uuid, why: &'static str) -> Result<Job, JobError> {
        self.change(id, move |rec, now| cancelling(rec, now, why))
            .await
    }

    /// Applies `change` to one stored job in a write, then announces the
    /// committed result (watchers, SSE streams and the scheduler act on it).
    /// Every change made by a user or a runner goes through here.
    async fn change<F>(&self, id: Uuid, change: F) -> Result<Job, JobError>
    where
        F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<(), JobError> + Send + 'static,
    {
        self.change_recorded(id, None, change).await
    }

    /// [`Jobs::change`], recording `audit` in the same transaction.
    async fn change_recorded<F>(
        &self,
        id: Uuid,
        audit: Option<AuditEntry>,
        change: F,
    ) -> Result<Job, JobError>
    where
        F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<(), JobError> + Send + 'static,
    {
        let modified = self
            .db
            .modify_job(id, move |rec, now| {
                change(rec, now)?;
                Ok::<_, JobError>(Changes {
                    audit,
                    ..Changes::job()
                })
            })
            .await?;
        let Modified::Stored { job, .. } = modified else {
            return Err(JobError::NotFound(id));
        };
        self.announce(Arc::new((*job).clone()), Vec::new());
        Ok(*job)
    }

    /// Publishes committed points, then the job (streams show a job's
    /// terminal state after its last points).
    fn announce(&self, job: Arc<Job>, points: Vec<Metric>) {
        for m in points {
            self.events.publish(Event::Metric(Arc::new(m)));
        }
        if job.status.is_terminal() {
            self.forget_token(job.id);
        }
        self.events.publish(Event::Job(job));
    }

    /// Whether a trainer may upload an artifact for job `id` now (after
    /// [`Jobs::authorize`]). While the job is live, freely. For
    /// `artifact_grace` after it ended, new files only: a final checkpoint
    /// sent right after `completed` is kept, but nothing an ended job
    /// stored is ever replaced. After that, never: a leaked callback token
    /// cannot rewrite a finished job's outputs.
    pub async fn may_upload(&self, id: Uuid) -> Result<UploadPermit, JobError> {
        let job = self.get(id).await?;
        if !job.status.is_terminal() {
            // An upload is a sign of life too.
            self.heartbeat(id).await?;
            return Ok(UploadPermit::Replace);
        }
        let ended = job.completed_at.unwrap_or(job.updated_at);
        let grace = self.cfg.artifact_grace;
        let open = chrono::Duration::from_std(grace)
            .ok()
            .and_then(|g| ended.checked_add_signed(g))
            .is_none_or(|until| db::now() <= until);
        if !open {
            return Err(JobError::UploadsClosed {
                id,
                status: job.status,
                ended,
                grace_secs: grace.as_secs(),
            });
        }
        Ok(UploadPermit::CreateOnly { status: job.status })
    }

    /// Applies a trainer callback (after [`Jobs::authorize`]).
    pub async fn callback(&self, id: Uuid, body: TrainingUpdate) -> Result<CallbackAck, JobError> {
        let update = body.validate(id)?;
        let modified = self
            .db
            .modify_job(id, move |rec, now| {
                if already_applied(rec, update.sequence) {
                    return Ok(Changes::none());
                }
                let job = &mut rec.job;
                job.transition(update.status, now)
                    .map_err(|e| JobError::Finished { id, status: e.from })?;
                if let Some(p) = update.progress {
                    job.progress = p;
                }
                replace_if_some(&mut job.message, update.message);
                replace_if_some(&mut job.checkpoint_s3_uri, update.checkpoint_s3_uri);
                replace_if_some(&mut job.error, update.error);
                if update.sequence.is_some() {
                    rec.last_sequence = update.sequence;
                }
                sched::beat(rec, now);
                Ok(Changes {
                    job: true,
                    points: update.point.into_iter().collect(),
                    audit: None,
                })
            })
            .await;
        let outcome = match &modified {
            Ok(Modified::Stored { .. }) => "applied",
            Ok(Modified::Unchanged) => "duplicate",
            Err(JobError::Finished { .. }) => "conflict",
            Ok(Modified::Missing) | Err(_) => "error",
        };
        metrics::counter!("platform_callbacks_total", "outcome" => outcome).increment(1);
        let applied = match modified? {
            Modified::Missing => return Err(JobError::NotFound(id)),
            Modified::Unchanged => false,
            Modified::Stored { job, points } => {
                self.beat_written(id, &job);
                // The committed job moves into the event: no copy per callback.
                self.announce(Arc::new(*job), points);
                true
            }
        };
        Ok(CallbackAck {
            status: "ok".into(),
            job_id: id,
            applied,
        })
    }

    /// Stores a batch of metric points, all or nothing (after [`Jobs::authorize`]).
    pub async fn ingest(&self, id: Uuid, batch: MetricBatch) -> Result<BatchAck, JobError> {
        let points = batch.validate()?;
        let sequence = batch.sequence;
        let modified = self
            .db
            .modify_job(id, move |rec, now| {
                if already_applied(rec, sequence) {
                    return Ok(Changes::none());
                }
                if rec.job.status.is_terminal() {
                    return Err(JobError::Finished {
                        id,
                        status: rec.job.status,
                    });
                }
                // The sequence is the only job column a batch changes.
                let job = sequence.is_some();
                if job {
                    rec.last_sequence = sequence;
                    rec.job.updated_at = now;
                    sched::beat(rec, now);
                }
                Ok(Changes {
                    job,
                    points,
                    audit: None,
                })
            })
            .await?;
        let stored = match modified {
            Modified::Missing => return Err(JobError::NotFound(id)),
            Modified::Unchanged => Vec::new(),
            Modified::Stored { points, job } => {
                if sequence.is_some() {
                    self.beat_written(id, &job);
                } else {
                    self.heartbeat(id).await?;
                }
                points
            }
        };
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
                // Pending may always become running.
                let _ = rec.job.transition(JobStatus::Running, now);
                // A pending job's only message is why its launch is
                // being retried ([`Jobs::defer_launch`]); it is past.
                rec.job.message = None;
            }
            rec.job.runner = Some(runner.to_string());
            rec.job.updated_at = now;
            rec.runner_state = state;
            Ok(())
        })
        .await
    }

    /// Says on a `pending` job why its launch failed and when it is retried
    /// (its `message`); a job that is no longer pending is left as it is.
    pub async fn defer_launch(&self, id: Uuid, message: String) -> Result<Job, JobError> {
        self.change(id, move |rec, now| {
            if rec.job.status == JobStatus::Pending {
                rec.job.message = Some(message);
                rec.job.updated_at = now;
            }
            Ok(())
        })
        .await
    }

    /// Number of `running` jobs.
    pub async fn count_running(&self) -> Result<usize, JobError> {
        Ok(self.db.count_in_status(JobStatus::Running).await?)
    }

    /// Ids of the `running` jobs (the concurrency limit counts them, with
    /// the trainers their runner still watches).
    pub async fn running_ids(&self) -> Result<Vec<Uuid>, JobError> {
        let running = self
            .db
            .oldest_in_status(JobStatus::Running, i64::MAX)
            .await?;
        Ok(running.into_iter().map(|r| r.job.id).collect())
    }

    /// Stores runner-private state on any job (terminal ones included).
    pub async fn set_runner_state(&self, id: Uuid, state: Option<String>) -> Result<(), JobError> {
        Ok(self.db.set_runner_state(id, state).await?)
    }

    /// Jobs of `runner` that ended in the last week without their trainer's
    /// exit being recorded (see [`crate::runner::Runner::reap`]).
    pub async fn ended_unsettled(&self, runner: &'static str) -> Result<Vec<JobRecord>, JobError> {
        let since = db::now() - chrono::Duration::days(7);
        Ok(self.db.ended_unsettled(runner, since).await?)
    }

    /// Jobs in `status`, oldest first.
    pub async fn in_status(
        &self,
        status: JobStatus,
        limit: i64,
    ) -> Result<Vec<JobRecord>, JobError> {
        Ok(self.db.oldest_in_status(status, limit).await?)
    }
}

/// The cancel rule: `cancelled` now, `why` as the message of a job that
/// has none yet, and "cancelled" as its current attempt's reason.
fn cancelling(rec: &mut JobRecord, now: DateTime<Utc>, why: &str) -> Result<(), JobError> {
    let id = rec.job.id;
    rec.job
        .transition(JobStatus::Cancelled, now)
        .map_err(|e| JobError::NotCancellable { id, status: e.from })?;
    rec.job.message.get_or_insert_with(|| why.into());
    if let Some(a) = rec.job.sched.current_attempt_mut() {
        a.reason.get_or_insert_with(|| "cancelled".into());
    }
    Ok(())
}

fn already_applied(rec: &JobRecord, sequence: Option<i64>) -> bool {
    matches!((sequence, rec.last_sequence), (Some(s), Some(last)) if s <= last)
}

fn replace_if_some(slot: &mut Option<String>, value: Option<String>) {
    if value.is_some() {
        *slot = value;
    }
}

mod access;
mod attempts;
mod gpus;
mod remote;
mod retention;
mod sched;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod tokens;
