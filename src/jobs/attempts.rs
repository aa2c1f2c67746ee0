//! How an attempt ends: the runner's report of a trainer's end goes
//! through the retry policy (one engine, [`crate::model::retry`], for both
//! runners) and either completes the job, fails it, or puts it back to
//! `pending` for its next attempt after a backoff.
//!
//! A retried job keeps its id. Its next attempt gets a fresh callback
//! token (the old one is dropped here, so a zombie trainer of the ended
//! attempt can write nothing) and its `sequence` starts over.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{JobError, Jobs};
use crate::model::sched::reason;
use crate::model::{AttemptEnd, AttemptEvent, Decision, JobRecord, JobStatus};

/// How a trainer ended, as its runner saw it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunnerOutcome {
    /// The exit code, when known (negative: killed by that signal).
    pub exit_code: Option<i32>,
    /// `None` for success; otherwise one readable line (plus, for local
    /// processes, the last lines of the log).
    pub failure: Option<String>,
    /// What ended it besides a plain exit (out of memory, evicted, gone).
    pub event: Option<AttemptEvent>,
    /// The attempt this outcome is about, when the runner knows it: an
    /// outcome of an earlier attempt (a late watcher event) changes nothing.
    pub attempt: Option<u32>,
}

impl RunnerOutcome {
    /// A failure for `reason`, with no exit code.
    pub fn failed(reason: String) -> Self {
        Self {
            failure: Some(reason),
            ..Self::default()
        }
    }
}

impl Jobs {
    /// Applies how a trainer ended, as seen by its runner. A job that is
    /// still live becomes `completed` on success; on failure its retry
    /// policy decides between another attempt (the job goes back to
    /// `pending` with a message saying when) and `failed` with the runner's
    /// reason. A job that already ended (its trainer reported, or a user
    /// cancelled) keeps its status. The exit code is recorded either way.
    pub async fn finish_by_runner(
        &self,
        id: Uuid,
        outcome: RunnerOutcome,
    ) -> Result<crate::model::Job, JobError> {
        let job = self
            .change(id, move |rec, now| {
                apply_outcome(rec, outcome, now);
                Ok(())
            })
            .await?;
        if job.status == JobStatus::Pending {
            metrics::counter!("platform_retries_total", "queue" => job.sched.queue.clone())
                .increment(1);
            // The ended attempt's token opens nothing any more.
            self.forget_token(id);
        }
        Ok(job)
    }

    /// Fails a live job for a reason found by its runner (could not start,
    /// vanished, …); a job that already ended is left as it is.
    pub async fn fail_by_runner(&self, id: Uuid, reason: String) {
        self.fail_by_runner_with(id, RunnerOutcome::failed(reason))
            .await;
    }

    /// [`Jobs::finish_by_runner`] for a failure, logging instead of
    /// returning an error (runners have no one to tell).
    pub async fn fail_by_runner_with(&self, id: Uuid, outcome: RunnerOutcome) {
        if let Err(e) = self.finish_by_runner(id, outcome).await {
            tracing::error!(job_id = %id, error = %e, "cannot mark the job failed");
        }
    }
}

/// The event an attempt the daemon stopped itself ended with.
fn event_of_termination(termination: Option<&str>) -> Option<AttemptEvent> {
    match termination {
        Some(reason::MAX_DURATION) => Some(AttemptEvent::Timeout),
        Some(reason::STALE) => Some(AttemptEvent::Stale),
        _ => None,
    }
}

