//! The scheduler: launches `pending` jobs in FIFO order while fewer than
//! `--max-concurrent-jobs` are running, and tells the runner to stop the
//! trainers of cancelled jobs.
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

use super::{Runner, RunnerError, SpecBuilder};
use crate::events::Event;
use crate::jobs::Jobs;
use crate::model::{JobRecord, JobStatus};

/// How long launching pauses after the runner's environment failed.
const ENVIRONMENT_BACKOFF: Duration = Duration::from_secs(5);

/// How a task the scheduler started ended.
enum Done {
    /// A launch finished (started, failed to start, or found the job gone).
    Launch(Uuid, Launched),
    /// A stop request was handed to the runner.
    Stop,
}

enum Launched {
    Ok,
    /// The runner's environment is broken: pause launching for a while.
    EnvironmentFailed,
}

/// Launch policy and the parts it drives.
pub struct Scheduler {
    jobs: Arc<Jobs>,
    runner: Arc<dyn Runner>,
    specs: Arc<SpecBuilder>,
    /// 0 means unlimited.
    max_concurrent: usize,
    /// After an environment failure, launching pauses until then.
    paused_until: Option<Instant>,
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
            paused_until: None,
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
                        if job.status == JobStatus::Cancelled {
                            self.stop(job.id);
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

    /// Stops trainers of cancelled jobs the runner still watches, then fills free slots.
    async fn resync(&mut self) {
        for id in self.runner.active() {
            if let Ok(rec) = self.jobs.record(id).await {
                if rec.job.status == JobStatus::Cancelled {
                    self.stop_record(rec);
                }
            }
        }
        self.fill().await;
    }

    /// Stops the trainer of cancelled job `id`, in its own task.
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
                if let Launched::EnvironmentFailed = outcome {
                    self.paused_until = Some(Instant::now() + ENVIRONMENT_BACKOFF);
                }
            }
            Ok(Done::Stop) => {}
            // A panicking task lost its id; the next resync recounts from
            // the database, which the launch set only adds to.
            Err(e) => tracing::error!(error = %e, "a scheduler task failed"),
        }
    }

    /// Starts launches of pending jobs, oldest first, while slots are free.
    async fn fill(&mut self) {
        if self.hold || self.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let free = if self.max_concurrent == 0 {
            64
        } else {
            match self.jobs.count_running().await {
                Ok(n) => self.max_concurrent.saturating_sub(n + self.launching.len()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot count running jobs");
                    return;
                }
            }
        };
        if free == 0 {
            return;
        }
        let wanted = (free + self.launching.len()) as i64;
        let pending = match self.jobs.in_status(JobStatus::Pending, wanted).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot list pending jobs");
                return;
            }
        };
        let fresh: Vec<JobRecord> = pending
            .into_iter()
            .filter(|r| !self.launching.contains(&r.job.id))
            .take(free)
            .collect();
        for rec in fresh {
            self.launch(rec);
        }
    }

    /// Starts launching one job in its own task.
    fn launch(&mut self, rec: JobRecord) {
        let id = rec.job.id;
        let spec = match self.specs.build(&rec) {
            Ok(spec) => spec,
            Err(e) => {
                let jobs = self.jobs.clone();
                self.launching.insert(id);
                self.tasks.spawn(async move {
                    jobs.fail_by_runner(id, e.to_string()).await;
                    Done::Launch(id, Launched::Ok)
                });
                return;
            }
        };
        self.launching.insert(id);
        let (jobs, runner) = (self.jobs.clone(), self.runner.clone());
        self.tasks.spawn(async move {
            let outcome = match runner.launch(spec).await {
                Ok(state) => {
                    match jobs.mark_launched(id, runner.name(), state).await {
                        // Cancelled while it was being launched.
                        Ok(job) if job.status == JobStatus::Cancelled => {
                            if let Ok(rec) = jobs.record(id).await {
                                stop_trainer(runner.as_ref(), &rec).await;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(job_id = %id, error = %e, "cannot record the launch")
                        }
                    }
                    Launched::Ok
                }
                Err(RunnerError::Start(reason)) => {
                    tracing::warn!(job_id = %id, %reason, "trainer could not be started");
                    jobs.fail_by_runner(id, reason).await;
                    Launched::Ok
                }
                Err(RunnerError::Environment(reason)) => {
                    tracing::error!(job_id = %id, %reason, "cannot launch; retrying in 5 s");
                    Launched::EnvironmentFailed
                }
            };
            Done::Launch(id, outcome)
        });
    }
}

async fn stop_trainer(runner: &dyn Runner, rec: &JobRecord) {
    if let Err(e) = runner.cancel(rec).await {
        tracing::error!(job_id = %rec.job.id, error = %e, "cannot stop the trainer of a cancelled job");
    }
}
