//! Checkpoints beside the writer, so that copying the log back into the
//! database file rarely holds up a commit.
//!
//! A checkpoint copies the newest version of every page in the log into the
//! file and syncs the file. Left to SQLite, it runs inside the commit that
//! takes the log past a threshold, and every write queued behind that
//! commit waits for the copy and the file's sync: under callback load, a
//! few milliseconds several times a second, which is what a request's p99
//! was made of (issue 17).
//!
//! Here the writer counts the log's pages after each commit (SQLite's WAL
//! hook, which replaces its own automatic checkpoint) and:
//! - every [`BESIDE_EVERY`] pages, wakes the checkpointer: a thread with a
//!   connection of its own that runs a PASSIVE checkpoint, which copies
//!   what no reader still needs while the writer goes on committing;
//! - past [`INLINE_FROM`] pages, checkpoints itself, between two batches
//!   (after answering the first). It has to: a log that the writer appends
//!   to all the time is never wholly copied by a checkpoint beside it, and
//!   SQLite starts the log over only once it is. By then the checkpointer
//!   has copied all but the last stretch, so this one is short.
//!
//! A checkpoint never changes what a commit made durable: the log is synced
//! before it is copied (`synchronous=FULL`), and a crash midway leaves the
//! log to be copied again. If the checkpointer cannot open its connection
//! it logs why and the writer's own checkpoints do the work alone.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

/// Log pages between two wake-ups of the checkpointer.
pub(super) const BESIDE_EVERY: i32 = 1_000;
/// Log pages from which the writer checkpoints itself after a batch.
pub(super) const INLINE_FROM: i32 = 8_000;

thread_local! {
    /// The log's pages after the writer thread's last commit (set by the
    /// WAL hook, which runs on the committing thread and takes no state).
    static LOG_PAGES: Cell<i32> = const { Cell::new(0) };
}

fn note_log_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    LOG_PAGES.set(pages);
    Ok(())
}

/// What the writer does about the log between batches.
pub(super) struct Log {
    path: PathBuf,
    beside: Beside,
    /// The checkpointer was last woken at this many pages.
    woken_at: i32,
}

impl Log {
    /// Counts `writer`'s log from now on (instead of SQLite checkpointing
    /// in its commits); the checkpointer over the same file starts when
    /// first needed, so that start-up and an idle daemon do without its
    /// thread and connection. A database with no file has none.
    pub(super) fn start(writer: &Connection) -> Log {
        writer.wal_hook(Some(note_log_pages));
        let path = writer.path().filter(|p| !p.is_empty()).map(PathBuf::from);
        Log {
            beside: if path.is_some() {
                Beside::NotYet
            } else {
                Beside::Unavailable
            },
            path: path.unwrap_or_default(),
            woken_at: 0,
        }
    }

    /// After a batch was answered: wakes the checkpointer each
    /// [`BESIDE_EVERY`] pages, checkpoints on `writer` past [`INLINE_FROM`].
    pub(super) fn after_batch(&mut self, writer: &Connection) {
        let pages = LOG_PAGES.get();
        if pages >= INLINE_FROM {
            LOG_PAGES.set(0);
            self.woken_at = 0;
            if let Err(e) = checkpoint(writer) {
                tracing::warn!(error = %e, "checkpointing the database log failed");
            }
        } else if pages < self.woken_at {
            // The log started over.
            self.woken_at = 0;
        } else if pages - self.woken_at >= BESIDE_EVERY {
            self.woken_at = pages;
            if let Beside::NotYet = self.beside {
                self.beside = match Checkpointer::start(&self.path) {
                    Some(started) => Beside::Running(started),
                    None => Beside::Unavailable,
                };
            }
            if let Beside::Running(beside) = &self.beside {
                beside.wake();
            }
        }
    }

    /// Stops the checkpointer and closes its connection, so that the
    /// writer's connection is the database's last and its close copies
    /// the whole log back and deletes it.
    pub(super) fn stop(self) {
        if let Beside::Running(beside) = self.beside {
            beside.stop();
        }
    }
}

