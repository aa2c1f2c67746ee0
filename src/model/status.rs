//! The job status state machine: the only place that decides which status
//! changes are legal.
//!
//! `pending → running → completed|failed|cancelled` and
//! `pending → failed|cancelled`; `running → pending` when an attempt ended
//! and the retry policy runs another; terminal states are final. Everything that
//! changes a job's status (callbacks, cancels, runners) asks this module.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for the runner to launch it.
    Pending,
    /// The trainer has been launched.
    Running,
    /// The trainer finished successfully.
    Completed,
    /// The trainer (or its launch) failed.
    Failed,
    /// A user cancelled the job.
    Cancelled,
}

/// Every status, in lifecycle order.
pub const ALL_STATUSES: [JobStatus; 5] = [
    JobStatus::Pending,
    JobStatus::Running,
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

impl JobStatus {
    /// The lowercase wire name (`"running"`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Terminal states are final: nothing moves a job out of them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Whether a job in `self` may move to `next`.
    ///
    /// `running → running` is allowed (it is how progress updates arrive);
    /// only a `running` job moves back to `pending`, to wait for its next
    /// attempt (callbacks never ask for `pending`: they are refused first).
    pub fn can_become(self, next: JobStatus) -> bool {
        match next {
            JobStatus::Pending => self == JobStatus::Running,
            _ => !self.is_terminal(),
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the five statuses.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown status {0:?}: expected one of pending, running, completed, failed, cancelled")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in ALL_STATUSES.into_iter().filter(|s| s.is_terminal()) {
            for to in ALL_STATUSES {
                assert!(!from.can_become(to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn live_states_move_forward_only() {
        assert!(!JobStatus::Pending.can_become(JobStatus::Pending));
        // A retry: the job waits for its next attempt.
        assert!(JobStatus::Running.can_become(JobStatus::Pending));
        for from in [JobStatus::Pending, JobStatus::Running] {
            for to in &ALL_STATUSES[1..] {
                assert!(from.can_become(*to), "{from} -> {to} must be allowed");
            }
        }
    }

    #[test]
    fn parses_wire_names_only() {
        assert_eq!(
            "cancelled".parse::<JobStatus>().ok(),
            Some(JobStatus::Cancelled)
        );
        assert!("Cancelled".parse::<JobStatus>().is_err());
        assert!("done".parse::<JobStatus>().is_err());
    }
}
