//! The users, API tokens and audit operations of [`Sqlite`]: each one read
//! or one write of the queries in [`super::users`].

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{users, Sqlite};
use crate::db::{now, DbError};
use crate::model::{AuditEntry, AuditFilter, Role, TokenInfo, TokenOwner, TokenRecord, User};

impl Sqlite {
    pub(in crate::db) async fn count_users(&self) -> Result<i64, DbError> {
        self.read(users::count_users).await
    }

    pub(in crate::db) async fn bootstrap(
        &self,
        admin: User,
        token: Option<TokenRecord>,
    ) -> Result<bool, DbError> {
        self.writer
            .write(move |c| Ok(Ok(users::bootstrap(c, &admin, token.as_ref())?)))
            .await
    }

    pub(in crate::db) async fn create_user(
        &self,
        user: User,
        token: TokenRecord,
    ) -> Result<bool, DbError> {
        self.writer
            .write(move |c| {
                if !users::insert_user(c, &user)? {
                    return Ok(Ok(false));
                }
                users::insert_token(c, &token)?;
                Ok(Ok(true))
            })
            .await
    }

    pub(in crate::db) async fn users(&self) -> Result<Vec<User>, DbError> {
        self.read(users::users).await
    }

    pub(in crate::db) async fn user(&self, name: String) -> Result<Option<User>, DbError> {
        self.read(move |c| users::user_by_name(c, &name)).await
    }

    pub(in crate::db) async fn update_user(
        &self,
        name: String,
        role: Option<Role>,
        active: Option<bool>,
    ) -> Result<Option<User>, DbError> {
        self.writer
            .write(move |c| Ok(Ok(users::update_user(c, &name, role, active)?)))
            .await
    }

    pub(in crate::db) async fn create_token(&self, token: TokenRecord) -> Result<(), DbError> {
        self.writer
            .write(move |c| Ok(Ok(users::insert_token(c, &token)?)))
            .await
    }

    pub(in crate::db) async fn tokens(
        &self,
        user: Option<String>,
    ) -> Result<Vec<TokenInfo>, DbError> {
        self.read(move |c| users::tokens(c, user.as_deref())).await
    }

    pub(in crate::db) async fn token(&self, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
        self.read(move |c| users::token(c, id)).await
    }

    pub(in crate::db) async fn token_by_hash(
        &self,
        hash: String,
    ) -> Result<Option<TokenOwner>, DbError> {
        self.read(move |c| users::token_by_hash(c, &hash)).await
    }

    pub(in crate::db) async fn revoke_token(&self, id: Uuid) -> Result<Option<TokenInfo>, DbError> {
        self.writer
            .write(move |c| Ok(Ok(users::revoke_token(c, id, &now())?)))
            .await
    }

    pub(in crate::db) async fn touch_token(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.writer
            .write(move |c| Ok(Ok(users::touch_token(c, id, &at)?)))
            .await
    }

    pub(in crate::db) async fn record_audit(&self, entry: AuditEntry) -> Result<(), DbError> {
        self.writer
            .write(move |c| {
                let mut entry = entry;
                entry.at = now();
                Ok(Ok(users::insert_audit(c, &entry)?))
            })
            .await
    }

    pub(in crate::db) async fn audit(
        &self,
        filter: AuditFilter,
    ) -> Result<Vec<AuditEntry>, DbError> {
        self.read(move |c| users::audit(c, &filter)).await
    }
}
