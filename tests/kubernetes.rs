//! The Kubernetes runner end to end: the REAL daemon binary with
//! `TRAINING_MODE=kubernetes`, talking through a generated kubeconfig to
//! the in-process FAKE API server of `common/fake_kube.rs` (no real API
//! server can run here; that module says what the fake does not cover).
//! The fake's kubelet really runs the demo trainer's container command as
//! a local process, so callbacks, metrics and logs travel the real paths.
//!
//! Also here: the golden manifest (`tests/golden/job-gpu.yaml`; regenerate
//! with `UPDATE_GOLDEN=1 cargo test --test kubernetes`) and the offline
//! check of every manifest under `deploy/kubernetes/` against the
//! k8s-openapi types, reporting keys the types do not know (typos).

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{api, eventually, Daemon, Opts};
use fake_kube::{FakeKube, Kind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A daemon in kubernetes mode against `fake`, plus its temp dir.
fn kube_daemon(fake: &FakeKube, envs: &[(&str, &str)]) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (kube_daemon_in(fake, dir.path(), envs), dir)
}

/// A daemon in kubernetes mode against `fake`, keeping its data in `dir`.
fn kube_daemon_in(fake: &FakeKube, dir: &Path, envs: &[(&str, &str)]) -> Daemon {
    let kubeconfig = fake.kubeconfig(dir);
    let mut e: Vec<(String, String)> = vec![
        ("TRAINING_MODE".into(), "kubernetes".into()),
        ("KUBE_CONFIG_PATH".into(), kubeconfig.display().to_string()),
        ("KUBE_NAMESPACE".into(), fake.ns.clone()),
    ];
    e.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Daemon::start_with(Opts {
        envs: e,
        data_dir: Some(dir.join("data")),
        ..Opts::default()
    })
}

async fn create(d: &Daemon, config: Value) -> Value {
    api::create(d, &common::demo_job(config)).await
}

async fn get(d: &Daemon, id: &str) -> Value {
    api::job(d, id).await
}

async fn wait_status(d: &Daemon, id: &str, status: &str) -> Value {
    eventually(30, &format!("job {id} to be {status}"), || async {
        let j = get(d, id).await;
        (j["status"] == status).then_some(j)
    })
    .await
}

fn job_name(id: &str) -> String {
    format!("platform-{id}")
}

/// Creates a demo job and waits until the runner created its Job.
async fn launched(d: &Daemon, fake: &FakeKube, config: Value) -> (String, String) {
    let job = create(d, config).await;
    let id = job["id"].as_str().unwrap().to_string();
    let name = job_name(&id);
    eventually(30, "the Kubernetes Job to be created", || async {
        fake.get(Kind::Job, &name).map(|_| ())
    })
    .await;
    (id, name)
}

