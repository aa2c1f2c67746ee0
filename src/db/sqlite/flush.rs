//! The flush thread: a committed batch reaches the disk before anyone
//! hears of it, without the writer waiting for the disk.
//!
//! In WAL mode the writer commits with `synchronous=NORMAL`: COMMIT
//! appends the batch's frames to the WAL file and returns at once. The
//! writer hands the batch's answers to this thread and runs the next
//! batch; this thread `fdatasync`s the WAL, once for every batch handed
//! over since its last flush, and only then answers them. So every
//! acknowledged write survives a power loss, as with `synchronous=FULL`,
//! while the flush of one batch overlaps the execution of the next (with
//! FULL, SQLite syncs inside COMMIT and the writer thread sat idle for the
//! disk on every batch). Checkpoints need nothing from here: with NORMAL,
//! SQLite syncs the WAL before a checkpoint copies it and the database
//! file after.
//!
//! What this gives up: another connection can read a batch before its
//! flush ends (a power loss then loses what it read, never what was
//! acknowledged).
//!
//! A failed flush leaves unknown what reached the disk (the kernel may
//! already have dropped the pages it could not write): the batches it
//! covered fail, and so does every later flush, so the writer stops
//! taking writes until the daemon restarts.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Makes everything written so far durable.
pub(super) type FlushFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// Answers a batch's callers, given how its flush went (`None`: on disk).
pub(super) type Answer = Box<dyn FnOnce(Option<&std::io::Error>) + Send>;

/// A batch waiting for its flush.
struct Handed {
    /// It changed something (a batch that only read has nothing to flush,
    /// but is still answered after the batches before it).
    changed: bool,
    answer: Answer,
}

pub(super) struct Flusher {
    tx: Option<mpsc::Sender<Handed>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl Flusher {
    /// Starts the thread that runs `flush` (`None`: SQLite syncs inside
    /// COMMIT, and batches are answered in order as they come).
    pub(super) fn start(flush: Option<FlushFn>) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::channel::<Handed>();
        let failed = Arc::new(AtomicBool::new(false));
        let failing = failed.clone();
        let thread = std::thread::Builder::new()
            .name("platform-flush".into())
            .spawn(move || run(rx, flush, &failing))?;
        Ok(Flusher {
            tx: Some(tx),
            thread: Some(thread),
            failed,
        })
    }

    /// Queues a committed batch's answers behind its flush.
    pub(super) fn hand_over(&self, changed: bool, answer: Answer) {
        if let Some(tx) = &self.tx {
            if let Err(mpsc::SendError(h)) = tx.send(Handed { changed, answer }) {
                // The thread is gone (it panicked): nothing can make the
                // batch durable any more.
                let e = std::io::Error::other("the database flush thread stopped");
                self.failed.store(true, Ordering::Relaxed);
                (h.answer)(Some(&e));
            }
        }
    }

    /// A flush failed: nothing written since can be trusted to the disk.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Flushes and answers everything handed over, then stops the thread.
    pub(super) fn finish(mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the database flush thread panicked");
            }
        }
    }
}

fn run(rx: mpsc::Receiver<Handed>, mut flush: Option<FlushFn>, failed: &AtomicBool) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let changed = group.iter().any(|h| h.changed);
        let outcome = match &mut flush {
            Some(flush) if changed && !failed.load(Ordering::Relaxed) => {
                let t = std::time::Instant::now();
                let r = flush();
                metrics::histogram!("platform_db_flush_seconds").record(t.elapsed().as_secs_f64());
                r
            }
            _ if failed.load(Ordering::Relaxed) => Err(std::io::Error::other(
                "an earlier flush to disk failed, so later writes cannot be made durable",
            )),
            _ => Ok(()),
        };
        if let Err(e) = &outcome {
            if !failed.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, "flushing the database to disk failed: it takes no more writes until the daemon restarts");
            }
        }
        metrics::histogram!("platform_db_flush_batches").record(group.len() as f64);
        for h in group {
            (h.answer)(outcome.as_ref().err());
        }
    }
}

/// Flushes the WAL file beside the database at `db`. The file is opened on
/// the first flush (it exists once a transaction committed) and again if it
/// was replaced; only its data is synced (`fdatasync`), as SQLite does.
pub(super) fn wal(db: PathBuf) -> FlushFn {
    let mut path = db.into_os_string();
    path.push("-wal");
    let path = PathBuf::from(path);
    let mut open: Option<(File, u64, u64)> = None;
    Box::new(move || {
        let now = std::fs::metadata(&path)?;
        let same = open
            .as_ref()
            .is_some_and(|(_, dev, ino)| (*dev, *ino) == (now.dev(), now.ino()));
        if !same {
            // Only the WAL file: SQLite's locks live on the database and
            // `-shm` files, which closing a descriptor of ours could drop.
            let f = File::open(&path)?;
            let m = f.metadata()?;
            open = Some((f, m.dev(), m.ino()));
        }
        match &open {
            Some((f, _, _)) => f.sync_data(),
            None => Ok(()),
        }
    })
}
