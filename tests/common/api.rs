//! HTTP and database helpers shared by the black-box API, durability and
//! CLI tests: create jobs, send callbacks, read the callback token a
//! capturing daemon's stand-in trainer received, and look at the daemon's
//! SQLite file read-only (to prove a rejected request stored nothing).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use super::Daemon;

/// Base path of the jobs API.
pub const JOBS: &str = "/api/v1/training/jobs";

/// The framework test jobs use: held daemons never launch it, capturing
/// daemons launch a stand-in that only waits.
pub const FRAMEWORK: &str = "demo";

/// A valid create body for `user`.
pub fn job_body(user: &str) -> Value {
    json!({
        "user_id": user,
        "model_name": "yolo11n",
        "framework": FRAMEWORK,
        "dataset_s3_uri": "s3://bucket/datasets/coco128/",
    })
}

/// `/api/v1/training/jobs/{id}` + `tail`.
pub fn job_path(id: &str, tail: &str) -> String {
    format!("{JOBS}/{id}{tail}")
}

/// A response's status and JSON body (`Value::Null` when the body is not JSON).
pub async fn parts(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.expect("read response body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `GET path` → status and JSON.
pub async fn get(d: &Daemon, path: &str) -> (StatusCode, Value) {
    parts(d.http().get(d.at(path)).send().await.expect("GET")).await
}

/// `POST path` with a JSON body → status and JSON.
pub async fn post(d: &Daemon, path: &str, body: &Value) -> (StatusCode, Value) {
    parts(
        d.http()
            .post(d.at(path))
            .json(body)
            .send()
            .await
            .expect("POST"),
    )
    .await
}

/// `POST path` with raw bytes, `Content-Type: application/json` and, when
/// given, `Authorization: Bearer token`.
pub async fn post_raw(
    d: &Daemon,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let mut rb = d
        .http()
        .post(d.at(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    parts(rb.send().await.expect("POST")).await
}

/// `DELETE /api/v1/training/jobs/{id}` (cancel) → status and JSON body.
pub async fn cancel(d: &Daemon, id: &str) -> (StatusCode, Value) {
    parts(
        d.http()
            .delete(d.at(&job_path(id, "")))
            .send()
            .await
            .expect("DELETE"),
    )
    .await
}

/// Creates a job from `body`, asserting 201; returns the job JSON.
pub async fn create(d: &Daemon, body: &Value) -> Value {
    let (status, job) = post(d, JOBS, body).await;
    assert_eq!(status, StatusCode::CREATED, "create failed: {job}");
    job
}

/// Creates a job for `user` and returns its id.
pub async fn create_id(d: &Daemon, user: &str) -> String {
    create(d, &job_body(user)).await["id"]
        .as_str()
        .expect("job id")
        .to_string()
}

/// `POST …/{id}/callback` with `Authorization: Bearer token` (none when `None`).
pub async fn callback(
    d: &Daemon,
    id: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    trainer_post(d, &job_path(id, "/callback"), token, body).await
}

/// `POST …/{id}/metrics` (batch ingest) with a trainer token.
pub async fn ingest(
    d: &Daemon,
    id: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    trainer_post(d, &job_path(id, "/metrics"), token, body).await
}

async fn trainer_post(
    d: &Daemon,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut rb = d.http().post(d.at(path)).json(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    parts(rb.send().await.expect("POST")).await
}

/// The job as the API shows it.
pub async fn job(d: &Daemon, id: &str) -> Value {
    let (status, job) = get(d, &job_path(id, "")).await;
    assert_eq!(status, StatusCode::OK, "get job: {job}");
    job
}

/// The path of the daemon's database (the default `<data_dir>/platform.db`).
pub fn db_path(d: &Daemon) -> PathBuf {
    d.data_dir.join("platform.db")
}

/// A read-only connection to a database file (the daemon keeps writing).
pub fn open_ro(path: &Path) -> Connection {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the daemon's database read-only")
}

/// A job's callback token, as its (stand-in) trainer received it in
/// `CALLBACK_TOKEN` at launch: the API never shows it and the database
/// keeps only its hash. Needs a capturing daemon ([`super::Opts::capturing`]).
pub fn callback_token(d: &Daemon, id: &str) -> String {
    let dir = d
        .tokens
        .as_ref()
        .expect("callback tokens need a capturing daemon (Opts::capturing)");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(token) = std::fs::read_to_string(dir.join(id)) {
            return token;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} was not launched with a token within 20 s:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A job's id and token, created through the API, once the job is
/// `running` (launched; its stand-in trainer waits for the test).
pub async fn job_with_token(d: &Daemon, user: &str) -> (String, String) {
    let id = create_id(d, user).await;
    let token = running_with_token(d, &id).await;
    (id, token)
}

/// Job `id`'s token once the job is `running`: its launch is committed, so
/// a `kill -9` from here on cannot make the next daemon launch it again
/// with a new token.
pub async fn running_with_token(d: &Daemon, id: &str) -> String {
    let token = callback_token(d, id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while job(d, id).await["status"] != "running" {
        assert!(Instant::now() < deadline, "job {id} did not start running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token
}

/// Every stored row of both tables as text: two snapshots are equal only
/// when nothing was written in between.
pub fn snapshot(d: &Daemon) -> String {
    if d.pg_database().is_some() {
        let mut out = String::new();
        for sql in [
            "SELECT j::text FROM jobs j ORDER BY id",
            "SELECT m::text FROM metrics m ORDER BY id",
        ] {
            for line in d.sql(sql).lines() {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("--\n");
        }
        return out;
    }
    let c = open_ro(&db_path(d));
    let mut out = String::new();
    for sql in [
        "SELECT * FROM jobs ORDER BY id",
        "SELECT * FROM points ORDER BY id",
    ] {
        let mut stmt = c.prepare(sql).expect("prepare snapshot");
        let n = stmt.column_count();
        let mut rows = stmt.query([]).expect("snapshot query");
        while let Some(row) = rows.next().expect("snapshot row") {
            for i in 0..n {
                let v: rusqlite::types::Value = row.get(i).expect("column");
                out.push_str(&format!("{v:?}|"));
            }
            out.push('\n');
        }
        out.push_str("--\n");
    }
    out
}

/// One job's row and its points, as text: two are equal only when no
/// request changed the job in between. Left out: what the runner records
/// when the trainer's process ends, whenever that is (`exit_code`, and the
/// `updated_at` it stamps).
pub fn job_state(d: &Daemon, id: &str) -> String {
    if d.pg_database().is_some() {
        let id = id.replace('\'', "");
        return format!(
            "{}\n--\n{}",
            d.sql(&format!(
                "SELECT (to_jsonb(j) - 'exit_code' - 'updated_at' - 'xid')::text FROM jobs j \
                 WHERE id::text = '{id}'"
            )),
            d.sql(&format!(
                "SELECT m::text FROM metrics m WHERE job_id::text = '{id}' ORDER BY id"
            ))
        );
    }
    let c = open_ro(&db_path(d));
    let mut out = String::new();
    for sql in [
        "SELECT * FROM jobs WHERE id = ?1",
        "SELECT * FROM points WHERE job = (SELECT number FROM jobs WHERE id = ?1) ORDER BY id",
    ] {
        let mut stmt = c.prepare(sql).expect("prepare job state");
        let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
        let mut rows = stmt.query([id]).expect("job state query");
        while let Some(row) = rows.next().expect("job state row") {
            for (i, name) in names.iter().enumerate() {
                if name != "exit_code" && name != "updated_at" {
                    let v: rusqlite::types::Value = row.get(i).expect("column");
                    out.push_str(&format!("{name}={v:?}|"));
                }
            }
            out.push('\n');
        }
        out.push_str("--\n");
    }
    out
}

/// How many metric points the database holds for `id`.
pub fn stored_points(d: &Daemon, id: &str) -> i64 {
    if d.pg_database().is_some() {
        let id = id.replace('\'', "");
        let n = d.sql(&format!(
            "SELECT COUNT(*) FROM metrics WHERE job_id::text = '{id}'"
        ));
        return n.parse().expect("a count");
    }
    open_ro(&db_path(d))
        .query_row(
            "SELECT COUNT(*) FROM points WHERE job = (SELECT number FROM jobs WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )
        .expect("count points")
}

/// Every metric point of a job, oldest first, paging with `after_id`.
pub async fn all_points(d: &Daemon, id: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let after = out
            .last()
            .map(|p| p["id"].as_i64().expect("point id"))
            .unwrap_or(0);
        let path = job_path(
            id,
            &format!("/metrics?order=asc&limit=10000&after_id={after}"),
        );
        let (status, page) = get(d, &path).await;
        assert_eq!(status, StatusCode::OK, "metrics: {page}");
        let page = page.as_array().expect("array").clone();
        let done = page.len() < 10_000;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// Runs `platform serve` with `args` until it prints its address or exits.
/// Returns the exit code (`None` when it started and was stopped) and its stderr.
pub fn serve_outcome(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    serve_outcome_in(tmp.path(), args, envs)
}

/// `platform serve` on `dir` (data directory, HOME and working directory)
/// with only `PATH` and `envs` in its environment; stderr piped.
pub fn spawn_serve_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(super::bin())
        .arg("serve")
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// [`serve_outcome`] with `dir` as data directory, HOME and working directory.
pub fn serve_outcome_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = spawn_serve_in(dir, args, envs);
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut text = String::new();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(text.clone());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    loop {
        if let Ok(t) = rx.recv_timeout(Duration::from_millis(50)) {
            text = t;
        }
        if text.contains("listening on http://") {
            let _ = child.kill();
            let _ = child.wait();
            return (None, text);
        }
        if let Ok(Some(status)) = child.try_wait() {
            while let Ok(t) = rx.recv_timeout(Duration::from_millis(200)) {
                text = t;
            }
            return (status.code(), text);
        }
        assert!(
            Instant::now() < deadline,
            "serve neither started nor exited: {text}"
        );
    }
}
