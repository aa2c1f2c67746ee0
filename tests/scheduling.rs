//! Scheduling policy (issue 14), black-box: the real daemon launching real
//! stand-in trainer processes (shell one-liners from a trainers file).
//! Queues and their limits, priorities, pause/resume, retries by exit
//! code, time limits, stale runs, dependencies, `job wait` and a restart
//! in the middle of a retry backoff.

mod common;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use common::api::{self, JOBS};
use common::{eventually, Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Stand-in trainers: each appends `$JOB_ID $ATTEMPT` to `$OUT/started`
/// when it starts.
fn trainers(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let note = r#"echo "$JOB_ID $ATTEMPT" >> "$OUT/started""#;
    let entry = |name: &str, tail: &str| {
        format!(
            "[trainers.{name}]\ncommand = [\"sh\", \"-c\", '{note}; {tail}']\nenv = {{ OUT = {:?} }}\n",
            out.display().to_string()
        )
    };
    let text = [
        entry("ok", "exit 0"),
        entry("fail", "exit 1"),
        entry("three", "exit 3"),
        // Never calls back, never exits on its own.
        entry("sleeper", "exec sleep 600"),
        // Only says it is alive, with `platform report --heartbeat`.
        entry(
            "beating",
            r#"while true; do "$PLATFORM_BIN" report --heartbeat; sleep 0.2; done"#,
        ),
    ]
    .join("\n");
    let file = dir.join("trainers.toml");
    std::fs::write(&file, text).unwrap();
    file
}

struct Setup {
    d: Daemon,
    out: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A daemon with the stand-in trainers, a short kill grace and `queues`.
fn daemon(queues: Value, extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let file = trainers(tmp.path());
    let mut args: Vec<String> = vec![
        "--trainers".into(),
        file.display().to_string(),
        "--kill-grace".into(),
        "0.5".into(),
        "--queues".into(),
        queues.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let d = Daemon::start_with(Opts {
        args,
        ..Default::default()
    });
    Setup {
        d,
        out: tmp.path().join("out"),
        _tmp: tmp,
    }
}

fn body(framework: &str, extra: Value) -> Value {
    let mut b = json!({
        "user_id": "alice", "model_name": "m", "framework": framework,
        "dataset_s3_uri": "s3://bucket/datasets/d/",
    });
    if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    b
}

async fn create(d: &Daemon, framework: &str, extra: Value) -> String {
    api::create(d, &body(framework, extra)).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits (up to `secs`) for job `id` to reach a terminal status.
async fn ended(d: &Daemon, id: &str, secs: u64) -> Value {
    eventually(secs, "the job to end", || async {
        let j = api::job(d, id).await;
        let s = j["status"].as_str().unwrap_or("").to_string();
        ["completed", "failed", "cancelled"]
            .contains(&s.as_str())
            .then_some(j)
    })
    .await
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .parse()
        .unwrap()
}

fn started_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("started"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn queue(d: &Daemon, name: &str) -> Value {
    let (status, all) = api::get(d, "/api/v1/queues").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    all.as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {name} in {all}"))
}

#[tokio::test]
async fn queue_and_per_user_limits_hold_under_fifty_concurrent_submissions() {
    let s = daemon(
        json!({"gpu": {"max_concurrent": 3, "max_per_user": 2}}),
        &[],
    );
    let d = &s.d;
    let mut creates = Vec::new();
    for i in 0..50 {
        let user = ["alice", "bob", "carol"][i % 3];
        let b = body("sleeper", json!({"queue": "gpu", "user_id": user}));
        let (http, url) = (d.http(), d.at(JOBS));
        creates.push(tokio::spawn(async move {
            http.post(url).json(&b).send().await.unwrap().status()
        }));
    }
    for c in creates {
        assert_eq!(c.await.unwrap(), StatusCode::CREATED);
    }
    // The limits hold at every look while the queue fills its slots.
    let mut seen_full = false;
    for _ in 0..40 {
        let (_, jobs) = api::get(d, &format!("{JOBS}?queue=gpu&status=running&limit=100")).await;
        let running = jobs.as_array().unwrap();
        assert!(running.len() <= 3, "queue limit: {} running", running.len());
        for user in ["alice", "bob", "carol"] {
            let n = running.iter().filter(|j| j["user_id"] == user).count();
            assert!(n <= 2, "per-user limit: {user} has {n} running");
        }
        seen_full |= running.len() == 3;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen_full, "the queue used its three slots");
    let q = queue(d, "gpu").await;
    assert_eq!(
        (q["running"].as_u64(), q["pending"].as_u64()),
        (Some(3), Some(47))
    );
    assert_eq!(q["max_per_user"], 2);
    let prom = d.get_text("/metrics").await;
    assert!(
        prom.contains(r#"platform_queue_jobs{queue="gpu",status="running"} 3"#)
            && prom.contains(r#"platform_queue_jobs{queue="gpu",status="pending"} 47"#),
        "{prom}"
    );
    // An unknown queue is refused, naming the known ones.
    let (status, err) = api::post(d, JOBS, &body("ok", json!({"queue": "tpu"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail = err["detail"].as_str().unwrap();
    assert!(
        detail.contains("default") && detail.contains("gpu"),
        "{detail}"
    );
}

#[tokio::test]
async fn the_highest_priority_launches_first_and_fifo_among_equals() {
    let s = daemon(json!({}), &["--max-concurrent-jobs", "1"]);
    let d = &s.d;
    let (status, _) = api::post(d, "/api/v1/queues/default/pause", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let low = create(d, "ok", json!({"priority": 10})).await;
    let mid1 = create(d, "ok", json!({})).await;
    let high = create(d, "ok", json!({"priority": 90})).await;
    let mid2 = create(d, "ok", json!({})).await;
    // A pending job's priority can change; a bad one is refused.
    let (status, job) = common::api::parts(
        d.http()
            .patch(d.at(&api::job_path(&low, "")))
            .json(&json!({"priority": 95}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, job["priority"].as_u64()),
        (StatusCode::OK, Some(95))
    );
    let (status, _) = api::post(d, "/api/v1/queues/default/resume", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for id in [&low, &mid1, &high, &mid2] {
        assert_eq!(ended(d, id, 30).await["status"], "completed");
    }
    let order: Vec<String> = started_lines(&s.out)
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(order, [low.clone(), high, mid1, mid2]);
    // Only a pending job's priority changes.
    let (status, err) = common::api::parts(
        d.http()
            .patch(d.at(&api::job_path(&low, "")))
            .json(&json!({"priority": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
}

#[tokio::test]
async fn a_paused_queue_launches_nothing_even_after_a_restart_until_resumed() {
    let mut s = daemon(json!({"gpu": {"max_concurrent": 2}}), &[]);
    let (status, q) = api::post(&s.d, "/api/v1/queues/gpu/pause", &json!({})).await;
    assert_eq!(
        (status, q["paused"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, _) = api::post(&s.d, "/api/v1/queues/nope/pause", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let id = create(&s.d, "ok", json!({"queue": "gpu"})).await;
    // Another queue is not held up.
    let other = create(&s.d, "ok", json!({})).await;
    assert_eq!(ended(&s.d, &other, 30).await["status"], "completed");
    s.d.restart();
    assert_eq!(queue(&s.d, "gpu").await["paused"], true);
    assert_eq!(api::job(&s.d, &id).await["status"], "pending");
    let out = s.d.cli(&["queue", "resume", "gpu"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(ended(&s.d, &id, 30).await["status"], "completed");
    let list = s.d.cli(&["queue", "list"]);
    assert!(
        common::stdout(&list).contains("gpu"),
        "{}",
        common::stdout(&list)
    );
}

fn retry_on_3(initial: f64) -> Value {
    json!({"retry": {"max_attempts": 3, "backoff": {"initial": initial, "factor": 2},
                     "rules": [{"exit_codes": [3], "action": "retry"}]}})
}

#[tokio::test]
async fn exit_3_is_retried_twice_with_backoff_then_fails_and_exit_1_is_not_retried() {
    let s = daemon(json!({}), &["--max-concurrent-jobs", "0"]);
    let d = &s.d;
    let three = create(d, "three", retry_on_3(0.3)).await;
    let one = create(d, "fail", retry_on_3(0.3)).await;
    let j = ended(d, &three, 30).await;
    assert_eq!(j["status"], "failed");
    assert_eq!(j["attempt"], 3);
    let attempts = j["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{j}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["exit_code"], 3);
        assert!(a["ended_at"].is_string());
    }
    // Backoff: 0.3 s, then 0.6 s between attempts.
    for (i, min) in [(1, 0.3), (2, 0.6)] {
        let gap = ts(&attempts[i]["started_at"]) - ts(&attempts[i - 1]["ended_at"]);
        assert!(
            gap.num_milliseconds() as f64 >= min * 1000.0,
            "gap {gap} before attempt {}",
            i + 1
        );
    }
    assert!(j["error"].as_str().unwrap().contains("3 of 3"), "{j}");
    // The trainer saw its attempt number.
    let mine: Vec<String> = started_lines(&s.out)
        .into_iter()
        .filter(|l| l.starts_with(&three))
        .collect();
    assert_eq!(mine, [1, 2, 3].map(|n| format!("{three} {n}")));
    let j = ended(d, &one, 30).await;
    assert_eq!(
        (
            j["status"].as_str(),
            j["attempts"].as_array().unwrap().len()
        ),
        (Some("failed"), 1)
    );
    // The list carries each job's own attempts (read for the page at once).
    let (_, list) = api::get(d, api::JOBS).await;
    let counts: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["id"].clone(), j["attempts"].as_array().unwrap().len()))
        .collect();
    assert_eq!(counts, [(json!(one), 1), (json!(three), 3)], "{list}");
}

#[tokio::test]
async fn a_cancel_during_backoff_ends_the_job() {
    let s = daemon(json!({}), &["--max-concurrent-jobs", "0"]);
    let d = &s.d;
    let id = create(d, "three", retry_on_3(60.0)).await;
    let waiting = eventually(30, "the first retry's backoff", || async {
        let j = api::job(d, &id).await;
        (j["status"] == "pending" && j["attempt"] == 1).then_some(j)
    })
    .await;
    assert!(waiting["next_attempt_at"].is_string(), "{waiting}");
    assert!(
        waiting["message"].as_str().unwrap().contains("retrying"),
        "{waiting}"
    );
    let (status, _) = api::cancel(d, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let j = api::job(d, &id).await;
    assert_eq!(
        (j["status"].as_str(), j["attempt"].as_u64()),
        (Some("cancelled"), Some(1))
    );
}

#[tokio::test]
async fn max_duration_and_max_pending_fail_the_job_near_the_limit() {
    let s = daemon(json!({"held": {}}), &["--max-concurrent-jobs", "0"]);
    let d = &s.d;
    let id = create(d, "sleeper", json!({"max_duration": 1.0})).await;
    let j = ended(d, &id, 30).await;
    assert_eq!(j["status"], "failed");
    assert_eq!(j["termination_reason"], "max-duration");
    let ran = ts(&j["completed_at"]) - ts(&j["attempts"][0]["started_at"]);
    assert!(ran.num_milliseconds() >= 1000, "stopped early: {ran}");
    assert!(ran.num_milliseconds() < 3500, "stopped late: {ran}");
    // Queue timeout: a paused queue never launches it.
    api::post(d, "/api/v1/queues/held/pause", &json!({})).await;
    let id = create(d, "ok", json!({"queue": "held", "max_pending": 0.5})).await;
    let j = ended(d, &id, 30).await;
    assert_eq!(
        (j["status"].as_str(), j["termination_reason"].as_str()),
        (Some("failed"), Some("queue-timeout"))
    );
    let waited = ts(&j["completed_at"]) - ts(&j["created_at"]);
    assert!(
        waited.num_milliseconds() >= 500 && waited.num_milliseconds() < 2500,
        "{waited}"
    );
}

#[tokio::test]
async fn a_silent_trainer_is_marked_stalled_then_fails_stale() {
    let s = daemon(json!({}), &["--max-concurrent-jobs", "0"]);
    let d = &s.d;
    let id = create(
        d,
        "sleeper",
        json!({"heartbeat_timeout": 0.5, "stale_after": 1.0}),
    )
    .await;
    let stalled = eventually(30, "the stalled condition", || async {
        let j = api::job(d, &id).await;
        j["stalled_at"].is_string().then_some(j)
    })
    .await;
    assert_eq!(stalled["status"], "running");
    let j = ended(d, &id, 30).await;
    assert_eq!(
        (j["status"].as_str(), j["termination_reason"].as_str()),
        (Some("failed"), Some("stale"))
    );
    assert_eq!(j["attempts"][0]["reason"], "stale");
}

#[tokio::test]
async fn a_heartbeat_clears_the_stalled_condition() {
    // The capturing stand-in trainer never calls back.
    let d = Daemon::capturing();
    let b = json!({"user_id": "a", "model_name": "m", "framework": "demo",
                   "dataset_s3_uri": "s3://b/d/", "heartbeat_timeout": 0.5});
    let id = api::create(&d, &b).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = eventually(30, "the token", || async {
        std::fs::read_to_string(d.tokens.as_ref().unwrap().join(&id)).ok()
    })
    .await;
    eventually(30, "stalled", || async {
        api::job(&d, &id).await["stalled_at"]
            .is_string()
            .then_some(())
    })
    .await;
    let resp = d
        .http()
        .post(d.at(&api::job_path(&id, "/heartbeat")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let j = api::job(&d, &id).await;
    assert!(
        j["stalled_at"].is_null() && j["last_heartbeat_at"].is_string(),
        "{j}"
    );
    // Without the job's token the heartbeat is refused.
    let resp = d
        .http()
        .post(d.at(&api::job_path(&id, "/heartbeat")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn after_chains_and_a_failed_dependency_fails_its_dependents() {
    let s = daemon(json!({}), &["--max-concurrent-jobs", "0"]);
    let d = &s.d;
    let a = create(d, "ok", json!({})).await;
    let b = create(d, "ok", json!({"after": [a]})).await;
    let c = create(d, "ok", json!({"after": [b]})).await;
    let jc = ended(d, &c, 30).await;
    let jb = api::job(d, &b).await;
    let ja = api::job(d, &a).await;
    assert_eq!(jc["status"], "completed");
    assert!(ts(&jb["started_at"]) >= ts(&ja["completed_at"]));
    assert!(ts(&jc["started_at"]) >= ts(&jb["completed_at"]));
    let bad = create(d, "fail", json!({})).await;
    let dep = create(d, "ok", json!({"after": [bad]})).await;
    let j = ended(d, &dep, 30).await;
    assert_eq!(
        (j["status"].as_str(), j["termination_reason"].as_str()),
        (Some("failed"), Some("dependency-failed"))
    );
    assert!(j["error"].as_str().unwrap().contains(&bad), "{j}");
    // Dependencies must exist.
    let (status, _) = api::post(
        d,
        JOBS,
        &body("ok", json!({"after": [uuid::Uuid::now_v7()]})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn job_wait_exits_0_only_when_all_completed_and_124_on_timeout() {
    let s = daemon(json!({}), &["--max-concurrent-jobs", "0"]);
    let d = &s.d;
    let ok = create(d, "ok", json!({})).await;
    let bad = create(d, "fail", json!({})).await;
    let slow = create(d, "sleeper", json!({})).await;
    let code = |args: &[&str]| d.cli(args).status.code();
    assert_eq!(code(&["job", "wait", &ok]), Some(0));
    assert_eq!(code(&["job", "wait", &ok, &bad]), Some(1));
    assert_eq!(code(&["job", "wait", &slow, "--timeout", "0.5"]), Some(124));
    // Resubmitting makes a new job from the old spec.
    let out = d.cli(&["job", "resubmit", &ok, "--set", "priority=70", "-o", "json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let new: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_ne!(new["id"].as_str(), Some(ok.as_str()));
    assert_eq!(
        (new["framework"].as_str(), new["priority"].as_u64()),
        (Some("ok"), Some(70))
    );
    api::cancel(d, &slow).await;
}

#[tokio::test]
async fn a_daemon_killed_during_a_retry_backoff_resumes_it_after_restart() {
    let mut s = daemon(json!({}), &["--max-concurrent-jobs", "0"]);
    let id = create(&s.d, "three", retry_on_3(2.0)).await;
    eventually(30, "the first retry's backoff", || async {
        let j = api::job(&s.d, &id).await;
        (j["status"] == "pending" && j["attempt"] == 1).then_some(())
    })
    .await;
    s.d.restart();
    let j = ended(&s.d, &id, 60).await;
    assert_eq!(
        (j["status"].as_str(), j["attempt"].as_u64()),
        (Some("failed"), Some(3))
    );
    let attempts = j["attempts"].as_array().unwrap();
    // The backoff was kept across the restart, not restarted from zero
    // nor skipped.
    let gap = ts(&attempts[1]["started_at"]) - ts(&attempts[0]["ended_at"]);
    assert!(gap.num_milliseconds() >= 2000, "{gap}");
}

#[tokio::test]
async fn old_clients_get_defaults_and_bad_scheduling_fields_are_refused() {
    let d = Daemon::held();
    let j = api::create(&d, &api::job_body("alice")).await;
    assert_eq!(
        (
            j["queue"].as_str(),
            j["priority"].as_u64(),
            j["attempt"].as_u64()
        ),
        (Some("default"), Some(50), Some(0))
    );
    for (field, bad) in [
        ("priority", json!(101)),
        ("max_duration", json!(0)),
        ("queue", json!("Bad Name")),
        ("retry", json!({"max_attempts": 0})),
        ("retry", json!({"backoff": {"factor": 0.5}})),
    ] {
        let mut b = api::job_body("alice");
        b[field] = bad.clone();
        let (status, err) = api::post(&d, JOBS, &b).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={bad}: {err}"
        );
    }
}

#[tokio::test]
async fn platform_report_heartbeats_keep_a_quiet_trainer_from_stalling() {
    let s = daemon(json!({}), &["--max-concurrent-jobs", "0"]);
    let d = &s.d;
    let limits = json!({"heartbeat_timeout": 1.0});
    let beating = create(d, "beating", limits.clone()).await;
    let silent = create(d, "sleeper", limits).await;
    let stalled = eventually(30, "the silent job to stall", || async {
        let j = api::job(d, &silent).await;
        j["stalled_at"].is_string().then_some(j)
    })
    .await;
    // By then the beating job has been running at least as long.
    let j = api::job(d, &beating).await;
    assert_eq!(j["status"], "running");
    assert!(j["stalled_at"].is_null(), "{j}");
    assert!(j["last_heartbeat_at"].is_string(), "{j}");
    assert!(ts(&j["attempts"][0]["started_at"]) <= ts(&stalled["stalled_at"]));
    api::cancel(d, &beating).await;
    api::cancel(d, &silent).await;
}
