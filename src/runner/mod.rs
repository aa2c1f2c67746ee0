//! Runners launch trainers and keep the database true about them.
//!
//! [`Runner`] is the one interface: launch, cancel, logs, reconcile on
//! start. [`subprocess`] runs trainers as local processes; the Kubernetes
//! runner implements the same trait. The [`scheduler`] decides *when* to
//! launch (by queue and priority, under the queues' limits) and reacts to
//! cancels and deadlines; runners
//! only report facts (launched, exited, vanished) back through
//! [`crate::jobs::Jobs`], which owns the lifecycle rules.

pub mod env;
#[cfg(test)]
pub(crate) mod fake;
pub mod kubernetes;
pub mod logfile;
pub mod proctree;
mod retry;
pub mod scheduler;
pub mod spec;
pub mod subprocess;
pub mod supervisor;
pub mod telemetry;

use async_trait::async_trait;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::model::{JobRecord, LaunchPlan, ProcessPlan};

pub use spec::{LaunchSpec, SpecBuilder, SpecError, MASKED};

/// A stream of log bytes.
pub type LogStream = BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// Copies a finished job's output into the object store, so `job logs`
/// keeps working after the runner's own copy is gone (bounded local files
/// cleaned up, pods garbage-collected, daemon moved). Best effort: a failure
/// is logged, and the job's outcome is unaffected.
pub async fn archive_logs(store: &crate::storage::Store, id: Uuid, logs: LogStream) -> bool {
    match store.archive_log_stream(id, logs, None).await {
        Ok(f) => {
            tracing::info!(job_id = %id, bytes = f.size, uri = %f.uri, "archived the trainer's log");
            true
        }
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "cannot archive the trainer's log");
            false
        }
    }
}

/// Message of jobs cancelled by `--stop-jobs-on-exit` when the daemon stops.
pub const STOPPED_WITH_DAEMON: &str = "cancelled: the daemon stopped (--stop-jobs-on-exit)";

/// Why a dry run could not say what a launch would do.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The job cannot be launched as given (422).
    #[error(transparent)]
    Invalid(#[from] crate::model::ValidationError),
    /// The runner cannot tell.
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

/// How to read a job's logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Keep streaming until the job ends.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// Why a runner operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// This job's trainer cannot be started, and trying again would not
    /// help (its environment is too large, its program is missing, the
    /// cluster rejects its manifest): the job fails with this reason.
    #[error("{0}")]
    Start(String),
    /// The runner's environment is broken (I/O, API server unreachable, …):
    /// the launch may succeed later. The scheduler retries the job with a
    /// backoff, launching other jobs meanwhile (see `retry.rs`).
    #[error("{0}")]
    Environment(String),
}

/// A way of running trainers.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// `subprocess` or `kubernetes`: stored on each job it launches.
    fn name(&self) -> &'static str;

    /// Starts the trainer and returns once it is launched (process spawned,
    /// Kubernetes Job created), with runner-private state to store on the job.
    async fn launch(&self, spec: LaunchSpec) -> Result<Option<String>, RunnerError>;

    /// What [`Runner::launch`] would do with `spec`, secrets masked; the
    /// default describes a local process (this binary's `demo-train` for
    /// the built-in demo).
    async fn plan(&self, spec: &LaunchSpec) -> Result<LaunchPlan, PlanError> {
        let argv = if spec.trainer.command.is_empty() {
            let exe = std::env::current_exe()
                .map_err(|e| RunnerError::Environment(format!("cannot find this binary: {e}")))?;
            vec![exe.display().to_string(), "demo-train".to_string()]
        } else {
            spec.trainer.command.clone()
        };
        Ok(LaunchPlan {
            dry_run: true,
            runner: self.name().to_string(),
            job: spec.job.clone(),
            manifests: Vec::new(),
            process: Some(ProcessPlan {
                argv,
                workdir: spec
                    .trainer
                    .workdir
                    .as_ref()
                    .map(|w| w.display().to_string()),
                env: spec.masked_env(),
            }),
            notes: Vec::new(),
        })
    }

    /// Stops the job's trainer (gracefully, then forcibly). Idempotent.
    async fn cancel(&self, job: &JobRecord) -> Result<(), RunnerError>;

    /// The job ended (its trainer reported `completed` or `failed`) while
    /// this runner still watches its trainer: give the trainer the kill
    /// grace to exit on its own, then stop it, saying so in its log. The
    /// trainer keeps its slot until it is gone (see [`Runner::active`]).
    /// Idempotent. Default: nothing (the trainer is left to end).
    async fn ended(&self, _job: &JobRecord) {}

    /// The job's trainer output, or `None` when this runner has none.
    async fn logs(
        &self,
        job: &JobRecord,
        opts: LogOptions,
    ) -> Result<Option<LogStream>, RunnerError>;

    /// After a daemon start: re-adopt the trainers of these `running` jobs
    /// that are still alive and settle the ones that are not.
    async fn reconcile(&self, running: Vec<JobRecord>) -> Result<(), RunnerError>;

    /// After a daemon start: jobs that ended while their trainer was still
    /// running (cancelled just before the daemon stopped, or reported
    /// `completed` and then the daemon stopped). Stop the trainers of
    /// cancelled ones, and record how the others exit. Default: nothing.
    async fn reap(&self, _ended: Vec<JobRecord>) {}

    /// Ids of jobs whose trainers this runner is watching: launched and
    /// not yet seen to end, whatever the job's status says. Each holds a
    /// slot of `--max-concurrent-jobs`, so a trainer that reported its end
    /// but keeps running never shares its slot with the next job.
    fn active(&self) -> Vec<Uuid>;

    /// The daemon is stopping: stop watching, and with `stop_jobs` cancel
    /// every trainer (waiting for them to end).
    async fn shutdown(&self, stop_jobs: bool);
}
