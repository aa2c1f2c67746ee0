//! Reading a whole SQLite database out, table by table, for `platform db
//! migrate`, and counting its rows for `platform db status`.
//!
//! Rows leave as SQLite's own owned values; what they become on the other
//! side is the target's business (`db/postgres/import.rs`). Points leave in
//! the portable layout PostgreSQL keeps (`metrics`, `system_metrics`: the
//! job's id, the whole map, the time as RFC 3339), decoded from the
//! compact one this file stores (see `metrics.rs`). Everything is
//! read inside one read transaction, so the counts and the rows are one
//! snapshot even if something wrote to the file meanwhile.

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::OpenFlags;

use super::{alloc, configure, metrics, migrate, migrations};
use crate::db::downsample::MetricTable;
use crate::db::{quote, DbError};

/// An open source database, its snapshot pinned.
pub struct Export {
    conn: rusqlite::Connection,
}

impl Export {
    /// Opens the file, brings its schema to this binary's version (what
    /// `serve` would do on start) and pins a read snapshot.
    pub fn open(path: &Path) -> Result<Export, DbError> {
        no_file(path)?;
        alloc::install();
        let mut conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        migrate(&mut conn, path)?;
        conn.execute_batch("BEGIN DEFERRED")?;
        // The snapshot starts at the first read, not at BEGIN.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        Ok(Export { conn })
    }

    /// Rows in `table`.
    pub fn count(&self, table: &str) -> Result<i64, DbError> {
        count(
            &self.conn,
            MetricTable::named(table).map_or(table, |p| p.compact),
        )
    }

    /// The columns of `table`, in table order.
    pub fn columns(&self, table: &str) -> Result<Vec<String>, DbError> {
        if let Some(points) = MetricTable::named(table) {
            return Ok(metrics::portable_columns(points));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
        let names = stmt
            .query_map([table], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    }

    /// Every row of `table` (the named columns, in rowid order; points in
    /// the portable layout), handed to `each` in batches of up to `batch`
    /// rows; stops at `each`'s first error.
    pub fn rows<E: From<DbError>>(
        &self,
        table: &str,
        columns: &[String],
        batch: usize,
        mut each: impl FnMut(Vec<Vec<Value>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let points = MetricTable::named(table);
        let sql = match points {
            Some(points) => metrics::portable_select(points),
            None => {
                let list = columns
                    .iter()
                    .map(|c| quote(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("SELECT {list} FROM {}", quote(table))
            }
        };
        let mut stmt = self.conn.prepare(&sql).map_err(DbError::from)?;
        let mut rows = stmt.query([]).map_err(DbError::from)?;
        let mut pending = Vec::with_capacity(batch);
        while let Some(row) = rows.next().map_err(DbError::from)? {
            let values = match points {
                Some(points) => metrics::portable_row(row, points)?,
                None => (0..columns.len())
                    .map(|i| row.get::<_, Value>(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(DbError::from)?,
            };
            pending.push(values);
            if pending.len() == batch {
                each(std::mem::replace(&mut pending, Vec::with_capacity(batch)))?;
            }
        }
        if !pending.is_empty() {
            each(pending)?;
        }
        Ok(())
    }
}

/// What `platform db status` shows of a SQLite file, read-only: its schema
/// version and the rows of each of its tables, named as on PostgreSQL
/// (derived data left out).
pub fn status(path: &Path) -> Result<(usize, Vec<(String, i64)>), DbError> {
    no_file(path)?;
    alloc::install();
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // Under the names both backends share (what `db migrate` copies).
    let mut tables = tables(&conn)?
        .into_iter()
        .filter(|t| !metrics::DERIVED.contains(&t.as_str()))
        .map(|t| {
            let shown = MetricTable::both()
                .into_iter()
                .find(|p| p.compact == t)
                .map_or_else(|| t.clone(), |p| p.name.to_string());
            count(&conn, &t).map(|n| (shown, n))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tables.sort();
    Ok((usize::try_from(version).unwrap_or(0), tables))
}

/// Refuses a path with no file (opening would create an empty database).
fn no_file(path: &Path) -> Result<(), DbError> {
    if path.is_file() {
        return Ok(());
    }
    Err(DbError::Unavailable(format!(
        "there is no database file at {}",
        path.display()
    )))
}

/// The schema version this binary writes.
pub fn latest_version() -> usize {
    migrations::latest_version()
}

/// The schema's own tables (not SQLite's), by name.
fn tables(conn: &rusqlite::Connection) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

fn count(conn: &rusqlite::Connection, table: &str) -> Result<i64, DbError> {
    Ok(
        conn.query_row(&format!("SELECT count(*) FROM {}", quote(table)), [], |r| {
            r.get(0)
        })?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `db migrate` copies the tables `db::transfer::TABLES` names: a table
    /// added by a migration but missing there would be left behind. The
    /// point tables travel under their portable names, and only derived
    /// data stays: `metric_blocks` is rebuilt from the points (see
    /// `metrics.rs`) and PostgreSQL has no such table.
    #[test]
    fn the_copy_list_names_every_table() {
        alloc::install();
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        migrations::migrations().to_latest(&mut c).unwrap();
        let mut found = tables(&c).unwrap();
        found.sort();
        let mut listed: Vec<String> = crate::db::transfer::TABLES
            .iter()
            .map(|t| MetricTable::named(t).map_or(*t, |p| p.compact))
            .chain(metrics::DERIVED.iter().copied())
            .map(|t| t.to_string())
            .collect();
        listed.sort();
        assert_eq!(found, listed);
    }
}
