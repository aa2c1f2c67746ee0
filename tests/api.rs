//! Black-box tests of the REST API (SPEC §2 and the decisions of §7): every
//! seed endpoint plus batch ingest and `/metrics`, success and failure
//! paths, hostile input, and the API token. Each test starts the real
//! binary on an ephemeral port and talks HTTP to it; after every rejected
//! request it checks that the database did not change.

mod common;

use common::api::*;
use common::{Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// Asserts a 4xx `{"detail": …}` error (with `field` for 422) and returns the body.
#[track_caller]
fn assert_error(status: StatusCode, body: &Value, want: StatusCode) -> &Value {
    assert_eq!(status, want, "body: {body}");
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"));
    assert!(!detail.is_empty());
    body
}

/// Asserts a 422 naming `field`.
#[track_caller]
fn assert_invalid(status: StatusCode, body: &Value, field: &str) {
    assert_error(status, body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], json!(field), "body: {body}");
    assert!(
        s(&body["detail"]).contains(field),
        "detail should name {field}: {body}"
    );
}

fn parse_time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = s(v);
    assert!(text.ends_with('Z'), "timestamps are UTC with Z: {text}");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

// ---------------------------------------------------------------- service

#[tokio::test]
async fn health_and_root_describe_the_service() {
    let d = Daemon::held();
    let (status, body) = get(&d, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "platform-backend");
    assert_eq!(body["version"], VERSION);
    assert_eq!(body["checks"]["database"], "ok");

    let (status, body) = get(&d, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["service"], "platform-backend");
    assert_eq!(body["docs"], "/docs");
    assert_eq!(body["health"], "/health");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let d = Daemon::held();
    let http = d.http();
    let mut seen = std::collections::HashSet::new();
    for path in ["/health", "/nope", JOBS, "/api/v1/training/jobs/garbage"] {
        let resp = http.get(d.at(path)).send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(!id.is_empty(), "{path}");
        assert!(seen.insert(id), "request ids are unique");
    }
    let resp = http
        .get(d.at("/health"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-request-id"],
        "trace-me-42",
        "a caller's id is kept"
    );
}

#[tokio::test]
async fn openapi_is_version_3_and_lists_every_path() {
    let d = Daemon::held();
    let (status, doc) = get(&d, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(s(&doc["openapi"]).starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    let expect: &[(&str, &[&str])] = &[
        ("/", &["get"]),
        ("/health", &["get"]),
        ("/metrics", &["get"]),
        ("/api/v1/training/jobs", &["get", "post"]),
        ("/api/v1/training/jobs/{id}", &["get", "delete"]),
        ("/api/v1/training/jobs/{id}/callback", &["post"]),
        ("/api/v1/training/jobs/{id}/metrics", &["get", "post"]),
    ];
    for (path, methods) in expect {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", paths.keys()));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} is not documented");
        }
    }
    let create = &paths["/api/v1/training/jobs"]["post"]["responses"];
    for code in ["201", "400", "413", "415", "422"] {
        assert!(create.get(code).is_some(), "create documents {code}");
    }
}

#[tokio::test]
async fn docs_render_from_local_assets_only() {
    let d = Daemon::held();
    let resp = d.http().get(d.at("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN or remote URL: {html}"
    );
    assert!(
        html.contains("/openapi.json"),
        "the page loads the local spec"
    );
    // Swagger UI's validator badge would fetch an image from swagger.io
    // whenever the page is not served from localhost.
    assert!(
        html.contains("validatorUrl: null"),
        "the online validator is off: {html}"
    );
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            assets.push(part.split('"').next().unwrap().to_string());
        }
    }
    assert!(assets.len() >= 2, "a script and a stylesheet: {assets:?}");
    for asset in assets {
        assert!(asset.starts_with('/'), "{asset} is local");
        let resp = d.http().get(d.at(&asset)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{asset}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        let body = resp.bytes().await.unwrap();
        assert!(
            body.len() > 10_000,
            "{asset} is the real asset ({} bytes)",
            body.len()
        );
        if asset.ends_with(".js") {
            assert!(ct.contains("javascript"), "{asset}: {ct}");
        } else if asset.ends_with(".css") {
            assert!(ct.starts_with("text/css"), "{asset}: {ct}");
        }
    }
}

#[tokio::test]
async fn prometheus_exposes_requests_callbacks_and_jobs_by_status() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let bob = create_id(&d, "bob").await;
    cancel(&d, &bob).await;
    let (st, _) = callback(&d, &id, Some(&token), &json!({"status": "running"})).await;
    assert_eq!(st, StatusCode::OK);
    let resp = d.http().get(d.at("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        "platform_jobs{status=\"pending\"} 0",
        "platform_jobs{status=\"running\"} 1",
        "platform_jobs{status=\"cancelled\"} 1",
        "platform_jobs{status=\"completed\"} 0",
        "platform_callbacks_total{outcome=\"applied\"} 1",
        "platform_jobs_created_total 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    assert!(text.contains("platform_http_requests_total{method=\"POST\",route=\"/api/v1/training/jobs\",status=\"201\"} 2"));
    assert!(text.contains("# TYPE platform_http_request_duration_seconds"));

    // Made-up methods share one label value instead of adding series.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let resp = d
        .http()
        .request(brew, d.at("/nowhere"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    let text = d.get_text("/metrics").await;
    assert!(!text.contains("BREW"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
}

// ----------------------------------------------------------------- create

#[tokio::test]
async fn create_returns_every_field_of_a_pending_job() {
    let d = Daemon::held();
    let before = chrono::Utc::now();
    let job = create(&d, &job_body("alice")).await;
    let id = uuid::Uuid::parse_str(s(&job["id"])).expect("id is a UUID");
    assert_eq!(id.get_version_num(), 7, "UUID v7");
    assert_eq!(job["user_id"], "alice");
    assert_eq!(job["model_name"], "yolo11n");
    assert_eq!(job["framework"], FRAMEWORK);
    assert_eq!(job["dataset_s3_uri"], "s3://bucket/datasets/coco128/");
    assert_eq!(job["config"], Value::Null, "config is null when omitted");
    assert!(job.as_object().unwrap().contains_key("config"));
    assert_eq!(job["status"], "pending");
    assert_eq!(job["progress"], json!(0.0));
    for key in [
        "message",
        "checkpoint_s3_uri",
        "error",
        "started_at",
        "completed_at",
    ] {
        assert!(
            job.as_object().unwrap().contains_key(key),
            "{key} is present"
        );
        assert_eq!(job[key], Value::Null, "{key}");
    }
    let created = parse_time(&job["created_at"]);
    assert_eq!(job["updated_at"], job["created_at"]);
    assert!(created >= before - chrono::Duration::seconds(1) && created <= chrono::Utc::now());

    // GET returns the same object.
    assert_eq!(common::api::job(&d, s(&job["id"])).await, job);

    // A config object round-trips exactly; an explicit null is null.
    let config = json!({"epochs": 50, "batch": 16, "lr": 0.001, "aug": {"flip": true, "names": ["a", "b"]}, "note": null});
    let mut body = job_body("alice");
    body["config"] = config.clone();
    assert_eq!(create(&d, &body).await["config"], config);
    body["config"] = Value::Null;
    assert_eq!(create(&d, &body).await["config"], Value::Null);
}

#[tokio::test]
async fn create_rejects_invalid_fields_with_422_and_stores_nothing() {
    let d = Daemon::held();
    let before = snapshot(&d);
    let long = |n: usize| "é".repeat(n);
    let cases: Vec<(&str, Value)> = vec![
        ("user_id", Value::Null),
        ("user_id", json!("")),
        ("user_id", json!("   ")),
        ("user_id", json!(long(256))),
        ("user_id", json!(5)),
        ("user_id", json!(true)),
        ("user_id", json!(["alice"])),
        ("user_id", json!({"name": "alice"})),
        ("model_name", json!("")),
        ("model_name", json!(long(256))),
        ("model_name", json!(1.5)),
        ("framework", json!("")),
        ("framework", json!(long(101))),
        ("framework", json!(7)),
        ("dataset_s3_uri", json!("")),
        ("dataset_s3_uri", json!(long(1025))),
        ("dataset_s3_uri", json!({})),
        ("config", json!([1, 2])),
        ("config", json!("epochs=5")),
        ("config", json!(42)),
        ("config", json!(true)),
    ];
    for (field, value) in cases {
        let mut body = job_body("alice");
        body[field] = value.clone();
        let (status, err) = post(&d, JOBS, &body).await;
        assert_invalid(status, &err, field);
        assert_eq!(snapshot(&d), before, "{field}={value} stored something");
    }
    // Missing required fields, one at a time.
    for field in ["user_id", "model_name", "framework", "dataset_s3_uri"] {
        let mut body = job_body("alice");
        body.as_object_mut().unwrap().remove(field);
        let (status, err) = post(&d, JOBS, &body).await;
        assert_invalid(status, &err, field);
    }
    // Bodies that are JSON but not an object.
    for body in [json!([]), json!("job"), json!(5), Value::Null] {
        let (status, err) = post(&d, JOBS, &body).await;
        assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(snapshot(&d), before);
}

#[tokio::test]
async fn lengths_count_characters_not_bytes() {
    let d = Daemon::held();
    let mut body = job_body(&"é".repeat(255));
    body["model_name"] = json!("模".repeat(255));
    body["dataset_s3_uri"] = json!(format!("s3://b/{}", "ü".repeat(1024 - 7)));
    let job = create(&d, &body).await;
    assert_eq!(s(&job["user_id"]).chars().count(), 255);
    assert_eq!(s(&job["user_id"]).len(), 510, "two bytes per character");
    assert_eq!(s(&job["dataset_s3_uri"]).chars().count(), 1024);
    body["user_id"] = json!("é".repeat(256));
    let (status, err) = post(&d, JOBS, &body).await;
    assert_invalid(status, &err, "user_id");
    assert!(s(&err["detail"]).contains("255"), "{err}");
}

/// Issue 11.1: what can never be launched is refused at create, not
/// stored to block the queue: a NUL (or any control character) cannot go
/// into a trainer's environment, and a config over 64 KiB would not fit in
/// one environment string.
#[tokio::test]
async fn what_could_never_launch_is_refused_at_create() {
    let d = Daemon::held();
    let before = snapshot(&d);
    for field in ["user_id", "model_name", "framework", "dataset_s3_uri"] {
        for bad in ["\u{0}", "\u{1}", "\u{1b}", "\n", "\t", "\u{7f}", "\u{9b}"] {
            let mut body = job_body("alice");
            body[field] = json!(format!("{}{bad}x", s(&body[field])));
            let (status, err) = post(&d, JOBS, &body).await;
            assert_invalid(status, &err, field);
            assert!(s(&err["detail"]).contains("control characters"), "{err}");
        }
    }
    // {"k":"…"} is 8 bytes plus the string: 64 KiB is the most.
    let config = |n: usize| json!({ "k": "x".repeat(n - 8) });
    let mut body = job_body("alice");
    body["config"] = config(65_537);
    let (status, err) = post(&d, JOBS, &body).await;
    assert_invalid(status, &err, "config");
    assert!(s(&err["detail"]).contains("65536 bytes"), "{err}");
    assert_eq!(snapshot(&d), before, "nothing was stored");
    body["config"] = config(65_536);
    let job = create(&d, &body).await;
    assert_eq!(job["config"], config(65_536));
    // Non-ASCII text is fine; only control characters are refused.
    let mut body = job_body("zoë ✓");
    body["model_name"] = json!("yolo11n — 模型");
    create(&d, &body).await;
    // The limit is documented where clients look.
    let (_, doc) = get(&d, "/openapi.json").await;
    let described = &doc["components"]["schemas"]["CreateJob"]["properties"]["config"];
    assert!(described.to_string().contains("65536 bytes"), "{described}");
}

#[tokio::test]
async fn unknown_framework_is_rejected_naming_the_registered_ones() {
    let d = Daemon::held();
    let before = snapshot(&d);
    let mut body = job_body("alice");
    body["framework"] = json!("tensorflow-1.0");
    let (status, err) = post(&d, JOBS, &body).await;
    assert_invalid(status, &err, "framework");
    let detail = s(&err["detail"]);
    assert!(detail.contains("tensorflow-1.0"), "{detail}");
    assert!(
        detail.contains("demo"),
        "names the registered frameworks: {detail}"
    );
    assert_eq!(snapshot(&d), before);
}

// ------------------------------------------------------------------- list

async fn list(d: &Daemon, query: &str) -> Vec<Value> {
    let (status, body) = get(d, &format!("{JOBS}{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body.as_array().expect("a JSON array").clone()
}

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|j| s(&j["id"]).to_string()).collect()
}

#[tokio::test]
async fn list_is_newest_first_and_filters() {
    let d = Daemon::held();
    assert_eq!(list(&d, "").await, Vec::<Value>::new());
    let mut created = Vec::new();
    for i in 0..6 {
        created.push(create_id(&d, if i % 2 == 0 { "alice" } else { "bob" }).await);
    }
    // Cancel one job so two statuses exist.
    assert_eq!(
        cancel(&d, &created[1]).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );

    let all = list(&d, "").await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(ids(&all), newest_first);
    let times: Vec<_> = all
        .iter()
        .map(|j| (parse_time(&j["created_at"]), s(&j["id"]).to_string()))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "created_at desc, then id desc"
    );

    let alice = list(&d, "?user_id=alice").await;
    assert_eq!(
        ids(&alice),
        vec![created[4].clone(), created[2].clone(), created[0].clone()]
    );
    assert!(list(&d, "?user_id=nobody").await.is_empty());

    let cancelled = list(&d, "?status_filter=cancelled").await;
    assert_eq!(ids(&cancelled), vec![created[1].clone()]);
    assert_eq!(
        list(&d, "?status=cancelled").await,
        cancelled,
        "status is an alias"
    );
    assert_eq!(list(&d, "?status=pending").await.len(), 5);
    assert_eq!(list(&d, "?status=pending&user_id=bob").await.len(), 2);
    assert!(list(&d, "?status=running").await.is_empty());

    assert_eq!(ids(&list(&d, "?limit=2").await), newest_first[..2]);
    assert_eq!(
        ids(&list(&d, "?limit=2&offset=2").await),
        newest_first[2..4]
    );
    assert_eq!(ids(&list(&d, "?offset=5").await), newest_first[5..]);
    assert!(list(&d, "?offset=6").await.is_empty());
    assert!(list(&d, "?offset=1000000").await.is_empty());

    // id_prefix: the CLI's prefix resolution.
    let target = &created[3];
    let hits = list(&d, &format!("?id_prefix={}", &target[..30])).await;
    assert_eq!(ids(&hits), vec![target.clone()]);
    let upper = list(&d, &format!("?id_prefix={}", target[..30].to_uppercase())).await;
    assert_eq!(
        ids(&upper),
        vec![target.clone()],
        "prefixes are case-insensitive"
    );
    assert_eq!(list(&d, &format!("?id_prefix={target}")).await.len(), 1);
    // A prefix all ids share matches them all.
    let common_len = (0..36)
        .take_while(|&i| {
            created
                .iter()
                .all(|id| id.as_bytes()[i] == created[0].as_bytes()[i])
        })
        .count();
    assert!(
        common_len >= 4,
        "UUID v7 ids created together share their time prefix"
    );
    assert_eq!(
        list(&d, &format!("?id_prefix={}", &created[0][..common_len]))
            .await
            .len(),
        6
    );
    assert!(list(&d, "?id_prefix=ffffffff").await.is_empty());
}

#[tokio::test]
async fn list_limit_defaults_to_50_and_allows_1_to_1000() {
    let d = Daemon::held();
    let http = d.http();
    let creates = (0..55).map(|i| {
        let http = http.clone();
        let url = d.at(JOBS);
        async move {
            let r = http
                .post(url)
                .json(&job_body(&format!("u{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    });
    futures::future::join_all(creates).await;
    assert_eq!(list(&d, "").await.len(), 50);
    assert_eq!(list(&d, "?limit=1").await.len(), 1);
    assert_eq!(list(&d, "?limit=1000").await.len(), 55);
    let before = snapshot(&d);
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1.5", "limit"),
        ("?limit=99999999999999999999999", "limit"),
        ("?offset=-1", "offset"),
        ("?offset=x", "offset"),
        ("?status_filter=done", "status_filter"),
        ("?status=Running", "status_filter"),
        ("?id_prefix=xyz", "id_prefix"),
        ("?id_prefix=%27%20OR%201%3D1", "id_prefix"),
    ] {
        let (status, err) = get(&d, &format!("{JOBS}{query}")).await;
        assert_invalid(status, &err, field);
        let detail = s(&err["detail"]);
        assert!(
            !detail.contains(&format!("{field}: {field}")),
            "the field is named once: {detail}"
        );
    }
    assert_eq!(snapshot(&d), before);
}

/// Lists are streamed as they are serialized, not built as one response in
/// memory (so no Content-Length), and are still exactly one JSON array.
#[tokio::test]
async fn lists_are_streamed_as_one_json_array() {
    let d = Daemon::held();
    // Under the 64 KiB config limit, but several chunks of the stream each.
    let blob = "x".repeat(60 * 1024);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = job_body("streamer");
        body["config"] = json!({"blob": blob, "i": i});
        ids.push(s(&create(&d, &body).await["id"]).to_string());
    }
    ids.reverse();
    let resp = d
        .http()
        .get(d.at(&format!("{JOBS}?user_id=streamer")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(
        resp.headers().get("content-length").is_none(),
        "the list is streamed, not buffered: {:?}",
        resp.headers()
    );
    let jobs: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(self::ids(&jobs), ids);
    for (i, job) in jobs.iter().rev().enumerate() {
        assert_eq!(job["config"], json!({"blob": blob, "i": i}));
    }
    let (status, none) = get(&d, &format!("{JOBS}?user_id=nobody")).await;
    assert_eq!((status, none), (StatusCode::OK, json!([])));

    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "points").await;
    let points: Vec<Value> = (0..3).map(|i| json!({"epoch": i, "loss": 1.0})).collect();
    let (status, _) = ingest(&d, &id, Some(&token), &json!({"points": points})).await;
    assert_eq!(status, StatusCode::OK);
    let resp = d
        .http()
        .get(d.at(&job_path(&id, "/metrics?order=asc")))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-length").is_none());
    let got: Vec<Value> = resp.json().await.unwrap();
    let epochs: Vec<i64> = got.iter().map(|m| m["epoch"].as_i64().unwrap()).collect();
    assert_eq!(epochs, [0, 1, 2]);
}

#[tokio::test]
async fn list_breaks_created_at_ties_on_id_descending() {
    let d0 = Daemon::held();
    let mut ids_made = Vec::new();
    for _ in 0..4 {
        ids_made.push(create_id(&d0, "alice").await);
    }
    let mut d = d0;
    assert_eq!(d.terminate(), Some(0));
    // Give every job the same creation time, as jobs created within one
    // microsecond would have.
    d.sql("UPDATE jobs SET created_at = '2026-01-01T00:00:00.000000Z'");
    d.restart();
    let mut expect = ids_made.clone();
    expect.sort();
    expect.reverse();
    assert_eq!(ids(&list(&d, "").await), expect);
    assert_eq!(ids(&list(&d, "?limit=2&offset=1").await), expect[1..3]);
}

// ------------------------------------------------------------- get/cancel

const GARBAGE_IDS: &[&str] = &[
    "nope",
    "123",
    "0193f1c2",
    "01a21690-fc50-77c5-ab05-f96e0543d13",
    "01a21690-fc50-77c5-ab05-f96e0543d133x",
    "01a21690-fc50-77c5-ab05-f96e0543d13g",
    "%00",
    "%27%3B%20DROP%20TABLE%20jobs%3B--",
    "..%2F..%2Fetc%2Fpasswd",
    "%F0%9F%92%A5",
    "%FF%FE",
];

#[tokio::test]
async fn get_answers_404_for_unknown_and_422_for_malformed_ids() {
    let d = Daemon::held();
    let id = create_id(&d, "alice").await;
    let (status, body) = get(&d, &job_path(&id.to_uppercase(), "")).await;
    assert_eq!(status, StatusCode::OK, "uppercase UUIDs are UUIDs: {body}");
    assert_eq!(body["id"], json!(id));

    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, err) = get(&d, &job_path(&unknown, "")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND);
    assert!(s(&err["detail"]).contains(&unknown), "{err}");

    let long = "a".repeat(10_000);
    for garbage in GARBAGE_IDS.iter().copied().chain([long.as_str()]) {
        let (status, err) = get(&d, &job_path(garbage, "")).await;
        assert_invalid(status, &err, "job_id");
    }
}

#[tokio::test]
async fn cancel_is_204_then_400_once_terminal() {
    let held = Daemon::held();
    let http = held.http();
    let id = create_id(&held, "alice").await;
    let resp = http
        .delete(held.at(&job_path(&id, "")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty(), "204 has no body");
    let job = common::api::job(&held, &id).await;
    assert_eq!(job["status"], "cancelled");
    assert!(!job["completed_at"].is_null(), "completed_at is stamped");
    assert_eq!(job["started_at"], Value::Null, "it never ran");
    assert!(parse_time(&job["updated_at"]) >= parse_time(&job["created_at"]));

    let before = snapshot(&held);
    let (status, err) = cancel(&held, &id).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST);
    assert!(s(&err["detail"]).contains("cancelled"), "{err}");
    assert_eq!(snapshot(&held), before, "a refused cancel changes nothing");

    // A running job can be cancelled; a completed one cannot.
    let d = Daemon::capturing();
    let (running, token) = job_with_token(&d, "alice").await;
    callback(&d, &running, Some(&token), &json!({"status": "running"})).await;
    assert_eq!(
        cancel(&d, &running).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let job = common::api::job(&d, &running).await;
    assert_eq!(job["status"], "cancelled");
    assert!(!job["started_at"].is_null());

    let (done, token) = job_with_token(&d, "alice").await;
    callback(
        &d,
        &done,
        Some(&token),
        &json!({"status": "completed", "progress": 1.0}),
    )
    .await;
    let (status, err) = cancel(&d, &done).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST);
    assert!(s(&err["detail"]).contains("completed"), "{err}");
    assert_eq!(common::api::job(&d, &done).await["status"], "completed");

    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, err) = cancel(&d, &unknown).await;
    assert_error(status, &err, StatusCode::NOT_FOUND);
    for garbage in GARBAGE_IDS {
        let (status, err) = cancel(&d, garbage).await;
        assert_invalid(status, &err, "job_id");
    }
}

// --------------------------------------------------------------- callback

#[tokio::test]
async fn callback_needs_the_jobs_own_token() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let (_other, other_token) = job_with_token(&d, "bob").await;
    assert_ne!(token, other_token);
    assert!(token.len() >= 32, "tokens are long random secrets");
    let before = snapshot(&d);
    let body = json!({"status": "running", "progress": 0.5, "metrics": {"loss": 1.0}});
    for bad in [None, Some("wrong"), Some(other_token.as_str()), Some("")] {
        let (status, err) = callback(&d, &id, bad, &body).await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED);
    }
    // Other schemes and a token in the wrong place do not count.
    let resp = d
        .http()
        .post(d.at(&job_path(&id, "/callback")))
        .header("authorization", format!("Basic {token}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = d
        .http()
        .post(d.at(&format!("{}?token={token}", job_path(&id, "/callback"))))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(snapshot(&d), before, "rejected callbacks change nothing");

    let (status, ack) = callback(&d, &id, Some(&token), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack, json!({"status": "ok", "job_id": id, "applied": true}));

    // Unknown jobs are 404 whatever the token.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, _) = callback(&d, &unknown, Some(&token), &body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn callback_auth_off_accepts_seed_era_trainers() {
    let d = Daemon::start_with(
        Opts {
            envs: vec![("CALLBACK_AUTH".into(), "off".into())],
            ..Default::default()
        }
        .held(),
    );
    let id = create_id(&d, "alice").await;
    let (status, ack) = callback(
        &d,
        &id,
        None,
        &json!({"status": "running", "progress": 0.25}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(common::api::job(&d, &id).await["progress"], json!(0.25));
    // The rest of the rules still hold.
    let (status, err) = callback(&d, &id, None, &json!({"status": "pending"})).await;
    assert_invalid(status, &err, "status");
}

#[tokio::test]
async fn callback_applies_the_update_and_lifts_metrics() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let created = common::api::job(&d, &id).await;
    let body = json!({
        "job_id": id,
        "status": "running",
        "progress": 0.42,
        "message": "epoch 21/50",
        "metrics": {"epoch": 21, "step": 2100, "loss": 0.53, "accuracy": 0.81, "mAP50": 0.61, "lr": 1e-4},
        "checkpoint_s3_uri": "s3://bucket/jobs/x/best.pt",
        "error": null,
        "some_future_field": {"ignored": true},
        "gpu_temp": 71,
    });
    let (status, ack) = callback(&d, &id, Some(&token), &body).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"status": "ok", "job_id": id, "applied": true}));

    let job = common::api::job(&d, &id).await;
    assert_eq!(job["status"], "running");
    assert_eq!(job["progress"], json!(0.42));
    assert_eq!(job["message"], "epoch 21/50");
    assert_eq!(job["checkpoint_s3_uri"], "s3://bucket/jobs/x/best.pt");
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["completed_at"], Value::Null);
    // Started when the runner launched it; the callback only updated it.
    assert_eq!(job["started_at"], created["started_at"]);
    let started = parse_time(&job["started_at"]);
    assert!(parse_time(&job["updated_at"]) > started);
    assert!(started >= parse_time(&created["created_at"]));
    assert!(job.get("some_future_field").is_none());

    let (status, points) = get(&d, &job_path(&id, "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 1);
    let p = &points[0];
    assert!(p["id"].as_i64().unwrap() > 0);
    assert_eq!(p["job_id"], json!(id));
    assert_eq!(p["epoch"], json!(21));
    assert_eq!(p["step"], json!(2100));
    assert_eq!(p["loss"], json!(0.53));
    assert_eq!(p["accuracy"], json!(0.81));
    assert_eq!(
        p["metrics"],
        json!({"epoch": 21, "step": 2100, "loss": 0.53, "accuracy": 0.81, "mAP50": 0.61, "lr": 1e-4})
    );
    parse_time(&p["created_at"]);

    // Without epoch/step/loss/accuracy the columns default: epoch 0, others null.
    callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "metrics": {"mAP50": 0.7}}),
    )
    .await;
    let (_, points) = get(&d, &job_path(&id, "/metrics?limit=1")).await;
    let p = &points[0];
    assert_eq!(
        (
            p["epoch"].clone(),
            p["step"].clone(),
            p["loss"].clone(),
            p["accuracy"].clone()
        ),
        (json!(0), Value::Null, Value::Null, Value::Null)
    );
    assert_eq!(p["metrics"], json!({"mAP50": 0.7}));
}

#[tokio::test]
async fn omitted_progress_is_unchanged_and_empty_metrics_store_no_point() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "progress": 0.3, "message": "a"}),
    )
    .await;
    let (status, _) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "metrics": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "progress": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let job = common::api::job(&d, &id).await;
    assert_eq!(
        job["progress"],
        json!(0.3),
        "omitted/null progress leaves it"
    );
    assert_eq!(job["message"], "a", "omitted message leaves it");
    assert_eq!(stored_points(&d, &id), 0, "metrics: {{}} stores no point");
    // Progress may go to exactly 0 and 1.
    for p in [0.0, 1.0] {
        let (status, _) = callback(
            &d,
            &id,
            Some(&token),
            &json!({"status": "running", "progress": p}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(common::api::job(&d, &id).await["progress"], json!(p));
    }
}

#[tokio::test]
async fn callback_stamps_started_and_completed_at_once() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let launched = common::api::job(&d, &id).await;
    callback(&d, &id, Some(&token), &json!({"status": "running"})).await;
    let first = common::api::job(&d, &id).await;
    let started = first["started_at"].clone();
    assert!(!started.is_null());
    assert_eq!(started, launched["started_at"], "the launch set it");
    callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "progress": 0.5}),
    )
    .await;
    let second = common::api::job(&d, &id).await;
    assert_eq!(
        second["started_at"], started,
        "started_at is set on the first running state only"
    );
    assert!(parse_time(&second["updated_at"]) >= parse_time(&first["updated_at"]));
    assert_eq!(second["completed_at"], Value::Null);
    callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "completed", "progress": 1.0, "message": "done"}),
    )
    .await;
    let done = common::api::job(&d, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["started_at"], started);
    assert!(parse_time(&done["completed_at"]) >= parse_time(&started));
    assert_eq!(done["completed_at"], done["updated_at"]);
}

