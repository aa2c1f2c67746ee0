//! Integrity checks: `PRAGMA quick_check` before the daemon starts on a
//! file, and `PRAGMA integrity_check` for `platform db check`. A damaged
//! file (bad pages, a file that is not a database) is refused with what
//! SQLite found, instead of starting and reporting healthy until a query
//! happens to touch the bad page.

use std::path::Path;

use rusqlite::{ErrorCode, OpenFlags};

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
pub(super) fn problems(
    c: &rusqlite::Connection,
    path: &Path,
    depth: Depth,
) -> Result<Vec<String>, DbError> {
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
    problems(&c, path, Depth::Full)
}
