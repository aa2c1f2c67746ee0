//! The daemon's data directory: one daemon at a time, and nothing in it
//! readable by other local users.
//!
//! The database holds job state, the run directories hold trainers' logs
//! and pids; none of it is other users' business. `serve` restricts its
//! umask so everything it creates is private (directories 0700, files
//! 0600), tightens what an older version left readable, and takes an
//! exclusive `flock` on `platform.lock` for as long as it runs: a second
//! daemon on the same directory would re-adopt the first one's trainers
//! and launch its pending jobs a second time. The lock file's descriptor
//! is close-on-exec, so trainers and their supervisors never inherit it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{umask, Mode};

/// Name of the lock file in the data dir.
pub const LOCK_FILE: &str = "platform.lock";

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another daemon holds the lock.
    #[error("data dir {dir} in use by pid {pid}: another `platform serve` runs on it; stop it or choose another --data-dir")]
    InUse {
        /// The data dir.
        dir: PathBuf,
        /// The pid written by the holder (`unknown` when unreadable).
        pid: String,
    },
    /// The directory or its lock file cannot be created or locked.
    #[error("cannot use the data dir {dir}: {reason}")]
    Io {
        /// The data dir.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// The claimed data dir; the lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    _lock: Flock<File>,
}

/// Makes everything this process creates from now on private (0700
/// directories, 0600 files) and returns the umask it had, for trainers.
pub fn restrict_umask() -> Mode {
    umask(Mode::from_bits_truncate(0o077))
}

/// Creates (0700) and locks `dir`, then tightens what is in it and the
/// SQLite database files at `database` (which may live elsewhere).
pub fn claim(dir: &Path, database: Option<&Path>) -> Result<DataDir, DataDirError> {
    let io = |what: &str, e: std::io::Error| DataDirError::Io {
        dir: dir.to_path_buf(),
        reason: format!("{what}: {}", crate::errors::strip_os_error(&e.to_string())),
    };
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create it", e))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .map_err(|e| io("cannot open its lock file", e))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(DataDirError::InUse {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
            });
        }
        Err((_, e)) => return Err(io("cannot lock it", e.into())),
    };
    lock.set_len(0)
        .and_then(|_| lock.rewind())
        .and_then(|_| writeln!(lock, "{}", std::process::id()))
        .map_err(|e| io("cannot write its lock file", e))?;
    let tightened = tighten(dir, database);
    if tightened > 0 {
        tracing::info!(
            data_dir = %dir.display(),
            paths = tightened,
            "made files and directories private that other users could read (0700 directories, 0600 files)"
        );
    }
    Ok(DataDir { _lock: lock })
}

/// The pid of the `platform serve` holding `dir`'s lock (`unknown` when
/// it did not write one), or `None` when no daemon runs on it.
pub fn holder(dir: &Path) -> Option<String> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Some(match pid.trim() {
            "" => "unknown".to_string(),
            p => p.to_string(),
        }),
        Err(_) => None,
    }
}

/// Restricts what an earlier version created with looser modes: the data
/// dir and its top-level directories (which closes everything below them),
/// files in the run directories, and the database files. Returns how many
/// paths changed.
fn tighten(dir: &Path, database: Option<&Path>) -> usize {
    let mut changed = 0;
    let mut restrict = |path: &Path, mode: u32| {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
            return;
        }
        if std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).is_ok() {
            changed += 1;
        }
    };
    restrict(dir, 0o700);
    for sub in ["runs", "store"] {
        restrict(&dir.join(sub), 0o700);
    }
    if let Ok(runs) = std::fs::read_dir(dir.join("runs")) {
        for run in runs.flatten() {
            restrict(&run.path(), 0o700);
            if let Ok(files) = std::fs::read_dir(run.path()) {
                for f in files.flatten() {
                    restrict(&f.path(), 0o600);
                }
            }
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let Some(database) = database else { break };
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        restrict(Path::new(&name), 0o600);
    }
    restrict(&dir.join(LOCK_FILE), 0o600);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_second_claim_is_refused_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = claim(&dir, Some(&dir.join("platform.db"))).unwrap();
        let err = claim(&dir, Some(&dir.join("platform.db"))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("in use by pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        claim(&dir, Some(&dir.join("platform.db"))).unwrap();
    }

    #[test]
    fn loose_modes_left_by_older_versions_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let run = dir.join("runs").join("j");
        std::fs::create_dir_all(&run).unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        for f in ["state.json", "trainer.log"] {
            std::fs::write(run.join(f), "x").unwrap();
            set(&run.join(f), 0o644);
        }
        let db = dir.join("platform.db");
        std::fs::write(&db, "x").unwrap();
        set(&db, 0o644);
        set(&dir, 0o755);
        set(&run, 0o755);
        let _claimed = claim(&dir, Some(&db)).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&run), 0o700);
        assert_eq!(mode(&run.join("trainer.log")), 0o600);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
    }
}