#[tokio::test]
async fn terminal_jobs_answer_409_with_their_status_and_change_nothing() {
    let d = Daemon::capturing();
    for terminal in ["completed", "failed", "cancelled"] {
        let (id, token) = job_with_token(&d, "alice").await;
        let (status, _) = callback(
            &d,
            &id,
            Some(&token),
            &json!({"status": terminal, "message": "the end"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let before = job_state(&d, &id);
        for next in ["running", "completed", "failed", "cancelled"] {
            let body = json!({"status": next, "progress": 0.9, "message": "zombie", "metrics": {"loss": 9.0}});
            let (status, err) = callback(&d, &id, Some(&token), &body).await;
            assert_error(status, &err, StatusCode::CONFLICT);
            assert_eq!(
                err["status"],
                json!(terminal),
                "409 carries the current status: {err}"
            );
            assert!(s(&err["detail"]).contains(terminal), "{err}");
            // Batch ingest follows the same rule.
            let (status, err) =
                ingest(&d, &id, Some(&token), &json!({"points": [{"loss": 1.0}]})).await;
            assert_error(status, &err, StatusCode::CONFLICT);
            assert_eq!(err["status"], json!(terminal));
        }
        assert_eq!(
            job_state(&d, &id),
            before,
            "a 409 changes nothing ({terminal})"
        );
        assert_eq!(common::api::job(&d, &id).await["message"], "the end");
    }
}

#[tokio::test]
async fn callback_validation_failures_are_422_and_store_nothing() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "progress": 0.1}),
    )
    .await;
    let before = snapshot(&d);
    let other = uuid::Uuid::now_v7().to_string();
    let cases: Vec<(&str, Value)> = vec![
        ("status", json!({"status": "pending"})),
        ("status", json!({"status": "finished"})),
        ("status", json!({"status": "RUNNING"})),
        ("status", json!({"status": 1})),
        ("status", json!({"status": null})),
        ("status", json!({"progress": 0.5})),
        ("progress", json!({"status": "running", "progress": 1.5})),
        ("progress", json!({"status": "running", "progress": -0.1})),
        (
            "progress",
            json!({"status": "running", "progress": 1.0000001}),
        ),
        ("progress", json!({"status": "running", "progress": "half"})),
        ("job_id", json!({"status": "running", "job_id": other})),
        (
            "job_id",
            json!({"status": "running", "job_id": "not-a-uuid"}),
        ),
        (
            "metrics.loss",
            json!({"status": "running", "metrics": {"loss": "low"}}),
        ),
        (
            "metrics.loss",
            json!({"status": "running", "metrics": {"loss": null}}),
        ),
        (
            "metrics.nested",
            json!({"status": "running", "metrics": {"nested": {"a": 1}}}),
        ),
        (
            "metrics.list",
            json!({"status": "running", "metrics": {"list": [1, 2]}}),
        ),
        (
            "metrics.epoch",
            json!({"status": "running", "metrics": {"epoch": 1.5}}),
        ),
        (
            "metrics.step",
            json!({"status": "running", "metrics": {"step": 2.25}}),
        ),
        ("metrics", json!({"status": "running", "metrics": [1, 2]})),
        (
            "message",
            json!({"status": "running", "message": "x".repeat(10_001)}),
        ),
        ("message", json!({"status": "running", "message": 5})),
        ("sequence", json!({"status": "running", "sequence": -1})),
        ("sequence", json!({"status": "running", "sequence": 1.5})),
        ("sequence", json!({"status": "running", "sequence": "7"})),
    ];
    for (field, body) in cases {
        let (status, err) = callback(&d, &id, Some(&token), &body).await;
        assert_invalid(status, &err, field);
        assert_eq!(snapshot(&d), before, "{body} changed something");
    }
}

