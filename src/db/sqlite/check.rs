//! Integrity checks. A damaged file (bad pages, a file that is not a
//! database) is refused with what SQLite found, instead of serving and
//! reporting healthy until a query happens to touch the bad page.
//!
//! Opening a database checks in two steps, so that the daemon's start-up
//! does not grow with the history: before anything is written, a [`probe`]
//! reads the schema and the first page of every table (work bounded by the
//! number of tables); then [`in_background`] runs `PRAGMA quick_check`
//! over the whole file on a connection of its own while reads are served.
//! It is the writer's gate: no write commits until it passed, so a damaged
//! file is never written to (and the daemon stops when it finds damage).
//! A file about to be migrated is checked whole first instead.
//! `platform db check` runs the full `PRAGMA integrity_check`.

use std::path::{Path, PathBuf};

use rusqlite::{ErrorCode, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::super::DbError;

/// Most problems reported (SQLite stops there too).
const MAX_PROBLEMS: u32 = 20;

/// Which check to run.
#[derive(Debug, Clone, Copy)]
pub(super) enum Depth {
    /// `quick_check`: page structure, linear in the file size.
    Quick,
    /// `integrity_check`: also that every index matches its table.
    Full,
}

/// What SQLite reports wrong with the database behind `c` (empty: sound).
fn problems(c: &rusqlite::Connection, path: &Path, depth: Depth) -> Result<Vec<String>, DbError> {
    let pragma = match depth {
        Depth::Quick => "quick_check",
        Depth::Full => "integrity_check",
    };
    let run = || -> Result<Vec<String>, rusqlite::Error> {
        let mut stmt = c.prepare(&format!("PRAGMA {pragma}({MAX_PROBLEMS})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    match run() {
        Ok(rows) => Ok(rows.into_iter().filter(|r| r != "ok").collect()),
        Err(e) if is_damage(&e) => Ok(vec![e.to_string()]),
        Err(e) => Err(DbError::Backend(format!(
            "cannot check the database at {}: {e}",
            path.display()
        ))),
    }
}

/// Reads the schema and the first row of every table: damage there (or a
/// file that is not a database) is found before the daemon starts, in time
/// independent of how much the tables hold.
pub(super) fn probe(c: &rusqlite::Connection, path: &Path) -> Result<(), DbError> {
    let run = || -> Result<(), rusqlite::Error> {
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND rootpage > 0")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for t in tables {
            let sql = format!("SELECT * FROM \"{}\" LIMIT 1", t.replace('"', "\"\""));
            c.prepare(&sql)?.query([])?.next()?;
        }
        Ok(())
    };
    run().map_err(|e| match is_damage(&e) {
        true => damaged(path, vec![e.to_string()]),
        false => DbError::Backend(format!(
            "cannot check the database at {}: {e}",
            path.display()
        )),
    })
}

/// `PRAGMA quick_check` over the whole file at `path`, on a read-only
/// connection of its own (closed after, with its page cache). Cancelling
/// `stop` interrupts it (`Closed`). `Damaged` when it finds damage.
pub(super) async fn in_background(path: PathBuf, stop: CancellationToken) -> Result<(), DbError> {
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || open_read_only(&path))
    };
    let c = opened
        .await
        .map_err(|e| DbError::Backend(e.to_string()))??;
    let interrupt = c.get_interrupt_handle();
    let mut check = tokio::task::spawn_blocking(move || sound(&c, &path, Depth::Quick));
    tokio::select! {
        done = &mut check => done.map_err(|e| DbError::Backend(e.to_string()))?,
        _ = stop.cancelled() => {
            interrupt.interrupt();
            let _ = check.await;
            Err(DbError::Closed)
        }
    }
}

/// `Ok` when a check at `depth` finds nothing, else `Damaged` naming what
/// it found.
pub(super) fn sound(c: &rusqlite::Connection, path: &Path, depth: Depth) -> Result<(), DbError> {
    match problems(c, path, depth)? {
        p if p.is_empty() => Ok(()),
        p => Err(damaged(path, p)),
    }
}

/// Whether an error means the file itself is damaged.
pub(super) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// `DbError::Damaged` for `path`.
pub(super) fn damaged(path: &Path, problems: Vec<String>) -> DbError {
    DbError::Damaged {
        path: path.to_path_buf(),
        problems: problems.join("; "),
    }
}

/// Runs `integrity_check` on the file at `path`, opened read-only (nothing
/// is created, migrated or written).
pub(super) fn check_file(path: &Path) -> Result<Vec<String>, DbError> {
    if !path.is_file() {
        return Err(DbError::Backend(format!(
            "there is no database at {}: check DATABASE_URL / --data-dir",
            path.display()
        )));
    }
    let c = open_read_only(path)?;
    problems(&c, path, Depth::Full)
}

fn open_read_only(path: &Path) -> Result<rusqlite::Connection, DbError> {
    let c = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        DbError::Backend(format!(
            "cannot open the database at {}: {e}",
            path.display()
        ))
    })?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(DbError::from)?;
    Ok(c)
}
