//! Queries on the `points` and `system_points` tables (a job's training
//! points and its GPU telemetry): storing points, paging through them,
//! downsampling long histories for plots, and deleting what retention
//! prunes.
//!
//! Points are stored compactly, since a deployment keeps hundreds of
//! millions of them (schema 13): the job by its number, not its 36-byte id;
//! the time as integer microseconds; and of the reported map only what the
//! columns do not already hold exactly (`extra`, NULL when nothing is left;
//! `lifted` says which of `epoch`, `step`, `loss` and `accuracy` the map
//! had). Reading puts the same map back, key for key and number for number
//! (an integer stays an integer, a float the same float).
//!
//! A long training history is also kept summarised in `metric_blocks`:
//! every [`BLOCK`] consecutive points of a job become one row holding their
//! id range and the ids and values of their minimum and maximum. The writer
//! closes a block as the job reaches it ([`settle`]), so a plot of a
//! 10,000,000-point history reads about 10,000 block rows and at most one
//! open block's points, not the whole series. Blocks are derived data: a
//! deletion drops the job's blocks, and `settle` rebuilds what is missing.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::db::downsample::{pick_extremes, pick_from_segments, MetricTable, Segment};
use crate::db::{ts, DbError};
use crate::model::{Metric, MetricFilter, MetricPoint, Order};

/// Points per block of `metric_blocks`.
pub(super) const BLOCK: usize = 1024;

/// Blocks are read instead of points once a plot's buckets are at least
/// this many blocks wide, so each bucket is at most half a block uneven.
const BLOCKS_PER_BUCKET: u64 = 2;

/// The columns [`from_row`] reads, in order (a job's id is known to the
/// caller, or joined in as the tenth).
const COLUMNS: &str = "id, epoch, step, loss, accuracy, extra, lifted, at, attempt";

/// [`COLUMNS`] of points `p` joined with their jobs `j`, the job's id tenth.
const JOINED: &str = "p.id, p.epoch, p.step, p.loss, p.accuracy, p.extra, p.lifted, p.at, \
                      p.attempt, j.id";

/// SQLite's tables of derived data: rebuilt from the others, never shown
/// by `db status` nor copied by `db migrate` (PostgreSQL has none).
pub(super) const DERIVED: &[&str] = &["metric_blocks"];

/// Which keys a point's columns hold exactly, as bits of `lifted`.
const LIFTED: [(&str, i64); 4] = [("epoch", 1), ("step", 2), ("loss", 4), ("accuracy", 8)];

/// The columns of one point, as stored.
struct Stored<'a> {
    epoch: i64,
    step: Option<i64>,
    loss: Option<f64>,
    accuracy: Option<f64>,
    map: &'a Map<String, Value>,
}

impl<'a> Stored<'a> {
    /// A point about to be stored.
    fn of(p: &'a MetricPoint) -> Self {
        Stored {
            epoch: p.epoch,
            step: p.step,
            loss: p.loss,
            accuracy: p.accuracy,
            map: &p.metrics,
        }
    }

    /// The number column `key` rebuilds, if it is one of the four.
    fn rebuilt(&self, key: &str) -> Option<Number> {
        let float = |f: Option<f64>| {
            // SQLite stores -0.0 as the integer 0: it would come back as 0.0.
            f.filter(|f| *f != 0.0 || f.is_sign_positive())
                .and_then(Number::from_f64)
        };
        match key {
            "epoch" => Some(Number::from(self.epoch)),
            "step" => self.step.map(Number::from),
            "loss" => float(self.loss),
            "accuracy" => float(self.accuracy),
            _ => None,
        }
    }

    /// The bits of `lifted`: the keys whose number the columns rebuild
    /// exactly (same kind, same value).
    fn lifted(&self) -> i64 {
        LIFTED
            .iter()
            .filter(|(key, _)| match (self.map.get(*key), self.rebuilt(key)) {
                (Some(Value::Number(n)), Some(r)) => same_number(n, &r),
                _ => false,
            })
            .map(|(_, bit)| bit)
            .sum()
    }

    /// `extra`: the map without the lifted keys, as JSON; `None` if empty.
    fn extra(&self, lifted: i64) -> Result<Option<String>, DbError> {
        let rest = Rest {
            map: self.map,
            lifted,
        };
        if rest.entries().next().is_none() {
            return Ok(None);
        }
        serde_json::to_string(&rest)
            .map(Some)
            .map_err(|e| DbError::Corrupt(e.to_string()))
    }
}

