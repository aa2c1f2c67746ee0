//! Queries on the `jobs` table. Plain functions over a connection, so the
//! same code runs in reads and inside group-committed writes.

use rusqlite::{named_params, params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::db::{parse_ts, ts, DbError};
use crate::model::{Attempt, Job, JobFilter, JobRecord, JobScheduling, JobStatus, Labels};

const COLUMNS: &str = "id, user_id, model_name, framework, dataset_s3_uri, config, status, \
     progress, message, checkpoint_s3_uri, error, created_at, updated_at, started_at, \
     completed_at, runner, exit_code, callback_token_hash, last_sequence, runner_state, number, \
     queue, priority, attempt, retry_policy, max_duration_s, max_pending_s, heartbeat_timeout_s, \
     stale_after_s, after_ids, termination_reason, last_heartbeat_at, stalled_at, next_attempt_at, \
     tags, note, name, sweep_id, gpus, assigned_gpus, pruned_at, pruned_max_points, logs_pruned, \
     artifacts_pruned";

/// How many columns [`COLUMNS`] selects (the index of one selected after them).
fn column_count() -> usize {
    COLUMNS.split(',').count()
}

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
        sched: JobScheduling {
            queue: r.get(21)?,
            priority: r.get(22)?,
            attempt: r.get(23)?,
            // Filled by `attach_attempts`.
            attempts: Vec::new(),
            retry: from_json(r.get(24)?)?,
            max_duration: r.get(25)?,
            max_pending: r.get(26)?,
            heartbeat_timeout: r.get(27)?,
            stale_after: r.get(28)?,
            after: from_json::<Vec<Uuid>>(r.get(29)?)?.unwrap_or_default(),
            termination_reason: r.get(30)?,
            last_heartbeat_at: opt_ts(r.get(31)?)?,
            stalled_at: opt_ts(r.get(32)?)?,
            next_attempt_at: opt_ts(r.get(33)?)?,
            gpus: r.get(38)?,
            assigned_gpus: from_json(r.get(39)?)?.unwrap_or_default(),
            gpu_idle: false,
        },
        labels: Labels {
            tags: from_json(r.get(34)?)?.unwrap_or_default(),
            note: r.get(35)?,
            name: r.get(36)?,
            sweep_id: r
                .get::<_, Option<String>>(37)?
                .map(|s| Uuid::parse_str(&s).map_err(corrupt))
                .transpose()?,
        },
        pruned: crate::db::columns::pruned(
            opt_ts(r.get(40)?)?,
            r.get(41)?,
            r.get(42)?,
            r.get(43)?,
        )?,
    };
    Ok(JobRecord {
        job,
        token_hash: r.get(17)?,
        last_sequence: r.get(18)?,
        runner_state: r.get(19)?,
    })
}

fn from_json<T: serde::de::DeserializeOwned>(s: Option<String>) -> Result<Option<T>, DbError> {
    s.as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(corrupt)
}

/// Tags as stored: a JSON object, or NULL when there are none.
fn tags_json(l: &Labels) -> Result<Option<String>, DbError> {
    (!l.tags.is_empty()).then(|| to_json(&l.tags)).transpose()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, DbError> {
    serde_json::to_string(v).map_err(corrupt)
}

/// The `assigned_gpus` column: NULL for none.
fn assigned_gpus(sc: &JobScheduling) -> Result<Option<String>, DbError> {
    (!sc.assigned_gpus.is_empty())
        .then(|| to_json(&sc.assigned_gpus))
        .transpose()
}

fn collect(
    c: &Connection,
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRecord>, DbError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(record_from_row(row)?);
    }
    attach_all_attempts(c, &mut out)?;
    Ok(out)
}

const ATTEMPT_COLUMNS: &str = "attempt, started_at, ended_at, exit_code, reason, counted";

fn attempt_from_row(r: &rusqlite::Row<'_>) -> Result<Attempt, DbError> {
    Ok(Attempt {
        attempt: r.get(0)?,
        started_at: parse_ts(&r.get::<_, String>(1)?)?,
        ended_at: opt_ts(r.get(2)?)?,
        exit_code: r.get(3)?,
        reason: r.get(4)?,
        counted: r.get(5)?,
    })
}

/// Reads a job's attempts (none before its first launch: no query).
fn attach_attempts(c: &Connection, job: &mut Job) -> Result<(), DbError> {
    if job.sched.attempt == 0 {
        return Ok(());
    }
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {ATTEMPT_COLUMNS} FROM job_attempts WHERE job_id = ?1 ORDER BY attempt")
    });
    let mut stmt = c.prepare_cached(&SQL)?;
    let mut rows = stmt.query([job.id.to_string()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(attempt_from_row(r)?);
    }
    job.sched.attempts = out;
    Ok(())
}

