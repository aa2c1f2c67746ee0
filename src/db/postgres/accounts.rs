//! Users, API tokens and the audit trail on PostgreSQL: the same
//! operations as SQLite's `accounts.rs`, with the same answers.
//!
//! Audit entries of job changes are written by the writer in the job's
//! own batch ([`INSERT_AUDIT`] in its second round trip), and so are the
//! entries [`Postgres::record_audit`] queues. User and token changes are
//! rare: each is one transaction on a pooled connection. Uniqueness is
//! the database's (`users.name`, `api_tokens.token_hash`), so two replicas
//! creating the same user at once store one, and the other learns the
//! name is taken.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{col, corrupt, fail, rows, text, Postgres};
use crate::db::DbError;
use crate::model::{AuditEntry, AuditFilter, Role, TokenInfo, TokenOwner, TokenRecord, User};

const USER_COLUMNS: &str = "u.id, u.name, u.role, u.active, u.created_at";
const TOKEN_COLUMNS: &str =
    "t.id, u.name, t.name, t.prefix, t.created_at, t.last_used_at, t.expires_at, t.revoked_at";
const AUDIT_COLUMNS: &str =
    "id, at, user_name, token_name, method, path, target, status, remote, request_id";

/// Audit entries from column arrays ([`AuditColumns::args`]), in order.
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit (at, user_name, token_name, method, \
     path, target, status, remote, request_id) \
     SELECT at, u, t, m, p, tg, s, r, q FROM unnest($1::timestamptz[], $2::text[], $3::text[], \
     $4::text[], $5::text[], $6::text[], $7::int4[], $8::text[], $9::text[]) WITH ORDINALITY \
     AS x(at, u, t, m, p, tg, s, r, q, ord) ORDER BY ord";

/// A user from [`USER_COLUMNS`] starting at column `at`.
fn user_at(r: &Row, at: usize) -> Result<User, DbError> {
    Ok(User {
        id: col(r, at)?,
        name: col(r, at + 1)?,
        role: col::<String>(r, at + 2)?.parse::<Role>().map_err(corrupt)?,
        active: col(r, at + 3)?,
        created_at: col(r, at + 4)?,
    })
}

fn user(r: &Row) -> Result<User, DbError> {
    user_at(r, 0)
}

fn token(r: &Row) -> Result<TokenInfo, DbError> {
    Ok(TokenInfo {
        id: col(r, 0)?,
        user: col(r, 1)?,
        name: col(r, 2)?,
        prefix: col(r, 3)?,
        created_at: col(r, 4)?,
        last_used_at: col(r, 5)?,
        expires_at: col(r, 6)?,
        revoked_at: col(r, 7)?,
    })
}

fn owner(r: &Row) -> Result<TokenOwner, DbError> {
    Ok(TokenOwner {
        info: token(r)?,
        user: user_at(r, 8)?,
    })
}

fn audit_entry(r: &Row) -> Result<AuditEntry, DbError> {
    let status: i32 = col(r, 7)?;
    Ok(AuditEntry {
        id: col(r, 0)?,
        at: col(r, 1)?,
        user: col(r, 2)?,
        token: col(r, 3)?,
        method: col(r, 4)?,
        path: col(r, 5)?,
        target: col(r, 6)?,
        status: u16::try_from(status).map_err(corrupt)?,
        remote: col(r, 8)?,
        request_id: col(r, 9)?,
    })
}

/// Audit entries as column arrays (what `unnest` takes). Free text from a
/// request (the path, a header) stores NUL as U+FFFD, like job fields.
#[derive(Default)]
pub(super) struct AuditColumns {
    at: Vec<DateTime<Utc>>,
    user: Vec<Option<String>>,
    token: Vec<Option<String>>,
    method: Vec<String>,
    path: Vec<String>,
    target: Vec<Option<String>>,
    status: Vec<i32>,
    remote: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
}

impl AuditColumns {
    pub(super) fn push(&mut self, e: &AuditEntry) {
        let opt = |s: &Option<String>| s.as_deref().map(text);
        self.at.push(e.at);
        self.user.push(opt(&e.user));
        self.token.push(opt(&e.token));
        self.method.push(text(&e.method));
        self.path.push(text(&e.path));
        self.target.push(opt(&e.target));
        self.status.push(i32::from(e.status));
        self.remote.push(opt(&e.remote));
        self.request_id.push(opt(&e.request_id));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The parameters of [`INSERT_AUDIT`].
    pub(super) fn args(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.at,
            &self.user,
            &self.token,
            &self.method,
            &self.path,
            &self.target,
            &self.status,
            &self.remote,
            &self.request_id,
        ]
    }
}

/// Inserts `user`; `false` when the name is taken (by a transaction that
/// committed, or that commits while this one waits on the unique index).
async fn insert_user(c: &impl GenericClient, user: &User) -> Result<bool, DbError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO users (id, name, role, active, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO NOTHING",
        )
        .await
        .map_err(fail)?;
    let n = c
        .execute(
            &stmt,
            &[
                &user.id,
                &text(&user.name),
                &user.role.as_str(),
                &user.active,
                &user.created_at,
            ],
        )
        .await
        .map_err(fail)?;
    Ok(n == 1)
}

