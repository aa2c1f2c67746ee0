//! Queries on `users`, `api_tokens` and `audit`. Plain functions over a
//! connection, like [`super::jobs`], so they run in reads and in writes.

use chrono::{DateTime, Utc};
use rusqlite::{named_params, params, Connection, Row};
use uuid::Uuid;

use crate::db::{parse_ts, ts, DbError};
use crate::model::{AuditEntry, AuditFilter, Role, TokenInfo, TokenOwner, TokenRecord, User};

const USER_COLUMNS: &str = "u.id, u.name, u.role, u.active, u.created_at";
const TOKEN_COLUMNS: &str =
    "t.id, u.name, t.name, t.prefix, t.created_at, t.last_used_at, t.expires_at, t.revoked_at";

fn corrupt(e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(e.to_string())
}

fn uuid(s: &str) -> Result<Uuid, DbError> {
    Uuid::parse_str(s).map_err(corrupt)
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, DbError> {
    s.as_deref().map(parse_ts).transpose()
}

/// A user from [`USER_COLUMNS`] starting at column `at`.
fn user_at(r: &Row<'_>, at: usize) -> Result<User, DbError> {
    Ok(User {
        id: uuid(&r.get::<_, String>(at)?)?,
        name: r.get(at + 1)?,
        role: r
            .get::<_, String>(at + 2)?
            .parse::<Role>()
            .map_err(corrupt)?,
        active: r.get(at + 3)?,
        created_at: parse_ts(&r.get::<_, String>(at + 4)?)?,
    })
}

/// A token from [`TOKEN_COLUMNS`] starting at column `at`.
fn token_at(r: &Row<'_>, at: usize) -> Result<TokenInfo, DbError> {
    Ok(TokenInfo {
        id: uuid(&r.get::<_, String>(at)?)?,
        user: r.get(at + 1)?,
        name: r.get(at + 2)?,
        prefix: r.get(at + 3)?,
        created_at: parse_ts(&r.get::<_, String>(at + 4)?)?,
        last_used_at: opt_ts(r.get(at + 5)?)?,
        expires_at: opt_ts(r.get(at + 6)?)?,
        revoked_at: opt_ts(r.get(at + 7)?)?,
    })
}

fn rows<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    each: impl Fn(&Row<'_>) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    let mut out = Vec::new();
    let mut q = stmt.query(params)?;
    while let Some(r) = q.next()? {
        out.push(each(r)?);
    }
    Ok(out)
}

pub(super) fn count_users(c: &Connection) -> Result<i64, DbError> {
    Ok(c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
}

/// Inserts `user`; `false` when the name is taken.
pub(super) fn insert_user(c: &Connection, user: &User) -> Result<bool, DbError> {
    let n = c.execute(
        "INSERT INTO users (id, name, role, active, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (name) DO NOTHING",
        params![
            user.id.to_string(),
            user.name,
            user.role.as_str(),
            user.active,
            ts(&user.created_at)
        ],
    )?;
    Ok(n == 1)
}

pub(super) fn users(c: &Connection) -> Result<Vec<User>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u ORDER BY u.name"
    ))?;
    rows(&mut stmt, [], |r| user_at(r, 0))
}

pub(super) fn user_by_name(c: &Connection, name: &str) -> Result<Option<User>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.name = ?1"
    ))?;
    Ok(rows(&mut stmt, [name], |r| user_at(r, 0))?.pop())
}

pub(super) fn update_user(
    c: &Connection,
    name: &str,
    role: Option<Role>,
    active: Option<bool>,
) -> Result<Option<User>, DbError> {
    c.execute(
        "UPDATE users SET role = COALESCE(?2, role), active = COALESCE(?3, active) WHERE name = ?1",
        params![name, role.map(Role::as_str), active],
    )?;
    user_by_name(c, name)
}

pub(super) fn insert_token(c: &Connection, t: &TokenRecord) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            t.info.id.to_string(),
            t.user_id.to_string(),
            t.info.name,
            t.hash,
            t.info.prefix,
            ts(&t.info.created_at),
            t.info.expires_at.as_ref().map(ts),
        ],
    )?;
    Ok(())
}

/// Tokens, oldest first; only `user`'s when given.
pub(super) fn tokens(c: &Connection, user: Option<&str>) -> Result<Vec<TokenInfo>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE :user IS NULL OR u.name = :user ORDER BY t.created_at, t.id"
    ))?;
    rows(&mut stmt, named_params! {":user": user}, |r| token_at(r, 0))
}

/// The token with this hash and its owner (the hot path: one indexed read).
pub(super) fn token_by_hash(c: &Connection, hash: &str) -> Result<Option<TokenOwner>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = ?1"
    ))?;
    Ok(rows(&mut stmt, [hash], |r| {
        Ok(TokenOwner {
            info: token_at(r, 0)?,
            user: user_at(r, 8)?,
        })
    })?
    .pop())
}

pub(super) fn token(c: &Connection, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?1"
    ))?;
    Ok(rows(&mut stmt, [id.to_string()], |r| token_at(r, 0))?.pop())
}

/// Marks the token revoked (keeping the first revocation time).
pub(super) fn revoke_token(
    c: &Connection,
    id: Uuid,
    at: &DateTime<Utc>,
) -> Result<Option<TokenInfo>, DbError> {
    c.execute(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id.to_string(), ts(at)],
    )?;
    token(c, id)
}

pub(super) fn touch_token(c: &Connection, id: Uuid, at: &DateTime<Utc>) -> Result<(), DbError> {
    c.execute(
        "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
        params![id.to_string(), ts(at)],
    )?;
    Ok(())
}

pub(super) fn insert_audit(c: &Connection, e: &AuditEntry) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO audit (at, user_name, token_name, method, path, target, status, remote, \
         request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        ts(&e.at),
        e.user,
        e.token,
        e.method,
        e.path,
        e.target,
        e.status,
        e.remote,
        e.request_id
    ])?;
    Ok(())
}

/// Audit entries, newest first.
pub(super) fn audit(c: &Connection, f: &AuditFilter) -> Result<Vec<AuditEntry>, DbError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, at, user_name, token_name, method, path, target, status, remote, request_id \
         FROM audit WHERE (:user IS NULL OR user_name = :user) AND (:since IS NULL OR at >= :since) \
         ORDER BY id DESC LIMIT :limit",
    )?;
    let since = f.since.as_ref().map(ts);
    rows(
        &mut stmt,
        named_params! {":user": f.user, ":since": since, ":limit": f.limit},
        |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: parse_ts(&r.get::<_, String>(1)?)?,
                user: r.get(2)?,
                token: r.get(3)?,
                method: r.get(4)?,
                path: r.get(5)?,
                target: r.get(6)?,
                status: r.get(7)?,
                remote: r.get(8)?,
                request_id: r.get(9)?,
            })
        },
    )
}

/// Creates the first admin (and its token) unless a user exists; whether
/// it did.
pub(super) fn bootstrap(
    c: &Connection,
    admin: &User,
    token: Option<&TokenRecord>,
) -> Result<bool, DbError> {
    if count_users(c)? > 0 || !insert_user(c, admin)? {
        return Ok(false);
    }
    if let Some(t) = token {
        insert_token(c, t)?;
    }
    Ok(true)
}
