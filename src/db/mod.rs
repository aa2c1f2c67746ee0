//! The embedded SQLite database: opening, migrations, a pool of readers and
//! one group-committing writer.
//!
//! SQLite allows one writer at a time, so every write goes through a single
//! writer task ([`writer`]) that packs whatever writes are queued into one
//! transaction and one fsync. A write's future resolves only after its
//! transaction has committed with `synchronous=FULL`, which is what makes a
//! 2xx durable across `kill -9`. Reads go to a small round-robin pool of
//! read-only connections that WAL mode lets run beside the writer.

mod alloc;
pub mod jobs;
pub mod metrics;
pub mod migrations;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::OpenFlags;

pub use writer::WriteError;

/// Database failures (the server answers 500/503 for these).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database is shutting down.
    #[error("the database is closed")]
    Closed,
    /// The committing transaction failed; the write was not applied.
    #[error("the database could not commit: {0}")]
    Commit(String),
    /// The file was written by a newer `platform`.
    #[error("the database at {path} has schema version {found}, newer than this binary understands ({supported}); upgrade platform or point DATABASE_URL at another file")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: usize,
        /// The newest version this binary knows.
        supported: usize,
    },
    /// Migrating the schema failed.
    #[error("cannot migrate the database at {path}: {message}")]
    Migration {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A stored value could not be decoded (corruption or a bug).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<tokio_rusqlite::Error<rusqlite::Error>> for DbError {
    fn from(e: tokio_rusqlite::Error<rusqlite::Error>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => DbError::Sqlite(e),
            tokio_rusqlite::Error::Close((_, e)) => DbError::Sqlite(e),
            _ => DbError::Closed,
        }
    }
}

impl From<tokio_rusqlite::Error<DbError>> for DbError {
    fn from(e: tokio_rusqlite::Error<DbError>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => e,
            tokio_rusqlite::Error::Close((_, e)) => DbError::Sqlite(e),
            _ => DbError::Closed,
        }
    }
}

/// Number of read-only connections (each has its own thread).
const READERS: usize = 2;

/// Handle to the database; cheap to share behind an `Arc`.
pub struct Db {
    path: PathBuf,
    writer: writer::Writer,
    readers: Vec<tokio_rusqlite::Connection>,
    next_reader: AtomicUsize,
}

impl Db {
    /// Opens (creating if needed) the database file, applies migrations and
    /// starts the writer.
    pub async fn open(path: &Path) -> Result<Db, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Migration {
                path: path.to_path_buf(),
                message: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        if !alloc::install() {
            tracing::debug!("SQLite keeps the C allocator (it was initialised before)");
        }
        let owned = path.to_path_buf();
        let conn = tokio_rusqlite::Connection::open(path).await?;
        conn.call(move |c| -> Result<(), DbError> {
            configure(c)?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            migrate(c, &owned)
        })
        .await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = tokio_rusqlite::Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .await?;
            r.call(|c| configure(c)).await?;
            readers.push(r);
        }
        Ok(Db {
            path: path.to_path_buf(),
            writer: writer::Writer::start(conn),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read-only connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        Ok(self.readers[i].call(move |c| f(c)).await?)
    }

    /// Runs `f` inside the next group-committed transaction and resolves once
    /// that transaction is durable. An `Err` from `f` rolls back only `f`'s
    /// own changes.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// [`Db::close`] for a shared handle: waits up to `wait` for the other
    /// holders (connection tasks winding down after a graceful shutdown)
    /// to drop theirs. Returns false, leaving SQLite to recover the WAL on
    /// the next start, if they do not.
    pub async fn close_shared(mut db: std::sync::Arc<Db>, wait: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match std::sync::Arc::try_unwrap(db) {
                Ok(db) => {
                    db.close().await;
                    return true;
                }
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    db = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(_) => return false,
            }
        }
    }

    /// Flushes queued writes and closes every connection (checkpointing the WAL).
    pub async fn close(self) {
        // Readers first: SQLite checkpoints and removes the WAL only when
        // the last connection closes, and a read-only one cannot.
        for r in self.readers {
            if let Err(e) = r.close().await {
                tracing::warn!(error = %e, "closing a database reader failed");
            }
        }
        self.writer.close().await;
    }
}

fn configure(c: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    // Room for every hot statement (the default of 16 would start evicting).
    c.set_prepared_statement_cache_capacity(64);
    // FULL: a commit is on disk before the write is acknowledged.
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(c: &mut rusqlite::Connection, path: &Path) -> Result<(), DbError> {
    let supported = migrations::latest_version();
    let found: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > supported {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    migrations::migrations()
        .to_latest(c)
        .map_err(|e| DbError::Migration {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// The current time, truncated to microseconds (what the database stores).
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t - chrono::Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos() % 1000))
}

/// Fixed-width RFC 3339, so stored timestamps sort as text.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a stored timestamp.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, DbError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Corrupt(format!("timestamp {s:?}: {e}")))
}
