//! The sweep operations of [`Db`] (issue 19), one `match` per backend like
//! the rest of its methods. A sweep's jobs are ordinary job rows naming it
//! (`sweep_id`); list them with [`Db::jobs`] and a sweep filter.

use uuid::Uuid;

use super::{Db, DbError};
use crate::model::{AuditEntry, Job, JobRecord, SweepRecord};

impl Db {
    /// Stores a sweep and all its jobs in one transaction (all or nothing),
    /// `created_at` stamped at commit; `audit` names the sweep. The jobs
    /// come back numbered, in the order given.
    pub async fn create_sweep(
        &self,
        sweep: SweepRecord,
        jobs: Vec<JobRecord>,
        audit: Option<AuditEntry>,
    ) -> Result<(SweepRecord, Vec<Job>), DbError> {
        match self {
            Db::Sqlite(s) => s.create_sweep(sweep, jobs, audit).await,
            Db::Postgres(p) => p.create_sweep(sweep, jobs, audit).await,
        }
    }

    /// One sweep.
    pub async fn sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, DbError> {
        match self {
            Db::Sqlite(s) => s.sweep(id).await,
            Db::Postgres(p) => p.sweep(id).await,
        }
    }

    /// A page of sweeps, newest first; only `user_id`'s when given.
    pub async fn sweeps(
        &self,
        user_id: Option<String>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SweepRecord>, DbError> {
        match self {
            Db::Sqlite(s) => s.sweeps(user_id, limit, offset).await,
            Db::Postgres(p) => p.sweeps(user_id, limit, offset).await,
        }
    }
}
