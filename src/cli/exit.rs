//! How client commands end: [`Exit`] carries a specific exit code (and the
//! line to print) up to `main`, and [`finish`] is the one rule for commands
//! that wait for a job to end.

use crate::model::{Job, JobStatus};

/// A failure that ends the process with a specific exit code. The message,
/// when not empty, is printed as `error: …`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// Process exit code.
    pub code: i32,
    /// What to print (may be empty when already reported).
    pub message: String,
}

impl Exit {
    /// Exit code 2: the command line was wrong.
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: 2,
            message: message.into(),
        }
        .into()
    }

    /// A silent exit with `code` (the command already reported why).
    pub fn silent(code: i32) -> anyhow::Error {
        Exit {
            code,
            message: String::new(),
        }
        .into()
    }
}

/// The exit code rule for every command that follows a job to its end
/// (`--follow`, `watch`): 0 only for `completed`, so scripts can chain on it.
pub fn finish(job: &Job) -> anyhow::Result<()> {
    match job.status {
        JobStatus::Completed => Ok(()),
        s => Err(Exit {
            code: 1,
            message: format!(
                "job {} ended {s}{}",
                job.id,
                job.error
                    .as_deref()
                    .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            ),
        }
        .into()),
    }
}