/// Same kind (integer or float) and same value, bit for bit.
fn same_number(a: &Number, b: &Number) -> bool {
    match (a.is_f64(), b.is_f64()) {
        (true, true) => a.as_f64().map(f64::to_bits) == b.as_f64().map(f64::to_bits),
        (false, false) => a == b,
        _ => false,
    }
}

/// A map less its lifted keys, serialized without copying it.
struct Rest<'a> {
    map: &'a Map<String, Value>,
    lifted: i64,
}

impl Rest<'_> {
    fn entries(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.map.iter().filter(|(k, _)| {
            !LIFTED
                .iter()
                .any(|(key, bit)| self.lifted & bit != 0 && k.as_str() == *key)
        })
    }
}

impl serde::Serialize for Rest<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.entries() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The reported map back from `extra` and the lifted columns.
fn map_of(
    extra: Option<&str>,
    lifted: i64,
    columns: &Stored<'_>,
) -> Result<Map<String, Value>, DbError> {
    let mut map: Map<String, Value> = match extra {
        Some(s) => serde_json::from_str(s).map_err(|e| DbError::Corrupt(e.to_string()))?,
        None => Map::new(),
    };
    for (key, bit) in LIFTED {
        if lifted & bit != 0 {
            let n = columns
                .rebuilt(key)
                .ok_or_else(|| DbError::Corrupt(format!("a point lifted {key} but stores none")))?;
            map.insert(key.to_string(), Value::Number(n));
        }
    }
    Ok(map)
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>, DbError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| DbError::Corrupt(format!("a point's time {us} is out of range")))
}

/// A point from [`COLUMNS`] (of `job_id`, or of the job id in column 9).
fn from_row(r: &Row<'_>, job_id: Option<Uuid>) -> Result<Metric, DbError> {
    let empty = Map::new();
    let columns = Stored {
        epoch: r.get(1)?,
        step: r.get(2)?,
        loss: r.get(3)?,
        accuracy: r.get(4)?,
        map: &empty,
    };
    let extra: Option<String> = r.get(5)?;
    let metrics = map_of(extra.as_deref(), r.get(6)?, &columns)?;
    let job_id = match job_id {
        Some(id) => id,
        None => {
            Uuid::parse_str(&r.get::<_, String>(9)?).map_err(|e| DbError::Corrupt(e.to_string()))?
        }
    };
    Ok(Metric {
        id: r.get(0)?,
        job_id,
        epoch: columns.epoch,
        step: columns.step,
        loss: columns.loss,
        accuracy: columns.accuracy,
        metrics,
        created_at: from_micros(r.get(7)?)?,
        attempt: r.get(8)?,
    })
}

/// A job's number, the key its points are stored under.
fn number(c: &Connection, job_id: Uuid) -> Result<Option<i64>, DbError> {
    Ok(c.prepare_cached("SELECT number FROM jobs WHERE id = ?1")?
        .query_row([job_id.to_string()], |r| r.get(0))
        .optional()?)
}

