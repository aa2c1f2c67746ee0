//! Handlers for `/api/v1/whoami`, `/api/v1/users`, `/api/v1/tokens` and
//! `/api/v1/audit`: thin wrappers over [`crate::users::Users`], which holds
//! the rules (admins manage users and read the audit trail; everyone
//! manages their own tokens).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use uuid::Uuid;

use super::auth::Actor;
use super::error::ApiError;
use super::extract::{ApiQuery, JsonBody};
use super::responses::{
    BadRequest, Forbidden, Invalid, NotJson, TooLarge, Unauthorized, Unavailable,
};
use super::AppState;
use crate::model::{
    AuditEntry, AuditQuery, CreateToken, CreateUser, CreatedUser, ErrorBody, NewToken, TokenInfo,
    UpdateUser, User, Whoami,
};
use crate::users::UserError;

/// The routes (they need a token when auth is required).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", patch(update_user))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/audit", get(audit))
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound(m) => ApiError::NotFound(m),
            UserError::Conflict(m) => ApiError::Conflict {
                detail: m,
                status: None,
            },
            UserError::Forbidden(m) => ApiError::Forbidden(m),
            UserError::Invalid(v) => ApiError::Invalid(v),
            UserError::Db(d) => d.into(),
        }
    }
}

/// Who this request acts as.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "users",
    responses(
        (status = 200, description = "The caller's user, role and token name", body = Whoami),
        (status = 401, response = Unauthorized),
    ))]
pub async fn whoami(State(st): State<AppState>, Actor(p): Actor) -> Json<Whoami> {
    Json(Whoami {
        principal: p,
        auth_required: st.users.auth_required(),
    })
}

/// List users (admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses(
        (status = 200, description = "Every user, by name", body = Vec<User>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_users(
    State(st): State<AppState>,
    Actor(p): Actor,
) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(st.users.users(&p).await?))
}

/// Create a user (admins), with a first token shown this once.
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created; `token.token` is shown only now", body = CreatedUser),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "A user with that name exists", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ))]
pub async fn create_user(
    State(st): State<AppState>,
    Actor(p): Actor,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: CreateUser = body.decode()?;
    let created = st.users.create_user(&p, req).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Change a user's role, or disable / re-enable them (admins).
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path, description = "User name")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user after the change", body = User),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ))]
pub async fn update_user(
    State(st): State<AppState>,
    Actor(p): Actor,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<User>, ApiError> {
    let req: UpdateUser = body.decode()?;
    Ok(Json(st.users.update_user(&p, &name, req).await?))
}

/// Query of `GET /api/v1/tokens`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Only this user's tokens (members: only their own).
    pub user: Option<String>,
}

/// List tokens: the caller's own; admins everyone's (or `user`'s).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "users",
    params(TokenQuery),
    responses(
        (status = 200, description = "Tokens (never the secrets), oldest first", body = Vec<TokenInfo>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_tokens(
    State(st): State<AppState>,
    Actor(p): Actor,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(st.users.tokens(&p, q.user.as_deref()).await?))
}

/// Create a token for yourself (admins: for anyone), shown this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "users",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created; `token` is shown only now", body = NewToken),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ))]
pub async fn create_token(
    State(st): State<AppState>,
    Actor(p): Actor,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: CreateToken = body.decode()?;
    let token = st.users.create_token(&p, req).await?;
    Ok((StatusCode::CREATED, Json(token)).into_response())
}

/// Revoke a token (yours; admins: anyone's). The next request with it
/// fails.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses(
        (status = 200, description = "Revoked", body = TokenInfo),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn revoke_token(
    State(st): State<AppState>,
    Actor(p): Actor,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::invalid("id", "must be a token id (a UUID)"))?;
    Ok(Json(st.users.revoke_token(&p, id).await?))
}

/// The audit trail, newest first (admins).
#[utoipa::path(get, path = "/api/v1/audit", tag = "users",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audited requests, newest first", body = Vec<AuditEntry>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ))]
pub async fn audit(
    State(st): State<AppState>,
    Actor(p): Actor,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    Ok(Json(st.users.audit(&p, &q).await?))
}
