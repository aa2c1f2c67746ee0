//! The PostgreSQL backend: a connection pool (deadpool-postgres over
//! tokio-postgres, TLS through rustls), migrations under an advisory lock,
//! a batching writer, and the SQL behind each [`Db`](super::Db) operation.
//!
//! Reads take a pooled connection each. Writes go through one writer task
//! per process ([`writer`]) that commits whatever is queued in one
//! transaction with two round trips, so concurrent callbacks share commits
//! as they do on SQLite. The pool reconnects by itself: while the server
//! is down every operation fails with [`DbError::Unavailable`] (the API
//! answers 503) and works again once it is back, without a restart.
//! Nothing outside this module sees a `tokio_postgres` type.

mod accounts;
mod batch;
mod coord;
mod feed;
mod idempotency;
pub(super) mod import;
mod jobs;
mod metrics;
mod migrations;
mod prune;
mod queues;
mod round_trips;
mod sweeps;
mod tls;
mod webhooks;
mod writer;

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Client, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use uuid::Uuid;

use super::url::{PgUrl, SslMode};
use super::{Changes, Created, DbError, IdempotencyClaim, Modified};
use crate::model::webhook::{AttemptOutcome, ClaimedDelivery, Delivery, WebhookRecord};
use crate::model::{
    AuditEntry, FeedPage, FeedPos, FeedRead, Job, JobFilter, JobRecord, JobStatus, Metric,
    MetricFilter,
};

#[cfg(test)]
pub(super) use migrations::latest_version;

/// Connections when neither `--db-pool-size` nor the URL say.
const DEFAULT_POOL_SIZE: usize = 10;
/// One connection attempt, when the URL has no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// An open PostgreSQL database.
pub struct Postgres {
    url: PgUrl,
    pool: Pool,
    writer: writer::Writer,
}

/// One line for an error: the server's message and SQLSTATE, or the
/// driver's with its causes.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// A failed statement: the connection is gone (the server went away) or
/// the statement itself failed.
fn fail(e: tokio_postgres::Error) -> DbError {
    if e.is_closed() {
        DbError::Unavailable(format!(
            "the database connection was lost: {}",
            describe(&e)
        ))
    } else {
        DbError::Backend(describe(&e))
    }
}

fn corrupt(e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(e.to_string())
}

/// PostgreSQL's `text` cannot hold NUL, which SQLite and the API accept
/// in free text (a trainer's message): it is stored as U+FFFD.
fn text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_string()
    }
}

/// Column `i` of a row, a decoding failure being a corrupt row.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    r: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, DbError> {
    r.try_get(i).map_err(corrupt)
}

/// Runs `sql` and decodes every row with `decode`.
async fn rows<T>(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    decode: fn(&tokio_postgres::Row) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    let stmt = c.prepare_cached(sql).await.map_err(fail)?;
    c.query(&stmt, args)
        .await
        .map_err(fail)?
        .iter()
        .map(decode)
        .collect()
}

/// No connection could be had from the pool.
fn unavailable(e: &PoolError) -> DbError {
    DbError::Unavailable(match e {
        PoolError::Backend(e) => format!("cannot reach the database: {}", describe(e)),
        PoolError::Timeout(_) => "timed out waiting for a database connection".into(),
        PoolError::Closed => return DbError::Closed,
        other => format!("cannot reach the database: {other}"),
    })
}

/// Why the first connection failed, in one line naming which: the server
/// unreachable, a wrong password, a missing database, or TLS.
fn start_error(url: &PgUrl, e: &PoolError) -> DbError {
    let what = match e {
        PoolError::Backend(e) => match e.as_db_error().map(|d| d.code().code()) {
            Some("28P01") => format!("wrong password for user {:?}", url.user),
            Some("28000") => format!("the server refused user {:?} ({})", url.user, describe(e)),
            Some("3D000") => format!("the database {:?} does not exist", url.database),
            _ if is_tls(e) => format!(
                "TLS failed (sslmode={}): {}",
                url.sslmode.as_str(),
                describe(e)
            ),
            Some(_) => describe(e),
            None => format!("the server is unreachable: {}", describe(e)),
        },
        PoolError::Timeout(_) => "the server is unreachable: timed out".into(),
        other => other.to_string(),
    };
    DbError::Unavailable(format!("cannot connect to the database at {url}: {what}"))
}

