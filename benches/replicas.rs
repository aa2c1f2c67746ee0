//! Two `platform serve` replicas with `--leader-election lease` on one
//! PostgreSQL database (issue 13), against the release binary on loopback:
//!
//! 1. callbacks with metrics, the load spread over both replicas (one `wrk`
//!    per replica, each on its own half of the jobs, `benches/callback.lua`)
//!    next to the same load on one replica of the pair, same run:
//!    aggregate callbacks/s and p50/p99;
//! 2. leader fail-over: `kill -9` of the leader, five times; the time until
//!    the other replica's `/health` says it leads (polled every 20 ms),
//!    median and max; then the same for a graceful stop (SIGTERM releases
//!    the lease).
//!
//! The database is the test harness's throwaway cluster (`tests/common/pg.rs`:
//! `fsync=off`, `synchronous_commit=on`); trainers are Kubernetes Jobs on
//! the fake API server of `tests/common/fake_kube.rs` (created, never run:
//! the benchmark plays the trainers). Needs `wrk` and PostgreSQL's server
//! packages.
//!
//! Run: `cargo bench --bench replicas` (knobs: JOBS=100 CONNECTIONS=32
//! DURATION=20s KILLS=5).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/fake_kube.rs"]
mod fake_kube;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{api, pg, Daemon, Opts};
use fake_kube::FakeKube;
use serde_json::{json, Value};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn replica(fake: &FakeKube, url: &str, dir: &Path, name: &str) -> Daemon {
    let kubeconfig = fake.kubeconfig(dir);
    Daemon::start_with(Opts {
        envs: vec![
            ("DATABASE_URL".into(), url.to_string()),
            ("TRAINING_MODE".into(), "kubernetes".into()),
            ("KUBE_CONFIG_PATH".into(), kubeconfig.display().to_string()),
            ("KUBE_NAMESPACE".into(), fake.ns.clone()),
            ("PLATFORM_LEADER_ELECTION".into(), "lease".into()),
            ("PLATFORM_REPLICA_ID".into(), name.into()),
            ("RUST_LOG".into(), "warn,platform::daemon=info".into()),
        ],
        data_dir: Some(dir.join(name)),
        ..Opts::default()
    })
}

async fn leads(d: &Daemon) -> bool {
    let Ok(r) = d.http().get(d.at("/health")).send().await else {
        return false;
    };
    r.json::<Value>().await.is_ok_and(|h| h["leader"] == true)
}

/// `requests/s`, p50 and p99 from a `wrk --latency` report.
fn summary(report: &str) -> (f64, String, String) {
    let mut out = (0.0, String::new(), String::new());
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rps] => out.0 = rps.parse().unwrap_or(0.0),
            ["50%", v] => out.1 = v.to_string(),
            ["99%", v] => out.2 = v.to_string(),
            _ => {}
        }
    }
    out
}

/// Starts `wrk` on `url` with the jobs in `jobs_file`.
fn wrk(
    url: &str,
    jobs_file: &Path,
    threads: usize,
    connections: usize,
    duration: &str,
) -> std::process::Child {
    let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/callback.lua");
    Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
        ])
        .args(["-d", duration, "-s"])
        .arg(lua)
        .arg(url)
        .arg("--")
        .arg(jobs_file)
        .arg(threads.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk (apt-get install -y wrk)")
}

fn finish(child: std::process::Child) -> (f64, String, String) {
    let out = child.wait_with_output().expect("wrk ran");
    summary(&String::from_utf8_lossy(&out.stdout))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let jobs: usize = env_or("JOBS", 100);
    let connections: usize = env_or("CONNECTIONS", 32);
    let duration: String = env_or("DURATION", "20s".to_string());
    let kills: usize = env_or("KILLS", 5);

    let fake = FakeKube::start();
    let url = pg::cluster().fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let mut ds = [
        replica(&fake, &url, dir.path(), "a"),
        replica(&fake, &url, dir.path(), "b"),
    ];

    // Jobs through both replicas; the leader launches them all. Two sets,
    // one per run, so neither run meets the other's sequences.
    let mut lines = Vec::new();
    for i in 0..2 * jobs {
        let job = api::create(&ds[i % 2], &common::demo_job(json!({"epochs": 100}))).await;
        let id = job["id"].as_str().unwrap().to_string();
        let name = format!("platform-{id}");
        let token = common::eventually(60, "the job launched", || async {
            fake.secret_data(&name).map(|d| d["CALLBACK_TOKEN"].clone())
        })
        .await;
        lines.push(format!("{id} {token}"));
    }
    let write = |name: &str, part: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, part.join("\n") + "\n").unwrap();
        path
    };
    let (single, spread) = lines.split_at(jobs);
    let single = write("single.txt", single);
    let halves = [
        write("spread-a.txt", &spread[..jobs / 2]),
        write("spread-b.txt", &spread[jobs / 2..]),
    ];

    println!("== callbacks, all on replica a ({connections} connections, {duration})");
    let one = finish(wrk(&ds[0].url, &single, 2, connections, &duration));
    println!(
        "one replica: {:.0} callbacks/s, p50 {}, p99 {}",
        one.0, one.1, one.2
    );

    println!(
        "== callbacks, spread over both replicas ({connections} connections in all, {duration})"
    );
    let runs: Vec<_> = (0..2)
        .map(|i| wrk(&ds[i].url, &halves[i], 1, connections / 2, &duration))
        .collect();
    let results: Vec<_> = runs.into_iter().map(finish).collect();
    for (i, r) in results.iter().enumerate() {
        println!(
            "replica {}: {:.0} callbacks/s, p50 {}, p99 {}",
            ["a", "b"][i],
            r.0,
            r.1,
            r.2
        );
    }
    let total: f64 = results.iter().map(|r| r.0).sum();
    println!("two replicas, aggregate: {total:.0} callbacks/s");

    // Fail-over.
    for graceful in [false, true] {
        let mut took = Vec::new();
        for round in 0..kills {
            let leader = loop {
                if leads(&ds[0]).await {
                    break 0;
                }
                if leads(&ds[1]).await {
                    break 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let other = 1 - leader;
            let t0 = Instant::now();
            if graceful {
                ds[leader].terminate();
            } else {
                ds[leader].kill9();
            }
            while !leads(&ds[other]).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            took.push(t0.elapsed().as_secs_f64());
            let name = format!("r{}{round}{}", leader, if graceful { "g" } else { "k" });
            ds[leader] = replica(&fake, &url, dir.path(), &name);
        }
        let what = if graceful {
            "graceful stop (SIGTERM)"
        } else {
            "kill -9"
        };
        println!(
            "fail-over after {what}, {kills} times: median {:.2} s, max {:.2} s ({})",
            median(took.clone()),
            took.iter().cloned().fold(0.0, f64::max),
            took.iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
