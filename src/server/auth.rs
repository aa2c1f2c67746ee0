//! Who may call what, as middleware on the sub-routers of [`super::router`]:
//! user routes need a user token or the operator's API token when auth is
//! required ([`crate::users`] says whose a token is; the principal goes
//! into the request's extensions for handlers, see [`Actor`]), event
//! streams also take it from `?token=` (a browser's `EventSource`
//! cannot send a header), trainer routes need the job's own callback token,
//! and dashboard pages answer the login form instead of a 401
//! ([`super::ui`] owns that check); a few user routes are for admins only
//! ([`require_admin`]). Nothing here matches paths: a route's group
//! decides its check.
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
//! past the limit the address gets 429 until its minute is over. User
//! tokens are looked up by their SHA-256; the API token is compared in
//! constant time.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::credentials;
use super::error::ApiError;
use super::extract::{bearer, JobId};
use super::AppState;
use crate::model::Principal;

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

pub(super) fn client_ip(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// What the token check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through, acting as this principal.
    Admitted(Principal),
    /// No token presented.
    Missing,
    /// A token was presented, and none was right.
    Wrong,
    /// Too many wrong tokens from this address: try again in this many seconds.
    Blocked(u64),
    /// The token could not be checked (the database failed).
    Unavailable(String),
}

impl AppState {
    /// Checks the tokens a client presented (header, cookie, query, or
    /// the login form), counting a wrong one against its address. Without
    /// required auth every caller is admitted as before users existed; a
    /// valid user token still says who it is.
    pub(super) async fn check_token(&self, ip: Option<IpAddr>, presented: &[String]) -> Verdict {
        let required = self.users.auth_required();
        if required {
            if let Some(secs) = ip.and_then(|ip| self.auth_failures.blocked(ip)) {
                return Verdict::Blocked(secs);
            }
        }
        for token in presented {
            match self.users.authenticate(token).await {
                Ok(Some(principal)) => return Verdict::Admitted(principal),
                Ok(None) => {}
                Err(e) => return Verdict::Unavailable(e.to_string()),
            }
        }
        if !required {
            return Verdict::Admitted(Principal::anonymous());
        }
        if presented.is_empty() {
            return Verdict::Missing;
        }
        if let Some(ip) = ip {
            self.auth_failures.record(ip);
        }
        Verdict::Wrong
    }

    /// The tokens `req` presents, and its client's address; `query` also
    /// takes `?token=`. (Plain values: a request is not `Sync`, so it may
    /// not be borrowed across the lookup's await.)
    fn presented(req: &Request, query: bool) -> (Option<IpAddr>, Vec<String>) {
        let mut presented: Vec<String> = Vec::new();
        presented.extend(bearer(req.headers()).map(str::to_string));
        presented.extend(credentials::cookie_token(req));
        if query {
            presented.extend(credentials::query_token(req));
        }
        (client_ip(req.extensions()), presented)
    }
}

/// Who a request acts as, for handlers of user routes (set by the auth
/// middleware; a route without it acts as nobody in particular, which only
/// an open daemon has).
#[derive(Debug, Clone)]
pub struct Actor(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Actor(
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or_else(Principal::anonymous),
        ))
    }
}

/// The API answer to a refused verdict.
fn refusal(v: Verdict) -> Response {
    match v {
        Verdict::Unavailable(e) => {
            tracing::error!(error = %e, "cannot check an API token");
            ApiError::Unavailable("cannot check the API token right now; try again".into())
                .into_response()
        }
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

/// Admin-only user routes (inside the token check): 403 for members; the
/// state says what only admins may do, for the message.
pub async fn require_admin(
    State(what): State<&'static str>,
    Actor(actor): Actor,
    req: Request,
    next: Next,
) -> Response {
    if actor.is_admin() {
        return next.run(req).await;
    }
    let me = actor.user.as_deref().unwrap_or("nobody");
    ApiError::Forbidden(format!(
        "only admins may {what}; you are signed in as {me:?}, a member"
    ))
    .into_response()
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
    let (ip, presented) = AppState::presented(&req, query);
    match st.check_token(ip, &presented).await {
        Verdict::Admitted(principal) => {
            let mut req = req;
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
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
