//! Users, API tokens and the audit trail: the service the HTTP layer asks
//! who a token belongs to, and that manages users and tokens under the
//! rules of [`Principal`] (admins everything, members their own tokens).
//!
//! A presented token is hashed (SHA-256) and looked up by that hash on a
//! unique index. Hits are cached for at most [`CACHE_TTL`] so the job-get
//! and event paths skip the read; a revocation or a disabled user made
//! through this daemon clears the cache at once, and one made elsewhere
//! (another replica) takes effect within the TTL; expiry is checked on
//! every request. `last_used_at` is written at most every [`TOUCH_EVERY`]
//! per token, not per request (and it is known to the second the cache
//! allows).
//! `PLATFORM_API_TOKEN`, when set, is the operator's admin token and is
//! compared in constant time, never stored.

mod bootstrap;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::db::{self, Db, DbError};
use crate::model::user::API_TOKEN_NAME;
use crate::model::{
    validate_user_name, AuditEntry, AuditQuery, CreateToken, CreateUser, CreatedUser, NewToken,
    Principal, Role, TokenInfo, TokenRecord, UpdateUser, User, ValidationError,
};
use crate::secrets::{constant_time_eq, hash_token, new_user_token};

pub use bootstrap::{Bootstrap, ADMIN_NAME};

