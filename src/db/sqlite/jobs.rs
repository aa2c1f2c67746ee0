//! Queries on the `jobs` table. Plain functions over a connection, so the
//! same code runs in reads and inside group-committed writes.

use rusqlite::{named_params, params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::db::{parse_ts, ts, DbError};
use crate::model::{Job, JobFilter, JobRecord, JobStatus};

const COLUMNS: &str = "id, user_id, model_name, framework, dataset_s3_uri, config, status, \
     progress, message, checkpoint_s3_uri, error, created_at, updated_at, started_at, \
     completed_at, runner, exit_code, callback_token_hash, last_sequence, runner_state, number";

fn opt_ts(s: Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>, DbError> {
    s.as_deref().map(parse_ts).transpose()
}

fn corrupt(e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(e.to_string())
}

fn record_from_row(r: &Row<'_>) -> Result<JobRecord, DbError> {
    let id: String = r.get(0)?;
    let config: Option<String> = r.get(5)?;
    let status: String = r.get(6)?;
    let job = Job {
        id: Uuid::parse_str(&id).map_err(corrupt)?,
        number: r.get(20)?,
        user_id: r.get(1)?,
        model_name: r.get(2)?,
        framework: r.get(3)?,
        dataset_s3_uri: r.get(4)?,
        config: config
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(corrupt)?,
        status: status.parse::<JobStatus>().map_err(corrupt)?,
        progress: r.get(7)?,
        message: r.get(8)?,
        checkpoint_s3_uri: r.get(9)?,
        error: r.get(10)?,
        created_at: parse_ts(&r.get::<_, String>(11)?)?,
        updated_at: parse_ts(&r.get::<_, String>(12)?)?,
        started_at: opt_ts(r.get(13)?)?,
        completed_at: opt_ts(r.get(14)?)?,
        runner: r.get(15)?,
        exit_code: r.get(16)?,
    };
    Ok(JobRecord {
        job,
        token_hash: r.get(17)?,
        last_sequence: r.get(18)?,
        runner_state: r.get(19)?,
    })
}

fn collect(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRecord>, DbError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(record_from_row(row)?);
    }
    Ok(out)
}

/// Stores a new job and gives it the next job number.
///
/// The number is one more than the highest so far, assigned in the same
/// statement: every write runs on the one writer connection, so two
/// creates never see the same maximum, and the unique index would refuse a
/// duplicate anyway.
pub fn insert(c: &Connection, rec: &mut JobRecord) -> Result<(), DbError> {
    let j = &rec.job;
    let config = j.config.as_ref().map(|v| v.to_string());
    let number: i64 = c
        .prepare_cached(
            "INSERT INTO jobs (id, user_id, model_name, framework, dataset_s3_uri, config, status, \
         progress, message, checkpoint_s3_uri, error, created_at, updated_at, started_at, \
         completed_at, runner, exit_code, callback_token_hash, last_sequence, runner_state, number) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, \
         (SELECT COALESCE(MAX(number), 0) + 1 FROM jobs)) RETURNING number",
        )?
        .query_row(params![
        j.id.to_string(),
        j.user_id,
        j.model_name,
        j.framework,
        j.dataset_s3_uri,
        config,
        j.status.as_str(),
        j.progress,
        j.message,
        j.checkpoint_s3_uri,
        j.error,
        ts(&j.created_at),
        ts(&j.updated_at),
        j.started_at.as_ref().map(ts),
        j.completed_at.as_ref().map(ts),
        j.runner,
        j.exit_code,
        rec.token_hash,
        rec.last_sequence,
        rec.runner_state,
    ], |r| r.get(0))?;
    rec.job.number = number;
    Ok(())
}

/// One job with its private columns.
pub fn get(c: &Connection, id: Uuid) -> Result<Option<JobRecord>, DbError> {
    // Built once: every callback reads its job, on the writer thread.
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"));
    let mut stmt = c.prepare_cached(&SQL)?;
    stmt.query_row([id.to_string()], |r| Ok(record_from_row(r)))
        .optional()?
        .transpose()
}

/// Writes every mutable column of `rec` back (the lifecycle code decides
/// what changed; this just stores it).
pub fn update(c: &Connection, rec: &JobRecord) -> Result<(), DbError> {
    let j = &rec.job;
    c.prepare_cached(
        "UPDATE jobs SET status = :status, progress = :progress, message = :message, \
         checkpoint_s3_uri = :checkpoint, error = :error, updated_at = :updated_at, \
         started_at = :started_at, completed_at = :completed_at, runner = :runner, \
         exit_code = :exit_code, last_sequence = :last_sequence, runner_state = :runner_state, \
         callback_token_hash = :token_hash WHERE id = :id",
    )?
    .execute(named_params! {
        ":id": j.id.to_string(),
        ":status": j.status.as_str(),
        ":progress": j.progress,
        ":message": j.message,
        ":checkpoint": j.checkpoint_s3_uri,
        ":error": j.error,
        ":updated_at": ts(&j.updated_at),
        ":started_at": j.started_at.as_ref().map(ts),
        ":completed_at": j.completed_at.as_ref().map(ts),
        ":runner": j.runner,
        ":exit_code": j.exit_code,
        ":last_sequence": rec.last_sequence,
        ":runner_state": rec.runner_state,
        ":token_hash": rec.token_hash,
    })?;
    Ok(())
}

/// A page of jobs, newest first (`created_at` desc, then `id` desc).
pub fn list(c: &Connection, f: &JobFilter) -> Result<Vec<Job>, DbError> {
    let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE 1 = 1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(u) = &f.user_id {
        args.push(Box::new(u.clone()));
        sql.push_str(&format!(" AND user_id = ?{}", args.len()));
    }
    if let Some(s) = f.status {
        args.push(Box::new(s.as_str()));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(n) = f.number {
        args.push(Box::new(n));
        sql.push_str(&format!(" AND number = ?{}", args.len()));
    }
    if let Some(p) = &f.id_prefix {
        // A range scan on the primary key instead of LIKE (no escaping needed).
        args.push(Box::new(p.clone()));
        sql.push_str(&format!(" AND id >= ?{}", args.len()));
        args.push(Box::new(format!("{p}\u{7f}")));
        sql.push_str(&format!(" AND id < ?{}", args.len()));
    }
    args.push(Box::new(f.limit));
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ?{}",
        args.len()
    ));
    args.push(Box::new(f.offset));
    sql.push_str(&format!(" OFFSET ?{}", args.len()));
    let mut stmt = c.prepare_cached(&sql)?;
    let params = rusqlite::params_from_iter(args.iter().map(|a| a.as_ref()));
    Ok(collect(&mut stmt, params)?
        .into_iter()
        .map(|r| r.job)
        .collect())
}

