//! The `metrics` and `system_metrics` tables: a job's points by page,
//! downsampled for plots, and deleted where retention prunes them.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{corrupt, fail};
use crate::db::downsample::{pick_extremes, MetricTable};
use crate::db::DbError;
use crate::model::{Metric, MetricFilter, Order};

/// Every column of a point, in [`point`]'s order.
pub(super) const COLUMNS: &str =
    "id, job_id, epoch, step, loss, accuracy, metrics, created_at, COALESCE(attempt, 1)";

/// Stores one sample of a job's system metrics (GPU telemetry).
pub(super) async fn insert_system(
    c: &impl GenericClient,
    job_id: Uuid,
    attempt: u32,
    metrics: &serde_json::Map<String, serde_json::Value>,
    series: f64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO system_metrics (job_id, epoch, metrics, created_at, attempt, series) \
             VALUES ($1, 0, $2::text::json, $3, $4, $5)",
        )
        .await
        .map_err(fail)?;
    let text = serde_json::Value::Object(metrics.clone()).to_string();
    let attempt = i32::try_from(attempt.max(1)).unwrap_or(i32::MAX);
    c.execute(&stmt, &[&job_id, &text, &at, &attempt, &series])
        .await
        .map_err(fail)?;
    Ok(())
}

/// A row of [`COLUMNS`] (extra columns after them are ignored).
pub(super) fn point(r: &Row) -> Result<Metric, DbError> {
    let metrics: serde_json::Value = r.try_get(6).map_err(corrupt)?;
    let serde_json::Value::Object(metrics) = metrics else {
        return Err(DbError::Corrupt(
            "a point's metrics are not an object".into(),
        ));
    };
    Ok(Metric {
        id: r.try_get(0).map_err(corrupt)?,
        job_id: r.try_get(1).map_err(corrupt)?,
        epoch: r.try_get(2).map_err(corrupt)?,
        step: r.try_get(3).map_err(corrupt)?,
        loss: r.try_get(4).map_err(corrupt)?,
        accuracy: r.try_get(5).map_err(corrupt)?,
        metrics,
        created_at: r.try_get(7).map_err(corrupt)?,
        attempt: u32::try_from(r.try_get::<_, i32>(8).map_err(corrupt)?).map_err(corrupt)?,
    })
}

pub(super) fn points(rows: &[Row]) -> Result<Vec<Metric>, DbError> {
    rows.iter().map(point).collect()
}

/// A page of a job's points in the requested order, or a downsampled view
/// of the whole history when `max_points` is set. Within one job, ids are
/// in commit order: points are only written under the job's row lock.
pub(super) async fn list(
    c: &impl GenericClient,
    job_id: Uuid,
    f: &MetricFilter,
) -> Result<Vec<Metric>, DbError> {
    let after = f.after_id.unwrap_or(0);
    let table = MetricTable::of(f.system);
    if let Some(max) = f.max_points {
        return downsample(c, table, job_id, after, max as usize, f.order).await;
    }
    let dir = match f.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM {} WHERE job_id = $1 AND id > $2 ORDER BY id {dir} LIMIT $3",
            table.name
        ))
        .await
        .map_err(fail)?;
    points(
        &c.query(&stmt, &[&job_id, &after, &f.limit])
            .await
            .map_err(fail)?,
    )
}

async fn downsample(
    c: &impl GenericClient,
    table: MetricTable,
    job_id: Uuid,
    after: i64,
    max: usize,
    order: Order,
) -> Result<Vec<Metric>, DbError> {
    let series = read_series(c, table, job_id, after).await?;
    let ids = pick_extremes(&series, max);
    let dir = match order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM {} WHERE id = ANY($1) ORDER BY id {dir}",
            table.name
        ))
        .await
        .map_err(fail)?;
    points(&c.query(&stmt, &[&ids]).await.map_err(fail)?)
}

/// `(id, value)` of a job's main series after `after`, ascending: what
/// downsampling works on.
async fn read_series(
    c: &impl GenericClient,
    table: MetricTable,
    job_id: Uuid,
    after: i64,
) -> Result<Vec<(i64, f64)>, DbError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT id, ({})::float8 FROM {} WHERE job_id = $1 AND id > $2 ORDER BY id ASC",
            table.series, table.name
        ))
        .await
        .map_err(fail)?;
    c.query(&stmt, &[&job_id, &after])
        .await
        .map_err(fail)?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(corrupt)?,
                r.try_get(1).map_err(corrupt)?,
            ))
        })
        .collect()
}

/// The whole main series of a job's training points or, with `system`, of
/// its GPU telemetry (see [`read_series`]).
pub(super) async fn series(
    c: &impl GenericClient,
    job_id: Uuid,
    system: bool,
) -> Result<Vec<(i64, f64)>, DbError> {
    read_series(c, MetricTable::of(system), job_id, 0).await
}

/// Deletes a job's points in `ranges` (training points, or with `system`
/// its GPU telemetry) in one statement; how many went.
pub(super) async fn delete_ranges(
    c: &impl GenericClient,
    job_id: Uuid,
    system: bool,
    ranges: &[crate::db::IdRange],
) -> Result<u64, DbError> {
    if ranges.is_empty() {
        return Ok(0);
    }
    let stmt = c
        .prepare_cached(&format!(
            "DELETE FROM {} AS m USING unnest($2::int8[], $3::int8[]) AS r(lo, hi) \
             WHERE m.job_id = $1 AND m.id BETWEEN r.lo AND r.hi",
            MetricTable::of(system).name
        ))
        .await
        .map_err(fail)?;
    let firsts: Vec<i64> = ranges.iter().map(|r| r.first).collect();
    let lasts: Vec<i64> = ranges.iter().map(|r| r.last).collect();
    c.execute(&stmt, &[&job_id, &firsts, &lasts])
        .await
        .map_err(fail)
}
