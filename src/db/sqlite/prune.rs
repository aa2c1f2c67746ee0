//! Retention on SQLite: old ended jobs with work left, the points a prune
//! deletes (planned on a reader, deleted through the one writer in bounded
//! steps), the job's mark, and disk space given back by incremental vacuum
//! (online) or a full `VACUUM` (`platform db vacuum`, offline).
//!
//! New database files get `auto_vacuum = INCREMENTAL` when they are created
//! (see [`super::Sqlite::open`]); it cannot be switched on later without
//! rewriting the file, which is what `db vacuum` does.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{jobs, metrics, Sqlite};
use crate::db::columns::pruned;
use crate::db::downsample::{deletions_sparing, IdRange};
use crate::db::prune::{
    CandidateQuery, PruneCandidate, PruneMark, PruneStep, Reclaim, StepDone, Vacuumed,
};
use crate::db::{now, parse_ts, ts, DbError};

/// `PRAGMA auto_vacuum` of a file that gives space back on request.
const INCREMENTAL: i64 = 2;

impl Sqlite {
    pub(in crate::db) async fn prune_candidates(
        &self,
        q: CandidateQuery,
    ) -> Result<Vec<PruneCandidate>, DbError> {
        self.read(move |c| candidates(c, &q)).await
    }

    pub(in crate::db) async fn points_to_prune(
        &self,
        id: Uuid,
        system: bool,
        keep: u32,
        chunk: u64,
    ) -> Result<Vec<IdRange>, DbError> {
        self.read(move |c| {
            let series = metrics::series(c, id, system)?;
            let kept = match keep {
                0 => Vec::new(),
                keep => metrics::plotted(c, id, system, keep as usize)?,
            };
            Ok(deletions_sparing(&series, &kept, chunk))
        })
        .await
    }

    pub(in crate::db) async fn prune_step(
        &self,
        id: Uuid,
        step: PruneStep,
    ) -> Result<StepDone, DbError> {
        self.writer
            .write(move |c| Ok(Ok(apply_step(c, id, &step)?)))
            .await
    }

    pub(in crate::db) async fn reclaim_space(&self, max_pages: u32) -> Result<Reclaim, DbError> {
        self.writer
            .write(move |c| Ok(Ok(incremental_vacuum(c, max_pages)?)))
            .await
    }

    /// See [`crate::db::Db::vacuum_sqlite`].
    pub(in crate::db) fn vacuum_file(path: &Path) -> Result<Vacuumed, DbError> {
        if !path.is_file() {
            return Err(DbError::Backend(format!(
                "there is no database at {}",
                path.display()
            )));
        }
        let c = Connection::open(path)?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        // Everything in the log goes into the file first, so the sizes
        // compare like with like.
        checkpoint(&c)?;
        let before_bytes = file_bytes(path);
        let was_incremental = auto_vacuum(&c)? == INCREMENTAL;
        c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        c.execute_batch("VACUUM")?;
        checkpoint(&c)?;
        drop(c);
        Ok(Vacuumed {
            before_bytes,
            after_bytes: file_bytes(path),
            was_incremental,
        })
    }
}

