//! Watching training live: the event streams (ordering, resumption,
//! termination, the all-jobs stream, lagging consumers, shutdown), the
//! CLI's live commands in their non-terminal form (`job watch`, `job create
//! --follow`, `metrics --follow/--plot/-o csv|json`, `job list --watch`),
//! the dashboard's routes and token handling, and the dashboard itself in
//! headless Chromium.
//!
//! Most jobs are driven by trainer callbacks sent from the test, on a
//! daemon started with `--hold-jobs` so no runner launches them (they stay
//! `pending` until a callback moves them). A trainer gets its callback
//! token from the runner in `CALLBACK_TOKEN`; these tests read it from the
//! daemon's database file (read-only) instead, standing in for that
//! environment variable. One test follows a real demo job end to end.

mod common;

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::api::{all_points, callback_token, create};
use common::{demo_job, eventually, stdout, Daemon, Opts};
use futures::StreamExt;
use platform::cli::stream::{Parser, SseEvent};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A trainer's view of one job: its id and callback token.
struct Trainer {
    http: reqwest::Client,
    base: String,
    id: String,
    token: String,
}

impl Trainer {
    /// Creates a job and waits until it runs, with the token its
    /// (stand-in) trainer was launched with.
    async fn new(d: &Daemon, config: Value) -> Trainer {
        let http = d.http();
        let job = create(d, &demo_job(config)).await;
        let id = job["id"].as_str().unwrap().to_string();
        let token = callback_token(d, &id);
        eventually(20, "the job to run", || async {
            (common::api::job(d, &id).await["status"] == "running").then_some(())
        })
        .await;
        Trainer {
            token,
            http,
            base: d.url.clone(),
            id,
        }
    }

    async fn callback(&self, body: Value) {
        let r = self
            .http
            .post(format!(
                "{}/api/v1/training/jobs/{}/callback",
                self.base, self.id
            ))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }

    /// A running callback at `epoch` of `total` with one metric point.
    async fn epoch(&self, epoch: i64, total: i64, loss: f64) {
        self.callback(json!({
            "status": "running",
            "progress": epoch as f64 / total as f64,
            "message": format!("epoch {epoch}/{total}"),
            "metrics": {"epoch": epoch, "loss": loss, "accuracy": 1.0 - loss},
        }))
        .await;
    }

    async fn batch(&self, points: Vec<Value>) {
        let r = self
            .http
            .post(format!(
                "{}/api/v1/training/jobs/{}/metrics",
                self.base, self.id
            ))
            .bearer_auth(&self.token)
            .json(&json!({"points": points}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }

    async fn complete(&self) {
        self.callback(json!({"status": "completed", "progress": 1.0,
            "checkpoint_s3_uri": "s3://bucket/jobs/best.pt"}))
            .await;
    }

    /// Uploads an artifact, as a trainer does with its outputs.
    async fn upload(&self, path: &str, body: &'static [u8]) {
        let r = self
            .http
            .put(format!(
                "{}/api/v1/training/jobs/{}/artifacts/{path}",
                self.base, self.id
            ))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }

    fn events_path(&self) -> String {
        format!("/api/v1/training/jobs/{}/events", self.id)
    }
}

/// An open SSE response, read event by event.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: Parser,
    ready: VecDeque<SseEvent>,
}

impl Events {
    /// Opens `path`; panics unless the answer is 200.
    async fn open(d: &Daemon, path: &str, last_id: Option<&str>) -> Events {
        let (status, events) = Self::try_open(d, path, last_id).await;
        assert_eq!(status, StatusCode::OK);
        events.unwrap()
    }

    async fn try_open(
        d: &Daemon,
        path: &str,
        last_id: Option<&str>,
    ) -> (StatusCode, Option<Events>) {
        let mut rb = d.http().get(d.at(path));
        if let Some(id) = last_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        if status != StatusCode::OK {
            return (status, None);
        }
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let events = Events {
            body: resp.bytes_stream().boxed(),
            parser: Parser::default(),
            ready: VecDeque::new(),
        };
        (status, Some(events))
    }

    /// The next event, `None` when the server ended the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("no event within 20 s");
            match chunk {
                Some(Ok(bytes)) => self.ready.extend(self.parser.feed(&bytes)),
                Some(Err(e)) => panic!("stream broke: {e}"),
                None => return None,
            }
        }
    }

    /// Events up to and including the first job event in a terminal state;
    /// then asserts the server ends the stream.
    async fn until_terminal(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        loop {
            let e = self
                .next()
                .await
                .expect("stream ended before the terminal state");
            let terminal = e.event == "job" && is_terminal(&data(&e));
            out.push(e);
            if terminal {
                assert!(
                    self.next().await.is_none(),
                    "the stream goes on after the terminal state"
                );
                return out;
            }
        }
    }
}