/// [`attach_attempts`] for a page of jobs in one query, not one per job.
fn attach_all_attempts(c: &Connection, recs: &mut [JobRecord]) -> Result<(), DbError> {
    let launched: Vec<String> = recs
        .iter()
        .filter(|r| r.job.sched.attempt > 0)
        .map(|r| r.job.id.to_string())
        .collect();
    if launched.len() < 2 {
        return recs
            .iter_mut()
            .try_for_each(|r| attach_attempts(c, &mut r.job));
    }
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {ATTEMPT_COLUMNS}, job_id FROM job_attempts \
             WHERE job_id IN (SELECT value FROM json_each(?1)) ORDER BY job_id, attempt"
        )
    });
    let mut stmt = c.prepare_cached(&SQL)?;
    let mut rows = stmt.query([to_json(&launched)?])?;
    let mut by_job: std::collections::HashMap<String, Vec<Attempt>> = Default::default();
    while let Some(r) = rows.next()? {
        by_job
            .entry(r.get(6)?)
            .or_default()
            .push(attempt_from_row(r)?);
    }
    for rec in recs {
        if let Some(attempts) = by_job.remove(&rec.job.id.to_string()) {
            rec.job.sched.attempts = attempts;
        }
    }
    Ok(())
}

/// Stores one attempt of job `id` (new, or changed by its end).
pub fn upsert_attempt(c: &Connection, id: Uuid, a: &Attempt) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO job_attempts (job_id, attempt, started_at, ended_at, exit_code, reason, counted) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (job_id, attempt) DO UPDATE SET \
         ended_at = excluded.ended_at, exit_code = excluded.exit_code, reason = excluded.reason, \
         counted = excluded.counted",
    )?
    .execute(params![
        id.to_string(),
        a.attempt,
        ts(&a.started_at),
        a.ended_at.as_ref().map(ts),
        a.exit_code,
        a.reason,
        a.counted,
    ])?;
    Ok(())
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
    let sc = &j.sched;
    let retry = sc.retry.as_ref().map(to_json).transpose()?;
    let after = (!sc.after.is_empty())
        .then(|| to_json(&sc.after))
        .transpose()?;
    let number: i64 = c
        .prepare_cached(
            "INSERT INTO jobs (id, user_id, model_name, framework, dataset_s3_uri, config, status, \
         progress, message, checkpoint_s3_uri, error, created_at, updated_at, started_at, \
         completed_at, runner, exit_code, callback_token_hash, last_sequence, runner_state, \
         queue, priority, retry_policy, max_duration_s, max_pending_s, heartbeat_timeout_s, \
         stale_after_s, after_ids, tags, note, name, sweep_id, gpus, assigned_gpus, number) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, \
         ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, \
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
        sc.queue,
        sc.priority,
        retry,
        sc.max_duration,
        sc.max_pending,
        sc.heartbeat_timeout,
        sc.stale_after,
        after,
        tags_json(&j.labels)?,
        j.labels.note,
        j.labels.name,
        j.labels.sweep_id.map(|u| u.to_string()),
        sc.gpus,
        assigned_gpus(sc)?,
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
    let mut rec = stmt
        .query_row([id.to_string()], |r| Ok(record_from_row(r)))
        .optional()?
        .transpose()?;
    if let Some(rec) = &mut rec {
        attach_attempts(c, &mut rec.job)?;
    }
    Ok(rec)
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
         callback_token_hash = :token_hash, priority = :priority, attempt = :attempt, \
         termination_reason = :termination_reason, last_heartbeat_at = :last_heartbeat_at, \
         stalled_at = :stalled_at, next_attempt_at = :next_attempt_at, tags = :tags, \
         note = :note, assigned_gpus = :assigned_gpus WHERE id = :id",
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
        ":priority": j.sched.priority,
        ":attempt": j.sched.attempt,
        ":termination_reason": j.sched.termination_reason,
        ":last_heartbeat_at": j.sched.last_heartbeat_at.as_ref().map(ts),
        ":stalled_at": j.sched.stalled_at.as_ref().map(ts),
        ":next_attempt_at": j.sched.next_attempt_at.as_ref().map(ts),
        ":tags": tags_json(&j.labels)?,
        ":note": j.labels.note,
        ":assigned_gpus": assigned_gpus(&j.sched)?,
    })?;
    Ok(())
}

/// The columns of a job row that indexes cover (status, completion,
/// runner state and exit: `jobs_status_newest`, `jobs_queue_status`,
/// `jobs_ended`, `jobs_unsettled`) or that only lifecycle steps and edits
/// change, as a rule found them. A callback that leaves them all alone
/// (the common one: progress, a message, a sequence, a heartbeat) is
/// written by [`update_progress`], which touches no index: SQLite
/// rewrites every index that covers a column an `UPDATE` sets, changed or
/// not.
#[derive(PartialEq)]
pub struct IndexedColumns {
    status: JobStatus,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    completed_at: Option<chrono::DateTime<chrono::Utc>>,
    runner: Option<String>,
    exit_code: Option<i32>,
    runner_state: Option<String>,
    token_hash: Option<String>,
    priority: u8,
    attempt: u32,
    termination_reason: Option<String>,
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    tags: std::collections::BTreeMap<String, String>,
    note: Option<String>,
    assigned_gpus: Vec<crate::model::AssignedGpu>,
}

