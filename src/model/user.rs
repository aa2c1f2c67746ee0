//! Users, their API tokens, the principal a request acts as, and the audit
//! trail: the wire format of `/api/v1/users`, `/api/v1/tokens`,
//! `/api/v1/whoami` and `/api/v1/audit`.
//!
//! Two roles: `admin` may do everything, `member` creates jobs, reads
//! everything and changes only their own jobs and tokens. Who may do what
//! to a job is decided in one place, [`crate::jobs`]; who may manage users
//! and tokens in [`Principal`]'s methods here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::validate::{optional_u32, required_plain_text, ValidationError};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including other users' jobs and user management.
    Admin,
    /// Creates jobs, reads all of them, changes only their own.
    Member,
}

impl Role {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(ValidationError::new(
                "role",
                format!("{other:?} is not a role; use admin or member"),
            )),
        }
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Stable id.
    pub id: Uuid,
    /// Unique name; a member's jobs carry it as `user_id`.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// A disabled user's tokens open nothing (their running trainers keep
    /// their own callback tokens).
    pub active: bool,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// The token name the operator's `PLATFORM_API_TOKEN` appears under.
pub const API_TOKEN_NAME: &str = "PLATFORM_API_TOKEN";

/// The longest user name.
pub const MAX_USER_NAME: usize = 64;
/// The longest token name.
pub const MAX_TOKEN_NAME: usize = 100;

/// Checks a user name: 1–64 of `A-Za-z0-9._-`, starting with a letter or
/// digit (it appears in paths and in the `user_id` of jobs).
pub fn validate_user_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be 1–{MAX_USER_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit"),
        ))
    }
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateUser {
    /// Unique name (1–64 of `A-Za-z0-9._-`, starting with a letter or digit).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// Role (default `member`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// Body of `PATCH /api/v1/users/{name}`: what to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UpdateUser {
    /// New role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// `false` disables the user: their tokens stop working at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// An API token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Id (for `DELETE /api/v1/tokens/{id}`).
    pub id: Uuid,
    /// The owner's name.
    pub user: String,
    /// The token's name (e.g. the machine it is for).
    pub name: String,
    /// Its first characters, to recognise it.
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (updated at most every 30 s).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateToken {
    /// A name for the token (1–100 characters).
    #[schema(schema_with = token_name_schema)]
    pub name: String,
    /// Whose token (admins only; default: the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Days until it expires (1–3650; default: never).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_u32"
    )]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

fn token_name_schema() -> utoipa::openapi::schema::Object {
    super::validate::text(MAX_TOKEN_NAME, "A name for the token, e.g. `laptop`")
}

impl CreateToken {
    /// Checks the name (the rule its schema states) and the lifetime.
    pub fn validate(&self) -> Result<(), ValidationError> {
        required_plain_text("name", &self.name, MAX_TOKEN_NAME)?;
        if self
            .expires_in_days
            .is_some_and(|d| !(1..=3650).contains(&d))
        {
            return Err(ValidationError::new(
                "expires_in_days",
                "must be between 1 and 3650",
            ));
        }
        Ok(())
    }
}

/// Answer of `POST /api/v1/tokens` and `POST /api/v1/users`: the token,
/// shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    /// The secret: send it as `Authorization: Bearer <token>`. The server
    /// keeps only its hash and cannot show it again.
    pub token: String,
    /// What is kept of it.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Answer of `POST /api/v1/users`: the user and a first token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    /// The new user.
    pub user: User,
    /// Their first token (named `default`), shown this once.
    pub token: NewToken,
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Principal {
    /// The user's name; `None` on an unauthenticated loopback daemon
    /// called without a token.
    pub user: Option<String>,
    /// The user's id (as `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// What they may do.
    pub role: Role,
    /// The token's name (`PLATFORM_API_TOKEN` for the operator's token).
    pub token: Option<String>,
}

impl Principal {
    /// The caller of a daemon that requires no token and got none: may do
    /// everything, as before users existed.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            user_id: None,
            role: Role::Admin,
            token: None,
        }
    }

    /// Whether this is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this principal may manage `owner`'s tokens.
    pub fn may_manage(&self, owner: &str) -> bool {
        self.is_admin() || self.user.as_deref() == Some(owner)
    }
}

/// Answer of `GET /api/v1/whoami`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    /// Who the request acted as.
    #[serde(flatten)]
    pub principal: Principal,
    /// Whether this daemon requires a token on user routes.
    pub auth_required: bool,
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When the request was answered.
    pub at: DateTime<Utc>,
    /// Who (`null`: unauthenticated loopback caller).
    pub user: Option<String>,
    /// With which token (its name).
    pub token: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path (without the query).
    pub path: String,
    /// The job id, user name or token id acted on, when there is one.
    pub target: Option<String>,
    /// The response status.
    pub status: u16,
    /// The client's address.
    pub remote: Option<String>,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this user's requests.
    pub user: Option<String>,
    /// Only requests at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Most entries, 1–1000 (default 100), newest first.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A validated [`AuditQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFilter {
    /// Only this user.
    pub user: Option<String>,
    /// Only from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: i64,
}

impl AuditQuery {
    /// Checks the page size.
    pub fn validate(&self) -> Result<AuditFilter, ValidationError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ValidationError::new("limit", "must be between 1 and 1000"));
        }
        Ok(AuditFilter {
            user: self.user.clone().filter(|u| !u.is_empty()),
            since: self.since,
            limit,
        })
    }
}

/// What the database keeps of a token: the hash, never the token.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Listing fields.
    pub info: TokenInfo,
    /// The owner's id.
    pub user_id: Uuid,
    /// SHA-256 of the token, hex.
    pub hash: String,
}

/// A token found by its hash, with its owner.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    /// The token.
    pub info: TokenInfo,
    /// Its owner.
    pub user: User,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_path_safe() {
        for ok in ["alice", "a", "bob.smith", "x_1-2", &"a".repeat(64)] {
            assert!(validate_user_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(validate_user_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_requests_are_checked() {
        let t = |name: &str, days| CreateToken {
            name: name.into(),
            user: None,
            expires_in_days: days,
        };
        assert!(t("laptop", None).validate().is_ok());
        assert!(t("laptop", Some(30)).validate().is_ok());
        assert!(t(" ", None).validate().is_err());
        assert!(t("a\nb", None).validate().is_err());
        assert!(t("laptop", Some(0)).validate().is_err());
        assert!(t("laptop", Some(5000)).validate().is_err());
        // JSON Schema's integers include 106.0.
        let req: CreateToken =
            serde_json::from_str(r#"{"name":"ci","expires_in_days":106.0}"#).unwrap();
        assert_eq!(req.expires_in_days, Some(106));
        assert!(
            serde_json::from_str::<CreateToken>(r#"{"name":"ci","expires_in_days":1.5}"#).is_err()
        );
        // The schema states the same rule, so a fuzzer's schema-valid name
        // is never refused.
        let schema = token_name_schema();
        assert_eq!(
            schema.pattern.as_deref(),
            Some(crate::model::validate::PLAIN_TEXT)
        );
        assert_eq!(schema.max_length, Some(MAX_TOKEN_NAME));
    }
}
