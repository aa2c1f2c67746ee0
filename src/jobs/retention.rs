//! Retention (issue 17): `platform prune` and the automatic policy remove
//! the metric history, archived logs and (only when asked) artifacts of
//! jobs that ended long ago, so the database does not grow for ever. The
//! job rows stay; each records what went ([`crate::model::Pruned`]), so a
//! second prune skips it and `job get` says so.
//!
//! A prune never holds up callbacks: candidates and the points to delete
//! are found with reads; each write deletes at most [`BATCH_POINTS`]
//! points of one job through the normal writer (on SQLite, the same
//! queue callbacks use), and the next write is queued only after the
//! previous one committed and a pause as long as it took ([`pace`]), so
//! callbacks queued meanwhile go first and a prune takes at most about
//! half the writer's time (less when callbacks keep the writer busy, since
//! waiting for it counts). Files go from the store before the job is
//! marked, so a failure there leaves the job to the next run. Afterwards,
//! SQLite gives the freed pages back to the file system in small paced
//! steps (incremental vacuum: moving pages is the costly part).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobError, Jobs};
use crate::db::{self, CandidateQuery, IdRange, PruneCandidate, PruneMark, PruneStep, Reclaim};
use crate::model::{PrunePlan, PruneReport, PruneRequest};

/// Most points one write deletes: a callback queued behind a prune's write
/// waits for at most this much work.
pub const BATCH_POINTS: u64 = 2_000;
/// Candidate jobs read at a time.
const PAGE: i64 = 200;
/// Free pages one vacuum write gives back (512 KiB at SQLite's 4 KiB
/// pages; each moved page rewrites its parent too).
const VACUUM_PAGES: u32 = 128;
/// The longest pause between two writes of a prune.
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// Failures listed in a report (all are logged).
const MAX_ERRORS: usize = 20;

impl Jobs {
    /// Prunes the jobs that ended before `req`'s cut-off (and before the
    /// artifact grace, while trainers may still upload and logs are being
    /// archived), one at a time, oldest end first, then gives disk space
    /// back. `trigger` (`api`, `policy`) labels the log line and counters.
    /// Stops between writes once `stop` is cancelled: what was done stays
    /// done, and the report says it was interrupted. One prune runs at a
    /// time ([`JobError::PruneRunning`] otherwise).
    pub async fn prune(
        &self,
        req: &PruneRequest,
        trigger: &'static str,
        stop: &CancellationToken,
    ) -> Result<PruneReport, JobError> {
        let started = Instant::now();
        let now = db::now();
        let mut plan = req.validate(now)?;
        let grace =
            chrono::Duration::from_std(self.cfg.artifact_grace).unwrap_or(chrono::Duration::MAX);
        if let Some(settled) = now.checked_sub_signed(grace) {
            plan.cutoff = plan.cutoff.min(settled);
        }
        let Ok(_running) = self.pruning.try_lock() else {
            return Err(JobError::PruneRunning);
        };
        let mut report = PruneReport {
            dry_run: plan.dry_run,
            cutoff: plan.cutoff,
            reclaimed_bytes: Some(0),
            ..PruneReport::default()
        };
        let outcome = self.prune_all(&plan, stop, &mut report).await;
        if outcome.is_ok() && !plan.dry_run && !report.interrupted {
            report.reclaimed_bytes = self.reclaim(stop, &report).await;
        }
        report.seconds = started.elapsed().as_secs_f64();
        record(trigger, &report, outcome.as_ref().err());
        outcome.map(|()| report)
    }

