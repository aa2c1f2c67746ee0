//! The embedded SQLite backend: opening, pragmas, migrations, a pool of
//! readers and one group-committing writer, and the SQL behind each
//! [`Db`](super::Db) operation.
//!
//! SQLite allows one writer at a time, so every write goes through a single
//! writer ([`writer`], a loop on its connection's thread) that packs
//! whatever writes are queued into one transaction and one fsync. A
//! write's future resolves only after its transaction has committed with
//! `synchronous=FULL`. Reads go to a small pool of read-only connections
//! that WAL mode lets run beside the writer, opened as overlapping reads
//! need them ([`readers`]). Nothing outside this module sees a `rusqlite`
//! type.

mod accounts;
mod alloc;
mod check;
mod checkpoint;
mod clean;
pub(super) mod export;
mod fresh;
mod jobs;
mod metrics;
mod migrations;
mod prune;
mod readers;
mod sweeps;
mod users;
mod webhooks;
mod writer;

#[cfg(test)]
pub(super) use migrations::latest_version;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{now, panic_message, Changes, Created, DbError, IdempotencyClaim, Modified};
use crate::model::webhook::{job_event, AttemptOutcome, ClaimedDelivery, Delivery, WebhookRecord};
use crate::model::{
    AuditEntry, FeedPage, FeedPos, FeedRead, FeedScope, Job, JobFilter, JobRecord, JobStatus,
    Metric, MetricFilter, Order,
};

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        // SQLITE_FULL is SQLite's own answer to ENOSPC on a write; an I/O
        // error with that errno is recognised where the connection is at
        // hand (the writer's commit).
        if check::is_damage(&e) {
            clean::note_damage();
        }
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => DbError::DiskFull(e.to_string()),
            _ => DbError::Backend(e.to_string()),
        }
    }
}

impl From<tokio_rusqlite::Error<rusqlite::Error>> for DbError {
    fn from(e: tokio_rusqlite::Error<rusqlite::Error>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => e.into(),
            tokio_rusqlite::Error::Close((_, e)) => e.into(),
            _ => DbError::Closed,
        }
    }
}

impl From<tokio_rusqlite::Error<DbError>> for DbError {
    fn from(e: tokio_rusqlite::Error<DbError>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => e,
            tokio_rusqlite::Error::Close((_, e)) => e.into(),
            _ => DbError::Closed,
        }
    }
}

/// Settings of [`Sqlite::open`] beyond the path.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteOptions {
    /// Caps the database file at this many pages (`PRAGMA max_page_count`);
    /// growing past it fails like a full disk. Only tests set it: it is the
    /// one way to get a real `SQLITE_FULL` without filling a filesystem.
    pub max_pages: Option<u64>,
}

/// An open SQLite database.
pub struct Sqlite {
    path: PathBuf,
    writer: writer::Writer,
    readers: readers::Readers,
}

impl Sqlite {
    /// Opens (creating if needed) the database file, applies migrations and
    /// starts the writer.
    pub async fn open(path: &Path, options: SqliteOptions) -> Result<Sqlite, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Migration {
                path: path.to_path_buf(),
                message: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        if !alloc::install() {
            tracing::debug!("SQLite keeps the C allocator (it was initialised before)");
        }
        // Before the file is opened: opening may already change it.
        let sealed = clean::take(path);
        let fresh = fresh::create(path)?;
        let owned = path.to_path_buf();
        let conn = tokio_rusqlite::Connection::open(path).await?;
        let checked = conn
            .call(move |c| -> Result<bool, DbError> {
                let damaged = |e: rusqlite::Error| {
                    if check::is_damage(&e) {
                        check::damaged(&owned, vec![e.to_string()])
                    } else {
                        e.into()
                    }
                };
                configure(c).map_err(damaged)?;
                // Only takes on a new file (before its first table): prunes
                // then give space back (`prune.rs`); older files need one
                // `platform db vacuum`.
                c.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                    .map_err(damaged)?;
                c.pragma_update(None, "journal_mode", "WAL")
                    .map_err(damaged)?;
                // Before anything is written: a file damaged where this looks
                // starts nothing; the rest is the writer's gate (below).
                check::probe(c, &owned)?;
                // A migration writes before the writer exists: check it all first.
                let whole = migrations_pending(c)?;
                if whole {
                    check::sound(c, &owned, check::Depth::Quick)?;
                }
                migrate(c, &owned)?;
                if let Some(pages) = options.max_pages {
                    // Below the current size SQLite keeps the current size.
                    c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
                }
                Ok(whole)
            })
            .await?;
        let readers = readers::Readers::open(path).await?;
        let owned = path.to_path_buf();
        if sealed && !checked {
            tracing::debug!(
                "the database is as its last clean shutdown left it: its whole-file check is skipped"
            );
        }
        let writer = writer::Writer::start(conn, move |stop| {
            let gate: writer::Gate = Box::pin(check::in_background(owned, stop));
            (!checked && !sealed && !fresh).then_some(gate)
        });
        Ok(Sqlite {
            path: path.to_path_buf(),
            writer,
            readers,
        })
    }

