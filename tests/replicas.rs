//! Several `platform serve` replicas on one PostgreSQL database with
//! `--leader-election lease` (issue 13): the real binary, a throwaway
//! PostgreSQL cluster (`common/pg.rs`) and the Kubernetes runner against
//! the fake API server (`common/fake_kube.rs`), which records every Job
//! create. Exactly one replica leads; every replica serves the API; a
//! change made through one replica wakes streams on another; concurrent
//! callbacks and cancels through different replicas keep the state
//! machine; the leader's `kill -9` or graceful stop hands over without a
//! job launching twice; replicas starting together on an empty database
//! migrate it once; only the leader runs the retention policy;
//! single-node settings are refused.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::api::{self, callback, serve_outcome};
use common::{eventually, pg, Daemon, Opts};
use fake_kube::{FakeKube, Kind};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Replicas sharing one database and one fake API server.
struct Replicas {
    fake: FakeKube,
    url: String,
    dir: tempfile::TempDir,
    daemons: Vec<Daemon>,
    /// More environment for every replica.
    envs: Vec<(String, String)>,
}

impl Replicas {
    /// `n` replicas on a fresh database, started one after the other.
    fn start(n: usize) -> Replicas {
        Self::start_with(n, &[])
    }

    /// [`Replicas::start`], each replica with `envs` added.
    fn start_with(n: usize, envs: &[(&str, &str)]) -> Replicas {
        let mut r = Replicas {
            fake: FakeKube::start(),
            url: pg::cluster().fresh_database(),
            dir: tempfile::tempdir().unwrap(),
            daemons: Vec::new(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for i in 0..n {
            let d = r.replica(&format!("replica-{i}"));
            r.daemons.push(d);
        }
        r
    }

    /// Starts one more replica named `name` (not added to `daemons`).
    fn replica(&self, name: &str) -> Daemon {
        let mut d = replica_opts(&self.fake, &self.url, self.dir.path(), name);
        d.envs.extend(self.envs.iter().cloned());
        Daemon::start_with(d)
    }

    /// Waits until exactly one replica leads (never two at once) and
    /// returns its index.
    async fn leader(&self) -> usize {
        eventually(40, "exactly one replica to lead", || async {
            let leaders = leaders(&self.daemons).await;
            assert!(leaders.len() <= 1, "two replicas lead at once: {leaders:?}");
            leaders.first().copied()
        })
        .await
    }

    /// How many times the runner asked the API server to create Job `name`.
    fn creates(&self, name: &str) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| {
                r.method == "POST"
                    && r.path.ends_with("/jobs")
                    && r.body["metadata"]["name"] == name
            })
            .count()
    }
}

fn replica(fake: &FakeKube, url: &str, dir: &Path, name: &str) -> Daemon {
    Daemon::start_with(replica_opts(fake, url, dir, name))
}

fn replica_opts(fake: &FakeKube, url: &str, dir: &Path, name: &str) -> Opts {
    let kubeconfig = fake.kubeconfig(dir);
    Opts {
        envs: vec![
            ("DATABASE_URL".into(), url.to_string()),
            ("TRAINING_MODE".into(), "kubernetes".into()),
            ("KUBE_CONFIG_PATH".into(), kubeconfig.display().to_string()),
            ("KUBE_NAMESPACE".into(), fake.ns.clone()),
            ("PLATFORM_LEADER_ELECTION".into(), "lease".into()),
            ("PLATFORM_REPLICA_ID".into(), name.into()),
        ],
        data_dir: Some(dir.join(name)),
        ..Opts::default()
    }
}

async fn health(d: &Daemon) -> (StatusCode, Value) {
    let r = d.http().get(d.at("/health")).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Indexes of the replicas whose `/health` says they lead; every replica
/// must be ready (200), leading or not.
async fn leaders(ds: &[Daemon]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, d) in ds.iter().enumerate() {
        let (status, h) = health(d).await;
        assert_eq!(status, StatusCode::OK, "replica {i} is not ready: {h}");
        if h["leader"] == true {
            out.push(i);
        }
    }
    out
}

fn job_name(id: &str) -> String {
    format!("platform-{id}")
}

