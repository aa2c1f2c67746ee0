//! Retention on PostgreSQL: old ended jobs with work left, the points a
//! prune deletes, and the job's mark.
//!
//! A step runs beside the batching writer, in a short transaction of its
//! own on a pooled connection: the points of an ended job are never
//! written again (no callback or batch is accepted once it ended), so
//! deleting them contends with nothing, and the mark's `UPDATE` locks the
//! one job row only for that transaction. Space comes back by itself:
//! autovacuum makes the deleted rows' space reusable.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{corrupt, fail, jobs, metrics, Postgres};
use crate::db::columns::pruned;
use crate::db::downsample::{deletions, IdRange};
use crate::db::prune::{CandidateQuery, PruneCandidate, PruneStep, StepDone};
use crate::db::DbError;

/// 0001-01-01, where the first page of candidates starts.
fn first_day() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or_default()
}

impl Postgres {
    pub(in crate::db) async fn prune_candidates(
        &self,
        q: CandidateQuery,
    ) -> Result<Vec<PruneCandidate>, DbError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, completed_at, pruned_at, pruned_max_points, logs_pruned, \
                        artifacts_pruned \
                   FROM jobs \
                  WHERE completed_at IS NOT NULL AND completed_at < $1 \
                    AND status IN ('completed', 'failed', 'cancelled') \
                    AND (completed_at, id) > ($2, $3) \
                    AND (($4::int4 IS NOT NULL \
                          AND (pruned_max_points IS NULL OR pruned_max_points > $4)) \
                         OR ($5 AND NOT logs_pruned) OR ($6 AND NOT artifacts_pruned)) \
                  ORDER BY completed_at, id LIMIT $7",
            )
            .await
            .map_err(fail)?;
        // Before any job's end: one index range, page after page.
        let (after_t, after_id) = q.after.unwrap_or_else(|| (first_day(), Uuid::nil()));
        let keep = q
            .keep_points
            .map(i32::try_from)
            .transpose()
            .map_err(corrupt)?;
        c.query(
            &stmt,
            &[
                &q.cutoff,
                &after_t,
                &after_id,
                &keep,
                &q.logs,
                &q.artifacts,
                &q.limit,
            ],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| {
            Ok(PruneCandidate {
                id: r.try_get(0).map_err(corrupt)?,
                completed_at: r.try_get(1).map_err(corrupt)?,
                pruned: pruned(
                    r.try_get(2).map_err(corrupt)?,
                    r.try_get::<_, Option<i32>>(3)
                        .map_err(corrupt)?
                        .map(i64::from),
                    r.try_get(4).map_err(corrupt)?,
                    r.try_get(5).map_err(corrupt)?,
                )?,
            })
        })
        .collect()
    }

    pub(in crate::db) async fn points_to_prune(
        &self,
        id: Uuid,
        system: bool,
        keep: u32,
        chunk: u64,
    ) -> Result<Vec<IdRange>, DbError> {
        let series = metrics::series(&self.client().await?, id, system).await?;
        Ok(deletions(&series, keep as usize, chunk))
    }

    pub(in crate::db) async fn prune_step(
        &self,
        id: Uuid,
        step: PruneStep,
    ) -> Result<StepDone, DbError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(fail)?;
        let status: Option<String> = tx
            .query_opt("SELECT status FROM jobs WHERE id = $1", &[&id])
            .await
            .map_err(fail)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(corrupt)?;
        if !status.is_some_and(|s| matches!(s.as_str(), "completed" | "failed" | "cancelled")) {
            return Ok(StepDone::default());
        }
        let points = metrics::delete_ranges(&tx, id, false, &step.metrics).await?;
        let system_points = metrics::delete_ranges(&tx, id, true, &step.system).await?;
        let mut job = None;
        if let Some(m) = step.mark {
            // A new version of the row for the all-jobs feed (`xid`), and
            // `updated_at` only ever moves forward.
            let stmt = tx
                .prepare_cached(
                    "UPDATE jobs SET pruned_at = clock_timestamp(), \
                         updated_at = GREATEST(clock_timestamp(), updated_at), \
                         pruned_max_points = CASE WHEN $2::int4 IS NULL THEN pruned_max_points \
                             ELSE LEAST(COALESCE(pruned_max_points, $2), $2) END, \
                         logs_pruned = logs_pruned OR $3, \
                         artifacts_pruned = artifacts_pruned OR $4, \
                         xid = pg_current_xact_id()::text::bigint \
                     WHERE id = $1",
                )
                .await
                .map_err(fail)?;
            let keep = m
                .max_points
                .map(i32::try_from)
                .transpose()
                .map_err(corrupt)?;
            tx.execute(&stmt, &[&id, &keep, &m.logs, &m.artifacts])
                .await
                .map_err(fail)?;
            job = jobs::get(&tx, id).await?.map(|r| r.job);
        }
        tx.commit().await.map_err(fail)?;
        Ok(StepDone {
            points,
            system_points,
            job,
        })
    }
}