/// A page of candidates: ended before the cut-off, with something the
/// prune removes still there, in `(completed_at, id)` order after `after`.
fn candidates(c: &Connection, q: &CandidateQuery) -> Result<Vec<PruneCandidate>, DbError> {
    let (after_t, after_id) = q
        .after
        .map(|(t, id)| (ts(&t), id.to_string()))
        .unwrap_or_default();
    let mut stmt = c.prepare_cached(
        "SELECT id, completed_at, pruned_at, pruned_max_points, logs_pruned, artifacts_pruned \
           FROM jobs \
          WHERE completed_at IS NOT NULL AND completed_at < ?1 \
            AND status IN ('completed', 'failed', 'cancelled') \
            AND (completed_at, id) > (?2, ?3) \
            AND ((?4 IS NOT NULL AND (pruned_max_points IS NULL OR pruned_max_points > ?4)) \
                 OR (?5 AND NOT logs_pruned) OR (?6 AND NOT artifacts_pruned)) \
          ORDER BY completed_at, id LIMIT ?7",
    )?;
    let mut rows = stmt.query(params![
        ts(&q.cutoff),
        after_t,
        after_id,
        q.keep_points,
        q.logs,
        q.artifacts,
        q.limit
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let pruned_at: Option<String> = r.get(2)?;
        out.push(PruneCandidate {
            id: Uuid::parse_str(&id).map_err(|e| DbError::Corrupt(e.to_string()))?,
            completed_at: parse_ts(&r.get::<_, String>(1)?)?,
            pruned: pruned(
                pruned_at.as_deref().map(parse_ts).transpose()?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            )?,
        });
    }
    Ok(out)
}

/// One step inside the writer's transaction; nothing for a live job.
fn apply_step(c: &Connection, id: Uuid, step: &PruneStep) -> Result<StepDone, DbError> {
    let ended: Option<String> = c
        .prepare_cached("SELECT status FROM jobs WHERE id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    let ended = ended.is_some_and(|s| matches!(s.as_str(), "completed" | "failed" | "cancelled"));
    if !ended {
        return Ok(StepDone::default());
    }
    let points = metrics::delete_ranges(c, id, false, &step.metrics)?;
    let system_points = metrics::delete_ranges(c, id, true, &step.system)?;
    let job = match &step.mark {
        Some(m) => {
            mark(c, id, m)?;
            jobs::get(c, id)?.map(|r| r.job)
        }
        None => None,
    };
    Ok(StepDone {
        points,
        system_points,
        job,
    })
}

/// Records what a prune removed; a smaller `max_points` already recorded
/// stays, and so do logs and artifacts already gone.
fn mark(c: &Connection, id: Uuid, m: &PruneMark) -> Result<(), DbError> {
    c.prepare_cached(
        "UPDATE jobs SET pruned_at = ?2, updated_at = ?2, \
             pruned_max_points = CASE WHEN ?3 IS NULL THEN pruned_max_points \
                                      WHEN pruned_max_points IS NULL THEN ?3 \
                                      ELSE MIN(pruned_max_points, ?3) END, \
             logs_pruned = logs_pruned OR ?4, artifacts_pruned = artifacts_pruned OR ?5 \
         WHERE id = ?1",
    )?
    .execute(params![
        id.to_string(),
        ts(&now()),
        m.max_points,
        m.logs,
        m.artifacts
    ])?;
    Ok(())
}

/// Up to `max_pages` free pages back to the file system, when the file
/// was created for it.
fn incremental_vacuum(c: &Connection, max_pages: u32) -> Result<Reclaim, DbError> {
    if auto_vacuum(c)? != INCREMENTAL {
        return Ok(Reclaim::Unavailable);
    }
    let page_size: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let before = freelist(c)?;
    // Each step of the statement frees one page and yields a row:
    // stepping it once (as `execute` does) would free a single page.
    let mut stmt = c.prepare(&format!("PRAGMA incremental_vacuum({})", max_pages.max(1)))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    let left = freelist(c)?;
    Ok(Reclaim::Freed {
        bytes: u64::try_from((before - left).max(0) * page_size).unwrap_or(0),
        pages_left: u64::try_from(left).unwrap_or(0),
    })
}

fn auto_vacuum(c: &Connection) -> Result<i64, DbError> {
    Ok(c.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?)
}

fn freelist(c: &Connection) -> Result<i64, DbError> {
    Ok(c.pragma_query_value(None, "freelist_count", |r| r.get(0))?)
}

fn checkpoint(c: &Connection) -> Result<(), DbError> {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// The file's size plus its write-ahead log's, if any.
fn file_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with incremental auto-vacuum (as `open` creates them) and a
    /// table holding `rows` rows of 1 KiB.
    fn filled(path: &Path, incremental: bool, rows: i64) -> Connection {
        let c = Connection::open(path).unwrap();
        if incremental {
            c.pragma_update(None, "auto_vacuum", "INCREMENTAL").unwrap();
        }
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        c.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO t (v) SELECT zeroblob(1024) FROM n",
            [rows],
        )
        .unwrap();
        c
    }

    #[test]
    fn incremental_vacuum_frees_every_page_it_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let c = filled(&dir.path().join("a.db"), true, 4_000);
        c.execute("DELETE FROM t WHERE id > 100", []).unwrap();
        let free = freelist(&c).unwrap();
        assert!(free > 1_000, "{free} free pages");
        let Reclaim::Freed { bytes, pages_left } = incremental_vacuum(&c, 500).unwrap() else {
            panic!("the file has incremental auto-vacuum");
        };
        assert_eq!(pages_left, (free - 500) as u64, "one call frees 500 pages");
        assert_eq!(bytes, 500 * 4096);
        let plain = filled(&dir.path().join("b.db"), false, 10);
        assert_eq!(
            incremental_vacuum(&plain, 500).unwrap(),
            Reclaim::Unavailable
        );
    }

    #[test]
    fn db_vacuum_converts_and_shrinks_an_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let c = filled(&path, false, 4_000);
        c.execute("DELETE FROM t WHERE id > 100", []).unwrap();
        drop(c);
        let v = Sqlite::vacuum_file(&path).unwrap();
        assert!(!v.was_incremental);
        assert!(
            v.after_bytes * 4 < v.before_bytes,
            "{} -> {} bytes",
            v.before_bytes,
            v.after_bytes
        );
        let c = Connection::open(&path).unwrap();
        assert_eq!(auto_vacuum(&c).unwrap(), INCREMENTAL);
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100, "VACUUM keeps every row");
        assert!(Sqlite::vacuum_file(&dir.path().join("none.db")).is_err());
    }
}