/// Stores one point of job `job_id` (number `job`) and returns it as the
/// API shows it.
pub fn insert(
    c: &Connection,
    (job_id, job): (Uuid, i64),
    attempt: u32,
    p: &MetricPoint,
    at: &DateTime<Utc>,
) -> Result<Metric, DbError> {
    let stored = Stored::of(p);
    let lifted = stored.lifted();
    c.prepare_cached(
        "INSERT INTO points (job, epoch, step, loss, accuracy, extra, lifted, at, attempt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        job,
        p.epoch,
        p.step,
        p.loss,
        p.accuracy,
        stored.extra(lifted)?,
        lifted,
        micros(at),
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

/// Stores one sample of a job's system metrics (GPU telemetry); `series`
/// is the number downsampling keeps the extremes of.
pub fn insert_system(
    c: &Connection,
    job_id: Uuid,
    attempt: u32,
    metrics: &Map<String, Value>,
    series: f64,
    at: &DateTime<Utc>,
) -> Result<(), DbError> {
    let Some(job) = number(c, job_id)? else {
        return Ok(());
    };
    let metrics = serde_json::to_string(metrics).map_err(|e| DbError::Corrupt(e.to_string()))?;
    c.prepare_cached(
        "INSERT INTO system_points (job, epoch, extra, lifted, at, attempt, series) \
         VALUES (?1, 0, ?2, 0, ?3, ?4, ?5)",
    )?
    .execute(params![job, metrics, micros(at), attempt.max(1), series])?;
    Ok(())
}

/// A page of a job's points in the requested order, or a downsampled view
/// of the whole history when `max_points` is set; `None` if there is no
/// such job.
pub fn list(
    c: &Connection,
    job_id: Uuid,
    f: &MetricFilter,
) -> Result<Option<Vec<Metric>>, DbError> {
    let Some(job) = number(c, job_id)? else {
        return Ok(None);
    };
    let table = MetricTable::of(f.system);
    if let Some(max) = f.max_points {
        let mut ids = plot_ids(c, table, job, f.after_id.unwrap_or(0), max as usize)?;
        if f.order == Order::Desc {
            ids.reverse();
        }
        return by_ids(c, table, job_id, &ids).map(Some);
    }
    let dir = match f.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {} WHERE job = ?1 AND id > ?2 ORDER BY id {dir} LIMIT ?3",
        table.compact
    ))?;
    let mut rows = stmt.query(params![job, f.after_id.unwrap_or(0), f.limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(from_row(r, Some(job_id))?);
    }
    Ok(Some(out))
}

/// The points with these ids, in this order.
fn by_ids(
    c: &Connection,
    table: MetricTable,
    job_id: Uuid,
    ids: &[i64],
) -> Result<Vec<Metric>, DbError> {
    let mut one = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {} WHERE id = ?1",
        table.compact
    ))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut rows = one.query([id])?;
        if let Some(r) = rows.next()? {
            out.push(from_row(r, Some(job_id))?);
        }
    }
    Ok(out)
}

/// The ids of the points a plot of at most `max` points keeps, ascending:
/// the first, the last, and per bucket the minimum and maximum of the
/// job's main series (loss, else accuracy, else epoch), so spikes survive.
/// Only ids and one number are scanned, from the covering index, or for a
/// long training history from its blocks. Retention keeps the same points,
/// so a pruned history draws the same curve.
fn plot_ids(
    c: &Connection,
    table: MetricTable,
    job: i64,
    after_id: i64,
    max: usize,
) -> Result<Vec<i64>, DbError> {
    Ok(match blocked_series(c, table, job, after_id, max)? {
        Some(segments) => pick_from_segments(&segments, max),
        None => pick_extremes(&read_series(c, table, job, after_id, i64::MAX)?, max),
    })
}

/// The training series after `after_id` as its blocks plus the points
/// before the first and after the last of them, when the blocks are long
/// enough to plot `max` points from (`None`: read the points).
fn blocked_series(
    c: &Connection,
    table: MetricTable,
    job: i64,
    after_id: i64,
    max: usize,
) -> Result<Option<Vec<Segment>>, DbError> {
    if table.system {
        return Ok(None);
    }
    let blocks = c
        .prepare_cached(
            "SELECT first_id, last_id, points, min_id, min_value, max_id, max_value \
             FROM metric_blocks WHERE job = ?1 AND first_id > ?2 ORDER BY first_id",
        )?
        .query_map(params![job, after_id], |r| {
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
    let before = read_series(c, table, job, after_id, head.first)?;
    let after = read_series(c, table, job, tail.last, i64::MAX)?;
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
    job: i64,
    after: i64,
    before: i64,
) -> Result<Vec<(i64, f64)>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT id, {} FROM {} WHERE job = ?1 AND id > ?2 AND id < ?3 ORDER BY id ASC",
        table.series, table.compact
    ))?;
    let series = stmt
        .query_map(params![job, after, before], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(series)
}