fn assert_clean(fake: &FakeKube) {
    assert!(
        fake.unhandled().is_empty(),
        "the runner made calls the fake does not implement: {:?}",
        fake.unhandled()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_job_runs_pending_running_completed_through_callbacks_with_logs() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let job = create(&d, json!({"epochs": 3, "epoch_seconds": 0.2})).await;
    assert_eq!(job["status"], "pending");
    let id = job["id"].as_str().unwrap().to_string();
    let name = job_name(&id);

    // Created Job → running (before any pod exists).
    let j = wait_status(&d, &id, "running").await;
    assert_eq!(j["runner"], "kubernetes");
    assert!(j["started_at"].is_string());
    let kjob = fake.get(Kind::Job, &name).unwrap();
    let labels = &kjob["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "platform");
    assert_eq!(labels["platform/job-id"], id.as_str());
    assert_eq!(labels["platform/framework"], "demo");
    assert_eq!(kjob["metadata"]["annotations"]["platform/user"], "alice");
    assert_eq!(kjob["metadata"]["annotations"]["platform/model"], "yolo11n");
    let spec = &kjob["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["ttlSecondsAfterFinished"], 86400);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("platform:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        container["command"],
        json!(["/usr/local/bin/platform", "demo-train"])
    );
    // The token travels through the Secret, never as a plain value.
    let env = container["env"].as_array().unwrap();
    let token = env.iter().find(|e| e["name"] == "CALLBACK_TOKEN").unwrap();
    assert!(token["value"].is_null());
    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], name.as_str());
    assert!(env
        .iter()
        .all(|e| e["name"] != "PATH" && e["name"] != "HOME"));
    let secret = fake.get(Kind::Secret, &name).unwrap();
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Job");
    assert_eq!(owner["uid"], kjob["metadata"]["uid"]);
    let data = fake.secret_data(&name).unwrap();
    assert_eq!(data["CALLBACK_TOKEN"].len(), 64);

    // The kubelet runs the demo trainer; it reports over the real callbacks.
    let pod = fake.run_pod(&name, &common::bin());
    let done = wait_status(&d, &id, "completed").await;
    assert_eq!(done["progress"], 1.0);
    eventually(30, "the exit code from the pod", || async {
        let j = get(&d, &id).await;
        (j["exit_code"] == 0).then_some(())
    })
    .await;
    assert_eq!(api::all_points(&d, &id).await.len(), 3);

    // Logs come from the pod log API, through the CLI too.
    let out = d.cli(&["job", "logs", &id]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains("epoch 3/3"), "{text}");
    assert!(text.contains("done"), "{text}");
    let tail = d.cli(&["job", "logs", &id, "--tail", "1"]);
    assert_eq!(common::stdout(&tail).trim(), "done");
    assert!(fake.requests().iter().any(|r| r.path
        == format!("/api/v1/namespaces/platform/pods/{pod}/log")
        && r.query.get("container").map(String::as_str) == Some("trainer")));
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_until_the_pod_ends() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let (id, name) = launched(&d, &fake, json!({"epochs": 4, "epoch_seconds": 0.3})).await;
    // Following before the pod exists waits for it.
    let url = d.at(&format!("/api/v1/training/jobs/{id}/logs?follow=true"));
    let follower =
        tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.run_pod(&name, &common::bin());
    let text = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the follow stream ends with the pod")
        .unwrap();
    assert!(
        text.contains("epoch 1/4") && text.contains("epoch 4/4"),
        "{text}"
    );
    wait_status(&d, &id, "completed").await;
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed_pod_fails_the_job_with_that_reason() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let (id, name) = launched(
        &d,
        &fake,
        json!({"epochs": 100, "epoch_seconds": 0.5, "resources": {"memory": "64Mi", "cpu": 1}}),
    )
    .await;
    let kjob = fake.get(Kind::Job, &name).unwrap();
    let res = &kjob["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(res["limits"]["memory"], "64Mi");
    assert_eq!(res["requests"]["cpu"], "1");
    fake.run_pod(&name, &common::bin());
    eventually(30, "the trainer to report progress", || async {
        let j = get(&d, &id).await;
        (j["message"].as_str().is_some_and(|m| m.contains("epoch"))).then_some(())
    })
    .await;
    fake.oom_kill(&name);
    let j = wait_status(&d, &id, "failed").await;
    let err = j["error"].as_str().unwrap();
    assert!(err.contains("OOMKilled"), "{err}");
    assert!(err.contains("64Mi"), "{err}");
    assert!(err.contains("BackoffLimitExceeded"), "{err}");
    assert_eq!(j["exit_code"], 137);
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_why_exit_code_and_deadline() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    // A trainer exiting non-zero: its code and last log lines.
    let (id, name) = launched(
        &d,
        &fake,
        json!({"epochs": 5, "epoch_seconds": 0.1, "fail_at_epoch": 2}),
    )
    .await;
    fake.run_pod(&name, &common::bin());
    let j = wait_status(&d, &id, "failed").await;
    let err = j["error"].as_str().unwrap();
    assert!(err.starts_with("the trainer exited with code 1"), "{err}");
    assert!(err.contains("simulated failure at epoch 2"), "{err}");
    assert_eq!(j["exit_code"], 1);
    // A timeout: activeDeadlineSeconds, then DeadlineExceeded in words.
    let (id, name) = launched(&d, &fake, json!({"timeout_seconds": 60})).await;
    assert_eq!(
        fake.get(Kind::Job, &name).unwrap()["spec"]["activeDeadlineSeconds"],
        60
    );
    fake.pod_running(&name);
    fake.job_failed(
        &name,
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    );
    let j = wait_status(&d, &id, "failed").await;
    let err = j["error"].as_str().unwrap();
    assert!(
        err.contains("time limit of 60s") && err.contains("DeadlineExceeded"),
        "{err}"
    );
    // A bad per-job override fails the job at launch, naming the key.
    let job = create(&d, json!({"resources": {"gpu": "lots"}})).await;
    let j = wait_status(&d, job["id"].as_str().unwrap(), "failed").await;
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("config.resources.gpu"),
        "{j}"
    );
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_the_job_and_its_secret_in_the_background() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let (id, name) = launched(&d, &fake, json!({"epochs": 100, "epoch_seconds": 1})).await;
    let pod = fake.run_pod(&name, &common::bin());
    wait_status(&d, &id, "running").await;
    let uid = fake.get(Kind::Job, &name).unwrap()["metadata"]["uid"].clone();
    let out = d.cli(&["job", "cancel", &id[..8]]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    // Cancelled at once, whatever the cluster does.
    assert_eq!(get(&d, &id).await["status"], "cancelled");
    eventually(30, "the Job, its Secret and its pod to be gone", || async {
        (fake.get(Kind::Job, &name).is_none()
            && fake.get(Kind::Secret, &name).is_none()
            && fake.get(Kind::Pod, &pod).is_none())
        .then_some(())
    })
    .await;
    let deletes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(
        deletes[0].path,
        format!("/apis/batch/v1/namespaces/platform/jobs/{name}")
    );
    assert_eq!(deletes[0].body["propagationPolicy"], "Background");
    assert_eq!(deletes[0].body["preconditions"]["uid"], uid);
    // The trainer's late callbacks are refused; the job stays cancelled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let j = get(&d, &id).await;
    assert_eq!(j["status"], "cancelled");
    assert!(j["error"].is_null(), "{j}");
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_readopts_running_jobs_and_settles_what_changed_meanwhile() {
    let fake = FakeKube::start();
    let (mut d, _dir) = kube_daemon(&fake, &[]);
    let (a, a_name) = launched(&d, &fake, json!({})).await;
    let (b, b_name) = launched(&d, &fake, json!({})).await;
    let (c, c_name) = launched(&d, &fake, json!({})).await;
    for n in [&a_name, &b_name, &c_name] {
        fake.pod_running(n);
    }
    for id in [&a, &b, &c] {
        wait_status(&d, id, "running").await;
    }
    d.kill9();
    // While the daemon is down: A completes, C is deleted, B keeps running.
    fake.pod_terminated(&a_name, 0, "Completed");
    fake.delete_job(&c_name);
    let calls_before = fake.requests().len();
    d.restart();
    let ja = wait_status(&d, &a, "completed").await;
    assert_eq!(ja["exit_code"], 0);
    let jc = wait_status(&d, &c, "failed").await;
    // Re-adoption finds the Job gone, or the resumed watch replays its
    // deletion first; either way the error says it vanished.
    let why = jc["error"].as_str().unwrap();
    assert!(
        why.contains("no longer exists") || why.contains("was deleted from outside the platform"),
        "{jc}"
    );
    assert_eq!(get(&d, &b).await["status"], "running");
    eventually(10, "the re-adoption to be logged", || async {
        d.log_text()
            .contains("re-adopted a running Kubernetes Job")
            .then_some(())
    })
    .await;
    // B is watched again: its OOM kill is noticed.
    fake.pod_terminated(&b_name, 137, "OOMKilled");
    let jb = wait_status(&d, &b, "failed").await;
    assert!(jb["error"].as_str().unwrap().contains("OOMKilled"), "{jb}");
    // No Job was created twice or deleted by the new daemon.
    assert!(fake.requests()[calls_before..]
        .iter()
        .all(|r| r.method == "GET" || r.path.ends_with("selfsubjectaccessreviews")));
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_interrupted_after_creating_the_job_adopts_it() {
    // A daemon that stopped between creating a Job and recording the launch
    // finds the Job already there (409) when it launches again.
    let fake = FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let mut held = kube_daemon_in(&fake, dir.path(), &[("HOLD_JOBS", "1")]);
    let ours = create(&held, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let squatted = create(&held, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    held.kill9();
    let job = |id: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": job_name(id), "labels": {
                   "app.kubernetes.io/managed-by": "platform", "platform/job-id": id}},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "trainer", "image": "busybox"}]}}}})
    };
    // Ours, already finished; and one with our name but another job's label.
    fake.create_foreign(Kind::Job, job(&ours));
    fake.pod_terminated(&job_name(&ours), 0, "Completed");
    fake.create_foreign(
        Kind::Job,
        job("00000000-0000-7000-8000-000000000000")
            .as_object()
            .cloned()
            .map(|mut o| {
                o["metadata"]["name"] = json!(job_name(&squatted));
                Value::Object(o)
            })
            .unwrap(),
    );
    let d = kube_daemon_in(&fake, dir.path(), &[]);
    let j = wait_status(&d, &ours, "completed").await;
    assert_eq!(j["runner"], "kubernetes");
    assert_eq!(j["exit_code"], 0);
    let uid = fake.get(Kind::Job, &job_name(&ours)).unwrap()["metadata"]["uid"].clone();
    let secret = fake.get(Kind::Secret, &job_name(&ours)).unwrap();
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], uid);
    let j = wait_status(&d, &squatted, "failed").await;
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("was not created for this job"),
        "{j}"
    );
    assert!(
        fake.get(Kind::Job, &job_name(&squatted)).is_some(),
        "left alone"
    );
    assert!(fake.requests().iter().all(|r| r.method != "DELETE"));
    assert_clean(&fake);
}