    /// Waits for the writer's gate, the whole-file `quick_check` (`Ok`
    /// early once `stop` is cancelled): `Damaged` when it found damage.
    pub(super) async fn check_in_background(&self, stop: CancellationToken) -> Result<(), DbError> {
        tokio::select! {
            passed = self.writer.opened() => passed,
            _ = stop.cancelled() => Ok(()),
        }
    }

    /// `PRAGMA integrity_check` on the file at `path`, opened read-only:
    /// what is wrong with it (empty when it is sound).
    pub fn check_file(path: &Path) -> Result<Vec<String>, DbError> {
        check::check_file(path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read-only connection. A panic in `f` fails this read
    /// only; the connection's thread lives on.
    async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let reader = self.readers.acquire().await?;
        reader
            .conn()
            .call(move |c| {
                std::panic::catch_unwind(AssertUnwindSafe(|| f(c)))
                    .unwrap_or_else(|p| Err(DbError::Panicked(panic_message(p.as_ref()))))
            })
            .await
            .map_err(DbError::from)
    }

    pub(super) async fn create_job(
        &self,
        rec: JobRecord,
        audit: Option<AuditEntry>,
    ) -> Result<Job, DbError> {
        self.writer
            .write(move |c| Ok(Ok(insert_job(c, rec, audit)?)))
            .await
    }

    pub(super) async fn create_job_once(
        &self,
        rec: JobRecord,
        claim: IdempotencyClaim,
        audit: Option<AuditEntry>,
    ) -> Result<Created, DbError> {
        self.writer
            .write(move |c| {
                match jobs::by_idempotency_key(c, &claim.owner, &claim.key)? {
                    Some((held, fp)) if held.job.created_at >= claim.since => {
                        return Ok(Ok(existing(held, &fp, &claim)));
                    }
                    Some((expired, _)) => jobs::set_idempotency(c, expired.job.id, None)?,
                    None => {}
                }
                let job = insert_job(c, rec, audit)?;
                let key = (&*claim.owner, &*claim.key, &*claim.fingerprint);
                jobs::set_idempotency(c, job.id, Some(key))?;
                Ok(Ok(Created::New(job)))
            })
            .await
    }

    pub(super) async fn idempotent_job(
        &self,
        claim: IdempotencyClaim,
    ) -> Result<Option<Created>, DbError> {
        self.read(move |c| {
            Ok(jobs::by_idempotency_key(c, &claim.owner, &claim.key)?
                .filter(|(held, _)| held.job.created_at >= claim.since)
                .map(|(held, fp)| existing(held, &fp, &claim)))
        })
        .await
    }

    pub(super) async fn job(&self, id: Uuid) -> Result<Option<JobRecord>, DbError> {
        self.read(move |c| jobs::get(c, id)).await
    }

    pub(super) async fn jobs(&self, filter: JobFilter) -> Result<Vec<Job>, DbError> {
        self.read(move |c| jobs::list(c, &filter)).await
    }

    pub(super) async fn modify_job<E, F>(&self, id: Uuid, rule: F) -> Result<Modified, E>
    where
        F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<Changes, E> + Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.writer
            .write_job(move |c, cache| {
                let cached = cache.take(id);
                let Some(mut rec) = cached.map_or_else(|| jobs::get(c, id), |r| Ok(Some(r)))?
                else {
                    return Ok(Ok(Modified::Missing));
                };
                let t = now();
                let before = rec.job.status;
                // Rules only ever start or end the latest attempt.
                let attempt_before = rec.job.sched.attempts.last().cloned();
                let indexed = jobs::IndexedColumns::of(&rec);
                let changes = match rule(&mut rec, t) {
                    Ok(changes) => changes,
                    Err(refused) => return Ok(Err(refused)),
                };
                if !changes.job && changes.points.is_empty() && changes.audit.is_none() {
                    return Ok(Ok(Modified::Unchanged));
                }
                if changes.job {
                    indexed.write(c, &rec)?;
                    if let Some(a) = rec.job.sched.attempts.last() {
                        if attempt_before.as_ref() != Some(a) {
                            jobs::upsert_attempt(c, id, a)?;
                        }
                    }
                    // Only a status change enqueues (metrics and progress never).
                    if rec.job.status != before {
                        if let Some(event) = job_event(rec.job.status) {
                            webhooks::enqueue_job_event(c, &rec.job, event, &t)?;
                        }
                    }
                }
                if let Some(mut a) = changes.audit {
                    a.at = t;
                    users::insert_audit(c, &a)?;
                }
                let points = changes
                    .points
                    .iter()
                    .map(|p| metrics::insert(c, (id, rec.job.number), rec.job.sched.attempt, p, &t))
                    .collect::<Result<Vec<_>, _>>()?;
                if !points.is_empty() {
                    cache.points_added(c, rec.job.number, points.len())?;
                }
                // Only a record written in full is what the row holds.
                if changes.job {
                    cache.keep(&rec);
                }
                Ok(Ok(Modified::Stored {
                    job: Box::new(rec.job),
                    points,
                }))
            })
            .await
    }

