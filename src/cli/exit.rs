//! How client commands end: [`Exit`] carries a specific exit code (and the
//! line to print) up to `main`, and [`finish`] is the one rule for commands
//! that wait for a job to end.

use super::label;
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
/// Otherwise the error says how the job ended, with all of its `error`
/// (for a crashed trainer: the last lines of its log).
pub fn finish(job: &Job) -> anyhow::Result<()> {
    end(job, usize::MAX)
}

/// [`finish`] with only the first line of the job's `error`, for commands
/// that have just printed the log it quotes (`job logs --follow`).
pub fn finish_brief(job: &Job) -> anyhow::Result<()> {
    end(job, 1)
}

fn end(job: &Job, lines: usize) -> anyhow::Result<()> {
    if job.status == JobStatus::Completed {
        return Ok(());
    }
    let mut message = format!("job {} ended {}", label::job_number(job), job.status);
    let mut error = job.error.as_deref().unwrap_or("").lines().take(lines);
    if let Some(first) = error.next() {
        message.push_str(": ");
        message.push_str(first);
    }
    for line in error {
        message.push_str("\n  ");
        message.push_str(line);
    }
    Err(Exit { code: 1, message }.into())
}
