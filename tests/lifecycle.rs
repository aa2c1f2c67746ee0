//! The daemon's life seen from outside: a log reader that goes away changes
//! nothing, and SIGTERM stops the daemon cleanly and at once, idle or with
//! a trainer running.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::{job, job_body, JOBS};
use common::{Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A daemon this test started itself, stopped however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `platform serve 2>&1 | head -1`: the log's only reader goes away after
/// the first line. Every later log line fails to write (EPIPE), which used
/// to panic the task that logged it and crash the shutdown with exit 101.
#[tokio::test]
async fn a_closed_log_stream_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // PLATFORM_TEST_BACKEND=postgres: a fresh database on the test cluster,
    // which the second daemon below opens again.
    let database: Vec<(String, String)> = if common::pg::enabled() {
        vec![(
            "DATABASE_URL".into(),
            common::pg::cluster().fresh_database(),
        )]
    } else {
        Vec::new()
    };
    let mut serve = Command::new(common::bin())
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--hold-jobs",
            "--data-dir",
        ])
        .arg(&data)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        // A log line for every request, as well as start and shutdown.
        .env("RUST_LOG", "info,tower_http=debug")
        .env("DATASET_CHECK", "off")
        .envs(database.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .expect("spawn platform serve");
    let url = {
        let stderr = serve.0.stderr.take().expect("stderr is piped");
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                let rest = l.split("listening on ").nth(1)?;
                rest.split_whitespace().next().map(str::to_string)
            })
            .expect("the daemon logs where it listens")
        // The reader is dropped here: the pipe has no reader left.
    };

    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let resp = http
            .post(format!("{url}{JOBS}"))
            .json(&job_body(&format!("user{i}")))
            .send()
            .await
            .expect("create a job with the log stream closed");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let job: Value = resp.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
        let resp = http.get(format!("{url}{JOBS}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    let code = common::terminate(&mut serve.0);
    assert_eq!(code, Some(0), "a graceful shutdown exits 0");
    // The database closed cleanly: the last close checkpoints and removes
    // the write-ahead log.
    let wal = data.join("platform.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the database was closed cleanly"
    );

    let d = Daemon::start_with(
        Opts {
            data_dir: Some(data),
            envs: database,
            ..Opts::default()
        }
        .held(),
    );
    for id in &ids {
        assert_eq!(job(&d, id).await["status"], "pending");
    }
}

/// Stops `d` with SIGTERM; checks it exited 0 after logging `stopped`,
/// with no warning or error on the way out (such as "database still in use
/// at shutdown"); returns how long it took and the shutdown's log.
fn stop_cleanly(d: &mut Daemon) -> (Duration, String) {
    let started = Instant::now();
    let code = d.terminate();
    let took = started.elapsed();
    let log = d.log_text();
    assert_eq!(code, Some(0), "SIGTERM exits 0; log:\n{log}");
    let shutdown = &log[log.find("signal received").expect("the signal is logged")..];
    assert!(shutdown.contains("stopped"), "{log}");
    assert!(
        !shutdown.contains(" WARN ") && !shutdown.contains("ERROR"),
        "a clean shutdown warns about nothing:\n{shutdown}"
    );
    (took, shutdown.to_string())
}

// The bounds below only catch a shutdown that waits for something (the old
// code waited 5 s for the database's other handle holders whenever a
// trainer was running); a clean stop takes tens of milliseconds, so they
// leave a wide margin for a loaded machine. How fast is not a test's
// business.

#[tokio::test]
async fn sigterm_stops_an_idle_daemon_at_once() {
    let mut d = Daemon::held();
    let (took, _) = tokio::task::spawn_blocking(move || stop_cleanly(&mut d))
        .await
        .unwrap();
    assert!(took < Duration::from_secs(4), "idle shutdown took {took:?}");
}

#[tokio::test]
async fn sigterm_with_a_running_trainer_stops_at_once_leaving_it_running() {
    let mut d = Daemon::start();
    let body = common::demo_job(json!({"epochs": 1000, "epoch_seconds": 1}));
    let id = common::api::create(&d, &body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    common::eventually(30, "the trainer to run", || async {
        (job(&d, &id).await["status"] == "running").then_some(())
    })
    .await;
    // Dropping `d` afterwards stops the trainer left running.
    let (took, log) = tokio::task::spawn_blocking(move || stop_cleanly(&mut d))
        .await
        .unwrap();
    assert!(log.contains("leaving trainers running"), "{log}");
    assert!(
        took < Duration::from_secs(4),
        "shutdown with a running trainer took {took:?}"
    );
}
