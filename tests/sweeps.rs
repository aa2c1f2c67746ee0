//! Sweeps, comparing runs, tags and notes (issue 19) against a real
//! daemon: grid expansion from the CLI (quoted commas included), random
//! search reproducible for a seed, all-or-nothing creates, sweep cancel,
//! the compare table and the overlay chart's legend on real runs of the
//! demo trainer, tags and notes set, edited and filtered, and a member
//! who cannot see another user's sweep.

mod common;

use std::process::Output;

use common::api::{get, job_body, parts, post, JOBS};
use common::{eventually, stderr, stdout, Daemon, Opts};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SWEEPS: &str = "/api/v1/sweeps";

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    stdout(&o)
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn sweep_body(extra: Value) -> Value {
    let mut b = job_body("alice");
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn names(sweep: &Value) -> Vec<String> {
    sweep["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn grid_sweeps_from_the_cli_take_every_combination_with_quoted_commas() {
    let d = Daemon::held();
    let out = ok(d.cli(&[
        "job",
        "create",
        "-f",
        "demo",
        "-m",
        "yolo11n",
        "-d",
        "s3://bucket/datasets/coco128/",
        "--set",
        "epochs=5",
        "--set",
        "opt.momentum=0.9",
        "--sweep",
        "opt.lr=0.01,0.001",
        "--sweep",
        r#"aug="flip,crop",none"#,
        "--tag",
        "team=vision",
        "--note",
        "first grid",
        "-o",
        "json",
    ]));
    let sweep = json_of(&out);
    assert_eq!(sweep["method"], "grid");
    assert_eq!(sweep["total"], 4);
    assert_eq!(sweep["counts"], json!({"pending": 4}));
    assert_eq!(
        names(&sweep),
        [
            "opt.lr=0.01,aug=flip,crop",
            "opt.lr=0.01,aug=none",
            "opt.lr=0.001,aug=flip,crop",
            "opt.lr=0.001,aug=none"
        ]
    );
    let first = &sweep["jobs"][0];
    assert_eq!(
        first["config"],
        json!({"epochs": 5, "opt": {"momentum": 0.9, "lr": 0.01}, "aug": "flip,crop"})
    );
    assert_eq!(first["sweep_id"], sweep["id"]);
    assert_eq!(first["tags"], json!({"team": "vision"}));
    assert_eq!(first["note"], "first grid");
    // The sweep's own page and the job list's filter agree.
    let id = sweep["id"].as_str().unwrap();
    let (s, got) = get(&d, &format!("{SWEEPS}/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&got), names(&sweep));
    let listed = json_of(&ok(d.cli(&["job", "list", "--sweep", id, "-o", "json"])));
    assert_eq!(listed.as_array().unwrap().len(), 4);
    let text = ok(d.cli(&["sweep", "list"]));
    assert!(text.contains(id) && text.contains("4 pending"), "{text}");
    // A job outside the sweep is not in its list.
    let (s, _) = post(&d, JOBS, &job_body("alice")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, listed) = get(&d, &format!("{JOBS}?sweep={id}")).await;
    assert_eq!(listed.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn random_search_is_reproducible_for_a_seed_and_bad_specs_store_nothing() {
    let d = Daemon::held();
    let spec = |seed: u64| {
        sweep_body(json!({
            "method": "random", "count": 8, "seed": seed,
            "parameters": {
                "lr": {"min": 0.0001, "max": 0.1, "log": true},
                "batch": [16, 32, 64],
                "layers": {"min": 2, "max": 6, "integer": true},
            },
        }))
    };
    let configs = |sweep: &Value| -> Vec<Value> {
        sweep["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["config"].clone())
            .collect()
    };
    let (s, a) = post(&d, SWEEPS, &spec(42)).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let (_, b) = post(&d, SWEEPS, &spec(42)).await;
    let (_, c) = post(&d, SWEEPS, &spec(43)).await;
    assert_eq!(configs(&a).len(), 8);
    assert_eq!(
        configs(&a),
        configs(&b),
        "the same seed gives the same configs"
    );
    assert_ne!(configs(&a), configs(&c));
    for cfg in configs(&a) {
        let lr = cfg["lr"].as_f64().unwrap();
        assert!((0.0001..=0.1).contains(&lr), "{cfg}");
        assert!(
            [16, 32, 64].contains(&cfg["batch"].as_i64().unwrap()),
            "{cfg}"
        );
        assert!((2..=6).contains(&cfg["layers"].as_i64().unwrap()), "{cfg}");
    }
    // A seed left out is chosen and returned, so the search can be repeated.
    let mut unseeded = spec(0);
    unseeded.as_object_mut().unwrap().remove("seed");
    let (_, u) = post(&d, SWEEPS, &unseeded).await;
    assert!(u["seed"].is_u64(), "{u}");
    // The same search from a YAML file through the CLI (parameters in the
    // order the JSON body above has them: the order is part of the search).
    let file = d.data_dir.parent().unwrap().join("sweep.yaml");
    std::fs::write(
        &file,
        "method: random\ncount: 8\nseed: 42\nparameters:\n  batch: [16, 32, 64]\n  layers: {min: 2, max: 6, integer: true}\n  lr: {min: 0.0001, max: 0.1, log: true}\n",
    )
    .unwrap();
    let cli = json_of(&ok(d.cli(&[
        "job",
        "create",
        "-f",
        "demo",
        "-m",
        "yolo11n",
        "-d",
        "s3://bucket/datasets/coco128/",
        "--sweep-file",
        file.to_str().unwrap(),
        "-o",
        "json",
    ])));
    assert_eq!(configs(&cli), configs(&a));
    // Bad specs and bad jobs are refused whole: nothing is stored.
    let (_, before) = get(&d, &format!("{JOBS}?limit=1000")).await;
    for (bad, field) in [
        (sweep_body(json!({"parameters": {}})), "parameters"),
        (
            sweep_body(json!({"parameters": {"lr": {"min": 0, "max": 1}}})),
            "parameters.lr",
        ),
        (
            sweep_body(json!({"method": "random", "parameters": {"lr": [1]}})),
            "count",
        ),
        (
            sweep_body(
                json!({"parameters": {"a": (0..30).collect::<Vec<_>>(), "b": (0..30).collect::<Vec<_>>()}}),
            ),
            "parameters",
        ),
        (
            sweep_body(json!({"framework": "nope", "parameters": {"lr": [1, 2]}})),
            "framework",
        ),
        (
            sweep_body(
                json!({"config": {"big": "x".repeat(65_520)}, "parameters": {"lr": [1, 2]}}),
            ),
            "config",
        ),
    ] {
        let (s, v) = post(&d, SWEEPS, &bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let (_, after) = get(&d, &format!("{JOBS}?limit=1000")).await;
    assert_eq!(
        before.as_array().unwrap().len(),
        after.as_array().unwrap().len()
    );
}

#[tokio::test]
async fn cancelling_a_sweep_cancels_every_job_that_has_not_ended() {
    let d = Daemon::held();
    let (s, sweep) = post(
        &d,
        SWEEPS,
        &sweep_body(json!({"parameters": {"lr": [1, 2, 3]}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = sweep["id"].as_str().unwrap();
    let first = sweep["jobs"][0]["id"].as_str().unwrap();
    let (s, _) = common::api::cancel(&d, first).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let out = ok(d.cli(&["sweep", "cancel", id, "-o", "json"]));
    let after = json_of(&out);
    assert_eq!(after["counts"], json!({"cancelled": 3}));
    let messages: Vec<&str> = after["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        messages[0], "cancelled by user",
        "the one cancelled before stays as it was"
    );
    assert_eq!(
        messages[1..],
        ["cancelled with its sweep", "cancelled with its sweep"]
    );
    let (s, _) = post(&d, &format!("{SWEEPS}/{}/cancel", uuid_like()), &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = get(&d, &format!("{SWEEPS}/not-a-uuid")).await;
    assert_eq!(
        (s, v["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("sweep_id"))
    );
}

fn uuid_like() -> &'static str {
    "01900000-0000-7000-8000-000000000000"
}

#[tokio::test]
async fn compare_and_overlay_show_real_demo_runs_side_by_side() {
    let d = Daemon::start();
    let out = ok(d.cli(&[
        "job",
        "create",
        "-f",
        "demo",
        "-m",
        "yolo11n",
        "-d",
        "s3://bucket/datasets/coco128/",
        "--set",
        "epochs=4",
        "--set",
        "epoch_seconds=0",
        "--sweep",
        "seed=1,2,3",
        "--quiet",
    ]));
    let id = out.trim().to_string();
    let sweep = eventually(60, "the sweep's runs to complete", || async {
        let (_, s) = get(&d, &format!("{SWEEPS}/{id}")).await;
        (s["counts"] == json!({"completed": 3})).then_some(s)
    })
    .await;
    // What each run reported, straight from the API.
    let mut expected = Vec::new();
    for j in sweep["jobs"].as_array().unwrap() {
        let jid = j["id"].as_str().unwrap();
        let (_, points) = get(&d, &format!("{JOBS}/{jid}/metrics?order=asc&limit=1000")).await;
        let ys: Vec<f64> = points
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metrics"]["mAP50"].as_f64())
            .collect();
        assert_eq!(ys.len(), 4, "one point per epoch");
        let best = ys.iter().copied().fold(f64::MIN, f64::max);
        expected.push((
            j["number"].as_i64().unwrap(),
            j["config"]["seed"].clone(),
            best,
            ys[3],
        ));
    }
    expected.sort_by(|a, b| b.2.total_cmp(&a.2));
    let rows = json_of(&ok(d.cli(&[
        "job",
        "compare",
        "--sweep",
        &id,
        "--metric",
        "mAP50:max",
        "--metric",
        "loss:min",
        "-o",
        "json",
    ])));
    let got: Vec<(i64, Value, f64, f64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "completed");
            assert!(r["duration_s"].as_f64().unwrap() >= 0.0, "{r}");
            assert_eq!(
                r["config"].as_object().unwrap().len(),
                1,
                "only seed differs: {r}"
            );
            assert!(
                r["metrics"]["loss"]["best"].as_f64().unwrap()
                    <= r["metrics"]["loss"]["last"].as_f64().unwrap()
            );
            (
                r["number"].as_i64().unwrap(),
                r["config"]["seed"].clone(),
                r["metrics"]["mAP50"]["best"].as_f64().unwrap(),
                r["metrics"]["mAP50"]["last"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected, "sorted by the best mAP50, highest first");
    let table = ok(d.cli(&["job", "compare", "--sweep", &id, "--metric", "mAP50:max"]));
    let lines: Vec<&str> = table.lines().collect();
    for h in [
        "JOB",
        "NAME",
        "seed",
        "STATUS",
        "DURATION",
        "mAP50:max",
        "mAP50:last",
    ] {
        assert!(lines[0].contains(h), "{table}");
    }
    assert!(
        !lines[0].contains("epochs"),
        "equal keys are left out: {table}"
    );
    assert!(
        lines[1].starts_with(&format!("#{}", expected[0].0)),
        "{table}"
    );
    let csv = ok(d.cli(&[
        "job", "compare", "--sweep", &id, "--metric", "mAP50", "-o", "csv",
    ]));
    assert_eq!(
        csv.lines().next().unwrap(),
        "job,name,seed,status,duration_s,mAP50:max,mAP50:last"
    );
    // The overlay: one chart, one legend line per run naming what differs.
    let numbers: Vec<String> = expected.iter().map(|e| e.0.to_string()).collect();
    let mut args = vec!["metrics"];
    args.extend(numbers.iter().map(String::as_str));
    args.extend(["--plot", "mAP50"]);
    let plot = ok(d.cli(&args));
    assert!(plot.contains("mAP50: 3 runs over epochs"), "{plot}");
    for (n, seed, _, last) in &expected {
        let line = plot
            .lines()
            .find(|l| l.contains(&format!("#{n} seed={seed}: last ")))
            .unwrap_or_else(|| panic!("no legend line for #{n}: {plot}"));
        let shown = serde_json::json!(*last as f32);
        assert!(line.contains(&format!("last {}", number(&shown))), "{line}");
    }
    let err = d.cli(&["metrics", &numbers[0], &numbers[1]]);
    assert_eq!(err.status.code(), Some(2), "{}", stderr(&err));
}

/// The CLI's compact number format (`platform metrics`).
fn number(v: &Value) -> String {
    let f = v.as_f64().unwrap();
    let s = format!("{f:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[tokio::test]
async fn tags_and_notes_are_set_edited_and_filtered() {
    let d = Daemon::held();
    let create = |tags: &[&str]| {
        let mut args = vec![
            "job",
            "create",
            "-f",
            "demo",
            "-m",
            "m",
            "-d",
            "s3://b/d/",
            "--quiet",
        ];
        for t in tags {
            args.extend(["--tag", t]);
        }
        ok(d.cli(&args)).trim().to_string()
    };
    let a = create(&["team=vision", "stage=try"]);
    let b = create(&["team=vision"]);
    let _c = create(&[]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ok(d.cli(args)).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(ids(&["job", "list", "--tag", "team=vision", "-q"]), both);
    assert_eq!(
        ids(&[
            "job",
            "list",
            "--tag",
            "team=vision",
            "--tag",
            "stage=try",
            "-q"
        ]),
        std::slice::from_ref(&a)
    );
    let (_, v) = get(&d, &format!("{JOBS}?tag=team%3Dvision&tag=stage%3Dtry")).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Edit: set one, remove one; the note; in any status.
    let (s, _) = common::api::cancel(&d, &a).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    ok(d.cli(&["job", "tag", &a, "best=yes", "--rm", "stage"]));
    ok(d.cli(&["job", "note", &a, "lr too high;\nretry with 1e-4"]));
    let job = json_of(&ok(d.cli(&["job", "get", &a, "-o", "json"])));
    assert_eq!(job["tags"], json!({"team": "vision", "best": "yes"}));
    assert_eq!(job["note"], "lr too high;\nretry with 1e-4");
    assert_eq!(job["status"], "cancelled");
    let text = ok(d.cli(&["job", "get", &a]));
    assert!(
        text.contains("Tags:") && text.contains("best=yes,team=vision"),
        "{text}"
    );
    assert!(text.contains("lr too high; / retry with 1e-4"), "{text}");
    assert!(ids(&["job", "list", "--tag", "stage=try", "-q"]).is_empty());
    // PATCH: null deletes; an empty note clears.
    let patch = |body: Value| {
        let d = &d;
        let a = a.clone();
        async move {
            parts(
                d.http()
                    .request(Method::PATCH, d.at(&format!("{JOBS}/{a}")))
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (s, v) = patch(json!({"tags": {"best": null}, "note": ""})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["tags"].clone(), v["note"].clone()),
        (json!({"team": "vision"}), Value::Null)
    );
    // Bad tags are a 422 that changes nothing.
    for bad in [
        json!({"tags": {"bad key": "x"}}),
        json!({"tags": {"k": "a\u{1}"}}),
        json!({"note": "\u{7}"}),
    ] {
        let (s, v) = patch(bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    let (s, v) = get(&d, &format!("{JOBS}?tag=novalue")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, job) = get(&d, &format!("{JOBS}/{a}")).await;
    assert_eq!(job["tags"], json!({"team": "vision"}));
    let mut body = job_body("alice");
    body["tags"] = json!({"-x": "1"});
    let (s, _) = post(&d, JOBS, &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

const ADMIN: &str = "sweeps-test-operator-token-0123456789";

async fn call(
    d: &Daemon,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut rb = d.http().request(method, d.at(path)).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    parts(rb.send().await.unwrap()).await
}

#[tokio::test]
async fn a_member_sees_and_cancels_only_their_own_sweeps() {
    let mut opts = Opts::default().held();
    opts.args.extend(["--api-token".into(), ADMIN.into()]);
    let d = Daemon::start_with(opts);
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let body = json!({"name": name, "role": "member"});
        let (s, v) = call(&d, Method::POST, "/api/v1/users", ADMIN, Some(&body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        tokens.push(v["token"]["token"].as_str().unwrap().to_string());
    }
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let mut body = sweep_body(json!({"parameters": {"lr": [1, 2]}}));
    body.as_object_mut().unwrap().remove("user_id");
    let (s, sweep) = call(&d, Method::POST, SWEEPS, bob, Some(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{sweep}");
    assert_eq!(sweep["user_id"], "bob");
    assert_eq!(sweep["jobs"][0]["user_id"], "bob");
    let path = format!("{SWEEPS}/{}", sweep["id"].as_str().unwrap());
    let (s, _) = call(&d, Method::GET, &path, alice, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "alice cannot see bob's sweep");
    let (s, _) = call(&d, Method::POST, &format!("{path}/cancel"), alice, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nor cancel it");
    let (_, list) = call(&d, Method::GET, SWEEPS, alice, None).await;
    assert_eq!(list, json!([]));
    let (_, list) = call(&d, Method::GET, SWEEPS, bob, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["total"], 2);
    let (s, _) = call(&d, Method::GET, &path, ADMIN, None).await;
    assert_eq!(s, StatusCode::OK, "admins see every sweep");
    // A member naming someone else is refused as for a single job.
    let (s, _) = call(
        &d,
        Method::POST,
        SWEEPS,
        alice,
        Some(&sweep_body(
            json!({"user_id": "bob", "parameters": {"lr": [1]}}),
        )),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(&d, Method::POST, &format!("{path}/cancel"), bob, None).await;
    assert_eq!(
        (s, v["counts"].clone()),
        (StatusCode::OK, json!({"cancelled": 2}))
    );
}
