//! The database: the source of truth for every job and metric point.
//!
//! [`Db`] is one handle whose methods are the operations the rest of the
//! daemon needs (store a job, change one job under a rule, page through
//! jobs or points, …). Their signatures speak in model types only, so the
//! lifecycle service above never sees SQL or a driver type. The backends
//! are a closed enum: SQLite ([`sqlite`]), embedded, with one
//! group-committing writer; PostgreSQL ([`postgres`]), a server shared by
//! replicas, with one batching writer per process.
//!
//! Contract every backend keeps: a write's future resolves only after its
//! transaction is durable (a 2xx survives `kill -9` and power loss), and a
//! change rejected by its rule stores nothing.

mod accounts;
mod columns;
mod coord;
mod downsample;
mod postgres;
mod prune;
mod sqlite;
mod sweeps;
pub mod transfer;
mod url;
mod webhook;

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::webhook::{AttemptOutcome, ClaimedDelivery, Delivery, WebhookRecord};
use crate::model::{
    AuditEntry, FeedPage, FeedPos, FeedRead, Job, JobFilter, JobRecord, JobStatus, Metric,
    MetricFilter, MetricPoint,
};

pub use coord::Notice;
pub use downsample::IdRange;
pub use prune::{CandidateQuery, PruneCandidate, PruneMark, PruneStep, Reclaim};
pub use sqlite::SqliteOptions;
pub use url::{DbUrl, PgUrl, UrlError};

/// Settings of [`Db::open`] beyond the URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// SQLite only.
    pub sqlite: SqliteOptions,
    /// PostgreSQL pool size (over the URL's `pool_size`).
    pub pool_size: Option<usize>,
}

/// Database failures (the server answers 500/503/507 for these).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The backend reported an error.
    #[error("database error: {0}")]
    Backend(String),
    /// The disk is full (`SQLITE_FULL` or `ENOSPC`): nothing was stored.
    #[error("the disk is full: {0}")]
    DiskFull(String),
    /// The database is shutting down.
    #[error("the database is closed")]
    Closed,
    /// The database server cannot be reached or refused us (the server
    /// answers 503; the pool reconnects by itself when it is back).
    #[error("{0}")]
    Unavailable(String),
    /// The committing transaction failed; the write was not applied.
    #[error("the database could not commit: {0}")]
    Commit(String),
    /// Code running inside one operation panicked; only that operation
    /// was undone, the database stays usable.
    #[error("a database operation failed unexpectedly: {0}")]
    Panicked(String),
    /// The database was written by a newer `platform`.
    #[error("the database at {path} has schema version {found}, newer than this binary understands ({supported}); upgrade platform or point DATABASE_URL at another {other}")]
    TooNew {
        /// The database file, or the server's URL (password masked).
        path: PathBuf,
        /// What else DATABASE_URL could name: `file` or `database`.
        other: &'static str,
        /// Its schema version.
        found: usize,
        /// The newest version this binary knows.
        supported: usize,
    },
    /// Migrating the schema failed.
    #[error("cannot migrate the database at {path}: {message}")]
    Migration {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is damaged (bad pages, or not a database at all).
    #[error("the database at {path} is damaged ({problems}); restore it from a backup, or salvage what is readable with `sqlite3 OLD.db .recover | sqlite3 NEW.db`, and check it with `platform db check`")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What SQLite found, `; `-separated.
        problems: String,
    },
    /// A stored value could not be decoded (corruption or a bug).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// What a rule passed to [`Db::modify_job`] decided to store.
#[derive(Debug, Default)]
pub struct Changes {
    /// Write the (changed) job row back.
    pub job: bool,
    /// Metric points to add to the job.
    pub points: Vec<MetricPoint>,
    /// The request that made the change, recorded in the same transaction
    /// (its `at` is set to the commit time).
    pub audit: Option<AuditEntry>,
}

