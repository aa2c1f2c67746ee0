//! The embedded web dashboard at `/ui`: a jobs table and a job page with
//! live metric charts and the log tail, all hand-written HTML/JS/CSS
//! compiled into the binary (no CDN, no Node build step). It reads through
//! the GET endpoints and the event streams; its one write is cancel.
//!
//! When auth is required the dashboard needs a token too (a user token or
//! the API token); the page shows who is signed in (`/api/v1/whoami`) and
//! offers cancel only on jobs that user may cancel. The login form
//! (or a first page load with `?token=`, e.g. a link from a script) stores
//! it in the `platform_token` cookie (`HttpOnly`, `SameSite=Strict`), which
//! then authorises the dashboard's GET requests and event streams, and its
//! cancel button's DELETE when the browser says it comes from this site
//! ([`super::credentials`]); the page's script removes a `?token=` from the
//! address bar at once. Login and logout are POSTs that refuse cross-site
//! senders (`Sec-Fetch-Site`, else `Origin`).
//!
//! Every dashboard response carries a strict Content-Security-Policy (the
//! assets have no inline script or style), `X-Frame-Options: DENY` and
//! `Referrer-Policy: no-referrer`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::auth::{self, ClientIp, Verdict};
use super::credentials;
use super::AppState;

const INDEX: &str = include_str!("../../assets/ui/index.html");
const LOGIN: &str = include_str!("../../assets/ui/login.html");
const APP_JS: &str = include_str!("../../assets/ui/app.js");
const APP_CSS: &str = include_str!("../../assets/ui/app.css");

/// The dashboard's policy: its own script, stylesheet and API only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's pages (they need the API token when one is set).
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/jobs/{id}", get(page))
        .route("/ui/compare", get(page))
}

/// What the login form needs before anyone is signed in: assets, login, logout.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .layer(axum::middleware::map_response(protect))
}

/// Adds the dashboard's security headers to a response.
pub async fn protect(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The login form, with `status` and an optional error line.
fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let note = error
        .map(|e| format!(r#"<p class="error">{}</p>"#, html_escape(e)))
        .unwrap_or_default();
    (status, Html(LOGIN.replace("<!--ERROR-->", &note))).into_response()
}

/// What a dashboard request that failed the token check gets: the login
/// form (401), or 429 while the address is blocked.
pub fn login_refused(v: Verdict) -> Response {
    match v {
        Verdict::Blocked(secs) => {
            let mut resp = login_page(
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed sign-ins from your address; try again in {secs} seconds."
                )),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
        Verdict::Wrong => login_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid here (unknown, revoked, expired, or its user is disabled)."),
        ),
        Verdict::Unavailable(_) => login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The server cannot check tokens right now; try again."),
        ),
        Verdict::Missing | Verdict::Admitted(_) => login_page(StatusCode::UNAUTHORIZED, None),
    }
}

/// Dashboard pages: like event streams, but a browser gets the login form.
pub async fn require_dashboard_login(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    auth::guard(&st, req, next, true, login_refused).await
}

/// `/ui`, `/ui/jobs/{id}`, `/ui/compare`: the single page; its script
/// routes on the path.
/// A valid `?token=` is moved into the cookie (the script then drops it
/// from the address bar), so later API calls carry it.
async fn page(State(st): State<AppState>, uri: Uri) -> Response {
    let mut resp = ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX)).into_response();
    if let Some(token) = credentials::token_in(&uri) {
        if st.users.auth_required() && matches!(st.users.authenticate(&token).await, Ok(Some(_))) {
            set_cookie(&mut resp, &token);
        }
    }
    resp
}

fn cross_site_refusal() -> Response {
    login_page(
        StatusCode::FORBIDDEN,
        Some("Refused: this form was sent from another site."),
    )
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// `POST /ui/login`: checks the token and stores it in the cookie.
async fn login(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<Login>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !credentials::from_this_site(&headers, &uri).unwrap_or(true) {
        return cross_site_refusal();
    }
    if !st.users.auth_required() {
        return Redirect::to("/ui").into_response();
    }
    let presented: Vec<String> = form
        .ok()
        .map(|Form(l)| l.token.trim().to_string())
        .filter(|t| !t.is_empty())
        .into_iter()
        .collect();
    match st.check_token(ip, &presented).await {
        Verdict::Admitted(_) => {
            let mut resp = Redirect::to("/ui").into_response();
            if let Some(token) = presented.first() {
                set_cookie(&mut resp, token);
            }
            resp
        }
        Verdict::Missing => login_refused(Verdict::Wrong),
        refused => login_refused(refused),
    }
}

/// `POST /ui/logout`: forgets the cookie.
async fn logout(headers: HeaderMap, uri: Uri) -> Response {
    if !credentials::from_this_site(&headers, &uri).unwrap_or(true) {
        return cross_site_refusal();
    }
    let mut resp = Redirect::to("/ui").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, credentials::cleared_cookie());
    resp
}

fn set_cookie(resp: &mut Response, token: &str) {
    if let Some(v) = credentials::session_cookie(token) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // no-cache: the binary may be upgraded under the same URL.
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_posts_from_other_sites_are_refused() {
        let uri: Uri = "/ui/login".parse().unwrap();
        let check = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8000"));
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            credentials::from_this_site(&h, &uri).unwrap_or(true)
        };
        assert!(check(&[]), "no browser headers: a script");
        assert!(check(&[("sec-fetch-site", "same-origin")]));
        assert!(check(&[("origin", "http://127.0.0.1:8000")]));
        assert!(!check(&[("sec-fetch-site", "cross-site")]));
        assert!(!check(&[("sec-fetch-site", "same-site")]));
        assert!(!check(&[("origin", "http://evil.example")]));
        assert!(!check(&[("origin", "null")]));
        assert!(
            !check(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://127.0.0.1:8000")
            ]),
            "Sec-Fetch-Site wins"
        );
    }
}