/// A launch that adopts an earlier launch's Job finds its Secret too: the
/// trainer started with that Secret's token, so the job takes it over
/// (a leader killed between creating the Job and recording the launch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_jobs_trainer_keeps_the_token_it_started_with() {
    let fake = FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let mut held = kube_daemon_in(&fake, dir.path(), &[("HOLD_JOBS", "1")]);
    let id = create(&held, json!({"epochs": 100, "epoch_seconds": 1})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    held.kill9();
    let name = job_name(&id);
    fake.create_foreign(
        Kind::Job,
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "labels": {
                   "app.kubernetes.io/managed-by": "platform", "platform/job-id": id}},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "trainer", "image": "busybox"}]}}}}),
    );
    // base64 of the earlier launch's token.
    let earlier = "earlier-launch-token-0123456789abcdef";
    fake.create_foreign(
        Kind::Secret,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
               "data": {"CALLBACK_TOKEN": "ZWFybGllci1sYXVuY2gtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg=="}}),
    );
    let d = kube_daemon_in(&fake, dir.path(), &[]);
    eventually(30, "the adopting launch to be recorded", || async {
        (get(&d, &id).await["runner"] == "kubernetes").then_some(())
    })
    .await;
    let body = json!({"status": "running", "progress": 0.2});
    let (status, ack) = api::callback(&d, &id, Some(earlier), &body).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{ack}");
    assert_eq!(get(&d, &id).await["progress"], 0.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_jobs_are_never_touched() {
    let fake = FakeKube::start();
    let job = |name: &str, labels: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "labels": labels},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "x", "image": "busybox"}]}}}})
    };
    fake.create_foreign(Kind::Job, job("someone-elses", json!({"app": "etl"})));
    // Carries the platform's labels but belongs to no job of this daemon.
    let stranger = "platform-00000000-0000-7000-8000-000000000000";
    fake.create_foreign(
        Kind::Job,
        job(
            stranger,
            json!({"app.kubernetes.io/managed-by": "platform",
                   "platform/job-id": "00000000-0000-7000-8000-000000000000"}),
        ),
    );
    let (mut d, _dir) = kube_daemon(&fake, &[]);
    let (id, name) = launched(&d, &fake, json!({})).await;
    wait_status(&d, &id, "running").await;
    // Foreign Jobs change state, fail, get deleted: nothing reacts.
    fake.pod_running(stranger);
    fake.job_failed(stranger, "BackoffLimitExceeded", "x");
    fake.pod_running("someone-elses");
    fake.pod_terminated("someone-elses", 0, "Completed");
    d.restart();
    fake.delete_job(stranger);
    fake.pod_running(&name);
    fake.pod_terminated(&name, 0, "Completed");
    wait_status(&d, &id, "completed").await;
    assert!(fake.get(Kind::Job, "someone-elses").is_some());
    let writes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.path.ends_with("selfsubjectaccessreviews"))
        .collect();
    // Only this job's Job and Secret were ever written.
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes
        .iter()
        .all(|r| r.method == "POST" && r.body["metadata"]["name"] == name.as_str()));
    let (_, jobs) = api::get(&d, api::JOBS).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_deleted_from_outside_fails_saying_so() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let (id, name) = launched(&d, &fake, json!({})).await;
    fake.pod_running(&name);
    wait_status(&d, &id, "running").await;
    fake.delete_job(&name);
    let j = wait_status(&d, &id, "failed").await;
    let err = j["error"].as_str().unwrap();
    assert!(err.contains("deleted from outside the platform"), "{err}");
    assert!(
        fake.get(Kind::Secret, &name).is_none(),
        "garbage-collected with the Job"
    );
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_pods_fail_after_their_timeouts_and_the_job_is_deleted() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(
        &fake,
        &[
            ("KUBE_IMAGE_PULL_TIMEOUT", "1"),
            ("KUBE_UNSCHEDULABLE_TIMEOUT", "1"),
        ],
    );
    let (pull, pull_name) = launched(&d, &fake, json!({})).await;
    let (sched, sched_name) = launched(&d, &fake, json!({})).await;
    let t0 = Instant::now();
    fake.pod_image_pull_error(&pull_name);
    fake.pod_unschedulable(&sched_name);
    let j = wait_status(&d, &pull, "failed").await;
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "not before the timeout"
    );
    let err = j["error"].as_str().unwrap();
    assert!(
        err.contains("ImagePullBackOff") && err.contains("KUBE_IMAGE_PULL_TIMEOUT"),
        "{err}"
    );
    let j = wait_status(&d, &sched, "failed").await;
    let err = j["error"].as_str().unwrap();
    assert!(
        err.contains("could not be scheduled") && err.contains("Insufficient nvidia.com/gpu"),
        "{err}"
    );
    eventually(30, "both Jobs to be deleted", || async {
        (fake.get(Kind::Job, &pull_name).is_none() && fake.get(Kind::Job, &sched_name).is_none())
            .then_some(())
    })
    .await;
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_recovers_from_an_api_server_restart() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let (done, done_name) = launched(&d, &fake, json!({})).await;
    let (gone, gone_name) = launched(&d, &fake, json!({})).await;
    fake.pod_running(&done_name);
    fake.pod_running(&gone_name);
    // Down: connections refused, watches cut, history compacted (410 on resume).
    fake.go_down();
    fake.pod_terminated(&done_name, 0, "Completed");
    fake.delete_job(&gone_name);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&d, &done).await["status"], "running");
    fake.come_back();
    wait_status(&d, &done, "completed").await;
    let j = wait_status(&d, &gone, "failed").await;
    assert!(j["error"].as_str().unwrap().contains("deleted"), "{j}");
    // And it keeps watching.
    let (next, next_name) = launched(&d, &fake, json!({})).await;
    fake.pod_terminated(&next_name, 0, "Completed");
    wait_status(&d, &next, "completed").await;
    assert!(d.log_text().contains("retrying with backoff"));
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kueue_jobs_are_created_suspended_with_the_queue_label() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[("KUEUE_QUEUE", "team-a")]);
    let (id, name) = launched(&d, &fake, json!({})).await;
    let kjob = fake.get(Kind::Job, &name).unwrap();
    assert_eq!(kjob["spec"]["suspend"], true);
    assert_eq!(
        kjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"],
        "team-a"
    );
    // Kueue admits it later; the job is launched (running) meanwhile.
    assert_eq!(
        wait_status(&d, &id, "running").await["runner"],
        "kubernetes"
    );
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_jobs_holds_jobs_pending_in_kubernetes_mode_too() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[("MAX_CONCURRENT_JOBS", "1")]);
    let (first, first_name) = launched(&d, &fake, json!({})).await;
    wait_status(&d, &first, "running").await;
    let second = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A scheduler pass (the daemon re-checks every second) launches nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&d, &second).await["status"], "pending");
    assert!(fake.get(Kind::Job, &job_name(&second)).is_none());
    fake.pod_terminated(&first_name, 0, "Completed");
    wait_status(&d, &first, "completed").await;
    wait_status(&d, &second, "running").await;
    assert!(fake.get(Kind::Job, &job_name(&second)).is_some());
    assert_clean(&fake);
}