async fn insert_token(c: &impl GenericClient, t: &TokenRecord) -> Result<(), DbError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(fail)?;
    c.execute(
        &stmt,
        &[
            &t.info.id,
            &t.user_id,
            &text(&t.info.name),
            &t.hash,
            &text(&t.info.prefix),
            &t.info.created_at,
            &t.info.expires_at,
        ],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

async fn count_users(c: &impl GenericClient) -> Result<i64, DbError> {
    let row = c
        .query_one("SELECT COUNT(*) FROM users", &[])
        .await
        .map_err(fail)?;
    col(&row, 0)
}

/// One token, with its owner's name.
async fn token_by_id(c: &impl GenericClient, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1"
    );
    Ok(rows(c, &sql, &[&id], token).await?.pop())
}

impl Postgres {
    pub(in crate::db) async fn count_users(&self) -> Result<i64, DbError> {
        count_users(&self.client().await?).await
    }

    /// The first admin, unless a user exists: the count and the insert in
    /// one transaction, and the unique name settles two replicas starting
    /// together on an empty database (the second one's insert waits for
    /// the first one's commit, then does nothing).
    pub(in crate::db) async fn bootstrap(
        &self,
        admin: User,
        token: Option<TokenRecord>,
    ) -> Result<bool, DbError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(fail)?;
        if count_users(&tx).await? > 0 || !insert_user(&tx, &admin).await? {
            return Ok(false);
        }
        if let Some(t) = &token {
            insert_token(&tx, t).await?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(true)
    }

    pub(in crate::db) async fn create_user(
        &self,
        user: User,
        token: TokenRecord,
    ) -> Result<bool, DbError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(fail)?;
        if !insert_user(&tx, &user).await? {
            return Ok(false);
        }
        insert_token(&tx, &token).await?;
        tx.commit().await.map_err(fail)?;
        Ok(true)
    }

    /// Every user, by name (byte order, as SQLite compares text).
    pub(in crate::db) async fn users(&self) -> Result<Vec<User>, DbError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.name COLLATE \"C\"");
        rows(&self.client().await?, &sql, &[], user).await
    }

    pub(in crate::db) async fn user(&self, name: &str) -> Result<Option<User>, DbError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.name = $1");
        Ok(rows(&self.client().await?, &sql, &[&text(name)], user)
            .await?
            .pop())
    }

    pub(in crate::db) async fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        active: Option<bool>,
    ) -> Result<Option<User>, DbError> {
        let sql = format!(
            "UPDATE users u SET role = COALESCE($2, role), active = COALESCE($3, active) \
             WHERE name = $1 RETURNING {USER_COLUMNS}"
        );
        let role = role.map(Role::as_str);
        Ok(rows(
            &self.client().await?,
            &sql,
            &[&text(name), &role, &active],
            user,
        )
        .await?
        .pop())
    }

    pub(in crate::db) async fn create_token(&self, token: TokenRecord) -> Result<(), DbError> {
        insert_token(&self.client().await?, &token).await
    }

    /// Tokens, oldest first; only `user`'s when given.
    pub(in crate::db) async fn tokens(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<TokenInfo>, DbError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE $1::text IS NULL OR u.name = $1 ORDER BY t.created_at, t.id"
        );
        let user = user.map(text);
        rows(&self.client().await?, &sql, &[&user], token).await
    }

    pub(in crate::db) async fn token(&self, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
        token_by_id(&self.client().await?, id).await
    }

    /// The token with this hash and its owner (the hot path: one indexed
    /// read).
    pub(in crate::db) async fn token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<TokenOwner>, DbError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS} FROM api_tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1"
        );
        Ok(rows(&self.client().await?, &sql, &[&hash], owner)
            .await?
            .pop())
    }

    /// Marks the token revoked, keeping the first revocation's time (the
    /// database's clock, shared by replicas).
    pub(in crate::db) async fn revoke_token(&self, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, clock_timestamp()) \
                 WHERE id = $1",
            )
            .await
            .map_err(fail)?;
        c.execute(&stmt, &[&id]).await.map_err(fail)?;
        token_by_id(&c, id).await
    }

    pub(in crate::db) async fn touch_token(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .await
            .map_err(fail)?;
        c.execute(&stmt, &[&id, &at]).await.map_err(fail)?;
        Ok(())
    }

    /// Queued on the writer: committed with whatever else is queued, at
    /// that batch's time.
    pub(in crate::db) async fn record_audit(&self, entry: AuditEntry) -> Result<(), DbError> {
        self.writer.audit(entry).await
    }

    /// Audit entries, newest first (by time, then id: see the migration).
    pub(in crate::db) async fn audit(
        &self,
        filter: AuditFilter,
    ) -> Result<Vec<AuditEntry>, DbError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE ($1::text IS NULL OR user_name = $1) \
             AND ($2::timestamptz IS NULL OR at >= $2) ORDER BY at DESC, id DESC LIMIT $3"
        );
        let user = filter.user.as_deref().map(text);
        rows(
            &self.client().await?,
            &sql,
            &[&user, &filter.since, &filter.limit],
            audit_entry,
        )
        .await
    }
}
