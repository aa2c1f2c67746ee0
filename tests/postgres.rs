//! PostgreSQL-specific behaviour, against real servers the harness starts
//! (`tests/common/pg.rs`): start-up failures named in one line with the
//! password masked, the `sslmode` meanings with a test CA, `/health` while
//! the server is down and after it returns, and the concurrency promises
//! of the batched writer (each callback `sequence` stored once), of the
//! all-jobs feed (gap-free and resumable under concurrent writers), of
//! idempotency keys and of webhook delivery claims with two daemons on one
//! database; and of users with several daemons on one database: the first
//! admin created once, tokens with one name, the audit trail's order.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::{callback, create_id, job_with_token, serve_outcome};
use common::pg::{self, Cluster};
use common::{eventually, Daemon, Opts};
use futures::StreamExt;
use platform::cli::stream::{Parser, SseEvent};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PASSWORD: &str = "Tr0ub4dor-and-3";

fn url(c: &Cluster, user_pw: &str, host: &str, db: &str, query: &str) -> String {
    format!("postgresql://{user_pw}@{host}:{}/{db}?{query}", c.port)
}

fn on(url: String) -> Opts {
    Opts {
        envs: vec![("DATABASE_URL".into(), url)],
        ..Opts::default()
    }
}

/// [`on`], with webhooks allowed to target loopback (the test's receiver).
fn hooked(url: String) -> Opts {
    let mut opts = on(url);
    opts.envs.push(("WEBHOOK_ALLOW_PRIVATE".into(), "1".into()));
    opts
}

/// `serve` against `url` fails with a non-zero exit, its last line names
/// `cause`, and no line shows `secret`.
fn refused(url: &str, cause: &str, secret: &str) {
    let (code, text) = serve_outcome(&["--bind", "127.0.0.1:0"], &[("DATABASE_URL", url)]);
    assert!(matches!(code, Some(c) if c != 0), "{url}: {code:?}\n{text}");
    assert!(!text.contains(secret), "the password leaked: {text}");
    let last = text.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot connect to the database at postgresql://")
            && last.contains(cause),
        "{url}: expected one line naming {cause:?}, got:\n{text}"
    );
}

