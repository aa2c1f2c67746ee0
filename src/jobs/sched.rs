//! The scheduling rules of the lifecycle service: a job's scheduling
//! fields at create (queue, priority, retry policy, limits with the
//! server's defaults, dependencies), priority changes, queue pauses,
//! heartbeats and the `stalled` condition, and the daemon's own reasons to
//! end a job (time limits, silence, a failed dependency).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::attempts::stop_message;
use super::{JobError, Jobs};
use crate::db::{Changes, Modified};
use crate::events::Event;
use crate::model::sched::{reason, DEFAULT_PRIORITY, DEFAULT_QUEUE};
use crate::model::{
    CreateJob, Job, JobRecord, JobScheduling, JobStatus, QueueInfo, ValidationError,
};
use crate::trainers::Registry;

/// The most often a job's heartbeat is written.
const BEAT_WRITE_INTERVAL: Duration = Duration::from_secs(15);

/// When a job's heartbeat was last written, and how often it may be.
#[derive(Debug, Clone, Copy)]
pub(super) struct Beat {
    at: Instant,
    every: Duration,
}

/// Stamps a trainer call on a job being written anyway, clearing `stalled`.
pub(super) fn beat(rec: &mut JobRecord, now: DateTime<Utc>) {
    rec.job.sched.last_heartbeat_at = Some(now);
    rec.job.sched.stalled_at = None;
}

