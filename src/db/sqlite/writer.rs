//! The single writer with group commit.
//!
//! Callers queue closures on a channel. The writer's loop, which runs on
//! the connection's own thread, blocks for the first and takes everything
//! else queued (up to [`MAX_BATCH`]), runs each closure inside its own
//! SAVEPOINT within one `BEGIN IMMEDIATE … COMMIT`, and only after the
//! COMMIT returns hands each caller its result. Under load this turns N
//! fsyncs into one, which is what the callback hot path needs; with no
//! load a batch is one write and adds no latency.
//!
//! The writer also remembers whether the last write failed because the disk
//! is full (SQLite's `SQLITE_FULL`, or an I/O error whose errno is
//! `ENOSPC`): health checks report it until a later write commits changes.
//!
//! It also keeps the committed record of each running job it last changed
//! ([`JobCache`]), so the next callback for that job skips reading the row
//! and its attempts back: that read was the largest part of a callback's
//! write. The cache is trusted only as far as this writer's own writes go:
//! any write that is not a [`Writer::write_job`] empties it first, and so
//! does a batch that does not commit.
//!
//! Nothing commits before the writer's [`Gate`] passed: the whole-file
//! integrity check that runs after the database opened (see `check`).
//! Writes queued meanwhile wait for it; if it fails, they and every later
//! write fail with `Closed`, so a damaged file is never written to.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::checkpoint;
use super::metrics as points;
use crate::db::{panic_message, DbError};
use crate::model::JobRecord;

/// Most closures committed in one transaction.
const MAX_BATCH: usize = 512;
/// Most records [`JobCache`] holds (running jobs; past it, it starts over).
const CACHED_JOBS: usize = 10_000;
/// Why a batch failed when SQLite rolled its transaction back by itself.
const ROLLED_BACK: &str = "a write failed and the database rolled back its whole transaction";

/// Why a batch did not commit (cloned to every caller in it).
#[derive(Debug, Clone)]
struct CommitError {
    message: Arc<str>,
    disk_full: bool,
}

impl CommitError {
    fn new(c: &rusqlite::Connection, e: &rusqlite::Error) -> Self {
        CommitError {
            message: e.to_string().into(),
            disk_full: is_disk_full(c, e),
        }
    }

    fn to_db_error(&self) -> DbError {
        if self.disk_full {
            DbError::DiskFull(self.message.to_string())
        } else {
            DbError::Commit(self.message.to_string())
        }
    }
}

/// What must pass before the first write commits. It is given the
/// writer's stop token ([`Writer::close`] cancels it) and should then end
/// early with an error.
pub(super) type Gate = Pin<Box<dyn Future<Output = Result<(), DbError>> + Send>>;

/// The gate's outcome, once known.
type Opened = Option<Result<(), DbError>>;

/// Sends the closure's result once the batch's fate is known.
type Finish = Box<dyn FnOnce(Result<(), CommitError>) + Send>;
/// A queued write: runs against the connection, notes what it hit, returns
/// how to finish.
type Op = Box<dyn FnOnce(&rusqlite::Connection, &mut Notes) -> Finish + Send>;

/// What the writes of one batch ran into, and the cache they share.
#[derive(Default)]
struct Notes {
    /// A write failed because the disk is full.
    disk_full: bool,
    cache: JobCache,
}

/// Running jobs as this writer last stored them (see the module doc).
#[derive(Default)]
pub(super) struct JobCache {
    jobs: HashMap<Uuid, JobRecord>,
    /// Training points of each job stored after its last block
    /// (`metrics::settle`); a job not here is counted on its next point.
    open_points: HashMap<i64, usize>,
}

impl JobCache {
    /// Takes `id`'s record out: a write that then fails leaves no entry.
    pub(super) fn take(&mut self, id: Uuid) -> Option<JobRecord> {
        self.jobs.remove(&id)
    }

    /// Keeps `rec` as stored by the write now running, if its job runs on.
    pub(super) fn keep(&mut self, rec: &JobRecord) {
        if rec.job.status.is_terminal() {
            return;
        }
        if self.jobs.len() >= CACHED_JOBS {
            self.jobs.clear();
        }
        self.jobs.insert(rec.job.id, rec.clone());
    }

    /// Notes `added` training points just stored for job number `job`,
    /// closing its blocks when they reach a whole one.
    pub(super) fn points_added(
        &mut self,
        c: &rusqlite::Connection,
        job: i64,
        added: usize,
    ) -> Result<(), DbError> {
        let open = match self.open_points.get(&job) {
            Some(open) if open + added < points::BLOCK => open + added,
            _ => points::settle(c, job)?,
        };
        if self.open_points.len() >= CACHED_JOBS {
            self.open_points.clear();
        }
        self.open_points.insert(job, open);
        Ok(())
    }