/// Whether `e` came from TLS (a rustls error anywhere in its causes, or
/// the server refusing TLS that `sslmode` requires).
fn is_tls(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string();
    text.contains("TLS") || text.contains("tls")
}

fn config(url: &PgUrl) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.user(&url.user)
        .host(&url.host)
        .port(url.port)
        .dbname(&url.database)
        .application_name("platform")
        // NOTICEs ("… already exists, skipping") would land in the log;
        // timestamps inside JSON (a job's attempts) print with the
        // session's zone, so fix it.
        .options("-c client_min_messages=warning -c TimeZone=UTC")
        .connect_timeout(url.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
        .ssl_mode(match url.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
    if let Some(p) = &url.password {
        c.password(p.expose());
    }
    c
}

fn pool(url: &PgUrl, size: usize) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        config(url),
        tls::connector(url)?,
        ManagerConfig {
            // Checks only that the connection is open: a server restart
            // closes every connection, and closed ones are replaced.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(
            url.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT) + Duration::from_secs(1),
        ))
        .build()
        .map_err(|e| DbError::Unavailable(format!("cannot set up the database pool: {e}")))
}

impl Postgres {
    /// Connects (the first connection names what failed), migrates and
    /// starts the writer.
    pub async fn open(url: &PgUrl, pool_size: Option<usize>) -> Result<Postgres, DbError> {
        let size = pool_size.or(url.pool_size).unwrap_or(DEFAULT_POOL_SIZE);
        let pool = pool(url, size)?;
        let mut client = pool.get().await.map_err(|e| start_error(url, &e))?;
        migrations::migrate(&mut client, &url.to_string()).await?;
        drop(client);
        Ok(Postgres {
            url: url.clone(),
            writer: writer::Writer::start(pool.clone()),
            pool,
        })
    }

    /// `platform db check`: connects and reads the schema version, changing
    /// nothing; a version newer than this binary's is an error.
    pub async fn check(url: &PgUrl) -> Result<usize, DbError> {
        let pool = pool(url, 1)?;
        let client = pool.get().await.map_err(|e| start_error(url, &e))?;
        let found = migrations::version(&client).await.map_err(fail)?;
        migrations::refuse_newer(&url.to_string(), found)?;
        Ok(found)
    }

    /// Where the database is (password masked).
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    async fn client(&self) -> Result<Client, DbError> {
        self.pool.get().await.map_err(|e| unavailable(&e))
    }

    pub(super) async fn create_job(
        &self,
        rec: JobRecord,
        audit: Option<AuditEntry>,
    ) -> Result<Job, DbError> {
        self.writer.create(rec, audit).await
    }

    pub(super) async fn create_job_once(
        &self,
        rec: JobRecord,
        claim: IdempotencyClaim,
        audit: Option<AuditEntry>,
    ) -> Result<Created, DbError> {
        idempotency::create_once(&mut self.client().await?, rec, &claim, audit).await
    }

    pub(super) async fn idempotent_job(
        &self,
        claim: IdempotencyClaim,
    ) -> Result<Option<Created>, DbError> {
        let held = idempotency::holder(&self.client().await?, &claim, false).await?;
        Ok(idempotency::existing(held, &claim))
    }

    pub(super) async fn job(&self, id: Uuid) -> Result<Option<JobRecord>, DbError> {
        jobs::get(&self.client().await?, id).await
    }

    pub(super) async fn jobs(&self, filter: JobFilter) -> Result<Vec<Job>, DbError> {
        jobs::list(&self.client().await?, &filter).await
    }

