//! The subprocess runner end to end: real daemons launching real trainer
//! processes (shell scripts, the Python reference trainer, the built-in demo
//! trainer), with no mocks anywhere.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, Daemon, Opts};
use serde_json::{json, Value};

/// A trainers directory with one executable `train` script per framework.
fn trainers(scripts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in scripts {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let path = sub.join("train");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// PATH with the binary under test first, so scripts can run `platform report`.
fn path_with_platform() -> String {
    let bin_dir = common::bin().parent().unwrap().to_path_buf();
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn daemon_with(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
    let mut e: Vec<(String, String)> = vec![
        ("TRAINER_SUBPROCESS_PATH".into(), dir.display().to_string()),
        ("PATH".into(), path_with_platform()),
    ];
    e.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Daemon::start_with(Opts {
        args: extra.iter().map(|s| s.to_string()).collect(),
        envs: e,
        ..Opts::default()
    })
}

async fn create(d: &Daemon, framework: &str, config: Value) -> Value {
    let body = json!({"user_id": "alice", "model_name": "yolo11n", "framework": framework,
                      "dataset_s3_uri": "s3://bucket/datasets/coco128/", "config": config});
    common::api::create(d, &body).await
}

async fn get(d: &Daemon, id: &str) -> Value {
    d.get_json(&format!("/api/v1/training/jobs/{id}")).await
}

async fn wait_status(d: &Daemon, id: &str, status: &str, secs: u64) -> Value {
    eventually(secs, &format!("job {id} to be {status}"), || async {
        let j = get(d, id).await;
        (j["status"] == status).then_some(j)
    })
    .await
}

async fn logs(d: &Daemon, id: &str, query: &str) -> String {
    d.http()
        .get(d.at(&format!("/api/v1/training/jobs/{id}/logs{query}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The runner's private state of a job, read from the daemon's database
/// (tests need the pids a user would see with `ps`). The launch commits it
/// just after the trainer starts, so a test that already saw the
/// trainer's output may look a moment too early: wait for it.
fn runner_state(d: &Daemon, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = d.sql(&format!("SELECT runner_state FROM jobs WHERE id = '{id}'"));
        if !s.is_empty() {
            return serde_json::from_str(&s).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "job {id}'s launch was never recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process exists and is not a zombie.
fn process_alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// SIGKILL to a pid, or to a process group when negative.
fn kill9(pid: i64) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Kills a process (SIGKILL) when dropped, so a test that fails does not
/// leave behind the process it was checking on.
struct KillOnDrop(i64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill9(self.0);
    }
}

/// Reads a pid a trainer wrote into `path`.
async fn pid_in(path: &Path) -> i64 {
    eventually(20, &format!("a pid in {}", path.display()), || async {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
    .await
}

/// Waits until the runner has recorded the trainer's exit code (it lands
/// just after a trainer's own terminal callback).
async fn wait_exit_code(d: &Daemon, id: &str) -> Value {
    eventually(20, "the exit code", || async {
        let j = get(d, id).await;
        (!j["exit_code"].is_null()).then_some(j)
    })
    .await
}

#[tokio::test]
async fn demo_job_runs_to_completion_with_metrics() {
    let d = Daemon::start();
    let job = create(&d, "demo", json!({"epochs": 12, "epoch_seconds": 0.02})).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_status(&d, &id, "completed", 30).await;
    let done = wait_exit_code(&d, &id).await;
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["runner"], "subprocess");
    assert_eq!(done["exit_code"], 0);
    assert!(done["started_at"].is_string() && done["completed_at"].is_string());
    let points: Vec<Value> = d
        .get_json(&format!("/api/v1/training/jobs/{id}/metrics?order=asc"))
        .await;
    assert_eq!(points.len(), 12);
    let first = points[0]["loss"].as_f64().unwrap();
    let last = points[11]["loss"].as_f64().unwrap();
    assert!(last < first, "loss should fall: {first} -> {last}");
    assert_eq!(points[11]["epoch"], 12);
    assert!(
        points[11]["metrics"]["mAP50"].as_f64().unwrap()
            > points[0]["metrics"]["mAP50"].as_f64().unwrap()
    );
    // The CLI sees the same job.
    let out = d.cli(&["job", "get", &id[..13]]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("completed"));
    let out = d.cli(&["metrics", &id, "-o", "csv"]);
    assert_eq!(common::stdout(&out).lines().count(), 13, "header + 12 rows");
}

#[tokio::test]
async fn trainer_gets_exactly_the_contract_environment() {
    let dir = trainers(&[("envdump", "env | sort")]);
    std::fs::write(
        dir.path().join("trainers.toml"),
        format!(
            "[trainers.withenv]\ncommand = [\"{}\"]\nenv = {{ EXTRA_SETTING = \"42\", JOB_ID = \"spoofed\" }}\n",
            dir.path().join("envdump/train").display()
        ),
    )
    .unwrap();
    let d = daemon_with(
        dir.path(),
        &[
            "--trainers",
            &dir.path().join("trainers.toml").display().to_string(),
        ],
        &[
            ("PLATFORM_API_TOKEN", "operator-secret-token"),
            ("SOME_DAEMON_SECRET", "x"),
        ],
    );
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth("operator-secret-token");
    let mk = |framework: &str, config: Value| {
        auth(d.http().post(d.at("/api/v1/training/jobs"))).json(&json!({
            "user_id": "alice", "model_name": "yolo11n", "framework": framework,
            "dataset_s3_uri": "s3://bucket/datasets/coco128/", "config": config}))
    };
    let a: Value = mk("withenv", json!({"epochs": 3, "lr": 0.01}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = mk("envdump", Value::Null)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let env_of = |id: String| {
        let d = &d;
        async move {
            eventually(20, "trainer output", || {
                let id = id.clone();
                async move {
                    let j: Value = auth(d.http().get(d.at(&format!("/api/v1/training/jobs/{id}"))))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    if j["status"] != "completed" {
                        return None;
                    }
                    let text = auth(
                        d.http()
                            .get(d.at(&format!("/api/v1/training/jobs/{id}/logs"))),
                    )
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                    Some(
                        text.lines()
                            .filter_map(|l| l.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    )
                }
            })
            .await
        }
    };
    let id_a = a["id"].as_str().unwrap().to_string();
    let env = env_of(id_a.clone()).await;
    assert_eq!(
        env["JOB_ID"], id_a,
        "the contract wins over the entry's env"
    );
    assert_eq!(
        env["CALLBACK_URL"],
        format!("{}/api/v1/training/jobs/{id_a}/callback", d.url)
    );
    assert_eq!(env["BACKEND_BASE_URL"], d.url);
    assert_eq!(env["MODEL_NAME"], "yolo11n");
    assert_eq!(env["FRAMEWORK"], "withenv");
    assert_eq!(env["DATASET_S3_URI"], "s3://bucket/datasets/coco128/");
    assert!(
        env["OUTPUT_S3_URI"].ends_with(&format!("/jobs/{id_a}/outputs/")),
        "{}",
        env["OUTPUT_S3_URI"]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&env["CONFIG"]).unwrap(),
        json!({"epochs": 3, "lr": 0.01})
    );
    assert_eq!(env["EXTRA_SETTING"], "42");
    let token = env["CALLBACK_TOKEN"].clone();
    assert_eq!(token.len(), 64);
    for leaked in [
        "PLATFORM_API_TOKEN",
        "SOME_DAEMON_SECRET",
        "DATABASE_URL",
        "TRAINER_SUBPROCESS_PATH",
    ] {
        assert!(
            !env.contains_key(leaked),
            "{leaked} must not reach the trainer"
        );
    }
    let env_b = env_of(b["id"].as_str().unwrap().to_string()).await;
    assert_eq!(
        env_b["CONFIG"], "{}",
        "a job without config gets CONFIG={{}}"
    );
    assert_ne!(env_b["CALLBACK_TOKEN"], token, "tokens are unique per job");
    assert!(
        !d.log_text().contains(&token),
        "the callback token must never be logged"
    );
}

#[tokio::test]
async fn exit_codes_and_signals_decide_the_outcome() {
    let dir = trainers(&[
        ("ok", "echo fine"),
        (
            "boom",
            "echo preparing; echo 'Traceback: CUDA out of memory' >&2; exit 3",
        ),
        ("killed", "echo about to die; kill -9 $$"),
    ]);
    let d = daemon_with(dir.path(), &["--max-concurrent-jobs", "3"], &[]);
    let ok = create(&d, "ok", Value::Null).await;
    let boom = create(&d, "boom", Value::Null).await;
    let killed = create(&d, "killed", Value::Null).await;
    let ok = wait_status(&d, ok["id"].as_str().unwrap(), "completed", 20).await;
    assert_eq!(ok["exit_code"], 0);
    assert!(ok["error"].is_null());
    let boom = wait_status(&d, boom["id"].as_str().unwrap(), "failed", 20).await;
    assert_eq!(boom["exit_code"], 3);
    let err = boom["error"].as_str().unwrap();
    assert!(err.starts_with("trainer exited with code 3"), "{err}");
    assert!(
        err.contains("CUDA out of memory"),
        "the log tail is quoted: {err}"
    );
    let killed = wait_status(&d, killed["id"].as_str().unwrap(), "failed", 20).await;
    assert_eq!(killed["exit_code"], -9);
    assert!(
        killed["error"].as_str().unwrap().contains("SIGKILL"),
        "{}",
        killed["error"]
    );
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group_within_the_grace_period() {
    // The trainer forks a child and ignores SIGTERM, so only SIGKILL after
    // the grace period stops it; the child must not survive either.
    let dir = trainers(&[(
        "stubborn",
        "sleep 300 &\necho child=$!\ntrap '' TERM\nwhile true; do sleep 0.1; done",
    )]);
    let d = daemon_with(dir.path(), &["--kill-grace", "1"], &[]);
    let job = create(&d, "stubborn", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    let child: i64 = eventually(20, "the trainer's child pid", || async {
        let text = logs(&d, &id, "").await;
        text.lines()
            .find_map(|l| l.strip_prefix("child="))
            .and_then(|p| p.trim().parse().ok())
    })
    .await;
    let trainer = runner_state(&d, &id)["trainer_pid"].as_i64().unwrap();
    assert!(process_alive(child) && process_alive(trainer));
    let start = Instant::now();
    let (status, _) = common::api::cancel(&d, &id).await;
    assert_eq!(status, 204);
    assert_eq!(
        get(&d, &id).await["status"],
        "cancelled",
        "cancelled at once in the DB"
    );
    eventually(10, "trainer and child to be gone", || async {
        (!process_alive(child) && !process_alive(trainer)).then_some(())
    })
    .await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "SIGKILL waited for the grace period ({took:?})"
    );
    assert!(
        took < Duration::from_secs(5),
        "stopped soon after the grace period ({took:?})"
    );
    let j = wait_exit_code(&d, &id).await;
    assert_eq!(j["status"], "cancelled", "cancelled stays cancelled");
    assert_eq!(j["exit_code"], -9);
}

#[tokio::test]
async fn concurrency_limit_keeps_the_second_job_pending() {
    let dir = trainers(&[("long", "echo started; sleep 30")]);
    let d = daemon_with(dir.path(), &["--kill-grace", "1"], &[]);
    let a = create(&d, "long", Value::Null).await;
    let b = create(&d, "long", Value::Null).await;
    let a_id = a["id"].as_str().unwrap();
    let b_id = b["id"].as_str().unwrap();
    wait_status(&d, a_id, "running", 20).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(&d, b_id).await["status"],
        "pending",
        "limit 1: B waits while A runs"
    );
    common::api::cancel(&d, a_id).await;
    let b = wait_status(&d, b_id, "running", 20).await;
    assert!(b["started_at"].is_string());
}

#[tokio::test]
async fn logs_through_the_api_and_the_cli_including_follow() {
    let dir = trainers(&[(
        "chatty",
        "for i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.3; done; echo 'to stderr' >&2",
    )]);
    let d = daemon_with(dir.path(), &[], &[]);
    let job = create(&d, "chatty", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_status(&d, &id, "running", 20).await;
    // follow=true streams until the job ends, then the response completes.
    let followed = logs(&d, &id, "?follow=true").await;
    for i in 1..=5 {
        assert!(followed.contains(&format!("line {i}\n")), "{followed}");
    }
    assert!(followed.contains("to stderr"));
    wait_status(&d, &id, "completed", 20).await;
    assert_eq!(logs(&d, &id, "?tail=2").await, "line 5\nto stderr\n");
    let out = d.cli(&["job", "logs", &id]);
    assert!(out.status.success());
    assert_eq!(common::stdout(&out), followed);
    // The CLI's --follow on a fresh job prints everything and exits 0.
    let job = create(&d, "chatty", Value::Null).await;
    let out = d.cli(&["job", "logs", "--follow", job["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("line 5"));
    // Unknown job: 404; pending/no output: empty 200.
    let r = d
        .http()
        .get(d.at(&format!("/api/v1/training/jobs/{}/logs", uuid_v7())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

fn uuid_v7() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn trainers_are_readopted_after_kill_9_and_finish_normally() {
    let mut d = Daemon::start();
    let job = create(&d, "demo", json!({"epochs": 15, "epoch_seconds": 0.2})).await;
    let id = job["id"].as_str().unwrap().to_string();
    eventually(20, "a few epochs", || async {
        let j = get(&d, &id).await;
        (j["progress"].as_f64().unwrap_or(0.0) >= 0.1).then_some(())
    })
    .await;
    let trainer = runner_state(&d, &id)["trainer_pid"].as_i64().unwrap();
    d.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        process_alive(trainer),
        "the trainer survives the daemon's kill -9"
    );
    d.restart();
    wait_status(&d, &id, "completed", 60).await;
    let done = wait_exit_code(&d, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["exit_code"], 0,
        "exit status is known for re-adopted trainers"
    );
    let points: Vec<Value> = d
        .get_json(&format!("/api/v1/training/jobs/{id}/metrics?limit=100"))
        .await;
    assert_eq!(
        points.len(),
        15,
        "callbacks retried across the restart, none lost or doubled"
    );
}

#[tokio::test]
async fn vanished_and_finished_while_down_are_settled_on_restart() {
    let dir = trainers(&[
        ("sleepy", "echo up; sleep 60"),
        ("quick", "sleep 1; echo bye"),
    ]);
    let mut d = daemon_with(dir.path(), &["--max-concurrent-jobs", "2"], &[]);
    let a = create(&d, "sleepy", Value::Null).await;
    let b = create(&d, "quick", Value::Null).await;
    let a_id = a["id"].as_str().unwrap().to_string();
    let b_id = b["id"].as_str().unwrap().to_string();
    wait_status(&d, &a_id, "running", 20).await;
    wait_status(&d, &b_id, "running", 20).await;
    let st = runner_state(&d, &a_id);
    d.kill9();
    // While the daemon is down: A's trainer and supervisor are killed
    // outright; B's trainer simply finishes.
    kill9(st["supervisor_pid"].as_i64().unwrap());
    kill9(-st["trainer_pid"].as_i64().unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.restart();
    let a = wait_status(&d, &a_id, "failed", 20).await;
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("vanished while the daemon was down"),
        "{}",
        a["error"]
    );
    let b = wait_status(&d, &b_id, "completed", 20).await;
    assert_eq!(b["exit_code"], 0);
}

#[tokio::test]
async fn pending_jobs_are_launched_after_a_restart() {
    let dir = trainers(&[("short", "sleep 2; echo done")]);
    let mut d = daemon_with(dir.path(), &[], &[]);
    let a = create(&d, "short", Value::Null).await;
    let b = create(&d, "short", Value::Null).await;
    let (a_id, b_id) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    wait_status(&d, &a_id, "running", 20).await;
    assert_eq!(get(&d, &b_id).await["status"], "pending");
    d.kill9();
    d.restart();
    wait_status(&d, &a_id, "completed", 20).await;
    wait_status(&d, &b_id, "completed", 20).await;
}

#[tokio::test]
async fn unknown_frameworks_and_unstartable_trainers_fail_clearly() {
    let dir = trainers(&[("noexec", "echo hi")]);
    let noexec = dir.path().join("noexec/train");
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        format!(
            "[trainers.noexec]\ncommand = [\"{}\"]\n[trainers.missing]\ncommand = [\"/nonexistent/train\"]\n[trainers.badwd]\ncommand = [\"true\"]\nworkdir = \"/nonexistent/dir\"\n",
            noexec.display()
        ),
    )
    .unwrap();
    let d = daemon_with(
        dir.path(),
        &[
            "--trainers",
            &dir.path().join("t.toml").display().to_string(),
            "--max-concurrent-jobs",
            "3",
        ],
        &[],
    );
    let r = d
        .http()
        .post(d.at("/api/v1/training/jobs"))
        .json(&json!({"user_id": "u", "model_name": "m", "framework": "nope", "dataset_s3_uri": "s3://b/d/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("nope") && detail.contains("demo") && detail.contains("noexec"),
        "{detail}"
    );
    let out = d.cli(&["job", "create", "-f", "nope", "-m", "m", "-d", "s3://b/d/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("registered frameworks"),
        "{}",
        common::stderr(&out)
    );

    for (fw, expected) in [
        ("noexec", "permission denied"),
        ("missing", "no such file or directory"),
        ("badwd", "working directory /nonexistent/dir does not exist"),
    ] {
        let job = create(&d, fw, Value::Null).await;
        let j = wait_status(&d, job["id"].as_str().unwrap(), "failed", 20).await;
        let err = j["error"].as_str().unwrap();
        assert!(
            err.contains("cannot start trainer") && err.contains(expected),
            "{fw}: {err}"
        );
    }
    let frameworks: Vec<Value> = d.get_json("/api/v1/training/frameworks").await;
    let names: Vec<&str> = frameworks
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["badwd", "demo", "missing", "noexec"]);
    let out = d.cli(&["framework", "list"]);
    assert!(common::stdout(&out).contains("noexec"));
}

#[tokio::test]
async fn python_reference_trainer_completes_a_job() {
    let repo_trainers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("trainers");
    let d = daemon_with(&repo_trainers, &[], &[]);
    let job = create(
        &d,
        "python-example",
        json!({"epochs": 4, "epoch_seconds": 0.05}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait_status(&d, &id, "completed", 30).await;
    assert_eq!(done["progress"], 1.0);
    assert!(done["checkpoint_s3_uri"]
        .as_str()
        .unwrap()
        .ends_with("/outputs/best.pt"));
    let points: Vec<Value> = d
        .get_json(&format!("/api/v1/training/jobs/{id}/metrics"))
        .await;
    assert_eq!(points.len(), 4);
    assert!(points
        .iter()
        .all(|p| p["accuracy"].is_number() && p["loss"].is_number()));
    // The checkpoint it names was really uploaded.
    let files: Vec<Value> = d
        .get_json(&format!("/api/v1/training/jobs/{id}/artifacts"))
        .await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["path"], "best.pt");
    assert_eq!(files[0]["uri"], done["checkpoint_s3_uri"]);
}

#[tokio::test]
async fn shell_trainer_reports_with_platform_report_and_learns_of_cancel() {
    let dir = trainers(&[
        (
            "shell",
            "platform report --status running --progress 0.5 --message 'epoch 1/2' \
             --metric epoch=1 --metric loss=0.75 --sequence 1 || exit 1\n\
             platform report --status running --progress 1 --message 'epoch 2/2' \
             --metric epoch=2 --metric loss=0.5 --metric accuracy=0.9 --sequence 2 || exit 1\n\
             platform report --status completed --progress 1 --sequence 3",
        ),
        (
            "loop",
            // Leaves its token where the test can use it (it runs in its
            // framework's directory): the daemon keeps only a hash.
            "printf %s \"$CALLBACK_TOKEN\" > token.tmp && mv token.tmp token\n\
             i=0\nwhile true; do i=$((i+1)); platform report --status running --message \"tick $i\" --sequence $i; \
             rc=$?; if [ $rc -eq 3 ]; then echo 'told to stop'; sleep 30; fi; sleep 0.2; done",
        ),
    ]);
    let d = daemon_with(
        dir.path(),
        &["--max-concurrent-jobs", "2", "--kill-grace", "1"],
        &[],
    );
    let job = create(&d, "shell", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait_status(&d, &id, "completed", 30).await;
    assert_eq!(done["message"], "epoch 2/2");
    let points: Vec<Value> = d
        .get_json(&format!("/api/v1/training/jobs/{id}/metrics?order=asc"))
        .await;
    assert_eq!(points.len(), 2);
    assert_eq!(points[1]["accuracy"], 0.9);
    assert_eq!(points[1]["epoch"], 2);

    // `platform report` against a cancelled job exits 3.
    let job = create(&d, "loop", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_status(&d, &id, "running", 20).await;
    let token = common::eventually(20, "the loop trainer's token", || async {
        std::fs::read_to_string(dir.path().join("loop").join("token")).ok()
    })
    .await;
    common::api::cancel(&d, &id).await;
    let url = format!("{}/api/v1/training/jobs/{id}/callback", d.url);
    let out = d.cli_env(
        &["report", "--status", "running", "--progress", "0.5"],
        &[("CALLBACK_URL", &url), ("CALLBACK_TOKEN", &token)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("cancelled"));
    // Outside a trainer, report explains what is missing.
    let out = d.cli(&["report", "--status", "running"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::stderr(&out).contains("CALLBACK_URL is not set"));
}

#[tokio::test]
async fn sigterm_leaves_trainers_running_unless_told_to_stop_them() {
    let dir = trainers(&[("sleepy", "echo up; sleep 60")]);
    let mut d = daemon_with(dir.path(), &[], &[]);
    let job = create(&d, "sleepy", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_status(&d, &id, "running", 20).await;
    let trainer = runner_state(&d, &id)["trainer_pid"].as_i64().unwrap();
    // A client following the logs must not hold up the stop (the trainer
    // runs for another minute; `terminate` gives up after 20 s).
    let following = d
        .http()
        .get(d.at(&format!("/api/v1/training/jobs/{id}/logs?follow=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(following.status(), 200);
    assert_eq!(d.terminate(), Some(0), "clean exit on SIGTERM");
    drop(following);
    assert!(process_alive(trainer), "trainers outlive a graceful stop");
    kill9(-trainer);

    let mut d = daemon_with(
        dir.path(),
        &["--stop-jobs-on-exit", "--kill-grace", "1"],
        &[],
    );
    let job = create(&d, "sleepy", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_status(&d, &id, "running", 20).await;
    let trainer = runner_state(&d, &id)["trainer_pid"].as_i64().unwrap();
    assert_eq!(d.terminate(), Some(0));
    assert!(
        !process_alive(trainer),
        "--stop-jobs-on-exit stops trainers"
    );
    d.restart();
    let job = get(&d, &id).await;
    assert_eq!(job["status"], "cancelled");
    assert!(
        job["message"]
            .as_str()
            .unwrap()
            .contains("--stop-jobs-on-exit"),
        "says who cancelled it: {job}"
    );
}

#[tokio::test]
async fn a_cancel_the_daemon_did_not_act_on_is_carried_out_after_restart() {
    let dir = trainers(&[("sleepy", "echo up; sleep 60")]);
    let mut d = daemon_with(dir.path(), &["--kill-grace", "1"], &[]);
    let job = create(&d, "sleepy", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_status(&d, &id, "running", 20).await;
    let trainer = runner_state(&d, &id)["trainer_pid"].as_i64().unwrap();
    d.kill9();
    // The cancel committed, then the daemon died before signalling the
    // trainer: simulated by committing it to the database directly.
    d.sql(&format!(
        "UPDATE jobs SET status = 'cancelled', completed_at = updated_at WHERE id = '{id}'"
    ));
    assert!(process_alive(trainer));
    d.restart();
    eventually(10, "the cancelled job's trainer to be stopped", || async {
        (!process_alive(trainer)).then_some(())
    })
    .await;
    let j = wait_exit_code(&d, &id).await;
    assert_eq!(j["status"], "cancelled");
    assert_eq!(j["exit_code"], -15, "SIGTERM ended it");
}

/// A shell trainer that reports 20 epochs with `platform report`, printing
/// each epoch to its log, then completes.
const SHELL_EPOCHS: &str = "e=0\nwhile [ $e -lt 20 ]; do e=$((e+1)); sleep 0.4; \
    platform report --message \"epoch $e/20\" --metric epoch=$e --metric loss=0.5 || exit 1; \
    echo \"epoch $e/20\"; done\nplatform report --status completed --progress 1 || exit 1";

/// The trainer log of job `id`, as the runner captured it.
fn trainer_log(d: &Daemon, id: &str) -> String {
    std::fs::read_to_string(d.data_dir.join("runs").join(id).join("trainer.log"))
        .unwrap_or_default()
}

/// Waits until every job in `ids` has stored at least two metric points.
async fn training(d: &Daemon, ids: &[&str]) {
    for id in ids {
        eventually(30, "a few epochs", || async {
            (common::api::stored_points(d, id) >= 2).then_some(())
        })
        .await;
    }
}

/// Keeps the daemon away for 36 s — longer than trainers used to wait for
/// it (~33 s) — checking meanwhile that every trainer went on training to
/// its last epoch (`last` in its log), then starts it again on the same
/// port and data directory.
async fn outage(d: &mut Daemon, stop: fn(&mut Daemon), trainers: &[(&str, &str)]) {
    let stopped = Instant::now();
    stop(d);
    for (id, last) in trainers {
        eventually(34, "training to go on while the daemon is away", || async {
            trainer_log(d, id).contains(last).then_some(())
        })
        .await;
    }
    let away = Duration::from_secs(36);
    tokio::time::sleep(away.saturating_sub(stopped.elapsed())).await;
    d.restart();
}

/// The epochs of a job's points that carry no step (one per epoch).
async fn epoch_points(d: &Daemon, id: &str) -> Vec<i64> {
    common::api::all_points(d, id)
        .await
        .iter()
        .filter(|p| p["step"].is_null())
        .map(|p| p["epoch"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn trainers_keep_training_through_a_long_graceful_restart() {
    let dir = trainers(&[("shell", SHELL_EPOCHS)]);
    let python = dir.path().join("python-example");
    std::fs::create_dir_all(&python).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        repo.join("trainers/python-example/train.py"),
        python.join("train.py"),
    )
    .unwrap();
    // The copy imports the Python package from next to it, as an installed one.
    std::os::unix::fs::symlink(
        repo.join("clients/python/src/platform_client"),
        python.join("platform_client"),
    )
    .unwrap();
    let mut d = daemon_with(dir.path(), &["--max-concurrent-jobs", "3"], &[]);
    let epochs = json!({"epochs": 20, "epoch_seconds": 0.4});
    let demo = create(&d, "demo", epochs.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let py = create(&d, "python-example", epochs).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sh = create(&d, "shell", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    training(&d, &[&demo, &py, &sh]).await;
    outage(
        &mut d,
        |d| assert_eq!(d.terminate(), Some(0)),
        &[
            (&demo, "epoch 20/20"),
            (&py, "epoch 20/20"),
            (&sh, "epoch 20/20"),
        ],
    )
    .await;
    for id in [&demo, &py, &sh] {
        let job = wait_status(&d, id, "completed", 60).await;
        assert_eq!(job["progress"], 1.0, "{job}");
        assert_eq!(
            epoch_points(&d, id).await,
            (1..=20).collect::<Vec<_>>(),
            "every epoch's point arrives once, in order"
        );
    }
    assert!(
        !dir.path().join("shell").join(".platform-report").exists(),
        "`platform report` cleans up its queue when the job is over"
    );
}

#[tokio::test]
async fn the_demo_trainer_keeps_training_through_a_long_kill_9() {
    let mut d = Daemon::start();
    let config = json!({"epochs": 20, "epoch_seconds": 0.4, "steps_per_epoch": 2});
    let id = create(&d, "demo", config).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    training(&d, &[&id]).await;
    outage(&mut d, Daemon::kill9, &[(&id, "epoch 20/20")]).await;
    let job = wait_status(&d, &id, "completed", 60).await;
    assert!(job["checkpoint_s3_uri"].is_string(), "{job}");
    assert_eq!(epoch_points(&d, &id).await, (1..=20).collect::<Vec<_>>());
    let steps: Vec<i64> = common::api::all_points(&d, &id)
        .await
        .iter()
        .filter_map(|p| p["step"].as_i64())
        .collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>(), "step batches too");
}

#[tokio::test]
async fn shell_trainers_find_platform_when_the_daemon_was_started_by_path() {
    let dir = trainers(&[(
        "shell",
        "echo \"bin=$PLATFORM_BIN\"\nplatform report --metric epoch=1 --metric loss=0.5 \
         && platform report --status completed --progress 1",
    )]);
    // The daemon runs as /path/to/platform with its directory not on PATH.
    let d = Daemon::start_with(Opts {
        envs: vec![
            (
                "TRAINER_SUBPROCESS_PATH".into(),
                dir.path().display().to_string(),
            ),
            ("PATH".into(), "/usr/bin:/bin".into()),
        ],
        ..Opts::default()
    });
    let id = create(&d, "shell", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_status(&d, &id, "completed", 30).await;
    assert_eq!(done["progress"], 1.0, "{done}");
    assert_eq!(epoch_points(&d, &id).await, vec![1]);
    assert!(
        logs(&d, &id, "")
            .await
            .contains(&format!("bin={}", common::bin().display())),
        "PLATFORM_BIN names the daemon's binary"
    );
}

#[tokio::test]
async fn platform_report_queues_on_disk_while_the_daemon_is_away() {
    // The job runs a stand-in trainer (which only hands over its token):
    // this test plays the trainer with `platform report`.
    let mut d = Daemon::capturing();
    let id = common::api::create(&d, &common::demo_job(Value::Null)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = common::api::running_with_token(&d, &id).await;
    let url = format!("{}/api/v1/training/jobs/{id}/callback", d.url);
    let workdir = tempfile::tempdir().unwrap();
    let report = |d: &Daemon, args: &[&str], timeout: &str| {
        let mut argv = vec!["report"];
        argv.extend_from_slice(args);
        d.cli_command(
            &argv,
            &[
                ("CALLBACK_URL", &url),
                ("CALLBACK_TOKEN", &token),
                ("JOB_ID", &id),
                ("PLATFORM_REPORT_TIMEOUT", timeout),
            ],
        )
        .current_dir(workdir.path())
        .output()
        .unwrap()
    };
    d.kill9();
    // Away: running reports are queued and the trainer goes on.
    for epoch in ["epoch=1", "epoch=2"] {
        let out = report(&d, &["--metric", epoch], "600");
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
        assert!(common::stderr(&out).contains("wait in"));
    }
    let queue = workdir.path().join(".platform-report").join(&id);
    assert!(queue.join("queue.json").exists());
    // A terminal report waits for the queue, but not past the timeout.
    let out = report(&d, &["--status", "completed"], "1");
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("PLATFORM_REPORT_TIMEOUT"),
        "{}",
        common::stderr(&out)
    );
    assert!(queue.join("queue.json").exists(), "nothing is lost");
    d.restart();
    // The retry delivers the backlog, the first `completed` included; the
    // job already being completed is then no news.
    let out = report(&d, &["--status", "completed", "--progress", "1"], "600");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let job = get(&d, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(epoch_points(&d, &id).await, vec![1, 2]);
    assert!(!queue.exists(), "removed once the job is over");
    // Told the job ended: exit 3, with or without a queue.
    let out = report(&d, &["--metric", "epoch=3"], "600");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
}

/// Issue 11.1: a launch that can never succeed (here: an environment the
/// kernel refuses, E2BIG, or one holding a NUL byte) fails its job with the
/// reason at once, and the jobs behind it launch.
#[tokio::test]
async fn a_job_that_can_never_launch_fails_and_the_queue_moves_on() {
    let dir = trainers(&[("ok", "echo fine")]);
    // One environment string over 128 KiB is more than Linux passes to a
    // program; TOML can carry a NUL that no environment can.
    std::fs::write(
        dir.path().join("t.toml"),
        format!(
            "[trainers.huge]\ncommand = [\"true\"]\nenv = {{ BIG = \"{}\" }}\n[trainers.nul]\ncommand = [\"true\"]\nenv = {{ BAD = \"a\\u0000b\" }}\n",
            "x".repeat(200 * 1024)
        ),
    )
    .unwrap();
    let d = daemon_with(
        dir.path(),
        &[
            "--trainers",
            &dir.path().join("t.toml").display().to_string(),
            "--max-concurrent-jobs",
            "1",
        ],
        &[],
    );
    let huge = create(&d, "huge", Value::Null).await;
    let nul = create(&d, "nul", Value::Null).await;
    let ok = create(&d, "ok", Value::Null).await;
    let ok = wait_status(&d, ok["id"].as_str().unwrap(), "completed", 30).await;
    assert_eq!(ok["exit_code"], 0);
    let huge = wait_status(&d, huge["id"].as_str().unwrap(), "failed", 5).await;
    let err = huge["error"].as_str().unwrap();
    assert!(
        err.contains("larger than the system allows (E2BIG)"),
        "{err}"
    );
    let nul = wait_status(&d, nul["id"].as_str().unwrap(), "failed", 5).await;
    let err = nul["error"].as_str().unwrap();
    assert!(err.contains("NUL byte"), "{err}");
}

/// Issue 11.3: a trainer that reports `completed` and keeps running holds
/// its slot until it is gone; after the kill grace it is stopped, its log
/// says why, and its job stays `completed` with the exit code recorded.
#[tokio::test]
async fn a_trainer_that_reports_its_end_but_keeps_running_keeps_its_slot_until_stopped() {
    let dir = trainers(&[
        (
            "sticky",
            "echo $$ > ../sticky.pid\n\
             platform report --status completed --progress 1 --message done || exit 1\n\
             echo reported\n\
             exec sleep 1000",
        ),
        // Fails if it ever runs beside the sticky trainer.
        (
            "next",
            "if kill -0 \"$(cat ../sticky.pid)\" 2>/dev/null; then echo overlap; exit 1; fi\necho alone",
        ),
    ]);
    let d = daemon_with(
        dir.path(),
        &["--max-concurrent-jobs", "1", "--kill-grace", "1"],
        &[],
    );
    let sticky = create(&d, "sticky", Value::Null).await;
    let next = create(&d, "next", Value::Null).await;
    let (a, b) = (sticky["id"].as_str().unwrap(), next["id"].as_str().unwrap());
    let pid = pid_in(&dir.path().join("sticky.pid")).await;
    let _guard = KillOnDrop(pid);
    wait_status(&d, a, "completed", 20).await;
    assert!(process_alive(pid), "the trainer is still running");
    assert_eq!(
        get(&d, b).await["status"],
        "pending",
        "its slot is still taken"
    );
    let b_job = eventually(30, "the next job to end", || async {
        let j = get(&d, b).await;
        (j["status"] == "completed" || j["status"] == "failed").then_some(j)
    })
    .await;
    let b_log = logs(&d, b, "").await;
    assert_eq!(b_job["status"], "completed", "it ran alone: {b_log}");
    assert_eq!(b_log, "alone\n");
    assert!(!process_alive(pid), "stopped after the kill grace");
    let a_job = wait_exit_code(&d, a).await;
    assert_eq!(a_job["status"], "completed", "it keeps its reported status");
    assert_eq!(a_job["message"], "done");
    assert_eq!(a_job["exit_code"], -15, "SIGTERM ended it");
    let log = logs(&d, a, "").await;
    assert!(
        log.contains("reported\nplatform: the trainer reported completed but did not exit within 1 s; stopping it"),
        "{log}"
    );
}

/// Issue 11.10: a process the trainer started in a session of its own
/// (`setsid`) is outside the trainer's process group, but still stopped on
/// cancel, and killed when a trainer exits leaving it behind.
#[tokio::test]
async fn descendants_that_left_the_process_group_are_stopped_too() {
    let escape = |file: &str| {
        format!("setsid sh -c 'echo $$ > {file}.tmp && mv {file}.tmp {file}; exec sleep 1000' &")
    };
    let dir = trainers(&[
        (
            "escaper",
            &format!("{}\necho started\nexec sleep 1000", escape("escaped.pid")),
        ),
        (
            "leaver",
            &format!(
                "{}\nwhile [ ! -f left.pid ]; do sleep 0.05; done\necho bye",
                escape("left.pid")
            ),
        ),
    ]);
    let d = daemon_with(
        dir.path(),
        &["--max-concurrent-jobs", "2", "--kill-grace", "1"],
        &[],
    );
    let job = create(&d, "escaper", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    let escaped = pid_in(&dir.path().join("escaper/escaped.pid")).await;
    let _guard = KillOnDrop(escaped);
    let trainer = runner_state(&d, &id)["trainer_pid"].as_i64().unwrap();
    let group = |pid: i64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(2)?
                    .parse::<i64>()
                    .ok()
            })
    };
    assert!(process_alive(escaped));
    assert_ne!(group(escaped), Some(trainer), "it left the trainer's group");
    assert_eq!(common::api::cancel(&d, &id).await.0, 204);
    eventually(10, "the escaped process to be gone", || async {
        (!process_alive(escaped)).then_some(())
    })
    .await;
    let j = wait_exit_code(&d, &id).await;
    assert_eq!(j["status"], "cancelled");
    assert_eq!(j["exit_code"], -15);

    let job = create(&d, "leaver", Value::Null).await;
    let id = job["id"].as_str().unwrap().to_string();
    let left = pid_in(&dir.path().join("leaver/left.pid")).await;
    let _guard = KillOnDrop(left);
    let j = wait_exit_code(&d, &id).await;
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_i64()),
        (Some("completed"), Some(0))
    );
    eventually(
        10,
        "the process the trainer left behind to be gone",
        || async { (!process_alive(left)).then_some(()) },
    )
    .await;
}

/// Issue 11.10: a re-adopted trainer's real exit code is recorded, whether
/// it ended while the daemon was down or after the restart.
#[tokio::test]
async fn readopted_trainers_keep_their_exit_codes() {
    let dir = trainers(&[
        ("early", "echo up; sleep 1; exit 3"),
        (
            "late",
            "echo up; while [ ! -f ../go ]; do sleep 0.05; done; exit 4",
        ),
    ]);
    let mut d = daemon_with(dir.path(), &["--max-concurrent-jobs", "2"], &[]);
    let early = create(&d, "early", Value::Null).await;
    let late = create(&d, "late", Value::Null).await;
    let (early, late) = (
        early["id"].as_str().unwrap().to_string(),
        late["id"].as_str().unwrap().to_string(),
    );
    wait_status(&d, &early, "running", 20).await;
    wait_status(&d, &late, "running", 20).await;
    let early_trainer = runner_state(&d, &early)["trainer_pid"].as_i64().unwrap();
    d.kill9();
    eventually(
        10,
        "the early trainer to end while the daemon is down",
        || async { (!process_alive(early_trainer)).then_some(()) },
    )
    .await;
    d.restart();
    std::fs::write(dir.path().join("go"), "").unwrap();
    for (id, code) in [(&early, 3), (&late, 4)] {
        let j = wait_status(&d, id, "failed", 20).await;
        assert_eq!(j["exit_code"], code, "{j}");
        let err = j["error"].as_str().unwrap();
        assert!(
            err.starts_with(&format!("trainer exited with code {code}")),
            "{err}"
        );
    }
}
