//! Where a request's API token may come from besides the `Authorization`
//! header ([`super::extract::bearer`]): the dashboard's `platform_token`
//! cookie and `?token=`, both on GET and HEAD only, so neither can make a
//! change. [`super::auth`] decides which of them a route accepts;
//! [`super::ui`] sets and clears the cookie.

use std::collections::HashMap;

use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};

/// Name of the cookie that carries the API token for the dashboard.
const COOKIE: &str = "platform_token";

/// The dashboard's cookie: on GET/HEAD requests, and on others (the
/// dashboard's cancel button) only when the browser says the request comes
/// from a page of this server, so no other site can make a change with it
/// (the cookie is `SameSite=Strict` as well).
pub(super) fn cookie_token(req: &Request) -> Option<String> {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe && from_this_site(req.headers(), req.uri()) != Some(true) {
        return None;
    }
    cookie_value(req.headers())
}

/// Whether a browser sent this request from a page of this server: its
/// `Sec-Fetch-Site`, else its `Origin` against the request's host; `None`
/// when it carries neither (not a browser's cross-site request: browsers
/// send `Origin` on every POST and DELETE, e.g. a script).
pub(super) fn from_this_site(headers: &HeaderMap, uri: &Uri) -> Option<bool> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return Some(matches!(site.as_bytes(), b"same-origin" | b"none"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let authority = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    Some(matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h)))
}

/// `?token=`, on GET/HEAD requests only (the routes that accept it decide
/// whether to look).
pub(super) fn query_token(req: &Request) -> Option<String> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    token_in(req.uri())
}

pub(super) fn token_in(uri: &Uri) -> Option<String> {
    let Query(q) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    q.get("token").filter(|t| !t.is_empty()).cloned()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
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

/// The `Set-Cookie` value that signs the dashboard in with `token`.
pub(super) fn session_cookie(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        percent_encode(token)
    ))
    .ok()
}

/// The `Set-Cookie` value that signs the dashboard out.
pub(super) fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("platform_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
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
        assert_eq!(
            query_token(&req(Method::GET, "/ui?token=a%20b", None)).as_deref(),
            Some("a b")
        );
        assert_eq!(
            cookie_token(&req(Method::GET, "/ui", Some("x=1; platform_token=s%3Bt"))).as_deref(),
            Some("s;t")
        );
        assert_eq!(
            cookie_token(&req(Method::GET, "/ui", Some("other=1"))),
            None
        );
        let post = req(
            Method::POST,
            "/api/v1/training/jobs?token=t",
            Some("platform_token=t"),
        );
        assert_eq!(query_token(&post), None);
        assert_eq!(cookie_token(&post), None);
        let mut delete = req(
            Method::DELETE,
            "/api/v1/training/jobs/x",
            Some("platform_token=t"),
        );
        delete
            .headers_mut()
            .insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert_eq!(
            cookie_token(&delete).as_deref(),
            Some("t"),
            "the dashboard's cancel"
        );
        delete
            .headers_mut()
            .insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(cookie_token(&delete), None);
    }
}