    fn clear(&mut self) {
        self.jobs.clear();
        self.open_points.clear();
    }
}

pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
    /// Cancelled by [`Writer::close`]: queued writes still commit, new
    /// ones are refused.
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The last batch failed (in part) because the disk is full.
    disk_full: Arc<AtomicBool>,
    /// Whether the gate passed, once it is known.
    opened: watch::Receiver<Opened>,
}

impl Writer {
    /// The writer over `conn`; writes commit once the gate that `gate`
    /// makes (from the writer's stop token) passed, at once without one.
    pub(super) fn start(
        conn: tokio_rusqlite::Connection,
        gate: impl FnOnce(CancellationToken) -> Option<Gate>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel::<Op>(4096);
        let stop = CancellationToken::new();
        let disk_full = Arc::new(AtomicBool::new(false));
        let (open, opened) = watch::channel(None);
        let gate = gate(stop.clone());
        let (stopped, full) = (stop.clone(), disk_full.clone());
        let task = tokio::spawn(async move {
            let passed = match gate {
                Some(gate) => gate.await,
                None => Ok(()),
            };
            let ok = passed.is_ok();
            open.send_replace(Some(passed));
            if ok {
                run(conn, rx, stopped, full).await;
            }
            // Else the queued writes are dropped unrun (their callers see
            // `Closed`), and so is the connection.
        });
        Writer {
            tx,
            stop,
            task: Mutex::new(Some(task)),
            disk_full,
            opened,
        }
    }

    /// Whether the gate has passed (or there was none).
    pub(super) fn passed(&self) -> bool {
        matches!(*self.opened.borrow(), Some(Ok(())))
    }

    /// Waits for the gate: `Ok` once writes may commit, else why not.
    pub(super) async fn opened(&self) -> Result<(), DbError> {
        let mut opened = self.opened.clone();
        let known = opened.wait_for(Option::is_some).await;
        match known.as_deref() {
            Ok(Some(passed)) => passed.clone(),
            _ => Err(DbError::Closed),
        }
    }

    /// Whether the last write failed because the disk is full (cleared by
    /// the next batch that commits changes).
    pub(super) fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    /// Queues `f` and resolves once its batch committed. `f` answers
    /// database failures in the outer `Result` and its own refusals (a
    /// rule saying no) in the inner one; both undo its changes, and the
    /// outer ones are also checked for a full disk.
    pub(super) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<Result<T, E>, DbError> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        // It may change any job row: no cached record can be trusted after.
        self.write_job(move |c, cache| {
            cache.clear();
            f(c)
        })
        .await
    }

    /// [`Writer::write`] for a change to one job that keeps [`JobCache`]
    /// true: `f` takes the job's record from the cache (or reads it) and
    /// keeps what it stored. A database error (its statements rolled back)
    /// empties the cache.
    pub(super) async fn write_job<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&rusqlite::Connection, &mut JobCache) -> Result<Result<T, E>, DbError>
            + Send
            + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<Result<T, E>>();
        let op: Op = Box::new(move |conn, notes| {
            if conn.is_autocommit() {
                // An earlier write of the batch made SQLite roll the
                // transaction back: running this one would commit it on its
                // own, outside the batch. It fails with the batch.
                return Box::new(move |commit: Result<(), CommitError>| {
                    let e = match commit {
                        Err(e) => e.to_db_error(),
                        Ok(()) => DbError::Commit(ROLLED_BACK.into()),
                    };
                    let _ = done.send(Err(E::from(e)));
                });
            }
            let cache = &mut notes.cache;
            let outcome = match in_savepoint(conn, |c| f(c, cache)) {
                Ok(r) => r,
                Err(e) => {
                    notes.disk_full |= matches!(e, DbError::DiskFull(_));
                    // Undone (a panic included): nothing it kept holds.
                    notes.cache.clear();
                    Err(E::from(e))
                }
            };
            Box::new(move |commit: Result<(), CommitError>| {
                let r = match commit {
                    Ok(()) => outcome,
                    Err(e) => Err(E::from(e.to_db_error())),
                };
                // The caller may have gone away (client disconnected); the
                // write still happened, which is the point of committing first.
                let _ = done.send(r);
            })
        });
        let queued = std::time::Instant::now();
        self.tx
            .send(op)
            .await
            .map_err(|_| E::from(DbError::Closed))?;
        let answer = result.await.map_err(|_| E::from(DbError::Closed))?;
        // Queue, batch and commit: the write's whole wait.
        metrics::histogram!("platform_db_write_seconds").record(queued.elapsed().as_secs_f64());
        answer
    }

    /// Commits what is queued, refuses later writes (`Closed`) and closes
    /// the connection. Callers may still hold the handle: nothing waits
    /// for them to let go.
    pub(super) async fn close(&self) {
        self.stop.cancel();
        // Wakes the loop if it waits for work: it sees `stop` and closes
        // the queue (refused once it is closed already).
        let wake: Op = Box::new(|_, _| Box::new(|_| ()));
        let _ = self.tx.send(wake).await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the database writer task failed");
            }
        }
    }
}

