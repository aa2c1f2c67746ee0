//! The `sweeps` table on PostgreSQL, and a sweep's create: the sweep row
//! and every job row in one transaction of its own beside the batching
//! writer (as keyed creates do), so a sweep is stored whole or not at all
//! and its jobs' numbers follow the order given.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::accounts::{AuditColumns, INSERT_AUDIT};
use super::round_trips::{Columns, INSERT_JOBS};
use super::{col, corrupt, fail, rows, text, Postgres};
use crate::db::DbError;
use crate::model::{AuditEntry, Job, JobRecord, SweepRecord};

fn from_row(r: &Row) -> Result<SweepRecord, DbError> {
    let spec: serde_json::Value = col(r, 3)?;
    Ok(SweepRecord {
        id: col(r, 0)?,
        user_id: col(r, 1)?,
        created_at: col(r, 2)?,
        spec: serde_json::from_value(spec).map_err(corrupt)?,
    })
}

impl Postgres {
    pub(in crate::db) async fn create_sweep(
        &self,
        mut sweep: SweepRecord,
        mut jobs: Vec<JobRecord>,
        audit: Option<AuditEntry>,
    ) -> Result<(SweepRecord, Vec<Job>), DbError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(fail)?;
        let now: DateTime<Utc> = tx
            .query_one("SELECT clock_timestamp()", &[])
            .await
            .map_err(fail)?
            .try_get(0)
            .map_err(corrupt)?;
        sweep.created_at = now;
        let spec = serde_json::to_value(&sweep.spec).map_err(corrupt)?;
        tx.execute(
            "INSERT INTO sweeps (id, user_id, created_at, spec) VALUES ($1, $2, $3, $4)",
            &[&sweep.id, &text(&sweep.user_id), &now, &spec],
        )
        .await
        .map_err(fail)?;
        let mut cols = Columns::default();
        for rec in &mut jobs {
            (rec.job.created_at, rec.job.updated_at) = (now, now);
            cols.push(rec, true);
        }
        let insert = tx.prepare_cached(INSERT_JOBS).await.map_err(fail)?;
        let numbered = tx.query(&insert, &cols.insert_args()).await.map_err(fail)?;
        let mut numbers = std::collections::HashMap::with_capacity(numbered.len());
        for row in &numbered {
            let id: Uuid = row.try_get(0).map_err(corrupt)?;
            numbers.insert(id, row.try_get::<_, i64>(1).map_err(corrupt)?);
        }
        for rec in &mut jobs {
            rec.job.number = numbers.get(&rec.job.id).copied().unwrap_or_default();
        }
        if let Some(mut a) = audit {
            (a.at, a.target) = (now, Some(sweep.id.to_string()));
            let mut cols = AuditColumns::default();
            cols.push(&a);
            let insert = tx.prepare_cached(INSERT_AUDIT).await.map_err(fail)?;
            tx.execute(&insert, &cols.args()).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok((sweep, jobs.into_iter().map(|r| r.job).collect()))
    }

    pub(in crate::db) async fn sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, DbError> {
        let c = self.client().await?;
        let sql = "SELECT id, user_id, created_at, spec FROM sweeps WHERE id = $1";
        Ok(rows(&c, sql, &[&id], from_row).await?.pop())
    }

    pub(in crate::db) async fn sweeps(
        &self,
        user_id: Option<String>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SweepRecord>, DbError> {
        let c = self.client().await?;
        let user = user_id.map(|u| text(&u));
        let sql = "SELECT id, user_id, created_at, spec FROM sweeps \
                   WHERE $1::text IS NULL OR user_id = $1 \
                   ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3";
        rows(&c, sql, &[&user, &limit, &offset], from_row).await
    }
}
