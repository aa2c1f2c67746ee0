//! Queue counts and pauses (`queue_state`) on PostgreSQL.

use deadpool_postgres::GenericClient;

use super::{corrupt, fail};
use crate::db::DbError;
use crate::model::JobStatus;

/// Pending and running jobs per queue: `(queue, status, count)`.
pub(super) async fn count_by_queue(
    c: &impl GenericClient,
) -> Result<Vec<(String, JobStatus, i64)>, DbError> {
    let stmt = c
        .prepare_cached(
            "SELECT queue, status, COUNT(*) FROM jobs WHERE status IN ('pending', 'running') \
             GROUP BY queue, status",
        )
        .await
        .map_err(fail)?;
    c.query(&stmt, &[])
        .await
        .map_err(fail)?
        .iter()
        .map(|r| {
            let status: String = r.try_get(1).map_err(corrupt)?;
            Ok((
                r.try_get(0).map_err(corrupt)?,
                status.parse::<JobStatus>().map_err(corrupt)?,
                r.try_get(2).map_err(corrupt)?,
            ))
        })
        .collect()
}

/// The paused queues, by name.
pub(super) async fn paused(c: &impl GenericClient) -> Result<Vec<String>, DbError> {
    let stmt = c
        .prepare_cached("SELECT name FROM queue_state WHERE paused ORDER BY name")
        .await
        .map_err(fail)?;
    c.query(&stmt, &[])
        .await
        .map_err(fail)?
        .iter()
        .map(|r| r.try_get(0).map_err(corrupt))
        .collect()
}

/// Pauses or resumes queue `name` (one statement: committed when it returns).
pub(super) async fn set_paused(
    c: &impl GenericClient,
    name: &str,
    paused: bool,
) -> Result<(), DbError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO queue_state (name, paused, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, \
             updated_at = excluded.updated_at",
        )
        .await
        .map_err(fail)?;
    c.execute(&stmt, &[&name, &paused]).await.map_err(fail)?;
    Ok(())
}