/// Runs `f` so that an `Err` (or a panic) undoes only its own changes: a
/// bug hit by one request fails that request, never the writer thread and
/// with it every later write.
fn in_savepoint<T, E, F>(conn: &rusqlite::Connection, f: F) -> Result<Result<T, E>, DbError>
where
    F: FnOnce(&rusqlite::Connection) -> Result<Result<T, E>, DbError>,
{
    // Cached statements: this runs once per write, and parsing the SQL
    // each time was a measurable share of the writer thread.
    let exec = |sql: &str| -> Result<(), DbError> {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(|_| ())
            .map_err(DbError::from)
    };
    exec("SAVEPOINT op")?;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))).unwrap_or_else(
        |p| {
            tracing::error!(panic = %panic_message(p.as_ref()), "a database write panicked; undoing it");
            Err(DbError::Panicked(panic_message(p.as_ref())))
        },
    );
    if !matches!(r, Ok(Ok(_))) {
        if conn.is_autocommit() {
            // SQLite rolled back the whole transaction itself (it may on a
            // full disk or an I/O error): no savepoint is left to undo, and
            // the batch fails as a whole.
            return r;
        }
        exec("ROLLBACK TO op")?;
    }
    exec("RELEASE op")?;
    r
}

/// Whether `e` means the disk is full: `SQLITE_FULL` (SQLite's own answer
/// to `ENOSPC` on a write, and to `max_page_count`), or an I/O error whose
/// system errno is `ENOSPC` (e.g. growing the WAL index or syncing).
fn is_disk_full(c: &rusqlite::Connection, e: &rusqlite::Error) -> bool {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => true,
        Some(rusqlite::ErrorCode::SystemIoFailure) => {
            // SAFETY: the handle belongs to `c`, which outlives this call,
            // and this runs on the connection's own thread.
            let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(c.handle()) };
            std::io::Error::from_raw_os_error(errno).kind() == std::io::ErrorKind::StorageFull
        }
        _ => false,
    }
}

async fn run(
    conn: tokio_rusqlite::Connection,
    rx: mpsc::Receiver<Op>,
    stop: CancellationToken,
    disk_full: Arc<AtomicBool>,
) {
    // The loop runs on the connection's own thread, for as long as the
    // writer lives: a batch goes from the queue into SQLite, and its
    // answers out, without a hop through a tokio task (which, under load,
    // waited for a busy worker twice per batch while the writer idled).
    let looped = conn
        .call(move |c| {
            let log = checkpoint::Log::start(c);
            write_loop(c, rx, &stop, &disk_full, log);
            Ok::<_, rusqlite::Error>(())
        })
        .await;
    if let Err(e) = looped {
        // The connection is gone: the ops were dropped with it, so their
        // callers see `Closed`.
        tracing::error!(error = %e, "the database writer stopped");
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the database writer failed");
    }
}

/// Commits batches of what is queued until the queue is closed and empty
/// (`stop`: what is queued still commits, new writes are refused).
fn write_loop(
    c: &mut rusqlite::Connection,
    mut rx: mpsc::Receiver<Op>,
    stop: &CancellationToken,
    disk_full: &AtomicBool,
    mut log: checkpoint::Log,
) {
    let mut cache = JobCache::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        if stop.is_cancelled() {
            rx.close();
        }
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let Batch {
            finishes,
            commit,
            notes,
            changed,
        } = commit_batch(c, std::mem::take(&mut batch), std::mem::take(&mut cache));
        if let Err(e) = &commit {
            tracing::error!(error = %e.message, writes = n, "a database commit failed");
        }
        let full = notes.disk_full || commit.as_ref().is_err_and(|e| e.disk_full);
        // What the batch kept is true only if it committed.
        if commit.is_ok() {
            cache = notes.cache;
        }
        if full {
            if !disk_full.swap(true, Ordering::Relaxed) {
                tracing::error!("the disk is full: database writes fail until space is freed");
            }
        } else if commit.is_ok() && changed && disk_full.swap(false, Ordering::Relaxed) {
            tracing::info!("database writes succeed again: the disk has room");
        }
        for finish in finishes {
            finish(commit.clone());
        }
        metrics::histogram!("platform_db_commit_batch_size").record(n as f64);
        log.after_batch(c);
    }
    log.stop();
}

