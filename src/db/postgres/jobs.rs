//! Reads of the `jobs` table, and the one place that turns a row into a
//! [`JobRecord`] (the writer's batches decode with it too).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{corrupt, fail};
use crate::db::DbError;
use crate::model::{Job, JobFilter, JobRecord, JobStatus};

/// Every column of a job, in [`record`]'s order.
pub(super) const COLUMNS: &str = "id, user_id, model_name, framework, dataset_s3_uri, config, \
     status, progress, message, checkpoint_s3_uri, error, created_at, updated_at, started_at, \
     completed_at, runner, exit_code, callback_token_hash, last_sequence, runner_state, number";

/// A row of [`COLUMNS`] (extra columns after them are ignored).
pub(super) fn record(r: &Row) -> Result<JobRecord, DbError> {
    let status: String = r.try_get(6).map_err(corrupt)?;
    let job = Job {
        id: r.try_get(0).map_err(corrupt)?,
        number: r.try_get(20).map_err(corrupt)?,
        user_id: r.try_get(1).map_err(corrupt)?,
        model_name: r.try_get(2).map_err(corrupt)?,
        framework: r.try_get(3).map_err(corrupt)?,
        dataset_s3_uri: r.try_get(4).map_err(corrupt)?,
        config: r.try_get(5).map_err(corrupt)?,
        status: status.parse::<JobStatus>().map_err(corrupt)?,
        progress: r.try_get(7).map_err(corrupt)?,
        message: r.try_get(8).map_err(corrupt)?,
        checkpoint_s3_uri: r.try_get(9).map_err(corrupt)?,
        error: r.try_get(10).map_err(corrupt)?,
        created_at: r.try_get(11).map_err(corrupt)?,
        updated_at: r.try_get(12).map_err(corrupt)?,
        started_at: r.try_get(13).map_err(corrupt)?,
        completed_at: r.try_get(14).map_err(corrupt)?,
        runner: r.try_get(15).map_err(corrupt)?,
        exit_code: r.try_get(16).map_err(corrupt)?,
        sched: Default::default(),
    };
    Ok(JobRecord {
        job,
        token_hash: r.try_get(17).map_err(corrupt)?,
        last_sequence: r.try_get(18).map_err(corrupt)?,
        runner_state: r.try_get(19).map_err(corrupt)?,
    })
}

async fn records(
    c: &impl GenericClient,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<JobRecord>, DbError> {
    let stmt = c.prepare_cached(sql).await.map_err(fail)?;
    c.query(&stmt, args)
        .await
        .map_err(fail)?
        .iter()
        .map(record)
        .collect()
}

/// One job with its private columns.
pub(super) async fn get(c: &impl GenericClient, id: Uuid) -> Result<Option<JobRecord>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    Ok(records(c, &sql, &[&id]).await?.pop())
}

/// The smallest and largest UUIDs starting with `prefix` (hex digits and
/// dashes as the canonical form spells them); `None` when no UUID can.
pub(super) fn prefix_bounds(prefix: &str) -> Option<(Uuid, Uuid)> {
    const TEMPLATE: &str = "00000000-0000-0000-0000-000000000000";
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() > TEMPLATE.len() {
        return None;
    }
    let pad = |fill: char| -> String {
        TEMPLATE
            .chars()
            .enumerate()
            .map(|(i, t)| match prefix.as_bytes().get(i) {
                Some(b) => *b as char,
                None if t == '-' => '-',
                None => fill,
            })
            .collect()
    };
    let lo = Uuid::try_parse(&pad('0')).ok()?;
    let hi = Uuid::try_parse(&pad('f')).ok()?;
    // A dash where a digit belongs (or the reverse) parses differently.
    (lo.hyphenated().to_string().starts_with(&prefix)).then_some((lo, hi))
}

/// A page of jobs, newest first (`created_at` desc, then `id` desc).
pub(super) async fn list(c: &impl GenericClient, f: &JobFilter) -> Result<Vec<Job>, DbError> {
    let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE true");
    let status = f.status.map(|s| s.as_str());
    let bounds = match &f.id_prefix {
        Some(p) => match prefix_bounds(p) {
            Some(b) => Some(b),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(u) = &f.user_id {
        if u.contains('\0') {
            // PostgreSQL text cannot hold NUL (the writer stores U+FFFD),
            // so no job matches; the parameter itself would be an error.
            return Ok(Vec::new());
        }
        args.push(u);
        sql.push_str(&format!(" AND user_id = ${}", args.len()));
    }
    if let Some(s) = &status {
        args.push(s);
        sql.push_str(&format!(" AND status = ${}", args.len()));
    }
    if let Some(n) = &f.number {
        args.push(n);
        sql.push_str(&format!(" AND number = ${}", args.len()));
    }
    if let Some((lo, hi)) = &bounds {
        args.push(lo);
        args.push(hi);
        let n = args.len();
        sql.push_str(&format!(" AND id BETWEEN ${} AND ${n}", n - 1));
    }
    args.push(&f.limit);
    args.push(&f.offset);
    let n = args.len();
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${n}",
        n - 1
    ));
    Ok(records(c, &sql, &args)
        .await?
        .into_iter()
        .map(|r| r.job)
        .collect())
}

/// Jobs in `status`, oldest first (the scheduler's FIFO order).
pub(super) async fn in_status(
    c: &impl GenericClient,
    status: JobStatus,
    limit: i64,
) -> Result<Vec<JobRecord>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE status = $1 ORDER BY created_at ASC, id ASC LIMIT $2"
    );
    records(c, &sql, &[&status.as_str(), &limit]).await
}

/// Ended jobs launched by `runner` after `since` whose trainer's exit was
/// never seen.
pub(super) async fn ended_unsettled(
    c: &impl GenericClient,
    runner: &str,
    since: &DateTime<Utc>,
) -> Result<Vec<JobRecord>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
         AND runner = $1 AND runner_state IS NOT NULL AND exit_code IS NULL \
         AND completed_at > $2 ORDER BY created_at ASC, id ASC"
    );
    records(c, &sql, &[&runner, since]).await
}

/// How many jobs are in each status.
pub(super) async fn count_by_status(
    c: &impl GenericClient,
) -> Result<Vec<(JobStatus, i64)>, DbError> {
    let stmt = c
        .prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        .await
        .map_err(fail)?;
    c.query(&stmt, &[])
        .await
        .map_err(fail)?
        .iter()
        .map(|r| {
            let status: String = r.try_get(0).map_err(corrupt)?;
            Ok((
                status.parse::<JobStatus>().map_err(corrupt)?,
                r.try_get(1).map_err(corrupt)?,
            ))
        })
        .collect()
}

/// How many jobs are in `status`.
pub(super) async fn count_in_status(
    c: &impl GenericClient,
    status: JobStatus,
) -> Result<usize, DbError> {
    let stmt = c
        .prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = $1")
        .await
        .map_err(fail)?;
    let n: i64 = c
        .query_one(&stmt, &[&status.as_str()])
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(corrupt)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::prefix_bounds;

    #[test]
    fn id_prefixes_become_uuid_bounds() {
        let (lo, hi) = prefix_bounds("0190ab").unwrap();
        assert_eq!(lo.to_string(), "0190ab00-0000-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "0190abff-ffff-ffff-ffff-ffffffffffff");
        let (lo, hi) = prefix_bounds("0190abcd-12").unwrap();
        assert_eq!(lo.to_string(), "0190abcd-1200-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "0190abcd-12ff-ffff-ffff-ffffffffffff");
        assert!(prefix_bounds("0190-").is_none());
        assert!(prefix_bounds("").is_some());
    }
}
