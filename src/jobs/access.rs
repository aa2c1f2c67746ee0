//! Who may do what to a job: the one place the ownership rule lives.
//!
//! A job's owner is its `user_id`: with a user token it is set from the
//! token (a member cannot submit as someone else; an admin may submit on
//! behalf of anyone). Admins may change every job, members only their own.
//! Reads stay open to everyone who may call the API at all. The checks run
//! inside the job's write, so a refused request changes nothing, and the
//! request's audit entry is stored in the same transaction as the change.

use std::sync::Arc;

use super::sched::{check_priority, prioritizing};
use super::{cancelling, JobError, Jobs};
use crate::events::Event;
use crate::model::{labels, AuditEntry, CreateJob, Job, JobRecord, Principal, UpdateJob};

/// Makes `actor` the owner of the job `req` asks for: fills in a missing
/// `user_id` from the token; refuses a member's `user_id` that names
/// someone else. An anonymous caller (no auth) keeps the seed's rule: the
/// `user_id` it sent.
pub fn claim(actor: &Principal, req: &mut CreateJob) -> Result<(), JobError> {
    let Some(me) = actor.user.as_deref() else {
        return Ok(());
    };
    if req.user_id.is_empty() {
        req.user_id = me.to_string();
    } else if req.user_id != me && !actor.is_admin() {
        return Err(JobError::Forbidden(format!(
            "you are signed in as {me:?} and may submit jobs only as yourself, not as {:?}: leave user_id out or set it to {me:?}",
            req.user_id
        )));
    }
    Ok(())
}

/// Whether `actor` may change `job` (cancel it, change its priority):
/// admins any, members their own; the refusal names the owner.
pub fn may_change(actor: &Principal, job: &Job) -> Result<(), JobError> {
    match actor.user.as_deref() {
        _ if actor.is_admin() => Ok(()),
        Some(me) if me == job.user_id => Ok(()),
        _ => Err(JobError::Forbidden(format!(
            "job {} belongs to {:?}; members may change only their own jobs (ask {:?} or an admin)",
            job.id, job.user_id, job.user_id
        ))),
    }
}

impl Jobs {
    /// [`Jobs::create`] on behalf of `actor` ([`claim`]), recording `audit`
    /// in the same transaction as the new job.
    pub async fn create_as(
        &self,
        actor: &Principal,
        mut req: CreateJob,
        audit: Option<AuditEntry>,
    ) -> Result<Job, JobError> {
        claim(actor, &mut req)?;
        let rec = self.draft(req).await?;
        self.insert(rec, audit).await
    }

    /// [`Jobs::draft`] on behalf of `actor` (dry runs).
    pub async fn draft_as(
        &self,
        actor: &Principal,
        mut req: CreateJob,
    ) -> Result<JobRecord, JobError> {
        claim(actor, &mut req)?;
        self.draft(req).await
    }

    /// Cancels job `id` for `actor` if [`may_change`] allows it, recording
    /// `audit` in the same transaction.
    pub async fn cancel_as(
        &self,
        id: uuid::Uuid,
        actor: &Principal,
        audit: Option<AuditEntry>,
    ) -> Result<Job, JobError> {
        let actor = actor.clone();
        self.change_recorded(id, audit, move |rec, now| {
            may_change(&actor, &rec.job)?;
            cancelling(rec, now, "cancelled by user")
        })
        .await
    }

    /// Changes job `id` as `update` says for `actor` if [`may_change`]
    /// allows it, recording `audit` in the same transaction. An update
    /// that changes nothing answers the job, to whoever may change it.
    pub async fn update_as(
        &self,
        id: uuid::Uuid,
        actor: &Principal,
        update: UpdateJob,
        audit: Option<AuditEntry>,
    ) -> Result<Job, JobError> {
        if update.priority.is_none() && update.tags.is_none() && update.note.is_none() {
            let job = self.get(id).await?;
            may_change(actor, &job)?;
            return Ok(job);
        }
        if let Some(p) = update.priority {
            check_priority(p)?;
        }
        if let Some(tags) = &update.tags {
            labels::check_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_deref())))?;
        }
        if let Some(n) = &update.note {
            labels::check_note(n)?;
        }
        let actor = actor.clone();
        self.change_recorded(id, audit, move |rec, now| {
            may_change(&actor, &rec.job)?;
            if let Some(p) = update.priority {
                prioritizing(rec, now, p)?;
            }
            if update.tags.is_some() || update.note.is_some() {
                // Tags and notes are a person's, editable in any status.
                labels::apply_patch(
                    &mut rec.job.labels,
                    update.tags.as_ref(),
                    update.note.as_deref(),
                )?;
                rec.job.updated_at = now;
            }
            Ok(())
        })
        .await
    }

    /// Stores a drafted job (with its audit entry) and announces it.
    pub(super) async fn insert(
        &self,
        rec: JobRecord,
        audit: Option<AuditEntry>,
    ) -> Result<Job, JobError> {
        let job = self.db.create_job_audited(rec, audit).await?;
        Ok(self.created(job))
    }

    /// Counts and announces a job just stored.
    pub(super) fn created(&self, job: Job) -> Job {
        metrics::counter!("platform_jobs_created_total").increment(1);
        self.events.publish(Event::Job(Arc::new(job.clone())));
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn who(name: &str, role: Role) -> Principal {
        Principal {
            user: Some(name.into()),
            user_id: None,
            role,
            token: Some("t".into()),
        }
    }

    fn req(user_id: &str) -> CreateJob {
        CreateJob {
            user_id: user_id.into(),
            model_name: "m".into(),
            framework: "demo".into(),
            dataset_s3_uri: "s3://b/d".into(),
            config: None,
            sched: Default::default(),
            labels: Default::default(),
        }
    }

    #[test]
    fn owners_come_from_the_token() {
        let mut r = req("");
        claim(&who("alice", Role::Member), &mut r).unwrap();
        assert_eq!(r.user_id, "alice");
        let mut r = req("alice");
        claim(&who("alice", Role::Member), &mut r).unwrap();
        let err = claim(&who("alice", Role::Member), &mut req("bob")).unwrap_err();
        assert!(matches!(err, JobError::Forbidden(m) if m.contains("\"bob\"")));
        let mut r = req("bob");
        claim(&who("root", Role::Admin), &mut r).unwrap();
        assert_eq!(r.user_id, "bob", "admins submit on behalf of others");
        let mut r = req("anyone");
        claim(&Principal::anonymous(), &mut r).unwrap();
        assert_eq!(r.user_id, "anyone");
    }

    #[test]
    fn members_change_only_their_own_jobs() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::now_v7(), "number": 1, "user_id": "bob", "model_name": "m",
            "framework": "demo", "dataset_s3_uri": "s3://b/d", "status": "running",
            "progress": 0.0, "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
        }))
        .unwrap();
        assert!(may_change(&who("bob", Role::Member), &job).is_ok());
        assert!(may_change(&who("root", Role::Admin), &job).is_ok());
        assert!(may_change(&Principal::anonymous(), &job).is_ok());
        let err = may_change(&who("alice", Role::Member), &job).unwrap_err();
        assert!(err.to_string().contains("belongs to \"bob\""), "{err}");
    }
}