/// What committing one batch came to.
struct Batch {
    finishes: Vec<Finish>,
    commit: Result<(), CommitError>,
    notes: Notes,
    /// The batch changed rows (a write that stores nothing proves no room).
    changed: bool,
}

fn commit_batch(c: &mut rusqlite::Connection, batch: Vec<Op>, cache: JobCache) -> Batch {
    let mut notes = Notes {
        disk_full: false,
        cache,
    };
    if let Err(e) = c.execute_batch("BEGIN IMMEDIATE") {
        // Nothing ran; dropping the ops drops their senders, so every caller
        // learns its write did not happen.
        return Batch {
            finishes: Vec::new(),
            commit: Err(CommitError::new(c, &e)),
            notes,
            changed: false,
        };
    }
    let before = c.total_changes();
    let finishes: Vec<Finish> = batch.into_iter().map(|op| op(c, &mut notes)).collect();
    let changed = c.total_changes() != before;
    let commit = if c.is_autocommit() {
        Err(CommitError {
            message: ROLLED_BACK.into(),
            disk_full: notes.disk_full,
        })
    } else {
        c.execute_batch("COMMIT").map_err(|e| {
            let err = CommitError::new(c, &e);
            let _ = c.execute_batch("ROLLBACK");
            err
        })
    };
    Batch {
        finishes,
        commit,
        notes,
        changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule's refusal (inner `Err`) and a database failure (outer) both
    /// undo only their own write.
    #[test]
    fn a_failed_write_undoes_only_its_own_changes() {
        // Before any connection, like Db::open (see alloc's test).
        super::super::alloc::install();
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER); BEGIN")
            .unwrap();
        let insert = |c: &rusqlite::Connection, x: i64| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x]).map(|_| ())
        };
        let ok = in_savepoint(&c, |c| Ok(Ok::<_, DbError>(insert(c, 1)?)));
        assert!(matches!(ok, Ok(Ok(()))));
        let refused = in_savepoint(&c, |c| {
            insert(c, 2)?;
            Ok(Err::<(), _>(DbError::Closed))
        });
        assert!(matches!(refused, Ok(Err(DbError::Closed))));
        let failed = in_savepoint(&c, |c| -> Result<Result<(), DbError>, DbError> {
            insert(c, 3)?;
            Err(DbError::Backend("boom".into()))
        });
        assert!(matches!(failed, Err(DbError::Backend(_))));
        // Again, to run the cached statements a second time.
        let ok = in_savepoint(&c, |c| Ok(Ok::<_, DbError>(insert(c, 4)?)));
        assert!(matches!(ok, Ok(Ok(()))));
        c.execute_batch("COMMIT").unwrap();
        let xs: Vec<i64> = c
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(xs, vec![1, 4]);
    }

    async fn writer_over(dir: &tempfile::TempDir, setup: &'static str) -> Writer {
        super::super::alloc::install();
        let conn = tokio_rusqlite::Connection::open(dir.path().join("t.db"))
            .await
            .unwrap();
        conn.call(move |c| c.execute_batch(setup)).await.unwrap();
        Writer::start(conn, |_| None)
    }

    fn insert(
        x: i64,
    ) -> impl FnOnce(&rusqlite::Connection) -> Result<Result<(), DbError>, DbError> {
        move |c| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            Ok(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_over(&dir, "CREATE TABLE t (x INTEGER)").await;
        // Queued together, so the panicking write shares a batch with others.
        let (before, panicked, after) = tokio::join!(
            writer.write(insert(1)),
            writer.write(|c| -> Result<Result<(), DbError>, DbError> {
                c.execute("INSERT INTO t VALUES (2)", [])?;
                panic!("a bug in one request");
            }),
            writer.write(insert(3)),
        );
        assert!(before.is_ok() && after.is_ok());
        match panicked {
            Err(DbError::Panicked(m)) => assert!(m.contains("a bug in one request"), "{m}"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        // The writer thread survived: later writes still commit.
        writer.write(insert(4)).await.unwrap();
        assert_eq!(values(&writer).await, vec![1, 3, 4]);
        writer.close().await;
    }

    /// A gate (the start-up integrity check) that has not passed holds
    /// every write back; one that fails lets none commit.
    #[tokio::test]
    async fn no_write_commits_before_the_gate_passed() {
        super::super::alloc::install();
        let dir = tempfile::tempdir().unwrap();
        let start = |result: tokio::sync::oneshot::Receiver<Result<(), DbError>>| async {
            let conn = tokio_rusqlite::Connection::open(dir.path().join("t.db"))
                .await
                .unwrap();
            conn.call(|c| c.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
                .await
                .unwrap();
            Writer::start(conn, move |_| {
                let gate: Gate =
                    Box::pin(async move { result.await.unwrap_or(Err(DbError::Closed)) });
                Some(gate)
            })
        };
        let stored = || {
            let c = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
            c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };

        let (pass, gate) = tokio::sync::oneshot::channel();
        let writer = start(gate).await;
        let mut held = Box::pin(writer.write(insert(1)));
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut held).await;
        assert!(waited.is_err(), "a write committed before the gate passed");
        assert_eq!(stored(), 0);
        pass.send(Ok(())).unwrap();
        held.await.unwrap();
        writer.opened().await.unwrap();
        assert_eq!(stored(), 1);
        writer.close().await;

        let (fail, gate) = tokio::sync::oneshot::channel();
        let writer = start(gate).await;
        let queued = writer.write(insert(2));
        let damaged = DbError::Damaged {
            path: dir.path().join("t.db"),
            problems: "page 7: btreeInitPage() returns error code 11".into(),
        };
        fail.send(Err(damaged)).unwrap();
        assert!(matches!(queued.await, Err(DbError::Closed)));
        assert!(matches!(
            writer.opened().await,
            Err(DbError::Damaged { .. })
        ));
        assert!(matches!(
            writer.write(insert(3)).await,
            Err(DbError::Closed)
        ));
        assert_eq!(stored(), 1, "nothing committed after a failed gate");
        writer.close().await;
    }

    async fn values(writer: &Writer) -> Vec<i64> {
        writer
            .write(|c| {
                let mut st = c.prepare("SELECT x FROM t ORDER BY x")?;
                let xs = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(Ok::<_, DbError>(xs))
            })
            .await
            .unwrap()
    }

    /// A real `SQLITE_FULL`, without filling a disk: `max_page_count` caps
    /// the file, and SQLite answers a write that needs one more page the
    /// way it answers `ENOSPC`.
    #[tokio::test]
    async fn a_full_disk_is_reported_until_a_write_commits_again() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_over(&dir, "CREATE TABLE t (x INTEGER, pad BLOB)").await;
        let cap = |pages: i64| {
            move |c: &rusqlite::Connection| -> Result<Result<(), DbError>, DbError> {
                c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
                Ok(Ok(()))
            }
        };
        writer.write(cap(1)).await.unwrap();
        let big = |c: &rusqlite::Connection| -> Result<Result<(), DbError>, DbError> {
            c.execute("INSERT INTO t VALUES (0, zeroblob(100000))", [])?;
            Ok(Ok(()))
        };
        let full = writer.write(big).await;
        assert!(matches!(full, Err(DbError::DiskFull(_))), "{full:?}");
        assert!(writer.disk_full());
        // Sharing a batch with the failing write, other writes are answered
        // exactly as they were stored (SQLite may roll back the whole
        // transaction on SQLITE_FULL; then none is stored and all fail).
        let (one, failed, three) = tokio::join!(
            writer.write(insert(1)),
            writer.write(big),
            writer.write(insert(3))
        );
        assert!(matches!(failed, Err(DbError::DiskFull(_))), "{failed:?}");
        let stored = values(&writer).await;
        for (x, answer) in [(1, one), (3, three)] {
            assert_eq!(
                answer.is_ok(),
                stored.contains(&x),
                "{x}: {answer:?}, {stored:?}"
            );
            if let Err(e) = answer {
                assert!(matches!(e, DbError::DiskFull(_)), "{e:?}");
            }
        }
        assert!(writer.disk_full());
        // A write that stores nothing proves nothing: still full.
        writer.write(cap(1)).await.unwrap();
        assert!(writer.disk_full());
        // Room again (space freed): the next write that commits clears it.
        writer.write(cap(1_000_000)).await.unwrap();
        writer.write(big).await.unwrap();
        assert!(!writer.disk_full());
        writer.close().await;
    }
}
