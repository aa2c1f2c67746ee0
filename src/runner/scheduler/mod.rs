//! The scheduler: launches `pending` jobs in FIFO order while fewer than
//! `--max-concurrent-jobs` slots are taken, and tells the runner to stop
//! the trainers of cancelled jobs (at once) and of jobs whose trainer
//! reported its end but keeps running (after the kill grace).
//!
//! A slot is taken by each `running` job, each trainer the runner still
//! watches (whatever its job's status: a trainer that reported `completed`
//! and keeps running still uses its GPU), and each launch in flight, each
//! counted once. A launch that fails for the job's own reason fails that
//! job; one that fails for the environment's is retried with a backoff of
//! its own ([`super::retry`]); neither holds up the jobs behind it.
//!
//! It is driven by the committed-change events of [`crate::events`], plus a
//! one-second tick that re-checks everything, so a missed event (a lagging
//! subscriber) only delays work, never loses it.
//!
//! Every launch and every stop runs in its own task: a runner call that
//! takes seconds (a slow API server, a trainer slow to start) never holds
//! up other launches or a cancel. Launches in flight count against the
//! limit like running jobs, and shutdown waits for them, so a trainer is
//! never started without its job being marked `running`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::retry::{self, Backoffs, Verdict};
use super::{Runner, RunnerError, SpecBuilder};
use crate::events::Event;
use crate::jobs::{JobError, Jobs};
use crate::model::{JobRecord, JobStatus};

/// How a task the scheduler started ended.
enum Done {
    /// A launch finished (started, failed to start, or found the job gone).
    Launch(Uuid, Launched),
    /// A stop request was handed to the runner.
    Stop,
}

enum Launched {
    /// Launched, failed for good, or nothing to launch.
    Settled,
    /// The runner's environment failed the job's launch (`failures` times
    /// so far): the job waits `pause` before its next try.
    Retry { failures: u32, pause: Duration },
}

/// Launch policy and the parts it drives.
pub struct Scheduler {
    jobs: Arc<Jobs>,
    runner: Arc<dyn Runner>,
    specs: Arc<SpecBuilder>,
    /// 0 means unlimited.
    max_concurrent: usize,
    /// Jobs whose launch failed for the environment, waiting to retry.
    backoffs: Backoffs,
    /// `--hold-jobs`: launch nothing.
    hold: bool,
    /// Jobs whose launch is in flight (still `pending` in the database).
    launching: HashSet<Uuid>,
    tasks: JoinSet<Done>,
}

impl Scheduler {
    /// A scheduler launching through `runner`.
    pub fn new(
        jobs: Arc<Jobs>,
        runner: Arc<dyn Runner>,
        specs: Arc<SpecBuilder>,
        max_concurrent: usize,
    ) -> Self {
        Self {
            jobs,
            runner,
            specs,
            max_concurrent,
            backoffs: Backoffs::default(),
            hold: false,
            launching: HashSet::new(),
            tasks: JoinSet::new(),
        }
    }

    /// With `hold`, pending jobs are accepted but never launched.
    pub fn hold(mut self, hold: bool) -> Self {
        self.hold = hold;
        self
    }

