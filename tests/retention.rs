//! Retention (issue 17) against a real daemon and database: jobs that
//! really ran (the demo trainer: metric points, an archived log, a
//! checkpoint artifact) are aged by moving their `completed_at` back in
//! the database, then `platform prune` / `POST /api/v1/prune` and the
//! automatic policy remove what they were asked to and nothing else:
//! recent and running jobs stay whole, job rows stay, dry runs change
//! nothing, a second prune is a no-op, members are refused, a prune
//! under a callback load fails no callback, and the SQLite file shrinks.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::api::{self, get, post, stored_points};
use common::{demo_job, eventually, pg, stderr, stdout, Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

const JOBS: &str = "/api/v1/training/jobs";
const PRUNE: &str = "/api/v1/prune";
const ADMIN: &str = "retention-test-operator-token-0123456789";

/// A demo run with a few hundred points (per-step ones included).
fn short_run() -> Value {
    json!({"epochs": 3, "epoch_seconds": 0.2, "steps_per_epoch": 100})
}

/// A daemon that launches every job at once, with `args`.
fn daemon(args: &[&str]) -> Daemon {
    let mut opts = Opts::default();
    opts.args
        .extend(["--max-concurrent-jobs".into(), "0".into()]);
    opts.args.extend(args.iter().map(|a| a.to_string()));
    Daemon::start_with(opts)
}

/// Where the local object store keeps `rel` of job `id`.
fn stored(d: &Daemon, id: &str, rel: &str) -> std::path::PathBuf {
    d.data_dir.join("store/jobs").join(id).join(rel)
}

const LOG: &str = "logs/trainer.log";
const CHECKPOINT: &str = "outputs/best.pt";

/// Runs a demo job with `config` to its end and waits for its log to be
/// archived; its id.
async fn finished(d: &Daemon, config: Value) -> String {
    let id = api::create(d, &demo_job(config)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(120, "the demo trainer to finish", || async {
        let status = api::job(d, &id).await["status"].clone();
        (status == "completed" || status == "failed").then_some(())
    })
    .await;
    eventually(30, "the trainer's log to be archived", || async {
        stored(d, &id, LOG).is_file().then_some(())
    })
    .await;
    id
}

/// Moves job `id`'s end `days` back (both backends store RFC 3339 text
/// the same way).
fn age(d: &Daemon, id: &str, days: i64) {
    let ended = (chrono::Utc::now() - chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    d.sql(&format!(
        "UPDATE jobs SET completed_at = '{ended}' WHERE id = '{id}'"
    ));
}

/// `platform prune ARGS -o json` as the daemon's operator: the report.
fn prune_cli(d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["prune"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = d.cli(&all);
    assert!(
        out.status.success(),
        "platform {all:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(&stdout(&out)).expect("a JSON report")
}

async fn artifacts(d: &Daemon, id: &str) -> Vec<Value> {
    let (status, files) = get(d, &format!("{JOBS}/{id}/artifacts")).await;
    assert_eq!(status, StatusCode::OK, "{files}");
    files.as_array().unwrap().clone()
}

async fn log_text(d: &Daemon, id: &str) -> String {
    d.get_text(&format!("{JOBS}/{id}/logs")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn old_jobs_lose_history_logs_and_artifacts_only_as_asked() {
    let d = daemon(&[]);
    let old = finished(&d, short_run()).await;
    let recent = finished(&d, short_run()).await;
    let live = api::create(
        &d,
        &demo_job(json!({"epochs": 100000, "epoch_seconds": 0.2})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(30, "the live job to report", || async {
        (stored_points(&d, &live) > 0).then_some(())
    })
    .await;
    age(&d, &old, 45);
    let whole = api::all_points(&d, &old).await;
    assert!(whole.len() > 100, "{} points", whole.len());
    let (_, plotted) = get(&d, &format!("{JOBS}/{old}/metrics?max_points=50&order=asc")).await;
    let recent_points = stored_points(&d, &recent);

    // A dry run says what would go and changes nothing.
    let dry = prune_cli(
        &d,
        &[
            "--older-than",
            "30d",
            "--downsample",
            "50",
            "--logs",
            "--artifacts",
            "--dry-run",
        ],
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["jobs"], 1, "{dry}");
    assert_eq!(dry["points_deleted"], whole.len() as u64 - 50, "{dry}");
    assert_eq!(
        (
            dry["logs_deleted"].clone(),
            dry["artifacts_deleted"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(
        api::all_points(&d, &old).await,
        whole,
        "a dry run deletes nothing"
    );
    assert_eq!(api::job(&d, &old).await["pruned"], Value::Null);
    assert!(stored(&d, &old, LOG).is_file() && stored(&d, &old, CHECKPOINT).is_file());

    // The history of the old job is downsampled; nothing else changes.
    let r = prune_cli(&d, &["--older-than", "30d", "--downsample", "50"]);
    assert_eq!(
        (r["jobs"].clone(), r["dry_run"].clone()),
        (json!(1), json!(false)),
        "{r}"
    );
    assert_eq!(r["points_deleted"], whole.len() as u64 - 50);
    assert_eq!(
        (r["logs_deleted"].clone(), r["artifacts_deleted"].clone()),
        (json!(0), json!(0))
    );
    let kept = api::all_points(&d, &old).await;
    assert_eq!(kept.len(), 50);
    assert_eq!(kept[0]["id"], whole[0]["id"], "the first point stays");
    assert_eq!(
        kept[49]["id"],
        whole[whole.len() - 1]["id"],
        "the last point stays"
    );
    assert_eq!(
        Value::from(kept.clone()),
        plotted,
        "the pruned history is what ?max_points=50 drew: the same curve"
    );
    let job = api::job(&d, &old).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["config"]["epochs"], 3, "the job row stays");
    assert_eq!(
        (
            job["pruned"]["max_points"].clone(),
            job["pruned"]["logs"].clone(),
            job["pruned"]["artifacts"].clone()
        ),
        (json!(50), json!(false), json!(false)),
        "{job}"
    );
    let shown = d.cli(&["job", "get", &old]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains("Pruned:")
            && stdout(&shown).contains("metrics downsampled to 50 points"),
        "{}",
        stdout(&shown)
    );
    assert!(
        !log_text(&d, &old).await.is_empty(),
        "logs only go with --logs"
    );
    assert_eq!(artifacts(&d, &old).await.len(), 1);
    assert_eq!(
        stored_points(&d, &recent),
        recent_points,
        "recent jobs stay whole"
    );
    assert_eq!(api::job(&d, &recent).await["pruned"], Value::Null);
    let running = api::job(&d, &live).await;
    assert_eq!(
        (running["status"].clone(), running["pruned"].clone()),
        (json!("running"), Value::Null)
    );
    let listed: Value = d.get_json(&format!("{JOBS}?limit=10")).await;
    assert_eq!(listed.as_array().unwrap().len(), 3, "lists keep every job");

    // A second prune finds nothing left to do.
    let again = prune_cli(&d, &["--older-than", "30d", "--downsample", "50"]);
    assert_eq!(
        (again["jobs"].clone(), again["points_deleted"].clone()),
        (json!(0), json!(0)),
        "{again}"
    );

    // Logs go only with --logs, artifacts only with --artifacts.
    let logs = prune_cli(&d, &["--older-than", "30d", "--keep-metrics", "--logs"]);
    assert_eq!(
        (logs["jobs"].clone(), logs["logs_deleted"].clone()),
        (json!(1), json!(1)),
        "{logs}"
    );
    assert!(logs["log_bytes"].as_u64().unwrap() > 0);
    assert!(!stored(&d, &old, LOG).exists());
    assert!(log_text(&d, &old).await.is_empty());
    assert!(
        stored(&d, &recent, LOG).is_file(),
        "the recent job's log stays"
    );
    assert_eq!(
        artifacts(&d, &old).await.len(),
        1,
        "artifacts stay without --artifacts"
    );
    assert_eq!(api::all_points(&d, &old).await.len(), 50);
    let outputs = prune_cli(
        &d,
        &["--older-than", "30d", "--keep-metrics", "--artifacts"],
    );
    assert_eq!(
        (
            outputs["jobs"].clone(),
            outputs["artifacts_deleted"].clone(),
            outputs["logs_deleted"].clone()
        ),
        (json!(1), json!(1), json!(0)),
        "{outputs}"
    );
    assert!(artifacts(&d, &old).await.is_empty());
    assert_eq!(artifacts(&d, &recent).await.len(), 1);
    let pruned = &api::job(&d, &old).await["pruned"];
    assert_eq!(
        (
            pruned["max_points"].clone(),
            pruned["logs"].clone(),
            pruned["artifacts"].clone()
        ),
        (json!(50), json!(true), json!(true))
    );
    // Deleting the history outright is still possible after a downsample.
    let all = prune_cli(&d, &["--older-than", "30d", "--delete-metrics"]);
    assert_eq!(
        (all["jobs"].clone(), all["points_deleted"].clone()),
        (json!(1), json!(50)),
        "{all}"
    );
    assert_eq!(stored_points(&d, &old), 0);
    assert!(
        d.log_text().contains("prune finished"),
        "a log line per run"
    );
}

/// `POST /api/v1/prune` with `token`.
async fn prune_as(d: &Daemon, token: &str, body: &Value) -> (StatusCode, Value) {
    let resp = d
        .http()
        .post(d.at(PRUNE))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    api::parts(resp).await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_prune_and_bad_requests_change_nothing() {
    let mut opts = Opts::default().held();
    opts.args.extend(["--api-token".into(), ADMIN.into()]);
    let d = Daemon::start_with(opts);
    let resp = d
        .http()
        .post(d.at("/api/v1/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bob", "role": "member"}))
        .send()
        .await
        .unwrap();
    let (status, created) = api::parts(resp).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let member = created["token"]["token"].as_str().unwrap();
    let (status, body) = prune_as(&d, member, &json!({"older_than_days": 30})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("only admins"),
        "{body}"
    );
    let out = d.cli_env(
        &["prune", "--older-than", "30d"],
        &[("PLATFORM_TOKEN", member)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("only admins"), "{}", stderr(&out));

    for (body, field) in [
        (json!({"older_than_days": -1}), "older_than_days"),
        (json!({"older_than_days": 1e9}), "older_than_days"),
        (json!({"older_than_days": 1, "max_points": 1}), "max_points"),
        (
            json!({"older_than_days": 1, "metrics": "delete", "max_points": 10}),
            "max_points",
        ),
    ] {
        let (status, answer) = prune_as(&d, ADMIN, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    for body in [
        json!({}),
        json!({"older_than_days": "soon"}),
        json!({"older_than_days": 1, "metrics": "shred"}),
    ] {
        let (status, answer) = prune_as(&d, ADMIN, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }
    let admin = [("PLATFORM_TOKEN", ADMIN)];
    for bad in [
        &["prune"][..],
        &["prune", "--older-than", "30x"],
        &["prune", "--older-than", "30d", "--downsample", "1"],
        &[
            "prune",
            "--older-than",
            "30d",
            "--downsample",
            "10",
            "--delete-metrics",
        ],
    ] {
        let out = d.cli_env(bad, &admin);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    let out = d.cli_env(&["prune", "--older-than", "30d", "--dry-run"], &admin);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("dry run"), "{}", stdout(&out));
    // The audit trail names who pruned (and who was refused).
    let resp = d
        .http()
        .get(d.at("/api/v1/audit?limit=50"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (_, audit) = api::parts(resp).await;
    let prunes: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == PRUNE)
        .collect();
    assert!(prunes.iter().any(|e| e["status"] == 200), "{audit}");
    assert!(
        prunes
            .iter()
            .any(|e| e["status"] == 403 && e["user"] == "bob"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_prunes_histories_logs_and_artifacts_separately() {
    let mut opts = Opts::default();
    opts.args.extend(
        [
            "--max-concurrent-jobs",
            "0",
            "--retention-metrics",
            "delete",
            "--retention-logs",
            "--artifact-retention-days",
            "60",
        ]
        .map(String::from),
    );
    opts.envs.extend([
        ("PLATFORM_RETENTION_DAYS".into(), "30".into()),
        ("PLATFORM_RETENTION_INTERVAL".into(), "1".into()),
    ]);
    let d = Daemon::start_with(opts);
    let (month, quarter, fresh) = (
        finished(&d, short_run()).await,
        finished(&d, short_run()).await,
        finished(&d, short_run()).await,
    );
    let fresh_points = stored_points(&d, &fresh);
    age(&d, &month, 45);
    age(&d, &quarter, 90);
    eventually(30, "the policy to prune the old jobs", || async {
        let a = api::job(&d, &month).await;
        let b = api::job(&d, &quarter).await;
        (a["pruned"]["logs"] == true && b["pruned"]["artifacts"] == true).then_some(())
    })
    .await;
    assert_eq!(stored_points(&d, &month), 0);
    assert_eq!(stored_points(&d, &quarter), 0);
    assert!(!stored(&d, &month, LOG).exists() && !stored(&d, &quarter, LOG).exists());
    assert!(
        stored(&d, &month, CHECKPOINT).is_file(),
        "45 days is within the artifact policy's 60"
    );
    assert!(!stored(&d, &quarter, CHECKPOINT).exists());
    assert_eq!(api::job(&d, &month).await["pruned"]["artifacts"], false);
    assert_eq!(
        stored_points(&d, &fresh),
        fresh_points,
        "recent jobs stay whole"
    );
    assert!(stored(&d, &fresh, LOG).is_file() && stored(&d, &fresh, CHECKPOINT).is_file());
    let log = d.log_text();
    assert!(log.contains("retention policy on"), "{log}");
    assert!(
        log.contains("trigger=\"policy\"") || log.contains("trigger=policy"),
        "{log}"
    );
}

/// The SQLite file's size with its write-ahead log (after a clean stop the
/// log is checkpointed away).
fn db_bytes(d: &Daemon) -> u64 {
    let size = |name: &str| {
        std::fs::metadata(d.data_dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    size("platform.db") + size("platform.db-wal")
}

/// A run of about 20,000 points (enough to see in the file's size).
fn long_run() -> Value {
    json!({"epochs": 2, "epoch_seconds": 0, "steps_per_epoch": 10000})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sqlite_file_shrinks_after_a_prune() {
    if pg::skip_sqlite_only("the SQLite file's size") {
        return;
    }
    let mut d = daemon(&[]);
    assert_eq!(
        d.sql("PRAGMA auto_vacuum"),
        "2",
        "new files vacuum incrementally"
    );
    let id = finished(&d, long_run()).await;
    assert!(stored_points(&d, &id) > 10_000);
    d.terminate();
    let grown = db_bytes(&d);
    d.restart();
    age(&d, &id, 40);
    let (status, r) = post(
        &d,
        PRUNE,
        &json!({"older_than_days": 30, "metrics": "delete"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(r["points_deleted"].as_u64().unwrap() > 10_000, "{r}");
    assert!(r["reclaimed_bytes"].as_u64().unwrap() > 1_000_000, "{r}");
    d.terminate();
    let shrunk = db_bytes(&d);
    assert!(shrunk * 2 < grown, "{grown} -> {shrunk} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn db_vacuum_converts_an_old_file_but_not_while_the_daemon_runs() {
    if pg::skip_sqlite_only("the SQLite file's size") {
        return;
    }
    let mut d = daemon(&[]);
    let id = finished(&d, long_run()).await;
    d.terminate();
    // A file from before auto-vacuum.
    let c = rusqlite::Connection::open(d.data_dir.join("platform.db")).unwrap();
    c.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
        .unwrap();
    drop(c);
    d.restart();
    assert_eq!(d.sql("PRAGMA auto_vacuum"), "0");
    age(&d, &id, 40);
    let (status, r) = post(
        &d,
        PRUNE,
        &json!({"older_than_days": 30, "metrics": "delete"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["reclaimed_bytes"], Value::Null, "{r}");
    assert!(
        d.log_text().contains("platform db vacuum"),
        "the log says what to do"
    );
    let data_dir = d.data_dir.clone();
    let vacuum = |json: bool| {
        let mut cmd = std::process::Command::new(common::bin());
        cmd.args(["db", "vacuum", "--data-dir"])
            .arg(&data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("PLATFORM_DATA_DIR");
        if json {
            cmd.args(["-o", "json"]);
        }
        cmd.output().expect("run platform db vacuum")
    };
    let refused = vacuum(false);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("is running"),
        "{}",
        stderr(&refused)
    );
    d.terminate();
    let before = db_bytes(&d);
    let out = vacuum(true);
    assert!(out.status.success(), "{}", stderr(&out));
    let done: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(done["before_bytes"], before, "{done}");
    assert!(done["after_bytes"].as_u64().unwrap() * 2 < before, "{done}");
    assert_eq!(db_bytes(&d), done["after_bytes"]);
    d.restart();
    assert_eq!(d.sql("PRAGMA auto_vacuum"), "2", "converted");
    assert_eq!(
        api::job(&d, &id).await["status"],
        "completed",
        "every row stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prune_under_callback_load_fails_no_callback() {
    let d = Daemon::capturing();
    // An old job with a long history, reported in batches by its trainer.
    let (old, token) = api::job_with_token(&d, "alice").await;
    for b in 0..40 {
        let points: Vec<Value> = (0..1000)
            .map(|i| json!({"epoch": b, "step": b * 1000 + i, "loss": 1.0 / f64::from(b * 1000 + i + 1)}))
            .collect();
        let (status, ack) = api::ingest(&d, &old, Some(&token), &json!({ "points": points })).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
    }
    let (status, _) = api::callback(&d, &old, Some(&token), &json!({"status": "completed"})).await;
    assert_eq!(status, StatusCode::OK);
    age(&d, &old, 60);
    let mut live = Vec::new();
    for _ in 0..2 {
        live.push(api::job_with_token(&d, "bob").await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let pruning = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for w in 0..8 {
        let (id, token) = live[w % live.len()].clone();
        let (stop, pruning, during) = (stop.clone(), pruning.clone(), during.clone());
        let url = d.at(&format!("{JOBS}/{id}/callback"));
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({"status": "running", "progress": 0.5, "metrics": {"epoch": i, "loss": 0.5}});
                let resp = http.post(&url).bearer_auth(&token).json(&body).send().await.expect("callback");
                assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap_or_default());
                acked += 1;
                if pruning.load(Ordering::Relaxed) {
                    during.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    pruning.store(true, Ordering::Relaxed);
    let (status, r) = post(
        &d,
        PRUNE,
        &json!({"older_than_days": 30, "metrics": "delete"}),
    )
    .await;
    pruning.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for task in load {
        acked += task.await.expect("every callback was acknowledged");
    }
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["points_deleted"], 40_000, "{r}");
    assert_eq!(stored_points(&d, &old), 0);
    assert!(
        during.load(Ordering::Relaxed) > 0,
        "callbacks were answered while the prune ran"
    );
    let live_points: i64 = live.iter().map(|(id, _)| stored_points(&d, id)).sum();
    assert_eq!(
        live_points as u64, acked,
        "every acknowledged point is stored"
    );
}
