//! Idempotent creates (`Idempotency-Key`, IETF httpapi draft): the same key
//! with the same body within the key's lifetime answers the original job
//! and creates nothing; with another body it is refused (422); while the
//! first request with a key is still being handled, a second one is told
//! so (409) instead of waiting or racing it.
//!
//! The database makes the check and the insert one transaction under a
//! unique index, so two creates can never both store a job; the in-flight
//! set only turns "another request is mid-way" into a clear answer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{JobError, Jobs};
use crate::db::{self, Created, IdempotencyClaim};
use crate::events::Event;
use crate::model::idempotency::canonical_body;
use crate::model::{CreateJob, Job};
use crate::secrets::hash_token;

/// Whose keys these are until users exist (issue 15): the one principal
/// the API token stands for.
const OWNER: &str = "";

/// What an idempotent create answered.
#[derive(Debug)]
pub struct Submitted {
    /// The job, as its create answered it.
    pub job: Job,
    /// Whether this is a replay of an earlier create (nothing was stored).
    pub replayed: bool,
}

/// Keys of creates being handled right now.
#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<HashSet<String>>);

/// A key held in the in-flight set from the moment its request arrived
/// (before its body is read) until dropped.
#[derive(Debug)]
pub struct KeyHold {
    set: Arc<InFlight>,
    key: String,
}

impl InFlight {
    fn hold(self: &Arc<Self>, key: String) -> Option<KeyHold> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.clone()).then(|| KeyHold {
            set: self.clone(),
            key,
        })
    }
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}

impl Jobs {
    /// Marks a create with `key` as being handled; refused while another
    /// request with the key is.
    pub fn hold_key(&self, key: String) -> Result<KeyHold, JobError> {
        self.in_flight.hold(key).ok_or(JobError::KeyInFlight)
    }

    /// [`Jobs::create`] under an idempotency key (see the module comment).
    pub async fn create_once(&self, req: CreateJob, hold: KeyHold) -> Result<Submitted, JobError> {
        let claim = IdempotencyClaim {
            owner: OWNER.into(),
            key: hold.key.clone(),
            fingerprint: hash_token(&canonical_body(&req)),
            since: self.keys_valid_since(),
        };
        // A retry is answered from the database alone, before the checks
        // (a dataset that has gone since must not fail the replay).
        if let Some(found) = self.db.idempotent_job(claim.clone()).await? {
            return replay(found);
        }
        let rec = self.draft(req).await?;
        match self.db.create_job_once(rec, claim).await? {
            Created::New(job) => {
                metrics::counter!("platform_jobs_created_total").increment(1);
                self.events
                    .publish(Event::Job(std::sync::Arc::new(job.clone())));
                Ok(Submitted {
                    job,
                    replayed: false,
                })
            }
            found => replay(found),
        }
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
        let first = set.hold("k".into());
        assert!(first.is_some());
        assert!(set.hold("k".into()).is_none());
        assert!(set.hold("other".into()).is_some());
        drop(first);
        assert!(set.hold("k".into()).is_some());
    }
}