impl Changes {
    /// Store nothing (e.g. a callback whose `sequence` was already applied).
    pub fn none() -> Self {
        Self::default()
    }

    /// Store the changed job.
    pub fn job() -> Self {
        Self {
            job: true,
            ..Self::default()
        }
    }
}

/// The result of [`Db::modify_job`].
#[derive(Debug)]
pub enum Modified {
    /// No job has that id.
    Missing,
    /// The rule stored nothing.
    Unchanged,
    /// Committed: the job as stored and the points added.
    Stored {
        /// The job after the change (boxed: it dwarfs the other variants).
        job: Box<Job>,
        /// The new points, with their ids.
        points: Vec<Metric>,
    },
}

/// The `Idempotency-Key` a create came with ([`Db::create_job_once`]).
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// Whose key it is: keys are unique per owner.
    pub owner: String,
    /// The key.
    pub key: String,
    /// SHA-256 of the canonical request body.
    pub fingerprint: String,
    /// Keys of jobs created before this have expired and may be reused.
    pub since: DateTime<Utc>,
}

/// What [`Db::create_job_once`] did.
#[derive(Debug)]
pub enum Created {
    /// Stored a new job.
    New(Job),
    /// A live job already holds the key; nothing was stored.
    Existing {
        /// That job.
        job: Job,
        /// Whether it was created from the same request body.
        same_request: bool,
    },
}

/// The database handle; cheap to share behind an `Arc`.
pub enum Db {
    /// The embedded SQLite database.
    Sqlite(sqlite::Sqlite),
    /// A PostgreSQL server.
    Postgres(postgres::Postgres),
}

impl Db {
    /// Opens the database `url` names, applies migrations and starts its
    /// writer.
    pub async fn open(url: &DbUrl, options: OpenOptions) -> Result<Db, DbError> {
        match url {
            DbUrl::Sqlite(path) => Self::open_sqlite_with(path, options.sqlite).await,
            DbUrl::Postgres(pg) => Ok(Db::Postgres(
                postgres::Postgres::open(pg, options.pool_size).await?,
            )),
        }
    }

    /// Opens (creating if needed) the SQLite database at `path`, applies
    /// migrations and starts its writer.
    pub async fn open_sqlite(path: &Path) -> Result<Db, DbError> {
        Self::open_sqlite_with(path, SqliteOptions::default()).await
    }

    /// [`Db::open_sqlite`] with options.
    pub async fn open_sqlite_with(path: &Path, options: SqliteOptions) -> Result<Db, DbError> {
        Ok(Db::Sqlite(sqlite::Sqlite::open(path, options).await?))
    }

    /// Checks the SQLite file at `path` without opening it for writing
    /// (`platform db check`): what is wrong with it, empty when it is sound.
    pub fn check_sqlite(path: &Path) -> Result<Vec<String>, DbError> {
        sqlite::Sqlite::check_file(path)
    }

    /// Connects to the PostgreSQL database `url` names and checks its
    /// schema without changing anything (`platform db check`): its version.
    pub async fn check_postgres(url: &PgUrl) -> Result<usize, DbError> {
        postgres::Postgres::check(url).await
    }

    /// One line for logs: the backend and where it is.
    pub fn describe(&self) -> String {
        match self {
            Db::Sqlite(s) => format!("SQLite at {}", s.path().display()),
            Db::Postgres(p) => format!("PostgreSQL at {}", p.url()),
        }
    }

    /// Stores a new job; `created_at`/`updated_at` are stamped at commit
    /// (event streams resume by `updated_at`, so it follows commit order).
    pub async fn create_job(&self, rec: JobRecord) -> Result<Job, DbError> {
        self.create_job_audited(rec, None).await
    }

    /// [`Db::create_job`], recording `audit` (its `at` and `target` set to
    /// the commit time and the job's id) in the same transaction.
    pub async fn create_job_audited(
        &self,
        rec: JobRecord,
        audit: Option<AuditEntry>,
    ) -> Result<Job, DbError> {
        match self {
            Db::Sqlite(s) => s.create_job(rec, audit).await,
            Db::Postgres(p) => p.create_job(rec, audit).await,
        }
    }

