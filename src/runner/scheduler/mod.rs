//! The scheduler: launches `pending` jobs queue by queue (highest priority
//! first, then oldest) while their queue has free slots and their user is
//! under the queue's per-user limit; tells the runner to stop the trainers
//! of cancelled jobs (at once), of jobs the daemon stopped (time limits,
//! silence; at once) and of jobs whose trainer reported its end but keeps
//! running (after the kill grace).
//!
//! A slot is taken by each `running` job, each trainer the runner still
//! watches (whatever its job's status: a trainer that reported `completed`
//! and keeps running still uses its GPU), and each launch in flight, each
//! counted once, in the queue of its job. A launch that fails for the
//! job's own reason fails that job; one that fails for the environment's
//! is retried with a backoff of its own ([`super::retry`]); neither holds
//! up the jobs behind it.
//!
//! With the subprocess runner, GPUs are counted like slots ([`gpus`]): a
//! job launches only when the GPUs it asks for are free, gets the lowest
//! free ones (recorded in the database before its trainer starts) and holds
//! them while it holds its slot, that is until its trainer has exited. A
//! job waiting for GPUs blocks the jobs behind it in its own queue only.
//!
//! What to launch is decided over an in-memory index of pending jobs
//! ([`index`]), rebuilt from the database at start-up (and when events
//! were missed) and kept by committed-change events; a tick re-checks
//! deadlines ([`limits`]: `max_duration`, `max_pending`, heartbeats) and
//! backoffs. Everything it acts on is stored in the database first, so a
//! restart resumes where it stopped.
//!
//! Every launch and every stop runs in its own task: a runner call that
//! takes seconds (a slow API server, a trainer slow to start) never holds
//! up other launches or a cancel. Launches in flight count against the
//! limit like running jobs, and shutdown waits for them, so a trainer is
//! never started without its job being marked `running`.

mod gpus;
pub mod index;
mod launch;
mod limits;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::gpus::GpuBook;
use self::index::{Entry, PendingIndex, QueueLimit, Usage};
use super::retry::{self, Backoffs};
use super::{Runner, SpecBuilder};
use crate::events::Event;
use crate::jobs::{JobError, Jobs};
use crate::model::{AssignedGpu, Job, JobRecord, JobStatus};
use crate::queues::Queues;

/// How often deadlines and backoffs are re-checked.
const TICK: Duration = Duration::from_millis(250);
/// How long one cancel's stop stands for the job's later events.
const ONE_CANCEL: Duration = Duration::from_secs(60);

/// How a task the scheduler started ended.
enum Done {
    /// A launch finished (started, failed to start, or found the job gone).
    Launch(Uuid, Launched),
    /// A deadline's rule was applied (or failed, to be tried again).
    Rule(Uuid, bool),
    /// A stop request was handed to the runner.
    Other,
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
    queues: Arc<Queues>,
    /// Paused queue names (from the database).
    paused: HashSet<String>,
    /// Pending jobs, per queue in launch order.
    pending: PendingIndex,
    /// The full pending jobs (for `max_pending`).
    pending_jobs: HashMap<Uuid, Arc<Job>>,
    /// Running jobs as last committed.
    running: HashMap<Uuid, Arc<Job>>,
    /// Queue and user of every job that may hold a slot (running, being
    /// launched, or a trainer the runner still watches).
    holders: HashMap<Uuid, (String, String)>,
    /// Statuses of jobs that pending jobs wait for (`after`).
    deps: HashMap<Uuid, JobStatus>,
    /// Rules already requested for a job's current version (stop, mark
    /// stalled, fail): not requested twice before its next event.
    requested: HashSet<Uuid>,
    /// Running jobs the daemon ended whose trainer it is stopping.
    stopping: HashSet<Uuid>,
    /// Cancelled jobs whose stop went out, and when: the job's next events
    /// (its trainer's end, recorded) do not send it again for a while.
    cancels: HashMap<Uuid, std::time::Instant>,
    /// The newest version (`updated_at`) taken in per job: an older one
    /// arriving later (an event read after the database) is ignored.
    versions: HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
    /// Jobs whose launch failed for the environment, waiting to retry.
    backoffs: Backoffs,
    /// `--hold-jobs`: launch nothing.
    hold: bool,
    /// Jobs whose launch is in flight (still `pending` in the database).
    launching: HashSet<Uuid>,
    /// GPUs, when this runner's launches take them from the daemon's machine.
    gpus: Option<GpuBook>,
    tasks: JoinSet<Done>,
}

