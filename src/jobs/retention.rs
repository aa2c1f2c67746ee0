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
//! previous one committed, so callbacks queued meanwhile go first. Files
//! go from the store before the job is marked, so a failure there leaves
//! the job to the next run. Afterwards, SQLite gives the freed pages back
//! to the file system in bounded steps (incremental vacuum).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobError, Jobs};
use crate::db::{self, CandidateQuery, IdRange, PruneCandidate, PruneMark, PruneStep, Reclaim};
use crate::model::{PrunePlan, PruneReport, PruneRequest};

/// Most points one write deletes: a callback queued behind a prune's write
/// waits for at most this much work.
pub const BATCH_POINTS: u64 = 5_000;
/// Candidate jobs read at a time.
const PAGE: i64 = 200;
/// Free pages one vacuum write gives back (4 MiB at SQLite's 4 KiB pages).
const VACUUM_PAGES: u32 = 1_000;
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
            // Whatever queued behind this write runs before the next one.
            tokio::task::yield_now().await;
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
            tokio::task::yield_now().await;
        }
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
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jobs::testing::Service;
    use crate::model::{JobStatus, MetricQuery, MetricsRetention};

    /// A job that ran and reported `n` points (loss falling, one spike),
    /// then ended with `status`.
    async fn ran(svc: &Service, n: usize, status: &str) -> Uuid {
        let id = svc.create("m").await.id;
        let update = |v| serde_json::from_value(v).unwrap();
        svc.jobs
            .callback(id, update(json!({"status": "running"})))
            .await
            .unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
            let points: Vec<_> = chunk
                .iter()
                .map(|i| json!({"epoch": i, "loss": if *i == n / 3 { 50.0 } else { 1.0 / (1.0 + *i as f64) }}))
                .collect();
            let batch = serde_json::from_value(json!({ "points": points })).unwrap();
            svc.jobs.ingest(id, batch).await.unwrap();
        }
        if status != "running" {
            svc.jobs
                .callback(id, update(json!({"status": status})))
                .await
                .unwrap();
        }
        id
    }

    async fn losses(svc: &Service, id: Uuid) -> Vec<f64> {
        let q = MetricQuery {
            limit: Some(10_000),
            order: Some("asc".into()),
            ..MetricQuery::default()
        };
        let points = svc.jobs.metrics(id, q.validate().unwrap()).await.unwrap();
        points.iter().filter_map(|p| p.loss).collect()
    }

    fn request(metrics: MetricsRetention, max_points: Option<u32>) -> PruneRequest {
        PruneRequest {
            older_than_days: 0.0,
            metrics,
            max_points,
            logs: true,
            artifacts: false,
            dry_run: false,
        }
    }

    #[tokio::test]
    async fn old_histories_keep_their_shape_and_live_jobs_stay_whole() {
        let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
        let old = ran(&svc, 3_000, "completed").await;
        let failed = ran(&svc, 50, "failed").await;
        let live = ran(&svc, 2_000, "running").await;
        let whole = losses(&svc, old).await;
        let stop = CancellationToken::new();
        let down = request(MetricsRetention::Downsample, Some(100));

        let dry = PruneRequest {
            dry_run: true,
            ..down.clone()
        };
        let r = svc.jobs.prune(&dry, "test", &stop).await.unwrap();
        assert_eq!((r.jobs, r.points_deleted), (1, 2_900), "{r:?}");
        assert_eq!(losses(&svc, old).await, whole, "a dry run changes nothing");
        assert!(svc.jobs.get(old).await.unwrap().pruned.is_none());

        let r = svc.jobs.prune(&down, "test", &stop).await.unwrap();
        assert_eq!((r.jobs, r.points_deleted), (1, 2_900), "{r:?}");
        assert!(!r.interrupted && r.errors.is_empty());
        let kept = losses(&svc, old).await;
        assert_eq!(kept.len(), 100);
        assert_eq!(
            (kept[0], kept[99]),
            (whole[0], whole[2_999]),
            "first and last"
        );
        assert!(kept.contains(&50.0), "the spike survives");
        let mark = svc.jobs.get(old).await.unwrap().pruned.unwrap();
        assert_eq!(
            (mark.max_points, mark.logs, mark.artifacts),
            (Some(100), true, false)
        );
        // Short histories lose nothing but are marked; live jobs are untouched.
        assert_eq!(losses(&svc, failed).await.len(), 50);
        assert!(svc.jobs.get(failed).await.unwrap().pruned.is_some());
        assert_eq!(losses(&svc, live).await.len(), 2_000);
        let live_job = svc.jobs.get(live).await.unwrap();
        assert_eq!(
            (live_job.status, live_job.pruned),
            (JobStatus::Running, None)
        );

        let again = svc.jobs.prune(&down, "test", &stop).await.unwrap();
        assert_eq!(
            (again.jobs, again.points_deleted),
            (0, 0),
            "a second prune is a no-op"
        );
        let all = svc
            .jobs
            .prune(&request(MetricsRetention::Delete, None), "test", &stop)
            .await
            .unwrap();
        assert_eq!((all.jobs, all.points_deleted), (2, 150));
        assert!(losses(&svc, old).await.is_empty());
        assert_eq!(
            svc.jobs.get(old).await.unwrap().pruned.unwrap().max_points,
            Some(0)
        );
        let wider = svc.jobs.prune(&down, "test", &stop).await.unwrap();
        assert_eq!(wider.jobs, 0, "a deleted history is not downsampled again");
        svc.close().await;
    }

    #[tokio::test]
    async fn a_stopped_prune_leaves_the_rest_for_the_next_run() {
        let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
        let old = ran(&svc, 20, "completed").await;
        let stop = CancellationToken::new();
        stop.cancel();
        let req = request(MetricsRetention::Delete, None);
        let r = svc.jobs.prune(&req, "test", &stop).await.unwrap();
        assert!(r.interrupted && r.jobs == 0, "{r:?}");
        assert_eq!(losses(&svc, old).await.len(), 20);
        let r = svc
            .jobs
            .prune(&req, "test", &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!((r.jobs, r.points_deleted, r.interrupted), (1, 20, false));
        svc.close().await;
    }

    #[tokio::test]
    async fn gpu_telemetry_is_pruned_with_the_training_points() {
        let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
        let id = ran(&svc, 300, "running").await;
        for i in 0..250 {
            let util = f64::from(i % 100);
            let m = [("system/gpu0/utilization".to_string(), json!(util))];
            svc.jobs
                .record_system_metrics(id, m.into_iter().collect(), util)
                .await
                .unwrap();
        }
        let update = serde_json::from_value(json!({"status": "completed"})).unwrap();
        svc.jobs.callback(id, update).await.unwrap();
        let system = |svc: &Service| {
            let q = MetricQuery {
                limit: Some(10_000),
                system: Some(true),
                ..MetricQuery::default()
            };
            let jobs = svc.jobs.clone();
            async move { jobs.metrics(id, q.validate().unwrap()).await.unwrap().len() }
        };
        assert_eq!(system(&svc).await, 250);
        let down = request(MetricsRetention::Downsample, Some(20));
        let r = svc
            .jobs
            .prune(&down, "test", &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            (r.points_deleted, r.system_points_deleted),
            (280, 230),
            "{r:?}"
        );
        assert_eq!(system(&svc).await, 20);
        assert_eq!(losses(&svc, id).await.len(), 20);
        svc.close().await;
    }

    #[tokio::test]
    async fn candidates_are_paged_through_to_the_last() {
        let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
        let n = PAGE as usize + 5;
        for _ in 0..n {
            ran(&svc, 3, "cancelled").await;
        }
        let req = request(MetricsRetention::Delete, None);
        let r = svc
            .jobs
            .prune(&req, "test", &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            (r.jobs, r.points_deleted),
            (n as u64, 3 * n as u64),
            "{r:?}"
        );
        svc.close().await;
    }

    #[tokio::test]
    async fn jobs_within_the_artifact_grace_are_left_alone() {
        let svc = Service::start().await;
        let old = ran(&svc, 20, "completed").await;
        let req = request(MetricsRetention::Delete, None);
        let r = svc
            .jobs
            .prune(&req, "test", &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.jobs, 0, "{r:?}");
        assert_eq!(losses(&svc, old).await.len(), 20);
        svc.close().await;
    }

    fn range(first: i64, count: u64) -> IdRange {
        IdRange {
            first,
            last: first + count as i64 - 1,
            count,
        }
    }

    #[test]
    fn batches_hold_at_most_a_batch_of_points() {
        let training = vec![range(1, 3_000), range(5_000, 3_000), range(9_000, 10)];
        let system = vec![range(1, 1_990), range(3_000, 5_000)];
        let steps = batches(training, system);
        let sizes: Vec<u64> = steps
            .iter()
            .map(|s| count(&s.metrics) + count(&s.system))
            .collect();
        assert_eq!(sizes, vec![3_000, 5_000, 5_000]);
        assert!(steps.iter().all(|s| s.mark.is_none()));
        assert!(batches(Vec::new(), Vec::new()).is_empty());
    }
}