#[tokio::test]
async fn sequence_makes_callbacks_idempotent() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    // The ack says whether the callback was applied (`applied`).
    let send = |seq: Option<i64>, progress: f64, applied: bool| {
        let mut body = json!({"status": "running", "progress": progress, "metrics": {"step": (progress * 100.0) as i64}});
        if let Some(seq) = seq {
            body["sequence"] = json!(seq);
        }
        let (d, id, token) = (&d, &id, &token);
        async move {
            let (status, ack) = callback(d, id, Some(token), &body).await;
            assert_eq!(status, StatusCode::OK, "{ack}");
            assert_eq!(
                ack,
                json!({"status": "ok", "job_id": id, "applied": applied})
            );
        }
    };
    let progress = || async {
        common::api::job(&d, &id).await["progress"]
            .as_f64()
            .unwrap()
    };

    send(Some(1), 0.1, true).await;
    assert_eq!((progress().await, stored_points(&d, &id)), (0.1, 1));
    // A retry of an applied sequence is acknowledged and not applied again.
    let before = snapshot(&d);
    send(Some(1), 0.9, false).await;
    assert_eq!(snapshot(&d), before);
    // Gaps are fine.
    send(Some(5), 0.5, true).await;
    assert_eq!((progress().await, stored_points(&d, &id)), (0.5, 2));
    // Older sequences are acknowledged and ignored.
    let before = snapshot(&d);
    send(Some(3), 0.3, false).await;
    send(Some(5), 0.3, false).await;
    send(Some(0), 0.3, false).await;
    assert_eq!(snapshot(&d), before);
    // Callbacks without a sequence are always applied.
    send(None, 0.6, true).await;
    send(None, 0.6, true).await;
    assert_eq!((progress().await, stored_points(&d, &id)), (0.6, 4));
    send(Some(6), 0.7, true).await;
    assert_eq!(progress().await, 0.7);
    // An integer may be spelled 7.0 (JSON Schema's `integer`, as documented).
    let (status, ack) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "sequence": 7.0}),
    )
    .await;
    assert_eq!(
        (status, ack["applied"].clone()),
        (StatusCode::OK, json!(true)),
        "{ack}"
    );
    send(Some(7), 0.7, false).await;

    // The final callback retried after the job ended is still a 200.
    let done = json!({"status": "completed", "progress": 1.0, "sequence": 10});
    assert_eq!(
        callback(&d, &id, Some(&token), &done).await.0,
        StatusCode::OK
    );
    let before = snapshot(&d);
    let (status, ack) = callback(&d, &id, Some(&token), &done).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a duplicate after the end is acknowledged: {ack}"
    );
    assert_eq!(ack["applied"], false, "{ack}");
    let (status, _) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "sequence": 9}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(snapshot(&d), before);
    // A new sequence after the end is a real update, refused.
    let (status, err) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "sequence": 11}),
    )
    .await;
    assert_error(status, &err, StatusCode::CONFLICT);
    assert_eq!(err["status"], "completed");
}