/// Jobs in `status`, oldest first (the scheduler's FIFO order).
pub fn in_status(c: &Connection, status: JobStatus, limit: i64) -> Result<Vec<JobRecord>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE status = ?1 ORDER BY created_at ASC, id ASC LIMIT ?2"
    ))?;
    collect(&mut stmt, params![status.as_str(), limit])
}

/// Ended jobs launched by `runner` whose trainer's exit was never seen
/// (the daemon stopped first), ended after `since`: their trainers may
/// still be running.
pub fn ended_unsettled(
    c: &Connection,
    runner: &str,
    since: &chrono::DateTime<chrono::Utc>,
) -> Result<Vec<JobRecord>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
         AND runner = ?1 AND runner_state IS NOT NULL AND exit_code IS NULL \
         AND completed_at > ?2 ORDER BY created_at ASC, id ASC"
    ))?;
    collect(&mut stmt, params![runner, ts(since)])
}

/// How many jobs are in each status.
pub fn count_by_status(c: &Connection) -> Result<Vec<(JobStatus, i64)>, DbError> {
    let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (status, n) = row?;
        out.push((status.parse::<JobStatus>().map_err(corrupt)?, n));
    }
    Ok(out)
}

/// How many jobs are in `status`.
pub fn count_in_status(c: &Connection, status: JobStatus) -> Result<usize, DbError> {
    let n: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = ?1")?
        .query_row([status.as_str()], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Whether job `id` exists.
pub fn exists(c: &Connection, id: Uuid) -> Result<bool, DbError> {
    Ok(c.prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?
        .exists([id.to_string()])?)
}

/// Stores runner-private state on a job, whatever its status.
pub fn set_runner_state(c: &Connection, id: Uuid, state: Option<&str>) -> Result<(), DbError> {
    c.prepare_cached("UPDATE jobs SET runner_state = ?2 WHERE id = ?1")?
        .execute(params![id.to_string(), state])?;
    Ok(())
}

/// Jobs whose `updated_at` is after `since`, oldest change first (the
/// all-jobs event stream resumes from these).
pub fn changed_since(
    c: &Connection,
    since: &chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<Job>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE updated_at > ?1 ORDER BY updated_at ASC, id ASC LIMIT ?2"
    ))?;
    let records = collect(&mut stmt, params![ts(since), limit])?;
    Ok(records.into_iter().map(|r| r.job).collect())
}

/// The latest `updated_at` of any job.
pub fn last_change(c: &Connection) -> Result<Option<chrono::DateTime<chrono::Utc>>, DbError> {
    let mut stmt = c.prepare_cached("SELECT MAX(updated_at) FROM jobs")?;
    let last: Option<String> = stmt.query_row([], |r| r.get(0))?;
    opt_ts(last)
}

/// The job created under `(owner, key)`, with its request fingerprint.
pub fn by_idempotency_key(
    c: &Connection,
    owner: &str,
    key: &str,
) -> Result<Option<(JobRecord, String)>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS}, request_fingerprint FROM jobs \
         WHERE idempotency_owner = ?1 AND idempotency_key = ?2"
    ))?;
    stmt.query_row(params![owner, key], |r| {
        Ok(record_from_row(r).and_then(|rec| Ok((rec, r.get::<_, String>(21)?))))
    })
    .optional()?
    .transpose()
}

/// Stores the idempotency key a job was created under.
pub fn set_idempotency(
    c: &Connection,
    id: Uuid,
    key: Option<(&str, &str, &str)>,
) -> Result<(), DbError> {
    let (owner, key, fingerprint) = match key {
        Some((o, k, f)) => (Some(o), Some(k), Some(f)),
        None => (None, None, None),
    };
    c.prepare_cached(
        "UPDATE jobs SET idempotency_owner = ?2, idempotency_key = ?3, \
         request_fingerprint = ?4 WHERE id = ?1",
    )?
    .execute(params![id.to_string(), owner, key, fingerprint])?;
    Ok(())
}
