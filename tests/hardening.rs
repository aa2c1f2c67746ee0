//! Black-box tests of the daemon's defences (issue 11): connection
//! exhaustion (cap, header and idle timeouts, the stream cap, the
//! open-files limit), weak token configuration (blank and short tokens,
//! `?token=` only where a browser needs it, the dashboard's headers, login
//! CSRF, rate-limited failures), a full disk (507, `/health` 503) and
//! client-supplied request ids.
//!
//! New settings are passed as environment variables, which a daemon that
//! does not know them ignores: each test then fails on the defect itself,
//! not on an unknown flag.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::api::*;
use common::{eventually, Daemon, Opts};
use reqwest::StatusCode;
use serde_json::Value;

/// A token long enough to be accepted.
const TOKEN: &str = "hardening-test-token-0123456789";

fn with_env(envs: &[(&str, &str)]) -> Opts {
    Opts {
        envs: envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Opts::default()
    }
    .held()
}

fn addr(d: &Daemon) -> String {
    d.url.trim_start_matches("http://").to_string()
}

/// Whether the server closes `tcp` within `secs` (EOF or reset), reading
/// and discarding whatever it sends first.
fn closed_within(tcp: &mut TcpStream, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Reads one HTTP/1.1 response with a `content-length` from `tcp`.
fn read_response(tcp: &mut TcpStream) -> String {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).expect("read the response");
        assert!(n > 0, "closed before the response was complete");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return text;
            }
        }
    }
}

// ------------------------------------------------------- connection exhaustion