impl Jobs {
    /// The scheduling fields of a new job: the request's, else its
    /// trainer's, else the server's defaults. Refuses unknown queues, a
    /// `max_duration` over the server's maximum and unknown dependencies.
    pub(super) async fn scheduling(
        &self,
        req: &CreateJob,
        registry: &Registry,
    ) -> Result<JobScheduling, JobError> {
        let r = &req.sched;
        let queue = r.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.into());
        if self.cfg.queues.get(&queue).is_none() {
            return Err(ValidationError::new(
                "queue",
                format!(
                    "unknown queue {queue:?}; configured queues: {}",
                    self.cfg.queues.names()
                ),
            )
            .into());
        }
        let max_duration = match (r.max_duration, self.cfg.max_job_duration) {
            (Some(asked), Some(max)) if asked > max => {
                return Err(ValidationError::new(
                    "max_duration",
                    format!(
                        "is {asked} s, over this server's maximum of {max} s (--max-job-duration)"
                    ),
                )
                .into())
            }
            (asked, max) => asked.or(max),
        };
        let trainer = registry.get(&req.framework);
        let retry = r
            .retry
            .clone()
            .or_else(|| trainer.and_then(|t| t.retry.clone()));
        let heartbeat_timeout = r
            .heartbeat_timeout
            .or_else(|| trainer.and_then(|t| t.heartbeat_timeout))
            .or(self.cfg.heartbeat_timeout);
        let gpus = r
            .gpus
            .or_else(|| trainer.and_then(|t| t.resources.gpu))
            .unwrap_or(0);
        if let Some(have) = self.cfg.gpu_capacity.filter(|have| gpus > *have) {
            let whose = if r.gpus.is_some() {
                "asks for"
            } else {
                "asks (by its trainer's resources.gpu) for"
            };
            return Err(ValidationError::new(
                "gpus",
                format!("the job {whose} {gpus} GPUs, but this machine has {have}"),
            )
            .into());
        }
        let mut after = Vec::new();
        for dep in &r.after {
            if self.db.job(*dep).await?.is_none() {
                return Err(JobError::NoSuchDependency(*dep));
            }
            if !after.contains(dep) {
                after.push(*dep);
            }
        }
        Ok(JobScheduling {
            queue,
            priority: r.priority.unwrap_or(DEFAULT_PRIORITY),
            retry,
            max_duration,
            max_pending: r.max_pending,
            heartbeat_timeout,
            stale_after: r.stale_after.or(self.cfg.stale_after),
            after,
            gpus,
            ..JobScheduling::default()
        })
    }

    /// Every configured queue with its state and its pending and running
    /// jobs (as the database has them).
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, JobError> {
        let counts = self.db.count_by_queue().await?;
        let paused = self.db.paused_queues().await?;
        let count = |q: &str, st: JobStatus| {
            counts
                .iter()
                .filter(|(name, s, _)| name == q && *s == st)
                .map(|(_, _, n)| u64::try_from(*n).unwrap_or(0))
                .sum()
        };
        Ok(self
            .cfg
            .queues
            .all()
            .iter()
            .map(|q| QueueInfo {
                name: q.name.clone(),
                max_concurrent: q.max_concurrent,
                max_per_user: q.max_per_user,
                paused: paused.contains(&q.name),
                running: count(&q.name, JobStatus::Running),
                pending: count(&q.name, JobStatus::Pending),
                kueue_queue: q.kueue_queue.clone(),
            })
            .collect())
    }

    /// The configured queues' names.
    pub fn queue_names(&self) -> Vec<String> {
        self.cfg
            .queues
            .all()
            .iter()
            .map(|q| q.name.clone())
            .collect()
    }

    /// The names of paused queues.
    pub async fn paused_queues(&self) -> Result<Vec<String>, JobError> {
        Ok(self.db.paused_queues().await?)
    }

    /// Pauses or resumes a configured queue (durably); running jobs are
    /// not touched. Returns the queue as it is now.
    pub async fn pause_queue(&self, name: &str, paused: bool) -> Result<QueueInfo, JobError> {
        if self.cfg.queues.get(name).is_none() {
            return Err(JobError::UnknownQueue {
                name: name.to_string(),
                known: self.cfg.queues.names(),
            });
        }
        self.db.set_queue_paused(name.to_string(), paused).await?;
        self.events.publish(Event::Queue(Arc::from(name)));
        let all = self.queues().await?;
        all.into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| JobError::UnknownQueue {
                name: name.to_string(),
                known: self.cfg.queues.names(),
            })
    }

    /// A trainer's sign of life (the heartbeat route, metric batches and
    /// artifact uploads; callbacks stamp it in their own write). Written
    /// at most every 15 s per job (more often for short timeouts), and at
    /// once while the job is `stalled`, which it clears.
    pub async fn heartbeat(&self, id: Uuid) -> Result<(), JobError> {
        let due = self
            .beats
            .lock()
            .map(|b| b.get(&id).is_none_or(|b| b.at.elapsed() >= b.every))
            .unwrap_or(true);
        if !due {
            return Ok(());
        }
        let modified = self
            .db
            .modify_job(id, move |rec, now| {
                if rec.job.status.is_terminal() {
                    return Ok::<_, JobError>(Changes::none());
                }
                if rec.job.sched.stalled_at.is_some() {
                    // Streams and the scheduler see the condition clear.
                    rec.job.updated_at = now;
                }
                beat(rec, now);
                Ok(Changes::job())
            })
            .await?;
        match modified {
            Modified::Missing => Err(JobError::NotFound(id)),
            Modified::Unchanged => Ok(()),
            Modified::Stored { job, .. } => {
                self.beat_written(id, &job);
                self.events.publish(Event::Job(Arc::new(*job)));
                Ok(())
            }
        }
    }

    /// Remembers that `job`'s heartbeat was just written.
    pub(super) fn beat_written(&self, id: Uuid, job: &Job) {
        if job.status.is_terminal() {
            return;
        }
        // A few writes per timeout, so silence is seen within it.
        let every = job
            .sched
            .heartbeat_timeout
            .map_or(BEAT_WRITE_INTERVAL, |t| {
                crate::model::sched::secs(t / 4.0).min(BEAT_WRITE_INTERVAL)
            });
        if let Ok(mut b) = self.beats.lock() {
            b.insert(
                id,
                Beat {
                    at: Instant::now(),
                    every,
                },
            );
        }
    }

    /// Marks a running job `stalled` (its trainer silent longer than its
    /// `heartbeat_timeout`), unless a heartbeat arrived since `silent_since`.
    pub async fn mark_stalled(
        &self,
        id: Uuid,
        silent_since: DateTime<Utc>,
    ) -> Result<Job, JobError> {
        let job = self
            .change(id, move |rec, now| {
                let s = &rec.job.sched;
                let heard = s.last_heartbeat_at.or_else(|| s.attempt_started());
                if rec.job.status == JobStatus::Running
                    && s.stalled_at.is_none()
                    && heard.is_none_or(|h| h <= silent_since)
                {
                    rec.job.sched.stalled_at = Some(now);
                    rec.job.updated_at = now;
                }
                Ok(())
            })
            .await?;
        if job.sched.stalled_at.is_some() {
            metrics::counter!("platform_stalled_total", "queue" => job.sched.queue.clone())
                .increment(1);
            // The next heartbeat is written at once, to clear it.
            if let Ok(mut b) = self.beats.lock() {
                b.remove(&id);
            }
        }
        Ok(job)
    }

    /// The daemon stops a running job for `why` (`max-duration`, `stale`):
    /// the reason is stored at once (so a restart still stops it), the
    /// runner stops the trainer when it sees the event, and the trainer's
    /// end then goes through the retry policy with that event.
    pub async fn stop_running(&self, id: Uuid, why: &'static str) -> Result<Job, JobError> {
        let job = self
            .change(id, move |rec, now| {
                if rec.job.status == JobStatus::Running
                    && rec.job.sched.termination_reason.is_none()
                {
                    rec.job.sched.termination_reason = Some(why.into());
                    rec.job.message = stop_message(&rec.job);
                    rec.job.updated_at = now;
                }
                Ok(())
            })
            .await?;
        let counter = match why {
            reason::MAX_DURATION => "platform_timeouts_total",
            _ => "platform_stale_total",
        };
        metrics::counter!(counter, "queue" => job.sched.queue.clone()).increment(1);
        Ok(job)
    }

    /// Fails a `pending` job for a reason of the daemon's
    /// (`queue-timeout`, `dependency-failed`) with `error`.
    pub async fn fail_pending(
        &self,
        id: Uuid,
        why: &'static str,
        error: String,
    ) -> Result<Job, JobError> {
        let job = self
            .change(id, move |rec, now| {
                if rec.job.status == JobStatus::Pending
                    && rec.job.transition(JobStatus::Failed, now).is_ok()
                {
                    rec.job.sched.termination_reason = Some(why.into());
                    rec.job.error = Some(error);
                    rec.job.sched.next_attempt_at = None;
                }
                Ok(())
            })
            .await?;
        if why == reason::QUEUE_TIMEOUT {
            metrics::counter!("platform_timeouts_total", "queue" => job.sched.queue.clone())
                .increment(1);
        }
        Ok(job)
    }
}

/// The priority rule: a `pending` job's priority changes (409 once it
/// launched or ended); `priority` is checked by [`check_priority`].
pub(super) fn prioritizing(
    rec: &mut JobRecord,
    now: DateTime<Utc>,
    priority: u8,
) -> Result<(), JobError> {
    if rec.job.status != JobStatus::Pending {
        return Err(JobError::NotPending {
            id: rec.job.id,
            status: rec.job.status,
        });
    }
    rec.job.sched.priority = priority;
    rec.job.updated_at = now;
    Ok(())
}

/// Refuses a priority outside 0–100 before anything is read.
pub(super) fn check_priority(priority: u8) -> Result<(), JobError> {
    if priority > crate::model::sched::MAX_PRIORITY {
        return Err(ValidationError::new("priority", "must be between 0 and 100").into());
    }
    Ok(())
}
