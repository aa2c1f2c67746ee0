//! Filling an empty PostgreSQL database with another backend's rows, for
//! `platform db migrate`, and counting rows for `platform db status`.
//!
//! Everything happens in one transaction: the emptiness check, a binary
//! `COPY` per table, moving the sequences past the copied ids, and the
//! final counts. A failure anywhere leaves the target as it was. Values
//! arrive as SQLite's (null, integer, real, text, blob) and become what
//! the target column's type says: timestamps from RFC 3339 text, uuids,
//! booleans from 0/1, JSON kept byte for byte (key order and number
//! spelling survive), arrays from JSON arrays.

use std::error::Error as StdError;
use std::pin::Pin;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Transaction};
use rusqlite::types::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use uuid::Uuid;

use super::{fail, migrations, pool, start_error};
use crate::db::{quote, DbError, PgUrl};

/// Why rows cannot go in.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The target already holds data.
    #[error("the target database is not empty (table {table} has rows): migrate into a new, empty database")]
    NotEmpty {
        /// The first table found with rows.
        table: String,
    },
    /// A source column the target does not have.
    #[error("table {table} has a column {column} that the target database lacks; are both at the same schema version?")]
    MissingColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A value the target column cannot hold.
    #[error("cannot copy {table}.{column}: {message}")]
    Value {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong with the value.
        message: String,
    },
}

/// A connection to the target, its schema brought to this binary's version.
pub async fn connect(url: &PgUrl) -> Result<Object, DbError> {
    let pool = pool(url, 1)?;
    let mut client = pool.get().await.map_err(|e| start_error(url, &e))?;
    migrations::migrate(&mut client, &url.to_string()).await?;
    Ok(client)
}

/// Opens the transaction the whole copy happens in.
pub async fn begin(client: &mut Object) -> Result<Transaction<'_>, DbError> {
    client.transaction().await.map_err(fail)
}

/// Commits the copy.
pub async fn commit(tx: Transaction<'_>) -> Result<(), DbError> {
    tx.commit()
        .await
        .map_err(|e| DbError::Commit(super::describe(&e)))
}

/// Fails unless every one of `tables` is empty.
pub async fn ensure_empty(tx: &Transaction<'_>, tables: &[&str]) -> Result<(), ImportError> {
    for table in tables {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote(table));
        let any: bool = tx.query_one(&sql, &[]).await.map_err(fail)?.get(0);
        if any {
            return Err(ImportError::NotEmpty {
                table: table.to_string(),
            });
        }
    }
    Ok(())
}

/// One table's copy in progress: its column types, and the `COPY` stream.
pub struct TableCopy {
    table: String,
    columns: Vec<String>,
    types: Vec<Type>,
    writer: Pin<Box<BinaryCopyInWriter>>,
}