fn data(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap()
}

fn is_terminal(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

fn metric_ids(events: &[SseEvent]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.event == "metric")
        .map(|e| data(e)["id"].as_i64().unwrap())
        .collect()
}

/// Every stored point id of a job, ascending.
async fn stored_ids(d: &Daemon, id: &str) -> Vec<i64> {
    let points = all_points(d, id).await;
    points.iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

/// A daemon whose jobs launch a stand-in trainer that only hands the test
/// its callback token: the tests drive the jobs as their trainers.
fn held() -> Daemon {
    Daemon::capturing()
}

fn assert_strictly_ascending(ids: &[i64]) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not strictly ascending: {ids:?}"
    );
}

#[tokio::test]
async fn job_stream_sends_the_snapshot_first_then_points_in_order_and_ends() {
    let d = held();
    let t = Trainer::new(&d, json!({"epochs": 3})).await;
    let mut s = Events::open(&d, &t.events_path(), None).await;
    let first = s.next().await.unwrap();
    assert_eq!(first.event, "job");
    assert_eq!(data(&first)["status"], "running");
    assert_eq!(data(&first)["id"], t.id.as_str());
    assert!(
        first.id.as_deref().unwrap().starts_with("m0-j"),
        "{:?}",
        first.id
    );

    for epoch in 1..=3 {
        t.epoch(epoch, 3, 1.0 / epoch as f64).await;
    }
    t.batch((0..50).map(|i| json!({"step": i, "loss": 0.1})).collect())
        .await;
    t.complete().await;

    let rest = s.until_terminal().await;
    let ids = metric_ids(&rest);
    assert_eq!(
        ids,
        stored_ids(&d, &t.id).await,
        "every point, once, in id order"
    );
    assert_eq!(ids.len(), 53);
    let jobs: Vec<Value> = rest.iter().filter(|e| e.event == "job").map(data).collect();
    assert!(jobs.iter().any(|j| j["status"] == "running"));
    let progress: Vec<f64> = jobs
        .iter()
        .map(|j| j["progress"].as_f64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let last = jobs.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(last["checkpoint_s3_uri"], "s3://bucket/jobs/best.pt");
    // Each point arrives before the job version it came with.
    let epoch3 = rest
        .iter()
        .position(|e| e.event == "metric" && data(e)["epoch"] == 3)
        .unwrap();
    let running3 = rest
        .iter()
        .position(|e| e.event == "job" && data(e)["message"] == "epoch 3/3")
        .unwrap();
    assert!(epoch3 < running3);
}

#[tokio::test]
async fn resuming_with_last_event_id_has_no_gap_and_no_duplicate() {
    let d = held();
    let t = Trainer::new(&d, json!({})).await;
    t.epoch(1, 10, 0.9).await;
    t.epoch(2, 10, 0.8).await;

    // A fresh stream replays history after the snapshot; drop it mid-way.
    let mut s = Events::open(&d, &t.events_path(), None).await;
    let mut seen = vec![s.next().await.unwrap(), s.next().await.unwrap()];
    assert_eq!(seen[0].event, "job");
    assert_eq!(seen[1].event, "metric");
    drop(s);

    // Changes while disconnected.
    for e in 3..=5 {
        t.epoch(e, 10, 1.0 / e as f64).await;
    }
    let last_id = seen.last().unwrap().id.clone().unwrap();
    let mut s = Events::open(&d, &t.events_path(), Some(&last_id)).await;
    // The rest of the history, then the latest job version (not every one).
    let mut resumed = Vec::new();
    while resumed
        .iter()
        .filter(|e: &&SseEvent| e.event == "metric")
        .count()
        < 4
    {
        resumed.push(s.next().await.unwrap());
    }
    let job = s.next().await.unwrap();
    assert_eq!(job.event, "job");
    assert_eq!(data(&job)["message"], "epoch 5/10", "the current snapshot");
    resumed.push(job);
    // Live again.
    t.batch(vec![
        json!({"step": 1, "loss": 0.5}),
        json!({"step": 2, "loss": 0.4}),
    ])
    .await;
    t.complete().await;
    resumed.extend(s.until_terminal().await);
    seen.extend(resumed);

    let ids = metric_ids(&seen);
    assert_eq!(ids, stored_ids(&d, &t.id).await, "no gap, no duplicate");

    // The query parameter works like the header (EventSource cannot set it
    // on the first request), and the header wins over it.
    let path = format!(
        "{}?last_event_id={}",
        t.events_path(),
        seen[1].id.as_deref().unwrap()
    );
    let mut s = Events::open(&d, &path, None).await;
    let replay = s.until_terminal().await;
    assert_eq!(metric_ids(&replay), ids[1..].to_vec());
    let mut s = Events::open(&d, &path, Some("m0-j0")).await;
    assert_eq!(metric_ids(&s.until_terminal().await), ids);

    // Resuming after the end: 204, which tells EventSource to stop.
    let end = seen.last().unwrap().id.clone().unwrap();
    let (status, _) = Events::try_open(&d, &t.events_path(), Some(&end)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn stream_requests_are_validated() {
    let d = held();
    let t = Trainer::new(&d, json!({})).await;
    let get = |path: String, last: &'static str| {
        let rb = d.http().get(d.at(&path));
        async move {
            let r = if last.is_empty() {
                rb
            } else {
                rb.header("Last-Event-ID", last)
            }
            .send()
            .await
            .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = get(t.events_path(), "bogus").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("m<metric id>-j<microseconds>"),
        "{body}"
    );
    let (status, _) = get("/api/v1/training/events".into(), "m1-jx").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = get(format!("{}?last_event_id=m-1-j0", t.events_path()), "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = "/api/v1/training/jobs/01900000-0000-7000-8000-000000000000/events".to_string();
    let (status, body) = get(unknown, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = get("/api/v1/training/jobs/not-a-uuid/events".into(), "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn many_subscribers_see_the_same_events() {
    let d = held();
    let t = Trainer::new(&d, json!({})).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut s = Events::open(&d, &t.events_path(), None).await;
        assert_eq!(s.next().await.unwrap().event, "job");
        streams.push(s);
    }
    for e in 1..=5 {
        t.epoch(e, 5, 0.5).await;
    }
    t.complete().await;
    let expected = stored_ids(&d, &t.id).await;
    for mut s in streams {
        assert_eq!(metric_ids(&s.until_terminal().await), expected);
    }
}

#[tokio::test]
async fn global_stream_carries_every_job_and_resumes() {
    let d = held();
    let mut s = Events::open(&d, "/api/v1/training/events", None).await;
    let ready = s.next().await.unwrap();
    assert_eq!(ready.event, "ready", "the subscription is live");

    let a = Trainer::new(&d, json!({})).await;
    let b = Trainer::new(&d, json!({})).await;
    a.epoch(1, 2, 0.7).await;
    b.epoch(1, 2, 0.6).await;
    // Both jobs (created, launched: versions may coalesce into the latest)
    // and their points.
    let mut got = Vec::new();
    let seen = |got: &[SseEvent]| -> HashSet<String> {
        got.iter()
            .filter(|e| e.event == "job")
            .map(|e| data(e)["id"].as_str().unwrap().to_string())
            .collect()
    };
    while metric_ids(&got).len() < 2 || seen(&got).len() < 2 {
        got.push(s.next().await.unwrap());
    }
    assert_eq!(seen(&got), HashSet::from([a.id.clone(), b.id.clone()]));
    let ids = metric_ids(&got);
    assert_eq!(ids.len(), 2);
    assert_strictly_ascending(&ids);
    let cursor = got.last().unwrap().id.clone().unwrap();
    drop(s);

    // Missed while away: a completes, b gets a point.
    a.complete().await;
    b.epoch(2, 2, 0.5).await;
    let mut s = Events::open(&d, "/api/v1/training/events", Some(&cursor)).await;
    assert_eq!(s.next().await.unwrap().event, "ready");
    let mut resumed = Vec::new();
    while !(resumed.iter().any(|e: &SseEvent| {
        e.event == "job" && data(e)["id"] == a.id.as_str() && data(e)["status"] == "completed"
    }) && resumed
        .iter()
        .any(|e: &SseEvent| e.event == "job" && data(e)["message"] == "epoch 2/2"))
    {
        resumed.push(s.next().await.unwrap());
    }
    let mut all = ids.clone();
    all.extend(metric_ids(&resumed));
    assert_strictly_ascending(&all);
    assert_eq!(all.len(), 3, "no point missed or repeated: {all:?}");
    assert_eq!(
        resumed.iter().filter(|e| e.event == "job").count(),
        2,
        "one current version per changed job: {resumed:?}"
    );
}

#[tokio::test]
async fn a_lagging_consumer_rereads_from_the_database() {
    // A hub of 4 events, and batches of 1,000 points published at once:
    // the stream is idle (caught up) when each batch lands, so its
    // subscription falls behind at once and it must re-read the database.
    // (A stream kept busy sending never looks at the hub, so the client
    // reads each batch before the next is sent.)
    let d = Daemon::start_with(Opts {
        envs: vec![("PLATFORM_TEST_EVENT_CAPACITY".into(), "4".into())],
        ..Opts::default().capturing()
    });
    let t = Trainer::new(&d, json!({})).await;
    let mut s = Events::open(&d, &t.events_path(), None).await;
    assert_eq!(s.next().await.unwrap().event, "job");
    let (mut events, mut points) = (Vec::new(), 0);
    for batch in 0..24 {
        t.batch(
            (0..1000)
                .map(|i| json!({"step": batch * 1000 + i, "loss": 1.0, "grad_norm": 12345.678}))
                .collect(),
        )
        .await;
        while points < (batch as usize + 1) * 1000 {
            let e = s.next().await.expect("the stream ended early");
            points += usize::from(e.event == "metric");
            events.push(e);
        }
    }
    t.complete().await;
    events.extend(s.until_terminal().await);
    let ids = metric_ids(&events);
    assert_eq!(ids.len(), 24_000);
    assert_strictly_ascending(&ids);
    let stored = stored_ids(&d, &t.id).await;
    assert_eq!(ids.first(), stored.first());
    let lagged = d.get_text("/metrics").await;
    assert!(
        lagged
            .lines()
            .any(|l| l.starts_with("platform_event_stream_lagged_total") && !l.ends_with(" 0")),
        "the slow subscriber should have lagged and recovered:\n{lagged}"
    );
}

#[tokio::test]
async fn streams_send_keep_alive_comments() {
    let d = held();
    let resp = d
        .http()
        .get(d.at("/api/v1/training/events"))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while !text.contains(":keep-alive") && !text.contains(": keep-alive") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("no keep-alive within 25 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let mut d = held();
    let t = Trainer::new(&d, json!({})).await;
    let mut job = Events::open(&d, &t.events_path(), None).await;
    job.next().await.unwrap();
    let mut all = Events::open(&d, "/api/v1/training/events", None).await;
    all.next().await.unwrap();
    // Graceful shutdown would wait forever on open streams.
    assert_eq!(
        tokio::task::spawn_blocking(move || d.terminate())
            .await
            .unwrap(),
        Some(0)
    );
    assert!(job.next().await.is_none());
    assert!(all.next().await.is_none());
}

// ------------------------------------------------------------------ the CLI

/// A CLI process whose stdout is read line by line while it runs.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(d: &Daemon, args: &[&str]) -> Running {
        let mut child = d
            .cli_command(args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `what`.
    async fn line(&mut self, what: &str) -> String {
        let found = eventually(20, &format!("a line with {what:?}"), || {
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            let hit = self.seen.iter().find(|l| l.contains(what)).cloned();
            async move { hit }
        })
        .await;
        found
    }

    /// Waits for the exit; returns the code, all stdout lines and stderr.
    async fn finish(mut self) -> (i32, Vec<String>, String) {
        let status = tokio::task::spawn_blocking(move || {
            let mut err = String::new();
            std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
            let status = self.child.wait().unwrap();
            (status, err, self)
        });
        let (status, err, mut me) = tokio::time::timeout(Duration::from_secs(30), status)
            .await
            .expect("the CLI did not exit")
            .unwrap();
        // The reader thread ends with the pipe.
        while let Ok(l) = me.lines.recv_timeout(Duration::from_secs(5)) {
            me.seen.push(l);
        }
        (status.code().unwrap_or(-1), me.seen, err)
    }
}

#[tokio::test]
async fn job_watch_prints_lines_and_a_summary_when_not_a_terminal() {
    let d = held();
    let t = Trainer::new(&d, json!({"epochs": 2})).await;
    let mut w = Running::spawn(&d, &["job", "watch", &t.id[..8]]);
    let first = w.line("running").await;
    assert!(first.contains("0%"), "{first}");
    t.epoch(1, 2, 0.8).await;
    let running = w.line("running 50%").await;
    assert!(
        running.contains("epoch 1/2") && running.contains("loss 0.8"),
        "{running}"
    );
    t.epoch(2, 2, 0.3).await;
    t.complete().await;
    let (code, lines, err) = w.finish().await;
    assert_eq!(code, 0, "stderr: {err}");
    let text = lines.join("\n");
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes when not a terminal:\n{text}"
    );
    assert!(text.contains("job #1 completed"), "{text}");
    assert!(
        text.contains("best        loss 0.3 (epoch 2), accuracy 0.7 (epoch 2)"),
        "{text}"
    );
    assert!(
        text.contains("last        loss 0.3, accuracy 0.7 (epoch 2)"),
        "{text}"
    );
    assert!(
        text.contains("checkpoint  s3://bucket/jobs/best.pt"),
        "{text}"
    );
}

#[tokio::test]
async fn job_watch_exits_non_zero_unless_completed_and_prints_json_lines() {
    let d = held();
    let t = Trainer::new(&d, json!({})).await;
    let mut w = Running::spawn(&d, &["job", "watch", &t.id, "-o", "json"]);
    w.line("\"event\":\"job\"").await;
    t.epoch(1, 4, 0.9).await;
    t.callback(json!({"status": "failed",
        "error": "trainer exited with code 1; last log lines:\nTraceback (most recent call last):\nRuntimeError: CUDA out of memory"}))
        .await;
    let (code, lines, err) = w.finish().await;
    assert_eq!(code, 1);
    // Why it failed, all of it: the log lines too, not just the first line.
    assert_eq!(
        err.trim_end(),
        "error: job #1 ended failed: trainer exited with code 1; last log lines:\n  \
         Traceback (most recent call last):\n  RuntimeError: CUDA out of memory"
    );
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "job");
    assert_eq!(events[0]["data"]["status"], "running");
    assert!(events
        .iter()
        .all(|e| e["id"].as_str().unwrap().starts_with('m')));
    let metric = events.iter().find(|e| e["event"] == "metric").unwrap();
    assert_eq!(metric["data"]["loss"], 0.9);
    assert_eq!(events.last().unwrap()["data"]["status"], "failed");

    // Cancelled jobs exit non-zero too, and an ended job returns at once.
    let t = Trainer::new(&d, json!({})).await;
    common::api::cancel(&d, &t.id).await;
    let out = tokio::task::spawn_blocking({
        let cmd = d.cli_command(&["job", "watch", &t.id], &[]);
        move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("cancelled"), "{}", stdout(&out));
}

#[tokio::test]
async fn a_real_demo_job_is_followed_from_creation_to_completion() {
    let d = Daemon::start_with(Opts {
        envs: vec![("DATASET_CHECK".into(), "off".into())],
        ..Opts::default()
    });
    let config = r#"{"epochs": 4, "epoch_seconds": 0.3, "steps_per_epoch": 5}"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(&file, config).unwrap();
    let args = [
        "job",
        "create",
        "--framework",
        "demo",
        "--model",
        "yolo11n",
        "--dataset",
        "s3://bucket/datasets/coco128/",
        "--config",
        file.to_str().unwrap(),
        "--follow",
    ];
    let out = tokio::task::spawn_blocking({
        let mut cmd = d.cli_command(&args, &[]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        common::stderr(&out)
    );
    // Progress lines while it runs, then the summary.
    assert!(
        text.lines()
            .any(|l| l.starts_with("running") && l.contains("epoch")),
        "{text}"
    );
    assert!(text.contains(" completed in "), "{text}");
    assert!(text.contains("  best        loss"), "{text}");
    assert!(text.contains("  last        loss"), "{text}");
}

#[tokio::test]
async fn job_watch_reconnects_across_a_daemon_restart() {
    let mut d = held();
    let mut t = Trainer::new(&d, json!({})).await;
    let mut w = Running::spawn(&d, &["job", "watch", &t.id]);
    w.line("running").await;
    d.restart();
    // Pooled connections died with the old process.
    t.http = d.http();
    t.epoch(1, 2, 0.5).await;
    t.complete().await;
    let (code, lines, err) = w.finish().await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("reconnecting"), "{err}");
    let text = lines.join("\n");
    assert!(text.contains("best        loss 0.5 (epoch 1)"), "{text}");
}

#[tokio::test]
async fn job_create_follow_watches_the_new_job() {
    let d = held();
    let mut child = d
        .cli_command(
            &[
                "job",
                "create",
                "-f",
                "demo",
                "-m",
                "yolo11n",
                "-d",
                "s3://bucket/datasets/x/",
                "--follow",
            ],
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "created job #1 (<id>)" comes first on stderr.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let id = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("created job #1 (")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{line}"))
            .to_string()
    })
    .await
    .unwrap();
    let t = Trainer {
        http: d.http(),
        base: d.url.clone(),
        token: callback_token(&d, &id),
        id,
    };
    t.epoch(1, 1, 0.25).await;
    t.complete().await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("job #1 completed"), "{text}");
    assert!(text.contains("best        loss 0.25 (epoch 1)"), "{text}");
}

/// `text` without terminal escape sequences and carriage returns.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// On a terminal, Ctrl-C detaches: the job keeps running and the note
/// starts on a line of its own, below the bar (not glued to it).
#[tokio::test]
async fn ctrl_c_on_a_terminal_detaches_below_the_bar() {
    let d = held();
    let t = Trainer::new(&d, json!({"epochs": 10})).await;
    t.epoch(3, 10, 0.5).await;
    // util-linux `script` runs the CLI on a pseudo-terminal; what is
    // written to its stdin is typed at that terminal.
    let mut child = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} job watch {}", common::bin().display(), t.id),
            "/dev/null",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm-256color")
        .env("HOME", d.data_dir.parent().unwrap())
        .env("PLATFORM_SERVER", &d.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script(1)");
    let (tx, rx) = mpsc::channel::<String>();
    let mut out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 {
                break;
            }
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let mut seen = String::new();
    while !plain(&seen).contains("epoch 3/10") {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(_) => panic!("no progress bar:\n{seen:?}"),
        }
    }
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"\x03").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push_str(&chunk);
    }
    assert_eq!(status.code(), Some(130), "{seen:?}");
    let text = plain(&seen);
    let at = text
        .find("detached from job #1; it keeps running. Re-attach with: platform job watch 1")
        .unwrap_or_else(|| panic!("no detach note:\n{text:?}"));
    assert!(
        text[..at].ends_with('\n'),
        "the note starts a line:\n{text:?}"
    );
    assert_eq!(common::api::job(&d, &t.id).await["status"], "running");
}

#[tokio::test]
async fn metrics_prints_csv_json_tables_plots_and_follows() {
    let d = held();
    let t = Trainer::new(&d, json!({})).await;
    // Out of step order on purpose: output is in ascending step order.
    t.batch(vec![
        json!({"epoch": 1, "step": 20, "loss": 0.5, "mAP50": 0.4}),
        json!({"epoch": 1, "step": 10, "loss": 0.75}),
    ])
    .await;
    let cli = |args: Vec<String>| {
        let cmd = d.cli_command(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        async move {
            tokio::task::spawn_blocking(move || {
                let mut cmd = cmd;
                cmd.output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let args = |extra: &[&str]| {
        let mut v = vec!["metrics".to_string(), t.id.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let csv = cli(args(&["-o", "csv"])).await;
    let csv = stdout(&csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,epoch,step,loss,mAP50,created_at");
    assert!(lines[1].contains(",1,10,0.75,,"), "{csv}");
    assert!(lines[2].contains(",1,20,0.5,0.4,"), "{csv}");

    let json_out = cli(args(&["-o", "json"])).await;
    let points: Vec<Value> = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| p["step"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![10, 20]
    );

    let table = stdout(&cli(args(&[])).await);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["EPOCH", "STEP", "loss", "mAP50", "TIME"]),
        "{table}"
    );

    let plot = cli(args(&["--plot", "loss,mAP50"])).await;
    let text = stdout(&plot);
    assert_eq!(plot.status.code(), Some(0), "{}", common::stderr(&plot));
    assert!(
        text.contains("loss: 2 points over steps, last 0.5, best 0.5"),
        "{text}"
    );
    assert!(text.contains("mAP50: 1 points over steps"), "{text}");
    assert!(
        text.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "a braille chart:\n{text}"
    );
    let bad = cli(args(&["--plot", "nope"])).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        common::stderr(&bad).contains("it has: loss, mAP50"),
        "{}",
        common::stderr(&bad)
    );

    // --follow: history, then new points as they come, until the job ends.
    let mut f = Running::spawn(&d, &["metrics", &t.id, "--follow", "-o", "csv"]);
    f.line(",1,20,0.5,0.4,").await;
    t.epoch(2, 2, 0.125).await;
    f.line(",2,,0.125,").await;
    t.complete().await;
    let (code, lines, err) = f.finish().await;
    assert_eq!(code, 0, "{err}");
    // The new point brought a new key (accuracy): a new header first.
    assert_eq!(lines[0], "id,epoch,step,loss,mAP50,created_at");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines[3], "id,epoch,step,loss,accuracy,mAP50,created_at");
    assert!(lines[4].contains(",2,,0.125,0.875,,"), "{lines:#?}");

    // JSON lines while following; an ended job ends at once.
    let out = cli(args(&["--follow", "-o", "json", "--last", "1"])).await;
    let text = stdout(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["loss"], 0.125);
}

#[tokio::test]
async fn job_list_watch_prints_a_snapshot_when_not_a_terminal() {
    let d = held();
    let t = Trainer::new(&d, json!({})).await;
    t.epoch(3, 4, 0.42).await;
    let idle = Trainer::new(&d, json!({})).await;
    let out = tokio::task::spawn_blocking({
        let mut cmd = d.cli_command(&["job", "list", "--watch"], &[]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0]
            .split_whitespace()
            .eq(["ID", "STATUS", "PROGRESS", "LATEST", "METRIC", "MODEL", "AGE"]),
        "{text}"
    );
    // Jobs by number: t is #1, idle #2.
    assert!(!text.contains(&t.id) && !text.contains(&idle.id), "{text}");
    let row = lines.iter().find(|l| l.starts_with("#1 ")).unwrap();
    assert!(
        row.contains("running") && row.contains("75%") && row.contains("loss 0.42 · accuracy 0.58"),
        "{row}"
    );
    let row = lines.iter().find(|l| l.starts_with("#2 ")).unwrap();
    assert!(row.contains("running") && row.contains(" - "), "{row}");
}

// ------------------------------------------------------------ the dashboard

#[tokio::test]
async fn dashboard_is_served_from_the_binary_and_linked_from_root() {
    let d = held();
    let http = d.http();
    let root: Value = d.get_json("/").await;
    assert_eq!(root["ui"], "/ui");
    for path in [
        "/ui",
        "/ui/",
        "/ui/jobs/01900000-0000-7000-8000-000000000000",
    ] {
        let r = http.get(d.at(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains(r#"<script src="/ui/app.js">"#), "{path}");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external resources"
        );
    }
    let js = http.get(d.at("/ui/app.js")).send().await.unwrap();
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.text().await.unwrap().contains("EventSource"));
    let css = http.get(d.at("/ui/app.css")).send().await.unwrap();
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let spec: Value = d.get_json("/openapi.json").await;
    assert!(spec["paths"]["/api/v1/training/jobs/{id}/events"]["get"].is_object());
    assert!(spec["paths"]["/api/v1/training/events"]["get"].is_object());
}

#[tokio::test]
async fn dashboard_and_streams_require_the_api_token_when_one_is_set() {
    let d = Daemon::start_with(Opts {
        args: vec![
            "--hold-jobs".into(),
            "--api-token".into(),
            "s3cret tok 0123456".into(),
        ],
        ..Opts::default()
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // No token: the login form, with 401.
    let r = http.get(d.at("/ui")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains(r#"action="/ui/login""#));
    assert_eq!(
        http.get(d.at("/api/v1/training/events"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Assets carry no data and stay public.
    assert_eq!(
        http.get(d.at("/ui/app.js")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // A wrong token is refused; the right one sets the cookie.
    let wrong = http
        .post(d.at("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    let ok = http
        .post(d.at("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=s3cret+tok+0123456")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();

    // The cookie (or ?token=) works for reads, EventSource included…
    let with_cookie = |path: &str| http.get(d.at(path)).header("cookie", pair.clone());
    assert_eq!(
        with_cookie("/ui").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        with_cookie("/api/v1/training/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let stream = with_cookie("/api/v1/training/events").send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    drop(stream);
    let by_query = http
        .get(d.at("/api/v1/training/events?token=s3cret%20tok%200123456"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    drop(by_query);
    let page = http
        .get(d.at("/ui?token=s3cret%20tok%200123456"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("platform_token=s3cret%20tok%200123456;"));
    // …but never for writes.
    let create = http
        .post(d.at("/api/v1/training/jobs"))
        .header("cookie", pair.clone())
        .json(&demo_job(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::UNAUTHORIZED);
    let create = http
        .post(d.at("/api/v1/training/jobs?token=s3cret%20tok%200123456"))
        .json(&demo_job(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::UNAUTHORIZED);
    // The header still works everywhere.
    let r = http
        .get(d.at("/ui"))
        .bearer_auth("s3cret tok 0123456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A browser script (`tests/ui/NAME.mjs`) driving the dashboard in real
/// headless Chromium; it says on stdout what it has seen, line by line.
///
/// Needs (CI installs them; these tests fail rather than skip without them):
///   apt-get install -y chromium nodejs npm
///   npm ci --prefix tests/ui          # playwright-core, pinned in package-lock.json
struct Browser {
    child: Child,
    lines: mpsc::Receiver<String>,
    said: Vec<String>,
}

impl Browser {
    /// The directory screenshots land in (`target/ui-screenshots`), with
    /// `name` removed from it.
    fn screenshot(name: &str) -> std::path::PathBuf {
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let _ = std::fs::remove_file(shots.join(name));
        shots.join(name)
    }

    fn start(script: &str, args: &[&std::ffi::OsStr]) -> Browser {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&chromium).exists(),
            "{chromium} is missing: apt-get install -y chromium (or set CHROMIUM)"
        );
        assert!(
            root.join("tests/ui/node_modules/playwright-core").is_dir(),
            "playwright-core is missing: npm ci --prefix tests/ui"
        );
        let mut child = std::process::Command::new("node")
            .arg(root.join("tests/ui").join(script))
            .args(args)
            .env("CHROMIUM", &chromium)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node is missing: apt-get install -y nodejs npm");
        let (tx, lines) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Browser {
            child,
            lines,
            said: Vec::new(),
        }
    }

    /// Waits for the script to say `what`; on anything else, fails with its stderr.
    fn expect(&mut self, what: &str) {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_default();
        self.said.push(line.clone());
        if line != what {
            let _ = self.child.kill();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err);
            panic!(
                "the browser script did not say {what:?}; it said {:?}; stderr:\n{err}",
                self.said
            );
        }
    }

    /// Waits for the script to end successfully.
    async fn finish(self) {
        let child = self.child;
        let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(
            status.status.success(),
            "the browser script failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
}

/// A screenshot file that holds a real picture.
fn assert_screenshot(path: &std::path::Path) {
    let png = std::fs::read(path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}

/// The dashboard in real headless Chromium, driven by `tests/ui/dashboard.mjs`.
/// The screenshot lands in `target/ui-screenshots/job.png`.
#[tokio::test]
async fn dashboard_updates_live_in_headless_chromium() {
    let shot = Browser::screenshot("job.png");
    let d = held();
    let t = Trainer::new(&d, json!({"epochs": 10})).await;
    for e in 1..=2 {
        t.epoch(e, 10, 1.0 / (e as f64 + 0.5)).await;
    }
    t.upload("checkpoints/best.pt", b"best-checkpoint-bytes")
        .await;
    let mut b = Browser::start(
        "dashboard.mjs",
        &[d.url.as_ref(), t.id.as_ref(), shot.as_os_str()],
    );
    // The script says when it is looking; the test then changes the job.
    b.expect("LIST_READY");
    t.epoch(5, 10, 0.2).await;
    b.expect("LIST_UPDATED");
    b.expect("CHART_READY");
    for e in 6..=8 {
        t.epoch(e, 10, 1.0 / (e as f64 + 0.5)).await;
        let points = (0..20)
            .map(|i| json!({"epoch": e, "step": e * 100 + i, "grad_norm": 1.0 + (i as f64).sin()}))
            .collect();
        t.batch(points).await;
    }
    b.expect("CHART_UPDATED");
    // The artifact downloads from its link; the cancel button cancels.
    b.expect("DOWNLOADED");
    b.expect("CANCELLED");
    assert_eq!(common::api::job(&d, &t.id).await["status"], "cancelled");
    b.finish().await;
    assert_screenshot(&shot);
}

/// The compare view (issue 19), driven by `tests/ui/compare.mjs`: two
/// running jobs picked in the table, their loss overlaid in one chart with
/// a legend of what differs, a new point drawn live. The screenshot lands
/// in `target/ui-screenshots/compare.png`.
#[tokio::test]
async fn dashboard_compare_view_overlays_runs_live() {
    let shot = Browser::screenshot("compare.png");
    let d = held();
    let a = Trainer::new(&d, json!({"epochs": 10, "lr": 0.1})).await;
    let b = Trainer::new(&d, json!({"epochs": 10, "lr": 0.01})).await;
    for e in 1..=3 {
        a.epoch(e, 10, 1.0 / (e as f64 + 0.5)).await;
        b.epoch(e, 10, 1.2 / (e as f64 + 0.5)).await;
    }
    let number = |id: &str| {
        let d = &d;
        let id = id.to_string();
        async move { common::api::job(d, &id).await["number"].as_i64().unwrap() }
    };
    let legend_a = format!("#{} lr=0.1", number(&a.id).await);
    let legend_b = format!("#{} lr=0.01", number(&b.id).await);
    let mut browser = Browser::start(
        "compare.mjs",
        &[
            d.url.as_ref(),
            a.id.as_ref(),
            b.id.as_ref(),
            legend_a.as_ref(),
            legend_b.as_ref(),
            shot.as_os_str(),
        ],
    );
    browser.expect("COMPARE_READY");
    a.epoch(4, 10, 0.15).await;
    browser.expect("COMPARE_UPDATED");
    browser.finish().await;
    assert_screenshot(&shot);
}
