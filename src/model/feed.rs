//! What a live event feed asks the database for: the daemon-side query of
//! the event streams (like [`super::JobFilter`] for the job list).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Which jobs a live feed follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedScope {
    /// One job.
    Job(Uuid),
    /// Every job.
    All,
}

/// What a live feed has not read yet.
#[derive(Debug, Clone, Copy)]
pub struct FeedRead {
    /// Which jobs.
    pub scope: FeedScope,
    /// Read job versions changed after this time; `None`: no jobs.
    pub jobs_since: Option<DateTime<Utc>>,
    /// Read points with an id above this.
    pub points_after: i64,
    /// At most this many rows of each kind.
    pub page: i64,
}