/// Issue 11.1: a launch the API server cannot take (it is down) leaves the
/// job `pending`, saying why and when it is retried; it waits out a pause
/// of its own while the jobs behind it launch, then launches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_failing_for_the_environment_is_retried_without_holding_up_the_queue() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    fake.go_down();
    let first = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let waiting = eventually(30, "the launch failure to be noted", || async {
        let j = get(&d, &first).await;
        j["message"].is_string().then_some(j)
    })
    .await;
    assert_eq!(waiting["status"], "pending");
    let message = waiting["message"].as_str().unwrap();
    assert!(
        message.starts_with("launch failed: ")
            && message.ends_with("; retrying in 10 s (attempt 2 of 6)"),
        "{message}"
    );
    fake.come_back();
    let (second, _) = launched(&d, &fake, json!({})).await;
    let second = wait_status(&d, &second, "running").await;
    let first = wait_status(&d, &first, "running").await;
    assert!(first["message"].is_null(), "the note is gone: {first}");
    assert!(
        second["started_at"].as_str() < first["started_at"].as_str(),
        "the job behind went first: {second} {first}"
    );
    assert_clean(&fake);
}

/// Runs `platform serve` in kubernetes mode against `kubeconfig`, expecting
/// it to fail at start-up; returns its stderr.
fn serve_fails(kubeconfig: &Path) -> String {
    let config = kubeconfig.display().to_string();
    let (code, err) = api::serve_outcome(
        &["--bind", "127.0.0.1:0"],
        &[
            ("TRAINING_MODE", "kubernetes"),
            ("KUBE_CONFIG_PATH", &config),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    err
}

#[test]
fn startup_fails_clearly_on_missing_permissions_and_unreachable_servers() {
    let fake = FakeKube::start();
    fake.deny(&["delete jobs.batch", "get pods/log"]);
    let dir = tempfile::tempdir().unwrap();
    let err = serve_fails(&fake.kubeconfig(dir.path()));
    assert!(
        err.contains("missing delete on jobs.batch, get on pods/log"),
        "{err}"
    );
    assert!(err.contains("namespace \"platform\""), "{err}");
    assert!(!err.contains("create on jobs.batch"), "{err}");
    // Every verb was asked about.
    let reviews: BTreeSet<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("selfsubjectaccessreviews"))
        .map(|r| {
            let a = &r.body["spec"]["resourceAttributes"];
            format!(
                "{} {}",
                a["verb"].as_str().unwrap(),
                a["resource"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(reviews.len(), 9, "{reviews:?}");
    assert_clean(&fake);

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("dead.yaml");
    std::fs::write(
        &cfg,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(
        err.contains(&format!(
            "cannot reach the Kubernetes API server at http://127.0.0.1:{port}/"
        )) && err.contains("connection refused"),
        "{err}"
    );
    // Wrong credentials.
    let wrong = std::fs::read_to_string(fake.kubeconfig(dir.path()))
        .unwrap()
        .replace(fake_kube::TOKEN, "wrong-token");
    std::fs::write(&cfg, wrong).unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("rejected the credentials"), "{err}");
    // A missing kubeconfig.
    let err = serve_fails(&dir.path().join("nope.yaml"));
    assert!(err.contains("cannot read the kubeconfig"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_manifests_and_creates_nothing() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let base = [
        "job",
        "create",
        "-f",
        "demo",
        "-m",
        "yolo11n",
        "-d",
        "s3://b/d/",
        "--dry-run",
    ];
    let out = d.cli(&[&base[..], &["-o", "yaml", "--set", "resources.gpu=1"]].concat());
    assert!(out.status.success(), "{}", common::stderr(&out));
    let yaml = common::stdout(&out);
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{yaml}");
    assert_eq!(docs[0]["kind"], "Job");
    assert_eq!(
        docs[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            ["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(docs[1]["kind"], "Secret");
    assert_eq!(docs[1]["stringData"]["CALLBACK_TOKEN"], "********");
    assert_no_vanished::<k8s_openapi::api::batch::v1::Job>(&docs[0]);
    assert_no_vanished::<k8s_openapi::api::core::v1::Secret>(&docs[1]);
    let out = d.cli(&[&base[..], &["-o", "json"]].concat());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    // Bad overrides are a 422 naming the key, before anything exists.
    let out = d.cli(&[&base[..], &["--set", "resources.gpu=lots"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("config.resources.gpu"),
        "{}",
        common::stderr(&out)
    );
    // Nothing was created, anywhere.
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.method == "GET" || r.path.ends_with("selfsubjectaccessreviews")));
    let out = d.cli(&["job", "list", "-q"]);
    assert_eq!(common::stdout(&out).trim(), "");
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_in_subprocess_mode_shows_argv_and_env_with_secrets_masked() {
    let d = Daemon::start();
    let dry = format!("{}?dry_run=true", api::JOBS);
    let (status, plan) = api::post(&d, &dry, &common::demo_job(json!({"epochs": 2}))).await;
    assert_eq!(status, 200);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["runner"], "subprocess");
    let p = &plan["process"];
    assert_eq!(p["argv"][1], "demo-train");
    assert_eq!(p["env"]["CALLBACK_TOKEN"], "********");
    assert_eq!(p["env"]["CONFIG"], r#"{"epochs":2}"#);
    let out = d.cli(&[
        "job",
        "create",
        "-f",
        "demo",
        "-m",
        "m",
        "-d",
        "s3://b/d/",
        "--dry-run",
    ]);
    let text = common::stdout(&out);
    assert!(
        text.contains("argv:") && text.contains("CALLBACK_TOKEN=********"),
        "{text}"
    );
    // Invalid input is still a 422, and nothing is stored either way.
    let bad =
        json!({"user_id": "", "model_name": "m", "framework": "demo", "dataset_s3_uri": "s3://b/"});
    assert_eq!(api::post(&d, &dry, &bad).await.0, 422);
    let (_, jobs) = api::get(&d, api::JOBS).await;
    assert_eq!(jobs, json!([]));
    // The OpenAPI document describes the dry run.
    let (_, doc) = api::get(&d, "/openapi.json").await;
    let create = &doc["paths"]["/api/v1/training/jobs"]["post"];
    assert!(create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "dry_run"));
    assert!(create["responses"]["200"].is_object());
}

// ---------------------------------------------------------------------------
// Offline manifest checks.

/// Keys of `original` that disappear when it goes through the k8s-openapi
/// type `T` and back: misspelled or misplaced fields, which serde would
/// otherwise drop silently.
fn vanished<T: DeserializeOwned + Serialize>(original: &Value) -> Vec<String> {
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("does not parse as {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).unwrap();
    let mut out = Vec::new();
    diff(original, &back, "", &mut out);
    out
}

/// The kind of a deploy manifest's document, after checking it is one the
/// manifests may use and that its typed round trip drops no key.
fn known_kind_without_unknown_keys<'a>(file: &str, doc: &'a Value) -> &'a str {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
    use k8s_openapi::api::{policy::v1 as policy, rbac::v1 as rbac};
    let kind = doc["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: no kind"));
    let gone = match kind {
        "Namespace" => vanished::<core::Namespace>(doc),
        "ServiceAccount" => vanished::<core::ServiceAccount>(doc),
        "Role" => vanished::<rbac::Role>(doc),
        "RoleBinding" => vanished::<rbac::RoleBinding>(doc),
        "PersistentVolumeClaim" => vanished::<core::PersistentVolumeClaim>(doc),
        "Deployment" => vanished::<apps::Deployment>(doc),
        "Service" => vanished::<core::Service>(doc),
        "ConfigMap" => vanished::<core::ConfigMap>(doc),
        "Secret" => vanished::<core::Secret>(doc),
        "PodDisruptionBudget" => vanished::<policy::PodDisruptionBudget>(doc),
        other => panic!("{file}: unexpected kind {other}"),
    };
    assert!(gone.is_empty(), "{file} ({kind}): unknown keys {gone:?}");
    kind
}

fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(w) => diff(v, w, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn assert_no_vanished<T: DeserializeOwned + Serialize>(v: &Value) {
    let gone = vanished::<T>(v);
    assert!(
        gone.is_empty(),
        "keys unknown to {} (typos?): {gone:?}",
        std::any::type_name::<T>()
    );
}

#[test]
fn the_vanished_key_check_catches_typos() {
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
        "spec": {"backofLimit": 0, "template": {"spec": {"containers": [{"name": "c", "imagee": "i"}]}}}});
    assert_eq!(
        vanished::<k8s_openapi::api::batch::v1::Job>(&job),
        vec![
            ".spec.backofLimit",
            ".spec.template.spec.containers[0].imagee"
        ]
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The golden GPU job: a trainers-file entry with GPUs, node selector and
/// tolerations, S3 credentials, pull secrets and a service account.
fn gpu_manifests() -> String {
    use platform::runner::kubernetes::manifest;
    use platform::trainers::{Resources, Source, Toleration, Trainer};
    let job: platform::model::Job = serde_json::from_value(json!({
        "id": "01a2168a-db6a-736c-8397-0011d2208f72", "user_id": "alice", "model_name": "yolo11x",
        "framework": "ultralytics", "dataset_s3_uri": "s3://vision/datasets/coco/",
        "config": {"epochs": 50, "timeout_seconds": 86400, "resources": {"memory": "48Gi"}},
        "status": "pending", "progress": 0.0, "message": null, "checkpoint_s3_uri": null,
        "error": null, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "started_at": null, "completed_at": null
    }))
    .unwrap();
    let trainer = Trainer {
        name: "ultralytics".into(),
        command: vec!["python3".into(), "train.py".into()],
        workdir: Some("/opt/trainers/ultralytics".into()),
        env: BTreeMap::from([("PYTHONUNBUFFERED".into(), "1".into())]),
        image: Some("registry.example/trainer-ultralytics:1.2".into()),
        resources: Resources {
            cpu: Some("8".into()),
            memory: Some("32Gi".into()),
            gpu: Some(2),
        },
        node_selector: BTreeMap::from([(
            "nvidia.com/gpu.product".into(),
            "NVIDIA-A100-SXM4-80GB".into(),
        )]),
        tolerations: vec![Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }],
        retry: None,
        heartbeat_timeout: None,
        source: Source::File,
    };
    let contract = platform::runner::env::Contract {
        base_url: "http://platform.platform.svc:8000".into(),
        output_uri: format!("s3://vision/jobs/{}/outputs/", job.id),
        storage_env: BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".into(), "AKIAEXAMPLE".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "example-secret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("BUCKET_NAME".into(), "vision".into()),
            ("S3_ENDPOINT".into(), "http://minio.storage:9000".into()),
        ]),
        // Pods run their image's binaries (see runner/env.rs).
        platform_bin: None,
    };
    let (env, secret_keys) =
        platform::runner::env::build(&job, "0123456789abcdef", &trainer, &contract);
    let spec = platform::runner::LaunchSpec {
        job,
        trainer,
        env,
        secret_keys,
    };
    let settings = platform::runner::kubernetes::config::KubeSettings {
        namespace: "platform".into(),
        config_path: None,
        context: None,
        kueue_queue: None,
        queue_map: Default::default(),
        image_pull_secrets: vec!["registry-creds".into()],
        service_account: Some("trainer".into()),
        image_pull_timeout: None,
        unschedulable_timeout: None,
        job_ttl_seconds: 86400,
        demo_image: "unused".into(),
    };
    let mut m = manifest::build(&spec, &settings).unwrap();
    // As launched: the Secret is owned by the created Job.
    let mut created = m.job.clone();
    created.metadata.uid = Some("5f0c7a52-0000-4000-8000-000000000001".into());
    manifest::own(m.secret.as_mut().unwrap(), &created);
    m.to_values()
        .iter()
        .map(|v| format!("---\n{}", serde_yaml_ng::to_string(v).unwrap()))
        .collect()
}

#[test]
fn gpu_manifest_matches_its_golden_file() {
    let golden = repo().join("tests/golden/job-gpu.yaml");
    let actual = gpu_manifests();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&golden)
        .expect("tests/golden/job-gpu.yaml exists (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        actual, expected,
        "the generated manifest changed; review and regenerate with UPDATE_GOLDEN=1"
    );
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&expected)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    assert_no_vanished::<k8s_openapi::api::batch::v1::Job>(&docs[0]);
    assert_no_vanished::<k8s_openapi::api::core::v1::Secret>(&docs[1]);
    let c = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert_eq!(
        c["resources"]["limits"]["memory"], "48Gi",
        "config.resources wins"
    );
    assert_eq!(docs[0]["spec"]["activeDeadlineSeconds"], 86400);
    let plain: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["value"].is_string())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(!plain.contains(&"AWS_SECRET_ACCESS_KEY") && !plain.contains(&"CALLBACK_TOKEN"));
    assert_eq!(
        docs[1]["stringData"]["AWS_SECRET_ACCESS_KEY"],
        "example-secret"
    );
}

/// Every document of every YAML file under `deploy/kubernetes/`.
fn deploy_docs() -> Vec<(String, Value)> {
    deploy_docs_in("deploy/kubernetes")
}

/// Every document of every YAML file directly in `dir` (from the repo root).
fn deploy_docs_in(dir: &str) -> Vec<(String, Value)> {
    let dir = repo().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                out.push((f.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    out
}

#[test]
fn deploy_manifests_parse_as_kubernetes_objects_without_unknown_keys() {
    let docs = deploy_docs();
    let mut kinds = BTreeSet::new();
    for (file, doc) in &docs {
        let kind = known_kind_without_unknown_keys(file, doc);
        kinds.insert(kind.to_string());
    }
    for k in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(k), "deploy/kubernetes has no {k}");
    }
    // kustomization.yaml lists exactly the manifest files.
    let kust: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("deploy/kubernetes/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = kust["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = docs.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(listed, files);

    let find = |kind: &str| {
        docs.iter()
            .find(|(_, d)| d["kind"] == kind)
            .unwrap()
            .1
            .clone()
    };
    // The Deployment: one replica, Recreate, probes, non-root, read-only root.
    let dep = find("Deployment");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/health", "{probe}");
    }
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let env: BTreeMap<String, Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(env["TRAINING_MODE"]["value"], "kubernetes");
    let svc = find("Service");
    let svc_url = format!(
        "http://{}.{}.svc:{}",
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
        svc["spec"]["ports"][0]["port"]
    );
    assert_eq!(env["BACKEND_BASE_URL"]["value"], svc_url.as_str());
    assert_eq!(
        pod["serviceAccountName"],
        find("ServiceAccount")["metadata"]["name"]
    );
    let data_mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == env["PLATFORM_DATA_DIR"]["value"])
        .expect("the data dir is a mounted volume");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == data_mount["name"])
        .unwrap();
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        find("PersistentVolumeClaim")["metadata"]["name"]
    );
    // The trainers file's commented example is a valid entry.
    let example: String = find("ConfigMap")["data"]["trainers.toml"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trainers.toml");
    std::fs::write(&file, example).unwrap();
    let reg = platform::trainers::Registry::load(None, Some(&file)).unwrap();
    assert_eq!(reg.get("ultralytics").unwrap().resources.gpu, Some(1));
}

#[test]
fn the_replicated_variant_shares_the_single_node_manifests_and_runs_two_leased_replicas() {
    let docs = deploy_docs_in("deploy/kubernetes/replicated");
    let single: BTreeMap<String, Value> = deploy_docs()
        .into_iter()
        .map(|(f, d)| (format!("{f}/{}", d["kind"].as_str().unwrap()), d))
        .collect();
    for (file, doc) in &docs {
        let kind = known_kind_without_unknown_keys(file, doc);
        assert_ne!(
            kind, "PersistentVolumeClaim",
            "{file}: state lives in PostgreSQL"
        );
        // The copies kustomize needs (it cannot read the parent directory)
        // stay identical to the single-node ones.
        if kind != "Deployment" && kind != "Secret" && kind != "PodDisruptionBudget" {
            assert_eq!(
                Some(doc),
                single.get(&format!("{file}/{kind}")),
                "{file} differs from deploy/kubernetes/{file}"
            );
        }
    }
    let kust: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("deploy/kubernetes/replicated/kustomization.yaml"))
            .unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = kust["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = docs
        .iter()
        .map(|(f, _)| f.clone())
        .filter(|f| f != "postgres-secret.example.yaml")
        .collect();
    assert_eq!(
        listed, files,
        "every manifest but the Secret example is applied"
    );
    let find = |kind: &str| {
        docs.iter()
            .find(|(_, d)| d["kind"] == kind)
            .unwrap()
            .1
            .clone()
    };

    let dep = find("Deployment");
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
    let single_dep = &single["deployment.yaml/Deployment"];
    let single_c = &single_dep["spec"]["template"]["spec"]["containers"][0];
    for same in [
        "image",
        "args",
        "securityContext",
        "livenessProbe",
        "readinessProbe",
    ] {
        assert_eq!(c[same], single_c[same], "{same}");
    }
    let env: BTreeMap<String, Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(env["PLATFORM_LEADER_ELECTION"]["value"], "lease");
    assert_eq!(env["TRAINING_MODE"]["value"], "kubernetes");
    assert_eq!(
        env["PLATFORM_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(
        env.contains_key("BUCKET_NAME"),
        "replicas need a shared object store"
    );
    // DATABASE_URL comes from the example Secret's name and key.
    let db = &env["DATABASE_URL"]["valueFrom"]["secretKeyRef"];
    let secret = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Secret" && d["metadata"]["name"] == db["name"])
        .expect("the example Secret DATABASE_URL reads")
        .1
        .clone();
    let url = secret["stringData"][db["key"].as_str().unwrap()]
        .as_str()
        .unwrap();
    assert!(url.starts_with("postgresql://"), "{url}");
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["persistentVolumeClaim"].is_null()),
        "no PersistentVolumeClaim"
    );
    let pdb = find("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn the_role_grants_exactly_what_the_runner_uses() {
    use platform::runner::kubernetes::client::PERMISSIONS;
    let role = deploy_docs()
        .into_iter()
        .find(|(_, d)| d["kind"] == "Role")
        .unwrap()
        .1;
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    granted.insert(format!(
                        "{} {} {}",
                        g.as_str().unwrap(),
                        r.as_str().unwrap(),
                        v.as_str().unwrap()
                    ));
                }
            }
        }
    }
    let used: BTreeSet<String> = PERMISSIONS
        .iter()
        .flat_map(|p| {
            p.verbs
                .iter()
                .map(move |v| format!("{} {} {v}", p.group, p.resource))
        })
        .collect();
    assert_eq!(granted, used);
}

