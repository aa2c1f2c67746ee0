//! Idempotent job creation (`Idempotency-Key`, issue 16 item 1): a retry
//! with the same key and body gets the original answer and creates
//! nothing; another body under the key is 422; a key whose first request
//! is still being received is 409; keys expire (`IDEMPOTENCY_TTL`); 20
//! concurrent clients with one key make exactly one job; the CLI sends a
//! key. Real daemon, real HTTP.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::api::*;
use common::{Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `POST /jobs` with `key` → status, replay header, JSON body.
async fn submit(d: &Daemon, key: &str, body: &Value) -> (StatusCode, Option<String>, Value) {
    let resp = d
        .http()
        .post(d.at(JOBS))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("POST");
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = parts(resp).await;
    (status, replayed, body)
}

async fn job_count(d: &Daemon) -> usize {
    let (status, jobs) = get(d, &format!("{JOBS}?limit=1000")).await;
    assert_eq!(status, StatusCode::OK);
    jobs.as_array().unwrap().len()
}

#[tokio::test]
async fn a_retry_gets_the_original_answer_and_creates_nothing() {
    let d = Daemon::held();
    let (status, replayed, first) = submit(&d, "key-1", &job_body("alice")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(replayed, None);
    // The job moves on; the replay still answers what the create did.
    let id = first["id"].as_str().unwrap();
    assert_eq!(cancel(&d, id).await.0, StatusCode::NO_CONTENT);
    // Same request, keys in another order and a quoted key (sf-string).
    let reordered = json!({
        "dataset_s3_uri": "s3://bucket/datasets/coco128/",
        "framework": FRAMEWORK,
        "model_name": "yolo11n",
        "user_id": "alice",
    });
    let (status, replayed, again) = submit(&d, "\"key-1\"", &reordered).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first);
    assert_eq!(job_count(&d).await, 1);
    assert_eq!(job(&d, id).await["status"], "cancelled");
    // Another key is another job.
    let (status, replayed, other) = submit(&d, "key-2", &job_body("alice")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None));
    assert_ne!(other["id"], first["id"]);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_and_stores_nothing() {
    let d = Daemon::held();
    let (status, _, first) = submit(&d, "k", &job_body("alice")).await;
    assert_eq!(status, StatusCode::CREATED);
    let before = snapshot(&d);
    let mut changed = job_body("alice");
    changed["model_name"] = json!("yolo11s");
    let (status, replayed, body) = submit(&d, "k", &changed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(replayed, None);
    assert_eq!(body["field"], "Idempotency-Key");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap()),
        "{body}"
    );
    assert_eq!(snapshot(&d), before);
}

#[tokio::test]
async fn malformed_keys_are_bad_requests() {
    let d = Daemon::held();
    for key in ["", "has space", &"k".repeat(256)] {
        let (status, _, body) = submit(&d, key, &job_body("alice")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("Idempotency-Key"));
    }
    assert_eq!(job_count(&d).await, 0);
}

#[tokio::test]
async fn twenty_concurrent_clients_with_one_key_make_exactly_one_job() {
    let d = Daemon::held();
    let answers = futures::future::join_all((0..20).map(|_| async {
        let (status, _, body) = submit(&d, "sweep-7", &job_body("alice")).await;
        (status, body["id"].clone())
    }))
    .await;
    assert_eq!(job_count(&d).await, 1);
    let (_, jobs) = get(&d, JOBS).await;
    let id = &jobs[0]["id"];
    for (status, got) in &answers {
        match *status {
            StatusCode::CREATED => assert_eq!(got, id),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(answers.iter().any(|(s, _)| *s == StatusCode::CREATED));
}

#[tokio::test]
async fn a_key_whose_first_request_is_still_arriving_is_a_conflict() {
    let d = Daemon::held();
    let body = job_body("alice").to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    // The first client stalls half-way through its body.
    let addr = d.url.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "POST {JOBS} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Idempotency-Key: slow-1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    slow.flush().unwrap();
    let (status, body409) = common::eventually(10, "a 409 for the held key", || async {
        let (status, _, b) = submit(&d, "slow-1", &job_body("alice")).await;
        (status != StatusCode::CREATED).then_some((status, b))
    })
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body409}");
    assert!(body409["detail"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    assert_eq!(job_count(&d).await, 0);
    // The first request completes and creates the job; the retry now replays it.
    slow.write_all(tail.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut slow, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (status, replayed, _) = submit(&d, "slow-1", &job_body("alice")).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::CREATED, Some("true"))
    );
    assert_eq!(job_count(&d).await, 1);
}

#[tokio::test]
async fn an_expired_key_makes_a_new_job() {
    let d = Daemon::start_with(Opts {
        envs: vec![("IDEMPOTENCY_TTL".into(), "1".into())],
        ..Opts::default().held()
    });
    let (_, _, first) = submit(&d, "nightly", &job_body("alice")).await;
    let (_, replayed, _) = submit(&d, "nightly", &job_body("alice")).await;
    assert_eq!(replayed.as_deref(), Some("true"), "within the window");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, replayed, second) = submit(&d, "nightly", &job_body("alice")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None), "{second}");
    assert_ne!(second["id"], first["id"]);
    // The new job holds the key now.
    let (_, replayed, third) = submit(&d, "nightly", &job_body("alice")).await;
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(third["id"], second["id"]);
    assert_eq!(job_count(&d).await, 2);
}

#[tokio::test]
async fn the_cli_sends_a_key_and_reuses_a_given_one() {
    let d = Daemon::held();
    let args = [
        "--quiet",
        "job",
        "create",
        "-f",
        FRAMEWORK,
        "-m",
        "m",
        "-d",
        "s3://b/d/",
        "-u",
        "alice",
        "--idempotency-key",
        "cli-1",
    ];
    let first = d.cli(&args);
    assert!(first.status.success(), "{}", common::stderr(&first));
    let again = d.cli(&args);
    assert!(again.status.success(), "{}", common::stderr(&again));
    assert_eq!(common::stdout(&first), common::stdout(&again));
    assert_eq!(job_count(&d).await, 1);
    // Without the flag every run is a new job (a fresh key each time).
    let plain = &args[..args.len() - 2];
    assert!(d.cli(plain).status.success());
    assert!(d.cli(plain).status.success());
    assert_eq!(job_count(&d).await, 3);
}