/// How long a token lookup is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// How often a token's `last_used_at` is written at most.
pub const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// Why a user or token operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user or token (404).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Bad input (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A cached lookup: who the token stands for (`None`: revoked, or its
/// user disabled), until when, and when it was read.
struct Cached {
    read: Instant,
    principal: Option<Principal>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The users service.
pub struct Users {
    db: Arc<Db>,
    api_token: Option<Arc<str>>,
    required: bool,
    cache: RwLock<HashMap<String, Arc<Cached>>>,
    touched: Mutex<HashMap<Uuid, Instant>>,
}

impl Users {
    /// A service over `db`. `api_token` is the operator's admin token;
    /// `required`: whether user routes need a token at all.
    pub fn new(db: Arc<Db>, api_token: Option<&str>, required: bool) -> Self {
        Self {
            db,
            api_token: api_token.map(Arc::from),
            required,
            cache: RwLock::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Whether user routes need a token.
    pub fn auth_required(&self) -> bool {
        self.required
    }

    /// Who `presented` belongs to: `None` for a token that is unknown,
    /// revoked, expired, or whose user is disabled.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>, DbError> {
        if let Some(t) = &self.api_token {
            if constant_time_eq(presented.as_bytes(), t.as_bytes()) {
                return Ok(Some(Principal {
                    user: Some(ADMIN_NAME.into()),
                    user_id: None,
                    role: Role::Admin,
                    token: Some(API_TOKEN_NAME.into()),
                }));
            }
        }
        let hash = hash_token(presented);
        let entry = match self.cached(&hash) {
            Some(entry) => entry,
            None => {
                let Some(found) = self.db.token_by_hash(&hash).await? else {
                    return Ok(None);
                };
                let usable = found.user.active && found.info.revoked_at.is_none();
                if usable {
                    // Only on a read: at most once a second per token.
                    self.touch(found.info.id);
                }
                let entry = Arc::new(Cached {
                    read: Instant::now(),
                    expires_at: found.info.expires_at,
                    principal: usable.then_some(Principal {
                        user: Some(found.user.name),
                        user_id: Some(found.user.id),
                        role: found.user.role,
                        token: Some(found.info.name),
                    }),
                });
                if let Ok(mut c) = self.cache.write() {
                    if c.len() > 10_000 {
                        c.clear();
                    }
                    c.insert(hash, entry.clone());
                }
                entry
            }
        };
        if entry.expires_at.is_some_and(|e| e <= db::now()) {
            return Ok(None);
        }
        Ok(entry.principal.clone())
    }

    fn cached(&self, hash: &str) -> Option<Arc<Cached>> {
        let c = self.cache.read().ok()?;
        c.get(hash)
            .filter(|e| e.read.elapsed() < CACHE_TTL)
            .cloned()
    }

    /// Forgets every cached lookup (after a revocation or a user change).
    fn forget(&self) {
        if let Ok(mut c) = self.cache.write() {
            c.clear();
        }
    }

    /// Writes `last_used_at` in the background, at most every
    /// [`TOUCH_EVERY`] per token (called on cache misses only, so the hot
    /// path takes no lock for it).
    fn touch(&self, id: Uuid) {
        let due = match self.touched.lock() {
            Ok(mut t) => {
                let due = t.get(&id).is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
                if due {
                    t.insert(id, Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.touch_token(id, db::now()).await {
                    tracing::debug!(error = %e, "could not record a token's last use");
                }
            });
        }
    }

    /// `POST /api/v1/users` (admins): a user and their first token.
    pub async fn create_user(
        &self,
        actor: &Principal,
        req: CreateUser,
    ) -> Result<CreatedUser, UserError> {
        admin_only(actor, "create users")?;
        validate_user_name("name", &req.name)?;
        let user = User {
            id: Uuid::now_v7(),
            name: req.name,
            role: req.role.unwrap_or(Role::Member),
            active: true,
            created_at: db::now(),
        };
        let (token, record) = mint(&user, "default", None);
        if !self.db.create_user(user.clone(), record.clone()).await? {
            return Err(UserError::Conflict(format!(
                "a user named {:?} already exists",
                user.name
            )));
        }
        Ok(CreatedUser {
            user,
            token: NewToken {
                token,
                info: record.info,
            },
        })
    }

    /// `GET /api/v1/users` (admins).
    pub async fn users(&self, actor: &Principal) -> Result<Vec<User>, UserError> {
        admin_only(actor, "list users")?;
        Ok(self.db.users().await?)
    }

    /// `PATCH /api/v1/users/{name}` (admins).
    pub async fn update_user(
        &self,
        actor: &Principal,
        name: &str,
        req: UpdateUser,
    ) -> Result<User, UserError> {
        admin_only(actor, "change users")?;
        let user = self
            .db
            .update_user(name, req.role, req.active)
            .await?
            .ok_or_else(|| no_user(name))?;
        self.forget();
        Ok(user)
    }

    /// `POST /api/v1/tokens`: a token for the caller, or (admins) anyone.
    pub async fn create_token(
        &self,
        actor: &Principal,
        req: CreateToken,
    ) -> Result<NewToken, UserError> {
        req.validate()?;
        let owner = match (&req.user, &actor.user) {
            (Some(u), _) => u.clone(),
            (None, Some(me)) => me.clone(),
            (None, None) => {
                return Err(ValidationError::new(
                    "user",
                    "name the user the token is for: this request carries no user token",
                )
                .into())
            }
        };
        if !actor.may_manage(&owner) {
            return Err(UserError::Forbidden(format!(
                "members may create tokens only for themselves, not for {owner:?}"
            )));
        }
        let user = self.db.user(&owner).await?.ok_or_else(|| no_user(&owner))?;
        let expires = req
            .expires_in_days
            .map(|d| db::now() + chrono::Duration::days(i64::from(d)));
        let (token, record) = mint(&user, req.name.trim(), expires);
        self.db.create_token(record.clone()).await?;
        Ok(NewToken {
            token,
            info: record.info,
        })
    }

    /// `GET /api/v1/tokens`: the caller's tokens; admins see everyone's
    /// (or one user's with `user`).
    pub async fn tokens(
        &self,
        actor: &Principal,
        user: Option<&str>,
    ) -> Result<Vec<TokenInfo>, UserError> {
        let whose = match (user, actor.is_admin()) {
            (Some(u), _) if actor.may_manage(u) => Some(u),
            (Some(u), _) => {
                return Err(UserError::Forbidden(format!(
                    "members may list only their own tokens, not {u:?}'s"
                )))
            }
            (None, true) => None,
            (None, false) => actor.user.as_deref(),
        };
        Ok(self.db.tokens(whose).await?)
    }

    /// `DELETE /api/v1/tokens/{id}`: revokes one of the caller's tokens,
    /// or (admins) anyone's. Takes effect on the next request.
    pub async fn revoke_token(&self, actor: &Principal, id: Uuid) -> Result<TokenInfo, UserError> {
        let token = self
            .db
            .token(id)
            .await?
            .ok_or_else(|| UserError::NotFound(format!("token {id} not found")))?;
        if !actor.may_manage(&token.user) {
            return Err(UserError::Forbidden(format!(
                "token {id} belongs to {:?}; members may revoke only their own tokens",
                token.user
            )));
        }
        let revoked = self
            .db
            .revoke_token(id)
            .await?
            .ok_or_else(|| UserError::NotFound(format!("token {id} not found")))?;
        self.forget();
        Ok(revoked)
    }

    /// `GET /api/v1/audit` (admins).
    pub async fn audit(
        &self,
        actor: &Principal,
        q: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, UserError> {
        admin_only(actor, "read the audit trail")?;
        Ok(self.db.audit(q.validate()?).await?)
    }

    /// Stores one audit entry.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), DbError> {
        self.db.record_audit(entry).await
    }
}

fn admin_only(actor: &Principal, what: &str) -> Result<(), UserError> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(UserError::Forbidden(format!("only admins may {what}")))
    }
}

fn no_user(name: &str) -> UserError {
    UserError::NotFound(format!("no user named {name:?}"))
}

/// A fresh token for `user`: the secret, and what is stored of it.
fn mint(
    user: &User,
    name: &str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> (String, TokenRecord) {
    let token = new_user_token();
    let record = TokenRecord {
        info: TokenInfo {
            id: Uuid::now_v7(),
            user: user.name.clone(),
            name: name.to_string(),
            prefix: token.chars().take(8).collect(),
            created_at: db::now(),
            last_used_at: None,
            expires_at,
            revoked_at: None,
        },
        user_id: user.id,
        hash: hash_token(&token),
    };
    (token, record)
}