// ---------------------------------------------------------------- metrics

/// A job with `n` points (step i, loss 1/(i+1)), stored in one batch.
async fn job_with_points(d: &Daemon, n: usize) -> (String, String) {
    let (id, token) = job_with_token(d, "alice").await;
    let mut left = n;
    let mut step = 0usize;
    while left > 0 {
        let take = left.min(1000);
        let points: Vec<Value> = (step..step + take)
            .map(|i| json!({"epoch": i / 10, "step": i, "loss": 1.0 / (i as f64 + 1.0)}))
            .collect();
        let (status, ack) = ingest(d, &id, Some(&token), &json!({"points": points})).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["stored"], json!(take));
        left -= take;
        step += take;
    }
    (id, token)
}

fn point_ids(points: &Value) -> Vec<i64> {
    points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn metrics_are_newest_first_by_default_with_asc_and_after_id() {
    let d = Daemon::capturing();
    let (id, _) = job_with_points(&d, 250).await;
    let all = all_points(&d, &id).await;
    assert_eq!(all.len(), 250);
    let asc_ids: Vec<i64> = all.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert!(asc_ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(all[0]["step"], json!(0));
    assert_eq!(all[249]["step"], json!(249));

    let (status, page) = get(&d, &job_path(&id, "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let desc: Vec<i64> = asc_ids.iter().rev().copied().collect();
    assert_eq!(
        point_ids(&page),
        desc[..100],
        "default: newest first, 100 points"
    );

    let (_, page) = get(&d, &job_path(&id, "/metrics?order=asc&limit=10")).await;
    assert_eq!(point_ids(&page), asc_ids[..10]);
    let (_, page) = get(&d, &job_path(&id, "/metrics?order=desc&limit=1")).await;
    assert_eq!(point_ids(&page), vec![desc[0]]);

    let after = asc_ids[239];
    let (_, page) = get(
        &d,
        &job_path(&id, &format!("/metrics?order=asc&after_id={after}")),
    )
    .await;
    assert_eq!(point_ids(&page), asc_ids[240..]);
    let (_, page) = get(&d, &job_path(&id, &format!("/metrics?after_id={after}"))).await;
    assert_eq!(
        point_ids(&page),
        desc[..10],
        "after_id keeps the requested order"
    );
    let (_, page) = get(
        &d,
        &job_path(&id, &format!("/metrics?after_id={}", asc_ids[249])),
    )
    .await;
    assert_eq!(page, json!([]));
    let (_, page) = get(&d, &job_path(&id, "/metrics?limit=10000")).await;
    assert_eq!(point_ids(&page).len(), 250);

    // Another job's points never leak in.
    let (other, _) = job_with_points(&d, 3).await;
    let (_, page) = get(&d, &job_path(&other, "/metrics?limit=10000")).await;
    assert_eq!(point_ids(&page).len(), 3);
    assert!(page
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["job_id"] == json!(other)));

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=10001", "limit"),
        ("?limit=x", "limit"),
        ("?order=up", "order"),
        ("?after_id=-1", "after_id"),
        ("?after_id=z", "after_id"),
        ("?max_points=1", "max_points"),
        ("?max_points=q", "max_points"),
    ] {
        let (status, err) = get(&d, &job_path(&id, &format!("/metrics{query}"))).await;
        assert_invalid(status, &err, field);
    }
    let (status, _) = get(&d, &job_path(&uuid::Uuid::now_v7().to_string(), "/metrics")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = get(&d, &job_path("garbage", "/metrics")).await;
    assert_invalid(status, &err, "job_id");
}

#[tokio::test]
async fn max_points_downsamples_keeping_first_last_and_extremes() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let mut points: Vec<Value> = (0..3000)
        .map(|i| json!({"step": i, "loss": 1.0 + (i % 7) as f64 * 0.01}))
        .collect();
    points[1234] = json!({"step": 1234, "loss": 50.0}); // a spike
    points[2345] = json!({"step": 2345, "loss": -50.0}); // a dip
    for chunk in points.chunks(1000) {
        let (status, _) = ingest(&d, &id, Some(&token), &json!({"points": chunk})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, page) = get(&d, &job_path(&id, "/metrics?max_points=60&order=asc")).await;
    assert_eq!(status, StatusCode::OK);
    let kept = page.as_array().unwrap();
    assert!(
        kept.len() <= 60 && kept.len() >= 30,
        "{} points",
        kept.len()
    );
    let steps: Vec<i64> = kept.iter().map(|p| p["step"].as_i64().unwrap()).collect();
    assert_eq!(steps.first(), Some(&0), "keeps the first point");
    assert_eq!(steps.last(), Some(&2999), "keeps the last point");
    assert!(
        steps.contains(&1234) && steps.contains(&2345),
        "keeps the spike and the dip: {steps:?}"
    );
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "ascending");
    assert!(
        kept.iter()
            .all(|p| p["metrics"].is_object() && p["job_id"] == json!(id)),
        "full points"
    );

    let (_, desc) = get(&d, &job_path(&id, "/metrics?max_points=60")).await;
    let mut rev = point_ids(&page);
    rev.reverse();
    assert_eq!(point_ids(&desc), rev, "default order is newest first");

    // Short histories come back whole; after_id narrows the window.
    let all = all_points(&d, &id).await;
    let after = all[2989]["id"].as_i64().unwrap();
    let (_, few) = get(
        &d,
        &job_path(
            &id,
            &format!("/metrics?max_points=50&order=asc&after_id={after}"),
        ),
    )
    .await;
    let steps: Vec<i64> = few
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, (2990..3000).collect::<Vec<i64>>());

    // Bounded like `limit`.
    for bad in ["1", "10001", "9223372036854775807"] {
        let (status, err) = get(&d, &job_path(&id, &format!("/metrics?max_points={bad}"))).await;
        assert_invalid(status, &err, "max_points");
    }
}

/// A long history is plotted from the blocks the writer summarises it in
/// (SQLite): the spike and the dip survive, the blocks cover the points
/// exactly, and a restart (which forgets how far the open block got)
/// carries on where the table says.
#[tokio::test]
async fn long_histories_plot_from_blocks_that_survive_a_restart() {
    let mut d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    async fn send(d: &Daemon, id: &str, token: &str, steps: std::ops::Range<i64>) {
        let point = |i: i64| match i {
            2222 => json!({"step": i, "loss": 50.0}),
            4444 => json!({"step": i, "loss": -50.0}),
            _ => json!({"step": i, "loss": 1.0 + (i % 13) as f64 * 0.01}),
        };
        let all: Vec<Value> = steps.map(point).collect();
        for chunk in all.chunks(1000) {
            let (status, _) = ingest(d, id, Some(token), &json!({"points": chunk})).await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    send(&d, &id, &token, 0..3000).await;
    d.restart();
    send(&d, &id, &token, 3000..6000).await;

    if d.pg_database().is_none() {
        let blocks = d.sql(&format!(
            "SELECT b.points, (SELECT COUNT(*) FROM points p WHERE p.job = b.job \
               AND p.id BETWEEN b.first_id AND b.last_id) FROM metric_blocks b \
             WHERE b.job = (SELECT number FROM jobs WHERE id = '{id}') ORDER BY b.first_id"
        ));
        assert_eq!(
            blocks.lines().collect::<Vec<_>>(),
            vec!["1024|1024"; 5],
            "whole blocks of 1024 points, the last 880 still open"
        );
    }
    let (status, page) = get(&d, &job_path(&id, "/metrics?max_points=6&order=asc")).await;
    assert_eq!(status, StatusCode::OK);
    let steps: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert!(steps.len() <= 6, "{steps:?}");
    assert_eq!((steps.first(), steps.last()), (Some(&0), Some(&5999)));
    assert!(
        steps.contains(&2222) && steps.contains(&4444),
        "keeps the spike and the dip: {steps:?}"
    );
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "ascending");
    let (_, desc) = get(&d, &job_path(&id, "/metrics?max_points=6")).await;
    let mut rev = point_ids(&page);
    rev.reverse();
    assert_eq!(point_ids(&desc), rev, "default order is newest first");
}

#[tokio::test]
async fn batch_ingest_is_all_or_nothing() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let (status, ack) = ingest(
        &d,
        &id,
        Some(&token),
        &json!({"points": [
            {"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.8, "accuracy": 0.5, "step": 20}
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack, json!({"status": "ok", "job_id": id, "stored": 2}));
    let all = all_points(&d, &id).await;
    assert_eq!(all[1]["epoch"], json!(2));
    assert_eq!(all[1]["step"], json!(20));
    assert_eq!(all[1]["accuracy"], json!(0.5));
    assert_eq!(
        common::api::job(&d, &id).await["status"],
        "running",
        "points do not change the status"
    );

    let before = snapshot(&d);
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"step": i})).collect();
    let cases: Vec<(&str, Value)> = vec![
        (
            "points[2].loss",
            json!({"points": [{"loss": 1}, {"loss": 2}, {"loss": "x"}]}),
        ),
        ("points[0].epoch", json!({"points": [{"epoch": 0.5}]})),
        ("points", json!({"points": too_many})),
        ("points", json!({"points": {"loss": 1}})),
        ("points", json!({})),
        ("sequence", json!({"points": [], "sequence": -3})),
    ];
    for (field, body) in cases {
        let (status, err) = ingest(&d, &id, Some(&token), &body).await;
        assert_invalid(status, &err, field);
        assert_eq!(snapshot(&d), before);
    }
    for bad in [None, Some("nope")] {
        let (status, err) = ingest(&d, &id, bad, &json!({"points": [{"loss": 1}]})).await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED);
    }
    // 1 MiB per request.
    let big: Vec<Value> = (0..1000)
        .map(|i| {
            let mut m = serde_json::Map::new();
            for k in 0..60 {
                m.insert(
                    format!("metric_with_a_long_name_{k:03}"),
                    json!(i as f64 + 0.123456789),
                );
            }
            Value::Object(m)
        })
        .collect();
    let body = json!({"points": big});
    assert!(serde_json::to_vec(&body).unwrap().len() > 1024 * 1024);
    let (status, err) = ingest(&d, &id, Some(&token), &body).await;
    assert_error(status, &err, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(snapshot(&d), before);

    // sequence: same rule as callbacks.
    let (_, ack) = ingest(
        &d,
        &id,
        Some(&token),
        &json!({"points": [{"loss": 1}], "sequence": 4}),
    )
    .await;
    assert_eq!(ack["stored"], json!(1));
    let (status, ack) = ingest(
        &d,
        &id,
        Some(&token),
        &json!({"points": [{"loss": 1}], "sequence": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ack["stored"],
        json!(0),
        "an applied sequence is not stored twice"
    );
    let (status, _) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "sequence": 3, "progress": 0.9}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        common::api::job(&d, &id).await["progress"],
        json!(0.0),
        "sequences are shared with callbacks"
    );
}

// ---------------------------------------------------------- hostile input

#[tokio::test]
async fn malformed_json_is_400_and_stores_nothing() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let before = snapshot(&d);
    let bodies: &[&[u8]] = &[
        b"",
        b"{",
        b"{bad",
        b"{\"user_id\": \"alice\",}",
        b"{\"user_id\": 'alice'}",
        b"{\"status\": \"running\"} trailing",
        b"\xff\xfe\x00",
        b"{\"status\": \"running\"\x00}",
        b"[1, 2",
    ];
    for body in bodies {
        let (status, err) = post_raw(&d, JOBS, None, body.to_vec()).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
        let (status, err) =
            post_raw(&d, &job_path(&id, "/callback"), Some(&token), body.to_vec()).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST);
    }
    assert_eq!(snapshot(&d), before);
}

