//! Who may call what, as middleware on the sub-routers of [`super::router`]:
//! user routes need the operator's API token (when one is configured),
//! trainer routes need the job's own callback token, and dashboard pages
//! answer the login form instead of a 401. Nothing here matches paths: a
//! route's group decides its check.
//!
//! Every comparison runs in constant time ([`crate::secrets::constant_time_eq`]).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::{bearer, JobId};
use super::ui;
use super::AppState;
use crate::secrets::constant_time_eq;

/// The operator's API token; `None` leaves user routes open (loopback).
#[derive(Clone, Default)]
pub struct ApiToken(Option<std::sync::Arc<str>>);

impl ApiToken {
    /// A token to require, or none.
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(std::sync::Arc::from))
    }

    /// Whether a token is configured.
    pub fn is_required(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `presented` is the token (true when none is required).
    pub fn admits(&self, presented: Option<&str>) -> bool {
        match &self.0 {
            None => true,
            Some(t) => presented.is_some_and(|p| constant_time_eq(p.as_bytes(), t.as_bytes())),
        }
    }
}

/// Whether `req` carries the API token: as a bearer header, or (GET/HEAD
/// only, for browsers that cannot set headers) the dashboard's cookie or
/// `?token=`.
fn presents_api_token(st: &AppState, req: &Request) -> bool {
    st.api_token.admits(bearer(req.headers()))
        || ui::browser_token(req).is_some_and(|t| st.api_token.admits(Some(&t)))
}

/// User routes: the API token, when one is configured.
pub async fn require_api_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !presents_api_token(&st, &req) {
        return ApiError::Unauthorized(
            "missing or invalid API token: send Authorization: Bearer <token> (platform --token / PLATFORM_TOKEN)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// Dashboard pages: like user routes, but a browser gets the login form.
pub async fn require_dashboard_login(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if !presents_api_token(&st, &req) {
        return ui::login_page(None);
    }
    next.run(req).await
}

/// Trainer routes (`/jobs/{id}/…`): the job's callback token, never the
/// API token. An unknown job is a 404, a malformed id a 422.
pub async fn require_job_token(
    State(st): State<AppState>,
    JobId(id): JobId,
    req: Request,
    next: Next,
) -> Response {
    if let Err(e) = st.jobs.authorize(id, bearer(req.headers())).await {
        return ApiError::from(e).into_response();
    }
    next.run(req).await
}
