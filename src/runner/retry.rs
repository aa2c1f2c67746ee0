//! The launch retry policy, in one place: what happens to a job whose
//! launch failed because of the runner's environment (the run directory is
//! not writable, the Kubernetes API server does not answer), as opposed to
//! the job itself (those fail at once, see
//! [`RunnerError`](super::RunnerError)).
//!
//! Such a job stays `pending` with a `message` saying why and when it is
//! retried, and waits out a backoff of its own while the scheduler keeps
//! launching the jobs behind it: one job's trouble never holds up the
//! queue. The pauses double from [`FIRST_PAUSE`]; the failure number
//! [`MAX_FAILURES`] fails the job, about five minutes after the first.
//! The state lives in the scheduler's memory, so a daemon restart gives
//! every job a fresh count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The pause after a job's first environment failure; each later one doubles.
pub const FIRST_PAUSE: Duration = Duration::from_secs(10);

/// The environment failure that fails the job (after pauses of 10, 20, 40,
/// 80 and 160 s: about five minutes of trying).
pub const MAX_FAILURES: u32 = 6;

/// What to do with a job after an environment failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it `pending` with this `message`; try again after `pause`.
    Retry {
        /// How long it waits.
        pause: Duration,
        /// What the job's `message` says meanwhile.
        message: String,
    },
    /// Fail it with this `error`.
    GiveUp {
        /// The job's `error`.
        error: String,
    },
}

/// The verdict on a job's `failures`-th environment failure (1 for the first).
pub fn verdict(failures: u32, reason: &str) -> Verdict {
    if failures >= MAX_FAILURES {
        return Verdict::GiveUp {
            error: format!(
                "the trainer could not be launched ({failures} attempts over about five minutes): {reason}"
            ),
        };
    }
    let pause = FIRST_PAUSE * 2u32.pow(failures.saturating_sub(1));
    Verdict::Retry {
        pause,
        message: format!(
            "launch failed: {reason}; retrying in {} s (attempt {} of {MAX_FAILURES})",
            pause.as_secs(),
            failures + 1
        ),
    }
}

/// Jobs waiting to be retried, with their failure counts.
#[derive(Debug, Default)]
pub struct Backoffs {
    jobs: HashMap<Uuid, (u32, Instant)>,
}

impl Backoffs {
    /// How many environment failures job `id` has had.
    pub fn failures(&self, id: Uuid) -> u32 {
        self.jobs.get(&id).map_or(0, |(n, _)| *n)
    }

    /// Whether job `id` is still pausing (not to be launched yet).
    pub fn pausing(&self, id: Uuid, now: Instant) -> bool {
        self.jobs.get(&id).is_some_and(|(_, until)| now < *until)
    }

    /// Job `id` had its `failures`-th failure and waits `pause`.
    pub fn wait(&mut self, id: Uuid, failures: u32, pause: Duration) {
        self.jobs.insert(id, (failures, Instant::now() + pause));
    }

    /// Job `id` launched, failed or ended: it has no count any more.
    pub fn forget(&mut self, id: Uuid) {
        self.jobs.remove(&id);
    }

    /// The jobs with a count.
    pub fn ids(&self) -> Vec<Uuid> {
        self.jobs.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_until_the_last_failure_fails_the_job() {
        let pauses: Vec<u64> = (1..MAX_FAILURES)
            .map(|n| match verdict(n, "disk full") {
                Verdict::Retry { pause, .. } => pause.as_secs(),
                Verdict::GiveUp { .. } => panic!("gave up after {n}"),
            })
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160]);
        match verdict(1, "disk full") {
            Verdict::Retry { message, .. } => assert_eq!(
                message,
                "launch failed: disk full; retrying in 10 s (attempt 2 of 6)"
            ),
            v => panic!("{v:?}"),
        }
        match verdict(MAX_FAILURES, "disk full") {
            Verdict::GiveUp { error } => {
                assert!(
                    error.contains("6 attempts") && error.ends_with("disk full"),
                    "{error}"
                )
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_pausing_job_is_known_until_forgotten() {
        let mut b = Backoffs::default();
        let id = Uuid::now_v7();
        assert_eq!(b.failures(id), 0);
        b.wait(id, 1, Duration::from_secs(60));
        assert!(b.pausing(id, Instant::now()));
        assert!(!b.pausing(id, Instant::now() + Duration::from_secs(61)));
        assert_eq!((b.failures(id), b.ids()), (1, vec![id]));
        b.forget(id);
        assert!(b.ids().is_empty());
    }
}