    /// Reconciles what the runner left running, then schedules until
    /// `stop` is cancelled; then waits for launches in flight.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut events = self.jobs.subscribe();
        self.reconcile().await;
        self.fill().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(Event::Job(job)) => {
                        if job.status.is_terminal() {
                            self.backoffs.forget(job.id);
                            // A cancel always reaches the runner (the trainer
                            // may be launching); a reported end only matters
                            // while the trainer still runs.
                            if job.status == JobStatus::Cancelled
                                || self.runner.active().contains(&job.id)
                            {
                                self.stop(job.id);
                            }
                        }
                        if job.status == JobStatus::Pending || job.status.is_terminal() {
                            self.fill().await;
                        }
                    }
                    Ok(Event::Metric(_)) => {}
                    Err(RecvError::Lagged(_)) => self.resync().await,
                    Err(RecvError::Closed) => break,
                },
                Some(done) = self.tasks.join_next() => {
                    self.settle(done);
                    self.fill().await;
                }
                _ = tick.tick() => self.resync().await,
                _ = stop.cancelled() => break,
            }
        }
        // A launch cut short could leave a trainer running for a job still
        // marked pending, which the next daemon would launch again.
        while let Some(done) = self.tasks.join_next().await {
            self.settle(done);
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

    /// Stops trainers of ended jobs the runner still watches, forgets
    /// retries of jobs no longer pending, then fills free slots.
    async fn resync(&mut self) {
        for id in self.runner.active() {
            if let Ok(rec) = self.jobs.record(id).await {
                if rec.job.status.is_terminal() {
                    self.stop_record(rec);
                }
            }
        }
        for id in self.backoffs.ids() {
            match self.jobs.get(id).await {
                Ok(job) if job.status == JobStatus::Pending => {}
                Ok(_) | Err(JobError::NotFound(_)) => self.backoffs.forget(id),
                Err(_) => {}
            }
        }
        self.fill().await;
    }

    /// Stops the trainer of ended job `id`, in its own task.
    fn stop(&mut self, id: Uuid) {
        let (jobs, runner) = (self.jobs.clone(), self.runner.clone());
        self.tasks.spawn(async move {
            if let Ok(rec) = jobs.record(id).await {
                if rec.job.runner.as_deref() == Some(runner.name()) {
                    stop_trainer(runner.as_ref(), &rec).await;
                }
            }
            Done::Stop
        });
    }

    fn stop_record(&mut self, rec: JobRecord) {
        let runner = self.runner.clone();
        self.tasks.spawn(async move {
            stop_trainer(runner.as_ref(), &rec).await;
            Done::Stop
        });
    }

    fn settle(&mut self, done: Result<Done, tokio::task::JoinError>) {
        match done {
            Ok(Done::Launch(id, outcome)) => {
                self.launching.remove(&id);
                match outcome {
                    Launched::Settled => self.backoffs.forget(id),
                    Launched::Retry { failures, pause } => self.backoffs.wait(id, failures, pause),
                }
            }
            Ok(Done::Stop) => {}
            // A panicking task lost its id; the next resync recounts from
            // the database, which the launch set only adds to.
            Err(e) => tracing::error!(error = %e, "a scheduler task failed"),
        }
    }

    /// Starts launches of pending jobs, oldest first, while slots are
    /// free; jobs waiting out a retry pause are passed over.
    async fn fill(&mut self) {
        if self.hold {
            return;
        }
        let free = if self.max_concurrent == 0 {
            64
        } else {
            match self.slots_taken().await {
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
        let wanted = (free + self.launching.len() + self.backoffs.len()) as i64;
        let pending = match self.jobs.in_status(JobStatus::Pending, wanted).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot list pending jobs");
                return;
            }
        };
        let now = Instant::now();
        let fresh: Vec<JobRecord> = pending
            .into_iter()
            .filter(|r| !self.launching.contains(&r.job.id))
            .filter(|r| !self.backoffs.pausing(r.job.id, now))
            .take(free)
            .collect();
        for rec in fresh {
            self.launch(rec);
        }
    }

    /// Slots taken: `running` jobs, trainers the runner watches (a job may
    /// have ended before its trainer did) and launches in flight, each once.
    async fn slots_taken(&self) -> Result<usize, JobError> {
        let running = self.jobs.count_running().await?;
        let at_least = running + self.launching.len();
        if at_least >= self.max_concurrent {
            return Ok(at_least);
        }
        let mut taken: HashSet<Uuid> = self.jobs.running_ids().await?.into_iter().collect();
        taken.extend(self.runner.active());
        taken.extend(self.launching.iter().copied());
        Ok(taken.len())
    }

    /// Starts launching one job in its own task.
    fn launch(&mut self, rec: JobRecord) {
        let id = rec.job.id;
        self.launching.insert(id);
        let failures = self.backoffs.failures(id);
        let (jobs, runner, specs) = (self.jobs.clone(), self.runner.clone(), self.specs.clone());
        self.tasks.spawn(async move {
            let outcome = launch(&jobs, runner.as_ref(), &specs, rec, failures).await;
            Done::Launch(id, outcome)
        });
    }
}

/// Mints the job's token, starts its trainer and records the launch;
/// `failures` is how many earlier tries the environment failed.
async fn launch(
    jobs: &Jobs,
    runner: &dyn Runner,
    specs: &SpecBuilder,
    rec: JobRecord,
    failures: u32,
) -> Launched {
    let id = rec.job.id;
    let token = match jobs.issue_token(id).await {
        Ok(t) => t,
        // Cancelled meanwhile (or the database is closing): nothing to start.
        Err(e) => {
            tracing::info!(job_id = %id, error = %e, "not launching");
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

/// Stops the trainer of an ended job: at once when it was cancelled,
/// after the runner's grace when it reported its own end.
async fn stop_trainer(runner: &dyn Runner, rec: &JobRecord) {
    if rec.job.status != JobStatus::Cancelled {
        runner.ended(rec).await;
    } else if let Err(e) = runner.cancel(rec).await {
        tracing::error!(job_id = %rec.job.id, error = %e, "cannot stop the trainer of a cancelled job");
    }
}

#[cfg(test)]
mod tests;
