//! The single writer with group commit.
//!
//! Callers queue closures on a channel. The writer task takes everything
//! queued (up to [`MAX_BATCH`]), runs each closure inside its own SAVEPOINT
//! within one `BEGIN IMMEDIATE … COMMIT`, and only after the COMMIT returns
//! hands each caller its result. Under load this turns N fsyncs into one,
//! which is what the callback hot path needs; with no load a batch is one
//! write and adds no latency.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::DbError;

/// Most closures committed in one transaction.
const MAX_BATCH: usize = 512;

/// Sends the closure's result once the batch's fate is known.
type Finish = Box<dyn FnOnce(Result<(), Arc<str>>) + Send>;
/// A queued write: runs against the connection, returns how to finish.
type Op = Box<dyn FnOnce(&rusqlite::Connection) -> Finish + Send>;

/// Error type for writes whose closure cannot fail on its own.
pub type WriteError = DbError;

pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub(super) fn start(conn: tokio_rusqlite::Connection) -> Writer {
        let (tx, rx) = mpsc::channel::<Op>(4096);
        let task = tokio::spawn(run(conn, rx));
        Writer { tx, task }
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

    pub(super) async fn close(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the database writer task failed");
        }
    }
}

/// Runs `f` so that an `Err` undoes only its own changes.
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
            .map_err(|e| E::from(DbError::Sqlite(e)))
    };
    exec("SAVEPOINT op")?;
    let r = f(conn);
    if r.is_err() {
        exec("ROLLBACK TO op")?;
    }
    exec("RELEASE op")?;
    r
}

async fn run(conn: tokio_rusqlite::Connection, mut rx: mpsc::Receiver<Op>) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
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
}