    pub(super) async fn set_runner_state(
        &self,
        id: Uuid,
        state: Option<String>,
    ) -> Result<(), DbError> {
        self.writer
            .write(move |c| Ok(Ok(jobs::set_runner_state(c, id, state.as_deref())?)))
            .await
    }

    pub(super) async fn count_in_status(&self, status: JobStatus) -> Result<usize, DbError> {
        self.read(move |c| jobs::count_in_status(c, status)).await
    }

    pub(super) async fn oldest_in_status(
        &self,
        status: JobStatus,
        limit: i64,
    ) -> Result<Vec<JobRecord>, DbError> {
        self.read(move |c| jobs::in_status(c, status, limit)).await
    }

    pub(super) async fn ended_unsettled(
        &self,
        runner: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, DbError> {
        let runner = runner.to_string();
        self.read(move |c| jobs::ended_unsettled(c, &runner, &since))
            .await
    }

    pub(super) async fn metrics(
        &self,
        id: Uuid,
        filter: MetricFilter,
    ) -> Result<Option<Vec<Metric>>, DbError> {
        self.read(move |c| metrics::list(c, id, &filter)).await
    }

    pub(super) async fn add_system_metrics(
        &self,
        id: Uuid,
        attempt: u32,
        metrics: serde_json::Map<String, serde_json::Value>,
        series: f64,
    ) -> Result<(), DbError> {
        self.writer
            .write(move |c| {
                let at = crate::db::now();
                Ok(Ok(metrics::insert_system(
                    c, id, attempt, &metrics, series, &at,
                )?))
            })
            .await
    }

    /// Positions are `(0, id)` for points and `(0, updated_at in µs)` for
    /// jobs: with one writer, both follow commit order.
    pub(super) async fn read_feed(&self, read: FeedRead) -> Result<FeedPage, DbError> {
        self.read(move |c| {
            let jobs = match (read.jobs_after, read.scope) {
                (None, _) => Vec::new(),
                (Some(_), FeedScope::Job(id)) => {
                    jobs::get(c, id)?.map(|r| r.job).into_iter().collect()
                }
                (Some((_, since)), FeedScope::All) => {
                    let since = DateTime::from_timestamp_micros(since).unwrap_or_default();
                    jobs::changed_since(c, &since, read.page)?
                }
            };
            let points = match read.scope {
                FeedScope::Job(id) => {
                    let f = MetricFilter {
                        limit: read.page,
                        order: Order::Asc,
                        after_id: Some(read.points_after.1),
                        max_points: None,
                        system: false,
                    };
                    metrics::list(c, id, &f)?.unwrap_or_default()
                }
                FeedScope::All => metrics::all_after(c, read.points_after.1, read.page)?,
            };
            Ok(FeedPage {
                jobs: jobs
                    .into_iter()
                    .map(|j| ((0, j.updated_at.timestamp_micros()), j))
                    .collect(),
                points: points.into_iter().map(|m| ((0, m.id), m)).collect(),
                held_back: false,
            })
        })
        .await
    }

    pub(super) async fn feed_start(&self) -> Result<(FeedPos, FeedPos), DbError> {
        self.read(|c| {
            let job = jobs::last_change(c)?.map_or(0, |t| t.timestamp_micros());
            Ok(((0, metrics::last_id(c)?), (0, job)))
        })
        .await
    }

    pub(super) async fn count_by_queue(&self) -> Result<Vec<(String, JobStatus, i64)>, DbError> {
        self.read(jobs::count_by_queue).await
    }

    pub(super) async fn paused_queues(&self) -> Result<Vec<String>, DbError> {
        self.read(jobs::paused_queues).await
    }

    pub(super) async fn set_queue_paused(&self, name: String, paused: bool) -> Result<(), DbError> {
        self.writer
            .write(move |c| Ok(Ok(jobs::set_queue_paused(c, &name, paused, &now())?)))
            .await
    }

    pub(super) async fn count_by_status(&self) -> Result<Vec<(JobStatus, i64)>, DbError> {
        self.read(jobs::count_by_status).await
    }

    pub(super) async fn add_webhook(&self, rec: WebhookRecord) -> Result<(), DbError> {
        self.writer
            .write(move |c| Ok(Ok(webhooks::insert(c, &rec)?)))
            .await
    }

    pub(super) async fn replace_webhooks(
        &self,
        source: &'static str,
        recs: Vec<WebhookRecord>,
    ) -> Result<(), DbError> {
        if recs.is_empty() {
            // Start-up calls this with none configured, usually: a write
            // would wait for the writer's gate, the whole-file check.
            let stored = self.webhooks().await?;
            if !stored.iter().any(|r| r.webhook.source == source) {
                return Ok(());
            }
        }
        self.writer
            .write(move |c| Ok(Ok(webhooks::replace_source(c, source, &recs)?)))
            .await
    }

    pub(super) async fn webhooks(&self) -> Result<Vec<WebhookRecord>, DbError> {
        self.read(webhooks::list).await
    }

    pub(super) async fn webhook(&self, id: Uuid) -> Result<Option<WebhookRecord>, DbError> {
        self.read(move |c| webhooks::get(c, id)).await
    }

    pub(super) async fn remove_webhook(&self, id: Uuid) -> Result<bool, DbError> {
        self.writer
            .write(move |c| Ok(Ok(webhooks::delete(c, id)?)))
            .await
    }

    pub(super) async fn enqueue_test_event(
        &self,
        id: Uuid,
        event: &'static str,
    ) -> Result<Option<Delivery>, DbError> {
        self.writer
            .write(move |c| Ok(Ok(webhooks::enqueue_test(c, id, event, &now())?)))
            .await
    }

    pub(super) async fn claim_deliveries(
        &self,
        worker: &str,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, DbError> {
        let worker = worker.to_string();
        self.writer
            .write(move |c| {
                let t = now();
                let until = t + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
                Ok(Ok(webhooks::claim(c, &worker, &t, &until, limit)?))
            })
            .await
    }

    pub(super) async fn finish_delivery(
        &self,
        id: i64,
        worker: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), DbError> {
        let worker = worker.to_string();
        self.writer
            .write(move |c| Ok(Ok(webhooks::finish(c, id, &worker, &outcome, &now())?)))
            .await
    }

    pub(super) async fn deliveries(&self, id: Uuid, limit: i64) -> Result<Vec<Delivery>, DbError> {
        self.read(move |c| webhooks::deliveries(c, id, limit)).await
    }

    pub(super) async fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, DbError> {
        self.read(webhooks::next_due).await
    }

    pub(super) async fn ping(&self) -> Result<(), DbError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await?;
        if self.writer.disk_full() {
            return Err(DbError::DiskFull(
                "the last write to the database failed".into(),
            ));
        }
        Ok(())
    }

    /// Returns memory the connections no longer use (their page caches) to
    /// the system; they fill again as they read.
    pub(super) async fn release_memory(&self) {
        for reader in self.readers.opened() {
            let _ = reader
                .call(|c| {
                    alloc::release(c);
                    Ok::<_, rusqlite::Error>(())
                })
                .await;
        }
        let _ = self
            .writer
            .write_job(|c, _| {
                alloc::release(c);
                Ok(Ok::<_, DbError>(()))
            })
            .await;
    }

    /// Flushes queued writes and closes every connection (checkpointing the
    /// WAL); later operations fail with `Closed`.
    pub(super) async fn close(&self) {
        // Readers first: SQLite checkpoints and removes the WAL only when
        // the last connection closes, and a read-only one cannot.
        self.readers.close().await;
        self.writer.close().await;
        if self.writer.passed() && !clean::damage_seen() {
            clean::seal(&self.path);
        }
    }
}

/// Stores a new job stamped with the commit time, and `audit` (its `at`
/// and `target` set to that time and the job's id) in the same transaction.
fn insert_job(
    c: &rusqlite::Connection,
    mut rec: JobRecord,
    audit: Option<AuditEntry>,
) -> Result<Job, DbError> {
    let t = now();
    (rec.job.created_at, rec.job.updated_at) = (t, t);
    jobs::insert(c, &mut rec)?;
    if let Some(mut a) = audit {
        (a.at, a.target) = (t, Some(rec.job.id.to_string()));
        users::insert_audit(c, &a)?;
    }
    Ok(rec.job)
}

/// The answer for a key some job already holds.
fn existing(held: JobRecord, fingerprint: &str, claim: &IdempotencyClaim) -> Created {
    Created::Existing {
        job: held.job,
        same_request: fingerprint == claim.fingerprint,
    }
}

/// The file beside the database whose name is the database's plus
/// `suffix`, as SQLite names its `-wal` and `-shm`.
fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    db.with_file_name(name)
}

