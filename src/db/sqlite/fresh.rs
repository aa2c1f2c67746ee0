//! A new database file: built whole under a temporary name, then linked
//! into place.
//!
//! Creating the file where it belongs would make every step durable on its
//! own: the switch to WAL is a rollback-journal transaction (journal,
//! directory and file synced), and the migrations commit with their WAL
//! synced. Nothing in a file nobody can see yet needs that; a crash before
//! the link leaves only a temporary file, removed by the next attempt. So
//! the schema is built with `synchronous=OFF`, the file is synced once and
//! linked under its name (never over an existing file), and its directory
//! synced: two syncs instead of about eight, on the first start.

use std::path::{Path, PathBuf};

use super::migrate;
use crate::db::DbError;

/// Creates the database at `path` with the current schema unless a file is
/// there already (then it changes nothing: the normal open takes over).
pub(super) fn create(path: &Path) -> Result<(), DbError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // There, or not ours to decide (the normal open reports it).
        _ => return Ok(()),
    }
    let tmp = temporary(path);
    let failed = |what: &str, e: &dyn std::fmt::Display| DbError::Migration {
        path: path.to_path_buf(),
        message: format!("cannot {what} {}: {e}", tmp.display()),
    };
    remove(&tmp);
    let built = build(&tmp, path).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| failed("sync", &e))
    });
    let linked = built.map(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => true,
        // Created meanwhile (another process): that one stands.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        // A file system without hard links: the normal open creates it.
        Err(e) => {
            tracing::debug!(error = %e, "cannot link a new database into place");
            false
        }
    });
    remove(&tmp);
    if !linked? {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("sync the directory of", &e))?;
    }
    Ok(())
}

/// The schema in WAL mode at `tmp`, checkpointed and closed (its `-wal`
/// and `-shm` files gone). Errors name `path`, the file being created.
fn build(tmp: &Path, path: &Path) -> Result<(), DbError> {
    let mut c = rusqlite::Connection::open(tmp)?;
    c.pragma_update(None, "synchronous", "OFF")?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    migrate(&mut c, path)?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    c.close().map_err(|(_, e)| DbError::from(e))
}

/// `.NAME.new-PID` beside `path`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.new-{}", std::process::id()))
}

/// Removes `tmp` and the files SQLite keeps beside it, if there.
fn remove(tmp: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = tmp.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_file_has_the_whole_schema_in_wal_mode_and_nothing_beside_it() {
        super::super::alloc::install();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        // What a crash of an earlier attempt by this process id left.
        std::fs::write(temporary(&path), b"half-built").unwrap();
        create(&path).unwrap();
        assert_eq!(listing(dir.path()), ["platform.db"]);
        let c = rusqlite::Connection::open(&path).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, super::super::migrations::latest_version());
        let n: i64 = c
            .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn an_existing_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        std::fs::write(&path, b"not ours to judge here").unwrap();
        create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"not ours to judge here");
        assert_eq!(listing(dir.path()), ["platform.db"]);
    }
}
