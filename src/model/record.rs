//! A stored job with the columns the API never shows. Daemon-side only:
//! the database reads and writes it, the lifecycle service changes it, and
//! runners read the token and their own state from it. It is never
//! serialised to a client.

use super::job::Job;

/// A job plus its private columns.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The public part.
    pub job: Job,
    /// SHA-256 (hex) of the job's callback token; `None` until a launch
    /// minted one. The token itself is only ever in the trainer's
    /// environment.
    pub token_hash: Option<String>,
    /// Highest callback `sequence` applied so far.
    pub last_sequence: Option<i64>,
    /// Runner-private JSON (pid and start time, Kubernetes names, …).
    pub runner_state: Option<String>,
}