#[tokio::test]
async fn non_finite_numbers_are_422() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let before = snapshot(&d);
    for lit in ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"] {
        let create = format!(
            r#"{{"user_id":"a","model_name":"m","framework":"demo","dataset_s3_uri":"s3://b/d/","config":{{"lr":{lit}}}}}"#
        );
        let (status, err) = post_raw(&d, JOBS, None, create).await;
        assert_invalid(status, &err, "config.lr");
        for (body, field) in [
            (
                format!(r#"{{"status":"running","progress":{lit}}}"#),
                "progress",
            ),
            (
                format!(r#"{{"status":"running","metrics":{{"loss":{lit}}}}}"#),
                "metrics.loss",
            ),
        ] {
            let (status, err) = post_raw(&d, &job_path(&id, "/callback"), Some(&token), body).await;
            assert_invalid(status, &err, field);
        }
        let batch = format!(r#"{{"points":[{{"loss":1}},{{"loss":{lit}}}]}}"#);
        let (status, err) = post_raw(&d, &job_path(&id, "/metrics"), Some(&token), batch).await;
        assert_invalid(status, &err, "points[1].loss");
    }
    // Overflow is refused even in fields the endpoint ignores.
    let overflow = r#"{"user_id":"a","model_name":"m","framework":"demo","dataset_s3_uri":"s3://b/d/","extra":{"x":[1e999]}}"#;
    let (status, err) = post_raw(&d, JOBS, None, overflow.to_string()).await;
    assert_invalid(status, &err, "extra.x[0]");
    let (status, err) = post_raw(
        &d,
        &job_path(&id, "/callback"),
        Some(&token),
        r#"{"status":"running","foo":-1e999}"#.to_string(),
    )
    .await;
    assert_invalid(status, &err, "foo");
    assert_eq!(snapshot(&d), before, "nothing stored");
    // A string "NaN" is just a string.
    let mut body = job_body("alice");
    body["config"] = json!({"mode": "NaN"});
    create(&d, &body).await;
    assert_ne!(snapshot(&d), before);
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let before = snapshot(&d);
    // serde would map these onto the fields by position.
    let (status, err) = post_raw(
        &d,
        JOBS,
        None,
        r#"["a","m","demo","s3://b/d/",null]"#.to_string(),
    )
    .await;
    assert_invalid(status, &err, "body");
    for body in [r#"["running",0.5,"msg"]"#, "[]", "\"running\"", "7"] {
        let (status, err) = post_raw(
            &d,
            &job_path(&id, "/callback"),
            Some(&token),
            body.to_string(),
        )
        .await;
        assert_invalid(status, &err, "body");
    }
    assert_eq!(snapshot(&d), before, "nothing stored");
}

#[tokio::test]
async fn json_endpoints_need_a_json_content_type() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let before = snapshot(&d);
    let body = serde_json::to_vec(&job_body("alice")).unwrap();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ] {
        for path in [
            JOBS.to_string(),
            job_path(&id, "/callback"),
            job_path(&id, "/metrics"),
        ] {
            let mut rb = d
                .http()
                .post(d.at(&path))
                .bearer_auth(&token)
                .body(body.clone());
            if let Some(ct) = ct {
                rb = rb.header("content-type", ct);
            }
            let (status, err) = parts(rb.send().await.unwrap()).await;
            assert_error(status, &err, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert!(s(&err["detail"]).contains("application/json"), "{err}");
        }
    }
    assert_eq!(snapshot(&d), before);
    // Parameters and +json types are JSON.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let resp = d
            .http()
            .post(d.at(JOBS))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{ct}");
    }
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413_even_when_chunked() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let mut big = job_body("alice");
    big["config"] = json!({"blob": "x".repeat(1024 * 1024)});
    let bytes = serde_json::to_vec(&big).unwrap();

    // With Content-Length.
    let (status, err) = post_raw(&d, JOBS, None, bytes.clone()).await;
    assert_error(status, &err, StatusCode::PAYLOAD_TOO_LARGE);

    // Chunked, no Content-Length: the limit applies while reading.
    for path in [JOBS.to_string(), job_path(&id, "/callback")] {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        let (status, err) = post_raw(
            &d,
            &path,
            Some(&token),
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
        assert_error(status, &err, StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Just under the limit is read, then judged on its merits: a config
    // that large is over its own limit (64 KiB).
    let mut fits = job_body("alice");
    fits["config"] = json!({"blob": "x".repeat(1024 * 1024 - 300)});
    let (status, err) = post(&d, JOBS, &fits).await;
    assert_invalid(status, &err, "config");
    assert_eq!(list_len(&d).await, 1, "nothing over a limit was stored");
}

async fn list_len(d: &Daemon) -> usize {
    get(d, JOBS).await.1.as_array().unwrap().len()
}

#[tokio::test]
async fn max_body_bytes_is_configurable() {
    let d = Daemon::start_with(
        Opts {
            args: vec!["--max-body-bytes".into(), "2048".into()],
            ..Default::default()
        }
        .held(),
    );
    let mut body = job_body("alice");
    body["config"] = json!({"blob": "x".repeat(3000)});
    let (status, err) = post(&d, JOBS, &body).await;
    assert_error(status, &err, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(s(&err["detail"]).contains("2048"), "{err}");
    create(&d, &job_body("alice")).await;
}

#[tokio::test]
async fn deep_nesting_and_huge_strings_are_refused_cleanly() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    let before = snapshot(&d);
    // 100k levels of nesting in config: past serde_json's recursion limit.
    let deep = format!(
        r#"{{"user_id":"a","model_name":"m","framework":"demo","dataset_s3_uri":"s3://b/d/","config":{{"x":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, err) = post_raw(&d, JOBS, None, deep).await;
    assert!(status.is_client_error(), "{status}: {err}");
    assert!(err["detail"].is_string());
    let deep_metrics = format!(
        r#"{{"status":"running","metrics":{}1{}}}"#,
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let (status, err) = post_raw(&d, &job_path(&id, "/callback"), Some(&token), deep_metrics).await;
    assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
    // Huge strings within the body limit.
    let (status, err) = post(&d, JOBS, &job_body(&"u".repeat(900_000))).await;
    assert_invalid(status, &err, "user_id");
    let (status, err) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "error": "e".repeat(900_000)}),
    )
    .await;
    assert_invalid(status, &err, "error");
    let key = "k".repeat(300);
    let mut metrics = serde_json::Map::new();
    metrics.insert(key.clone(), json!(1));
    let (status, err) = callback(
        &d,
        &id,
        Some(&token),
        &json!({"status": "running", "metrics": metrics}),
    )
    .await;
    assert_invalid(status, &err, &format!("metrics.{key}"));
    assert_eq!(snapshot(&d), before);
    // Deep but reasonable nesting is a config like any other.
    let mut body = job_body("alice");
    body["config"] = serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100)))
        .map(|v: Value| json!({"x": v}))
        .unwrap();
    create(&d, &body).await;
    assert_eq!(get(&d, "/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn garbage_ids_are_422_on_every_id_route() {
    let d = Daemon::held();
    let token = "t".repeat(64);
    let before = snapshot(&d);
    for garbage in GARBAGE_IDS {
        for (method, tail) in [
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/callback"),
            ("GET", "/metrics"),
            ("POST", "/metrics"),
        ] {
            let url = d.at(&job_path(garbage, tail));
            let rb = match method {
                "GET" => d.http().get(url),
                "DELETE" => d.http().delete(url),
                _ => d
                    .http()
                    .post(url)
                    .bearer_auth(&token)
                    .json(&json!({"status": "running", "points": []})),
            };
            let (status, err) = parts(rb.send().await.unwrap()).await;
            assert_invalid(status, &err, "job_id");
        }
    }
    assert_eq!(snapshot(&d), before);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let d = Daemon::held();
    let id = create_id(&d, "alice").await;
    let http = d.http();
    for path in [
        "/nope",
        "/api",
        "/api/v1",
        "/api/v1/training",
        "/api/v2/training/jobs",
        "/api/v1/training/jobs/",
        "/api/v1/training/jobs/x/y/z",
        &job_path(&id, "/nope"),
        "/docs/missing.js",
    ] {
        let (status, err) = parts(http.get(d.at(path)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(err, json!({"detail": "Not Found"}), "{path}");
    }
    let cases = [
        (reqwest::Method::PUT, JOBS.to_string()),
        (reqwest::Method::DELETE, JOBS.to_string()),
        (reqwest::Method::PUT, job_path(&id, "")),
        (reqwest::Method::POST, job_path(&id, "")),
        (reqwest::Method::GET, job_path(&id, "/callback")),
        (reqwest::Method::DELETE, job_path(&id, "/metrics")),
        (reqwest::Method::POST, "/health".to_string()),
        (reqwest::Method::DELETE, "/".to_string()),
    ];
    let before = snapshot(&d);
    for (method, path) in cases {
        let resp = http
            .request(method.clone(), d.at(&path))
            .send()
            .await
            .unwrap();
        assert!(resp.headers().contains_key("allow"), "{method} {path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let (status, err) = parts(resp).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(err["detail"].is_string(), "{err}");
    }
    assert_eq!(snapshot(&d), before);
}

#[tokio::test]
async fn hostile_input_never_breaks_the_daemon() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    // A grab bag of bodies; whatever the answer, it is not a 5xx and the
    // daemon keeps serving.
    let bodies = [
        "{\"status\":\"running\",\"progress\":1e-400}",
        "{\"status\":\"running\",\"metrics\":{\"\":1}}",
        "{\"status\":\"running\",\"metrics\":{\"x\":18446744073709551616}}",
        "{\"status\":\"running\",\"metrics\":{\"epoch\":99999999999999999999}}",
        "{\"status\":\"running\",\"sequence\":9223372036854775808}",
        "{\"status\":\"running\",\"message\":\"\\ud800\"}",
        "{\"status\":\"running\",\"message\":\"a\\u0000b\"}",
        "{\"status\":\"running\",\"status\":\"failed\"}",
        "{\"__proto__\":{\"status\":\"completed\"}}",
        "\u{feff}{\"status\":\"running\"}",
    ];
    for body in bodies {
        let (status, _) = post_raw(&d, &job_path(&id, "/callback"), Some(&token), body).await;
        assert!(!status.is_server_error(), "{body}: {status}");
    }
    let (status, job) = get(&d, &job_path(&id, "")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!job["status"].as_str().unwrap().is_empty());
    assert_eq!(get(&d, "/health").await.0, StatusCode::OK);
}

// ---------------------------------------------------------------- API token

#[tokio::test]
async fn api_token_guards_user_routes_but_not_trainer_routes() {
    let d = Daemon::start_with(
        Opts {
            args: vec!["--api-token".into(), "s3cret-api-token-1".into()],
            ..Default::default()
        }
        .capturing(),
    );
    let http = d.http();
    // Without or with a wrong token: 401 on every user-facing route.
    let some_id = uuid::Uuid::now_v7().to_string();
    for bad in [None, Some("wrong")] {
        for (method, path) in [
            (reqwest::Method::GET, JOBS.to_string()),
            (reqwest::Method::POST, JOBS.to_string()),
            (reqwest::Method::GET, job_path(&some_id, "")),
            (reqwest::Method::DELETE, job_path(&some_id, "")),
            (reqwest::Method::GET, job_path(&some_id, "/metrics")),
        ] {
            let mut rb = http
                .request(method.clone(), d.at(&path))
                .json(&job_body("alice"));
            if let Some(t) = bad {
                rb = rb.bearer_auth(t);
            }
            let (status, err) = parts(rb.send().await.unwrap()).await;
            assert_error(status, &err, StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(snapshot(&d), "--\n--\n", "nothing was created");
    // Service routes stay open.
    for path in ["/health", "/", "/openapi.json", "/docs"] {
        assert_eq!(
            http.get(d.at(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
    // With the token, everything works.
    let resp = http
        .post(d.at(JOBS))
        .bearer_auth("s3cret-api-token-1")
        .json(&job_body("alice"))
        .send()
        .await
        .unwrap();
    let (status, job) = parts(resp).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = s(&job["id"]).to_string();
    let resp = http
        .get(d.at(JOBS))
        .bearer_auth("s3cret-api-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Trainer endpoints use the job's token, not the API token.
    let token = callback_token(&d, &id);
    let (status, _) = callback(&d, &id, None, &json!({"status": "running"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = callback(
        &d,
        &id,
        Some("s3cret-api-token-1"),
        &json!({"status": "running"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the API token is no trainer token"
    );
    let (status, _) = ingest(
        &d,
        &id,
        Some("s3cret-api-token-1"),
        &json!({"points": [{"loss": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = callback(&d, &id, Some(&token), &json!({"status": "running"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = ingest(&d, &id, Some(&token), &json!({"points": [{"loss": 1}]})).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn a_taken_port_is_one_clean_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // The database is open by then; closing it used to race the runtime's end.
    for _ in 0..4 {
        let (code, stderr) = serve_outcome(&["--bind", &addr], &[]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {addr}")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn non_loopback_bind_needs_a_token_or_an_explicit_opt_out() {
    for (args, envs) in [
        (vec!["--bind", "0.0.0.0:0"], vec![]),
        (vec!["--bind", "0.0.0.0:0", "--api-token", ""], vec![]),
        (
            vec!["--bind", "0.0.0.0:0"],
            vec![("PLATFORM_API_TOKEN", "")],
        ),
        (vec![], vec![("HOST", "0.0.0.0"), ("PORT", "0")]),
    ] {
        let (code, stderr) = serve_outcome(&args, &envs);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{args:?} {envs:?} must refuse to start: {stderr}"
        );
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "one clear line: {line}");
        assert!(line.contains("refusing to listen on 0.0.0.0"), "{line}");
        assert!(
            line.contains("--allow-unauthenticated") && line.contains("PLATFORM_API_TOKEN"),
            "{line}"
        );
    }
    let (code, stderr) = serve_outcome(&["--bind", "0.0.0.0:0", "--allow-unauthenticated"], &[]);
    assert_eq!(code, None, "starts with --allow-unauthenticated: {stderr}");
    let (code, stderr) = serve_outcome(
        &["--bind", "0.0.0.0:0"],
        &[("PLATFORM_API_TOKEN", "a-long-enough-token")],
    );
    assert_eq!(code, None, "starts with a token: {stderr}");
}
