//! Retention's operations of [`Db`] (issue 17), one `match` per backend like
//! the rest of its methods: finding old jobs with something left to prune,
//! planning which points go (the shared downsampler), deleting them in
//! bounded writes that also mark the job, and giving disk space back.
//!
//! The lifecycle layer (`jobs/retention.rs`) decides the order and the
//! batch sizes; nothing here deletes a point of a job that has not ended.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::downsample::IdRange;
use super::{Db, DbError};
use crate::model::{Job, Pruned};

/// An ended job a prune may still have work on.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneCandidate {
    /// The job.
    pub id: Uuid,
    /// When it ended (candidates are paged by this, then id).
    pub completed_at: DateTime<Utc>,
    /// What earlier prunes removed.
    pub pruned: Option<Pruned>,
}

/// Which jobs [`Db::prune_candidates`] returns: ended before `cutoff`,
/// with something this prune would remove still there, after `after`
/// in `(completed_at, id)` order.
#[derive(Debug, Clone, Copy)]
pub struct CandidateQuery {
    /// Jobs that ended before this.
    pub cutoff: DateTime<Utc>,
    /// Points per series to keep (0: none); `None` leaves histories alone.
    pub keep_points: Option<u32>,
    /// Jobs whose archived log is still there.
    pub logs: bool,
    /// Jobs whose artifacts are still there.
    pub artifacts: bool,
    /// The last candidate of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Page size.
    pub limit: i64,
}

/// What a prune records on a job once its work there is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneMark {
    /// The history now keeps at most this many points per series (0:
    /// none); a smaller number already recorded stays.
    pub max_points: Option<u32>,
    /// The archived log is gone.
    pub logs: bool,
    /// The artifacts are gone.
    pub artifacts: bool,
}

/// One write of a prune: points of one job to delete (together at most a
/// batch), and on its last write the job's mark.
#[derive(Debug, Clone, Default)]
pub struct PruneStep {
    /// Ranges of training points.
    pub metrics: Vec<IdRange>,
    /// Ranges of system points (GPU telemetry).
    pub system: Vec<IdRange>,
    /// Recorded with the deletions, in the same transaction.
    pub mark: Option<PruneMark>,
}

/// What one [`PruneStep`] did.
#[derive(Debug, Default)]
pub struct StepDone {
    /// Training points deleted.
    pub points: u64,
    /// System points deleted.
    pub system_points: u64,
    /// The job as marked (when the step carried a mark).
    pub job: Option<Job>,
}

/// One step of giving disk space back ([`Db::reclaim_space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// PostgreSQL: autovacuum makes freed rows' space reusable by itself.
    Automatic,
    /// A SQLite file created without `auto_vacuum`: only a full `VACUUM`
    /// (`platform db vacuum`, offline) gives space back.
    Unavailable,
    /// SQLite: pages given back by this step, and how many are still free.
    Freed {
        /// Bytes returned to the file system.
        bytes: u64,
        /// Free pages left in the file.
        pages_left: u64,
    },
}

impl Db {
    /// A page of ended jobs with work left for a prune (see
    /// [`CandidateQuery`]), oldest end first. A read.
    pub async fn prune_candidates(
        &self,
        q: CandidateQuery,
    ) -> Result<Vec<PruneCandidate>, DbError> {
        match self {
            Db::Sqlite(s) => s.prune_candidates(q).await,
            Db::Postgres(p) => p.prune_candidates(q).await,
        }
    }

    /// Which points of job `id` go when its history keeps at most `keep`
    /// points per series (0: none): ranges of at most `chunk` points each,
    /// from the training points or, with `system`, the GPU telemetry. A
    /// read; [`Db::prune_step`] deletes them.
    pub async fn points_to_prune(
        &self,
        id: Uuid,
        system: bool,
        keep: u32,
        chunk: u64,
    ) -> Result<Vec<IdRange>, DbError> {
        match self {
            Db::Sqlite(s) => s.points_to_prune(id, system, keep, chunk).await,
            Db::Postgres(p) => p.points_to_prune(id, system, keep, chunk).await,
        }
    }

    /// Deletes the step's points and records its mark in one durable
    /// write, only if job `id` has ended (a live job is left alone and
    /// nothing is reported). Marking also moves `updated_at`, so live
    /// views pick the change up.
    pub async fn prune_step(&self, id: Uuid, step: PruneStep) -> Result<StepDone, DbError> {
        match self {
            Db::Sqlite(s) => s.prune_step(id, step).await,
            Db::Postgres(p) => p.prune_step(id, step).await,
        }
    }

    /// Gives up to `max_pages` free pages of the SQLite file back to the
    /// file system (`PRAGMA incremental_vacuum`), one bounded write.
    pub async fn reclaim_space(&self, max_pages: u32) -> Result<Reclaim, DbError> {
        match self {
            Db::Sqlite(s) => s.reclaim_space(max_pages).await,
            Db::Postgres(_) => Ok(Reclaim::Automatic),
        }
    }
}

/// A SQLite file before and after `platform db vacuum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Vacuumed {
    /// Bytes before (the file and its write-ahead log).
    pub before_bytes: u64,
    /// Bytes after.
    pub after_bytes: u64,
    /// Whether the file already had incremental auto-vacuum (a daemon then
    /// gives space back after each prune by itself).
    pub was_incremental: bool,
}

impl Db {
    /// `platform db vacuum`: rewrites the SQLite file at `path` with a full
    /// `VACUUM`, switching it to incremental auto-vacuum so later prunes
    /// give space back while the daemon runs. Blocking; no daemon may have
    /// the file open (the caller checks the data dir's lock).
    pub fn vacuum_sqlite(path: &std::path::Path) -> Result<Vacuumed, DbError> {
        super::sqlite::Sqlite::vacuum_file(path)
    }
}
