//! The users, API tokens and audit operations of [`Db`] (issue 15), one
//! `match` per backend like the rest of its methods.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, DbError};
use crate::model::{AuditEntry, AuditFilter, Role, TokenInfo, TokenOwner, TokenRecord, User};

impl Db {
    /// How many users exist.
    pub async fn count_users(&self) -> Result<i64, DbError> {
        match self {
            Db::Sqlite(s) => s.count_users().await,
            Db::Postgres(p) => p.count_users().await,
        }
    }

    /// Creates the first admin and its token in one write, unless a user
    /// exists already; whether it did.
    pub async fn bootstrap(
        &self,
        admin: User,
        token: Option<TokenRecord>,
    ) -> Result<bool, DbError> {
        match self {
            Db::Sqlite(s) => s.bootstrap(admin, token).await,
            Db::Postgres(p) => p.bootstrap(admin, token).await,
        }
    }

    /// Stores a new user with a first token; `false` (nothing stored) when
    /// the name is taken.
    pub async fn create_user(&self, user: User, token: TokenRecord) -> Result<bool, DbError> {
        match self {
            Db::Sqlite(s) => s.create_user(user, token).await,
            Db::Postgres(p) => p.create_user(user, token).await,
        }
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, DbError> {
        match self {
            Db::Sqlite(s) => s.users().await,
            Db::Postgres(p) => p.users().await,
        }
    }

    /// The user with this name.
    pub async fn user(&self, name: &str) -> Result<Option<User>, DbError> {
        match self {
            Db::Sqlite(s) => s.user(name.to_string()).await,
            Db::Postgres(p) => p.user(name).await,
        }
    }

    /// Changes a user's role and/or active flag; the user after, or `None`
    /// when there is no such user.
    pub async fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        active: Option<bool>,
    ) -> Result<Option<User>, DbError> {
        match self {
            Db::Sqlite(s) => s.update_user(name.to_string(), role, active).await,
            Db::Postgres(p) => p.update_user(name, role, active).await,
        }
    }

    /// Stores a new token (its hash).
    pub async fn create_token(&self, token: TokenRecord) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.create_token(token).await,
            Db::Postgres(p) => p.create_token(token).await,
        }
    }

    /// Tokens, oldest first; only `user`'s when given.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, DbError> {
        match self {
            Db::Sqlite(s) => s.tokens(user.map(str::to_string)).await,
            Db::Postgres(p) => p.tokens(user).await,
        }
    }

    /// One token.
    pub async fn token(&self, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
        match self {
            Db::Sqlite(s) => s.token(id).await,
            Db::Postgres(p) => p.token(id).await,
        }
    }

    /// The token whose SHA-256 is `hash`, with its owner.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenOwner>, DbError> {
        match self {
            Db::Sqlite(s) => s.token_by_hash(hash.to_string()).await,
            Db::Postgres(p) => p.token_by_hash(hash).await,
        }
    }

    /// Revokes a token (a second revocation keeps the first time).
    pub async fn revoke_token(&self, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
        match self {
            Db::Sqlite(s) => s.revoke_token(id).await,
            Db::Postgres(p) => p.revoke_token(id).await,
        }
    }

    /// Records that a token was used at `at`.
    pub async fn touch_token(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.touch_token(id, at).await,
            Db::Postgres(p) => p.touch_token(id, at).await,
        }
    }

    /// Stores an audit entry (its `at` is set to the commit time).
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => s.record_audit(entry).await,
            Db::Postgres(p) => p.record_audit(entry).await,
        }
    }

    /// Audit entries, newest first.
    pub async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, DbError> {
        match self {
            Db::Sqlite(s) => s.audit(filter).await,
            Db::Postgres(p) => p.audit(filter).await,
        }
    }
}
