//! The embedded web dashboard at `/ui`: a jobs table and a job page with
//! live metric charts and the log tail, all hand-written HTML/JS/CSS
//! compiled into the binary (no CDN, no Node build step). Read-only: it
//! uses only the GET endpoints and the event streams.
//!
//! With an API token configured the dashboard needs it too. Browsers cannot
//! attach an `Authorization` header to `EventSource`, so for GET requests
//! the token is also accepted from the `platform_token` cookie (set by the
//! login form, `HttpOnly`, `SameSite=Strict`) or a `?token=` query
//! parameter. Writes always need the header, so the cookie cannot be
//! abused for cross-site changes.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::AppState;

/// Name of the cookie that carries the API token for the dashboard.
pub const COOKIE: &str = "platform_token";

const INDEX: &str = include_str!("../../assets/ui/index.html");
const LOGIN: &str = include_str!("../../assets/ui/login.html");
const APP_JS: &str = include_str!("../../assets/ui/app.js");
const APP_CSS: &str = include_str!("../../assets/ui/app.css");

/// The dashboard's pages (they need the API token when one is set).
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/jobs/{id}", get(page))
}

/// What the login form needs before anyone is signed in: assets, login, logout.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/login", post(login))
        .route("/ui/logout", get(logout))
}

/// The token a browser presents without an `Authorization` header: the
/// `?token=` query parameter or the cookie; only for GET/HEAD requests.
pub fn browser_token(req: &Request) -> Option<String> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    query_token(req.uri()).or_else(|| cookie_token(req.headers()))
}

fn query_token(uri: &Uri) -> Option<String> {
    let Query(q) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    q.get("token").filter(|t| !t.is_empty()).cloned()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| percent_decode(value))
        .filter(|t| !t.is_empty())
}

/// The login form, answered with 401 to an unauthenticated dashboard request.
pub fn login_page(error: Option<&str>) -> Response {
    let note = error
        .map(|e| format!(r#"<p class="error">{}</p>"#, html_escape(e)))
        .unwrap_or_default();
    (
        StatusCode::UNAUTHORIZED,
        Html(LOGIN.replace("<!--ERROR-->", &note)),
    )
        .into_response()
}

/// `/ui`, `/ui/jobs/{id}`: the single page; its script routes on the path.
/// A valid `?token=` is remembered in the cookie so later API calls carry it.
async fn page(State(st): State<AppState>, uri: Uri) -> Response {
    let mut resp = ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX)).into_response();
    if let Some(token) = query_token(&uri) {
        if st.api_token.is_required() && st.api_token.admits(Some(&token)) {
            set_cookie(&mut resp, &token);
        }
    }
    resp
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// `POST /ui/login`: checks the token and stores it in the cookie.
async fn login(
    State(st): State<AppState>,
    form: Result<Form<Login>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !st.api_token.is_required() {
        return Redirect::to("/ui").into_response();
    }
    match form {
        Ok(Form(l)) if st.api_token.admits(Some(l.token.trim())) => {
            let mut resp = Redirect::to("/ui").into_response();
            set_cookie(&mut resp, l.token.trim());
            resp
        }
        _ => login_page(Some("That token is not the server's API token.")),
    }
}

/// `GET /ui/logout`: forgets the cookie.
async fn logout() -> Response {
    let mut resp = Redirect::to("/ui").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("platform_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    resp
}

fn set_cookie(resp: &mut Response, token: &str) {
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        percent_encode(token)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
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

/// Cookie values may hold only a safe subset of ASCII.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
    fn cookie_values_round_trip() {
        for t in ["plain-token_1.2~", "with space;semi=colon%", "ünïcode"] {
            assert_eq!(percent_decode(&percent_encode(t)).as_deref(), Some(t));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn reads_the_token_from_cookie_or_query_on_get_only() {
        let req = |method: Method, uri: &str, cookie: Option<&str>| {
            let mut b = Request::builder().method(method).uri(uri);
            if let Some(c) = cookie {
                b = b.header(header::COOKIE, c);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        let get = |uri, cookie| browser_token(&req(Method::GET, uri, cookie));
        assert_eq!(get("/ui?token=a%20b", None).as_deref(), Some("a b"));
        assert_eq!(
            get("/ui", Some("x=1; platform_token=s%3Bt")).as_deref(),
            Some("s;t")
        );
        assert_eq!(get("/ui", Some("other=1")), None);
        assert_eq!(
            browser_token(&req(
                Method::POST,
                "/api/v1/training/jobs?token=t",
                Some("platform_token=t")
            )),
            None
        );
    }
}