    pub(super) async fn modify_job<E, F>(&self, id: Uuid, rule: F) -> Result<Modified, E>
    where
        F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<Changes, E> + Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.writer.modify(id, rule).await
    }

    pub(super) async fn set_runner_state(
        &self,
        id: Uuid,
        state: Option<String>,
    ) -> Result<(), DbError> {
        self.writer.set_runner_state(id, state).await
    }

    pub(super) async fn count_in_status(&self, status: JobStatus) -> Result<usize, DbError> {
        jobs::count_in_status(&self.client().await?, status).await
    }

    pub(super) async fn oldest_in_status(
        &self,
        status: JobStatus,
        limit: i64,
    ) -> Result<Vec<JobRecord>, DbError> {
        jobs::in_status(&self.client().await?, status, limit).await
    }

    pub(super) async fn ended_unsettled(
        &self,
        runner: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, DbError> {
        jobs::ended_unsettled(&self.client().await?, runner, &since).await
    }

    pub(super) async fn metrics(
        &self,
        id: Uuid,
        filter: MetricFilter,
    ) -> Result<Option<Vec<Metric>>, DbError> {
        let c = self.client().await?;
        let points = metrics::list(&c, id, &filter).await?;
        if points.is_empty() && jobs::get(&c, id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(points))
    }

    pub(super) async fn add_system_metrics(
        &self,
        id: Uuid,
        attempt: u32,
        metrics: serde_json::Map<String, serde_json::Value>,
        series: f64,
    ) -> Result<(), DbError> {
        let c = self.client().await?;
        metrics::insert_system(&c, id, attempt, &metrics, series, crate::db::now()).await
    }

    pub(super) async fn read_feed(&self, read: FeedRead) -> Result<FeedPage, DbError> {
        feed::read(&mut self.client().await?, read).await
    }

    pub(super) async fn feed_start(&self) -> Result<(FeedPos, FeedPos), DbError> {
        feed::start(&self.client().await?).await
    }

    pub(super) async fn count_by_status(&self) -> Result<Vec<(JobStatus, i64)>, DbError> {
        jobs::count_by_status(&self.client().await?).await
    }

    pub(super) async fn count_by_queue(&self) -> Result<Vec<(String, JobStatus, i64)>, DbError> {
        queues::count_by_queue(&self.client().await?).await
    }

    pub(super) async fn paused_queues(&self) -> Result<Vec<String>, DbError> {
        queues::paused(&self.client().await?).await
    }

    pub(super) async fn set_queue_paused(&self, name: String, paused: bool) -> Result<(), DbError> {
        queues::set_paused(&self.client().await?, &name, paused).await
    }

    pub(super) async fn add_webhook(&self, rec: WebhookRecord) -> Result<(), DbError> {
        webhooks::add(&self.client().await?, &rec).await
    }

    pub(super) async fn replace_webhooks(
        &self,
        source: &'static str,
        recs: Vec<WebhookRecord>,
    ) -> Result<(), DbError> {
        webhooks::replace(&mut self.client().await?, source, &recs).await
    }

    pub(super) async fn webhooks(&self) -> Result<Vec<WebhookRecord>, DbError> {
        webhooks::list(&self.client().await?).await
    }

    pub(super) async fn webhook(&self, id: Uuid) -> Result<Option<WebhookRecord>, DbError> {
        webhooks::get(&self.client().await?, id).await
    }

    pub(super) async fn remove_webhook(&self, id: Uuid) -> Result<bool, DbError> {
        webhooks::remove(&self.client().await?, id).await
    }

    pub(super) async fn enqueue_test_event(
        &self,
        id: Uuid,
        event: &'static str,
    ) -> Result<Option<Delivery>, DbError> {
        webhooks::enqueue_test(&self.client().await?, id, event, &super::now()).await
    }

    pub(super) async fn claim_deliveries(
        &self,
        worker: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, DbError> {
        webhooks::claim(&self.client().await?, worker, lease, limit).await
    }

    pub(super) async fn finish_delivery(
        &self,
        id: i64,
        worker: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), DbError> {
        webhooks::finish(&self.client().await?, id, worker, &outcome).await
    }

    pub(super) async fn deliveries(&self, id: Uuid, limit: i64) -> Result<Vec<Delivery>, DbError> {
        webhooks::deliveries(&self.client().await?, id, limit).await
    }

    pub(super) async fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, DbError> {
        webhooks::next_due(&self.client().await?).await
    }

    pub(super) async fn ping(&self) -> Result<(), DbError> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// Commits queued writes, then closes the pool; later operations fail
    /// with `Closed`.
    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.pool.close();
    }
}
