//! The clean-shutdown record, so that restarting does not re-read the
//! whole file when nothing can have damaged it since the last check.
//!
//! The whole-file `quick_check` (see `check`) is the writer's gate, and on
//! a large history it takes a while (about 20 s for 100M points), during
//! which callbacks and re-adoption's writes wait. It looks for damage done
//! while no daemon watched the file: a crash mid-write, a torn copy, a
//! disk that lost pages. After a clean shutdown that followed a passed
//! check, none of that can have happened as long as the file is exactly as
//! the daemon left it. So a clean close writes `<db>-clean`: the file's
//! device, inode, size, and modification and change times. The next open
//! takes (removes) it before anything else and skips the check only when
//! every one still matches and there is no write-ahead log with content.
//!
//! Anything else runs the check, as before: a crash (no record is written,
//! and the one taken at start is gone), any write to the file by another
//! program (its times change; the change time cannot be set back), a copy
//! or a restore (another inode), a record that cannot be read.
//!
//! No record is written when this process saw SQLite report damage, or
//! when its own check did not finish.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::beside;

/// Set when any query of this process met SQLite's damage codes: a later
/// clean close then leaves the next start its check.
static DAMAGE_SEEN: AtomicBool = AtomicBool::new(false);

/// Notes that SQLite reported damage.
pub(super) fn note_damage() {
    DAMAGE_SEEN.store(true, Ordering::Relaxed);
}

/// Whether this process saw SQLite report damage.
pub(super) fn damage_seen() -> bool {
    DAMAGE_SEEN.load(Ordering::Relaxed)
}

/// What identifies the file's state, as one line.
fn stamp(db: &Path) -> std::io::Result<String> {
    let m = std::fs::metadata(db)?;
    Ok(format!(
        "v1 dev={} ino={} len={} mtime={}.{:09} ctime={}.{:09}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The record's path.
fn record(db: &Path) -> PathBuf {
    beside(db, "-clean")
}

/// Whether the write-ahead log holds frames not yet in the file.
fn wal_has_content(db: &Path) -> bool {
    match std::fs::metadata(beside(db, "-wal")) {
        Ok(m) => m.len() > 0,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Takes the record (it is removed whatever it says): `true` when it
/// matches the file as it is now, so the file is the one a clean shutdown
/// left after its check passed. Call before opening the file.
pub(super) fn take(db: &Path) -> bool {
    let path = record(db);
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) => return false,
    };
    if let Err(e) = std::fs::remove_file(&path) {
        // A record that stays would still match only an untouched file,
        // and the first write changes the file's times; but do not trust
        // a file this process cannot manage.
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the clean-shutdown record");
        return false;
    }
    let now = match stamp(db) {
        Ok(now) => now,
        Err(_) => return false,
    };
    recorded.trim_end() == now && !wal_has_content(db)
}

/// Writes the record for the file as it is now (the database closed,
/// its check passed, no damage seen). Skipped when the write-ahead log
/// still holds frames; a record that cannot be written only costs the
/// next start its check.
pub(super) fn seal(db: &Path) {
    if wal_has_content(db) {
        return;
    }
    let path = record(db);
    let write = || -> std::io::Result<()> {
        let line = stamp(db)?;
        let tmp = beside(db, "-clean.tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{line}")?;
        }
        // Lost on power loss at worst: then the next start checks.
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the clean-shutdown record; the next start checks the whole file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path) -> PathBuf {
        let db = dir.join("platform.db");
        std::fs::write(&db, vec![7u8; 8192]).unwrap();
        db
    }

    #[test]
    fn a_record_matches_only_the_file_it_was_written_for_and_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = file(dir.path());
        assert!(!take(&db), "no record, no skip");

        seal(&db);
        assert!(record(&db).exists());
        let mode = std::fs::metadata(record(&db)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(take(&db));
        assert!(!record(&db).exists(), "taking removes it");
        assert!(!take(&db), "a record is used once");
    }

    #[test]
    fn any_change_to_the_file_or_its_log_voids_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let db = file(dir.path());

        // Same size, and the modification time set back to what it was:
        // the change time still differs.
        seal(&db);
        let before = std::fs::metadata(&db).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
            f.seek(SeekFrom::Start(4096)).unwrap();
            f.write_all(&[0xA5; 64]).unwrap();
            f.set_modified(before).unwrap();
        }
        assert_eq!(std::fs::metadata(&db).unwrap().modified().unwrap(), before);
        assert!(!take(&db));

        // Replaced by a copy with the same bytes (another inode).
        seal(&db);
        let copy = dir.path().join("copy");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::rename(&copy, &db).unwrap();
        assert!(!take(&db));

        // Frames in the write-ahead log are not in the file yet.
        seal(&db);
        std::fs::write(dir.path().join("platform.db-wal"), b"frames").unwrap();
        assert!(!take(&db));
        seal(&db);
        assert!(
            !record(&db).exists(),
            "not written beside a log with frames"
        );
        std::fs::write(dir.path().join("platform.db-wal"), b"").unwrap();
        seal(&db);
        assert!(take(&db), "an empty log holds nothing");

        // A record that is not one.
        std::fs::write(record(&db), "garbage").unwrap();
        assert!(!take(&db));
    }
}
