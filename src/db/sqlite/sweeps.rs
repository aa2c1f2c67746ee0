//! The `sweeps` table on SQLite, and a sweep's create: the sweep row and
//! every job row in one write.

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::{insert_job, Sqlite};
use crate::db::{now, parse_ts, ts, DbError};
use crate::model::{AuditEntry, Job, JobRecord, SweepRecord};

fn corrupt(e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(e.to_string())
}

fn from_row(r: &Row<'_>) -> Result<SweepRecord, DbError> {
    Ok(SweepRecord {
        id: Uuid::parse_str(&r.get::<_, String>(0)?).map_err(corrupt)?,
        user_id: r.get(1)?,
        created_at: parse_ts(&r.get::<_, String>(2)?)?,
        spec: serde_json::from_str(&r.get::<_, String>(3)?).map_err(corrupt)?,
    })
}

fn insert(c: &Connection, s: &SweepRecord) -> Result<(), DbError> {
    let spec = serde_json::to_string(&s.spec).map_err(corrupt)?;
    c.prepare_cached("INSERT INTO sweeps (id, user_id, created_at, spec) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            s.id.to_string(),
            s.user_id,
            ts(&s.created_at),
            spec
        ])?;
    Ok(())
}

impl Sqlite {
    pub(in crate::db) async fn create_sweep(
        &self,
        mut sweep: SweepRecord,
        jobs: Vec<JobRecord>,
        audit: Option<AuditEntry>,
    ) -> Result<(SweepRecord, Vec<Job>), DbError> {
        self.writer
            .write(move |c| {
                sweep.created_at = now();
                insert(c, &sweep)?;
                let mut out = Vec::with_capacity(jobs.len());
                for rec in jobs {
                    out.push(insert_job(c, rec, None)?);
                }
                if let Some(mut a) = audit {
                    (a.at, a.target) = (sweep.created_at, Some(sweep.id.to_string()));
                    super::users::insert_audit(c, &a)?;
                }
                Ok(Ok((sweep, out)))
            })
            .await
    }

    pub(in crate::db) async fn sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, DbError> {
        self.read(move |c| {
            c.prepare_cached("SELECT id, user_id, created_at, spec FROM sweeps WHERE id = ?1")?
                .query_row([id.to_string()], |r| Ok(from_row(r)))
                .optional()?
                .transpose()
        })
        .await
    }

    pub(in crate::db) async fn sweeps(
        &self,
        user_id: Option<String>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SweepRecord>, DbError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, user_id, created_at, spec FROM sweeps \
                 WHERE ?1 IS NULL OR user_id = ?1 \
                 ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let mut rows = stmt.query(params![user_id, limit, offset])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(from_row(r)?);
            }
            Ok(out)
        })
        .await
    }
}