#[test]
fn start_up_failures_name_their_cause_with_the_password_masked() {
    let c = Cluster::start(Some(PASSWORD), &[]);
    let right = format!("platform:{PASSWORD}");
    let wrong = "platform:Not-the-Pa55word";
    refused(
        &url(&c, wrong, "127.0.0.1", "postgres", "sslmode=disable"),
        "wrong password for user \"platform\"",
        "Not-the-Pa55word",
    );
    refused(
        &url(&c, &right, "127.0.0.1", "nope", "sslmode=disable"),
        "the database \"nope\" does not exist",
        PASSWORD,
    );
    refused(
        &url(&c, &right, "127.0.0.1", "postgres", "sslmode=require"),
        "TLS failed (sslmode=require)",
        PASSWORD,
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    refused(
        &format!("postgresql://{right}@127.0.0.1:{closed}/postgres?connect_timeout=2"),
        "the server is unreachable",
        PASSWORD,
    );
    let (code, text) = serve_outcome(
        &["--bind", "127.0.0.1:0"],
        &[(
            "DATABASE_URL",
            &url(&c, &right, "127.0.0.1", "postgres", "sslmode=disable"),
        )],
    );
    assert_eq!(code, None, "the right URL starts: {text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // `db check` connects and reads the schema version it migrated to.
    let good = url(&c, &right, "127.0.0.1", "postgres", "sslmode=disable");
    let check = std::process::Command::new(common::bin())
        .args(["db", "check", "--database-url", &good])
        .env_clear()
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert_eq!(
        common::stdout(&check).trim(),
        "ok (PostgreSQL, schema version 13)"
    );
    // A schema from a newer platform is refused, by both.
    c.sql(
        "postgres",
        "INSERT INTO schema_migrations (version) VALUES (99)",
    );
    let (code, text) = serve_outcome(&["--bind", "127.0.0.1:0"], &[("DATABASE_URL", &good)]);
    assert!(matches!(code, Some(c) if c != 0), "{text}");
    assert!(text.contains("schema version 99"), "{text}");
    // A server holds databases, not files.
    assert!(
        text.contains("point DATABASE_URL at another database"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    let check = std::process::Command::new(common::bin())
        .args(["db", "check", "--database-url", &good])
        .env_clear()
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        common::stderr(&check).contains("schema version 99"),
        "{check:?}"
    );
}

/// A test CA and a server certificate for `localhost` signed by it (PEM):
/// (ca, cert, key).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "platform test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

/// Writes `text` to `path` for the `postgres` user, private.
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _ = std::process::Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status();
}

#[tokio::test]
async fn sslmodes_follow_libpq() {
    let (ca, cert, key) = certificates();
    let (other_ca, _, _) = certificates();
    let tls = pg::postgres_dir("platform-tls-");
    write_private(&tls.join("server.crt"), &cert);
    write_private(&tls.join("server.key"), &key);
    let ca_file = tls.join("ca.pem");
    let other_file = tls.join("other-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    std::fs::write(&other_file, other_ca).unwrap();
    let c = Cluster::start(
        Some(PASSWORD),
        &[
            "ssl=on",
            &format!("ssl_cert_file={}", tls.join("server.crt").display()),
            &format!("ssl_key_file={}", tls.join("server.key").display()),
        ],
    );
    let user = format!("platform:{PASSWORD}");
    let root = |f: &Path| format!("sslrootcert={}", f.display());

    // `require` encrypts without checking the certificate.
    let d = Daemon::start_with(on(url(
        &c,
        &user,
        "127.0.0.1",
        "postgres",
        "sslmode=require",
    )));
    let encrypted = c.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'platform' AND s.ssl AND s.version = 'TLSv1.3'",
    );
    assert_ne!(encrypted, "0", "the daemon's connections use TLS 1.3");
    drop(d);

    let starts = |u: String| {
        let (code, text) = serve_outcome(&["--bind", "127.0.0.1:0"], &[("DATABASE_URL", &u)]);
        assert_eq!(code, None, "{u} must start: {text}");
    };
    // `verify-full`: chain and host name.
    starts(url(
        &c,
        &user,
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&{}", root(&ca_file)),
    ));
    refused(
        &url(
            &c,
            &user,
            "127.0.0.1",
            "postgres",
            &format!("sslmode=verify-full&{}", root(&ca_file)),
        ),
        "TLS failed (sslmode=verify-full)",
        PASSWORD,
    );
    // `verify-ca`: the chain only, so the IP address is fine…
    starts(url(
        &c,
        &user,
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-ca&{}", root(&ca_file)),
    ));
    // …but not a certificate from another CA.
    refused(
        &url(
            &c,
            &user,
            "127.0.0.1",
            "postgres",
            &format!("sslmode=verify-ca&{}", root(&other_file)),
        ),
        "TLS failed (sslmode=verify-ca)",
        PASSWORD,
    );
    // `prefer` and `disable` work against it too.
    starts(url(&c, &user, "127.0.0.1", "postgres", "sslmode=prefer"));
    starts(url(&c, &user, "127.0.0.1", "postgres", "sslmode=disable"));
    let _ = std::fs::remove_dir_all(&tls);
}

async fn health(d: &Daemon) -> (StatusCode, Value) {
    match d.http().get(d.at("/health")).send().await {
        Ok(r) => (r.status(), r.json().await.unwrap_or(Value::Null)),
        Err(e) => panic!("GET /health: {e}"),
    }
}

#[tokio::test]
async fn health_is_503_while_the_server_is_down_and_recovers_without_a_restart() {
    let c = Cluster::start(None, &[]);
    let d = Daemon::start_with(
        on(url(
            &c,
            "platform",
            "127.0.0.1",
            "postgres",
            "sslmode=disable&connect_timeout=2",
        ))
        .held(),
    );
    assert_eq!(health(&d).await.0, StatusCode::OK);
    let before = create_id(&d, "alice").await;
    c.pause();
    eventually(30, "/health to say 503", || async {
        (health(&d).await.0 == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let (status, _) =
        common::api::post(&d, "/api/v1/training/jobs", &common::demo_job(json!({}))).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "writes fail cleanly too"
    );
    c.resume();
    eventually(30, "/health to say 200 again", || async {
        (health(&d).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let after = create_id(&d, "alice").await;
    let listed = common::api::get(&d, "/api/v1/training/jobs").await.1;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [after.as_str(), before.as_str()]);
}

fn pg_capturing() -> Daemon {
    pg_capturing_on(pg::cluster().fresh_database())
}

fn pg_capturing_on(url: String) -> Daemon {
    Daemon::start_with(on(url).capturing())
}

#[tokio::test]
async fn concurrent_callbacks_store_each_sequence_once() {
    let d = pg_capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    // Eight clients each send sequences 1..=60 in order, as retrying
    // trainers would: every sequence arrives eight times at once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (d_url, id, token) = (d.url.clone(), id.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for seq in 1..=60 {
                let r = http
                    .post(format!("{d_url}/api/v1/training/jobs/{id}/callback"))
                    .bearer_auth(&token)
                    .json(&json!({"status": "running", "sequence": seq,
                                  "metrics": {"epoch": seq, "seq": seq}}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let points = common::api::all_points(&d, &id).await;
    let seqs: Vec<i64> = points
        .iter()
        .map(|p| p["metrics"]["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "each sequence at most once, in order: {seqs:?}"
    );
    assert_eq!(seqs.last(), Some(&60), "the last sequence is stored");
    let (status, _) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "sequence": 60}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a replay is acknowledged");
    assert_eq!(common::api::all_points(&d, &id).await.len(), seqs.len());
}

/// Metric events of the all-jobs stream from `last_id` until `n` arrive.
async fn metric_events(d: &Daemon, last_id: Option<&str>, n: usize) -> Vec<SseEvent> {
    let mut rb = d.http().get(d.at("/api/v1/training/events"));
    if let Some(id) = last_id {
        rb = rb.header("Last-Event-ID", id);
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut parser = Parser::default();
    let mut out = Vec::new();
    // One deadline for all: keep-alive comments arrive even when points
    // never do.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} points within 60 s", out.len()))
            .expect("the stream ended")
            .unwrap();
        out.extend(
            parser
                .feed(&chunk)
                .into_iter()
                .filter(|e| e.event == "metric"),
        );
    }
    out
}

fn point_id(e: &SseEvent) -> i64 {
    serde_json::from_str::<Value>(&e.data).unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// Two daemons write to one database, so transactions really commit out of
/// the order their ids and points were allocated in (one daemon's writer
/// alone commits one batch at a time).
#[tokio::test]
async fn the_all_jobs_feed_is_gap_free_under_concurrent_writers() {
    let url = pg::cluster().fresh_database();
    let d = pg_capturing_on(url.clone());
    // Started before any job runs, and holding jobs: it only serves writes.
    let other = Daemon::start_with(on(url).held());
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(job_with_token(&d, "alice").await);
    }
    const WRITERS: usize = 6;
    const EACH: usize = 25;
    // Plus one last point through `d`: without cross-replica wake-ups
    // (LISTEN/NOTIFY, not built yet) `d`'s stream learns of the other
    // daemon's commits at its own next one.
    let total = jobs.len() * WRITERS * EACH + 1;
    let stream = {
        // Opened (and subscribed) before the writers start.
        let resp = d
            .http()
            .get(d.at("/api/v1/training/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp
    };
    let mut body = stream.bytes_stream();
    let mut parser = Parser::default();
    let mut events: Vec<SseEvent> = Vec::new();
    // Wait for `ready`: the stream's start position is fixed.
    while !events.iter().any(|e| e.event == "ready") {
        let chunk = body.next().await.unwrap().unwrap();
        events.extend(parser.feed(&chunk));
    }
    let mut tasks = Vec::new();
    for (id, token) in &jobs {
        for w in 0..WRITERS {
            let target = if w % 2 == 0 { &d } else { &other };
            let (d_url, id, token) = (target.url.clone(), id.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                for k in 0..EACH {
                    let r = http
                        .post(format!("{d_url}/api/v1/training/jobs/{id}/callback"))
                        .bearer_auth(&token)
                        .json(&json!({"status": "running",
                                      "metrics": {"epoch": k, "writer": w}}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (id, token) = &jobs[0];
    let last = json!({"status": "running", "metrics": {"epoch": 1000}});
    assert_eq!(callback(&d, id, Some(token), &last).await.0, StatusCode::OK);
    let mut metrics: Vec<SseEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metrics.len() < total {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {total} points streamed", metrics.len()))
            .unwrap()
            .unwrap();
        metrics.extend(
            parser
                .feed(&chunk)
                .into_iter()
                .filter(|e| e.event == "metric"),
        );
    }
    let streamed: Vec<i64> = metrics.iter().map(point_id).collect();
    let unique: HashSet<i64> = streamed.iter().copied().collect();
    assert_eq!(unique.len(), streamed.len(), "no point twice");
    let mut stored = HashSet::new();
    for (id, _) in &jobs {
        for p in common::api::all_points(&d, id).await {
            stored.insert(p["id"].as_i64().unwrap());
        }
    }
    assert_eq!(unique, stored, "every stored point streamed, nothing else");
    // PostgreSQL's event ids are transaction-ordered positions.
    let half = &metrics[total / 2 - 1];
    let resume = half.id.clone().expect("an event id");
    assert!(resume.starts_with('m') && resume.contains('.'), "{resume}");
    // Resuming from the middle gives exactly the rest.
    let rest = metric_events(&d, Some(&resume), total - total / 2).await;
    let rest: HashSet<i64> = rest.iter().map(point_id).collect();
    let expected: HashSet<i64> = streamed[total / 2..].iter().copied().collect();
    assert_eq!(rest, expected);
}

/// Two daemons on one database, holding jobs `pending` ([`hooked`]).
fn two_daemons() -> (Daemon, Daemon) {
    let url = pg::cluster().fresh_database();
    let start = || Daemon::start_with(hooked(url.clone()).held());
    (start(), start())
}

#[tokio::test]
async fn one_idempotency_key_through_two_daemons_makes_one_job() {
    let (a, b) = two_daemons();
    let body = common::api::job_body("alice");
    // Each key sent to both daemons at once, many keys at once: the two
    // daemons' creates with one key race in the database.
    const KEYS: usize = 30;
    let submits = (0..KEYS * 4).map(|i| {
        let d = if i % 2 == 0 { &a } else { &b };
        let (key, body) = (format!("key-{}", i / 4), &body);
        async move {
            let resp = d
                .http()
                .post(d.at(common::api::JOBS))
                .header("Idempotency-Key", &key)
                .json(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.json::<Value>().await.unwrap_or(Value::Null);
            (key, status, body)
        }
    });
    let answers = futures::future::join_all(submits).await;
    // Each daemon turns its own second request with a key into a 409
    // while the first is in flight; across daemons the database decides:
    // never a 5xx, and every success with one key is the same job.
    let mut jobs: std::collections::HashMap<String, HashSet<String>> = Default::default();
    for (key, status, body) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::CONFLICT,
            "{key}: {status}: {body}"
        );
        if *status == StatusCode::CREATED {
            jobs.entry(key.clone())
                .or_default()
                .insert(body["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(jobs.len(), KEYS);
    assert!(jobs.values().all(|ids| ids.len() == 1), "{jobs:?}");
    assert_eq!(a.sql("SELECT COUNT(*) FROM jobs"), KEYS.to_string());
}

/// A webhook receiver that answers 204 and records each delivery's
/// `webhook-id` and job.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let id = headers["webhook-id"].to_str().unwrap().to_string();
                    let event: Value = serde_json::from_slice(&body).unwrap();
                    let job = event["data"]["id"].as_str().unwrap_or_default().to_string();
                    seen.lock().unwrap().push((id, job));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test]
async fn two_daemons_claim_and_send_each_webhook_delivery_once() {
    let (a, b) = two_daemons();
    let (hook_url, got) = receiver().await;
    let (status, hook) = common::api::post(&a, "/api/v1/webhooks", &json!({"url": hook_url})).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    // Cancels through both daemons at once: each queues one delivery in
    // the cancel's transaction and wakes its daemon's worker, so both
    // workers claim from the one outbox at the same time.
    const JOBS: usize = 60;
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(create_id(&a, "alice").await);
    }
    let cancels = ids.iter().enumerate().map(|(i, id)| {
        let d = if i % 2 == 0 { &a } else { &b };
        async move { common::api::cancel(d, id).await.0 }
    });
    for status in futures::future::join_all(cancels).await {
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let cancelled: HashSet<String> = ids.into_iter().collect();
    eventually(30, "every delivery to be recorded as delivered", || async {
        (a.sql("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'delivered'")
            == JOBS.to_string())
        .then_some(())
    })
    .await;
    // A delivery claimed twice would count two attempts and arrive twice.
    assert_eq!(
        a.sql("SELECT COUNT(*) FROM webhook_deliveries WHERE attempts <> 1"),
        "0"
    );
    let got = got.lock().unwrap().clone();
    let messages: HashSet<&String> = got.iter().map(|(m, _)| m).collect();
    assert_eq!(
        messages.len(),
        got.len(),
        "a message arrived twice: {got:?}"
    );
    let jobs: HashSet<String> = got.iter().map(|(_, j)| j.clone()).collect();
    assert_eq!(jobs, cancelled);
}

#[tokio::test]
async fn a_delivery_locked_by_another_worker_holds_up_no_other() {
    let url = pg::cluster().fresh_database();
    let d = Daemon::start_with(hooked(url.clone()).held());
    let (hook_url, got) = receiver().await;
    let (status, hook) = common::api::post(&d, "/api/v1/webhooks", &json!({"url": hook_url})).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    // A delivery another replica's worker holds a claim on for one more
    // second; this test's transaction locks its row, as a worker's claim
    // does while it commits.
    let hook_id = hook["id"].as_str().unwrap();
    d.sql(&format!(
        "INSERT INTO webhook_deliveries (message_id, webhook_id, event, payload, state, \
         attempts, next_attempt_at, claimed_by, claim_expires_at, created_at) VALUES \
         ('msg_locked', '{hook_id}', 'webhook.test', '{{}}', 'pending', 1, now(), \
         'another-replica', now() + interval '1 second', now())"
    ));
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM webhook_deliveries WHERE message_id = 'msg_locked' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    // Once the claim lapses the locked row is the first due one: the
    // daemon's claims skip it rather than wait for it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = create_id(&d, "alice").await;
    assert_eq!(common::api::cancel(&d, &id).await.0, StatusCode::NO_CONTENT);
    eventually(
        20,
        "the new event to arrive past the locked row",
        || async {
            got.lock()
                .unwrap()
                .iter()
                .any(|(_, job)| *job == id)
                .then_some(())
        },
    )
    .await;
    assert!(got.lock().unwrap().iter().all(|(m, _)| m != "msg_locked"));
    // Released, the locked delivery goes out too.
    tx.rollback().await.unwrap();
    eventually(20, "the once locked delivery to arrive", || async {
        got.lock()
            .unwrap()
            .iter()
            .any(|(m, _)| m == "msg_locked")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn webhook_filters_with_a_nul_are_stored() {
    // PostgreSQL text cannot hold NUL; SQLite stores it, so it is no
    // reason for a 500 here.
    let d = Daemon::start_with(hooked(pg::cluster().fresh_database()));
    let body =
        json!({"url": "http://127.0.0.1:9/x", "users": ["a\u{0}b"], "frameworks": ["d\u{0}"]});
    let (status, hook) = common::api::post(&d, "/api/v1/webhooks", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
}

/// The operator's token of [`admin_daemon`]s.
const OPERATOR: &str = "operator-token-for-the-users-tests-0123456789";

/// A daemon on `url` whose user routes take [`OPERATOR`] as an admin.
fn admin_daemon(url: &str) -> Daemon {
    let mut opts = on(url.to_string());
    opts.args.extend(["--api-token".into(), OPERATOR.into()]);
    Daemon::start_with(opts.held())
}

/// `method path` with a bearer `token` (and a JSON `body`).
async fn call(
    d: &Daemon,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut rb = d.http().request(method, d.at(path)).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    common::api::parts(rb.send().await.expect("request")).await
}

/// Replicas starting together on an empty database create one admin:
/// one of them writes the admin's token file, and that token works on
/// both (a replica that lost the race leaves no file with a token nobody
/// stored).
#[tokio::test]
async fn replicas_starting_together_create_one_admin() {
    for _ in 0..3 {
        let url = pg::cluster().fresh_database();
        let daemons: Vec<Daemon> = std::thread::scope(|s| {
            let starting: Vec<_> = (0..3)
                .map(|_| s.spawn(|| Daemon::start_with(on(url.clone()).held())))
                .collect();
            starting.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(daemons[0].sql("SELECT COUNT(*) FROM users"), "1");
        assert_eq!(daemons[0].sql("SELECT COUNT(*) FROM api_tokens"), "1");
        let files: Vec<String> = daemons
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.data_dir.join("admin-token")).ok())
            .collect();
        assert_eq!(files.len(), 1, "one token file: {files:?}");
        for d in &daemons {
            let (s, me) = call(
                d,
                reqwest::Method::GET,
                "/api/v1/whoami",
                files[0].trim(),
                None,
            )
            .await;
            assert_eq!((s, me["user"].clone()), (StatusCode::OK, json!("admin")));
        }
    }
}

/// Token names are labels, not keys: one user's tokens created at once
/// with one name, through two replicas, are all stored, listed oldest
/// first, and each works on both replicas.
#[tokio::test]
async fn tokens_with_one_name_created_at_once_on_two_replicas_are_all_kept() {
    let url = pg::cluster().fresh_database();
    let (a, b) = (admin_daemon(&url), admin_daemon(&url));
    let body = json!({"name": "alice"});
    let (s, created) = call(
        &a,
        reqwest::Method::POST,
        "/api/v1/users",
        OPERATOR,
        Some(&body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let alice = created["token"]["token"].as_str().unwrap().to_string();
    const N: usize = 24;
    let creates = (0..N).map(|i| {
        let d = [&a, &b][i % 2];
        let alice = &alice;
        async move {
            let body = json!({"name": "ci"});
            call(
                d,
                reqwest::Method::POST,
                "/api/v1/tokens",
                alice,
                Some(&body),
            )
            .await
        }
    });
    let made = futures::future::join_all(creates).await;
    let mut tokens = HashSet::new();
    for (s, t) in &made {
        assert_eq!(*s, StatusCode::CREATED, "{t}");
        tokens.insert(t["token"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), N);
    let (_, list) = call(&b, reqwest::Method::GET, "/api/v1/tokens", &alice, None).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), N + 1, "{list:?}");
    assert_eq!(list.iter().filter(|t| t["name"] == "ci").count(), N);
    // Compared as times: RFC 3339 text drops trailing zeros of the
    // fraction ("…29.444Z" is after "…29.442828Z" but sorts after
    // "…29.444320Z" too).
    let order: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = list
        .iter()
        .map(|t| {
            (
                chrono::DateTime::parse_from_rfc3339(t["created_at"].as_str().unwrap()).unwrap(),
                t["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {order:?}"
    );
    for (i, t) in tokens.iter().enumerate() {
        let d = [&b, &a][i % 2];
        let (s, me) = call(d, reqwest::Method::GET, "/api/v1/whoami", t, None).await;
        assert_eq!((s, me["token"].clone()), (StatusCode::OK, json!("ci")));
    }
}

/// The audit trail under concurrent writers: job creates batched by two
/// replicas' writers, keyed creates in transactions of their own, cancels
/// and other requests, all at once. Every request is there once, and the
/// list is newest first by time on both replicas (ids come from a
/// sequence that concurrent transactions draw from out of time order).
#[tokio::test]
async fn the_audit_trail_is_complete_and_newest_first_under_concurrent_writers() {
    let url = pg::cluster().fresh_database();
    let (a, b) = (admin_daemon(&url), admin_daemon(&url));
    let pick = |i: usize| [&a, &b][i % 2];
    let body = common::api::job_body("alice");
    const N: usize = 60;
    let creates = (0..N).map(|i| {
        let (d, body) = (pick(i), &body);
        async move {
            let mut rb = d
                .http()
                .post(d.at(common::api::JOBS))
                .bearer_auth(OPERATOR)
                .json(body);
            if i % 3 == 0 {
                rb = rb.header("Idempotency-Key", format!("key-{i}"));
            }
            let (s, job) = common::api::parts(rb.send().await.unwrap()).await;
            assert_eq!(s, StatusCode::CREATED, "{job}");
            job["id"].as_str().unwrap().to_string()
        }
    });
    let reloads = (0..N / 3).map(|i| async move {
        let (s, v) = call(
            pick(i + 1),
            reqwest::Method::POST,
            "/api/v1/training/frameworks/reload",
            OPERATOR,
            None,
        )
        .await;
        assert!(s.is_success(), "{s}: {v}");
    });
    let (ids, _) = futures::join!(
        futures::future::join_all(creates),
        futures::future::join_all(reloads)
    );
    let cancels = ids.iter().enumerate().map(|(i, id)| async move {
        let path = format!("{}/{id}", common::api::JOBS);
        let (s, v) = call(pick(i + 1), reqwest::Method::DELETE, &path, OPERATOR, None).await;
        assert!(s.is_success(), "{s}: {v}");
    });
    futures::future::join_all(cancels).await;

    let expected = N + N / 3 + N;
    let mut lists = Vec::new();
    for d in [&a, &b] {
        let (s, list) = call(
            d,
            reqwest::Method::GET,
            "/api/v1/audit?limit=1000",
            OPERATOR,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{list}");
        lists.push(list.as_array().unwrap().clone());
    }
    assert_eq!(lists[0], lists[1], "both replicas read one trail");
    let list = &lists[0];
    assert_eq!(list.len(), expected);
    let ids: HashSet<i64> = list.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), expected, "each entry once");
    let times: Vec<chrono::DateTime<chrono::Utc>> = list
        .iter()
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    for id in ids_of(list, "POST") {
        assert!(list
            .iter()
            .any(|e| e["method"] == "DELETE" && e["target"] == id.as_str()));
    }
    // `since` and `limit` cut the same order.
    let since = list[9]["at"].as_str().unwrap();
    let path = format!("/api/v1/audit?limit=5&since={}", urlencode(since));
    let (_, newest) = call(&a, reqwest::Method::GET, &path, OPERATOR, None).await;
    assert_eq!(newest.as_array().unwrap()[..], list[..5]);
}

/// Targets of the entries with `method` whose path is the job list (job
/// creates).
fn ids_of(list: &[Value], method: &str) -> Vec<String> {
    list.iter()
        .filter(|e| e["method"] == method && e["path"] == common::api::JOBS)
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect()
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
