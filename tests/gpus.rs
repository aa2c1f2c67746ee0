//! GPUs as resources, end to end without a GPU: a real daemon with the
//! subprocess runner and a fake `nvidia-smi` (a shell script this test
//! writes, first on the daemon's PATH) describing 4 GPUs whose utilisation
//! the test sets through files. Trainers are shell scripts that record the
//! GPUs they were given.

mod common;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::api::{get, post, JOBS};
use common::{eventually, Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A fake machine: the `nvidia-smi` script, trainers, and where trainers
/// leave their records.
struct Box4 {
    dir: tempfile::TempDir,
}

const UUIDS: [&str; 4] = [
    "GPU-0a1b2c3d-0000-4000-8000-000000000000",
    "GPU-0a1b2c3d-1111-4000-8000-000000000001",
    "GPU-0a1b2c3d-2222-4000-8000-000000000002",
    "GPU-0a1b2c3d-3333-4000-8000-000000000003",
];

impl Box4 {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let b = Box4 { dir };
        for sub in ["bin", "records", "locks", "trainers"] {
            std::fs::create_dir_all(b.path(sub)).unwrap();
        }
        let inventory: String = UUIDS
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{i}, {u}, NVIDIA Fake 80GB, 81559\\n"))
            .collect();
        let smi = format!(
            "#!/bin/sh\ncase \"$*\" in\n\
             *uuid*) printf '{inventory}' ;;\n\
             *utilization.gpu*) for i in 0 1 2 3; do u=$(cat {util}/util$i 2>/dev/null || echo 0); \
             echo \"$i, $u, 1234, 5$i, 100.5\"; done ;;\n\
             *) echo 'unknown query' >&2; exit 2 ;;\nesac\n",
            util = b.path("records").display()
        );
        write_exec(&b.path("bin").join("nvidia-smi"), &smi);
        let records = b.path("records").display().to_string();
        let locks = b.path("locks").display().to_string();
        // Takes a lock directory per GPU it was given: a second holder of
        // one GPU at the same time leaves an OVERLAP marker.
        b.trainer(
            "gpu",
            &format!(
                "echo \"$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES|$CUDA_DEVICE_ORDER\" > {records}/$JOB_ID\n\
                 IFS=,\n\
                 for g in $CUDA_VISIBLE_DEVICES; do mkdir {locks}/gpu$g 2>/dev/null || touch {records}/OVERLAP-$JOB_ID; done\n\
                 sleep 0.3\n\
                 for g in $CUDA_VISIBLE_DEVICES; do rmdir {locks}/gpu$g 2>/dev/null; done\n\
                 exit 0"
            ),
        );
        // Runs until the test creates release-<model_name>; `linger`
        // reports `completed` first and keeps running.
        let hold = format!(
            "echo \"$CUDA_VISIBLE_DEVICES\" > {records}/$JOB_ID\n\
             while [ ! -e {records}/release-$MODEL_NAME ]; do sleep 0.1; done"
        );
        b.trainer("hold", &hold);
        b.trainer(
            "linger",
            &format!("platform report --status completed --progress 1 || exit 9\n{hold}"),
        );
        b
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn trainer(&self, name: &str, body: &str) {
        let sub = self.path("trainers").join(name);
        std::fs::create_dir_all(&sub).unwrap();
        write_exec(&sub.join("train"), &format!("#!/bin/sh\n{body}\n"));
    }

    /// A daemon on this machine (subprocess runner, no concurrency limit).
    fn daemon(&self, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let bin_dir = common::bin().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}:{}",
            self.path("bin").display(),
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut e: Vec<(String, String)> = vec![
            (
                "TRAINER_SUBPROCESS_PATH".into(),
                self.path("trainers").display().to_string(),
            ),
            ("PATH".into(), path),
        ];
        e.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut args: Vec<String> = [
            "--max-concurrent-jobs",
            "0",
            "--kill-grace",
            "60",
            "--gpu-sample-interval",
            "0.2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::start_with(Opts {
            args,
            envs: e,
            ..Opts::default()
        })
    }

    /// What trainer `id` recorded (its CUDA_VISIBLE_DEVICES, …), once it did.
    async fn record(&self, id: &str) -> String {
        let file = self.path("records").join(id);
        eventually(30, &format!("job {id}'s trainer to start"), || {
            let file = file.clone();
            async move {
                std::fs::read_to_string(&file)
                    .ok()
                    .filter(|s| s.ends_with('\n'))
                    .map(|s| s.trim().to_string())
            }
        })
        .await
    }

    fn release(&self, model: &str) {
        std::fs::write(self.path("records").join(format!("release-{model}")), "").unwrap();
    }

    fn set_utilization(&self, gpu: u32, percent: u32) {
        std::fs::write(
            self.path("records").join(format!("util{gpu}")),
            percent.to_string(),
        )
        .unwrap();
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn body(framework: &str, model: &str, gpus: Option<u32>) -> Value {
    let mut b = json!({"user_id": "alice", "model_name": model, "framework": framework,
                       "dataset_s3_uri": "s3://bucket/datasets/coco128/"});
    if let Some(n) = gpus {
        b["gpus"] = json!(n);
    }
    b
}

async fn create(d: &Daemon, framework: &str, model: &str, gpus: Option<u32>) -> String {
    let (status, job) = post(d, JOBS, &body(framework, model, gpus)).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job["id"].as_str().unwrap().to_string()
}

async fn job(d: &Daemon, id: &str) -> Value {
    common::api::job(d, id).await
}

async fn wait_status(d: &Daemon, id: &str, status: &str) -> Value {
    eventually(60, &format!("job {id} to be {status}"), || async {
        let j = job(d, id).await;
        (j["status"] == status).then_some(j)
    })
    .await
}

async fn gpus(d: &Daemon) -> Vec<Value> {
    let (status, list) = get(d, "/api/v1/gpus").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

/// GPU index → holder, as `GET /api/v1/gpus` shows it.
async fn holders(d: &Daemon) -> HashMap<u64, String> {
    gpus(d)
        .await
        .iter()
        .filter_map(|g| Some((g["index"].as_u64()?, g["job_id"].as_str()?.to_string())))
        .collect()
}

fn indices(list: &str) -> Vec<u32> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn assigned(job: &Value) -> Vec<u32> {
    job["assigned_gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["index"].as_u64().unwrap() as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_jobs_never_share_a_gpu() {
    let m = Box4::new();
    let d = m.daemon(&[], &[]);
    let list = gpus(&d).await;
    assert_eq!(list.len(), 4, "{list:?}");
    assert_eq!(list[2]["uuid"], UUIDS[2]);
    assert_eq!(list[2]["name"], "NVIDIA Fake 80GB");
    assert_eq!(list[2]["memory_total_mib"], 81559);
    let mut ids = Vec::new();
    for i in 0..20u32 {
        let n = 1 + i % 2;
        ids.push((create(&d, "gpu", &format!("m{i}"), Some(n)).await, n));
    }
    for (id, _) in &ids {
        wait_status(&d, id, "completed").await;
    }
    let overlaps: Vec<String> = std::fs::read_dir(m.path("records"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("OVERLAP"))
        .collect();
    assert!(overlaps.is_empty(), "GPUs were shared: {overlaps:?}");
    for (id, n) in &ids {
        let rec = m.record(id).await;
        let parts: Vec<&str> = rec.split('|').collect();
        assert_eq!(parts.len(), 3, "{rec}");
        let cuda = indices(parts[0]);
        assert_eq!(cuda.len(), *n as usize, "job {id} asked for {n}: {rec}");
        assert!(cuda.iter().all(|g| *g < 4), "{rec}");
        assert_eq!(parts[1], parts[0], "NVIDIA_VISIBLE_DEVICES: {rec}");
        assert_eq!(parts[2], "PCI_BUS_ID", "{rec}");
        let j = job(&d, id).await;
        assert_eq!(j["gpus"], *n, "{j}");
        assert_eq!(assigned(&j), cuda, "{j}");
        let uuids: Vec<&str> = j["assigned_gpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["uuid"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = cuda.iter().map(|g| UUIDS[*g as usize]).collect();
        assert_eq!(uuids, want);
    }
    // Every trainer has exited: every GPU is free.
    eventually(30, "every GPU to be free", || async {
        holders(&d).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gpus_are_freed_when_the_trainer_exits_not_when_it_reports_completed() {
    let m = Box4::new();
    let d = m.daemon(&[], &[]);
    let first = create(&d, "linger", "first", Some(4)).await;
    let cuda = indices(&m.record(&first).await);
    assert_eq!(cuda, [0, 1, 2, 3]);
    wait_status(&d, &first, "completed").await;
    // Its trainer still runs: it keeps all four.
    let second = create(&d, "hold", "second", Some(1)).await;
    let held = eventually(30, "the GPU list to show the holder", || async {
        let h = holders(&d).await;
        (h.len() == 4).then_some(h)
    })
    .await;
    assert!(held.values().all(|j| *j == first), "{held:?}");
    let j = job(&d, &second).await;
    assert_eq!(j["status"], "pending", "{j}");
    let (_, health) = get(&d, "/health").await;
    let in_health: Vec<&Value> = health["gpus"].as_array().unwrap().iter().collect();
    assert_eq!(in_health.len(), 4, "{health}");
    assert!(
        in_health.iter().all(|g| g["job_id"] == first.as_str()),
        "{health}"
    );
    m.release("first");
    let j = wait_status(&d, &second, "running").await;
    assert_eq!(assigned(&j).len(), 1, "{j}");
    let h = eventually(30, "the second job to hold its GPU alone", || async {
        let h = holders(&d).await;
        (h.len() == 1).then_some(h)
    })
    .await;
    assert!(h.values().all(|j| *j == second), "{h:?}");
    m.release("second");
    wait_status(&d, &second, "completed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readopted_trainer_keeps_its_gpus_after_kill_9() {
    let m = Box4::new();
    let mut d = m.daemon(&[], &[]);
    let big = create(&d, "hold", "big", Some(3)).await;
    let big_gpus: HashSet<u32> = indices(&m.record(&big).await).into_iter().collect();
    assert_eq!(big_gpus.len(), 3);
    wait_status(&d, &big, "running").await;
    d.restart();
    // The re-adopted trainer still holds three: a 1-GPU job gets the
    // fourth, a 2-GPU job waits.
    let one = create(&d, "hold", "one", Some(1)).await;
    let one_gpus = indices(&m.record(&one).await);
    let pair = create(&d, "hold", "pair", Some(2)).await;
    assert_eq!(one_gpus.len(), 1);
    assert!(
        !big_gpus.contains(&one_gpus[0]),
        "{one_gpus:?} vs {big_gpus:?}"
    );
    let j = job(&d, &pair).await;
    assert_eq!(j["status"], "pending", "{j}");
    let h = holders(&d).await;
    for g in &big_gpus {
        assert_eq!(h.get(&u64::from(*g)), Some(&big), "{h:?}");
    }
    let j = job(&d, &big).await;
    assert_eq!(j["status"], "running", "{j}");
    let after: HashSet<u32> = assigned(&j).into_iter().collect();
    assert_eq!(after, big_gpus);
    m.release("big");
    wait_status(&d, &big, "completed").await;
    let pair_gpus = indices(&m.record(&pair).await);
    assert_eq!(pair_gpus.len(), 2);
    assert!(!pair_gpus.contains(&one_gpus[0]), "{pair_gpus:?}");
    m.release("one");
    m.release("pair");
    wait_status(&d, &pair, "completed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn impossible_requests_are_422_and_the_set_can_be_narrowed() {
    let m = Box4::new();
    let d = m.daemon(&["--gpus", "0,2"], &[]);
    let list: Vec<u64> = gpus(&d)
        .await
        .iter()
        .map(|g| g["index"].as_u64().unwrap())
        .collect();
    assert_eq!(list, [0, 2]);
    let (status, err) = post(&d, JOBS, &body("hold", "x", Some(3))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["field"], "gpus", "{err}");
    assert!(err["detail"].as_str().unwrap().contains('3'), "{err}");
    let (_, all) = get(&d, JOBS).await;
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(0),
        "a refused job was stored: {all}"
    );
    // Two fit, on the two GPUs it may use.
    let id = create(&d, "hold", "two", Some(2)).await;
    assert_eq!(indices(&m.record(&id).await), [0, 2]);
    // The CLI: --gpus on create, gpu list.
    let out = d.cli(&[
        "job",
        "create",
        "--framework",
        "hold",
        "--model",
        "cli",
        "--dataset",
        "s3://bucket/datasets/coco128/",
        "--user",
        "alice",
        "--gpus",
        "5",
        "-o",
        "json",
    ]);
    assert!(!out.status.success(), "{}", common::stdout(&out));
    assert!(
        common::stderr(&out).contains('5'),
        "{}",
        common::stderr(&out)
    );
    let out = d.cli(&["gpu", "list"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(
        text.contains("NVIDIA Fake 80GB") && text.contains(&id),
        "{text}"
    );
    m.release("two");
    wait_status(&d, &id, "completed").await;

    // An inherited CUDA_VISIBLE_DEVICES (UUIDs or indices) narrows it too;
    // `none` turns GPUs off.
    let d = m.daemon(&[], &[("CUDA_VISIBLE_DEVICES", &format!("{},3", UUIDS[1]))]);
    let list: Vec<u64> = gpus(&d)
        .await
        .iter()
        .map(|g| g["index"].as_u64().unwrap())
        .collect();
    assert_eq!(list, [1, 3]);
    let d = m.daemon(&["--gpus", "none"], &[]);
    assert!(gpus(&d).await.is_empty());
    let (status, err) = post(&d, JOBS, &body("hold", "x", Some(1))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_is_stored_as_system_metrics_and_served() {
    let m = Box4::new();
    m.set_utilization(0, 87);
    let d = m.daemon(&["--gpu-idle-after", "0.5"], &[]);
    let id = create(&d, "hold", "tele", Some(1)).await;
    assert_eq!(indices(&m.record(&id).await), [0]);
    let sampled = eventually(30, "a telemetry sample of GPU 0", || async {
        let list = gpus(&d).await;
        let g = list[0].clone();
        (g["telemetry"]["utilization"] == 87.0).then_some(g)
    })
    .await;
    assert_eq!(sampled["job_id"], id.as_str());
    assert_eq!(sampled["telemetry"]["memory_used_mib"], 1234.0);
    assert_eq!(sampled["telemetry"]["temperature_c"], 50.0);
    assert_eq!(sampled["telemetry"]["power_w"], 100.5);
    assert_eq!(sampled["idle"], false);
    let path = format!("{JOBS}/{id}/metrics?system=true&order=asc");
    let points = eventually(30, "stored system metrics", || async {
        let (_, p) = get(&d, &path).await;
        p.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    let first = &points[0]["metrics"];
    assert_eq!(first["system/gpu0/utilization"], 87.0, "{first}");
    assert_eq!(first["system/gpu0/power_w"], 100.5, "{first}");
    assert!(first.get("system/gpu1/utilization").is_none(), "{first}");
    // Training metrics leave them out.
    let (_, training) = get(&d, &format!("{JOBS}/{id}/metrics")).await;
    assert_eq!(training, json!([]));
    let out = d.cli(&["metrics", &id, "--system", "-o", "json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("system/gpu0/utilization"));
    // Prometheus gauges per GPU.
    let text = d.get_text("/metrics").await;
    assert!(
        text.contains(&format!(
            "platform_gpu_utilization_percent{{gpu=\"0\",uuid=\"{}\"}} 87",
            UUIDS[0]
        )),
        "{text}"
    );
    assert!(text.contains("platform_gpu_in_use{gpu=\"0\""), "{text}");
    // At 0 % for longer than --gpu-idle-after it is flagged idle.
    m.set_utilization(0, 0);
    eventually(30, "GPU 0 to be flagged idle", || async {
        (gpus(&d).await[0]["idle"] == true).then_some(())
    })
    .await;
    assert_eq!(job(&d, &id).await["gpu_idle"], true);
    m.set_utilization(0, 50);
    eventually(30, "the idle flag to clear", || async {
        (job(&d, &id).await.get("gpu_idle").is_none()).then_some(())
    })
    .await;
    m.release("tele");
    wait_status(&d, &id, "completed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_page_shows_the_gpu_panel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install -y chromium (or set CHROMIUM)"
    );
    assert!(
        root.join("tests/ui/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: npm ci --prefix tests/ui"
    );
    let m = Box4::new();
    m.set_utilization(0, 42);
    let d = m.daemon(&[], &[]);
    let id = create(&d, "hold", "panel", Some(1)).await;
    m.record(&id).await;
    let path = format!("{JOBS}/{id}/metrics?system=true");
    eventually(30, "a stored GPU sample", || async {
        let (_, p) = get(&d, &path).await;
        p.as_array().filter(|a| a.len() >= 2).map(|_| ())
    })
    .await;
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/ui/gpus.mjs"))
        .arg(&d.url)
        .arg(&id)
        .arg(UUIDS[0])
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("node is missing: apt-get install -y nodejs npm");
    assert!(
        out.status.success() && common::stdout(&out).contains("GPU_PANEL"),
        "{}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    m.release("panel");
    wait_status(&d, &id, "completed").await;
}
