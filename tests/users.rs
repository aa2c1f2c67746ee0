//! Users, tokens and roles against a real daemon (issue 15): each role's
//! allowed and forbidden actions on every route of the OpenAPI document (a
//! new route without a decision here fails), tokens kept only as hashes,
//! revocation and expiry, the first-start bootstrap, `PLATFORM_API_TOKEN`
//! and unauthenticated loopback as before, CLI contexts in a 0600 file,
//! and an audit row for every state change.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::api::{job_body, parts, JOBS};
use common::{Daemon, Opts};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "users-test-operator-token-0123456789";

fn daemon(opts: Opts) -> Daemon {
    Daemon::start_with(opts.held())
}

fn with_api_token() -> Daemon {
    let mut opts = Opts::default();
    opts.args.extend(["--api-token".into(), ADMIN.into()]);
    // Webhook endpoints on loopback (nothing listens: deliveries stay queued).
    opts.envs.push(("WEBHOOK_ALLOW_PRIVATE".into(), "1".into()));
    daemon(opts)
}

/// Sends `method path` with `token` (and a JSON `body`).
async fn call(
    d: &Daemon,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut rb = d.http().request(method, d.at(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let resp = rb.send().await.expect("request");
    if path.ends_with("/events") && resp.status() == StatusCode::OK {
        // An event stream never ends: its status is the answer.
        return (resp.status(), Value::Null);
    }
    parts(resp).await
}

/// Creates a user with `role` (as the operator); their first token.
async fn user(d: &Daemon, name: &str, role: &str) -> String {
    let (s, v) = call(
        d,
        Method::POST,
        "/api/v1/users",
        Some(ADMIN),
        Some(&json!({"name": name, "role": role})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["role"], role);
    let token = v["token"]["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("plt_"), "{token}");
    token
}

/// Creates a job as `token`'s user (no `user_id`: it comes from the token).
async fn job_as(d: &Daemon, token: &str) -> Value {
    let mut body = job_body("x");
    body.as_object_mut().unwrap().remove("user_id");
    let (s, v) = call(d, Method::POST, JOBS, Some(token), Some(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// What a role may do on a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum May {
    /// Anyone, without a token.
    Public,
    /// Allowed (neither 401 nor 403).
    Yes,
    /// 403.
    No,
    /// A trainer route: user tokens never open it (401).
    Trainer,
}

/// The decision for each documented route: (member, admin).
fn decision(method: &str, path: &str) -> Option<(May, May)> {
    use May::*;
    Some(match (method, path) {
        ("get", "/" | "/health" | "/metrics") => (Public, Public),
        ("post", "/api/v1/training/jobs/{id}/callback")
        | ("post", "/api/v1/training/jobs/{id}/metrics")
        | ("put", "/api/v1/training/jobs/{id}/artifacts/{path}")
        | ("get", "/api/v1/training/jobs/{id}/dataset")
        | ("get", "/api/v1/training/jobs/{id}/dataset/files/{path}") => (Trainer, Trainer),
        ("get", _)
            if path.starts_with("/api/v1/training/") || path.starts_with("/api/v1/datasets") =>
        {
            (Yes, Yes)
        }
        ("post", "/api/v1/training/jobs/{id}/heartbeat") => (Trainer, Trainer),
        ("post", "/api/v1/training/jobs") => (Yes, Yes),
        // bob's job: members may not cancel it or change its priority,
        // admins may.
        ("delete" | "patch", "/api/v1/training/jobs/{id}") => (No, Yes),
        ("get", "/api/v1/queues") => (Yes, Yes),
        ("get", "/api/v1/gpus") => (Yes, Yes),
        ("post", "/api/v1/queues/{name}/pause" | "/api/v1/queues/{name}/resume") => (No, Yes),
        // Webhooks see every job's events: admins only, reads included.
        ("get" | "post", "/api/v1/webhooks")
        | ("get" | "delete", "/api/v1/webhooks/{id}")
        | ("post", "/api/v1/webhooks/{id}/test")
        | ("get", "/api/v1/webhooks/{id}/deliveries") => (No, Yes),
        ("post", "/api/v1/training/frameworks/reload") => (No, Yes),
        ("put", "/api/v1/datasets/{name}/files/{path}") => (Yes, Yes),
        ("get", "/api/v1/whoami") => (Yes, Yes),
        ("get" | "post", "/api/v1/users") | ("patch", "/api/v1/users/{name}") => (No, Yes),
        ("get" | "post", "/api/v1/tokens") => (Yes, Yes),
        // bob's token.
        ("delete", "/api/v1/tokens/{id}") => (No, Yes),
        ("get", "/api/v1/audit") => (No, Yes),
        // Retention removes every user's history.
        ("post", "/api/v1/prune") => (No, Yes),
        // Sweeps: everyone may create and list; another user's sweep is
        // hidden from a member (404, not 403), so only the owner or an
        // admin reaches it.
        ("get" | "post", "/api/v1/sweeps")
        | ("get", "/api/v1/sweeps/{id}")
        | ("post", "/api/v1/sweeps/{id}/cancel") => (Yes, Yes),
        _ => return None,
    })
}

#[tokio::test]
async fn every_route_has_a_decision_for_each_role() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    let root = user(&d, "root", "admin").await;
    let job = job_as(&d, &bob).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["user_id"], "bob", "the owner comes from the token");
    let (_, bobs) = call(&d, Method::GET, "/api/v1/tokens", Some(&bob), None).await;
    let bob_token = bobs[0]["id"].as_str().unwrap().to_string();
    let doc: Value = d.get_json("/openapi.json").await;
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let Some((member, admin)) = decision(method, path) else {
                missing.push(format!("{} {path}", method.to_uppercase()));
                continue;
            };
            let concrete = path
                .replace("/tokens/{id}", &format!("/tokens/{bob_token}"))
                .replace("{id}", &id)
                .replace("/users/{name}", "/users/bob")
                .replace("/queues/{name}", "/queues/default")
                .replace("{name}", "shared")
                .replace("{path}", "f.txt");
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/api/v1/training/jobs") => Some(job_body("alice")),
                ("post", "/api/v1/users") => Some(json!({"name": format!("u{checked}")})),
                ("patch", "/api/v1/training/jobs/{id}") => Some(json!({"priority": 60})),
                ("patch", _) => Some(json!({"role": "member"})),
                ("post", "/api/v1/webhooks") => Some(json!({"url": "http://127.0.0.1:9/hook"})),
                ("post", "/api/v1/tokens") => Some(json!({"name": "laptop"})),
                ("post", "/api/v1/prune") => Some(json!({"older_than_days": 30, "dry_run": true})),
                ("post", _) => Some(json!({"status": "running"})),
                _ => None,
            };
            // The member first: the admin's cancel and revoke change state.
            for (who, token, may) in [("member", &alice, member), ("admin", &root, admin)] {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let (s, v) = call(&d, method.clone(), &concrete, Some(token), body.as_ref()).await;
                let what = format!("{who} {method} {concrete}: {s} {v}");
                match may {
                    May::Public | May::Yes => assert!(
                        s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                        "{what}"
                    ),
                    May::No => assert_eq!(s, StatusCode::FORBIDDEN, "{what}"),
                    May::Trainer => assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}"),
                }
                if may != May::Public {
                    let (s, _) = call(&d, method, &concrete, None, body.as_ref()).await;
                    assert_eq!(s, StatusCode::UNAUTHORIZED, "no token: {concrete}");
                }
            }
            checked += 1;
        }
    }
    assert!(missing.is_empty(), "routes without a decision: {missing:?}");
    assert!(checked >= 47, "{checked}");
}