enum Beside {
    NotYet,
    Running(Checkpointer),
    /// Its thread could not start: the writer checkpoints alone.
    Unavailable,
}

/// A PASSIVE checkpoint: copies what it can without waiting for anyone.
fn checkpoint(c: &Connection) -> rusqlite::Result<()> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

struct Checkpointer {
    wake: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Checkpointer> {
        // One pending wake-up is enough: it checkpoints everything so far.
        let (wake, woken) = mpsc::sync_channel(1);
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || run(&path, woken));
        match thread {
            Ok(thread) => Some(Checkpointer { wake, thread }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the database checkpointer; the writer checkpoints alone");
                None
            }
        }
    }

    fn wake(&self) {
        // Full: a wake-up is pending already. Disconnected: the thread
        // could not open its connection (and said so).
        let _ = self.wake.try_send(());
    }

    fn stop(self) {
        drop(self.wake);
        if self.thread.join().is_err() {
            tracing::error!("the database checkpointer panicked");
        }
    }
}

fn run(path: &Path, woken: Receiver<()>) {
    // Read-write (a checkpoint writes the file), never creating it.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = match Connection::open_with_flags(path, flags) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "the database checkpointer cannot open the database; the writer checkpoints alone");
            return;
        }
    };
    // Syncs the file after copying, as the writer's own checkpoints do.
    if let Err(e) = c.pragma_update(None, "synchronous", "FULL") {
        tracing::warn!(error = %e, "the database checkpointer cannot configure its connection");
        return;
    }
    while woken.recv().is_ok() {
        if let Err(e) = checkpoint(&c) {
            tracing::warn!(error = %e, "checkpointing the database log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wal_db(dir: &tempfile::TempDir) -> (PathBuf, Connection) {
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", "FULL").unwrap();
        c.execute_batch("CREATE TABLE filler (x BLOB)").unwrap();
        (path, c)
    }

    fn fill(c: &Connection, pages: i64) {
        c.execute("INSERT INTO filler VALUES (zeroblob(?1))", [pages * 4096])
            .unwrap();
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// The writer's own checkpoint: none below [`INLINE_FROM`] pages of
    /// log (SQLite's own, at 1,000, is off), one past it.
    #[test]
    fn the_writer_checkpoints_itself_only_past_its_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let (path, c) = wal_db(&dir);
        c.wal_hook(Some(note_log_pages));
        let mut log = Log {
            path: path.clone(),
            beside: Beside::Unavailable,
            woken_at: 0,
        };
        let before = size(&path);
        fill(&c, 2_000);
        log.after_batch(&c);
        assert!(
            size(&path) < before + 1_000 * 4096,
            "2,000 pages went into the file: something checkpointed"
        );
        fill(&c, 6_500);
        log.after_batch(&c);
        assert!(
            size(&path) > before + 8_000 * 4096,
            "past {INLINE_FROM} pages the writer did not checkpoint"
        );
    }

    /// The checkpointer sleeps below [`BESIDE_EVERY`] new pages and copies
    /// the log once woken, with no help from the writer.
    #[test]
    fn the_checkpointer_copies_the_log_once_it_grew_a_step() {
        let dir = tempfile::tempdir().unwrap();
        let (path, c) = wal_db(&dir);
        let mut log = Log::start(&c);
        let before = size(&path);
        fill(&c, 500);
        log.after_batch(&c);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            size(&path) < before + 400 * 4096,
            "500 pages of log were copied: the checkpointer woke too early"
        );
        fill(&c, 1_000);
        log.after_batch(&c);
        let deadline = Instant::now() + Duration::from_secs(20);
        while size(&path) < before + 1_500 * 4096 {
            assert!(
                Instant::now() < deadline,
                "the checkpointer did not copy the log"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        log.stop();
    }
}
