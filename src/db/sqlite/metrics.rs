//! Queries on the `metrics` and `system_metrics` tables: storing points,
//! paging through them, downsampling long histories for plots, and
//! deleting what retention prunes.
//!
//! A long training history is also kept summarised in `metric_blocks`:
//! every [`BLOCK`] consecutive points of a job become one row holding their
//! id range and the ids and values of their minimum and maximum. The writer
//! closes a block as the job reaches it ([`settle`]), so a plot of a
//! 10,000,000-point history reads about 10,000 block rows and at most one
//! open block's points, not the whole series. Blocks are derived data: a
//! deletion drops the job's blocks, and `settle` rebuilds what is missing.

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::db::downsample::{pick_extremes, pick_from_segments, MetricTable, Segment};
use crate::db::{parse_ts, ts, DbError};
use crate::model::{Metric, MetricFilter, MetricPoint, Order};

/// Points per block of `metric_blocks`.
pub(super) const BLOCK: usize = 1024;

/// Blocks are read instead of points once a plot's buckets are at least
/// this many blocks wide, so each bucket is at most half a block uneven.
const BLOCKS_PER_BUCKET: u64 = 2;

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
/// covering index `metrics_series` (the expression must match it), or for
/// a long training history from its blocks; full rows are read for the
/// chosen points alone.
fn downsample(
    c: &Connection,
    table: MetricTable,
    job_id: Uuid,
    after_id: i64,
    max: usize,
    order: Order,
) -> Result<Vec<Metric>, DbError> {
    let mut ids = plot_ids(c, table, job_id, after_id, max)?;
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

/// The ids of the points a plot of at most `max` points keeps, ascending
/// (retention keeps the same ones, so a pruned history draws the same
/// curve).
pub(super) fn plot_ids(
    c: &Connection,
    table: MetricTable,
    job_id: Uuid,
    after_id: i64,
    max: usize,
) -> Result<Vec<i64>, DbError> {
    Ok(match blocked_series(c, table, job_id, after_id, max)? {
        Some(segments) => pick_from_segments(&segments, max),
        None => pick_extremes(&read_series(c, table, job_id, after_id, i64::MAX)?, max),
    })
}

/// The training series after `after_id` as its blocks plus the points
/// before the first and after the last of them, when the blocks are long
/// enough to plot `max` points from (`None`: read the points).
fn blocked_series(
    c: &Connection,
    table: MetricTable,
    job_id: Uuid,
    after_id: i64,
    max: usize,
) -> Result<Option<Vec<Segment>>, DbError> {
    if table.name != MetricTable::of(false).name {
        return Ok(None);
    }
    let blocks = c
        .prepare_cached(
            "SELECT first_id, last_id, points, min_id, min_value, max_id, max_value \
             FROM metric_blocks WHERE job_id = ?1 AND first_id > ?2 ORDER BY first_id",
        )?
        .query_map(params![job_id.to_string(), after_id], |r| {
            Ok(Segment {
                first: r.get(0)?,
                last: r.get(1)?,
                points: r.get::<_, i64>(2)?.max(0) as u64,
                min: (r.get(3)?, r.get(4)?),
                max: (r.get(5)?, r.get(6)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let (Some(head), Some(tail)) = (blocks.first(), blocks.last()) else {
        return Ok(None);
    };
    let in_blocks: u64 = blocks.iter().map(|b| b.points).sum();
    let buckets = (max.saturating_sub(2) / 2).max(1) as u64;
    if in_blocks / buckets < BLOCKS_PER_BUCKET * BLOCK as u64 {
        return Ok(None);
    }
    let point = |&(id, v): &(i64, f64)| Segment::point(id, v);
    let before = read_series(c, table, job_id, after_id, head.first)?;
    let after = read_series(c, table, job_id, tail.last, i64::MAX)?;
    let mut segments = Vec::with_capacity(before.len() + blocks.len() + after.len());
    segments.extend(before.iter().map(point));
    segments.extend(blocks.iter().copied());
    segments.extend(after.iter().map(point));
    Ok(Some(segments))
}

/// `(id, value)` of a job's main series with ids strictly between `after`
/// and `before`, ascending: what downsampling works on.
fn read_series(
    c: &Connection,
    table: MetricTable,
    job_id: Uuid,
    after: i64,
    before: i64,
) -> Result<Vec<(i64, f64)>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT id, {} FROM {} WHERE job_id = ?1 AND id > ?2 AND id < ?3 ORDER BY id ASC",
        table.series, table.name
    ))?;
    let series = stmt
        .query_map(params![job_id.to_string(), after, before], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(series)
}

/// Closes every whole block of `job_id`'s training points that has none
/// yet, and returns how many points are left after the last block (fewer
/// than [`BLOCK`]). The writer calls it as a job's points reach a block,
/// and the migration that added blocks for every history it found.
pub(super) fn settle(c: &Connection, job_id: Uuid) -> Result<usize, DbError> {
    let job = job_id.to_string();
    let after: i64 = c
        .prepare_cached(
            "SELECT last_id FROM metric_blocks WHERE job_id = ?1 ORDER BY first_id DESC LIMIT 1",
        )?
        .query_row([&job], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let table = MetricTable::of(false);
    let mut scan = c.prepare_cached(&format!(
        "SELECT id, {} FROM {} WHERE job_id = ?1 AND id > ?2 ORDER BY id ASC",
        table.series, table.name
    ))?;
    let mut insert = c.prepare_cached(
        "INSERT INTO metric_blocks \
         (job_id, first_id, last_id, points, min_id, min_value, max_id, max_value) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    // Streamed: a history first summarised by the migration can be long.
    let mut open: Vec<(i64, f64)> = Vec::with_capacity(BLOCK);
    let mut rows = scan.query(params![job, after])?;
    while let Some(r) = rows.next()? {
        open.push((r.get(0)?, r.get(1)?));
        if open.len() == BLOCK {
            if let Some(b) = Segment::of(&open) {
                insert.execute(params![
                    job,
                    b.first,
                    b.last,
                    b.points as i64,
                    b.min.0,
                    b.min.1,
                    b.max.0,
                    b.max.1
                ])?;
            }
            open.clear();
        }
    }
    Ok(open.len())
}

/// The whole main series of a job's training points or, with `system`, of
/// its GPU telemetry (see [`read_series`]).
pub fn series(c: &Connection, job_id: Uuid, system: bool) -> Result<Vec<(i64, f64)>, DbError> {
    read_series(c, MetricTable::of(system), job_id, 0, i64::MAX)
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
    if deleted > 0 && !system {
        // The blocks no longer summarise what is left; `settle` rebuilds them.
        c.prepare_cached("DELETE FROM metric_blocks WHERE job_id = ?1")?
            .execute([&job])?;
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
