//! What a live event feed asks the database for: the daemon-side query of
//! the event streams (like [`super::JobFilter`] for the job list).

use uuid::Uuid;

use super::{Job, Metric};

/// Which jobs a live feed follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedScope {
    /// One job.
    Job(Uuid),
    /// Every job.
    All,
}

/// A place in a feed, ordered lexicographically: the backend's commit
/// order. SQLite (one writer) uses `(0, point id)` and `(0, updated_at in
/// µs)`; PostgreSQL's all-jobs feed uses `(transaction id, point id)` and
/// `(transaction id, job number)`, since with concurrent writers ids and
/// timestamps are not commit-ordered there.
pub type FeedPos = (i64, i64);

/// What a live feed has not read yet.
#[derive(Debug, Clone, Copy)]
pub struct FeedRead {
    /// Which jobs.
    pub scope: FeedScope,
    /// Read job versions after this position; `None`: no jobs.
    pub jobs_after: Option<FeedPos>,
    /// Read points after this position.
    pub points_after: FeedPos,
    /// At most this many rows of each kind.
    pub page: i64,
}

/// What a feed read found, each row with its position.
#[derive(Debug, Default)]
pub struct FeedPage {
    /// Job versions, in feed order.
    pub jobs: Vec<(FeedPos, Job)>,
    /// Points, in feed order.
    pub points: Vec<(FeedPos, Metric)>,
    /// Rows may have committed that this read could not return yet (a
    /// transaction that started before them is still open): read again
    /// shortly even without a wake-up.
    pub held_back: bool,
}
