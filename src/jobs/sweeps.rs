//! Sweeps: creating one (every job through the normal create checks, all
//! stored in one transaction), reading them under the ownership rule (a
//! member sees only their own sweeps; admins all), and cancelling the
//! rest of one.

use uuid::Uuid;

use super::access::claim;
use super::{JobError, Jobs};
use crate::model::sweep::SweepMethod;
use crate::model::{AuditEntry, CreateSweep, Job, JobFilter, Principal, Sweep, SweepRecord};

/// Sweeps a list page holds by default, and at most.
pub const DEFAULT_SWEEP_LIMIT: i64 = 20;
/// Largest sweep list page.
pub const MAX_SWEEP_LIMIT: i64 = 100;

impl Jobs {
    /// Expands `req` and stores the sweep with all its jobs, or nothing:
    /// each job passes the checks of a single create (as `actor`), and
    /// gets the base config with its combination merged in, its name and
    /// the sweep's id.
    pub async fn create_sweep(
        &self,
        actor: &Principal,
        mut req: CreateSweep,
        audit: Option<AuditEntry>,
    ) -> Result<Sweep, JobError> {
        claim(actor, &mut req.job)?;
        if req.spec.method == SweepMethod::Random && req.spec.seed.is_none() {
            // Kept with the sweep, so the search can be repeated.
            req.spec.seed = Some(u64::from(rand::random::<u32>()));
        }
        let combos = req.spec.expand()?;
        let sweep_id = Uuid::now_v7();
        // The checks that read the registry, queues and store run once:
        // the jobs differ only in config and name.
        let base = self.draft(req.job.clone()).await?;
        let mut recs = Vec::with_capacity(combos.len());
        for c in &combos {
            let mut one = req.job.clone();
            one.config = Some(c.apply(req.job.stored_config()));
            one.labels.name = Some(c.name.clone());
            one.validate()?;
            let mut rec = base.clone();
            rec.job.id = Uuid::now_v7();
            rec.job.config = one.config;
            rec.job.labels = one.labels.stored(Some(sweep_id));
            recs.push(rec);
        }
        let sweep = SweepRecord {
            id: sweep_id,
            user_id: req.job.user_id.clone(),
            created_at: crate::db::now(),
            spec: req.spec,
        };
        let (sweep, jobs) = self.db.create_sweep(sweep, recs, audit).await?;
        let jobs = jobs.into_iter().map(|j| self.created(j)).collect();
        Ok(Sweep::new(sweep, jobs, true))
    }

    /// Sweep `id` with its jobs, if `actor` may see it.
    pub async fn sweep_as(&self, actor: &Principal, id: Uuid) -> Result<Sweep, JobError> {
        let sweep = self.visible_sweep(actor, id).await?;
        let jobs = self.sweep_jobs(id).await?;
        Ok(Sweep::new(sweep, jobs, true))
    }

    /// A page of the sweeps `actor` may see, newest first, with counts.
    pub async fn sweeps_as(
        &self,
        actor: &Principal,
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> Result<Vec<Sweep>, JobError> {
        let limit = limit.unwrap_or(DEFAULT_SWEEP_LIMIT);
        if !(1..=MAX_SWEEP_LIMIT).contains(&limit) {
            return Err(crate::model::ValidationError::new(
                "limit",
                format!("must be between 1 and {MAX_SWEEP_LIMIT}"),
            )
            .into());
        }
        let offset = offset.unwrap_or(0);
        if offset < 0 {
            return Err(crate::model::ValidationError::new("offset", "must be 0 or more").into());
        }
        let mine = (!actor.is_admin()).then(|| actor.user.clone().unwrap_or_default());
        let mut out = Vec::new();
        for s in self.db.sweeps(mine, limit, offset).await? {
            let jobs = self.sweep_jobs(s.id).await?;
            out.push(Sweep::new(s, jobs, false));
        }
        Ok(out)
    }

    /// Cancels every job of sweep `id` that has not ended; the sweep after.
    pub async fn cancel_sweep_as(&self, actor: &Principal, id: Uuid) -> Result<Sweep, JobError> {
        let sweep = self.visible_sweep(actor, id).await?;
        for job in self.sweep_jobs(id).await? {
            if job.status.is_terminal() {
                continue;
            }
            match self.cancel(job.id, "cancelled with its sweep").await {
                // It ended meanwhile: nothing left to cancel.
                Ok(_) | Err(JobError::NotCancellable { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Sweep::new(sweep, self.sweep_jobs(id).await?, true))
    }

    /// The sweep, or not found for a member who does not own it (a
    /// member's list never shows it either).
    async fn visible_sweep(&self, actor: &Principal, id: Uuid) -> Result<SweepRecord, JobError> {
        match self.db.sweep(id).await? {
            Some(s) if actor.may_manage(&s.user_id) => Ok(s),
            _ => Err(JobError::NoSuchSweep(id)),
        }
    }

    async fn sweep_jobs(&self, id: Uuid) -> Result<Vec<Job>, JobError> {
        let filter = JobFilter {
            user_id: None,
            status: None,
            id_prefix: None,
            number: None,
            queue: None,
            sweep_id: Some(id),
            tags: Vec::new(),
            limit: crate::model::job::MAX_JOB_LIMIT,
            offset: 0,
        };
        Ok(self.db.jobs(filter).await?)
    }
}