#[tokio::test]
async fn members_change_only_their_own_jobs_and_submit_only_as_themselves() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    let job = job_as(&d, &bob).await;
    let path = format!("{JOBS}/{}", job["id"].as_str().unwrap());
    let (s, v) = call(&d, Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(v["detail"].as_str().unwrap().contains("\"bob\""), "{v}");
    let (_, still) = call(&d, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(
        still["status"], "pending",
        "a refused cancel changes nothing"
    );
    let (s, _) = call(&d, Method::DELETE, &path, Some(&bob), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "the owner may");
    // A member naming someone else is refused; their own name is fine.
    let (s, v) = call(&d, Method::POST, JOBS, Some(&alice), Some(&job_body("bob"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = call(
        &d,
        Method::POST,
        JOBS,
        Some(&alice),
        Some(&job_body("alice")),
    )
    .await;
    assert_eq!(
        (s, v["user_id"].clone()),
        (StatusCode::CREATED, json!("alice"))
    );
    // The operator's token is an admin: on behalf of anyone, as before.
    let (s, v) = call(
        &d,
        Method::POST,
        JOBS,
        Some(ADMIN),
        Some(&job_body("carol")),
    )
    .await;
    assert_eq!(
        (s, v["user_id"].clone()),
        (StatusCode::CREATED, json!("carol"))
    );
    let carol = format!("{JOBS}/{}", v["id"].as_str().unwrap());
    let (s, _) = call(&d, Method::DELETE, &carol, Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

/// `POST /jobs` as `token` with an `Idempotency-Key`: the status, the
/// body, and whether the answer says it is a replay.
async fn create_with_key(
    d: &Daemon,
    token: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Value, bool) {
    let resp = d
        .http()
        .post(d.at(JOBS))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let (s, v) = parts(resp).await;
    (s, v, replayed)
}

/// `(method, path, status, target)` of `user`'s audit rows, newest first.
async fn audit_of(d: &Daemon, user: &str) -> Vec<(String, String, u64, String)> {
    let (s, rows) = call(
        d,
        Method::GET,
        &format!("/api/v1/audit?user={user}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rows}");
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
                r["target"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn idempotency_keys_are_per_user_and_replays_keep_the_ownership_rule() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    let mut body = job_body("x");
    body.as_object_mut().unwrap().remove("user_id");
    let (s, first, replayed) = create_with_key(&d, &alice, "k1", &body).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, false), "{first}");
    assert_eq!(first["user_id"], "alice");
    // The same user and key: the original answer, nothing new.
    let (s, again, replayed) = create_with_key(&d, &alice, "k1", &body).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again, first);
    // Another user's key of the same name is theirs: a new job.
    let (s, bobs, replayed) = create_with_key(&d, &bob, "k1", &body).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, false), "{bobs}");
    assert_ne!(bobs["id"], first["id"]);
    assert_eq!(bobs["user_id"], "bob");
    // A member submitting as someone else is refused with a key too, and
    // the refusal does not use the key up.
    let (s, v, _) = create_with_key(&d, &alice, "k2", &job_body("bob")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v, replayed) = create_with_key(&d, &alice, "k2", &body).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, false), "{v}");
    let (_, all) = call(&d, Method::GET, JOBS, Some(ADMIN), None).await;
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    // The operator's token keeps its own keys (and submits for anyone).
    let (s, carol, replayed) = create_with_key(&d, ADMIN, "k1", &job_body("carol")).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, false), "{carol}");
    assert_eq!(carol["user_id"], "carol");
    // Each create is audited in its own write; a replay names the job it
    // answered.
    let a = first["id"].as_str().unwrap().to_string();
    let k2 = v["id"].as_str().unwrap().to_string();
    let post = |status, target: &str| {
        (
            "POST".to_string(),
            JOBS.to_string(),
            status,
            target.to_string(),
        )
    };
    assert_eq!(
        audit_of(&d, "alice").await,
        [post(201, &k2), post(403, ""), post(201, &a), post(201, &a)]
    );
}

