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
        self.launching.insert(id);
        let (jobs, runner, specs) = (self.jobs.clone(), self.runner.clone(), self.specs.clone());
        self.tasks.spawn(async move {
            let outcome = launch(&jobs, runner.as_ref(), &specs, rec).await;
            Done::Launch(id, outcome)
        });
    }
}

/// Mints the job's token, starts its trainer and records the launch.
async fn launch(jobs: &Jobs, runner: &dyn Runner, specs: &SpecBuilder, rec: JobRecord) -> Launched {
    let id = rec.job.id;
    let token = match jobs.issue_token(id).await {
        Ok(t) => t,
        // Cancelled meanwhile (or the database is closing): nothing to start.
        Err(e) => {
            tracing::info!(job_id = %id, error = %e, "not launching");
            return Launched::Ok;
        }
    };
    let spec = match specs.build(&rec, &token) {
        Ok(spec) => spec,
        Err(e) => {
            jobs.fail_by_runner(id, e.to_string()).await;
            return Launched::Ok;
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
    }
}

async fn stop_trainer(runner: &dyn Runner, rec: &JobRecord) {
    if let Err(e) = runner.cancel(rec).await {
        tracing::error!(job_id = %rec.job.id, error = %e, "cannot stop the trainer of a cancelled job");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::testing::Service;
    use crate::jobs::RunnerOutcome;
    use crate::runner::fake::{self, FakeRunner};

    /// Waits (up to 5 s) for `cond` to hold.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn start(
        svc: &Service,
        runner: &FakeRunner,
        max: usize,
        hold: bool,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let scheduler = Scheduler::new(
            svc.jobs.clone(),
            Arc::new(runner.clone()),
            fake::specs(svc),
            max,
        )
        .hold(hold);
        (stop.clone(), tokio::spawn(scheduler.run(stop)))
    }

    async fn status(svc: &Service, id: Uuid) -> JobStatus {
        svc.jobs.get(id).await.unwrap().status
    }

    #[tokio::test]
    async fn launches_oldest_first_within_the_limit() {
        let svc = Service::start().await;
        let runner = FakeRunner::default();
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(svc.create("m").await.id);
        }
        let (stop, task) = start(&svc, &runner, 2, false);
        until("two launches", || runner.calls(|c| c.launched.len() == 2)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runner.calls(|c| c.launched.clone()), ids[..2]);
        assert_eq!(status(&svc, ids[0]).await, JobStatus::Running);
        assert_eq!(status(&svc, ids[2]).await, JobStatus::Pending);
        let job = svc.jobs.get(ids[0]).await.unwrap();
        assert_eq!(job.runner.as_deref(), Some("fake"));
        // A trainer ending frees its slot for the next oldest job.
        let ok = RunnerOutcome {
            exit_code: Some(0),
            failure: None,
        };
        svc.jobs.finish_by_runner(ids[0], ok).await.unwrap();
        until("a third launch", || runner.calls(|c| c.launched.len() == 3)).await;
        assert_eq!(runner.calls(|c| c.launched[2]), ids[2]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runner.calls(|c| c.launched.len()), 3, "the limit holds");
        stop.cancel();
        task.await.unwrap();
        svc.close().await;
    }

    #[tokio::test]
    async fn a_cancel_reaches_the_runner_and_frees_the_slot() {
        let svc = Service::start().await;
        let runner = FakeRunner::default();
        let a = svc.create("m").await.id;
        let b = svc.create("m").await.id;
        let (stop, task) = start(&svc, &runner, 1, false);
        until("the first launch", || runner.calls(|c| c.launched == [a])).await;
        svc.jobs.cancel(a, "cancelled by user").await.unwrap();
        until("the stop", || runner.calls(|c| c.cancelled == [a])).await;
        until("the next launch", || runner.calls(|c| c.launched == [a, b])).await;
        stop.cancel();
        task.await.unwrap();
        svc.close().await;
    }

    #[tokio::test]
    async fn a_slow_launch_holds_up_neither_other_launches_nor_cancels() {
        let svc = Service::start().await;
        let runner = FakeRunner::default();
        runner.slow_model("slow", Duration::from_secs(3));
        let running = svc.create("fast").await.id;
        let slow = svc.create("slow").await.id;
        let after = svc.create("fast").await.id;
        let (stop, task) = start(&svc, &runner, 3, false);
        until("both fast launches", || {
            runner.calls(|c| c.launched.contains(&running) && c.launched.contains(&after))
        })
        .await;
        assert!(runner.calls(|c| c.launching.contains(&slow) && !c.launched.contains(&slow)));
        let asked = Instant::now();
        svc.jobs.cancel(running, "cancelled by user").await.unwrap();
        until("the stop", || runner.calls(|c| c.cancelled == [running])).await;
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "the cancel waited {:?} behind the slow launch",
            asked.elapsed()
        );
        assert!(
            runner.calls(|c| !c.launched.contains(&slow)),
            "the slow launch is still in flight"
        );
        // Shutdown waits for it: the job is never left pending with a trainer.
        stop.cancel();
        task.await.unwrap();
        assert!(runner.calls(|c| c.launched.contains(&slow)));
        assert_eq!(status(&svc, slow).await, JobStatus::Running);
        svc.close().await;
    }

    #[tokio::test]
    async fn a_job_cancelled_while_launching_is_stopped_once_launched() {
        let svc = Service::start().await;
        let runner = FakeRunner::default();
        runner.slow_model("slow", Duration::from_millis(500));
        let id = svc.create("slow").await.id;
        let (stop, task) = start(&svc, &runner, 1, false);
        until("the launch to start", || {
            runner.calls(|c| c.launching == [id])
        })
        .await;
        svc.jobs.cancel(id, "cancelled by user").await.unwrap();
        until("the stop", || runner.calls(|c| c.cancelled.contains(&id))).await;
        assert!(runner.calls(|c| c.launched == [id]));
        let job = svc.jobs.get(id).await.unwrap();
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(
            job.runner.as_deref(),
            Some("fake"),
            "the trainer stays findable"
        );
        stop.cancel();
        task.await.unwrap();
        svc.close().await;
    }

    #[tokio::test]
    async fn a_restart_hands_over_this_runners_running_jobs_only() {
        let svc = Service::start().await;
        let runner = FakeRunner::default();
        let mine = svc.create("m").await.id;
        let foreign = svc.create("m").await.id;
        let ended = svc.create("m").await.id;
        let waiting = svc.create("m").await.id;
        svc.jobs.mark_launched(mine, "fake", None).await.unwrap();
        svc.jobs
            .mark_launched(foreign, "other", None)
            .await
            .unwrap();
        svc.jobs.mark_launched(ended, "fake", None).await.unwrap();
        svc.jobs.cancel(ended, "cancelled by user").await.unwrap();
        // Held: only the restart decisions run, nothing is launched.
        let (stop, task) = start(&svc, &runner, 0, true);
        until("the re-adoption", || {
            runner.calls(|c| !c.reconciled.is_empty())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runner.calls(|c| c.reconciled.clone()), [mine]);
        assert!(runner.calls(|c| c.launched.is_empty()));
        assert_eq!(status(&svc, waiting).await, JobStatus::Pending);
        stop.cancel();
        task.await.unwrap();
        svc.close().await;
    }
}