impl IndexedColumns {
    /// What `rec` holds now, before a rule runs.
    pub fn of(rec: &JobRecord) -> IndexedColumns {
        let j = &rec.job;
        IndexedColumns {
            status: j.status,
            started_at: j.started_at,
            completed_at: j.completed_at,
            runner: j.runner.clone(),
            exit_code: j.exit_code,
            runner_state: rec.runner_state.clone(),
            token_hash: rec.token_hash.clone(),
            priority: j.sched.priority,
            attempt: j.sched.attempt,
            termination_reason: j.sched.termination_reason.clone(),
            next_attempt_at: j.sched.next_attempt_at,
            tags: j.labels.tags.clone(),
            note: j.labels.note.clone(),
            assigned_gpus: j.sched.assigned_gpus.clone(),
        }
    }

    /// Writes `rec` after the rule: only its progress columns when the
    /// rule changed none of these, else every column ([`update`]).
    pub fn write(self, c: &Connection, rec: &JobRecord) -> Result<(), DbError> {
        if IndexedColumns::of(rec) == self {
            update_progress(c, rec)
        } else {
            update(c, rec)
        }
    }
}

/// Writes the columns a running trainer's reports change, and no other.
fn update_progress(c: &Connection, rec: &JobRecord) -> Result<(), DbError> {
    let j = &rec.job;
    c.prepare_cached(
        "UPDATE jobs SET progress = ?2, message = ?3, checkpoint_s3_uri = ?4, error = ?5, \
         updated_at = ?6, last_sequence = ?7, last_heartbeat_at = ?8, stalled_at = ?9 \
         WHERE id = ?1",
    )?
    .execute(params![
        j.id.to_string(),
        j.progress,
        j.message,
        j.checkpoint_s3_uri,
        j.error,
        ts(&j.updated_at),
        rec.last_sequence,
        j.sched.last_heartbeat_at.as_ref().map(ts),
        j.sched.stalled_at.as_ref().map(ts),
    ])?;
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
    if let Some(q) = &f.queue {
        args.push(Box::new(q.clone()));
        sql.push_str(&format!(" AND queue = ?{}", args.len()));
    }
    if let Some(sw) = f.sweep_id {
        args.push(Box::new(sw.to_string()));
        sql.push_str(&format!(" AND sweep_id = ?{}", args.len()));
    }
    for (k, v) in &f.tags {
        args.push(Box::new(k.clone()));
        args.push(Box::new(v.clone()));
        let n = args.len();
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE key = ?{} AND value = ?{n})",
            n - 1
        ));
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
    Ok(collect(c, &mut stmt, params)?
        .into_iter()
        .map(|r| r.job)
        .collect())
}

/// Jobs in `status`, oldest first (the scheduler's FIFO order).
pub fn in_status(c: &Connection, status: JobStatus, limit: i64) -> Result<Vec<JobRecord>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE status = ?1 ORDER BY created_at ASC, id ASC LIMIT ?2"
    ))?;
    collect(c, &mut stmt, params![status.as_str(), limit])
}

/// Which jobs [`ended_unsettled`] returns (`?1` the runner, `?2` since
/// when); it repeats the condition of the `jobs_unsettled` partial index
/// (migration 11), so SQLite reads that index and not every ended job.
pub(super) const UNSETTLED: &str = "status IN ('completed', 'failed', 'cancelled') \
     AND runner = ?1 AND runner_state IS NOT NULL AND exit_code IS NULL AND completed_at > ?2";

/// Ended jobs launched by `runner` whose trainer's exit was never seen
/// (the daemon stopped first), ended after `since`: their trainers may
/// still be running.
pub fn ended_unsettled(
    c: &Connection,
    runner: &str,
    since: &chrono::DateTime<chrono::Utc>,
) -> Result<Vec<JobRecord>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE {UNSETTLED} ORDER BY created_at ASC, id ASC"
    ))?;
    collect(c, &mut stmt, params![runner, ts(since)])
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
    let records = collect(c, &mut stmt, params![ts(since), limit])?;
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
        Ok(record_from_row(r).and_then(|rec| Ok((rec, r.get::<_, String>(column_count())?))))
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

/// Pending and running jobs per queue: `(queue, status, count)`.
pub fn count_by_queue(c: &Connection) -> Result<Vec<(String, JobStatus, i64)>, DbError> {
    let mut stmt = c.prepare_cached(
        "SELECT queue, status, COUNT(*) FROM jobs WHERE status IN ('pending', 'running') \
         GROUP BY queue, status",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (queue, status, n) = row?;
        out.push((queue, status.parse::<JobStatus>().map_err(corrupt)?, n));
    }
    Ok(out)
}

/// The paused queues.
pub fn paused_queues(c: &Connection) -> Result<Vec<String>, DbError> {
    let mut stmt =
        c.prepare_cached("SELECT name FROM queue_state WHERE paused = 1 ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Pauses or resumes queue `name`.
pub fn set_queue_paused(
    c: &Connection,
    name: &str,
    paused: bool,
    now: &chrono::DateTime<chrono::Utc>,
) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO queue_state (name, paused, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
    )?
    .execute(params![name, paused, ts(now)])?;
    Ok(())
}