fn configure(c: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    // Room for every hot statement (the default of 16 would start evicting).
    c.set_prepared_statement_cache_capacity(64);
    // FULL: a commit is on disk before the write is acknowledged.
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Whether the file's schema is older than this binary's (a new, empty
/// file too: checking it whole costs nothing).
fn migrations_pending(c: &rusqlite::Connection) -> Result<bool, DbError> {
    let found: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok(usize::try_from(found).is_ok_and(|v| v < migrations::latest_version()))
}

fn migrate(c: &mut rusqlite::Connection, path: &Path) -> Result<(), DbError> {
    let supported = migrations::latest_version();
    let found: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > supported {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            other: "file",
            found,
            supported,
        });
    }
    migrations::migrations()
        .to_latest(c)
        .map_err(|e| DbError::Migration {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit that takes the log past the checkpointer's step is copied
    /// into the file without another write (see `checkpoint`).
    #[tokio::test]
    async fn the_log_is_copied_into_the_file_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        let db = Sqlite::open(&path, SqliteOptions::default()).await.unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let fill = |sql: &'static str| {
            db.writer
                .write(move |c| Ok(Ok::<_, DbError>(c.execute_batch(sql)?)))
        };
        fill("CREATE TABLE filler (x BLOB)").await.unwrap();
        let before = size();
        fill("INSERT INTO filler VALUES (zeroblob(2000 * 4096))")
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while size() < before + 2_000 * 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log's 2,000 pages were not copied into the file"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        db.close().await;
    }
}