/// Closes every whole block of job `job`'s training points that has none
/// yet, and returns how many points are left after the last block (fewer
/// than [`BLOCK`]). The writer calls it as a job's points reach a block,
/// and the migration that added blocks for every history it found.
pub(super) fn settle(c: &Connection, job: i64) -> Result<usize, DbError> {
    let after: i64 = c
        .prepare_cached(
            "SELECT last_id FROM metric_blocks WHERE job = ?1 ORDER BY first_id DESC LIMIT 1",
        )?
        .query_row([job], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let table = MetricTable::of(false);
    let mut scan = c.prepare_cached(&format!(
        "SELECT id, {} FROM {} WHERE job = ?1 AND id > ?2 ORDER BY id ASC",
        table.series, table.compact
    ))?;
    let mut insert = c.prepare_cached(
        "INSERT INTO metric_blocks \
         (job, first_id, last_id, points, min_id, min_value, max_id, max_value) \
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
    match number(c, job_id)? {
        Some(job) => read_series(c, MetricTable::of(system), job, 0, i64::MAX),
        None => Ok(Vec::new()),
    }
}

/// The ids a plot of at most `max` points of a job's training points or,
/// with `system`, of its GPU telemetry keeps (see [`plot_ids`]).
pub fn plotted(
    c: &Connection,
    job_id: Uuid,
    system: bool,
    max: usize,
) -> Result<Vec<i64>, DbError> {
    match number(c, job_id)? {
        Some(job) => plot_ids(c, MetricTable::of(system), job, 0, max),
        None => Ok(Vec::new()),
    }
}

/// Deletes a job's points in `ranges` (training points, or with `system`
/// its GPU telemetry); how many went.
pub fn delete_ranges(
    c: &Connection,
    job_id: Uuid,
    system: bool,
    ranges: &[crate::db::IdRange],
) -> Result<u64, DbError> {
    let Some(job) = number(c, job_id)? else {
        return Ok(0);
    };
    let mut stmt = c.prepare_cached(&format!(
        "DELETE FROM {} WHERE job = ?1 AND id BETWEEN ?2 AND ?3",
        MetricTable::of(system).compact
    ))?;
    let mut deleted = 0;
    for r in ranges {
        deleted += stmt.execute(params![job, r.first, r.last])? as u64;
    }
    if deleted > 0 && !system {
        // The blocks no longer summarise what is left; `settle` rebuilds them.
        c.prepare_cached("DELETE FROM metric_blocks WHERE job = ?1")?
            .execute([job])?;
    }
    Ok(deleted)
}

/// Points of every job with an id above `after_id`, oldest first (the
/// all-jobs event stream pages through these).
pub fn all_after(c: &Connection, after_id: i64, limit: i64) -> Result<Vec<Metric>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {JOINED} FROM points p JOIN jobs j ON j.number = p.job \
             WHERE p.id > ?1 ORDER BY p.id ASC LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![after_id, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(from_row(r, None)?);
    }
    Ok(out)
}

/// The highest point id stored so far (0 when there are none).
pub fn last_id(c: &Connection) -> Result<i64, DbError> {
    let mut stmt = c.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM points")?;
    Ok(stmt.query_row([], |r| r.get(0))?)
}

/// The columns of the portable layout that `db migrate` copies: what
/// PostgreSQL's `metrics` and `system_metrics` hold.
pub(super) fn portable_columns(table: MetricTable) -> Vec<String> {
    let mut columns: Vec<String> = [
        "id",
        "job_id",
        "epoch",
        "step",
        "loss",
        "accuracy",
        "metrics",
        "created_at",
        "attempt",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    if table.system {
        columns.push("series".into());
    }
    columns
}

/// Every point of `table`, by id, as [`portable_row`] reads them.
pub(super) fn portable_select(table: MetricTable) -> String {
    let series = if table.system { ", p.series" } else { "" };
    format!(
        "SELECT {JOINED}{series} FROM {} p JOIN jobs j ON j.number = p.job ORDER BY p.id",
        table.compact
    )
}

/// One row of [`portable_select`] in the layout of [`portable_columns`].
pub(super) fn portable_row(r: &Row<'_>, table: MetricTable) -> Result<Vec<SqlValue>, DbError> {
    let m = from_row(r, None)?;
    let map = serde_json::to_string(&m.metrics).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let mut row = vec![
        SqlValue::Integer(m.id),
        SqlValue::Text(m.job_id.to_string()),
        SqlValue::Integer(m.epoch),
        m.step.map_or(SqlValue::Null, SqlValue::Integer),
        m.loss.map_or(SqlValue::Null, SqlValue::Real),
        m.accuracy.map_or(SqlValue::Null, SqlValue::Real),
        SqlValue::Text(map),
        SqlValue::Text(ts(&m.created_at)),
        SqlValue::Integer(i64::from(m.attempt)),
    ];
    if table.system {
        row.push(SqlValue::Real(r.get(10)?));
    }
    Ok(row)
}

/// Schema 13's copy of the old layout (`metrics`, `system_metrics`: the
/// job by id, the time as text, the whole map as JSON) into the compact
/// one, row by row through the same encoding as [`insert`].
pub(super) fn compact_old_rows(c: &Connection, system: bool) -> Result<(), DbError> {
    let table = MetricTable::of(system);
    let (old, new) = (table.name, table.compact);
    let series = if system { "m.series" } else { "NULL" };
    let mut read = c.prepare(&format!(
        "SELECT m.id, j.number, m.epoch, m.step, m.loss, m.accuracy, m.metrics, m.created_at, \
                COALESCE(m.attempt, 1), {series} \
           FROM {old} m JOIN jobs j ON j.id = m.job_id ORDER BY m.id"
    ))?;
    let mut write = c.prepare(&format!(
        "INSERT INTO {new} (id, job, epoch, step, loss, accuracy, extra, lifted, at, attempt{}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10{})",
        if system { ", series" } else { "" },
        if system { ", ?11" } else { "" },
    ))?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let map: Map<String, Value> = serde_json::from_str(&r.get::<_, String>(6)?)
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let stored = Stored {
            epoch: r.get(2)?,
            step: r.get(3)?,
            loss: r.get(4)?,
            accuracy: r.get(5)?,
            map: &map,
        };
        let lifted = if system { 0 } else { stored.lifted() };
        let at = crate::db::parse_ts(&r.get::<_, String>(7)?)?;
        let mut values: Vec<SqlValue> = vec![
            r.get(0)?,
            r.get(1)?,
            SqlValue::Integer(stored.epoch),
            stored.step.map_or(SqlValue::Null, SqlValue::Integer),
            stored.loss.map_or(SqlValue::Null, SqlValue::Real),
            stored.accuracy.map_or(SqlValue::Null, SqlValue::Real),
            stored.extra(lifted)?.map_or(SqlValue::Null, SqlValue::Text),
            SqlValue::Integer(lifted),
            SqlValue::Integer(micros(&at)),
            r.get(8)?,
        ];
        if system {
            values.push(r.get(9)?);
        }
        write.execute(rusqlite::params_from_iter(values))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(json: &str) -> Map<String, Value> {
        let map: Map<String, Value> = serde_json::from_str(json).unwrap();
        let numbers = map
            .iter()
            .map(|(k, v)| match v {
                Value::Number(n) => (k.clone(), n.clone()),
                _ => unreachable!(),
            })
            .collect();
        let p = MetricPoint::from_numbers("metrics", &numbers).unwrap();
        let stored = Stored::of(&p);
        let lifted = stored.lifted();
        let extra = stored.extra(lifted).unwrap();
        let columns = Stored {
            map: &Map::new(),
            ..stored
        };
        let back = map_of(extra.as_deref(), lifted, &columns).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&p.metrics).unwrap(),
            "{json}"
        );
        back
    }

    #[test]
    fn maps_come_back_number_for_number() {
        for json in [
            r#"{"loss": 0.5, "accuracy": 0.9, "epoch": 3, "step": 120}"#,
            r#"{"loss": 1, "accuracy": 2.0, "epoch": 3.0, "lr": 0.001}"#,
            r#"{"loss": -0.0, "accuracy": 0.0, "mAP50": 1e300}"#,
            r#"{"loss": 0.30000000000000004, "epoch": 9007199254740993}"#,
            r#"{"mAP50": 0.5}"#,
            r#"{}"#,
        ] {
            round_trip(json);
        }
    }

    #[test]
    fn only_what_the_columns_hold_exactly_is_lifted() {
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"loss": 0.5, "accuracy": 1, "epoch": 2, "lr": 0.1}"#).unwrap();
        let stored = Stored {
            epoch: 2,
            step: None,
            loss: Some(0.5),
            accuracy: Some(1.0),
            map: &map,
        };
        let lifted = stored.lifted();
        assert_eq!(lifted, 1 | 4, "epoch and loss; accuracy 1 is an integer");
        assert_eq!(
            stored.extra(lifted).unwrap().as_deref(),
            Some(r#"{"accuracy":1,"lr":0.1}"#)
        );
        let plain: Map<String, Value> =
            serde_json::from_str(r#"{"loss": 0.5, "epoch": 2}"#).unwrap();
        let stored = Stored {
            map: &plain,
            ..stored
        };
        assert_eq!(stored.extra(stored.lifted()).unwrap(), None, "nothing left");
    }
}
