//! Reads of the `jobs` table, and the one place that turns a row into a
//! [`JobRecord`] (the writer's batches decode with it too).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{col, corrupt, fail, rows};
use crate::db::DbError;
use crate::model::{Attempt, Job, JobFilter, JobRecord, JobScheduling, JobStatus, Labels};

/// Every column of a job, in [`record`]'s order.
pub(super) const COLUMNS: &str = "id, user_id, model_name, framework, dataset_s3_uri, config, \
     status, progress, message, checkpoint_s3_uri, error, created_at, updated_at, started_at, \
     completed_at, runner, exit_code, callback_token_hash, last_sequence, runner_state, number, \
     queue, priority, attempt, retry_policy, max_duration_s, max_pending_s, heartbeat_timeout_s, \
     stale_after_s, after_ids, termination_reason, last_heartbeat_at, stalled_at, next_attempt_at, \
     tags, note, name, sweep_id, gpus, assigned_gpus, pruned_at, pruned_max_points, logs_pruned, \
     artifacts_pruned";

/// Index of `number` in [`COLUMNS`].
pub(super) const NUMBER: usize = 20;
/// How many columns [`COLUMNS`] has (the index of the first one after).
const COUNT: usize = 44;

/// A job's attempts as one JSON array in the row (none before its first
/// launch), so a read is one statement and one consistent snapshot.
/// Written after [`COLUMNS`] in every read ([`with_attempts`]).
pub(super) const ATTEMPTS: &str =
    "CASE WHEN jobs.attempt > 0 THEN (SELECT json_agg(json_build_object(\
     'attempt', a.attempt, 'started_at', a.started_at, 'ended_at', a.ended_at, \
     'exit_code', a.exit_code, 'reason', a.reason, 'counted', a.counted) ORDER BY a.attempt) \
     FROM job_attempts a WHERE a.job_id = jobs.id) END";

/// `COLUMNS, ATTEMPTS`: what a read of whole jobs selects.
pub(super) fn with_attempts() -> &'static str {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{COLUMNS}, {ATTEMPTS}"));
    &SQL
}

/// A `json` column holding one of our own types.
fn from_json<T: serde::de::DeserializeOwned>(
    v: Option<serde_json::Value>,
) -> Result<Option<T>, DbError> {
    v.map(serde_json::from_value).transpose().map_err(corrupt)
}

fn to_u32(v: i32) -> Result<u32, DbError> {
    u32::try_from(v).map_err(corrupt)
}

/// A row of [`COLUMNS`] (extra columns after them are ignored); its
/// attempts are left empty (see [`record_with_attempts`]).
pub(super) fn record(r: &Row) -> Result<JobRecord, DbError> {
    let status: String = col(r, 6)?;
    let priority: i32 = col(r, 22)?;
    let job = Job {
        id: col(r, 0)?,
        number: col(r, NUMBER)?,
        user_id: col(r, 1)?,
        model_name: col(r, 2)?,
        framework: col(r, 3)?,
        dataset_s3_uri: col(r, 4)?,
        config: col(r, 5)?,
        status: status.parse::<JobStatus>().map_err(corrupt)?,
        progress: col(r, 7)?,
        message: col(r, 8)?,
        checkpoint_s3_uri: col(r, 9)?,
        error: col(r, 10)?,
        created_at: col(r, 11)?,
        updated_at: col(r, 12)?,
        started_at: col(r, 13)?,
        completed_at: col(r, 14)?,
        runner: col(r, 15)?,
        exit_code: col(r, 16)?,
        sched: JobScheduling {
            queue: col(r, 21)?,
            priority: u8::try_from(priority).map_err(corrupt)?,
            attempt: to_u32(col(r, 23)?)?,
            attempts: Vec::new(),
            retry: from_json(col(r, 24)?)?,
            max_duration: col(r, 25)?,
            max_pending: col(r, 26)?,
            heartbeat_timeout: col(r, 27)?,
            stale_after: col(r, 28)?,
            after: col::<Option<Vec<Uuid>>>(r, 29)?.unwrap_or_default(),
            termination_reason: col(r, 30)?,
            last_heartbeat_at: col(r, 31)?,
            stalled_at: col(r, 32)?,
            next_attempt_at: col(r, 33)?,
            gpus: to_u32(col(r, 38)?)?,
            assigned_gpus: from_json(col(r, 39)?)?.unwrap_or_default(),
            gpu_idle: false,
        },
        labels: Labels {
            tags: from_json(col(r, 34)?)?.unwrap_or_default(),
            note: col(r, 35)?,
            name: col(r, 36)?,
            sweep_id: col(r, 37)?,
        },
        pruned: crate::db::columns::pruned(
            col(r, 40)?,
            col::<Option<i32>>(r, 41)?.map(i64::from),
            col(r, 42)?,
            col(r, 43)?,
        )?,
    };
    Ok(JobRecord {
        job,
        token_hash: col(r, 17)?,
        last_sequence: col(r, 18)?,
        runner_state: col(r, 19)?,
    })
}