    /// [`Db::create_job_audited`] under an idempotency key, atomically: when
    /// a job created since `claim.since` holds the key, that job is
    /// returned and nothing is stored (nor `audit`); an older holder's key
    /// is cleared (it expired) and a new job takes it.
    pub async fn create_job_once(
        &self,
        rec: JobRecord,
        claim: IdempotencyClaim,
        audit: Option<AuditEntry>,
    ) -> Result<Created, DbError> {
        match self {
            Db::Sqlite(s) => s.create_job_once(rec, claim, audit).await,
            Db::Postgres(p) => p.create_job_once(rec, claim, audit).await,
        }
    }

    /// The job holding an unexpired key (a read; the create re-checks).
    pub async fn idempotent_job(
        &self,
        claim: IdempotencyClaim,
    ) -> Result<Option<Created>, DbError> {
        match self {
            Db::Sqlite(s) => s.idempotent_job(claim).await,
            Db::Postgres(p) => p.idempotent_job(claim).await,
        }
    }

    /// One job with its private columns.
    pub async fn job(&self, id: Uuid) -> Result<Option<JobRecord>, DbError> {
        match self {
            Db::Sqlite(s) => s.job(id).await,
            Db::Postgres(p) => p.job(id).await,
        }
    }

    /// A page of jobs, newest first (`created_at` desc, then `id` desc).
    pub async fn jobs(&self, filter: JobFilter) -> Result<Vec<Job>, DbError> {
        match self {
            Db::Sqlite(s) => s.jobs(filter).await,
            Db::Postgres(p) => p.jobs(filter).await,
        }
    }

