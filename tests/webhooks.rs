//! Webhooks (issue 16 item 2) against a real daemon and a real receiver in
//! the test: endpoints over the API, Standard Webhooks signatures checked
//! with an independent HMAC, retries with backoff against a receiver that
//! fails then succeeds, pending deliveries resumed after `kill -9`, the
//! private-target guard, and secrets never listed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::api::*;
use common::{Daemon, Opts};
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
