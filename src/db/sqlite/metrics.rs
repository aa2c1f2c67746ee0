//! Queries on the `metrics` and `system_metrics` tables: storing points,
//! paging through them, downsampling long histories for plots, and
//! deleting what retention prunes.

use rusqlite::{params, Connection, Row};
use uuid::Uuid;

use crate::db::downsample::{pick_extremes, MetricTable};
use crate::db::{parse_ts, ts, DbError};
use crate::model::{Metric, MetricFilter, MetricPoint, Order};

const COLUMNS: &str =
    "id, job_id, epoch, step, loss, accuracy, metrics, created_at, COALESCE(attempt, 1)";

fn from_row(r: &Row<'_>) -> Result<Metric, DbError> {
    let job_id: String = r.get(1)?;
    let metrics: String = r.get(6)?;
    Ok(Metric {
        id: r.get(0)?,
        job_id: Uuid::parse_str(&job_id).map_err(|e| DbError::Corrupt(e.to_string()))?,
        epoch: r.get(2)?,
        step: r.get(3)?,
        loss: r.get(4)?,
        accuracy: r.get(5)?,
        metrics: serde_json::from_str(&metrics).map_err(|e| DbError::Corrupt(e.to_string()))?,
        created_at: parse_ts(&r.get::<_, String>(7)?)?,
        attempt: r.get(8)?,
    })
}

/// Stores one point and returns it as the API shows it.
pub fn insert(
    c: &Connection,
    job_id: Uuid,
    attempt: u32,
    p: &MetricPoint,
    at: &chrono::DateTime<chrono::Utc>,
) -> Result<Metric, DbError> {
    // Serialize the map in place (no clone): this runs per point on the writer thread.
    let metrics = serde_json::to_string(&p.metrics).map_err(|e| DbError::Corrupt(e.to_string()))?;
    c.prepare_cached(
        "INSERT INTO metrics (job_id, epoch, step, loss, accuracy, metrics, created_at, attempt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        job_id.to_string(),
        p.epoch,
        p.step,
        p.loss,
        p.accuracy,
        metrics,
        ts(at),
        attempt.max(1)
    ])?;
    Ok(Metric {
        id: c.last_insert_rowid(),
        job_id,
        epoch: p.epoch,
        step: p.step,
        loss: p.loss,
        accuracy: p.accuracy,
        metrics: p.metrics.clone(),
        created_at: *at,
        attempt: attempt.max(1),
    })
}

/// A page of a job's points in the requested order, or a downsampled view
/// of the whole history when `max_points` is set.
pub fn list(c: &Connection, job_id: Uuid, f: &MetricFilter) -> Result<Vec<Metric>, DbError> {
    let table = MetricTable::of(f.system);
    if let Some(max) = f.max_points {
        return downsample(
            c,
            table,
            job_id,
            f.after_id.unwrap_or(0),
            max as usize,
            f.order,
        );
    }
    let dir = match f.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {} WHERE job_id = ?1 AND id > ?2 ORDER BY id {dir} LIMIT ?3",
        table.name
    ))?;
    let mut rows = stmt.query(params![
        job_id.to_string(),
        f.after_id.unwrap_or(0),
        f.limit
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(from_row(r)?);
    }
    Ok(out)
}

/// Picks at most `max` points: the first, the last, and per bucket the
/// minimum and maximum of the job's main series (loss, else accuracy, else
/// epoch), so spikes survive. Only ids and one number are scanned, from the
/// covering index `metrics_series` (the expression must match it); full
/// rows are read for the chosen points alone.
fn downsample(
    c: &Connection,
    table: MetricTable,
    job_id: Uuid,
    after_id: i64,
    max: usize,
    order: Order,
) -> Result<Vec<Metric>, DbError> {
    let series = read_series(c, table, job_id, after_id)?;
    let mut ids = pick_extremes(&series, max);
    if order == Order::Desc {
        ids.reverse();
    }
    let mut one = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {} WHERE id = ?1",
        table.name
    ))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut rows = one.query([id])?;
        if let Some(r) = rows.next()? {
            out.push(from_row(r)?);
        }
    }
    Ok(out)
}

/// `(id, value)` of a job's main series after `after_id`, ascending: what
/// downsampling works on.
fn read_series(
    c: &Connection,
    table: MetricTable,
    job_id: Uuid,
    after_id: i64,
) -> Result<Vec<(i64, f64)>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT id, {} FROM {} WHERE job_id = ?1 AND id > ?2 ORDER BY id ASC",
        table.series, table.name
    ))?;
    let series = stmt
        .query_map(params![job_id.to_string(), after_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(series)
}

/// The whole main series of a job's training points or, with `system`, of
/// its GPU telemetry (see [`read_series`]).
pub fn series(c: &Connection, job_id: Uuid, system: bool) -> Result<Vec<(i64, f64)>, DbError> {
    read_series(c, MetricTable::of(system), job_id, 0)
}

/// Deletes a job's points in `ranges` (training points, or with `system`
/// its GPU telemetry); how many went.
pub fn delete_ranges(
    c: &Connection,
    job_id: Uuid,
    system: bool,
    ranges: &[crate::db::IdRange],
) -> Result<u64, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "DELETE FROM {} WHERE job_id = ?1 AND id BETWEEN ?2 AND ?3",
        MetricTable::of(system).name
    ))?;
    let job = job_id.to_string();
    let mut deleted = 0;
    for r in ranges {
        deleted += stmt.execute(params![job, r.first, r.last])? as u64;
    }
    Ok(deleted)
}

/// Stores one sample of a job's system metrics (GPU telemetry); `series`
/// is the number downsampling keeps the extremes of.
pub fn insert_system(
    c: &Connection,
    job_id: Uuid,
    attempt: u32,
    metrics: &serde_json::Map<String, serde_json::Value>,
    series: f64,
    at: &chrono::DateTime<chrono::Utc>,
) -> Result<(), DbError> {
    let metrics = serde_json::to_string(metrics).map_err(|e| DbError::Corrupt(e.to_string()))?;
    c.prepare_cached(
        "INSERT INTO system_metrics (job_id, epoch, metrics, created_at, attempt, series) \
         VALUES (?1, 0, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        job_id.to_string(),
        metrics,
        ts(at),
        attempt.max(1),
        series
    ])?;
    Ok(())
}

/// Points of every job with an id above `after_id`, oldest first (the
/// all-jobs event stream pages through these).
pub fn all_after(c: &Connection, after_id: i64, limit: i64) -> Result<Vec<Metric>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM metrics WHERE id > ?1 ORDER BY id ASC LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![after_id, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(from_row(r)?);
    }
    Ok(out)
}

/// The highest point id stored so far (0 when there are none).
pub fn last_id(c: &Connection) -> Result<i64, DbError> {
    let mut stmt = c.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM metrics")?;
    Ok(stmt.query_row([], |r| r.get(0))?)
}
