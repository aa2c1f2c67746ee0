//! The scheduler: launches `pending` jobs in FIFO order while fewer than
//! `--max-concurrent-jobs` are running, and tells the runner to stop the
//! trainers of cancelled jobs.
//!
//! It is driven by the committed-change events of [`crate::events`], plus a
//! one-second tick that re-checks everything, so a missed event (a lagging
//! subscriber) only delays work, never loses it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use uuid::Uuid;

use super::env::{self, Contract};
use super::{LaunchSpec, Runner, RunnerError};
use crate::db::jobs::JobRecord;
use crate::events::Event;
use crate::jobs::Jobs;
use crate::model::JobStatus;
use crate::storage::Store;

/// Where trainers find the daemon and their outputs.
pub trait ContractSource: Send + Sync {
    /// The contract values for job `id`.
    fn contract(&self, id: Uuid) -> Contract;
}

/// The contract from the daemon's address and its object store.
pub struct StoreContract {
    /// `BACKEND_BASE_URL`.
    pub base_url: String,
    /// The object store (`OUTPUT_S3_URI`, S3 settings for trainers).
    pub store: Arc<Store>,
}

impl ContractSource for StoreContract {
    fn contract(&self, id: Uuid) -> Contract {
        Contract {
            base_url: self.base_url.clone(),
            output_uri: self.store.output_uri(id),
            storage_env: self.store.trainer_env(),
        }
    }
}

/// Launch policy and the parts it drives.
pub struct Scheduler {
    jobs: Arc<Jobs>,
    runner: Arc<dyn Runner>,
    contract: Arc<dyn ContractSource>,
    /// 0 means unlimited.
    max_concurrent: usize,
    /// After an environment failure, launching pauses until then.
    paused_until: Option<Instant>,
    /// `--hold-jobs`: launch nothing.
    hold: bool,
}

impl Scheduler {
    /// A scheduler launching through `runner`.
    pub fn new(
        jobs: Arc<Jobs>,
        runner: Arc<dyn Runner>,
        contract: Arc<dyn ContractSource>,
        max_concurrent: usize,
    ) -> Self {
        Self {
            jobs,
            runner,
            contract,
            max_concurrent,
            paused_until: None,
            hold: false,
        }
    }

    /// With `hold`, pending jobs are accepted but never launched.
    pub fn hold(mut self, hold: bool) -> Self {
        self.hold = hold;
        self
    }

    /// Reconciles what the runner left running, then schedules until
    /// `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut events = self.jobs.events().subscribe();
        self.reconcile().await;
        self.fill().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(Event::Job(job)) => {
                        if job.status == JobStatus::Cancelled {
                            self.cancel(job.id).await;
                        }
                        if job.status == JobStatus::Pending || job.status.is_terminal() {
                            self.fill().await;
                        }
                    }
                    Ok(Event::Metric(_)) => {}
                    Err(RecvError::Lagged(_)) => self.resync().await,
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => self.resync().await,
                _ = stop.changed() => break,
            }
        }
    }

    async fn reconcile(&self) {
        let running = match self.jobs.in_status(JobStatus::Running, i64::MAX).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list running jobs to re-adopt");
                return;
            }
        };
        let mine: Vec<JobRecord> = running
            .into_iter()
            .filter(|r| r.job.runner.as_deref() == Some(self.runner.name()))
            .collect();
        if !mine.is_empty() {
            tracing::info!(
                jobs = mine.len(),
                "reconciling jobs that were running before the restart"
            );
        }
        if let Err(e) = self.runner.reconcile(mine).await {
            tracing::error!(error = %e, "reconciling running jobs failed");
        }
        match self.jobs.ended_unsettled(self.runner.name()).await {
            Ok(ended) if !ended.is_empty() => self.runner.reap(ended).await,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot list ended jobs to reap"),
        }
    }

    /// Stops trainers of cancelled jobs the runner still watches, then fills free slots.
    async fn resync(&mut self) {
        for id in self.runner.active() {
            if let Ok(rec) = self.jobs.record(id).await {
                if rec.job.status == JobStatus::Cancelled {
                    self.cancel_record(&rec).await;
                }
            }
        }
        self.fill().await;
    }

    async fn cancel(&self, id: Uuid) {
        if let Ok(rec) = self.jobs.record(id).await {
            if rec.job.runner.as_deref() == Some(self.runner.name()) {
                self.cancel_record(&rec).await;
            }
        }
    }

    async fn cancel_record(&self, rec: &JobRecord) {
        if let Err(e) = self.runner.cancel(rec).await {
            tracing::error!(job_id = %rec.job.id, error = %e, "cannot stop the trainer of a cancelled job");
        }
    }

    /// Launches pending jobs, oldest first, while slots are free.
    async fn fill(&mut self) {
        if self.hold || self.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        loop {
            let free = if self.max_concurrent == 0 {
                64
            } else {
                match self.jobs.count_running().await {
                    Ok(n) => self.max_concurrent.saturating_sub(n),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot count running jobs");
                        return;
                    }
                }
            };
            if free == 0 {
                return;
            }
            let pending = match self.jobs.in_status(JobStatus::Pending, free as i64).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list pending jobs");
                    return;
                }
            };
            if pending.is_empty() {
                return;
            }
            for rec in pending {
                if !self.launch(rec).await {
                    return;
                }
            }
        }
    }

    /// Launches one job; returns false when launching should pause.
    async fn launch(&mut self, rec: JobRecord) -> bool {
        let id = rec.job.id;
        let Some(trainer) = self.jobs.registry().get(&rec.job.framework).cloned() else {
            self.jobs
                .fail_by_runner(
                    id,
                    format!(
                        "framework {:?} is not registered any more; registered frameworks: {}",
                        rec.job.framework,
                        self.jobs.registry().names().join(", ")
                    ),
                )
                .await;
            return true;
        };
        let (env, secret_keys) = env::build(
            &rec.job,
            &rec.callback_token,
            &trainer,
            &self.contract.contract(id),
        );
        let spec = LaunchSpec {
            job: rec.job.clone(),
            trainer,
            env,
            secret_keys,
        };
        match self.runner.launch(spec).await {
            Ok(state) => match self.jobs.mark_launched(id, self.runner.name(), state).await {
                Ok(job) if job.status == JobStatus::Cancelled => {
                    // Cancelled while it was being launched.
                    self.cancel(id).await;
                    true
                }
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(job_id = %id, error = %e, "cannot record the launch");
                    true
                }
            },
            Err(RunnerError::Start(reason)) => {
                tracing::warn!(job_id = %id, %reason, "trainer could not be started");
                self.jobs.fail_by_runner(id, reason).await;
                true
            }
            Err(RunnerError::Environment(reason)) => {
                tracing::error!(job_id = %id, %reason, "cannot launch; retrying in 5 s");
                self.paused_until = Some(Instant::now() + Duration::from_secs(5));
                false
            }
        }
    }
}
