//! Durability and start-up checks (SPEC §6 "Durable", §5 `DATABASE_URL`):
//! every acknowledged write survives `kill -9`, also under concurrent
//! load; SIGTERM stops cleanly; databases the binary cannot handle are
//! refused with a clear message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::api::*;
use common::{Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("send SIGKILL");
}

/// Every job as the API shows it, plus every point of each, by job id.
/// For an ended job, what the runner records whenever its trainer's process
/// exits (`exit_code` and the `updated_at` it stamps) is left out: it is
/// not a write any client was told about.
async fn everything(d: &Daemon) -> BTreeMap<String, (Value, Vec<Value>)> {
    let (status, jobs) = get(d, &format!("{JOBS}?limit=1000")).await;
    assert_eq!(status, StatusCode::OK);
    let mut out = BTreeMap::new();
    for job in jobs.as_array().unwrap() {
        let id = job["id"].as_str().unwrap().to_string();
        let points = all_points(d, &id).await;
        let mut job = job.clone();
        if ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or("")) {
            job["exit_code"] = Value::Null;
            job["updated_at"] = Value::Null;
        }
        out.insert(id, (job, points));
    }
    out
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut d = Daemon::capturing();
    // Creates, callbacks with metrics, a batch, a cancel, terminal states.
    let (running, token) = job_with_token(&d, "alice").await;
    for epoch in 1..=5 {
        let body = json!({"status": "running", "progress": epoch as f64 / 10.0, "message": format!("epoch {epoch}"),
            "metrics": {"epoch": epoch, "loss": 1.0 / epoch as f64}, "sequence": epoch});
        assert_eq!(
            callback(&d, &running, Some(&token), &body).await.0,
            StatusCode::OK
        );
    }
    let (status, _) = ingest(
        &d,
        &running,
        Some(&token),
        &json!({"points": [{"step": 1}, {"step": 2}], "sequence": 6}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (done, token2) = job_with_token(&d, "bob").await;
    assert_eq!(
        callback(
            &d,
            &done,
            Some(&token2),
            &json!({"status": "completed", "progress": 1.0})
        )
        .await
        .0,
        StatusCode::OK
    );
    let cancelled = create_id(&d, "carol").await;
    assert_eq!(
        cancel(&d, &cancelled).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let mut config = job_body("dave");
    config["config"] = json!({"epochs": 3, "nested": {"lr": 0.01}});
    let pending = create(&d, &config).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // It launches at once: wait until it runs, so nothing moves meanwhile.
    running_with_token(&d, &pending).await;

    let before = everything(&d).await;
    assert_eq!(before.len(), 4);
    assert_eq!(before[&running].1.len(), 7);

    d.kill9();
    d.restart();

    let after = everything(&d).await;
    assert_eq!(
        after, before,
        "every acknowledged write is back after kill -9"
    );
    assert_eq!(after[&cancelled].0["status"], "cancelled");
    assert_eq!(
        after[&pending].0["config"],
        json!({"epochs": 3, "nested": {"lr": 0.01}})
    );
    // The idempotency state survived too: an old sequence is still ignored,
    // a terminal job still refuses updates, tokens still work.
    let (status, _) = callback(
        &d,
        &running,
        Some(&token),
        &json!({"status": "running", "progress": 0.99, "sequence": 6}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job(&d, &running).await["progress"], json!(0.5));
    let (status, err) = callback(&d, &done, Some(&token2), &json!({"status": "running"})).await;
    assert_eq!(
        (status, err["status"].clone()),
        (StatusCode::CONFLICT, json!("completed"))
    );
    let (status, _) = callback(&d, &running, Some("wrong"), &json!({"status": "running"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = callback(
        &d,
        &running,
        Some(&token),
        &json!({"status": "running", "sequence": 7}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// 32 trainers report concurrently; the daemon is killed mid-stream. Every
/// callback that got a 200 must be in the database after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callback_streams_survive_kill_9_mid_stream() {
    const STREAMS: usize = 32;
    let mut d = Daemon::capturing();
    let mut jobs = Vec::new();
    for i in 0..STREAMS {
        jobs.push(job_with_token(&d, &format!("trainer{i}")).await);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(STREAMS)
        .build()
        .unwrap();
    let acked: Arc<Mutex<BTreeMap<String, BTreeSet<i64>>>> = Arc::default();
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (id, token) in jobs.clone() {
        let (http, acked, total, url) = (
            http.clone(),
            acked.clone(),
            total.clone(),
            d.at(&job_path(&id, "/callback")),
        );
        tasks.push(tokio::spawn(async move {
            for seq in 1..100_000i64 {
                let body = json!({"status": "running", "progress": (seq as f64 / 100_000.0), "sequence": seq,
                    "message": format!("step {seq}"), "metrics": {"step": seq, "loss": 1.0 / seq as f64}});
                let resp = http.post(&url).bearer_auth(&token).json(&body).send().await;
                match resp {
                    Ok(r) if r.status() == StatusCode::OK => {
                        // Only a fully received 200 counts as acknowledged.
                        if r.bytes().await.is_ok() {
                            acked.lock().unwrap().entry(id.clone()).or_default().insert(seq);
                            total.fetch_add(1, Ordering::Relaxed);
                        } else {
                            return;
                        }
                    }
                    Ok(r) => panic!("callback {seq} answered {}", r.status()),
                    Err(_) => return, // the daemon is gone
                }
            }
        }));
    }
    // Let the streams run, then kill the daemon while they are mid-flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while total.load(Ordering::Relaxed) < 3000 {
        assert!(
            Instant::now() < deadline,
            "callbacks are too slow: {}",
            total.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigkill(d.pid());
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let n: usize = acked.values().map(BTreeSet::len).sum();
    assert!(n >= 3000, "{n} acknowledged");
    assert_eq!(acked.len(), STREAMS, "every stream got acknowledgements");

    d.restart();
    for (id, token) in &jobs {
        let points = all_points(&d, id).await;
        let steps: Vec<i64> = points.iter().map(|p| p["step"].as_i64().unwrap()).collect();
        let stored: BTreeSet<i64> = steps.iter().copied().collect();
        assert_eq!(
            stored.len(),
            steps.len(),
            "no point was stored twice for {id}"
        );
        let mine = &acked[id];
        let lost: Vec<_> = mine.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "job {id} lost acknowledged callbacks {lost:?}"
        );
        // The job row moved with its points (same transaction): its
        // progress is at least the last acknowledged one.
        let max = *mine.iter().max().unwrap();
        let progress = job(&d, id).await["progress"].as_f64().unwrap();
        assert!(
            progress >= max as f64 / 100_000.0,
            "{id}: progress {progress} < acked {max}"
        );
        // And the sequence high-water mark survived: resending the last
        // acknowledged callback is not applied again.
        let body = json!({"status": "running", "sequence": max, "metrics": {"step": -1}});
        assert_eq!(callback(&d, id, Some(token), &body).await.0, StatusCode::OK);
        assert_eq!(stored_points(&d, id), steps.len() as i64);
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_closes_the_database() {
    let mut d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    // Keep callbacks flowing while SIGTERM arrives.
    let http = reqwest::Client::new();
    let url = d.at(&job_path(&id, "/callback"));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let (acked, token) = (acked.clone(), token.clone());
        tokio::spawn(async move {
            for seq in 1..100_000i64 {
                let body = json!({"status": "running", "sequence": seq, "metrics": {"step": seq}});
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) => {
                        assert!(
                            r.status() == StatusCode::OK
                                || r.status() == StatusCode::SERVICE_UNAVAILABLE,
                            "{}",
                            r.status()
                        );
                        if r.status() == StatusCode::OK {
                            acked.lock().unwrap().push(seq);
                        }
                    }
                    Err(_) => return,
                }
            }
        })
    };
    common::eventually(30, "some callbacks", || async {
        (acked.lock().unwrap().len() > 200).then_some(())
    })
    .await;
    let pid = d.pid();
    let code = tokio::task::spawn_blocking(move || {
        let status = d.terminate();
        (d, status)
    });
    let (mut d, status) = code.await.unwrap();
    assert_eq!(status, Some(0), "SIGTERM exits 0; log:\n{}", d.log_text());
    sender.await.unwrap();
    assert!(pid > 0);
    let log = d.log_text();
    assert!(log.contains("signal received"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("ERROR") && !log.contains("panicked"), "{log}");
    // A clean close checkpoints and removes the write-ahead log.
    let wal = d.data_dir.join("platform.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the WAL was checkpointed; log:\n{log}"
    );

    d.restart();
    let acked = acked.lock().unwrap().clone();
    let stored: BTreeSet<i64> = all_points(&d, &id)
        .await
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    for seq in &acked {
        assert!(
            stored.contains(seq),
            "acknowledged callback {seq} lost across SIGTERM"
        );
    }
    assert_eq!(job(&d, &id).await["status"], "running");
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("platform.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE future (x INTEGER); PRAGMA user_version = 99;")
        .unwrap();
    drop(c);
    let (code, stderr) = serve_outcome_in(dir.path(), &["--bind", "127.0.0.1:0"], &[]);
    assert!(matches!(code, Some(c) if c != 0), "must refuse: {stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.starts_with("error: "), "{stderr}");
    assert!(
        line.contains("schema version 99") && line.contains("newer"),
        "{line}"
    );
    assert!(
        line.contains(db.to_str().unwrap()),
        "names the file: {line}"
    );
    assert!(!stderr.contains("panicked"));
    // The file was left alone.
    let c = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99);
    let tables: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "no migration ran");
}

#[test]
fn unsupported_database_urls_are_refused_clearly() {
    for url in [
        "postgresql+psycopg://user:pw@db.example/platform",
        "mysql://h/db",
        "sqlite://",
        "sqlite:///:memory:",
    ] {
        let (code, stderr) = serve_outcome(&["--bind", "127.0.0.1:0"], &[("DATABASE_URL", url)]);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{url} must be refused: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains(":pw@"), "the password is masked: {stderr}");
        assert!(
            stderr.contains("unsupported DATABASE_URL") && stderr.contains("sqlite:///"),
            "{stderr}"
        );
    }
    // The flag wins over the environment and is checked the same way.
    let (code, stderr) = serve_outcome(
        &["--bind", "127.0.0.1:0", "--database-url", "mysql://x/y"],
        &[],
    );
    assert!(matches!(code, Some(c) if c != 0), "{stderr}");
}

#[tokio::test]
async fn sqlite_urls_follow_sqlalchemy() {
    // sqlite:////absolute/path
    let elsewhere = tempfile::tempdir().unwrap();
    let abs = elsewhere.path().join("nested").join("jobs.db");
    let url = format!("sqlite:///{}", abs.display());
    assert!(url.starts_with("sqlite:////"));
    let d = Daemon::start_with(
        Opts {
            envs: vec![("DATABASE_URL".into(), url)],
            ..Default::default()
        }
        .held(),
    );
    let id = create_id(&d, "alice").await;
    assert!(abs.is_file(), "the database is where DATABASE_URL says");
    assert!(
        !d.data_dir.join("platform.db").exists(),
        "not in the data dir"
    );
    let found: String = open_ro(&abs)
        .query_row("SELECT id FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(found, id);
    drop(d);

    // sqlite+aiosqlite:///relative/path, relative to the working directory
    // (the harness runs the daemon in the data dir's parent).
    let d = Daemon::start_with(
        Opts {
            envs: vec![(
                "DATABASE_URL".into(),
                "sqlite+aiosqlite:///rel/seed.db".into(),
            )],
            ..Default::default()
        }
        .held(),
    );
    let id = create_id(&d, "bob").await;
    let rel = d.data_dir.parent().unwrap().join("rel").join("seed.db");
    let found: String = open_ro(&rel)
        .query_row("SELECT id FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(found, id);
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Callback tokens exist only in the trainer's environment: the database
/// (and its WAL) holds a hash, and nothing the daemon writes is readable by
/// other local users.
#[tokio::test]
async fn secrets_at_rest_are_hashed_and_private() {
    let mut d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    assert_eq!(
        callback(&d, &id, Some(&token), &json!({"status": "running"}))
            .await
            .0,
        StatusCode::OK,
        "the captured token works"
    );
    // On PostgreSQL the database is the server's, not a file of ours:
    // only the data dir's own files are checked.
    let sqlite = !common::pg::enabled();
    if !sqlite {
        eprintln!("on PostgreSQL: the database file checks do not apply");
    }
    let db = db_path(&d);
    for file in ["platform.db", "platform.db-wal"]
        .into_iter()
        .filter(|_| sqlite)
    {
        let bytes = std::fs::read(d.data_dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{file} holds the plain token"
        );
    }
    let run = d.data_dir.join("runs").join(&id);
    for dir in [&d.data_dir, &d.data_dir.join("runs"), &run] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let db_files = [db.clone(), d.data_dir.join("platform.db-wal")];
    for file in db_files.iter().filter(|_| sqlite).cloned().chain([
        d.data_dir.join("platform.lock"),
        run.join("state.json"),
        run.join("trainer.log"),
    ]) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // Files an older version left readable are made private at start-up.
    d.terminate();
    use std::os::unix::fs::PermissionsExt;
    let loosen = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    loosen(&d.data_dir, 0o755);
    if sqlite {
        loosen(&db, 0o644);
    }
    loosen(&run.join("trainer.log"), 0o644);
    d.restart();
    assert_eq!(mode(&d.data_dir), 0o700);
    if sqlite {
        assert_eq!(mode(&db), 0o600);
    }
    assert_eq!(mode(&run.join("trainer.log")), 0o600);
    assert!(
        d.log_text().contains("made files and directories private"),
        "{}",
        d.log_text()
    );
}

/// A second daemon on the same data dir would re-adopt the first one's
/// trainers and launch its pending jobs again: it is refused.
#[tokio::test]
async fn one_daemon_per_data_dir() {
    let d = Daemon::held();
    let pending = create_id(&d, "alice").await;
    let (code, stderr) = serve_outcome_in(&d.data_dir, &["--bind", "127.0.0.1:0"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "data dir {} in use by pid {}",
            d.data_dir.display(),
            d.pid()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(job(&d, &pending).await["status"], "pending");
    assert!(!d.data_dir.join("runs").exists(), "nothing was launched");
}
