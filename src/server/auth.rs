//! Who may call what, as middleware on the sub-routers of [`super::router`]:
//! user routes need the operator's API token (when one is configured),
//! event streams also take it from `?token=` (a browser's `EventSource`
//! cannot send a header), trainer routes need the job's own callback token,
//! and dashboard pages answer the login form instead of a 401
//! ([`super::ui`] owns that check). Nothing here matches paths: a route's
//! group decides its check.
//!
//! Where the API token may come from:
//! - `Authorization: Bearer …`: everywhere;
//! - the dashboard's `platform_token` cookie (`HttpOnly`,
//!   `SameSite=Strict`): GET and HEAD, and writes only when the browser
//!   says they come from this server's own page (the cancel button);
//! - `?token=`: only on the two event streams and the dashboard's page
//!   load (which moves it into the cookie), never on other API routes, so
//!   tokens do not end up in the URLs of ordinary calls.
//!
//! Wrong tokens are counted per client address ([`super::ratelimit`]);
//! past the limit the address gets 429 until its minute is over. Every
//! comparison runs in constant time ([`crate::secrets::constant_time_eq`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::credentials;
use super::error::ApiError;
use super::extract::{bearer, JobId};
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

/// The client's address, when the server knows it (always, when served by
/// [`super::listen::serve`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

fn client_ip(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// What the API-token check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Admitted,
    /// No token presented.
    Missing,
    /// A token was presented, and none was right.
    Wrong,
    /// Too many wrong tokens from this address: try again in this many seconds.
    Blocked(u64),
}

impl AppState {
    /// Checks a token a client presented outside a request (the login
    /// form), counting a wrong one against its address.
    pub(super) fn check_token(&self, ip: Option<IpAddr>, presented: &[String]) -> Verdict {
        if !self.api_token.is_required() {
            return Verdict::Admitted;
        }
        if let Some(secs) = ip.and_then(|ip| self.auth_failures.blocked(ip)) {
            return Verdict::Blocked(secs);
        }
        if presented.is_empty() {
            return Verdict::Missing;
        }
        if presented.iter().any(|t| self.api_token.admits(Some(t))) {
            return Verdict::Admitted;
        }
        if let Some(ip) = ip {
            self.auth_failures.record(ip);
        }
        Verdict::Wrong
    }

    /// Checks the API token of `req`; `query` also accepts `?token=`.
    fn check_request(&self, req: &Request, query: bool) -> Verdict {
        let mut presented: Vec<String> = Vec::new();
        presented.extend(bearer(req.headers()).map(str::to_string));
        presented.extend(credentials::cookie_token(req));
        if query {
            presented.extend(credentials::query_token(req));
        }
        self.check_token(client_ip(req.extensions()), &presented)
    }
}

/// The API answer to a refused verdict.
fn refusal(v: Verdict) -> Response {
    match v {
        Verdict::Blocked(secs) => ApiError::TooManyRequests {
            detail: format!(
                "too many failed API-token attempts from your address; try again in {secs} s"
            ),
            retry_after: secs,
        }
        .into_response(),
        _ => ApiError::Unauthorized(
            "missing or invalid API token: send Authorization: Bearer <token> (platform --token / PLATFORM_TOKEN)".into(),
        )
        .into_response(),
    }
}

/// User routes: the API token, when one is configured.
pub async fn require_api_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    guard(&st, req, next, false, refusal).await
}

/// Event streams: like user routes, and `?token=` is accepted too.
pub async fn require_stream_token(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    guard(&st, req, next, true, refusal).await
}

/// Runs `next` if the request's API token is right (`query`: also from
/// `?token=`), else answers `refuse`'s response to the verdict.
pub(super) async fn guard(
    st: &AppState,
    req: Request,
    next: Next,
    query: bool,
    refuse: fn(Verdict) -> Response,
) -> Response {
    match st.check_request(&req, query) {
        Verdict::Admitted => next.run(req).await,
        refused => refuse(refused),
    }
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
