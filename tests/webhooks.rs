//! Webhooks (issue 16 item 2) against a real daemon and a real receiver in
//! the test: endpoints over the API, Standard Webhooks signatures checked
//! with an independent HMAC, retries with backoff against a receiver that
//! fails then succeeds, the give-up window (`WEBHOOK_RETRY_FOR`), pending
//! deliveries resumed after `kill -9`, callbacks unaffected by a receiver
//! that hangs, endpoints from the configuration file, the private-target
//! guard, secrets and secret-bearing URLs never listed, and the
//! `platform webhook` commands.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::api::*;
use common::{stderr, stdout, Daemon, Opts};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

const HOOKS: &str = "/api/v1/webhooks";

/// A receiver: records every request; answers 500 to the first `failures`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    failures: Arc<AtomicUsize>,
    url: String,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            ..Receiver::default()
        };
        r.failures.store(failures, Ordering::SeqCst);
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    state.got.lock().unwrap().push((headers, body));
                    let fail = state
                        .failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if fail {
                        AxumStatus::INTERNAL_SERVER_ERROR
                    } else {
                        AxumStatus::NO_CONTENT
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.got.lock().unwrap().clone()
    }
}

fn daemon(extra: &[(&str, &str)]) -> Daemon {
    let mut envs = vec![
        ("WEBHOOK_ALLOW_PRIVATE".to_string(), "1".to_string()),
        ("WEBHOOK_RETRY_BASE".to_string(), "0.3".to_string()),
    ];
    envs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Daemon::start_with(Opts {
        envs,
        ..Opts::default().held()
    })
}

async fn add(d: &Daemon, body: Value) -> Value {
    let (status, hook) = post(d, HOOKS, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    hook
}

/// Verifies a Standard Webhooks signature independently of the daemon.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(sig, want, "signature of {id}");
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!(age.abs() < 300, "timestamp {ts} is not current");
}