async fn create(d: &Daemon) -> String {
    api::create(d, &common::demo_job(json!({"epochs": 1}))).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_status(d: &Daemon, id: &str, status: &str) -> Value {
    eventually(40, &format!("job {id} to be {status}"), || async {
        let j = api::job(d, id).await;
        (j["status"] == status).then_some(j)
    })
    .await
}

/// The callback token the runner gave job `id`'s trainer (its Secret).
fn token(fake: &FakeKube, id: &str) -> String {
    fake.secret_data(&job_name(id)).expect("the job's Secret")["CALLBACK_TOKEN"].clone()
}

#[test]
fn lease_mode_is_refused_with_sqlite_or_the_subprocess_runner() {
    let (code, text) = serve_outcome(&["--leader-election", "lease"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("--leader-election lease needs a PostgreSQL DATABASE_URL"),
        "{text}"
    );
    let url = "postgresql://u:S3cret-pw-here@127.0.0.1:1/db";
    let (code, text) = serve_outcome(
        &[],
        &[("DATABASE_URL", url), ("PLATFORM_LEADER_ELECTION", "lease")],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("--leader-election lease needs --runner kubernetes"),
        "{text}"
    );
    assert!(!text.contains("S3cret-pw-here"), "{text}");
    let (code, text) = serve_outcome(&["--replica-id", "has space"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("invalid PLATFORM_REPLICA_ID"), "{text}");
}

#[test]
fn leader_election_off_leads_alone_and_says_so() {
    let d = Daemon::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, h) = rt.block_on(health(&d));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["leader"], true);
    assert!(h["epoch"].is_null(), "{h}");
    assert!(!h["replica"].as_str().unwrap().is_empty());
    let metrics = rt.block_on(d.get_text("/metrics"));
    assert!(metrics.contains("platform_leader 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_replicas_leads_every_one_serves_and_jobs_launch_once() {
    let r = Replicas::start(3);
    let leader = r.leader().await;
    let (_, h) = health(&r.daemons[leader]).await;
    assert!(h["epoch"].as_i64().unwrap() >= 1, "{h}");
    assert_eq!(h["replica"], format!("replica-{leader}"));
    let stored = r.daemons[0].sql("SELECT holder FROM leases WHERE name = 'scheduler'");
    assert_eq!(stored, format!("replica-{leader}"));

    // Jobs created through each replica launch once, through the leader.
    let mut ids = Vec::new();
    for d in &r.daemons {
        for _ in 0..3 {
            ids.push(create(d).await);
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let j = wait_status(&r.daemons[(i + 1) % 3], id, "running").await;
        assert_eq!(j["runner"], "kubernetes");
        assert_eq!(r.creates(&job_name(id)), 1, "job {id} was created twice");
    }
    let followers: Vec<&Daemon> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| &r.daemons[i])
        .collect();
    for d in followers {
        assert!(
            !d.log_text().contains("Kubernetes Job created"),
            "a follower launched a job"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_replica_sees_changes_made_through_another() {
    let r = Replicas::start(2);
    r.leader().await;
    let (a, b) = (&r.daemons[0], &r.daemons[1]);
    let id = create(a).await;
    wait_status(b, &id, "running").await;
    let resp = b
        .http()
        .get(b.at(&format!("/api/v1/training/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    // The stream's first read shows the job running.
    while !seen.contains("\"running\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Through A: a point, then the cancel. B hears of it only through the
    // wake-up channel (its own hub never saw these commits).
    let t = token(&r.fake, &id);
    let body_json = json!({"status": "running", "progress": 0.5, "sequence": 1,
        "metrics": {"epoch": 1, "loss": 0.25}});
    assert_eq!(
        callback(a, &id, Some(&t), &body_json).await.0,
        StatusCode::OK
    );
    assert_eq!(api::cancel(a, &id).await.0, StatusCode::NO_CONTENT);
    // Keep-alive comments arrive meanwhile: the deadline is for the change.
    let changed = async {
        while !(seen.contains("\"cancelled\"") && seen.contains("0.25")) {
            let chunk = body.next().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), changed)
        .await
        .expect("the change made through replica A, on replica B's stream");
    // The leader stops the trainer whichever replica took the cancel.
    eventually(
        30,
        "the cancelled job's Kubernetes Job to be deleted",
        || async {
            r.fake
                .get(Kind::Job, &job_name(&id))
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callbacks_and_cancels_through_two_replicas_keep_the_state_machine() {
    let r = Replicas::start(2);
    r.leader().await;
    let (a, b) = (&r.daemons[0], &r.daemons[1]);
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(create(&r.daemons[i % 2]).await);
    }
    let mut tokens = BTreeMap::new();
    for id in &jobs {
        wait_status(a, id, "running").await;
        tokens.insert(id.clone(), token(&r.fake, id));
    }
    const SEQUENCES: i64 = 15;
    // Each report goes to both replicas at once, as a trainer retrying
    // through a load balancer would: each sequence is stored once.
    for seq in 1..=SEQUENCES {
        let mut sends = Vec::new();
        for id in &jobs {
            let body = json!({"status": "running", "progress": seq as f64 / 100.0,
                "sequence": seq, "metrics": {"epoch": seq, "loss": 1.0 / seq as f64}});
            for d in [a, b] {
                let (id, t, body) = (id.clone(), tokens[id].clone(), body.clone());
                sends.push(async move { callback(d, &id, Some(&t), &body).await.0 });
            }
        }
        for status in futures::future::join_all(sends).await {
            assert_eq!(status, StatusCode::OK);
        }
    }
    for id in &jobs {
        assert_eq!(api::stored_points(a, id), SEQUENCES, "job {id}");
        let epochs: Vec<i64> = api::all_points(b, id)
            .await
            .iter()
            .map(|p| p["epoch"].as_i64().unwrap())
            .collect();
        assert_eq!(epochs, (1..=SEQUENCES).collect::<Vec<_>>());
    }

    // Cancels through both replicas at once, racing a completion report.
    let (cancelled, finished) = jobs.split_at(2);
    let mut races = Vec::new();
    for id in cancelled {
        for d in [a, b] {
            let id = id.clone();
            races.push(async move { api::cancel(d, &id).await.0 });
        }
    }
    let statuses = futures::future::join_all(races).await;
    for pair in statuses.chunks(2) {
        let ok = pair
            .iter()
            .filter(|s| **s == StatusCode::NO_CONTENT)
            .count();
        assert!(ok >= 1, "neither cancel was accepted: {pair:?}");
        for s in pair {
            assert!(
                *s == StatusCode::NO_CONTENT || *s == StatusCode::BAD_REQUEST,
                "{pair:?}"
            );
        }
    }
    for id in finished {
        let done = json!({"status": "completed", "progress": 1.0, "sequence": SEQUENCES + 1});
        let cancel = api::cancel(b, id);
        let t = tokens[id].clone();
        let report = callback(a, id, Some(&t), &done);
        let (c, (rep, _)) = tokio::join!(cancel, report);
        // Whichever committed first wins; the other is refused.
        let (c, rep) = (c.0, rep);
        assert!(
            (c == StatusCode::NO_CONTENT && rep == StatusCode::CONFLICT)
                || (c == StatusCode::BAD_REQUEST && rep == StatusCode::OK),
            "cancel {c}, completion {rep}"
        );
    }
    for id in &jobs {
        let j = api::job(b, id).await;
        let status = j["status"].as_str().unwrap().to_string();
        assert!(status == "cancelled" || status == "completed", "{j}");
        // Ended is final, on either replica.
        for d in [a, b] {
            let late = json!({"status": "running", "sequence": SEQUENCES + 2});
            let (s, _) = callback(d, id, Some(&tokens[id]), &late).await;
            assert_eq!(s, StatusCode::CONFLICT);
            assert_eq!(api::job(d, id).await["status"], status.as_str());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_hands_over_and_nothing_launches_twice() {
    let mut r = Replicas::start(2);
    let leader = r.leader().await;
    let follower = 1 - leader;
    // Load through the follower: creates, while the leader launches them.
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(create(&r.daemons[follower]).await);
    }
    r.daemons[leader].kill9();
    // Acknowledged while nobody leads: stored, launched by the successor.
    for _ in 0..10 {
        ids.push(create(&r.daemons[follower]).await);
    }
    let survivors = std::slice::from_ref(&r.daemons[follower]);
    eventually(40, "the follower to take over", || async {
        (leaders(survivors).await == [0]).then_some(())
    })
    .await;
    let (_, h) = health(&r.daemons[follower]).await;
    assert!(
        h["epoch"].as_i64().unwrap() >= 2,
        "a new holder, a new epoch: {h}"
    );
    let d = &r.daemons[follower];
    for id in &ids {
        wait_status(d, id, "running").await;
        let name = job_name(id);
        let job = r.fake.get(Kind::Job, &name).expect("its Kubernetes Job");
        // A second create may only be the successor adopting a Job whose
        // launch the dead leader had not recorded: one Job either way.
        assert!(
            r.creates(&name) <= 2,
            "job {id} created {} times",
            r.creates(&name)
        );
        let stored: Value = serde_json::from_str(
            &d.sql(&format!("SELECT runner_state FROM jobs WHERE id = '{id}'")),
        )
        .expect("stored runner state");
        assert_eq!(stored["uid"], job["metadata"]["uid"], "job {id}");
        // Its trainer's token (from the Secret) opens its routes.
        let t = token(&r.fake, id);
        let (s, _) = callback(
            d,
            id,
            Some(&t),
            &json!({"status": "running", "progress": 0.1}),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "job {id}: the trainer's token was replaced"
        );
    }
    assert_eq!(
        r.fake.all(Kind::Job).len(),
        ids.len(),
        "one Kubernetes Job per job"
    );
    // The restarted replica follows.
    r.daemons[leader] = r.replica(&format!("replica-{leader}-again"));
    let now = r.leader().await;
    assert_eq!(now, follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_releases_the_lease_for_the_next_leader() {
    let mut r = Replicas::start(2);
    let leader = r.leader().await;
    let follower = 1 - leader;
    assert_eq!(r.daemons[leader].terminate(), Some(0));
    assert!(r.daemons[leader]
        .log_text()
        .contains("released the leader lease"));
    // Released, not left to expire: its time is up already.
    let expired = r.daemons[follower].sql(&format!(
        "SELECT expires_at <= now() FROM leases WHERE holder = 'replica-{leader}'"
    ));
    assert!(
        expired == "t" || expired.is_empty(),
        "the lease was not released: {expired:?}"
    );
    let survivors = std::slice::from_ref(&r.daemons[follower]);
    eventually(40, "the follower to take over", || async {
        (leaders(survivors).await == [0]).then_some(())
    })
    .await;
    let id = create(&r.daemons[follower]).await;
    wait_status(&r.daemons[follower], &id, "running").await;
}

/// Every replica has the retention policy; only the leader runs it, and
/// after a hand-over the new leader does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_runs_the_retention_policy() {
    let mut r = Replicas::start_with(
        2,
        &[
            ("PLATFORM_RETENTION_DAYS", "30"),
            ("PLATFORM_RETENTION_INTERVAL", "1"),
        ],
    );
    let runs = |d: &Daemon| {
        d.log_text()
            .lines()
            .filter(|l| l.contains("prune finished") && l.contains("policy"))
            .count()
    };
    let leader = r.leader().await;
    let follower = 1 - leader;
    eventually(30, "the leader to prune three times", || async {
        (runs(&r.daemons[leader]) >= 3).then_some(())
    })
    .await;
    assert_eq!(runs(&r.daemons[follower]), 0, "a follower pruned");
    assert!(r.daemons[follower]
        .log_text()
        .contains("retention policy on"));

    assert_eq!(r.daemons[leader].terminate(), Some(0));
    eventually(40, "the new leader to prune", || async {
        (runs(&r.daemons[follower]) >= 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_together_on_an_empty_database_migrate_it_once() {
    let fake = FakeKube::start();
    let url = pg::cluster().fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let daemons = std::thread::scope(|s| {
        let starts: Vec<_> = ["x", "y"]
            .iter()
            .map(|name| {
                let (fake, url, dir) = (&fake, &url, dir.path());
                s.spawn(move || replica(fake, url, dir, name))
            })
            .collect();
        starts
            .into_iter()
            .map(|h| h.join().expect("a replica started"))
            .collect::<Vec<_>>()
    });
    let versions = daemons[0].sql("SELECT count(*), max(version) FROM schema_migrations");
    assert_eq!(versions, "13|13");
    eventually(40, "exactly one replica to lead", || async {
        let l = leaders(&daemons).await;
        assert!(l.len() <= 1, "{l:?}");
        (l.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_and_leads_again_when_the_database_returns() {
    // A cluster of this test's own, to stop under the daemon.
    let cluster = pg::Cluster::start(None, &[]);
    cluster.sql("postgres", "CREATE DATABASE own TEMPLATE template0");
    let url = format!(
        "postgresql://platform@127.0.0.1:{}/own?sslmode=disable&connect_timeout=2",
        cluster.port
    );
    let fake = FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let d = replica(&fake, &url, dir.path(), "alone");
    eventually(30, "the replica to lead", || async {
        (health(&d).await.1["leader"] == true).then_some(())
    })
    .await;
    cluster.pause();
    // Before its lease could expire (15 s after the last renewal), it
    // stops leading, while /health says the database is down.
    let h = eventually(45, "the leader to step down", || async {
        let (status, h) = health(&d).await;
        (h["leader"] == false).then_some((status, h))
    })
    .await;
    assert_eq!(h.0, StatusCode::SERVICE_UNAVAILABLE, "{}", h.1);
    assert!(d.log_text().contains("stepping down before it expires"));
    cluster.resume();
    let (_, h) = eventually(60, "the replica to lead again", || async {
        let (status, h) = health(&d).await;
        (status == StatusCode::OK && h["leader"] == true).then_some((status, h))
    })
    .await;
    // Its own expired lease: the same holder keeps the epoch.
    assert!(h["epoch"].as_i64().unwrap() >= 1, "{h}");
}
