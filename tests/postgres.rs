//! PostgreSQL-specific behaviour, against real servers the harness starts
//! (`tests/common/pg.rs`): start-up failures named in one line with the
//! password masked, the `sslmode` meanings with a test CA, `/health` while
//! the server is down and after it returns, and the concurrency promises
//! of the batched writer (each callback `sequence` stored once) and of the
//! all-jobs feed (gap-free and resumable under concurrent writers).

mod common;

use std::collections::HashSet;
use std::path::Path;
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
        "ok (PostgreSQL, schema version 6)"
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
