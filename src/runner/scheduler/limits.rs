//! The scheduler's deadlines, checked on every tick over its in-memory
//! view: an attempt past its `max_duration` or a trainer silent past its
//! `heartbeat_timeout` (then `stale_after`) is stopped; a job pending past
//! its `max_pending`, or waiting for a job that failed or was cancelled,
//! fails. Each rule is applied by the lifecycle service in its own task,
//! once per committed version of the job.

use uuid::Uuid;

use super::{Done, Scheduler};
use crate::model::sched::{reason, secs};
use crate::model::{Job, JobStatus};

/// What a deadline asks of the lifecycle service.
enum Rule {
    Stop(&'static str),
    Stalled(chrono::DateTime<chrono::Utc>),
    Fail(&'static str, String),
}

fn after(t: chrono::DateTime<chrono::Utc>, seconds: f64) -> chrono::DateTime<chrono::Utc> {
    t + chrono::Duration::from_std(secs(seconds)).unwrap_or(chrono::Duration::MAX)
}

/// The rule a running job's clocks call for, if any.
fn running_rule(job: &Job, now: chrono::DateTime<chrono::Utc>) -> Option<Rule> {
    let s = &job.sched;
    if s.termination_reason.is_some() {
        return None;
    }
    let started = s.attempt_started()?;
    if s.max_duration.is_some_and(|max| now >= after(started, max)) {
        return Some(Rule::Stop(reason::MAX_DURATION));
    }
    let timeout = s.heartbeat_timeout?;
    match s.stalled_at {
        None => {
            let heard = s.last_heartbeat_at.unwrap_or(started).max(started);
            (now >= after(heard, timeout)).then_some(Rule::Stalled(heard))
        }
        Some(at) => s
            .stale_after
            .is_some_and(|grace| now >= after(at, grace))
            .then_some(Rule::Stop(reason::STALE)),
    }
}

impl Scheduler {
    /// The rule a pending job's clocks or dependencies call for, if any.
    fn pending_rule(&self, job: &Job, now: chrono::DateTime<chrono::Utc>) -> Option<Rule> {
        let s = &job.sched;
        for dep in &s.after {
            if let Some(st @ (JobStatus::Failed | JobStatus::Cancelled)) = self.deps.get(dep) {
                return Some(Rule::Fail(
                    reason::DEPENDENCY_FAILED,
                    format!("job {dep}, which this job waits for (after), ended {st}"),
                ));
            }
        }
        let max = s.max_pending?;
        let since = s.next_attempt_at.unwrap_or(job.created_at);
        (now >= after(since, max)).then(|| {
            Rule::Fail(
                reason::QUEUE_TIMEOUT,
                format!("waited longer than its max_pending of {max} s to launch"),
            )
        })
    }

    /// Applies every deadline that passed.
    pub(super) fn check_limits(&mut self) {
        let now = crate::db::now();
        let mut rules: Vec<(Uuid, Rule)> = Vec::new();
        for (id, job) in &self.running {
            if !self.requested.contains(id) {
                rules.extend(running_rule(job, now).map(|r| (*id, r)));
            }
        }
        for (id, job) in &self.pending_jobs {
            if !self.requested.contains(id) && !self.launching.contains(id) {
                rules.extend(self.pending_rule(job, now).map(|r| (*id, r)));
            }
        }
        for (id, rule) in rules {
            self.requested.insert(id);
            let jobs = self.jobs.clone();
            self.tasks.spawn(async move {
                let applied = match rule {
                    Rule::Stop(why) => {
                        tracing::warn!(job_id = %id, reason = why, "stopping the job");
                        jobs.stop_running(id, why).await
                    }
                    Rule::Stalled(since) => {
                        tracing::warn!(job_id = %id, "no heartbeat: the job is stalled");
                        jobs.mark_stalled(id, since).await
                    }
                    Rule::Fail(why, error) => {
                        tracing::warn!(job_id = %id, reason = why, %error, "failing the pending job");
                        jobs.fail_pending(id, why, error).await
                    }
                };
                if let Err(e) = &applied {
                    tracing::error!(job_id = %id, error = %e, "cannot apply a scheduling rule");
                }
                Done::Rule(id, applied.is_ok())
            });
        }
        let wanted: std::collections::HashSet<Uuid> = self
            .pending
            .entries()
            .flat_map(|e| e.after.iter().copied())
            .collect();
        self.deps.retain(|dep, _| wanted.contains(dep));
    }
}
