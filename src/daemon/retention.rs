//! The automatic retention policy (`--retention-days`,
//! `--artifact-retention-days`): a background task that runs the
//! configured prunes once shortly after start-up (when start-up's own
//! work has settled) and then every `--retention-interval`. With replicas,
//! only the leader prunes: every replica has the flags, and whichever
//! leads when a run is due does it. A run in progress when leadership
//! moves is harmless: each job's writes check it has ended and only ever
//! shrink what it keeps, so two replicas overlapping do the same work.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::RetentionPolicy;
use crate::jobs::{JobError, Jobs};
use crate::leader::Leadership;

/// The first run waits this long after start-up (or one interval, when
/// that is shorter).
const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);

/// Runs `policy` until `shutdown`; returns at once when it is off.
pub(super) async fn run(
    jobs: Arc<Jobs>,
    policy: RetentionPolicy,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    if policy.requests().next().is_none() {
        return;
    }
    tracing::info!(
        history_days = policy.history.as_ref().map(|r| r.older_than_days),
        artifact_days = policy.artifacts.as_ref().map(|r| r.older_than_days),
        every_s = policy.every.as_secs_f64(),
        "retention policy on"
    );
    let mut wait = FIRST_RUN_AFTER.min(policy.every);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = policy.every;
        if !leadership.current().is_leading() {
            tracing::debug!("retention policy: another replica leads and prunes");
            continue;
        }
        for req in policy.requests() {
            // Each run logs what it did (`jobs/retention.rs`).
            match jobs.prune(req, "policy", &shutdown).await {
                Ok(_) => {}
                Err(JobError::PruneRunning) => {
                    tracing::info!(
                        "retention policy: a prune is already running; skipping this run"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention policy: the prune failed; it runs again at the next interval")
                }
            }
        }
    }
}
