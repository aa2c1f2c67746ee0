//! One launch, in its own task: record the job's GPUs, mint its token,
//! start its trainer and record the launch; what the runner's answer means
//! for the job (its own failure, or the environment's, retried with a backoff).

use uuid::Uuid;

use super::retry::{self, Verdict};
use super::{stop_trainer, Launched};
use crate::jobs::Jobs;
use crate::model::{AssignedGpu, JobStatus};
use crate::runner::{Runner, RunnerError, SpecBuilder};

/// Mints the job's token, starts its trainer and records the launch;
/// `failures` is how many earlier tries the environment failed.
pub(super) async fn launch(
    jobs: &Jobs,
    runner: &dyn Runner,
    specs: &SpecBuilder,
    id: Uuid,
    failures: u32,
    gpus: Option<Vec<AssignedGpu>>,
) -> Launched {
    if let Some(gpus) = gpus {
        if let Err(e) = jobs.assign_gpus(id, gpus).await {
            tracing::info!(job_id = %id, error = %e, "not launching: cannot record its GPUs");
            return Launched::Settled;
        }
    }
    let token = match jobs.issue_token(id).await {
        Ok(t) => t,
        // Cancelled meanwhile (or the database is closing): nothing to start.
        Err(e) => {
            tracing::info!(job_id = %id, error = %e, "not launching");
            return Launched::Settled;
        }
    };
    let rec = match jobs.record(id).await {
        Ok(rec) if rec.job.status == JobStatus::Pending => rec,
        Ok(_) => return Launched::Settled,
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "cannot read the job to launch");
            return Launched::Settled;
        }
    };
    let spec = match specs.build(&rec, &token) {
        Ok(spec) => spec,
        Err(e) => {
            jobs.fail_by_runner(id, e.to_string()).await;
            return Launched::Settled;
        }
    };
    match runner.launch(spec).await {
        Ok(state) => {
            match jobs.mark_launched(id, runner.name(), state).await {
                // Cancelled while it was being launched.
                Ok(job) if job.status == JobStatus::Cancelled => {
                    if let Ok(rec) = jobs.record(id).await {
                        stop_trainer(runner, &rec).await;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(job_id = %id, error = %e, "cannot record the launch"),
            }
            Launched::Settled
        }
        Err(RunnerError::Start(reason)) => {
            tracing::warn!(job_id = %id, %reason, "trainer could not be started");
            jobs.fail_by_runner(id, reason).await;
            Launched::Settled
        }
        Err(RunnerError::Environment(reason)) => {
            let failures = failures + 1;
            match retry::verdict(failures, &reason) {
                Verdict::Retry { pause, message } => {
                    tracing::error!(job_id = %id, %reason, failures, retry_in_s = pause.as_secs(), "cannot launch; other jobs go ahead");
                    if let Err(e) = jobs.defer_launch(id, message).await {
                        tracing::warn!(job_id = %id, error = %e, "cannot note the launch failure on the job");
                    }
                    Launched::Retry { failures, pause }
                }
                Verdict::GiveUp { error } => {
                    tracing::error!(job_id = %id, %reason, failures, "cannot launch; giving up");
                    jobs.fail_by_runner(id, error).await;
                    Launched::Settled
                }
            }
        }
    }
}
