//! Callback tokens: minted per launch (so per attempt), stored only as
//! their hash, checked on every trainer call, and cached for live jobs so
//! the hot path skips a read.

use std::sync::Arc;

use uuid::Uuid;

use super::{JobError, Jobs};
use crate::db::{Changes, Modified};
use crate::secrets::{hash_token, new_token, token_matches};

impl Jobs {
    /// Mints the callback token for launching job `id`: a fresh one per
    /// launch, of which only the hash is stored (before the trainer starts,
    /// so its first callback is already accepted). The token itself goes
    /// only into the trainer's environment. Refused for a job that ended.
    pub async fn issue_token(&self, id: Uuid) -> Result<String, JobError> {
        self.store_token(id, new_token()).await
    }

    /// Makes `token` job `id`'s callback token: the token a trainer already
    /// holds when a launch adopts the Kubernetes Job (and Secret) of an
    /// earlier launch that was never recorded (its leader died first), so
    /// that trainer's calls are accepted.
    pub async fn adopt_token(&self, id: Uuid, token: String) -> Result<(), JobError> {
        self.store_token(id, token).await.map(|_| ())
    }

    async fn store_token(&self, id: Uuid, token: String) -> Result<String, JobError> {
        let hash = hash_token(&token);
        let stored = hash.clone();
        let modified = self
            .db
            .modify_job(id, move |rec, _| {
                if rec.job.status.is_terminal() {
                    return Err(JobError::Finished {
                        id,
                        status: rec.job.status,
                    });
                }
                rec.token_hash = Some(stored);
                // Each attempt's trainer counts its `sequence` from the start.
                rec.last_sequence = None;
                Ok(Changes::job())
            })
            .await?;
        match modified {
            Modified::Stored { .. } => {
                self.remember_token(id, hash.into());
                Ok(token)
            }
            _ => Err(JobError::NotFound(id)),
        }
    }

    /// Checks a trainer's bearer token for `id` (404 for unknown jobs).
    pub async fn authorize(&self, id: Uuid, bearer: Option<&str>) -> Result<(), JobError> {
        let hash = match self.cached_token(id) {
            Some(h) => Some(h),
            None => {
                let rec = self.record(id).await?;
                let h: Option<Arc<str>> = rec.token_hash.map(Arc::from);
                if let (Some(h), false) = (&h, rec.job.status.is_terminal()) {
                    self.remember_token(id, h.clone());
                }
                h
            }
        };
        if !self.cfg.callback_auth {
            return Ok(());
        }
        // A job that was never launched has no token: nothing opens it.
        let ok = matches!((bearer, hash), (Some(b), Some(h)) if token_matches(b, &h));
        if ok {
            Ok(())
        } else {
            Err(JobError::Unauthorized(id))
        }
    }

    fn cached_token(&self, id: Uuid) -> Option<Arc<str>> {
        self.tokens.read().ok()?.get(&id).cloned()
    }

    pub(super) fn remember_token(&self, id: Uuid, token: Arc<str>) {
        if let Ok(mut t) = self.tokens.write() {
            t.insert(id, token);
        }
    }

    pub(super) fn forget_token(&self, id: Uuid) {
        if let Ok(mut t) = self.tokens.write() {
            t.remove(&id);
        }
        if let Ok(mut b) = self.beats.lock() {
            b.remove(&id);
        }
    }
}
