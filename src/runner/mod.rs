//! Runners launch trainers and keep the database true about them.
//!
//! [`Runner`] is the one interface: launch, cancel, logs, reconcile on
//! start. [`subprocess`] runs trainers as local processes; the Kubernetes
//! runner implements the same trait. The [`scheduler`] decides *when* to
//! launch (FIFO under the concurrency limit) and reacts to cancels; runners
//! only report facts (launched, exited, vanished) back through
//! [`crate::jobs::Jobs`], which owns the lifecycle rules.

pub mod env;
pub mod logfile;
pub mod scheduler;
pub mod subprocess;
pub mod supervisor;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::db::jobs::JobRecord;
use crate::model::Job;
use crate::trainers::Trainer;

/// A stream of log bytes.
pub type LogStream = BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// Everything a runner needs to start one trainer.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The job.
    pub job: Job,
    /// How to run its framework.
    pub trainer: Trainer,
    /// The trainer's complete environment (SPEC §4 contract + base + entry env).
    pub env: BTreeMap<String, String>,
    /// Which of `env`'s variables are secrets (Kubernetes puts them in a Secret).
    pub secret_keys: BTreeSet<String>,
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
    /// The trainer could not be started; the job fails with this reason.
    #[error("{0}")]
    Start(String),
    /// The runner's environment is broken (I/O, API server unreachable, …).
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

    /// Stops the job's trainer (gracefully, then forcibly). Idempotent.
    async fn cancel(&self, job: &JobRecord) -> Result<(), RunnerError>;

    /// The job's trainer output, or `None` when this runner has none.
    async fn logs(
        &self,
        job: &JobRecord,
        opts: LogOptions,
    ) -> Result<Option<LogStream>, RunnerError>;

    /// After a daemon start: re-adopt the trainers of these `running` jobs
    /// that are still alive and settle the ones that are not.
    async fn reconcile(&self, running: Vec<JobRecord>) -> Result<(), RunnerError>;

    /// Ids of jobs whose trainers this runner is watching.
    fn active(&self) -> Vec<Uuid>;

    /// The daemon is stopping: stop watching, and with `stop_jobs` cancel
    /// every trainer (waiting for them to end).
    async fn shutdown(&self, stop_jobs: bool);
}