/// Attempts as [`ATTEMPTS`] selects them.
pub(super) fn attempts(v: Option<serde_json::Value>) -> Result<Vec<Attempt>, DbError> {
    Ok(from_json(v)?.unwrap_or_default())
}

/// A row of [`with_attempts`] (extra columns after them are ignored).
pub(super) fn record_with_attempts(r: &Row) -> Result<JobRecord, DbError> {
    let mut rec = record(r)?;
    rec.job.sched.attempts = attempts(col(r, COUNT)?)?;
    Ok(rec)
}

async fn records(
    c: &impl GenericClient,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<JobRecord>, DbError> {
    rows(c, sql, args, record_with_attempts).await
}

/// One job with its private columns.
pub(super) async fn get(c: &impl GenericClient, id: Uuid) -> Result<Option<JobRecord>, DbError> {
    let sql = format!("SELECT {} FROM jobs WHERE id = $1", with_attempts());
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
    let mut sql = format!("SELECT {} FROM jobs WHERE true", with_attempts());
    let status = f.status.map(|s| s.as_str());
    let bounds = match &f.id_prefix {
        Some(p) => match prefix_bounds(p) {
            Some(b) => Some(b),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    // One containment test for every tag filter: `tags @> {"k": "v", …}`.
    let tags: Option<serde_json::Value> = (!f.tags.is_empty()).then(|| {
        serde_json::Value::Object(
            f.tags
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    });
    if f.tags
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Ok(Vec::new());
    }
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(sw) = &f.sweep_id {
        args.push(sw);
        sql.push_str(&format!(" AND sweep_id = ${}", args.len()));
    }
    if let Some(t) = &tags {
        args.push(t);
        sql.push_str(&format!(" AND tags @> ${}::jsonb", args.len()));
    }
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
    if let Some(q) = &f.queue {
        args.push(q);
        sql.push_str(&format!(" AND queue = ${}", args.len()));
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
    // Jobs of one writer batch share `created_at`; their numbers follow
    // the order they were queued in, their ids (minted before) need not.
    sql.push_str(&format!(
        " ORDER BY created_at DESC, number DESC LIMIT ${} OFFSET ${n}",
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
        "SELECT {} FROM jobs WHERE status = $1 ORDER BY created_at ASC, number ASC LIMIT $2",
        with_attempts()
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
        "SELECT {} FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
         AND runner = $1 AND runner_state IS NOT NULL AND exit_code IS NULL \
         AND completed_at > $2 ORDER BY created_at ASC, id ASC",
        with_attempts()
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
    use super::{prefix_bounds, COLUMNS, COUNT, NUMBER};

    #[test]
    fn column_indexes_match_the_list() {
        let names: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(names.len(), COUNT);
        assert_eq!(names[NUMBER], "number");
    }

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
