//! What live event streams read on PostgreSQL.
//!
//! One job's feed is simple: its points are only written under the job's
//! row lock, so within a job ids follow commit order, as on SQLite.
//!
//! The feed of every job is not: ids and timestamps are taken when a
//! statement runs, not when its transaction commits, so a reader that has
//! seen point 101 may later see point 100 appear. Rows therefore carry the
//! id of the transaction that wrote them (`xid`), and a reader returns only
//! rows whose `xid` is below its snapshot's `xmin` (every transaction
//! below it has finished, so nothing can appear there any more), ordered
//! by `(xid, id)`. Positions are those pairs. Rows of transactions still
//! open are held back until they finish; the page says so, and the stream
//! reads again shortly.

use deadpool_postgres::{Client, GenericClient};
use tokio_postgres::IsolationLevel;

use super::{corrupt, fail, jobs, metrics};
use crate::db::DbError;
use crate::model::{FeedPage, FeedPos, FeedRead, FeedScope, MetricFilter, Order};

/// The watermark: every transaction with a smaller id has finished.
const XMIN: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

pub(super) async fn read(c: &mut Client, read: FeedRead) -> Result<FeedPage, DbError> {
    match read.scope {
        FeedScope::Job(id) => {
            let mut page = FeedPage::default();
            if read.jobs_after.is_some() {
                if let Some(r) = jobs::get(&*c, id).await? {
                    page.jobs
                        .push(((0, r.job.updated_at.timestamp_micros()), r.job));
                }
            }
            let f = MetricFilter {
                limit: read.page,
                order: Order::Asc,
                after_id: Some(read.points_after.1),
                max_points: None,
                system: false,
            };
            page.points = metrics::list(&*c, id, &f)
                .await?
                .into_iter()
                .map(|m| ((0, m.id), m))
                .collect();
            Ok(page)
        }
        FeedScope::All => read_all(c, read).await,
    }
}

async fn read_all(c: &mut Client, read: FeedRead) -> Result<FeedPage, DbError> {
    // One snapshot for the three statements, so they agree on the watermark.
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail)?;
    let jobs_sql = format!(
        "SELECT {}, xid FROM jobs WHERE (xid, number) > ($1, $2) AND xid < {XMIN} \
         ORDER BY xid, number LIMIT $3",
        jobs::with_attempts()
    );
    let points_sql = format!(
        "SELECT {}, xid FROM metrics WHERE (xid, id) > ($1, $2) AND xid < {XMIN} \
         ORDER BY xid, id LIMIT $3",
        metrics::COLUMNS
    );
    let busy_sql = "SELECT pg_snapshot_xmin(s) <> pg_snapshot_xmax(s) FROM pg_current_snapshot() s";
    let (jobs_stmt, points_stmt, busy_stmt) = futures::try_join!(
        tx.prepare_cached(&jobs_sql),
        tx.prepare_cached(&points_sql),
        tx.prepare_cached(busy_sql),
    )
    .map_err(fail)?;
    let (ja, jb) = read.jobs_after.unwrap_or_default();
    let (pa, pb) = read.points_after;
    let page_size = read.page;
    let want_jobs = read.jobs_after.is_some();
    let jobs_rows = async {
        if want_jobs {
            tx.query(&jobs_stmt, &[&ja, &jb, &page_size]).await
        } else {
            Ok(Vec::new())
        }
    };
    let point_args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&pa, &pb, &page_size];
    let (job_rows, point_rows, busy) = futures::try_join!(
        jobs_rows,
        tx.query(&points_stmt, &point_args),
        tx.query_one(&busy_stmt, &[]),
    )
    .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    let position = |r: &tokio_postgres::Row, at: usize| -> Result<FeedPos, DbError> {
        Ok((
            r.try_get(r.len() - 1).map_err(corrupt)?,
            r.try_get(at).map_err(corrupt)?,
        ))
    };
    let mut page = FeedPage {
        held_back: busy.try_get(0).map_err(corrupt)?,
        ..FeedPage::default()
    };
    for r in &job_rows {
        page.jobs.push((
            position(r, jobs::NUMBER)?,
            jobs::record_with_attempts(r)?.job,
        ));
    }
    for r in &point_rows {
        page.points.push((position(r, 0)?, metrics::point(r)?));
    }
    Ok(page)
}

/// Where a feed of every job starts: at the watermark, so it sends what
/// commits from now on (and, at worst, a few rows committed just before).
pub(super) async fn start(c: &Client) -> Result<(FeedPos, FeedPos), DbError> {
    let stmt = c
        .prepare_cached(&format!("SELECT {XMIN}"))
        .await
        .map_err(fail)?;
    let xmin: i64 = c
        .query_one(&stmt, &[])
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(corrupt)?;
    Ok(((xmin, 0), (xmin, 0)))
}