impl Scheduler {
    /// A scheduler launching through `runner` under `queues`' limits.
    pub fn new(
        jobs: Arc<Jobs>,
        runner: Arc<dyn Runner>,
        specs: Arc<SpecBuilder>,
        queues: Arc<Queues>,
    ) -> Self {
        Self {
            jobs,
            runner,
            specs,
            queues,
            paused: HashSet::new(),
            pending: PendingIndex::default(),
            pending_jobs: HashMap::new(),
            running: HashMap::new(),
            holders: HashMap::new(),
            deps: HashMap::new(),
            requested: HashSet::new(),
            stopping: HashSet::new(),
            cancels: HashMap::new(),
            versions: HashMap::new(),
            backoffs: Backoffs::default(),
            hold: false,
            launching: HashSet::new(),
            gpus: None,
            tasks: JoinSet::new(),
        }
    }

    /// Launches take GPUs from `gpus` (the subprocess runner): a job
    /// launches only when the GPUs it asks for are free.
    pub fn gpus(mut self, gpus: Arc<crate::gpus::Gpus>) -> Self {
        self.gpus = Some(GpuBook::new(gpus));
        self
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
        self.rebuild().await;
        self.fill();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(Event::Job(job)) => {
                        if self.on_job(job).await {
                            self.fill();
                        }
                    }
                    Ok(Event::Queue(_)) => {
                        self.load_paused().await;
                        self.fill();
                    }
                    Ok(Event::Metric(_)) => {}
                    // Another replica changed the job: take in its newest version.
                    Ok(Event::Touched(id)) => {
                        self.reread(id).await;
                        self.fill();
                    }
                    Ok(Event::Resync) | Err(RecvError::Lagged(_)) => {
                        self.rebuild().await;
                        self.fill();
                    }
                    Err(RecvError::Closed) => break,
                },
                Some(done) = self.tasks.join_next() => {
                    self.settle(done).await;
                    self.fill();
                }
                _ = tick.tick() => {
                    self.resync().await;
                    self.check_limits();
                    self.fill();
                }
                _ = stop.cancelled() => break,
            }
        }
        // A launch cut short could leave a trainer running for a job still
        // marked pending, which the next daemon would launch again.
        while let Some(done) = self.tasks.join_next().await {
            self.settle(done).await;
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

    /// Reads pending and running jobs, paused queues and the statuses of
    /// dependencies from the database (start-up, and after missed events).
    async fn rebuild(&mut self) {
        let (pending, running) = match (
            self.jobs.in_status(JobStatus::Pending, i64::MAX).await,
            self.jobs.in_status(JobStatus::Running, i64::MAX).await,
        ) {
            (Ok(p), Ok(r)) => (p, r),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot read pending and running jobs; the next tick retries");
                return;
            }
        };
        self.pending.clear();
        self.pending_jobs.clear();
        self.running.clear();
        self.requested.clear();
        self.stopping.clear();
        self.versions.clear();
        for rec in running.into_iter().chain(pending) {
            self.on_job(Arc::new(rec.job)).await;
        }
        self.load_paused().await;
        tracing::debug!(
            pending = self.pending.len(),
            running = self.running.len(),
            "scheduler index rebuilt"
        );
    }

    async fn load_paused(&mut self) {
        match self.jobs.paused_queues().await {
            Ok(p) => self.paused = p.into_iter().collect(),
            Err(e) => tracing::error!(error = %e, "cannot read which queues are paused"),
        }
    }

    /// Takes in job `id` as the database has it now (changed elsewhere).
    async fn reread(&mut self, id: Uuid) {
        match self.jobs.get(id).await {
            Ok(job) => {
                self.on_job(Arc::new(job)).await;
            }
            Err(JobError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "cannot read a job changed on another replica; rebuilding");
                self.rebuild().await;
            }
        }
    }

    /// Takes in a committed version of a job; false when it can change no
    /// launch decision (a newer version was seen, or a running job's
    /// progress: the bulk of events, one per callback).
    async fn on_job(&mut self, job: Arc<Job>) -> bool {
        let id = job.id;
        if self.versions.get(&id).is_some_and(|v| *v > job.updated_at) {
            return false;
        }
        self.versions.insert(id, job.updated_at);
        self.requested.remove(&id);
        if job.status != JobStatus::Running {
            self.stopping.remove(&id);
        }
        if self.deps.contains_key(&id) {
            self.deps.insert(id, job.status);
        }
        match job.status {
            JobStatus::Pending => {
                self.running.remove(&id);
                for dep in &job.sched.after {
                    if !self.deps.contains_key(dep) {
                        let status = match self.jobs.get(*dep).await {
                            Ok(d) => d.status,
                            // Deleted or unreadable: it cannot complete.
                            Err(JobError::NotFound(_)) => JobStatus::Cancelled,
                            Err(e) => {
                                tracing::warn!(job_id = %id, error = %e, "cannot read a dependency; assuming it is pending");
                                JobStatus::Pending
                            }
                        };
                        self.deps.insert(*dep, status);
                    }
                }
                self.pending.upsert(Entry::of(&job));
                self.pending_jobs.insert(id, job);
            }
            JobStatus::Running => {
                let known = self.running.contains_key(&id);
                if !known {
                    self.pending.remove(id);
                    self.pending_jobs.remove(&id);
                    self.holders
                        .insert(id, (job.sched.queue.clone(), job.user_id.clone()));
                }
                if let Some(book) = self.gpus.as_mut().filter(|b| !b.knows(id)) {
                    book.note(&job);
                }
                if job.sched.termination_reason.is_some() && self.stopping.insert(id) {
                    self.stop_now(id);
                }
                self.running.insert(id, job);
                return !known;
            }
            _ => {
                self.pending.remove(id);
                self.pending_jobs.remove(&id);
                self.running.remove(&id);
                self.backoffs.forget(id);
                // A cancel always reaches the runner (the trainer may be
                // launching); a reported end only matters while the
                // trainer still runs.
                let cancel = job.status == JobStatus::Cancelled;
                if cancel
                    && self
                        .cancels
                        .get(&id)
                        .is_some_and(|t| t.elapsed() < ONE_CANCEL)
                {
                    return true;
                }
                if cancel || self.runner.active().contains(&id) {
                    if cancel {
                        self.cancels.insert(id, std::time::Instant::now());
                    }
                    self.stop(id);
                }
            }
        }
        true
    }

    /// Stops trainers of ended jobs the runner still watches, forgets
    /// retries of jobs no longer pending and slot holders that are gone.
    async fn resync(&mut self) {
        self.cancels.retain(|_, t| t.elapsed() < ONE_CANCEL);
        let active: HashSet<Uuid> = self.runner.active().into_iter().collect();
        for id in &active {
            if self.running.contains_key(id) || self.launching.contains(id) {
                continue;
            }
            if let Ok(rec) = self.jobs.record(*id).await {
                // A trainer that outlived its job (across a restart, too)
                // keeps its GPUs until it exits.
                if let Some(book) = self.gpus.as_mut().filter(|b| !b.knows(*id)) {
                    book.note(&rec.job);
                }
                if rec.job.status.is_terminal() && self.requested.insert(*id) {
                    self.stop_record(rec);
                }
            }
        }
        // Versions of ended jobs are kept a minute: long enough for any
        // older event of theirs to have arrived.
        let old = crate::db::now() - chrono::Duration::seconds(60);
        self.versions.retain(|id, v| {
            *v > old || self.pending.get(*id).is_some() || self.running.contains_key(id)
        });
        self.holders.retain(|id, _| {
            self.running.contains_key(id) || self.launching.contains(id) || active.contains(id)
        });
        let holding = self.holding();
        if let Some(book) = &mut self.gpus {
            book.retain(&holding);
        }
        let stale: Vec<Uuid> = self
            .backoffs
            .ids()
            .into_iter()
            .filter(|id| self.pending.get(*id).is_none())
            .collect();
        for id in stale {
            self.backoffs.forget(id);
        }
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
            Done::Other
        });
    }

    /// Stops the trainer of running job `id` at once (the daemon ended it:
    /// a time limit or silence); its end then settles the job.
    fn stop_now(&mut self, id: Uuid) {
        let (jobs, runner) = (self.jobs.clone(), self.runner.clone());
        self.tasks.spawn(async move {
            if let Ok(rec) = jobs.record(id).await {
                if let Err(e) = runner.cancel(&rec).await {
                    tracing::error!(job_id = %id, error = %e, "cannot stop the trainer");
                }
            }
            Done::Other
        });
    }

    fn stop_record(&mut self, rec: JobRecord) {
        let runner = self.runner.clone();
        self.tasks.spawn(async move {
            stop_trainer(runner.as_ref(), &rec).await;
            Done::Other
        });
    }

    async fn settle(&mut self, done: Result<Done, tokio::task::JoinError>) {
        match done {
            Ok(Done::Launch(id, outcome)) => {
                self.launching.remove(&id);
                match outcome {
                    Launched::Settled => {
                        self.backoffs.forget(id);
                        // Its events may come after this: the index must
                        // not hold it as pending any more, or it would be
                        // launched again. The database has its newest version.
                        match self.jobs.get(id).await {
                            Ok(job) => {
                                self.on_job(Arc::new(job)).await;
                            }
                            Err(_) => {
                                self.pending.remove(id);
                                self.pending_jobs.remove(&id);
                            }
                        }
                    }
                    Launched::Retry { failures, pause } => self.backoffs.wait(id, failures, pause),
                }
            }
            Ok(Done::Rule(id, applied)) => {
                if !applied {
                    self.requested.remove(&id);
                }
            }
            Ok(Done::Other) => {}
            // A panicking task lost its id; the next resync recounts.
            Err(e) => tracing::error!(error = %e, "a scheduler task failed"),
        }
    }

    /// The queues' limits as the decision sees them.
    fn limits(&self) -> Vec<QueueLimit> {
        self.queues
            .all()
            .iter()
            .map(|q| QueueLimit {
                name: q.name.clone(),
                max_concurrent: q.max_concurrent,
                max_per_user: q.max_per_user,
                paused: self.paused.contains(&q.name),
            })
            .collect()
    }

    /// Slots taken: `running` jobs, trainers the runner watches (a job may
    /// have ended before its trainer did) and launches in flight, each
    /// once, in their job's queue.
    fn usage(&self, holding: &HashSet<Uuid>) -> Usage {
        let mut usage = Usage::default();
        usage.free_gpus = self.gpus.as_ref().map(|b| b.free(holding));
        for id in holding {
            if let Some((queue, user)) = self.holders.get(id) {
                usage.take(queue, user);
            }
        }
        usage
    }

    /// Jobs that may hold a slot (and GPUs): running, a trainer the runner
    /// watches, or a launch in flight.
    fn holding(&self) -> HashSet<Uuid> {
        let mut ids: HashSet<Uuid> = self.running.keys().copied().collect();
        ids.extend(self.runner.active());
        ids.extend(self.launching.iter().copied());
        ids
    }

    /// Starts launches of the jobs the decision picks.
    fn fill(&mut self) {
        // Who holds which GPU changes with trainers' exits, not only with
        // launches: the shared view is refreshed on every pass.
        if let Some(book) = &self.gpus {
            book.publish(&self.holding());
        }
        if self.hold || self.pending.is_empty() {
            return;
        }
        let holding = self.holding();
        let now = crate::db::now();
        let instant = std::time::Instant::now();
        let mut busy: HashSet<Uuid> = self.launching.clone();
        busy.extend(
            self.backoffs
                .ids()
                .into_iter()
                .filter(|id| self.backoffs.pausing(*id, instant)),
        );
        let completed: HashSet<Uuid> = self
            .deps
            .iter()
            .filter(|(_, s)| **s == JobStatus::Completed)
            .map(|(id, _)| *id)
            .collect();
        let picks = index::decide(
            &self.pending,
            &self.limits(),
            &self.usage(&holding),
            now,
            &busy,
            &completed,
        );
        let mut holding = holding;
        for id in picks {
            let Some(job) = self.pending_jobs.get(&id).cloned() else {
                continue;
            };
            let gpus = match &mut self.gpus {
                Some(book) => match book.allocate(id, job.sched.gpus, &holding) {
                    Some(given) => Some(given),
                    // Not free after all (the decision counted them): the
                    // next decision tries again.
                    None => continue,
                },
                None => None,
            };
            holding.insert(id);
            self.launch(job, gpus);
        }
        if let Some(book) = &self.gpus {
            book.publish(&holding);
        }
    }

    /// Starts launching one job in its own task.
    fn launch(&mut self, job: Arc<Job>, gpus: Option<Vec<AssignedGpu>>) {
        let id = job.id;
        self.launching.insert(id);
        self.holders
            .insert(id, (job.sched.queue.clone(), job.user_id.clone()));
        let failures = self.backoffs.failures(id);
        // Recorded before the trainer starts; a stale list from an earlier
        // attempt is cleared.
        let gpus = gpus.filter(|g| !g.is_empty() || !job.sched.assigned_gpus.is_empty());
        let (jobs, runner, specs) = (self.jobs.clone(), self.runner.clone(), self.specs.clone());
        self.tasks.spawn(async move {
            let outcome = launch::launch(&jobs, runner.as_ref(), &specs, id, failures, gpus).await;
            Done::Launch(id, outcome)
        });
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