    /// Applies `rule` to job `id` inside one write: the rule sees the
    /// stored job (attempts included) and the commit time, changes it in
    /// place and says what to store; an `Err` stores nothing. A latest
    /// attempt the rule added or changed is stored with the job. A change
    /// of status also queues its webhook deliveries in the same transaction
    /// (the outbox), so an event is never lost nor sent for a change that
    /// did not commit. Resolves once the change is durable.
    pub async fn modify_job<E, F>(&self, id: Uuid, rule: F) -> Result<Modified, E>
    where
        F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<Changes, E> + Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        match self {
            Db::Sqlite(s) => s.modify_job(id, rule).await,
            Db::Postgres(p) => p.modify_job(id, rule).await,
        }
    }

    /// Stores runner-private state on any job (terminal ones included).
    pub async fn set_runner_state(&self, id: Uuid, state: Option<String>) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.set_runner_state(id, state).await,
            Db::Postgres(p) => p.set_runner_state(id, state).await,
        }
    }

    /// How many jobs are in `status`.
    pub async fn count_in_status(&self, status: JobStatus) -> Result<usize, DbError> {
        match self {
            Db::Sqlite(s) => s.count_in_status(status).await,
            Db::Postgres(p) => p.count_in_status(status).await,
        }
    }

    /// Jobs in `status`, oldest first.
    pub async fn oldest_in_status(
        &self,
        status: JobStatus,
        limit: i64,
    ) -> Result<Vec<JobRecord>, DbError> {
        match self {
            Db::Sqlite(s) => s.oldest_in_status(status, limit).await,
            Db::Postgres(p) => p.oldest_in_status(status, limit).await,
        }
    }

    /// Ended jobs launched by `runner` after `since` whose trainer's exit
    /// was never recorded (their trainers may still be running).
    pub async fn ended_unsettled(
        &self,
        runner: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, DbError> {
        match self {
            Db::Sqlite(s) => s.ended_unsettled(runner, since).await,
            Db::Postgres(p) => p.ended_unsettled(runner, since).await,
        }
    }

    /// A job's points, or `None` when the job does not exist.
    pub async fn metrics(
        &self,
        id: Uuid,
        filter: MetricFilter,
    ) -> Result<Option<Vec<Metric>>, DbError> {
        match self {
            Db::Sqlite(s) => s.metrics(id, filter).await,
            Db::Postgres(p) => p.metrics(id, filter).await,
        }
    }

    /// Stores one sample of a job's system metrics (GPU telemetry), apart
    /// from its training points; `series` is what downsampling keeps the
    /// extremes of. Read back with [`MetricFilter::system`].
    pub async fn add_system_metrics(
        &self,
        id: Uuid,
        attempt: u32,
        metrics: serde_json::Map<String, serde_json::Value>,
        series: f64,
    ) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.add_system_metrics(id, attempt, metrics, series).await,
            Db::Postgres(p) => p.add_system_metrics(id, attempt, metrics, series).await,
        }
    }

    /// What a live feed has not sent yet, read consistently: job versions
    /// first, then points, so a job's terminal version is never read
    /// without the points committed before it.
    pub async fn read_feed(&self, read: FeedRead) -> Result<FeedPage, DbError> {
        match self {
            Db::Sqlite(s) => s.read_feed(read).await,
            Db::Postgres(p) => p.read_feed(read).await,
        }
    }

    /// Where a feed of everything starts: the positions of points and of
    /// job versions it has already seen.
    pub async fn feed_start(&self) -> Result<(FeedPos, FeedPos), DbError> {
        match self {
            Db::Sqlite(s) => s.feed_start().await,
            Db::Postgres(p) => p.feed_start().await,
        }
    }

    /// How many jobs are in each status.
    pub async fn count_by_status(&self) -> Result<Vec<(JobStatus, i64)>, DbError> {
        match self {
            Db::Sqlite(s) => s.count_by_status().await,
            Db::Postgres(p) => p.count_by_status().await,
        }
    }

    /// Stores a webhook endpoint.
    pub async fn add_webhook(&self, rec: WebhookRecord) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.add_webhook(rec).await,
            Db::Postgres(p) => p.add_webhook(rec).await,
        }
    }

    /// Replaces every endpoint of `source` with `recs` (the configured ones).
    pub async fn replace_webhooks(
        &self,
        source: &'static str,
        recs: Vec<WebhookRecord>,
    ) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.replace_webhooks(source, recs).await,
            Db::Postgres(p) => p.replace_webhooks(source, recs).await,
        }
    }

    /// Every webhook endpoint, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<WebhookRecord>, DbError> {
        match self {
            Db::Sqlite(s) => s.webhooks().await,
            Db::Postgres(p) => p.webhooks().await,
        }
    }

    /// One webhook endpoint.
    pub async fn webhook(&self, id: Uuid) -> Result<Option<WebhookRecord>, DbError> {
        match self {
            Db::Sqlite(s) => s.webhook(id).await,
            Db::Postgres(p) => p.webhook(id).await,
        }
    }

    /// Removes an endpoint and its deliveries; whether it existed.
    pub async fn remove_webhook(&self, id: Uuid) -> Result<bool, DbError> {
        match self {
            Db::Sqlite(s) => s.remove_webhook(id).await,
            Db::Postgres(p) => p.remove_webhook(id).await,
        }
    }

    /// Queues `event` for endpoint `id` alone (a test); `None` when unknown.
    pub async fn enqueue_test_event(
        &self,
        id: Uuid,
        event: &'static str,
    ) -> Result<Option<Delivery>, DbError> {
        match self {
            Db::Sqlite(s) => s.enqueue_test_event(id, event).await,
            Db::Postgres(p) => p.enqueue_test_event(id, event).await,
        }
    }

    /// Claims up to `limit` due deliveries for `worker`, each until `lease`
    /// from now; the claim commits before anything is sent, and a claim
    /// that lapses (its worker died) makes the delivery due again. On
    /// PostgreSQL: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`.
    pub async fn claim_deliveries(
        &self,
        worker: &str,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, DbError> {
        match self {
            Db::Sqlite(s) => s.claim_deliveries(worker, lease, limit).await,
            Db::Postgres(p) => p.claim_deliveries(worker, lease, limit).await,
        }
    }

    /// Records how an attempt ended, if `worker` still holds its claim.
    pub async fn finish_delivery(
        &self,
        id: i64,
        worker: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.finish_delivery(id, worker, outcome).await,
            Db::Postgres(p) => p.finish_delivery(id, worker, outcome).await,
        }
    }

    /// The latest deliveries of endpoint `id`, newest first.
    pub async fn deliveries(&self, id: Uuid, limit: i64) -> Result<Vec<Delivery>, DbError> {
        match self {
            Db::Sqlite(s) => s.deliveries(id, limit).await,
            Db::Postgres(p) => p.deliveries(id, limit).await,
        }
    }

    /// When the next pending delivery is due, if any.
    pub async fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, DbError> {
        match self {
            Db::Sqlite(s) => s.next_delivery_due().await,
            Db::Postgres(p) => p.next_delivery_due().await,
        }
    }

    /// Pending and running jobs per queue: `(queue, status, count)`.
    pub async fn count_by_queue(&self) -> Result<Vec<(String, JobStatus, i64)>, DbError> {
        match self {
            Db::Sqlite(s) => s.count_by_queue().await,
            Db::Postgres(p) => p.count_by_queue().await,
        }
    }

    /// The names of paused queues (a queue never paused has no row).
    pub async fn paused_queues(&self) -> Result<Vec<String>, DbError> {
        match self {
            Db::Sqlite(s) => s.paused_queues().await,
            Db::Postgres(p) => p.paused_queues().await,
        }
    }

    /// Pauses or resumes queue `name`, durably.
    pub async fn set_queue_paused(&self, name: String, paused: bool) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.set_queue_paused(name, paused).await,
            Db::Postgres(p) => p.set_queue_paused(name, paused).await,
        }
    }

    /// A round trip, for health checks; also fails with
    /// [`DbError::DiskFull`] while the last write failed for a full disk
    /// (until a later write commits).
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.ping().await,
            Db::Postgres(p) => p.ping().await,
        }
    }

    /// Waits for the integrity check that does not hold up start-up: on
    /// SQLite, `PRAGMA quick_check` over the whole file, which writes wait
    /// for (`Damaged`: none will commit, and the daemon stops); nothing on
    /// PostgreSQL. Returns `Ok` early once `stop` is cancelled.
    pub async fn check_in_background(&self, stop: CancellationToken) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.check_in_background(stop).await,
            Db::Postgres(_) => Ok(()),
        }
    }

    /// Returns memory the connections no longer use to the system (SQLite's
    /// page caches; nothing on PostgreSQL, whose memory is the server's).
    pub async fn release_memory(&self) {
        if let Db::Sqlite(s) = self {
            s.release_memory().await;
        }
    }

    /// Flushes queued writes and closes every connection; later operations
    /// fail with [`DbError::Closed`]. Other holders of the handle may stay.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(s) => s.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// An identifier in double quotes, for the few statements that name a
/// table or column at run time (`db migrate`, `db status`): the names come
/// from the schema itself, and quoting keeps them from being read as SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The current time, truncated to microseconds (what the database stores).
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t - chrono::Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos() % 1000))
}

/// Fixed-width RFC 3339, so stored timestamps sort as text.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a stored timestamp.
fn parse_ts(s: &str) -> Result<DateTime<Utc>, DbError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Corrupt(format!("timestamp {s:?}: {e}")))
}

/// The text of a panic payload (a `&str` or `String`, as `panic!` makes).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
mod tests {
    /// Version N is the same logical schema on both backends, so the lists
    /// grow together.
    #[test]
    fn both_backends_number_their_migrations_alike() {
        assert_eq!(
            super::sqlite::latest_version(),
            super::postgres::latest_version()
        );
    }
}
