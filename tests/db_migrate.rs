//! Moving up from SQLite (`platform db migrate`, `platform db status`):
//! a deployment that really ran (demo trainers, metrics, attempts, a
//! cancel, a paused queue, a webhook and its deliveries), grown to 10,000
//! jobs and 1,000,000 metric points, is copied into a real PostgreSQL
//! (the cluster `tests/common/pg.rs` starts); a daemon on the copy serves
//! the same jobs, points, webhooks and queue state, and numbers new jobs
//! after the old ones. Refusals change nothing: a daemon still running on
//! the source, a target that is not empty, the wrong direction.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::api::{self, db_path, get, post};
use common::pg;
use common::{eventually, stderr, stdout, Daemon, Opts};
use serde_json::{json, Value};

const JOBS: &str = "/api/v1/training/jobs";

/// `platform db …` with `args`, no daemon involved.
fn db(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::bin())
        .arg("db")
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PLATFORM_MIGRATE_TO")
        .output()
        .expect("run platform db")
}

/// Rows per table, from `platform db status -o json` on `url`.
fn counts(url: &str) -> BTreeMap<String, i64> {
    let out = db(&["status", "--database-url", url, "-o", "json"]);
    assert!(out.status.success(), "db status: {}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    status["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// What a client sees of a deployment: every job, each one's metric
/// history, the webhooks and the queues.
async fn view(d: &Daemon, ids: &[String]) -> Value {
    let mut jobs = Vec::new();
    for id in ids {
        let job = api::job(d, id).await;
        let (status, metrics) = get(d, &format!("{JOBS}/{id}/metrics?limit=10000")).await;
        assert!(status.is_success(), "{status}: {metrics}");
        jobs.push(json!({"job": job, "metrics": metrics}));
    }
    let mut all = vec![format!("{JOBS}?limit={}", ids.len())];
    all.extend([
        "/api/v1/webhooks".into(),
        "/api/v1/queues".into(),
        "/api/v1/sweeps".into(),
    ]);
    let mut lists = Vec::new();
    for path in all {
        let (status, body) = get(d, &path).await;
        assert!(status.is_success(), "{path}: {status}: {body}");
        lists.push(body);
    }
    let [list, hooks, queues, sweeps] = <[Value; 4]>::try_from(lists).unwrap();
    json!({"jobs": jobs, "list": list, "webhooks": hooks, "queues": queues, "sweeps": sweeps})
}

/// Grows the stopped daemon's database to 10,000 jobs and 1,000,000
/// metric points (older than every real job, so first pages stay the same).
fn grow(path: &std::path::Path) {
    let c = rusqlite::Connection::open(path).expect("open the database");
    c.execute_batch(
        r#"
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000 - (SELECT count(*) FROM jobs))
INSERT INTO jobs (id, number, user_id, model_name, framework, dataset_s3_uri, config, status,
                  progress, created_at, updated_at, started_at, completed_at, attempt)
SELECT printf('00000000-0000-7000-8000-%012x', i), 100000 + i, 'bulk', 'yolo11n', 'demo',
       's3://bucket/d/', '{"lr":0.001,"i":' || i || '}', 'completed', 1.0,
       '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z',
       '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z', 1
  FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000 - (SELECT count(*) FROM points))
INSERT INTO points (job, epoch, step, loss, accuracy, extra, lifted, at, attempt)
SELECT 100001 + i % 100, i / 100, i, 1.0 / i, NULL, '{"mAP50":0.5}', 4, 1577836800000000, 1
  FROM n;
COMMIT;
"#,
    )
    .expect("grow the database");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_deployment_moves_to_postgresql_whole_and_is_served_unchanged() {
    let cluster = pg::cluster();
    let target = cluster.fresh_database();
    let mut d = Daemon::start_with(Opts {
        envs: vec![("WEBHOOK_ALLOW_PRIVATE".into(), "1".into())],
        ..Opts::default()
    });
    let source = format!("sqlite:///{}", db_path(&d).display());

    // Real activity: trainers that run to the end, a cancel, a webhook
    // with deliveries, a paused queue holding a pending job.
    let (status, _) = post(
        &d,
        "/api/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    assert!(status.is_success(), "{status}");
    let mut ids = Vec::new();
    for lr in ["0.010", "0.001"] {
        let config = serde_json::from_str::<Value>(&format!(
            r#"{{"zeta": 1, "epochs": 3, "epoch_seconds": 0.01, "lr": {lr}, "alpha": [1, 2.50]}}"#
        ))
        .unwrap();
        let job = api::create(&d, &common::demo_job(config)).await;
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        eventually(60, "the demo trainers to complete", || async {
            (api::job(&d, id).await["status"] == "completed").then_some(())
        })
        .await;
    }
    let (status, _) = post(&d, "/api/v1/queues/default/pause", &json!({})).await;
    assert!(status.is_success(), "{status}");
    let cancelled = api::create_id(&d, "bob").await;
    let (status, _) = api::cancel(&d, &cancelled).await;
    assert!(status.is_success(), "{status}");
    ids.push(cancelled);
    ids.push(api::create_id(&d, "carol").await);
    // A sweep of two labelled jobs (pending in the paused queue).
    let mut sweep = api::job_body("erin");
    sweep["method"] = json!("grid");
    sweep["parameters"] = json!({"lr": [0.1, 0.2]});
    sweep["tags"] = json!({"team": "vision"});
    sweep["note"] = json!("copied with its sweep");
    let (status, sweep) = post(&d, "/api/v1/sweeps", &sweep).await;
    assert!(status.is_success(), "{status}: {sweep}");
    for job in sweep["jobs"].as_array().unwrap() {
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let before = view(&d, &ids).await;
    let first = &before["jobs"][0];
    assert!(
        first["metrics"].as_array().is_some_and(|m| m.len() >= 3),
        "{first}"
    );
    assert!(
        first["job"]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 1),
        "{first}"
    );
    assert_eq!(before["queues"][0]["paused"], true, "{before}");
    assert_eq!(
        before["sweeps"].as_array().map(Vec::len),
        Some(1),
        "{before}"
    );
    assert_eq!(before["jobs"][5]["job"]["tags"], json!({"team": "vision"}));

    // While the daemon runs on the source, nothing is copied.
    let out = db(&["migrate", "--from", &source, "--to", &target]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stop it first"), "{}", stderr(&out));
    assert!(counts(&target).values().all(|&n| n == 0));

    d.terminate();
    grow(&db_path(&d));
    let expected = counts(&source);
    assert_eq!(expected["jobs"], 10_000);
    assert_eq!(expected["metrics"], 1_000_000);

    let out = db(&["migrate", "--from", &source, "--to", &target]);
    assert!(out.status.success(), "db migrate: {}", stderr(&out));
    assert!(stdout(&out).contains("count matches"), "{}", stdout(&out));
    assert_eq!(counts(&target), expected);

    // A second copy into the now non-empty target is refused, changing nothing.
    let out = db(&["migrate", "--from", &source, "--to", &target]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(counts(&target), expected);

    // A daemon on the copy serves what the SQLite daemon served.
    let p = Daemon::start_with(Opts {
        envs: vec![
            ("DATABASE_URL".into(), target.clone()),
            ("WEBHOOK_ALLOW_PRIVATE".into(), "1".into()),
        ],
        data_dir: Some(d.data_dir.clone()),
        ..Opts::default()
    });
    assert_eq!(view(&p, &ids).await, before);
    let bulk = api::job(&p, "00000000-0000-7000-8000-000000000007").await;
    assert_eq!(
        (bulk["number"].clone(), bulk["user_id"].clone()),
        (json!(100_007), json!("bulk"))
    );
    let (_, points) = get(
        &p,
        "/api/v1/training/jobs/00000000-0000-7000-8000-000000000007/metrics?limit=10000",
    )
    .await;
    assert_eq!(
        points.as_array().map(Vec::len),
        Some(10_000),
        "{points:.200}"
    );
    // New rows are numbered after the copied ones.
    let (status, _) = post(&p, "/api/v1/queues/default/resume", &json!({})).await;
    assert!(status.is_success());
    let fresh = api::create(&p, &api::job_body("dave")).await;
    let highest = 100_000 + 10_000 - (ids.len() as i64);
    assert!(
        fresh["number"].as_i64().unwrap() > highest,
        "{} after {highest}",
        fresh["number"]
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn only_sqlite_to_postgresql_is_copied() {
    let target = pg::cluster().fresh_database();
    let out = db(&["migrate", "--from", &target, "--to", &target]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("copies a SQLite database into PostgreSQL"),
        "{}",
        stderr(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite:///{}", dir.path().join("none.db").display());
    let out = db(&["migrate", "--from", &missing, "--to", &target]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no database file"),
        "{}",
        stderr(&out)
    );
    assert!(counts(&target).values().all(|&n| n == 0));
}
