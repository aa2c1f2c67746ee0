//! The single writer with group commit.
//!
//! Callers queue closures on a channel. The writer task takes everything
//! queued (up to [`MAX_BATCH`]), runs each closure inside its own SAVEPOINT
//! within one `BEGIN IMMEDIATE … COMMIT`, and only after the COMMIT returns
//! hands each caller its result. Under load this turns N fsyncs into one,
//! which is what the callback hot path needs; with no load a batch is one
//! write and adds no latency.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::db::{panic_message, DbError};

/// Most closures committed in one transaction.
const MAX_BATCH: usize = 512;

/// Sends the closure's result once the batch's fate is known.
type Finish = Box<dyn FnOnce(Result<(), Arc<str>>) + Send>;
/// A queued write: runs against the connection, returns how to finish.
type Op = Box<dyn FnOnce(&rusqlite::Connection) -> Finish + Send>;

pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
    /// Cancelled by [`Writer::close`]: queued writes still commit, new
    /// ones are refused.
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(conn: tokio_rusqlite::Connection) -> Writer {
        let (tx, rx) = mpsc::channel::<Op>(4096);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(conn, rx, stop.clone()));
        Writer {
            tx,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    pub(super) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<Result<T, E>>();
        let op: Op = Box::new(move |conn| {
            let outcome = in_savepoint(conn, f);
            Box::new(move |commit: Result<(), Arc<str>>| {
                let r = match commit {
                    Ok(()) => outcome,
                    Err(msg) => Err(E::from(DbError::Commit(msg.to_string()))),
                };
                // The caller may have gone away (client disconnected); the
                // write still happened, which is the point of committing first.
                let _ = done.send(r);
            })
        });
        self.tx
            .send(op)
            .await
            .map_err(|_| E::from(DbError::Closed))?;
        result.await.map_err(|_| E::from(DbError::Closed))?
    }

    /// Commits what is queued, refuses later writes (`Closed`) and closes
    /// the connection. Callers may still hold the handle: nothing waits
    /// for them to let go.
    pub(super) async fn close(&self) {
        self.stop.cancel();
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
fn in_savepoint<T, E, F>(conn: &rusqlite::Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&rusqlite::Connection) -> Result<T, E>,
    E: From<DbError>,
{
    // Cached statements: this runs once per write, and parsing the SQL
    // each time was a measurable share of the writer thread.
    let exec = |sql: &str| -> Result<(), E> {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(|_| ())
            .map_err(|e| E::from(DbError::from(e)))
    };
    exec("SAVEPOINT op")?;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))).unwrap_or_else(
        |p| {
            tracing::error!(panic = %panic_message(p.as_ref()), "a database write panicked; undoing it");
            Err(E::from(DbError::Panicked(panic_message(p.as_ref()))))
        },
    );
    if r.is_err() {
        exec("ROLLBACK TO op")?;
    }
    exec("RELEASE op")?;
    r
}

async fn run(
    conn: tokio_rusqlite::Connection,
    mut rx: mpsc::Receiver<Op>,
    stop: CancellationToken,
) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            // Queued writes first: after `close` they still commit.
            biased;
            n = rx.recv_many(&mut buf, MAX_BATCH) => n,
            _ = stop.cancelled() => {
                rx.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let batch = std::mem::take(&mut buf);
        let n = batch.len();
        let finished = conn
            .call(move |c| Ok::<_, rusqlite::Error>(commit_batch(c, batch)))
            .await;
        match finished {
            Ok((finishes, commit)) => {
                if let Err(msg) = &commit {
                    tracing::error!(error = %msg, writes = n, "a database commit failed");
                }
                for finish in finishes {
                    finish(commit.clone());
                }
            }
            // The connection is gone: the ops were dropped with it, so
            // their callers see `Closed`.
            Err(e) => tracing::error!(error = %e, "the database writer stopped"),
        }
        metrics::histogram!("platform_db_commit_batch_size").record(n as f64);
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the database writer failed");
    }
}

fn commit_batch(
    c: &mut rusqlite::Connection,
    batch: Vec<Op>,
) -> (Vec<Finish>, Result<(), Arc<str>>) {
    if let Err(e) = c.execute_batch("BEGIN IMMEDIATE") {
        // Nothing ran; dropping the ops drops their senders, so every caller
        // learns its write did not happen.
        return (Vec::new(), Err(e.to_string().into()));
    }
    let finishes: Vec<Finish> = batch.into_iter().map(|op| op(c)).collect();
    let commit = c.execute_batch("COMMIT").map_err(|e| {
        let _ = c.execute_batch("ROLLBACK");
        Arc::<str>::from(e.to_string())
    });
    (finishes, commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_undoes_only_its_own_changes() {
        // Before any connection, like Db::open (see alloc's test).
        super::super::alloc::install();
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER); BEGIN")
            .unwrap();
        let ok: Result<(), DbError> = in_savepoint(&c, |c| {
            c.execute("INSERT INTO t VALUES (1)", [])?;
            Ok(())
        });
        assert!(ok.is_ok());
        let failed: Result<(), DbError> = in_savepoint(&c, |c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            Err(DbError::Closed)
        });
        assert!(matches!(failed, Err(DbError::Closed)));
        // Again, to run the cached statements a second time.
        let ok: Result<(), DbError> = in_savepoint(&c, |c| {
            c.execute("INSERT INTO t VALUES (3)", [])?;
            Ok(())
        });
        assert!(ok.is_ok());
        c.execute_batch("COMMIT").unwrap();
        let xs: Vec<i64> = c
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(xs, vec![1, 3]);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_lives_on() {
        super::super::alloc::install();
        let dir = tempfile::tempdir().unwrap();
        let conn = tokio_rusqlite::Connection::open(dir.path().join("t.db"))
            .await
            .unwrap();
        conn.call(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
            .await
            .unwrap();
        let writer = Writer::start(conn);
        // Queued together, so the panicking write shares a batch with others.
        let (before, panicked, after) = tokio::join!(
            writer.write(|c| c
                .execute("INSERT INTO t VALUES (1)", [])
                .map_err(DbError::from)),
            writer.write(|c| -> Result<usize, DbError> {
                c.execute("INSERT INTO t VALUES (2)", [])?;
                panic!("a bug in one request");
            }),
            writer.write(|c| c
                .execute("INSERT INTO t VALUES (3)", [])
                .map_err(DbError::from)),
        );
        assert!(before.is_ok() && after.is_ok());
        match panicked {
            Err(DbError::Panicked(m)) => assert!(m.contains("a bug in one request"), "{m}"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        // The writer thread survived: later writes still commit.
        let xs: Vec<i64> = writer
            .write(|c| {
                c.execute("INSERT INTO t VALUES (4)", [])?;
                let mut st = c.prepare("SELECT x FROM t ORDER BY x")?;
                let xs = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok::<_, DbError>(xs)
            })
            .await
            .unwrap();
        assert_eq!(xs, vec![1, 3, 4]);
        writer.close().await;
    }
}