#[tokio::test]
async fn priorities_queues_and_webhooks_follow_the_roles_and_are_audited() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    let job = job_as(&d, &bob).await;
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("{JOBS}/{id}");
    let prio = json!({"priority": 80});
    let (s, v) = call(&d, Method::PATCH, &path, Some(&alice), Some(&prio)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("\"bob\""), "{v}");
    let (_, still) = call(&d, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(still["priority"], 50, "a refused update changes nothing");
    let (s, v) = call(&d, Method::PATCH, &path, Some(&bob), Some(&prio)).await;
    assert_eq!(
        (s, v["priority"].clone()),
        (StatusCode::OK, json!(80)),
        "{v}"
    );
    assert_eq!(
        audit_of(&d, "bob").await[0],
        ("PATCH".into(), path.clone(), 200, id.clone()),
        "recorded with the change"
    );
    // Queues: everyone lists them, only admins pause and resume.
    let (s, _) = call(&d, Method::GET, "/api/v1/queues", Some(&alice), None).await;
    assert_eq!(s, StatusCode::OK);
    let pause = "/api/v1/queues/default/pause";
    let (s, v) = call(&d, Method::POST, pause, Some(&alice), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("only admins"), "{v}");
    let (s, v) = call(&d, Method::POST, pause, Some(ADMIN), None).await;
    assert_eq!(
        (s, v["paused"].clone()),
        (StatusCode::OK, json!(true)),
        "{v}"
    );
    // Webhooks: admins only, reads included.
    let hook = json!({"url": "http://127.0.0.1:9/hook"});
    let (s, _) = call(&d, Method::GET, "/api/v1/webhooks", Some(&alice), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &d,
        Method::POST,
        "/api/v1/webhooks",
        Some(&alice),
        Some(&hook),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, hooks) = call(&d, Method::GET, "/api/v1/webhooks", Some(ADMIN), None).await;
    assert_eq!(hooks, json!([]), "a refused add stores nothing");
    let (s, v) = call(
        &d,
        Method::POST,
        "/api/v1/webhooks",
        Some(ADMIN),
        Some(&hook),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mine = |method: &str, path: &str, status: u64| {
        (method.to_string(), path.to_string(), status, String::new())
    };
    assert_eq!(
        audit_of(&d, "alice").await[..3],
        [
            mine("POST", "/api/v1/webhooks", 403),
            mine("POST", pause, 403),
            ("PATCH".into(), path.clone(), 403, String::new()),
        ]
    );
    let (_, all) = call(&d, Method::GET, "/api/v1/audit", Some(ADMIN), None).await;
    let operator: Vec<(&str, u64)> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["token"] == "PLATFORM_API_TOKEN" && r["method"] == "POST")
        .map(|r| (r["path"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .take(2)
        .collect();
    assert_eq!(operator, [("/api/v1/webhooks", 201), (pause, 200)]);
}

#[tokio::test]
async fn webhook_user_filters_match_the_owner_a_token_sets() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    let (s, hook) = call(
        &d,
        Method::POST,
        "/api/v1/webhooks",
        Some(ADMIN),
        Some(&json!({"url": "http://127.0.0.1:9/hook", "users": ["alice"], "events": ["job.cancelled"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let mut cancelled = Vec::new();
    for token in [&bob, &alice] {
        let job = job_as(&d, token).await;
        let path = format!("{JOBS}/{}", job["id"].as_str().unwrap());
        let (s, _) = call(&d, Method::DELETE, &path, Some(token), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        cancelled.push(job["id"].clone());
    }
    // The outbox row is written with the status change: no waiting.
    let (s, list) = call(
        &d,
        Method::GET,
        &format!(
            "/api/v1/webhooks/{}/deliveries",
            hook["id"].as_str().unwrap()
        ),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let jobs: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| &x["job_id"])
        .collect();
    assert_eq!(jobs, [&cancelled[1]], "only alice's job: {list}");
}

#[tokio::test]
async fn resubmit_creates_as_the_caller_and_members_resubmit_only_their_own() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    let root = user(&d, "root", "admin").await;
    let job = job_as(&d, &bob).await;
    let id = job["id"].as_str().unwrap();
    let resubmit = |token: &str| {
        d.cli_env(
            &["job", "resubmit", id, "-o", "json"],
            &[("PLATFORM_TOKEN", token)],
        )
    };
    let out = resubmit(&alice);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to \"bob\""), "{err}");
    for (token, owner) in [(&bob, "bob"), (&root, "root")] {
        let out = resubmit(token);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let new: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(new["user_id"], owner, "{new}");
        assert_ne!(new["id"], job["id"]);
    }
    let (_, all) = call(&d, Method::GET, JOBS, Some(ADMIN), None).await;
    assert_eq!(
        all.as_array().unwrap().len(),
        3,
        "alice's refusal created nothing"
    );
}

/// Every file under the data directory, as bytes.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        out.extend(std::fs::read(entry).unwrap_or_default());
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn tokens_are_stored_hashed_and_revocation_and_expiry_take_effect() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let (s, t) = call(
        &d,
        Method::POST,
        "/api/v1/tokens",
        Some(&alice),
        Some(&json!({"name": "laptop", "expires_in_days": 30})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let laptop = t["token"].as_str().unwrap().to_string();
    let (s, me) = call(&d, Method::GET, "/api/v1/whoami", Some(&laptop), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (me["user"].clone(), me["role"].clone(), me["token"].clone()),
        (json!("alice"), json!("member"), json!("laptop"))
    );
    // Listing never shows a secret; the database holds no usable token.
    let (_, list) = call(&d, Method::GET, "/api/v1/tokens", Some(&alice), None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&laptop[8..]));
    // The data directory, and the database wherever it is (on
    // PostgreSQL it is not in the data directory).
    let mut bytes = all_bytes(&d.data_dir);
    bytes.extend(d.sql("SELECT * FROM api_tokens").into_bytes());
    bytes.extend(d.sql("SELECT * FROM audit").into_bytes());
    assert!(
        !contains(&bytes, &laptop) && !contains(&bytes, &alice),
        "a plain token is on disk"
    );
    assert!(
        !contains(&bytes, ADMIN),
        "the operator's token is never stored"
    );
    // Revocation: the very next request fails.
    let id = t["id"].as_str().unwrap();
    let (s, v) = call(
        &d,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string());
    let (s, _) = call(&d, Method::GET, "/api/v1/whoami", Some(&laptop), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Expiry: a token past its expires_at is refused (the cache lives 1 s).
    d.sql(
        "UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE name = 'default'",
    );
    common::eventually(10, "the expired token to be refused", || async {
        let (s, _) = call(&d, Method::GET, "/api/v1/whoami", Some(&alice), None).await;
        (s == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    // A disabled user's tokens stop at once.
    let bob = user(&d, "bob", "member").await;
    let (s, _) = call(
        &d,
        Method::PATCH,
        "/api/v1/users/bob",
        Some(ADMIN),
        Some(&json!({"active": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&d, Method::GET, JOBS, Some(&bob), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_first_start_creates_an_admin_with_a_private_token_file() {
    let mut opts = Opts::default();
    opts.args.push("--require-auth".into());
    let mut d = daemon(opts);
    let file = d.data_dir.join("admin-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("plt_"));
    let log = d.log_text();
    assert!(
        log.contains(&file.display().to_string()),
        "the log names the file"
    );
    assert!(!log.contains(&token), "never the token");
    let (s, _) = call(&d, Method::GET, JOBS, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "--require-auth on loopback");
    let (s, me) = call(&d, Method::GET, "/api/v1/whoami", Some(&token), None).await;
    assert_eq!(
        (s, me["user"].clone(), me["role"].clone()),
        (StatusCode::OK, json!("admin"), json!("admin"))
    );
    // Users exist now: a restart creates nothing and keeps the token.
    std::fs::remove_file(&file).unwrap();
    d.restart();
    assert!(!file.exists());
    let (s, _) = call(&d, Method::GET, "/api/v1/whoami", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);

    // PLATFORM_ADMIN_TOKEN: the admin's token is the operator's choice.
    let chosen = "plt_chosen-admin-token-0123456789abcdef";
    let mut opts = Opts::default();
    opts.envs
        .push(("PLATFORM_ADMIN_TOKEN".into(), chosen.into()));
    let d = daemon(opts);
    assert!(!d.data_dir.join("admin-token").exists());
    let (s, me) = call(&d, Method::GET, "/api/v1/whoami", Some(chosen), None).await;
    assert_eq!((s, me["user"].clone()), (StatusCode::OK, json!("admin")));
    let (s, _) = call(&d, Method::GET, JOBS, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "an admin token requires auth");
}

#[tokio::test]
async fn api_token_and_open_loopback_work_as_before() {
    let d = with_api_token();
    let (s, me) = call(&d, Method::GET, "/api/v1/whoami", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            me["role"].clone(),
            me["token"].clone(),
            me["auth_required"].clone()
        ),
        (json!("admin"), json!("PLATFORM_API_TOKEN"), json!(true))
    );
    let (s, _) = call(&d, Method::GET, JOBS, Some("wrong-token"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Loopback without a token: everything open, as before.
    let d = daemon(Opts::default());
    let (s, v) = call(&d, Method::POST, JOBS, None, Some(&job_body("anyone"))).await;
    assert_eq!(
        (s, v["user_id"].clone()),
        (StatusCode::CREATED, json!("anyone"))
    );
    let path = format!("{JOBS}/{}", v["id"].as_str().unwrap());
    let (s, _) = call(&d, Method::DELETE, &path, Some("any-token-at-all"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, me) = call(&d, Method::GET, "/api/v1/whoami", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (me["user"].clone(), me["auth_required"].clone()),
        (Value::Null, json!(false))
    );
}

#[tokio::test]
async fn every_state_change_leaves_an_audit_row() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let job = job_as(&d, &alice).await;
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("{JOBS}/{id}");
    call(&d, Method::DELETE, &path, Some(&alice), None).await;
    call(
        &d,
        Method::POST,
        "/api/v1/tokens",
        Some(&alice),
        Some(&json!({"name": "ci"})),
    )
    .await;
    // A refused change is recorded too, with its status.
    call(
        &d,
        Method::POST,
        "/api/v1/training/frameworks/reload",
        Some(&alice),
        None,
    )
    .await;
    let (s, _) = call(&d, Method::GET, "/api/v1/audit", Some(&alice), None).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "members do not read the audit trail"
    );
    let (s, rows) = call(
        &d,
        Method::GET,
        "/api/v1/audit?user=alice",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rows}");
    let seen: Vec<(String, String, u64, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["user"], "alice");
            assert_eq!(r["token"], "default");
            assert_eq!(r["remote"], "127.0.0.1");
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
                r["target"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "POST".into(),
                "/api/v1/training/frameworks/reload".into(),
                403,
                "".into()
            ),
            ("POST".into(), "/api/v1/tokens".into(), 201, "".into()),
            ("DELETE".into(), path.clone(), 204, id.clone()),
            ("POST".into(), JOBS.into(), 201, id.clone()),
        ],
        "newest first"
    );
    // The operator's own changes are audited under its token's name.
    let (_, all) = call(&d, Method::GET, "/api/v1/audit", Some(ADMIN), None).await;
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["token"] == "PLATFORM_API_TOKEN" && r["path"] == "/api/v1/users"));
    let (_, none) = call(
        &d,
        Method::GET,
        "/api/v1/audit?since=2999-01-01T00:00:00Z",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn login_saves_a_private_context_the_cli_then_uses() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    job_as(&d, &bob).await;
    let mine = job_as(&d, &alice).await;
    // Log in with the token on stdin; nothing in the environment.
    let mut cmd = d.cli_command(&["login", "--token-stdin", "--context", "lab"], &[]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{alice}\n").as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let home = d.data_dir.parent().unwrap();
    let file = home.join(".config/platform/contexts.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Without PLATFORM_SERVER the context says where and as whom.
    let cli = |args: &[&str]| {
        let out = d
            .cli_command(args, &[])
            .env_remove("PLATFORM_SERVER")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(cli(&["whoami"]).contains("alice (member)"));
    let listed: Value =
        serde_json::from_str(&cli(&["job", "list", "--mine", "-o", "json"])).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine["id"].as_str().unwrap()]);
    // A job created from the CLI is alice's, not $USER's.
    let created: Value = serde_json::from_str(&cli(&[
        "job",
        "create",
        "-f",
        "demo",
        "-m",
        "m",
        "-d",
        "s3://b/d/",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(created["user_id"], "alice");
    // --token still wins over the context.
    let out = d
        .cli_command(&["whoami", "--token", ADMIN], &[])
        .env_remove("PLATFORM_SERVER")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
    let list = cli(&["context", "list"]);
    assert!(list.contains("lab") && list.contains('*'), "{list}");
    cli(&["context", "delete", "lab"]);
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&alice));
    let out = d.cli(&["context", "use", "lab"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown context is a usage error"
    );
}

/// Signs in to the dashboard in headless Chromium with `token` and opens
/// job `id`'s page: what `tests/ui/signed_in.mjs` reports.
fn dashboard_page(url: String, token: String, id: String) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        root.join("tests/ui/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: npm ci --prefix tests/ui"
    );
    let out = std::process::Command::new("node")
        .arg(root.join("tests/ui/signed_in.mjs"))
        .args([url, token, id])
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node is missing: apt-get install -y nodejs npm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_who_is_signed_in_and_hides_cancel_on_others_jobs() {
    let d = with_api_token();
    let alice = user(&d, "alice", "member").await;
    let bob = user(&d, "bob", "member").await;
    let bobs = job_as(&d, &bob).await;
    let id = bobs["id"].as_str().unwrap().to_string();
    let open = |token: &str| {
        let (url, token, id) = (d.url.clone(), token.to_string(), id.clone());
        tokio::task::spawn_blocking(move || dashboard_page(url, token, id))
    };
    let seen = open(&alice).await.unwrap();
    assert!(seen.contains("WHO alice (member)"), "{seen}");
    assert!(seen.contains("CANCEL no"), "not alice's job: {seen}");
    let seen = open(&bob).await.unwrap();
    assert!(
        seen.contains("WHO bob (member)") && seen.contains("CANCEL yes"),
        "{seen}"
    );
}

#[tokio::test]
async fn the_cli_manages_users_and_tokens_and_reads_the_audit_trail() {
    let d = with_api_token();
    let admin = [("PLATFORM_TOKEN", ADMIN)];
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = d.cli_env(args, envs);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The new user's token is the only thing on stdout.
    let carol = run(&["user", "create", "carol"], &admin).trim().to_string();
    assert!(carol.starts_with("plt_"), "{carol}");
    let users: Value = serde_json::from_str(&run(&["user", "list", "-o", "json"], &admin)).unwrap();
    assert!(users
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == "carol" && u["role"] == "member"));
    let as_carol = [("PLATFORM_TOKEN", carol.as_str())];
    let ci = run(
        &["token", "create", "ci", "--expires-in-days", "7"],
        &as_carol,
    );
    let ci = ci.trim();
    let mine: Value =
        serde_json::from_str(&run(&["token", "list", "-o", "json"], &as_carol)).unwrap();
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "ci"]);
    // last_used_at is recorded (in the background, at most every 30 s).
    common::eventually(10, "last_used_at", || async {
        let (_, list) = call(&d, Method::GET, "/api/v1/tokens", Some(&carol), None).await;
        list[0]["last_used_at"].is_string().then_some(())
    })
    .await;
    let id = mine[1]["id"].as_str().unwrap();
    run(&["token", "revoke", id], &as_carol);
    let (s, _) = call(&d, Method::GET, "/api/v1/whoami", Some(ci), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Members may not manage users; the CLI says so and exits 1.
    let out = d.cli_env(&["user", "disable", "carol"], &as_carol);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only admins"));
    run(&["user", "disable", "carol"], &admin);
    let (s, _) = call(&d, Method::GET, "/api/v1/whoami", Some(&carol), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let audit: Value =
        serde_json::from_str(&run(&["audit", "--user", "carol", "-o", "json"], &admin)).unwrap();
    let paths: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap(),
                r["status"]
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "PATCH /api/v1/users/carol 403".to_string(),
            format!("DELETE /api/v1/tokens/{id} 200"),
            "POST /api/v1/tokens 201".to_string(),
        ]
    );
    let table = run(&["audit"], &admin);
    assert!(
        table.contains("PATCH /api/v1/users/carol") && table.contains("PLATFORM_API_TOKEN"),
        "{table}"
    );
}