impl TableCopy {
    /// Starts `COPY table (columns) FROM STDIN` in binary.
    pub async fn start(
        tx: &Transaction<'_>,
        table: &str,
        columns: &[String],
    ) -> Result<TableCopy, ImportError> {
        let list = columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let probe = tx
            .prepare(&format!("SELECT * FROM {} LIMIT 0", quote(table)))
            .await
            .map_err(fail)?;
        let mut types = Vec::with_capacity(columns.len());
        for column in columns {
            let found = probe.columns().iter().find(|c| c.name() == column);
            match found {
                Some(c) => types.push(c.type_().clone()),
                None => {
                    return Err(ImportError::MissingColumn {
                        table: table.into(),
                        column: column.clone(),
                    })
                }
            }
        }
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({list}) FROM STDIN (FORMAT binary)",
                quote(table)
            ))
            .await
            .map_err(fail)?;
        Ok(TableCopy {
            table: table.into(),
            columns: columns.to_vec(),
            writer: Box::pin(BinaryCopyInWriter::new(sink, &types)),
            types,
        })
    }

    /// Sends rows (values in `columns` order).
    pub async fn write(&mut self, rows: Vec<Vec<Value>>) -> Result<(), ImportError> {
        for row in rows {
            let values = row
                .into_iter()
                .zip(self.types.iter().zip(&self.columns))
                .map(|(v, (ty, column))| {
                    convert(v, ty).map_err(|message| ImportError::Value {
                        table: self.table.clone(),
                        column: column.clone(),
                        message,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            self.writer.as_mut().write(&refs).await.map_err(fail)?;
        }
        Ok(())
    }

    /// Ends the `COPY`: the rows written.
    pub async fn finish(mut self) -> Result<u64, ImportError> {
        Ok(self.writer.as_mut().finish().await.map_err(fail)?)
    }
}

/// Moves every sequence that feeds one of `tables`' columns (identity
/// columns, `jobs.number`) past the largest copied value, so new rows do
/// not collide with copied ones.
pub async fn advance_sequences(tx: &Transaction<'_>, tables: &[&str]) -> Result<(), DbError> {
    for table in tables {
        let rows = tx
            .query(
                "SELECT a.attname, pg_get_serial_sequence($1, a.attname) \
                   FROM pg_attribute a \
                  WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&table.to_string()],
            )
            .await
            .map_err(fail)?;
        for row in rows {
            let column: String = row.get(0);
            let Some(sequence) = row.get::<_, Option<String>>(1) else {
                continue;
            };
            let sql = format!(
                "SELECT setval($1::text::regclass, m) FROM (SELECT MAX({})::bigint AS m FROM {}) AS t WHERE m IS NOT NULL",
                quote(&column),
                quote(table)
            );
            tx.query(&sql, &[&sequence]).await.map_err(fail)?;
        }
    }
    Ok(())
}

/// Rows in `table`.
pub async fn count(c: &impl deadpool_postgres::GenericClient, table: &str) -> Result<i64, DbError> {
    let sql = format!("SELECT count(*) FROM {}", quote(table));
    Ok(c.query_one(&sql, &[]).await.map_err(fail)?.get(0))
}

/// What `platform db status` shows of a PostgreSQL database, changing
/// nothing: its schema version and the rows of each of its tables.
pub async fn status(url: &PgUrl) -> Result<(usize, Vec<(String, i64)>), DbError> {
    let pool = pool(url, 1)?;
    let client = pool.get().await.map_err(|e| start_error(url, &e))?;
    let version = migrations::version(&client).await.map_err(fail)?;
    let names: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
              WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                AND table_name <> 'schema_migrations' ORDER BY table_name",
            &[],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let n = count(&client, &name).await?;
        tables.push((name, n));
    }
    Ok((version, tables))
}

/// The schema version this binary writes.
pub fn latest_version() -> usize {
    migrations::latest_version()
}

/// A value ready for a column of the target's type.
#[derive(Debug)]
enum Cell {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F64(f64),
    Text(String),
    /// JSON text, sent as is.
    Json(String),
    Uuid(Uuid),
    Time(DateTime<Utc>),
    Uuids(Vec<Uuid>),
    Texts(Vec<String>),
    Bytes(Vec<u8>),
}

/// `v` as a value of type `ty`, or why it cannot be one.
fn convert(v: Value, ty: &Type) -> Result<Cell, String> {
    let wrong = |v: &Value| format!("a {} value cannot become {ty}", kind(v));
    Ok(match (v, ty) {
        (Value::Null, _) => Cell::Null,
        (Value::Integer(i), t) if *t == Type::BOOL => Cell::Bool(i != 0),
        (Value::Integer(i), t) if *t == Type::INT2 => {
            Cell::I16(i16::try_from(i).map_err(|e| e.to_string())?)
        }
        (Value::Integer(i), t) if *t == Type::INT4 => {
            Cell::I32(i32::try_from(i).map_err(|e| e.to_string())?)
        }
        (Value::Integer(i), t) if *t == Type::INT8 => Cell::I64(i),
        (Value::Integer(i), t) if *t == Type::FLOAT8 => Cell::F64(i as f64),
        (Value::Real(f), t) if *t == Type::FLOAT8 => Cell::F64(f),
        (Value::Text(s), t) if *t == Type::TEXT || *t == Type::VARCHAR => {
            // PostgreSQL's text cannot hold NUL; the backend stores U+FFFD.
            Cell::Text(super::text(&s))
        }
        (Value::Text(s), t) if *t == Type::JSON || *t == Type::JSONB => {
            serde_json::from_str::<serde::de::IgnoredAny>(&s).map_err(|e| e.to_string())?;
            Cell::Json(s)
        }
        (Value::Text(s), t) if *t == Type::UUID => {
            Cell::Uuid(Uuid::parse_str(&s).map_err(|e| format!("{s:?}: {e}"))?)
        }
        (Value::Text(s), t) if *t == Type::TIMESTAMPTZ => Cell::Time(
            DateTime::parse_from_rfc3339(&s)
                .map_err(|e| format!("{s:?}: {e}"))?
                .with_timezone(&Utc),
        ),
        (Value::Text(s), t) if *t == Type::UUID_ARRAY => {
            Cell::Uuids(serde_json::from_str(&s).map_err(|e| format!("{s:?}: {e}"))?)
        }
        (Value::Text(s), t) if *t == Type::TEXT_ARRAY => {
            let items: Vec<String> = serde_json::from_str(&s).map_err(|e| format!("{s:?}: {e}"))?;
            Cell::Texts(items.iter().map(|i| super::text(i)).collect())
        }
        (Value::Blob(b), t) if *t == Type::BYTEA => Cell::Bytes(b),
        (v, _) => return Err(wrong(&v)),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Bool(b) => b.to_sql(ty, out),
            Cell::I16(i) => i.to_sql(ty, out),
            Cell::I32(i) => i.to_sql(ty, out),
            Cell::I64(i) => i.to_sql(ty, out),
            Cell::F64(f) => f.to_sql(ty, out),
            Cell::Text(s) => s.to_sql(ty, out),
            Cell::Json(s) => {
                // jsonb's binary form is a version byte, then the text.
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Cell::Uuid(u) => u.to_sql(ty, out),
            Cell::Time(t) => t.to_sql(ty, out),
            Cell::Uuids(v) => v.to_sql(ty, out),
            Cell::Texts(v) => v.to_sql(ty, out),
            Cell::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // `convert` chose the variant from the column's type.
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_the_target_columns_types() {
        assert!(matches!(
            convert(Value::Integer(1), &Type::BOOL),
            Ok(Cell::Bool(true))
        ));
        assert!(matches!(
            convert(Value::Text("2026-12-07T06:00:00.123456Z".into()), &Type::TIMESTAMPTZ),
            Ok(Cell::Time(t)) if t.timestamp_subsec_micros() == 123_456
        ));
        assert!(matches!(
            convert(Value::Text(r#"{"b":1,"a":2.50}"#.into()), &Type::JSON),
            Ok(Cell::Json(s)) if s == r#"{"b":1,"a":2.50}"#
        ));
        let id = Uuid::now_v7();
        assert!(matches!(
            convert(Value::Text(format!("[\"{id}\"]")), &Type::UUID_ARRAY),
            Ok(Cell::Uuids(v)) if v == vec![id]
        ));
        assert!(matches!(
            convert(Value::Text("a\0b".into()), &Type::TEXT),
            Ok(Cell::Text(s)) if s == "a\u{fffd}b"
        ));
        assert!(matches!(convert(Value::Null, &Type::UUID), Ok(Cell::Null)));
    }

    #[test]
    fn values_that_do_not_fit_are_refused_with_a_reason() {
        for (v, ty) in [
            (Value::Text("not json {".into()), Type::JSON),
            (Value::Text("yesterday".into()), Type::TIMESTAMPTZ),
            (Value::Text("j-1".into()), Type::UUID),
            (Value::Integer(1 << 40), Type::INT4),
            (Value::Real(1.5), Type::TEXT),
        ] {
            assert!(convert(v, &ty).is_err(), "{ty}");
        }
    }
}