async fn deliveries(d: &Daemon, hook: &Value) -> Vec<Value> {
    let (status, list) = get(
        d,
        &format!("{HOOKS}/{}/deliveries", hook["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

#[tokio::test]
async fn status_changes_arrive_signed_and_filtered() {
    let rx = Receiver::start(0).await;
    let d = daemon(&[]);
    let hook = add(
        &d,
        json!({"url": rx.url, "events": ["job.cancelled"], "users": ["alice"]}),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // Lists never show the secret, only its prefix.
    let (_, list) = get(&d, HOOKS).await;
    assert!(!list.to_string().contains(&secret), "{list}");
    assert!(secret.starts_with(
        list[0]["secret_prefix"]
            .as_str()
            .unwrap()
            .trim_end_matches('…')
    ));

    let bob = create_id(&d, "bob").await;
    let alice = create_id(&d, "alice").await;
    assert_eq!(cancel(&d, &bob).await.0, StatusCode::NO_CONTENT);
    assert_eq!(cancel(&d, &alice).await.0, StatusCode::NO_CONTENT);
    let got = common::eventually(15, "alice's delivery", || async {
        let r = rx.requests();
        (!r.is_empty()).then_some(r)
    })
    .await;
    let (headers, body) = &got[0];
    verify(&secret, headers, body);
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "job.cancelled");
    assert_eq!(event["data"]["id"], alice.as_str());
    assert_eq!(event["data"]["status"], "cancelled");
    let list = common::eventually(10, "a delivered record", || async {
        let l = deliveries(&d, &hook).await;
        (l.first().is_some_and(|x| x["state"] == "delivered")).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1, "bob's job is filtered out: {list:?}");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(list[0]["last_status"], 204);
    assert_eq!(
        list[0]["message_id"],
        headers["webhook-id"].to_str().unwrap()
    );
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff_until_they_succeed() {
    let rx = Receiver::start(2).await;
    let d = daemon(&[]);
    let hook = add(&d, json!({"url": rx.url})).await;
    let id = create_id(&d, "alice").await;
    cancel(&d, &id).await;
    let list = common::eventually(20, "delivery after two failures", || async {
        let l = deliveries(&d, &hook).await;
        (l.first().is_some_and(|x| x["state"] == "delivered")).then_some(l)
    })
    .await;
    assert_eq!(list[0]["attempts"], 3, "{list:?}");
    let got = rx.requests();
    assert_eq!(got.len(), 3);
    // Every attempt is the same message: receivers dedupe on webhook-id.
    let ids: Vec<_> = got.iter().map(|(h, _)| h["webhook-id"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]));
    for (h, b) in &got {
        verify(hook["secret"].as_str().unwrap(), h, b);
    }
    // The gaps grow (0.3 s, then 1.2 s): exponential backoff.
    let times: Vec<i64> = got
        .iter()
        .map(|(h, _)| h["webhook-timestamp"].to_str().unwrap().parse().unwrap())
        .collect();
    assert!(times[2] - times[0] >= 1, "{times:?}");
}

#[tokio::test]
async fn pending_deliveries_survive_kill_9() {
    let rx = Receiver::start(usize::MAX).await;
    let mut d = daemon(&[]);
    let hook = add(&d, json!({"url": rx.url})).await;
    let id = create_id(&d, "alice").await;
    cancel(&d, &id).await;
    common::eventually(10, "a failed attempt", || async {
        let l = deliveries(&d, &hook).await;
        (l.first().is_some_and(|x| x["last_status"] == 500)).then_some(())
    })
    .await;
    d.kill9();
    rx.failures.store(0, Ordering::SeqCst);
    let before = rx.requests().len();
    d.restart();
    let list = common::eventually(20, "delivery after the restart", || async {
        let l = deliveries(&d, &hook).await;
        (l.first().is_some_and(|x| x["state"] == "delivered")).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1);
    assert!(rx.requests().len() > before);
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed_and_endpoints_are_managed() {
    let d = Daemon::held();
    let before = snapshot(&d);
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "ftp://x",
    ] {
        let (status, body) = post(&d, HOOKS, &json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["field"], "url");
    }
    let (status, body) = post(
        &d,
        HOOKS,
        &json!({"url": "http://example.com/", "events": ["job.exploded"]}),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("events"))
    );
    assert_eq!(snapshot(&d), before);

    let rx = Receiver::start(0).await;
    let d = daemon(&[]);
    let hook = add(&d, json!({"url": rx.url, "format": "slack"})).await;
    let path = format!("{HOOKS}/{}", hook["id"].as_str().unwrap());
    let (status, queued) = post(&d, &format!("{path}/test"), &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let got = common::eventually(10, "the test event", || async {
        let r = rx.requests();
        (!r.is_empty()).then_some(r)
    })
    .await;
    let body: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert!(
        body["text"].as_str().unwrap().contains("webhook.test"),
        "{body}"
    );
    let resp = d.http().delete(d.at(&path)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&d, &path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&d, &format!("{path}/deliveries")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deliveries_are_given_up_after_webhook_retry_for() {
    let rx = Receiver::start(usize::MAX).await;
    // Retries at 0.3 s, then 1.2 s later: the second retry would fall
    // after the one-second window, so the delivery is given up.
    let d = daemon(&[("WEBHOOK_RETRY_FOR", "1")]);
    let hook = add(&d, json!({"url": rx.url})).await;
    let id = create_id(&d, "alice").await;
    cancel(&d, &id).await;
    let list = common::eventually(15, "a delivery given up", || async {
        let l = deliveries(&d, &hook).await;
        (l.first().is_some_and(|x| x["state"] == "failed")).then_some(l)
    })
    .await;
    assert_eq!(list[0]["attempts"], 2, "{list:?}");
    assert_eq!(list[0]["last_status"], 500);
    assert!(list[0]["finished_at"].is_string(), "{list:?}");
    assert!(list[0]["next_attempt_at"].is_null(), "{list:?}");
    let bad = common::api::serve_outcome(&[], &[("WEBHOOK_RETRY_FOR", "0")]);
    assert_eq!(bad.0, Some(2), "{}", bad.1);
    assert!(bad.1.contains("--webhook-retry-for"), "{}", bad.1);
}

/// A receiver that accepts connections and never answers (nor closes them).
async fn hanging_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_callbacks_or_status_changes() {
    let (url, accepted) = hanging_receiver().await;
    // Each attempt may hang for a minute.
    let d = Daemon::start_with(Opts {
        envs: vec![
            ("WEBHOOK_ALLOW_PRIVATE".into(), "1".into()),
            ("WEBHOOK_TIMEOUT".into(), "60".into()),
        ],
        ..Opts::default().capturing()
    });
    let hook = add(&d, json!({"url": url})).await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(job_with_token(&d, "alice").await);
    }
    // The five job.running deliveries are being sent, and hang.
    common::eventually(15, "attempts hanging on the receiver", || async {
        (accepted.load(Ordering::SeqCst) >= 5).then_some(())
    })
    .await;
    // 200 callbacks with metrics, all applied while the deliveries hang.
    for seq in 1..=40 {
        for (id, token) in &jobs {
            let body = json!({"status": "running", "sequence": seq, "progress": seq as f64 / 100.0,
                "metrics": {"loss": 1.0 / seq as f64}});
            let (status, ack) = callback(&d, id, Some(token), &body).await;
            assert_eq!(status, StatusCode::OK, "{ack}");
            assert_eq!(ack["applied"], true, "{ack}");
        }
    }
    // Status changes commit too, each queueing one more delivery.
    for (id, token) in &jobs[..4] {
        let body = json!({"status": "completed", "sequence": 41, "progress": 1.0});
        let (status, ack) = callback(&d, id, Some(token), &body).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(job(&d, id).await["status"], "completed");
    }
    for (id, _) in &jobs {
        assert_eq!(stored_points(&d, id), 40);
    }
    let list = common::eventually(15, "every delivery in flight", || async {
        let l = deliveries(&d, &hook).await;
        (l.len() == 9 && l.iter().all(|x| x["attempts"] == 1)).then_some(l)
    })
    .await;
    let completed = list
        .iter()
        .filter(|x| x["event"] == "job.completed")
        .count();
    assert_eq!(completed, 4, "{list:?}");
    // All of that happened while every attempt was still hanging: none has
    // an outcome yet, so nothing above waited for the receiver.
    for x in &list {
        assert_eq!(x["state"], "pending", "{x}");
        assert!(
            x["last_status"].is_null() && x["last_error"].is_null(),
            "{x}"
        );
    }
    // A delivery counts its attempt when it is claimed, just before its
    // connection opens: the last ones may still be connecting.
    common::eventually(15, "all nine attempts hanging on the receiver", || async {
        (accepted.load(Ordering::SeqCst) >= 9).then_some(())
    })
    .await;
}

/// A daemon whose config file configures `hooks` (the dir holds the file).
fn configured(hooks: Value) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("webhook_allow_private = true\nwebhook_retry_base = 0.3\nwebhooks = '{hooks}'\n"),
    )
    .unwrap();
    let d = Daemon::start_with(Opts {
        envs: vec![("PLATFORM_CONFIG".into(), config.display().to_string())],
        ..Opts::default().held()
    });
    (d, dir)
}

/// A restart re-reads the configuration: an endpoint still configured
/// keeps its id and the deliveries it had pending.
#[tokio::test]
async fn configured_endpoints_keep_pending_deliveries_across_restarts() {
    let rx = Receiver::start(usize::MAX).await;
    let secret = format!(
        "whsec_{}",
        STANDARD.encode(b"another configured secret, 32 b!")
    );
    let (mut d, _dir) = configured(json!([{"url": rx.url, "secret": secret}]));
    let (_, list) = get(&d, HOOKS).await;
    let hook = list[0].clone();
    let id = create_id(&d, "alice").await;
    cancel(&d, &id).await;
    common::eventually(10, "a failed attempt", || async {
        let l = deliveries(&d, &hook).await;
        (l.first().is_some_and(|x| x["last_status"] == 500)).then_some(())
    })
    .await;
    d.kill9();
    rx.failures.store(0, Ordering::SeqCst);
    d.restart();
    let (_, after) = get(&d, HOOKS).await;
    assert_eq!(after[0]["id"], hook["id"], "{after}");
    common::eventually(20, "the pending delivery, after the restart", || async {
        let l = deliveries(&d, &hook).await;
        (l.first().is_some_and(|x| x["state"] == "delivered")).then_some(())
    })
    .await;
    let got = rx.requests();
    verify(&secret, &got.last().unwrap().0, &got.last().unwrap().1);
}

#[tokio::test]
async fn configured_endpoints_are_delivered_signed_and_cannot_be_removed() {
    let rx = Receiver::start(0).await;
    let secret = format!(
        "whsec_{}",
        STANDARD.encode(b"a configured secret, 32 bytes!!!")
    );
    let (d, _dir) = configured(json!([
        {"url": rx.url, "secret": secret, "events": ["job.cancelled"]}
    ]));
    let (_, list) = get(&d, HOOKS).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let hook = list[0].clone();
    assert_eq!(hook["source"], "config");
    assert_eq!(hook["events"], json!(["job.cancelled"]));
    assert!(!list.to_string().contains(&secret), "{list}");

    let id = create_id(&d, "alice").await;
    cancel(&d, &id).await;
    let got = common::eventually(15, "the configured endpoint's delivery", || async {
        let r = rx.requests();
        (!r.is_empty()).then_some(r)
    })
    .await;
    verify(&secret, &got[0].0, &got[0].1);
    let event: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(
        (event["type"].clone(), event["data"]["id"].clone()),
        (json!("job.cancelled"), json!(id))
    );

    let path = format!("{HOOKS}/{}", hook["id"].as_str().unwrap());
    let resp = d.http().delete(d.at(&path)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("configuration"),
        "{body}"
    );
    let (code, _, err) = cli(&d, &["webhook", "remove", hook["id"].as_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert_one_error_line(&err);
    assert!(err.contains("configuration"), "{err}");
    assert_eq!(get(&d, &path).await.0, StatusCode::OK);
}

#[tokio::test]
async fn listed_urls_never_show_their_secret_part() {
    let rx = Receiver::start(0).await;
    let d = daemon(&[]);
    let origin = rx.url.trim_end_matches("/hook");
    let slack = format!("{origin}/services/T0001/B0002/sEcReTtOkEn");
    let (status, created) = post(&d, HOOKS, &json!({"url": slack, "format": "slack"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // The create's answer shows the URL in full, that once.
    assert_eq!(created["url"], slack.as_str());
    let shown = format!("{origin}/services/…");
    let (_, list) = get(&d, HOOKS).await;
    assert_eq!(list[0]["url"], shown.as_str());
    let (_, one) = get(&d, &format!("{HOOKS}/{}", created["id"].as_str().unwrap())).await;
    assert_eq!(one["url"], shown.as_str());
    for args in [&["webhook", "list"][..], &["webhook", "list", "-o", "json"]] {
        let (code, out, err) = cli(&d, args);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&shown), "{out}");
        assert!(
            !out.contains("sEcReTtOkEn") && !out.contains("B0002"),
            "{out}"
        );
    }
    // Deliveries still go to the full URL (here a 404 from the receiver).
    let (status, _) = post(
        &d,
        &format!("{HOOKS}/{}/test", created["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let l = common::eventually(15, "an attempt", || async {
        let l = deliveries(&d, &created).await;
        (l.first().is_some_and(|x| x["last_status"].is_i64())).then_some(l)
    })
    .await;
    assert_eq!(l[0]["last_status"], 404, "{l:?}");
}

/// Runs `platform …` against `d`: exit code, stdout, stderr.
fn cli(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let o = d.cli(args);
    (o.status.code().expect("exit code"), stdout(&o), stderr(&o))
}

#[track_caller]
fn assert_one_error_line(err: &str) {
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
}

#[tokio::test]
async fn the_cli_adds_lists_tests_and_removes_endpoints() {
    let rx = Receiver::start(0).await;
    let d = daemon(&[]);
    let (code, out, err) = cli(
        &d,
        &[
            "webhook",
            "add",
            &rx.url,
            "--event",
            "job.cancelled",
            "--event",
            "job.failed",
            "--user",
            "alice",
            "--framework",
            "demo",
            "--format",
            "slack",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("no secret in {out}"))
        .to_string();
    assert!(secret.starts_with("whsec_"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("added webhook "))
        .unwrap_or_else(|| panic!("no id in {out}"))
        .to_string();

    let (code, out, err) = cli(&d, &["webhook", "list", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["events"], json!(["job.cancelled", "job.failed"]));
    assert_eq!(list[0]["users"], json!(["alice"]));
    assert_eq!(list[0]["frameworks"], json!(["demo"]));
    assert_eq!(list[0]["format"], "slack");
    assert!(!out.contains(&secret), "{out}");
    let (_, table, _) = cli(&d, &["webhook", "list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("URL") && header.contains("SOURCE"),
        "{table}"
    );
    assert!(
        table.contains(&id) && table.contains("job.cancelled,job.failed"),
        "{table}"
    );

    let (code, out, err) = cli(&d, &["webhook", "test", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("webhook.test"), "{out}");
    let got = common::eventually(15, "the test event", || async {
        let r = rx.requests();
        (!r.is_empty()).then_some(r)
    })
    .await;
    verify(&secret, &got[0].0, &got[0].1);
    let delivered = common::eventually(15, "a delivered test event", || async {
        let (_, out, _) = cli(
            &d,
            &["webhook", "deliveries", &id, "--limit", "5", "-o", "json"],
        );
        let l: Value = serde_json::from_str(&out).ok()?;
        (l[0]["state"] == "delivered").then_some(l)
    })
    .await;
    assert_eq!(delivered.as_array().unwrap().len(), 1);
    assert_eq!(delivered[0]["event"], "webhook.test");
    let (_, table, _) = cli(&d, &["webhook", "deliveries", &id]);
    assert!(table.lines().next().unwrap().contains("STATE"), "{table}");
    assert!(
        table.contains("delivered") && table.contains("204"),
        "{table}"
    );

    // Bad input: a usage error (2) or the API's refusal (1), one line each.
    for (args, want) in [
        (vec!["webhook", "test", "nope"], 2),
        (
            vec!["webhook", "add", &rx.url, "--event", "job.exploded"],
            2,
        ),
        (vec!["webhook", "deliveries", &id, "--limit", "0"], 2),
        (vec!["webhook", "add", "ftp://example.com/x"], 1),
        (vec!["webhook", "list", "-o", "csv"], 2),
    ] {
        let (code, out, err) = cli(&d, &args);
        assert_eq!(code, want, "{args:?}: {out} {err}");
        assert!(err.trim().starts_with("error:"), "{args:?}: {err}");
    }
    let (code, out, err) = cli(&d, &["webhook", "remove", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("removed webhook {id}"));
    let (_, out, _) = cli(&d, &["webhook", "list", "-o", "json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let (code, _, err) = cli(&d, &["webhook", "remove", &id]);
    assert_eq!(code, 1);
    assert_one_error_line(&err);
    assert!(err.contains("not found"), "{err}");
}