/// Issue 14 on Kubernetes: one Job per attempt. A trainer exiting 3 under
/// a policy that retries 3 gets a second Job named `…-a2` (the first keeps
/// today's name), with `ATTEMPT=2` and the attempt label; its pod failing
/// OOMKilled (not a listed code) then fails the job with both attempts
/// recorded. The daemon's own policy engine decides; `backoffLimit` stays 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_gets_one_kubernetes_job_per_attempt() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(&fake, &[]);
    let mut body = common::demo_job(json!({}));
    body["retry"] = json!({"max_attempts": 3, "backoff": {"initial": 0.1},
                           "rules": [{"exit_codes": [3], "action": "retry"}]});
    let id = api::create(&d, &body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = job_name(&id);
    eventually(30, "the first attempt's Job", || async {
        fake.get(Kind::Job, &first).map(|_| ())
    })
    .await;
    fake.pod_terminated(&first, 3, "Error");
    let second = format!("{first}-a2");
    let kjob = eventually(30, "the second attempt's Job", || async {
        fake.get(Kind::Job, &second)
    })
    .await;
    assert_eq!(kjob["spec"]["backoffLimit"], 0);
    assert_eq!(kjob["metadata"]["labels"]["platform/attempt"], "2");
    let env = &kjob["spec"]["template"]["spec"]["containers"][0]["env"];
    let attempt = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ATTEMPT")
        .unwrap();
    assert_eq!(attempt["value"], "2");
    let j = wait_status(&d, &id, "running").await;
    assert_eq!(j["attempt"], 2);
    fake.pod_terminated(&second, 137, "OOMKilled");
    let j = wait_status(&d, &id, "failed").await;
    let attempts = j["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{j}");
    assert_eq!(attempts[0]["exit_code"], 3);
    assert_eq!(attempts[1]["reason"], "oom");
    assert!(fake.get(Kind::Job, &format!("{first}-a3")).is_none());
    assert_clean(&fake);
}

/// A queue mapped to a Kueue LocalQueue sends its Jobs there, suspended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_maps_to_its_kueue_local_queue() {
    let fake = FakeKube::start();
    let (d, _dir) = kube_daemon(
        &fake,
        &[("QUEUES", r#"{"gpu": {"kueue_queue": "team-a-gpu"}}"#)],
    );
    let mut body = common::demo_job(json!({}));
    body["queue"] = json!("gpu");
    let id = api::create(&d, &body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kjob = eventually(30, "the Job", || async {
        fake.get(Kind::Job, &job_name(&id))
    })
    .await;
    assert_eq!(
        kjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"],
        "team-a-gpu"
    );
    assert_eq!(kjob["spec"]["suspend"], true);
    let (_, queues) = api::get(&d, "/api/v1/queues").await;
    let gpu = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "gpu")
        .unwrap()
        .clone();
    assert_eq!(gpu["kueue_queue"], "team-a-gpu");
}
