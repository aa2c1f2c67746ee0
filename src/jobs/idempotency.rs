//! Idempotent creates (`Idempotency-Key`, IETF httpapi draft): the same key
//! with the same body within the key's lifetime answers the original job
//! and creates nothing; with another body it is refused (422); while the
//! first request with a key is still being handled, a second one is told
//! so (409) instead of waiting or racing it.
//!
//! Keys are scoped per user: each authenticated user (the operator's
//! `PLATFORM_API_TOKEN` counts as `admin`) has their own, and an open
//! daemon's anonymous callers share one scope.
//!
//! The database makes the check, the insert and the request's audit entry
//! one transaction under a unique index, so two creates can never both
//! store a job; the in-flight set only turns "another request is mid-way"
//! into a clear answer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{access, JobError, Jobs};
use crate::db::{self, Created, IdempotencyClaim};
use crate::model::idempotency::canonical_body;
use crate::model::{AuditEntry, CreateJob, Job, Principal};
use crate::secrets::hash_token;

/// What an idempotent create answered.
#[derive(Debug)]
pub struct Submitted {
    /// The job, as its create answered it.
    pub job: Job,
    /// Whether this is a replay of an earlier create (nothing was stored).
    pub replayed: bool,
}

/// Keys of creates being handled right now: `(owner, key)`.
#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<HashSet<(String, String)>>);

/// A key held in the in-flight set from the moment its request arrived
/// (before its body is read) until dropped.
#[derive(Debug)]
pub struct KeyHold {
    set: Arc<InFlight>,
    owner: String,
    key: String,
}

impl InFlight {
    fn hold(self: &Arc<Self>, owner: String, key: String) -> Option<KeyHold> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert((owner.clone(), key.clone())).then(|| KeyHold {
            set: self.clone(),
            owner,
            key,
        })
    }
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&(
            std::mem::take(&mut self.owner),
            std::mem::take(&mut self.key),
        ));
    }
}

/// Whose keys `actor`'s are: their user name; anonymous callers of an
/// open daemon share the empty scope (the only one before users existed).
fn key_owner(actor: &Principal) -> String {
    actor.user.clone().unwrap_or_default()
}

impl Jobs {
    /// Marks `actor`'s create with `key` as being handled; refused while
    /// another request of theirs with the key is.
    pub fn hold_key(&self, actor: &Principal, key: String) -> Result<KeyHold, JobError> {
        self.in_flight
            .hold(key_owner(actor), key)
            .ok_or(JobError::KeyInFlight)
    }

    /// [`Jobs::create_as`] under an idempotency key (see the module
    /// comment): `actor` must be allowed to submit `req` ([`access::claim`])
    /// even for a replay; a new job is stored with `audit` in one write, a
    /// replay records `audit` for the job it answers.
    pub async fn create_once(
        &self,
        actor: &Principal,
        mut req: CreateJob,
        hold: KeyHold,
        audit: Option<AuditEntry>,
    ) -> Result<Submitted, JobError> {
        access::claim(actor, &mut req)?;
        let claim = IdempotencyClaim {
            owner: hold.owner.clone(),
            key: hold.key.clone(),
            fingerprint: hash_token(&canonical_body(&req)),
            since: self.keys_valid_since(),
        };
        // A retry is answered from the database alone, before the checks
        // (a dataset that has gone since must not fail the replay).
        if let Some(found) = self.db.idempotent_job(claim.clone()).await? {
            return self.replay(found, audit).await;
        }
        let rec = self.draft(req).await?;
        match self.db.create_job_once(rec, claim, audit.clone()).await? {
            Created::New(job) => Ok(Submitted {
                job: self.created(job),
                replayed: false,
            }),
            found => self.replay(found, audit).await,
        }
    }

    /// The answer for a key a job holds already; a replay's audit entry
    /// names the job it answered.
    async fn replay(
        &self,
        found: Created,
        audit: Option<AuditEntry>,
    ) -> Result<Submitted, JobError> {
        let answer = replay(found)?;
        if let Some(mut entry) = audit {
            entry.target = Some(answer.job.id.to_string());
            self.db.record_audit(entry).await?;
        }
        Ok(answer)
    }

    fn keys_valid_since(&self) -> chrono::DateTime<chrono::Utc> {
        let ttl = chrono::Duration::from_std(self.cfg.idempotency_ttl)
            .unwrap_or_else(|_| chrono::Duration::days(1));
        db::now() - ttl
    }
}

fn replay(found: Created) -> Result<Submitted, JobError> {
    match found {
        Created::Existing {
            job,
            same_request: true,
        } => Ok(Submitted {
            job: job.as_created(),
            replayed: true,
        }),
        Created::Existing { job, .. } => Err(JobError::KeyReused(job.id)),
        Created::New(job) => Ok(Submitted {
            job,
            replayed: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_once_until_released() {
        let set = Arc::new(InFlight::default());
        let first = set.hold("alice".into(), "k".into());
        assert!(first.is_some());
        assert!(set.hold("alice".into(), "k".into()).is_none());
        assert!(set.hold("alice".into(), "other".into()).is_some());
        assert!(
            set.hold("bob".into(), "k".into()).is_some(),
            "keys are per user"
        );
        drop(first);
        assert!(set.hold("alice".into(), "k".into()).is_some());
    }
}