fn apply_outcome(rec: &mut JobRecord, outcome: RunnerOutcome, now: DateTime<Utc>) {
    let job = &mut rec.job;
    if outcome
        .attempt
        .is_some_and(|a| a != job.sched.attempt && job.sched.attempt != 0)
    {
        return;
    }
    if outcome.exit_code.is_some() {
        job.exit_code = outcome.exit_code;
    }
    job.updated_at = now;
    // The daemon stopping it (time limit, silence) is why it ended,
    // whatever its exit code says.
    let stopped = event_of_termination(job.sched.termination_reason.as_deref());
    let event = stopped.or(outcome.event);
    let failure = match stopped {
        Some(_) => stop_message(job),
        None => outcome.failure.clone(),
    };
    let was_running = job.status == JobStatus::Running;
    let Some(failure) = failure else {
        // Refused for a job that already ended: it keeps its status.
        let _ = job.transition(JobStatus::Completed, now);
        note_attempt(rec, outcome.exit_code, None);
        return;
    };
    let what = event.map_or_else(|| failure.clone(), |e| e.as_str().to_string());
    if !was_running {
        // Pending (a launch that failed for good) or already ended.
        if job.transition(JobStatus::Failed, now).is_ok() {
            job.error = Some(failure);
        }
        note_attempt(rec, outcome.exit_code, Some(what));
        return;
    }
    let policy = job.sched.retry.clone().unwrap_or_default();
    let end = AttemptEnd {
        exit_code: outcome.exit_code,
        event,
    };
    let attempt = job.sched.attempt;
    let counted = job.sched.counted_attempts();
    match policy.decide(&end, attempt, counted) {
        Decision::Retry { pause, counted } => {
            // Running may always go back to pending.
            let _ = job.transition(JobStatus::Pending, now);
            let at = now + chrono::Duration::from_std(pause).unwrap_or_default();
            job.sched.next_attempt_at = Some(at);
            job.sched.termination_reason = None;
            let next = attempt + 1;
            let of = if counted {
                format!(" of {}", policy.max_attempts)
            } else {
                String::new()
            };
            job.message = Some(format!(
                "attempt {attempt} failed ({}); retrying at {} (attempt {next}{of})",
                short(&failure),
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            // The next attempt is counted or not by this decision.
            note_attempt(rec, outcome.exit_code, Some(what));
            if !counted {
                if let Some(a) = rec.job.sched.current_attempt_mut() {
                    a.counted = false;
                }
            }
            rec.token_hash = None;
            rec.last_sequence = None;
        }
        Decision::Fail { why } => {
            let _ = job.transition(JobStatus::Failed, now);
            job.error = Some(match why {
                Some(why) => format!("{failure} ({why})"),
                None => failure,
            });
            note_attempt(rec, outcome.exit_code, Some(what));
        }
    }
}

/// Why the daemon stopped a running job (its `termination_reason`), in
/// words: the job's message while it stops, its error once it ended.
pub(super) fn stop_message(job: &crate::model::Job) -> Option<String> {
    let limit = |v: Option<f64>| v.map_or_else(|| "?".into(), |s| format!("{s} s"));
    let s = &job.sched;
    match s.termination_reason.as_deref()? {
        reason::MAX_DURATION => Some(format!(
            "attempt {} ran longer than its max_duration of {}; stopped by the daemon",
            s.attempt,
            limit(s.max_duration)
        )),
        reason::STALE => Some(format!(
            "the trainer sent no heartbeat for longer than its heartbeat_timeout of {} (and stale_after of {}); stopped by the daemon",
            limit(s.heartbeat_timeout),
            limit(s.stale_after.or(Some(0.0)))
        )),
        other => Some(format!("ended by the daemon: {other}")),
    }
}

/// Records the current attempt's exit code and reason, once it ended.
fn note_attempt(rec: &mut JobRecord, exit_code: Option<i32>, why: Option<String>) {
    if let Some(a) = rec.job.sched.current_attempt_mut() {
        if a.ended_at.is_some() {
            a.exit_code = a.exit_code.or(exit_code);
            if a.reason.is_none() {
                a.reason = why;
            }
        }
    }
}

/// The first line of a failure, for a one-line message.
fn short(failure: &str) -> &str {
    failure.lines().next().unwrap_or(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RetryPolicy;

    fn running(policy: Option<RetryPolicy>) -> JobRecord {
        let now = crate::db::now();
        let mut job: crate::model::Job = serde_json::from_value(serde_json::json!({
            "id": Uuid::now_v7(), "user_id": "u", "model_name": "m", "framework": "demo",
            "dataset_s3_uri": "s3://b/d/", "config": null, "status": "pending", "progress": 0.0,
            "message": null, "checkpoint_s3_uri": null, "error": null,
            "created_at": now, "updated_at": now, "started_at": null, "completed_at": null
        }))
        .unwrap();
        job.sched.retry = policy;
        job.transition(JobStatus::Running, now).unwrap();
        JobRecord {
            job,
            token_hash: Some("h".into()),
            last_sequence: Some(4),
            runner_state: None,
        }
    }

    fn exit(code: i32) -> RunnerOutcome {
        RunnerOutcome {
            exit_code: Some(code),
            failure: (code != 0).then(|| format!("trainer exited with code {code}")),
            ..Default::default()
        }
    }

    #[test]
    fn a_listed_exit_code_goes_back_to_pending_with_a_fresh_start() {
        let mut rec = running(Some(RetryPolicy::on_exit_codes(vec![3], 3)));
        apply_outcome(&mut rec, exit(3), crate::db::now());
        let j = &rec.job;
        assert_eq!(j.status, JobStatus::Pending);
        assert!(j.sched.next_attempt_at.is_some());
        assert!(j.message.as_deref().unwrap().contains("attempt 2 of 3"));
        assert_eq!(j.sched.attempts[0].exit_code, Some(3));
        assert!(j.sched.attempts[0].ended_at.is_some());
        assert_eq!((rec.token_hash.as_deref(), rec.last_sequence), (None, None));
    }

    #[test]
    fn other_codes_fail_and_success_completes() {
        let mut rec = running(Some(RetryPolicy::on_exit_codes(vec![3], 3)));
        apply_outcome(&mut rec, exit(1), crate::db::now());
        assert_eq!(rec.job.status, JobStatus::Failed);
        let mut rec = running(None);
        apply_outcome(&mut rec, exit(0), crate::db::now());
        assert_eq!(rec.job.status, JobStatus::Completed);
    }

    #[test]
    fn an_outcome_of_an_earlier_attempt_changes_nothing() {
        let mut rec = running(None);
        let mut late = exit(1);
        late.attempt = Some(7);
        apply_outcome(&mut rec, late, crate::db::now());
        assert_eq!(rec.job.status, JobStatus::Running);
    }

    #[test]
    fn a_stopped_attempt_ends_with_the_daemons_reason_as_its_event() {
        let policy = RetryPolicy {
            max_attempts: 2,
            rules: vec![crate::model::retry::RetryRule {
                exit_codes: None,
                events: Some(vec![AttemptEvent::Timeout]),
                action: crate::model::retry::RetryAction::Retry,
            }],
            ..Default::default()
        };
        let mut rec = running(Some(policy));
        rec.job.sched.termination_reason = Some(reason::MAX_DURATION.into());
        apply_outcome(&mut rec, exit(-15), crate::db::now());
        assert_eq!(rec.job.status, JobStatus::Pending);
        assert_eq!(rec.job.sched.termination_reason, None);
        assert_eq!(rec.job.sched.attempts[0].reason.as_deref(), Some("timeout"));
    }
}