    /// Every candidate, page by page.
    async fn prune_all(
        &self,
        plan: &PrunePlan,
        stop: &CancellationToken,
        report: &mut PruneReport,
    ) -> Result<(), JobError> {
        if !plan.removes_anything() {
            return Ok(());
        }
        let mut after = None;
        loop {
            let page = self
                .db
                .prune_candidates(CandidateQuery {
                    cutoff: plan.cutoff,
                    keep_points: plan.keep_points,
                    logs: plan.logs,
                    artifacts: plan.artifacts,
                    after,
                    limit: PAGE,
                })
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some((last.completed_at, last.id));
            let full = page.len() as i64 == PAGE;
            for job in page {
                if stop.is_cancelled() {
                    report.interrupted = true;
                    return Ok(());
                }
                self.prune_job(plan, &job, stop, report).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// One job: files first, then its points in bounded writes, the last
    /// of which marks it. Only database failures end the run; the store's
    /// are noted, and the job keeps what it could not lose for the next
    /// run.
    async fn prune_job(
        &self,
        plan: &PrunePlan,
        job: &PruneCandidate,
        stop: &CancellationToken,
        report: &mut PruneReport,
    ) -> Result<(), JobError> {
        let id = job.id;
        let before = job.pruned.as_ref();
        // A history already cut to this size or smaller stays as it is.
        let keep = plan
            .keep_points
            .filter(|k| before.and_then(|p| p.max_points).is_none_or(|m| m > *k));
        let (training, system) = match keep {
            Some(k) => (
                self.db.points_to_prune(id, false, k, BATCH_POINTS).await?,
                self.db.points_to_prune(id, true, k, BATCH_POINTS).await?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let logs = plan.logs && !before.is_some_and(|p| p.logs);
        let artifacts = plan.artifacts && !before.is_some_and(|p| p.artifacts);
        let files = self
            .prune_files(id, logs, artifacts, plan.dry_run, report)
            .await;
        let points = count(&training) + count(&system);
        if points > 0 || files.removed {
            report.jobs += 1;
        }
        if plan.dry_run {
            report.points_deleted += count(&training);
            report.system_points_deleted += count(&system);
            return Ok(());
        }
        let mark = PruneMark {
            max_points: keep,
            logs: logs && files.logs,
            artifacts: artifacts && files.artifacts,
        };
        let marked = mark.max_points.is_some() || mark.logs || mark.artifacts;
        let mut steps = batches(training, system);
        match (steps.last_mut(), marked) {
            (Some(last), true) => last.mark = Some(mark),
            (None, true) => steps.push(PruneStep {
                mark: Some(mark),
                ..PruneStep::default()
            }),
            _ => {}
        }
        for step in steps {
            if stop.is_cancelled() {
                // Unmarked: the next run plans this job again.
                report.interrupted = true;
                return Ok(());
            }
            let started = Instant::now();
            let done = self.db.prune_step(id, step).await?;
            report.points_deleted += done.points;
            report.system_points_deleted += done.system_points;
            metrics::counter!("platform_retention_points_deleted_total", "table" => "metrics")
                .increment(done.points);
            metrics::counter!("platform_retention_points_deleted_total", "table" => "system_metrics")
                .increment(done.system_points);
            if let Some(job) = done.job {
                self.announce(Arc::new(job), Vec::new());
            }
            pace(started, stop).await;
        }
        Ok(())
    }

    /// Deletes (or, in a dry run, measures) a job's archived log and
    /// artifacts; says which are gone now.
    async fn prune_files(
        &self,
        id: Uuid,
        logs: bool,
        artifacts: bool,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> FilesGone {
        let mut gone = FilesGone::default();
        if logs {
            let found = if dry_run {
                self.store.log_size(id).await
            } else {
                self.store.delete_log(id).await
            };
            match found {
                Ok(size) => {
                    gone.logs = true;
                    if let Some(bytes) = size {
                        gone.removed = true;
                        report.logs_deleted += 1;
                        report.log_bytes += bytes;
                    }
                }
                Err(e) => note(report, id, "its archived log", &e),
            }
        }
        if artifacts {
            let found = if dry_run {
                self.store.artifacts(id).await.map(|files| {
                    let bytes = files.iter().map(|f| f.size).sum();
                    (files.len() as u64, bytes)
                })
            } else {
                self.store.delete_artifacts(id).await
            };
            match found {
                Ok((objects, bytes)) => {
                    gone.artifacts = true;
                    gone.removed |= objects > 0;
                    report.artifacts_deleted += objects;
                    report.artifact_bytes += bytes;
                }
                Err(e) => note(report, id, "its artifacts", &e),
            }
        }
        gone
    }

    /// Gives the freed space back in bounded writes: bytes returned to the
    /// file system (0 on PostgreSQL, where autovacuum does it), or `None`
    /// for a SQLite file that cannot (created without auto-vacuum).
    async fn reclaim(&self, stop: &CancellationToken, report: &PruneReport) -> Option<u64> {
        let mut total = 0;
        loop {
            let started = Instant::now();
            match self.db.reclaim_space(VACUUM_PAGES).await {
                Ok(Reclaim::Automatic) => return Some(total),
                Ok(Reclaim::Unavailable) => {
                    if report.points_deleted + report.system_points_deleted > 0 {
                        tracing::warn!("the SQLite file was created without auto-vacuum, so the space pruned points held is reused but not given back to the file system; stop the daemon and run `platform db vacuum` once");
                    }
                    return None;
                }
                Ok(Reclaim::Freed { bytes, pages_left }) => {
                    total += bytes;
                    if pages_left == 0 || bytes == 0 || stop.is_cancelled() {
                        return Some(total);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot give the database's free pages back to the file system");
                    return Some(total);
                }
            }
            pace(started, stop).await;
        }
    }
}

/// Waits as long as the write begun at `started` took (at most
/// [`MAX_PAUSE`], and not once `stop` is cancelled): what queued behind it
/// runs first, and a busy writer slows the prune down by itself.
async fn pace(started: Instant, stop: &CancellationToken) {
    let pause = started.elapsed().min(MAX_PAUSE);
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.cancelled() => {}
    }
}

/// Which of a job's files a prune is done with.
#[derive(Debug, Default)]
struct FilesGone {
    /// Its archived log is gone (or never existed).
    logs: bool,
    /// Its artifacts are gone (or never existed).
    artifacts: bool,
    /// Something was (or would be) deleted.
    removed: bool,
}

fn count(ranges: &[IdRange]) -> u64 {
    ranges.iter().map(|r| r.count).sum()
}

/// A job's deletions as writes of at most [`BATCH_POINTS`] points (each
/// range holds at most that many), training points first.
fn batches(training: Vec<IdRange>, system: Vec<IdRange>) -> Vec<PruneStep> {
    let mut steps: Vec<PruneStep> = Vec::new();
    let mut size = 0;
    let tagged = training
        .into_iter()
        .map(|r| (false, r))
        .chain(system.into_iter().map(|r| (true, r)));
    for (is_system, r) in tagged {
        if steps.is_empty() || size + r.count > BATCH_POINTS {
            steps.push(PruneStep::default());
            size = 0;
        }
        size += r.count;
        if let Some(step) = steps.last_mut() {
            if is_system {
                step.system.push(r);
            } else {
                step.metrics.push(r);
            }
        }
    }
    steps
}

/// Notes a store failure on a job: logged, and listed in the report.
fn note(report: &mut PruneReport, id: Uuid, what: &str, e: &crate::storage::StoreError) {
    tracing::warn!(job_id = %id, error = %e, "retention cannot delete {what}; the next run tries again");
    if report.errors.len() < MAX_ERRORS {
        report
            .errors
            .push(format!("job {id}: cannot delete {what}: {e}"));
    }
}

/// The run's log line and counters.
fn record(trigger: &'static str, r: &PruneReport, failed: Option<&JobError>) {
    let outcome = match (failed, r.interrupted) {
        (Some(_), _) => "error",
        (None, true) => "interrupted",
        (None, false) => "ok",
    };
    metrics::counter!("platform_retention_runs_total", "trigger" => trigger, "outcome" => outcome)
        .increment(1);
    if !r.dry_run {
        metrics::counter!("platform_retention_jobs_total").increment(r.jobs);
        for (kind, bytes) in [
            ("logs", r.log_bytes),
            ("artifacts", r.artifact_bytes),
            ("database", r.reclaimed_bytes.unwrap_or(0)),
        ] {
            metrics::counter!("platform_retention_bytes_total", "kind" => kind).increment(bytes);
        }
    }
    match failed {
        Some(e) => tracing::error!(
            trigger,
            dry_run = r.dry_run,
            jobs = r.jobs,
            points = r.points_deleted,
            error = %e,
            "prune failed; what it removed before stays removed"
        ),
        None => tracing::info!(
            trigger,
            dry_run = r.dry_run,
            cutoff = %r.cutoff,
            jobs = r.jobs,
            points = r.points_deleted,
            system_points = r.system_points_deleted,
            logs = r.logs_deleted,
            log_bytes = r.log_bytes,
            artifacts = r.artifacts_deleted,
            artifact_bytes = r.artifact_bytes,
            reclaimed_bytes = r.reclaimed_bytes,
            errors = r.errors.len(),
            interrupted = r.interrupted,
            seconds = r.seconds,
            "prune finished"
        ),
    }
}

#[cfg(test)]
mod tests;