/// ~1,000 idle sockets under a 1024 open-files limit used to make `/health`
/// time out: the daemon ran out of descriptors and stopped accepting. Here
/// the limit is 256 (soft = hard, so it cannot be raised) and 400 sockets
/// connect and send nothing.
#[tokio::test]
async fn idle_sockets_past_the_cap_do_not_lock_out_health() {
    let d = Daemon::start_with(Opts {
        open_files: Some((256, 256)),
        ..Opts::default()
    });
    let target = addr(&d);
    let idle: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(&target).expect("connect an idle socket"))
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let health = http
        .get(d.at("/health"))
        .send()
        .await
        .expect("/health answers while idle sockets fill the cap");
    assert_eq!(health.status(), StatusCode::OK);
    // A real client still gets through, more than once.
    for _ in 0..3 {
        let r = http
            .get(d.at("/api/v1/training/jobs"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    drop(idle);
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    use nix::sys::resource::{getrlimit, Resource};
    // Below this process's own hard limit: lowering needs no privilege.
    let (_, ours) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let hard = ours.min(4096);
    let d = Daemon::start_with(Opts {
        open_files: Some((hard / 4, hard)),
        ..Opts::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let hard = hard.to_string();
    assert_eq!(nums, [hard.as_str(), hard.as_str()], "{line}");
}

#[test]
fn a_half_sent_request_line_is_cut_off_after_the_header_timeout() {
    let d = Daemon::start_with(with_env(&[("HEADER_TIMEOUT", "1")]));
    let mut tcp = TcpStream::connect(addr(&d)).unwrap();
    tcp.write_all(b"GET /hea").unwrap();
    assert!(
        closed_within(&mut tcp, 20),
        "a client that never finishes its request line keeps its connection"
    );
    // A silent new connection is held to the same rule.
    let mut silent = TcpStream::connect(addr(&d)).unwrap();
    assert!(closed_within(&mut silent, 20));
}

#[test]
fn idle_kept_alive_connections_are_closed_after_the_idle_timeout() {
    let d = Daemon::start_with(with_env(&[("IDLE_TIMEOUT", "1"), ("HEADER_TIMEOUT", "30")]));
    let mut tcp = TcpStream::connect(addr(&d)).unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut tcp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        closed_within(&mut tcp, 20),
        "an idle kept-alive connection stays open"
    );
}

/// Opens the all-jobs event stream and waits for its `ready` event.
async fn open_stream(d: &Daemon) -> reqwest::Response {
    let resp = d
        .http()
        .get(d.at("/api/v1/training/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = resp;
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while !seen.contains("event: ready") {
            let chunk = resp.chunk().await.unwrap().expect("stream ended");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(first.is_ok(), "no ready event");
    resp
}

#[tokio::test]
async fn streams_past_the_cap_get_503_and_their_slots_come_back() {
    let d = Daemon::start_with(with_env(&[("MAX_STREAMS", "2")]));
    let id = create_id(&d, "alice").await;
    let a = open_stream(&d).await;
    let b = open_stream(&d).await;
    for path in [
        "/api/v1/training/events".to_string(),
        job_path(&id, "/events"),
        job_path(&id, "/logs?follow=true"),
    ] {
        let r = d
            .http()
            .get(d.at(&path))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body: Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("too many live streams") && detail.contains("MAX_STREAMS"),
            "{detail}"
        );
    }
    // Plain reads are not streams.
    assert_eq!(get(&d, &job_path(&id, "/logs")).await.0, StatusCode::OK);
    assert_eq!(get(&d, JOBS).await.0, StatusCode::OK);
    // A closed stream gives its slot back (the server notices at its next
    // write, a keep-alive at the latest).
    drop(a);
    eventually(30, "a free stream slot", || async {
        let r = d
            .http()
            .get(d.at("/api/v1/training/events"))
            .send()
            .await
            .unwrap();
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    drop(b);
}

/// Event streams are long-lived on purpose: no idle timeout cuts them.
#[tokio::test]
async fn an_event_stream_outlives_the_idle_and_header_timeouts() {
    let d = Daemon::start_with(with_env(&[("IDLE_TIMEOUT", "1"), ("HEADER_TIMEOUT", "1")]));
    let mut stream = open_stream(&d).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id = create_id(&d, "alice").await;
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while !seen.contains(&id) {
            match stream.chunk().await {
                Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return false,
            }
        }
        true
    })
    .await;
    assert_eq!(got, Ok(true), "the stream was cut while idle");
}

// ------------------------------------------------------------------ API token

#[test]
fn blank_or_short_api_tokens_refuse_to_start() {
    for (args, token, says) in [
        (vec![], "   ", "empty API token"),
        (vec!["--bind", "0.0.0.0:0"], " \t ", "empty API token"),
        (vec![], "0123456789abcde", "at least 16 characters"),
        (vec![], "  0123456789abcde  ", "at least 16 characters"),
    ] {
        let (code, stderr) = serve_outcome(&args, &[("PLATFORM_API_TOKEN", token)]);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{token:?} {args:?} must refuse to start: {stderr}"
        );
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "one clear line: {line}");
        assert!(line.contains(says), "{line}");
        assert!(
            token.trim().is_empty() || !line.contains(token.trim()),
            "the token is not echoed: {line}"
        );
    }
    // Surrounding whitespace is trimmed: this is the 16-character token.
    let (code, stderr) = serve_outcome(
        &["--bind", "127.0.0.1:0"],
        &[("PLATFORM_API_TOKEN", " 0123456789abcdef\n")],
    );
    assert_eq!(code, None, "{stderr}");
}

#[tokio::test]
async fn query_tokens_open_only_event_streams_and_the_dashboard() {
    let d = Daemon::start_with(
        Opts {
            args: vec!["--api-token".into(), format!("  {TOKEN} ")],
            ..Opts::default()
        }
        .held(),
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let q = format!("?token={TOKEN}");
    for path in [JOBS, "/api/v1/training/frameworks", "/api/v1/datasets"] {
        let path = format!("{path}{q}");
        let r = http.get(d.at(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let stream = http
        .get(d.at(&format!("/api/v1/training/events{q}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    drop(stream);
    let page = http.get(d.at(&format!("/ui{q}"))).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("platform_token="), "{cookie}");
    // The configured token was trimmed: the header works with the bare token.
    let r = http
        .get(d.at(JOBS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The dashboard's cancel button works under an API token: its DELETE
/// carries the login cookie, which counts for a write only when the
/// browser says the request comes from this server's own page.
#[tokio::test]
async fn the_dashboard_cookie_cancels_only_from_the_dashboard_itself() {
    let d = Daemon::start_with(
        Opts {
            args: vec!["--api-token".into(), TOKEN.into()],
            ..Opts::default()
        }
        .held(),
    );
    let http = d.http();
    let created = http
        .post(d.at(JOBS))
        .bearer_auth(TOKEN)
        .json(&job_body("alice"))
        .send()
        .await
        .unwrap();
    let (status, job) = parts(created).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let path = job_path(job["id"].as_str().unwrap(), "");
    let cookie = format!("platform_token={TOKEN}");
    let host = d.at("").trim_start_matches("http://").to_string();
    let delete = |headers: &[(&str, String)]| {
        let mut rb = http.delete(d.at(&path)).header("cookie", &cookie);
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        rb.send()
    };
    for refused in [
        vec![],
        vec![("sec-fetch-site", "cross-site".to_string())],
        vec![("sec-fetch-site", "same-site".to_string())],
        vec![("origin", "http://evil.example".to_string())],
    ] {
        let r = delete(&refused).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{refused:?}");
    }
    assert_eq!(job_field(&d, &path, "status").await, "pending");
    let r = delete(&[
        ("sec-fetch-site", "same-origin".to_string()),
        ("origin", format!("http://{host}")),
    ])
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(job_field(&d, &path, "status").await, "cancelled");
    // Without Sec-Fetch-Site (older browsers), a matching Origin is enough.
    let (status, other) = parts(
        http.post(d.at(JOBS))
            .bearer_auth(TOKEN)
            .json(&job_body("alice"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let r = http
        .delete(d.at(&job_path(other["id"].as_str().unwrap(), "")))
        .header("cookie", &cookie)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn job_field(d: &Daemon, path: &str, field: &str) -> String {
    let r = d
        .http()
        .get(d.at(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (_, job) = parts(r).await;
    job[field].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn dashboard_responses_carry_security_headers() {
    let open = Daemon::held();
    let guarded = Daemon::start_with(Opts {
        args: vec!["--api-token".into(), TOKEN.into()],
        ..Opts::default()
    });
    for (d, path, status) in [
        (&open, "/ui", StatusCode::OK),
        (
            &open,
            "/ui/jobs/00000000-0000-0000-0000-000000000000",
            StatusCode::OK,
        ),
        (&guarded, "/ui", StatusCode::UNAUTHORIZED),
    ] {
        let r = d.http().get(d.at(path)).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("no CSP on {path}"))
            .to_str()
            .unwrap();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
    // The assets the policy allows are the page's own, and inline code there is none.
    let html = open.get_text("/ui").await;
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "{html}"
    );
}

#[tokio::test]
async fn logout_is_a_post_and_cross_site_form_posts_are_refused() {
    let d = Daemon::start_with(Opts {
        args: vec!["--api-token".into(), TOKEN.into()],
        ..Opts::default()
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let host = addr(&d);
    let login = |headers: &[(&str, String)]| {
        let mut rb = http
            .post(d.at("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={TOKEN}"));
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        rb.send()
    };
    for cross in [
        vec![("origin", "http://evil.example".to_string())],
        vec![("sec-fetch-site", "cross-site".to_string())],
        vec![("origin", "null".to_string())],
    ] {
        let r = login(&cross).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{cross:?}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    for same in [
        vec![("origin", format!("http://{host}"))],
        vec![("sec-fetch-site", "same-origin".to_string())],
        vec![],
    ] {
        let r = login(&same).await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{same:?}");
        assert!(r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("platform_token="));
    }
    let r = http.get(d.at("/ui/logout")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "logout by a link or an <img>"
    );
    let r = http
        .post(d.at("/ui/logout"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(d.at("/ui/logout"))
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn failed_authentications_are_rate_limited_per_address() {
    let d = Daemon::start_with(Opts {
        args: vec!["--api-token".into(), TOKEN.into()],
        envs: vec![("MAX_AUTH_FAILURES".into(), "5".into())],
        ..Opts::default()
    });
    let http = d.http();
    // Asking without a token is no guess: it does not count.
    for _ in 0..10 {
        let r = http.get(d.at(JOBS)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let mut limited = None;
    for i in 0..50 {
        let r = http
            .get(d.at(JOBS))
            .bearer_auth(format!("wrong-guess-number-{i:04}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, r));
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let (after, r) = limited.expect("50 wrong tokens in a row were never limited");
    assert_eq!(after, 5, "the limit is MAX_AUTH_FAILURES");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // While blocked, even the right token is refused, on every token route…
    let r = http
        .get(d.at(JOBS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = http
        .post(d.at("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // …but only for that address: 127.0.0.2 is another client.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = other
        .get(d.at(JOBS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Service routes need no token and are never limited.
    assert_eq!(
        http.get(d.at("/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

// ------------------------------------------------------------------ full disk

/// A real `SQLITE_FULL` without root or a small filesystem: the hidden
/// test setting caps the database file at its current size (SQLite's
/// `max_page_count`), and SQLite then answers a write that needs a new
/// page exactly as it answers `ENOSPC`.
#[tokio::test]
async fn a_full_disk_answers_507_and_health_says_so() {
    let d = Daemon::start_with(with_env(&[("PLATFORM_TEST_DB_MAX_PAGES", "1")]));
    assert_eq!(get(&d, "/health").await.0, StatusCode::OK);
    let mut refused = None;
    for _ in 0..3000 {
        let (status, body) = post(&d, JOBS, &job_body("alice")).await;
        if status != StatusCode::CREATED {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the database never filled up");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("disk is full"), "{detail}");
    let (status, health) = get(&d, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "unhealthy");
    let db = health["checks"]["database"].as_str().unwrap();
    assert!(db.contains("disk is full"), "{health}");
    // Reads still work.
    assert_eq!(get(&d, JOBS).await.0, StatusCode::OK);
}

// ----------------------------------------------------------------- request id

#[tokio::test]
async fn unfit_request_ids_are_replaced_not_echoed_or_logged() {
    let d = Daemon::start_with(Opts {
        envs: vec![("RUST_LOG".into(), "info,tower_http=debug".into())],
        ..Opts::default()
    });
    let long = "x".repeat(200);
    let send = |id: reqwest::header::HeaderValue| {
        d.http()
            .get(d.at("/health"))
            .header("x-request-id", id)
            .send()
    };
    let fine = send(reqwest::header::HeaderValue::from_static(
        "client-id-42.a_b",
    ))
    .await
    .unwrap();
    assert_eq!(fine.headers()["x-request-id"], "client-id-42.a_b");
    for bad in [
        reqwest::header::HeaderValue::from_str(&long).unwrap(),
        reqwest::header::HeaderValue::from_bytes("caf\u{e9}-id".as_bytes()).unwrap(),
        reqwest::header::HeaderValue::from_bytes(b"tab\there").unwrap(),
    ] {
        let r = send(bad.clone()).await.unwrap();
        let echoed = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(echoed.as_bytes(), bad.as_bytes());
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
    }
    eventually(10, "the fine id in the log", || async {
        d.log_text().contains("client-id-42.a_b").then_some(())
    })
    .await;
    let log = d.log_text();
    assert!(!log.contains(&long), "the long id reached the log");
}

// ------------------------------------------------------------------ OpenAPI

#[tokio::test]
async fn the_openapi_document_describes_the_new_answers() {
    // With a token: a daemon without one documents no authentication
    // failures (no 401, no 429) on user routes.
    let d = Daemon::start_with(
        Opts {
            args: vec!["--api-token".into(), "sixteen-chars-token".into()],
            ..Opts::default()
        }
        .held(),
    );
    let spec: Value = d.get_json("/openapi.json").await;
    let paths = &spec["paths"];
    let jobs = &paths["/api/v1/training/jobs"];
    assert!(jobs["get"]["responses"]["429"].is_object(), "{jobs}");
    assert!(jobs["post"]["responses"]["507"].is_object(), "{jobs}");
    assert!(
        jobs["get"]["responses"]["507"].is_null(),
        "reads never fill a disk"
    );
    for path in [
        "/api/v1/training/events",
        "/api/v1/training/jobs/{id}/events",
    ] {
        let op = &paths[path]["get"];
        assert!(op["responses"]["503"].is_object(), "{path}");
        let params = op["parameters"].as_array().unwrap();
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "token" && p["in"] == "query"),
            "{path}"
        );
    }
    let logs = &paths["/api/v1/training/jobs/{id}/logs"]["get"];
    assert!(logs["responses"]["503"].is_object());
    assert!(!logs["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "token"));
    // Trainer routes take the job's token, which is not rate-limited.
    let callback = &paths["/api/v1/training/jobs/{id}/callback"]["post"];
    assert!(callback["responses"]["429"].is_null());
    assert!(callback["responses"]["507"].is_object());
    assert!(paths["/health"]["get"]["responses"]["429"].is_null());
}
