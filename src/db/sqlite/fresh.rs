//! A new database file, built whole beside its path and then linked into
//! place.
//!
//! Running every migration on a new file was half the daemon's start-up on
//! an empty data dir: SQLite re-reads the whole schema after each `ALTER`
//! and `DROP`, and the file took a rollback journal (to switch to WAL) and
//! a dozen fsyncs. A new file instead gets the schema the migrations add up
//! to ([`SCHEMA`], as SQLite stores it) in one batch, in a temporary file
//! with syncs off, synced once and linked: the file at the database's path
//! is either absent or whole at the latest version. A crash midway leaves
//! only the temporary file, which the next start replaces. Linking (not
//! renaming) never replaces a file another process created meanwhile.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use super::{beside, migrations};
use crate::db::DbError;

/// The schema the migrations build, as `sqlite_master` holds it (tables,
/// then indexes, by name). `the_schema_is_what_the_migrations_build` keeps
/// it true: `UPDATE_GENERATED=1 cargo test --lib fresh` rewrites it after
/// a new migration.
const SCHEMA: &str = include_str!("schema.sql");

/// Creates the database at `path` if nothing is there yet: whether it did
/// (the file is then this binary's schema, sound and empty).
pub(super) fn create(path: &Path) -> Result<bool, DbError> {
    // Anything there (a file, or a link SQLite would follow) is opened as
    // it is.
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let failed = |what: &str, e: &dyn std::fmt::Display| DbError::Migration {
        path: path.to_path_buf(),
        message: format!("cannot {what} a new database: {e}"),
    };
    let tmp = beside(path, "-new");
    for leftover in [
        tmp.clone(),
        beside(&tmp, "-journal"),
        beside(&tmp, "-wal"),
        beside(&tmp, "-shm"),
    ] {
        match std::fs::remove_file(&leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(failed("clear the way for", &e)),
        }
    }
    let build = || -> Result<(), DbError> {
        let mut c = rusqlite::Connection::open(&tmp)?;
        // Nothing here needs to survive a crash: the file is not in place
        // until it is synced as a whole (below).
        c.pragma_update(None, "synchronous", "OFF")?;
        c.pragma_update(None, "journal_mode", "MEMORY")?;
        // Takes only before the first table (see `Sqlite::open`).
        c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let tx = c.transaction()?;
        tx.execute_batch(SCHEMA)?;
        let version = i64::try_from(migrations::latest_version()).unwrap_or(i64::MAX);
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.close().map_err(|(_, e)| DbError::from(e))
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let placed = File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| place(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match placed {
        Ok(()) => {}
        // Another process created it meanwhile: that one is opened.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(failed("place", &e)),
    }
    // The new name (and the temporary one's removal) on disk.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("sync the directory of", &e))?;
    }
    Ok(true)
}

/// Gives `tmp` the name `path`: a hard link, which fails (`AlreadyExists`)
/// rather than replace a file created meanwhile; on a filesystem without
/// hard links, a rename (SQLite itself would have opened such a file).
fn place(tmp: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(tmp, path) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
            tracing::debug!(error = %e, "cannot link the new database; renaming it");
            std::fs::rename(tmp, path)
        }
        linked => linked,
    }
}

/// `sqlite_master` of `c` as [`SCHEMA`] spells it: one statement per
/// entry, tables first.
#[cfg(test)]
fn dump(c: &rusqlite::Connection) -> String {
    let mut st = c
        .prepare(
            "SELECT sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND sql IS NOT NULL \
             ORDER BY type <> 'table', name",
        )
        .unwrap();
    let rows = st.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(|sql| format!("{};\n", sql.unwrap())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`SCHEMA`] is exactly what every migration builds on an empty file.
    #[test]
    fn the_schema_is_what_the_migrations_build() {
        super::super::alloc::install();
        let mut migrated = rusqlite::Connection::open_in_memory().unwrap();
        migrations::migrations().to_latest(&mut migrated).unwrap();
        let want = dump(&migrated);
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db/sqlite/schema.sql");
        if std::env::var_os("UPDATE_GENERATED").is_some() {
            std::fs::write(&file, &want).unwrap();
        }
        assert_eq!(
            SCHEMA, want,
            "src/db/sqlite/schema.sql is not what the migrations build: \
             rerun with UPDATE_GENERATED=1"
        );
        let built = rusqlite::Connection::open_in_memory().unwrap();
        built.execute_batch(SCHEMA).unwrap();
        assert_eq!(dump(&built), want);
    }

    fn version(path: &Path) -> (i64, String, i64) {
        let c = rusqlite::Connection::open(path).unwrap();
        let v = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let mode = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let vacuum = c
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        (v, mode, vacuum)
    }

    /// A new file holds every migration, in WAL mode with incremental
    /// vacuum, and nothing is left beside it; an existing file (even an
    /// empty one) is left alone; a leftover of a crashed build is replaced.
    #[test]
    fn a_new_database_is_built_whole_and_an_existing_one_left_alone() {
        super::super::alloc::install();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.db");
        std::fs::write(beside(&path, "-new"), b"half a build").unwrap();
        assert!(create(&path).unwrap());
        let latest = i64::try_from(migrations::latest_version()).unwrap();
        assert_eq!(version(&path), (latest, "wal".to_string(), 2));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["platform.db"]);

        let other = dir.path().join("other.db");
        std::fs::write(&other, b"").unwrap();
        assert!(!create(&other).unwrap());
        assert_eq!(std::fs::metadata(&other).unwrap().len(), 0);
        assert!(!create(&path).unwrap());
    }

    /// A path that cannot hold a file fails with a sentence naming the
    /// database (and creates nothing).
    #[test]
    fn a_path_that_cannot_hold_a_file_fails_cleanly() {
        super::super::alloc::install();
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let err = create(&not_a_dir.join("platform.db"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("platform.db"), "{err}");
        assert_eq!(std::fs::read(&not_a_dir).unwrap(), b"x");
    }
}
