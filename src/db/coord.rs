//! Coordination of replicas sharing one PostgreSQL database: the leader
//! lease (a row with an epoch, on the database's clock) and the wake-up
//! channel (`LISTEN`/`NOTIFY`). SQLite is single-node: these operations
//! fail there with one sentence saying so (the daemon never calls them
//! with SQLite: `--leader-election lease` is refused at start-up).

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Db, DbError};

/// What the wake-up channel hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A payload another process sent with [`Db::notify`].
    Message(String),
    /// The channel (re)connected: anything sent while it was away is lost.
    Listening,
}

fn single_node() -> DbError {
    DbError::Backend(
        "SQLite is single-node: leases and wake-ups across replicas need PostgreSQL".into(),
    )
}

impl Db {
    /// Takes or renews lease `name` for `holder` until `ttl` from now (the
    /// database's clock): `Some(epoch)` while `holder` holds it (the epoch
    /// grows with each new holder), `None` while another holder's lease
    /// has not expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, DbError> {
        match self {
            Db::Sqlite(_) => Err(single_node()),
            Db::Postgres(p) => p.acquire_lease(name, holder, ttl).await,
        }
    }

    /// Ends `holder`'s lease `name` now, so a successor need not wait for
    /// it to expire; a no-op when `holder` does not hold it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(_) => Err(single_node()),
            Db::Postgres(p) => p.release_lease(name, holder).await,
        }
    }

    /// Sends `payload` on the wake-up channel, outside any transaction of
    /// the writer (a pending `NOTIFY` would serialise their commits).
    pub async fn notify(&self, payload: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(_) => Err(single_node()),
            Db::Postgres(p) => p.notify(payload).await,
        }
    }

    /// Listens on the wake-up channel over a dedicated connection, which
    /// reconnects by itself (saying [`Notice::Listening`] each time); the
    /// listener stops when the receiver is dropped.
    pub fn listen(&self) -> Result<mpsc::Receiver<Notice>, DbError> {
        match self {
            Db::Sqlite(_) => Err(single_node()),
            Db::Postgres(p) => Ok(p.listen()),
        }
    }
}
