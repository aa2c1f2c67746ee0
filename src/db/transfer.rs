//! Moving up from SQLite: `platform db migrate` copies every table of a
//! SQLite database into an empty PostgreSQL one and proves the counts
//! match; `platform db status` shows a database's backend, schema version
//! and rows per table, changing nothing.
//!
//! The source is read on a thread of its own (SQLite is blocking) inside
//! one read snapshot and streamed in batches over a small channel; the
//! target takes everything in one transaction, so a failed or refused copy
//! leaves it empty. Ids, numbers, timestamps, tokens' hashes and JSON
//! travel unchanged: a daemon started on the target serves the same jobs,
//! metric points, users and webhooks.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use tokio::sync::mpsc;

use super::postgres::import::{self, ImportError, TableCopy};
use super::sqlite::export::{self, Export};
use super::{DbError, DbUrl};

/// Every table, parents before children (the foreign keys hold at each
/// step). A test checks that this names every table SQLite's schema has.
pub const TABLES: &[&str] = &[
    "users",
    "api_tokens",
    "sweeps",
    "jobs",
    "job_attempts",
    "metrics",
    "system_metrics",
    "queue_state",
    "webhooks",
    "webhook_deliveries",
    "audit",
    "leases",
];

/// Rows read per batch from the source.
const BATCH: usize = 2_000;

/// A table and how many rows it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableRows {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: i64,
}

/// What `platform db status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DbStatus {
    /// `sqlite` or `postgresql`.
    pub backend: &'static str,
    /// The file, or the server's URL with the password masked.
    pub location: String,
    /// The schema version the database is at.
    pub schema_version: usize,
    /// The newest schema version this binary knows.
    pub latest_version: usize,
    /// Every table and its rows.
    pub tables: Vec<TableRows>,
}

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading or writing failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The target refused the rows.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Only SQLite → PostgreSQL is supported.
    #[error("db migrate copies a SQLite database into PostgreSQL: give --from sqlite:///path/to/platform.db and --to postgresql://user:password@host:5432/database")]
    Direction,
    /// The copy is incomplete (a bug or a concurrent writer on the target).
    #[error("table {table} has {target} rows in the target but {read} in the source; nothing was committed")]
    Counts {
        /// The table.
        table: String,
        /// Rows read.
        read: i64,
        /// Rows found.
        target: i64,
    },
}

/// The status of the database at `url`, read-only.
pub async fn status(url: &DbUrl) -> Result<DbStatus, DbError> {
    let (backend, location, (schema_version, tables), latest_version) = match url {
        DbUrl::Sqlite(path) => {
            let path = path.clone();
            let found = tokio::task::spawn_blocking(move || export::status(&path))
                .await
                .map_err(|e| DbError::Panicked(e.to_string()))??;
            ("sqlite", url.to_string(), found, export::latest_version())
        }
        DbUrl::Postgres(pg) => (
            "postgresql",
            pg.to_string(),
            import::status(pg).await?,
            import::latest_version(),
        ),
    };
    Ok(DbStatus {
        backend,
        location,
        schema_version,
        latest_version,
        tables: tables
            .into_iter()
            .map(|(table, rows)| TableRows { table, rows })
            .collect(),
    })
}

/// Copies the SQLite database `from` into the empty PostgreSQL database
/// `to`; `progress` hears of each table as its copy starts. Returns the
/// rows per table, verified on the target before the commit.
pub async fn migrate(
    from: &DbUrl,
    to: &DbUrl,
    mut progress: impl FnMut(&TableRows),
) -> Result<Vec<TableRows>, TransferError> {
    let (DbUrl::Sqlite(source), DbUrl::Postgres(target)) = (from, to) else {
        return Err(TransferError::Direction);
    };
    let mut client = import::connect(target).await?;
    let tx = import::begin(&mut client).await?;
    import::ensure_empty(&tx, TABLES).await?;
    let mut rx = read(source.clone());
    let mut copied = Vec::with_capacity(TABLES.len());
    let mut current: Option<TableCopy> = None;
    while let Some(msg) = rx.recv().await {
        match msg? {
            Read::Table {
                table,
                columns,
                rows,
            } => {
                if let Some(done) = current.take() {
                    done.finish().await?;
                }
                let counted = TableRows { table, rows };
                progress(&counted);
                current = Some(TableCopy::start(&tx, &counted.table, &columns).await?);
                copied.push(counted);
            }
            Read::Rows(rows) => {
                if let Some(copy) = current.as_mut() {
                    copy.write(rows).await?;
                }
            }
        }
    }
    if let Some(done) = current.take() {
        done.finish().await?;
    }
    if copied.len() != TABLES.len() {
        // The reader stopped early without saying why (it panicked).
        return Err(DbError::Panicked("the source reader stopped early".into()).into());
    }
    import::advance_sequences(&tx, TABLES).await?;
    for t in &copied {
        let found = import::count(&tx, &t.table).await?;
        if found != t.rows {
            return Err(TransferError::Counts {
                table: t.table.clone(),
                read: t.rows,
                target: found,
            });
        }
    }
    import::commit(tx).await?;
    Ok(copied)
}

/// What the source reader sends.
enum Read {
    /// A table starts: its columns and row count (same snapshot as the rows).
    Table {
        table: String,
        columns: Vec<String>,
        rows: i64,
    },
    /// Rows of the current table.
    Rows(Vec<Vec<Value>>),
}

/// Why the reader stopped: a database error to report, or the receiver gone.
enum Stop {
    Db(DbError),
    Gone,
}

impl From<DbError> for Stop {
    fn from(e: DbError) -> Self {
        Stop::Db(e)
    }
}

/// Starts reading `path` on its own thread; the channel closes when done.
fn read(path: PathBuf) -> mpsc::Receiver<Result<Read, DbError>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(Stop::Db(e)) = read_all(&path, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn read_all(path: &Path, tx: &mpsc::Sender<Result<Read, DbError>>) -> Result<(), Stop> {
    let send = |msg: Read| tx.blocking_send(Ok(msg)).map_err(|_| Stop::Gone);
    let source = Export::open(path)?;
    for table in TABLES {
        let columns = source.columns(table)?;
        send(Read::Table {
            table: table.to_string(),
            columns: columns.clone(),
            rows: source.count(table)?,
        })?;
        source.rows(table, &columns, BATCH, |rows| send(Read::Rows(rows)))?;
    }
    Ok(())
}
