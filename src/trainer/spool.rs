//! `platform report`'s queue on disk: each invocation is its own process, so
//! reports the daemon has not taken yet wait in the trainer's working
//! directory (`.platform-report/<job id>/queue.json`) together with the
//! job's sequence counter. The next invocation delivers them first, in
//! order; invocations take turns through a lock file.
//!
//! The directory is private (0700) and holds no secrets (the token stays in
//! the environment). It goes away once the job's terminal report is
//! delivered or the daemon says the job ended. A working directory that
//! cannot be written falls back to a private directory of the user's in the
//! system's temporary directory (`platform-report-<uid>`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::delivery::{Attempt, Endpoint, ReportError};
use super::outbox::{Outbox, Report, DISK_CAPACITY};
use crate::client::ClientError;

/// The directory, under the working directory, holding one queue per job.
pub const DIR_NAME: &str = ".platform-report";
const QUEUE_FILE: &str = "queue.json";
const LOCK_FILE: &str = "lock";
/// How long an empty queue of another job is kept (see [`sweep`]).
const STALE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What `queue.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    outbox: Outbox,
    /// When the daemon was first found unreachable in the current outage.
    down_since: Option<SystemTime>,
}

/// How far a delivery got.
#[derive(Debug)]
pub enum Delivery {
    /// Delivered (the first report, or all of them).
    Delivered,
    /// The daemon is unreachable; the rest stays queued for later.
    Deferred(ClientError),
}

/// One job's queue, locked for this process until dropped.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: Flock<File>,
    saved: Saved,
}

impl Spool {
    /// Opens job `key`'s queue in the working directory (or the temporary
    /// directory when the working directory is not writable), waiting for
    /// any other invocation using it to finish.
    pub fn open_default(key: &str) -> io::Result<Spool> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Spool::open(&cwd.join(DIR_NAME), key).or_else(|_| Spool::open(&private_temp()?, key))
    }

    /// Opens (creating) job `key`'s queue under `base`, waiting for any
    /// other invocation using it to finish.
    pub fn open(base: &Path, key: &str) -> io::Result<Spool> {
        let dir = base.join(key);
        loop {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            let lock_path = dir.join(LOCK_FILE);
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&lock_path)?;
            let lock = Flock::lock(lock, FlockArg::LockExclusive)
                .map_err(|(_, errno)| io::Error::from(errno))?;
            // The holder before us may have removed the queue (its job
            // ended) while we waited: start again on a fresh one.
            let held = lock.metadata()?;
            match fs::metadata(&lock_path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
                _ => continue,
            }
            let saved = read(&dir.join(QUEUE_FILE))?;
            sweep(base, key);
            return Ok(Spool {
                dir,
                _lock: lock,
                saved,
            });
        }
    }

    /// Where the queue lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many reports are queued.
    pub fn len(&self) -> usize {
        self.saved.outbox.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.saved.outbox.is_empty()
    }

    /// Queues `report` (see [`Outbox::push`]); hands it back when full.
    ///
    /// Automatic sequences count from the clock (microseconds since the
    /// epoch), so they come after any sequence the trainer chose itself and
    /// after reports sent from another working directory, where another
    /// queue counts: the daemon ignores a sequence lower than one it applied.
    pub fn push(&mut self, report: Report) -> Result<(), Box<Report>> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.saved.outbox.count_from(now);
        self.saved.outbox.push(report, DISK_CAPACITY)
    }

    /// Writes the queue durably (a new file renamed over the old one).
    pub fn save(&self) -> io::Result<()> {
        let path = self.dir.join(QUEUE_FILE);
        let tmp = self.dir.join(format!("{QUEUE_FILE}.tmp"));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(&self.saved)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes the queue (the job is over for this trainer).
    pub fn remove(self) -> io::Result<()> {
        fs::remove_dir_all(&self.dir)?;
        // The parent goes too once no other job's queue is in it.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }

    /// Delivers the first queued report: retrying while the daemon is away
    /// when `wait` (up to the endpoint's timeout), else with one attempt.
    /// A report the daemon rejects is dropped (it never will take it); a
    /// 409 empties the queue.
    pub async fn deliver_front(
        &mut self,
        ep: &Endpoint,
        wait: bool,
    ) -> Result<Delivery, ReportError> {
        let Some(report) = self.saved.outbox.front().cloned() else {
            return Ok(Delivery::Delivered);
        };
        let down_since = &mut self.saved.down_since;
        let sent = if wait {
            ep.deliver(&report, down_since).await
        } else {
            match ep.attempt(&report).await {
                Ok(()) => {
                    *down_since = None;
                    Ok(())
                }
                Err(Attempt::Stop(e)) => Err(e),
                Err(Attempt::Retry(e)) => {
                    ep.give_up_after(down_since, &e)?;
                    return Ok(Delivery::Deferred(e));
                }
            }
        };
        match sent {
            Ok(()) => {
                self.saved.outbox.pop();
            }
            Err(e @ ReportError::Rejected(_)) => {
                self.saved.outbox.pop();
                return Err(e);
            }
            Err(e @ ReportError::Ended(_)) => {
                self.saved.outbox.clear();
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        Ok(Delivery::Delivered)
    }

    /// Delivers every queued report in order (see [`Spool::deliver_front`]).
    pub async fn deliver_all(
        &mut self,
        ep: &Endpoint,
        wait: bool,
    ) -> Result<Delivery, ReportError> {
        while !self.is_empty() {
            if let Delivery::Deferred(e) = self.deliver_front(ep, wait).await? {
                return Ok(Delivery::Deferred(e));
            }
        }
        Ok(Delivery::Delivered)
    }
}

/// This user's own directory in the shared temporary directory; refused
/// when someone else made it (or made it readable to others).
fn private_temp() -> io::Result<PathBuf> {
    let uid = fs::metadata("/proc/self")?.uid();
    let dir = std::env::temp_dir().join(format!("platform-report-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let m = fs::symlink_metadata(&dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a private directory of this user",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Removes other jobs' queues under `base` that are empty, unused and
/// untouched for [`STALE`]: left by trainers that exited without a terminal
/// report. Best effort: anything in the way is left alone.
fn sweep(base: &Path, key: &str) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        if dir.file_name().is_none_or(|n| n == key) {
            continue;
        }
        let queue = dir.join(QUEUE_FILE);
        let stale = fs::metadata(&queue)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
        let Ok(lock) = File::open(dir.join(LOCK_FILE)) else {
            continue;
        };
        if stale
            && Flock::lock(lock, FlockArg::LockExclusiveNonblock).is_ok()
            && read(&queue).is_ok_and(|s| s.outbox.is_empty())
        {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Reads a saved queue; a missing file is an empty queue, an unreadable one
/// is moved aside (with a warning) rather than blocking every later report.
fn read(path: &Path) -> io::Result<Saved> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice(&bytes) {
        Ok(saved) => Ok(saved),
        Err(e) => {
            let aside = path.with_extension("json.unreadable");
            tracing::warn!(
                "the report queue {} is unreadable ({e}); moved to {} and starting a new one",
                path.display(),
                aside.display()
            );
            fs::rename(path, &aside)?;
            Ok(Saved::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::model::JobStatus;
    use crate::trainer::outbox::tests::{epoch, progress};
    use crate::trainer::testing::{endpoint, free_port, FakeDaemon};

    /// One `platform report` invocation: queue, save, deliver, save.
    async fn invoke(base: &Path, ep: &Endpoint, r: Report) -> Result<Delivery, ReportError> {
        let key = ep.job_id().unwrap().to_string();
        let mut s = Spool::open(base, &key).unwrap();
        s.push(r).unwrap();
        s.save().unwrap();
        let d = s.deliver_all(ep, false).await;
        s.save().unwrap();
        d
    }

    #[tokio::test]
    async fn later_invocations_deliver_the_backlog_first_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join(DIR_NAME);
        let id = Uuid::now_v7();
        let port = free_port();
        let ep = endpoint(port, id, Duration::from_secs(600));
        // The daemon is away: each invocation queues its report and returns.
        for e in 1..=3 {
            let d = invoke(&base, &ep, epoch(e)).await.unwrap();
            assert!(matches!(d, Delivery::Deferred(_)), "{d:?}");
        }
        let s = Spool::open(&base, &id.to_string()).unwrap();
        assert_eq!(s.len(), 3);
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(s.dir()), 0o700, "private: other users cannot read it");
        assert_eq!(mode(&s.dir().join(QUEUE_FILE)), 0o600);
        assert!(s.saved.down_since.is_some(), "the outage is remembered");
        drop(s);
        let daemon = FakeDaemon::start(port).await;
        let d = invoke(&base, &ep, epoch(4)).await.unwrap();
        assert!(matches!(d, Delivery::Delivered));
        let increasing = |s: &[i64]| s.windows(2).all(|w| w[0] < w[1]);
        let sequences = daemon.sequences();
        assert_eq!(sequences.len(), 4);
        assert!(increasing(&sequences), "{sequences:?}");
        let epochs: Vec<_> = daemon
            .applied()
            .iter()
            .map(|b| b["metrics"]["epoch"].as_i64().unwrap())
            .collect();
        assert_eq!(epochs, vec![1, 2, 3, 4]);
        // The sequence counter outlives the delivered reports.
        invoke(&base, &ep, progress(0.9)).await.unwrap();
        let sequences = daemon.sequences();
        assert_eq!(sequences.len(), 5);
        assert!(increasing(&sequences), "{sequences:?}");
        // Automatic numbers come after a trainer's own, and after those of
        // a queue in another working directory.
        let mut own = epoch(5);
        if let Report::Callback(u) = &mut own {
            u.sequence = Some(sequences[4] + 1);
        }
        invoke(&base, &ep, own).await.unwrap();
        invoke(&tmp.path().join("elsewhere"), &ep, epoch(6))
            .await
            .unwrap();
        assert_eq!(daemon.sequences().len(), 7, "none ignored as stale");
        let s = Spool::open(&base, &id.to_string()).unwrap();
        assert!(s.is_empty() && s.saved.down_since.is_none());
        s.remove().unwrap();
        assert!(
            !base.exists(),
            "the last job's queue takes its parent along"
        );
    }

    #[tokio::test]
    async fn the_outage_limit_and_a_cancel_end_delivery() {
        let tmp = tempfile::tempdir().unwrap();
        let id = Uuid::now_v7();
        let port = free_port();
        // No patience: the first failure is already too long.
        let impatient = endpoint(port, id, Duration::ZERO);
        let e = invoke(tmp.path(), &impatient, epoch(1)).await.unwrap_err();
        assert!(matches!(e, ReportError::TimedOut { .. }), "{e:?}");
        let s = Spool::open(tmp.path(), &id.to_string()).unwrap();
        assert_eq!(s.len(), 1, "nothing is dropped when giving up");
        drop(s);
        let daemon = FakeDaemon::start(port).await;
        daemon.cancel_job();
        let ep = endpoint(port, id, Duration::from_secs(600));
        let e = invoke(tmp.path(), &ep, epoch(2)).await.unwrap_err();
        assert!(
            matches!(e, ReportError::Ended(JobStatus::Cancelled)),
            "{e:?}"
        );
        let s = Spool::open(tmp.path(), &id.to_string()).unwrap();
        assert!(s.is_empty(), "a cancelled job's reports are dropped");
    }

    #[test]
    fn invocations_take_turns() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Spool::open(tmp.path(), "job").unwrap();
        let opened = Arc::new(AtomicBool::new(false));
        let second = {
            let (base, opened) = (tmp.path().to_path_buf(), opened.clone());
            std::thread::spawn(move || {
                let s = Spool::open(&base, "job").unwrap();
                opened.store(true, Ordering::SeqCst);
                s.len()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !opened.load(Ordering::SeqCst),
            "the second waits for the lock"
        );
        // The first removes the queue (its job ended): the second starts a
        // fresh one rather than writing into the removed directory.
        first.remove().unwrap();
        assert_eq!(second.join().unwrap(), 0);
        assert!(tmp.path().join("job").join(LOCK_FILE).exists());
    }

    #[test]
    fn empty_queues_of_ended_jobs_are_swept_after_a_day() {
        let tmp = tempfile::tempdir().unwrap();
        for key in ["old-empty", "old-full", "fresh-empty"] {
            let mut s = Spool::open(tmp.path(), key).unwrap();
            if key == "old-full" {
                s.push(progress(0.5)).unwrap();
            }
            s.save().unwrap();
        }
        let day_ago = SystemTime::now() - STALE - Duration::from_secs(60);
        for key in ["old-empty", "old-full"] {
            File::options()
                .write(true)
                .open(tmp.path().join(key).join(QUEUE_FILE))
                .unwrap()
                .set_modified(day_ago)
                .unwrap();
        }
        let _s = Spool::open(tmp.path(), "current").unwrap();
        assert!(!tmp.path().join("old-empty").exists());
        assert!(
            tmp.path().join("old-full").exists(),
            "undelivered reports stay"
        );
        assert!(
            tmp.path().join("fresh-empty").exists(),
            "maybe still running"
        );
    }

    #[test]
    fn an_unreadable_queue_is_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("job")).unwrap();
        fs::write(tmp.path().join("job").join(QUEUE_FILE), "{not json").unwrap();
        let s = Spool::open(tmp.path(), "job").unwrap();
        assert!(s.is_empty());
        assert!(tmp.path().join("job/queue.json.unreadable").exists());
    }
}
