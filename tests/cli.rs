//! The client CLI (SPEC §3) against a running daemon: every `job`
//! subcommand, `metrics`, `version`, output formats, prefix resolution,
//! global flags, exit codes, one-line errors and colour rules.

mod common;

use std::process::{Command, Output};

use common::api::*;
use common::{eventually, stderr, stdout, Daemon, Opts};
use reqwest::StatusCode;
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit code, stdout, stderr.
fn run(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    split(d.cli(args))
}

fn split(o: Output) -> (i32, String, String) {
    (o.status.code().expect("exit code"), stdout(&o), stderr(&o))
}

/// Runs the CLI and asserts it succeeded; returns stdout.
#[track_caller]
fn ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = run(d, args);
    assert_eq!(code, 0, "platform {args:?} failed:\n{err}");
    out
}

/// Runs the CLI, asserts exit `code` and exactly one line on stderr; returns it.
#[track_caller]
fn fails(d: &Daemon, args: &[&str], code: i32) -> String {
    let (got, out, err) = run(d, args);
    assert_eq!(
        got, code,
        "platform {args:?}: stdout {out:?} stderr {err:?}"
    );
    assert_one_line(&err);
    err.trim().to_string()
}

#[track_caller]
fn assert_one_line(err: &str) {
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    for debug in [
        "panicked",
        "RUST_BACKTRACE",
        "Error {",
        "kind:",
        "source:",
        "Os {",
    ] {
        assert!(!err.contains(debug), "no Rust debug output: {err:?}");
    }
}

fn json_out(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn has_ansi(s: &str) -> bool {
    s.contains('\u{1b}')
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs the CLI on a pseudo-terminal (util-linux `script`), as a person would.
fn on_tty(d: &Daemon, args: &str, envs: &[(&str, &str)]) -> String {
    let bin = common::bin();
    let o = Command::new("script")
        .args(["-qec", &format!("{} {args}", bin.display()), "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm-256color")
        .env("HOME", d.data_dir.parent().unwrap())
        .env("PLATFORM_SERVER", &d.url)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script(1)");
    assert!(o.status.success(), "{args}: {}", stderr(&o));
    stdout(&o).replace('\r', "")
}

fn create_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "job",
        "create",
        "--framework",
        FRAMEWORK,
        "--model",
        "yolo11n",
        "--dataset",
        "s3://bucket/data/",
    ];
    args.extend_from_slice(extra);
    args
}

/// Creates a job through the CLI and returns its id.
fn cli_create(d: &Daemon, extra: &[&str]) -> String {
    let mut args = create_args(extra);
    args.extend(["-o", "json"]);
    let job = json_out(&ok(d, &args));
    job["id"].as_str().unwrap().to_string()
}

// ------------------------------------------------------------------ create

#[tokio::test]
async fn job_create_prints_the_api_json_and_a_friendly_table() {
    let d = Daemon::held();
    let out = ok(&d, &create_args(&["--user", "alice", "-o", "json"]));
    let job = json_out(&out);
    assert_eq!(job["user_id"], "alice");
    assert_eq!(job["framework"], FRAMEWORK);
    assert_eq!(job["model_name"], "yolo11n");
    assert_eq!(job["dataset_s3_uri"], "s3://bucket/data/");
    assert_eq!(job["status"], "pending");
    assert_eq!(job["config"], Value::Null);
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        job,
        common::api::job(&d, id).await,
        "-o json is exactly the API's JSON"
    );

    // The default output names the job (number and id) and how to follow it.
    let out = ok(&d, &create_args(&["--user", "bob"]));
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("created job #2 (") && first.contains("pending"),
        "{out}"
    );
    let id = first.split(['(', ')']).nth(1).unwrap();
    let bob = common::api::job(&d, id).await;
    assert_eq!(
        (&bob["user_id"], &bob["number"]),
        (&json!("bob"), &json!(2))
    );
    assert_eq!(
        out.lines().nth(1).unwrap().trim(),
        "follow it:  platform job watch 2",
        "{out}"
    );

    // The user defaults to $PLATFORM_USER, then $USER.
    let (code, out, _) =
        split(d.cli_env(&create_args(&["-o", "json"]), &[("PLATFORM_USER", "carol")]));
    assert_eq!(code, 0);
    assert_eq!(json_out(&out)["user_id"], "carol");
    let job = json_out(&ok(&d, &create_args(&["-o", "json"])));
    assert_eq!(job["user_id"], "tester", "the harness sets USER=tester");

    // Short flags.
    let out = ok(
        &d,
        &[
            "job",
            "create",
            "-f",
            FRAMEWORK,
            "-m",
            "m2",
            "-d",
            "s3://b/x/",
            "-u",
            "dan",
            "-o",
            "json",
        ],
    );
    assert_eq!(json_out(&out)["model_name"], "m2");

    // Server-side validation comes back as one line, exit 1.
    let err = fails(
        &d,
        &[
            "job",
            "create",
            "-f",
            "nosuch",
            "-m",
            "m",
            "-d",
            "s3://b/d/",
        ],
        1,
    );
    assert!(
        err.contains("unknown framework") && err.contains("demo"),
        "{err}"
    );
    // Without a trainers file there is nothing to reload: it says how to add one.
    assert!(err.contains("--trainers FILE"), "{err}");
}

#[tokio::test]
async fn job_create_merges_config_files_and_set_overrides() {
    let d = Daemon::held();
    let dir = tempfile::tempdir().unwrap();
    let json_file = dir.path().join("train.json");
    std::fs::write(
        &json_file,
        r#"{"epochs": 50, "batch": 16, "opt": {"lr": 0.1, "momentum": 0.9}}"#,
    )
    .unwrap();
    let yaml_file = dir.path().join("train.yaml");
    std::fs::write(
        &yaml_file,
        "epochs: 10\nimgsz: 640\naugment:\n  flip: true\n  names: [a, b]\n",
    )
    .unwrap();

    let id = cli_create(&d, &["--config", json_file.to_str().unwrap()]);
    assert_eq!(
        common::api::job(&d, &id).await["config"],
        json!({"epochs": 50, "batch": 16, "opt": {"lr": 0.1, "momentum": 0.9}})
    );
    let id = cli_create(&d, &["-c", yaml_file.to_str().unwrap()]);
    assert_eq!(
        common::api::job(&d, &id).await["config"],
        json!({"epochs": 10, "imgsz": 640, "augment": {"flip": true, "names": ["a", "b"]}})
    );

    // --set: JSON when it parses, else a string; wins over the file; dotted keys nest.
    let id = cli_create(
        &d,
        &[
            "--config",
            json_file.to_str().unwrap(),
            "--set",
            "epochs=5",
            "--set",
            "lr=0.01",
            "--set",
            "amp=true",
            "--set",
            "layers=[1,2,3]",
            "--set",
            r#"extra={"a":1}"#,
            "--set",
            "name=run one",
            "--set",
            "model=yolo11n.pt",
            "--set",
            "empty=",
            "--set",
            "quoted=\"5\"",
            "--set",
            "opt.lr=0.001",
            "-s",
            "nothing=null",
        ],
    );
    assert_eq!(
        common::api::job(&d, &id).await["config"],
        json!({
            "epochs": 5, "batch": 16, "lr": 0.01, "amp": true, "layers": [1, 2, 3], "extra": {"a": 1},
            "name": "run one", "model": "yolo11n.pt", "empty": "", "quoted": "5",
            "opt": {"lr": 0.001, "momentum": 0.9}, "nothing": null
        })
    );
    // --set alone makes a config.
    let id = cli_create(&d, &["--set", "epochs=3"]);
    assert_eq!(
        common::api::job(&d, &id).await["config"],
        json!({"epochs": 3})
    );

    // Bad input is refused before anything reaches the server.
    let before = snapshot(&d);
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "epochs: [1, 2\n").unwrap();
    let list = dir.path().join("list.json");
    std::fs::write(&list, "[1, 2]").unwrap();
    let missing = dir.path().join("missing.json");
    for (args, code) in [
        (vec!["--config", bad.to_str().unwrap()], 2),
        (vec!["--config", list.to_str().unwrap()], 2),
        (vec!["--config", missing.to_str().unwrap()], 1),
        (vec!["--set", "novalue"], 2),
        (vec!["--set", "=5"], 2),
        (vec!["--set", "a..b=1"], 2),
    ] {
        let err = fails(&d, &create_args(&args), code);
        assert!(err.contains(args[1]) || err.contains("--set"), "{err}");
    }
    assert_eq!(snapshot(&d), before);
}

// -------------------------------------------------------------------- list

#[tokio::test]
async fn job_list_prints_tables_json_and_ids() {
    let d = Daemon::held();
    let a = cli_create(&d, &["--user", "alice"]);
    let b = cli_create(&d, &["--user", "bob"]);
    let c = json_out(&ok(
        &d,
        &[
            "job",
            "create",
            "-f",
            FRAMEWORK,
            "-m",
            "resnet50",
            "-d",
            "s3://bucket/data/",
            "-u",
            "alice",
            "-o",
            "json",
        ],
    ))["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&d, &["job", "cancel", &b]);

    // Jobs by number (a, b, c are #1, #2, #3); the full id only in wide output.
    let table = ok(&d, &["job", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "STATUS",
            "PROGRESS",
            "FRAMEWORK",
            "MODEL",
            "USER",
            "CREATED"
        ]
    );
    assert!(
        lines[1].starts_with("#3 ") && lines[2].starts_with("#2 ") && lines[3].starts_with("#1 "),
        "newest first:\n{table}"
    );
    assert!(!table.contains(&a[..8]), "no id column: {table}");
    assert!(
        lines[1].contains("resnet50") && lines[1].contains("pending") && lines[1].contains("0%")
    );
    assert!(lines[2].contains("cancelled"));
    assert!(
        lines[1].contains("just now") || lines[1].contains("s ago"),
        "relative times: {}",
        lines[1]
    );
    // Columns are aligned: every row's STATUS starts under the header's.
    let col = lines[0].find("STATUS").unwrap();
    for l in &lines[1..] {
        assert!(
            l[col..].starts_with("pending") || l[col..].starts_with("cancelled"),
            "{table}"
        );
    }

    let wide = ok(&d, &["job", "list", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[..3], ["ID", "UUID", "STATUS"]);
    assert_eq!(header[header.len() - 3..], ["DATASET", "RUNNER", "MESSAGE"]);
    for (line, id) in wide.lines().skip(1).zip([&c, &b, &a]) {
        assert!(line.contains(id.as_str()), "{wide}");
    }
    assert!(wide.contains("s3://bucket/data/"));
    assert!(
        wide.lines().nth(2).unwrap().contains("cancelled by user"),
        "{wide}"
    );

    let json = json_out(&ok(&d, &["job", "list", "-o", "json"]));
    let (_, api) = get(&d, JOBS).await;
    assert_eq!(json, api, "-o json is exactly the API's JSON");

    let ids = ok(&d, &["job", "list", "-q"]);
    assert_eq!(ids, format!("{c}\n{b}\n{a}\n"), "full ids, one per line");
    assert_eq!(ok(&d, &["job", "list", "--ids"]), ids);

    assert_eq!(
        ok(&d, &["job", "list", "-q", "--status", "cancelled"]),
        format!("{b}\n")
    );
    assert_eq!(
        ok(
            &d,
            &["job", "list", "-q", "--status", "pending", "--user", "alice"]
        ),
        format!("{c}\n{a}\n")
    );
    assert_eq!(
        ok(&d, &["job", "list", "-q", "--user", "bob"]),
        format!("{b}\n")
    );
    assert_eq!(
        ok(&d, &["job", "list", "-q", "--limit", "1"]),
        format!("{c}\n")
    );
    assert_eq!(
        ok(&d, &["job", "ls", "-q", "--limit", "1"]),
        format!("{c}\n")
    );
    let empty = ok(&d, &["job", "list", "--status", "running"]);
    assert_eq!(empty.lines().count(), 1, "just the header: {empty}");
    assert_eq!(ok(&d, &["job", "list", "-q", "--status", "running"]), "");
    assert_eq!(
        json_out(&ok(&d, &["job", "list", "-o", "json", "--user", "nobody"])),
        json!([])
    );

    // Invalid values are usage errors (exit 2), server range errors exit 1.
    let (code, _, _) = run(&d, &["job", "list", "--status", "done"]);
    assert_eq!(code, 2);
    let err = fails(&d, &["job", "list", "--limit", "5000"], 1);
    assert!(err.contains("limit"), "{err}");
}

// ------------------------------------------------------------- get/cancel

/// The shortest prefix (≥ 4) of `id` that no other id shares.
fn unique_prefix<'a>(id: &'a str, others: &[String]) -> &'a str {
    (4..=36)
        .map(|n| &id[..n])
        .find(|p| {
            others
                .iter()
                .filter(|o| o.as_str() != id)
                .all(|o| !o.starts_with(p))
        })
        .unwrap()
}

#[tokio::test]
async fn job_get_takes_numbers_full_ids_and_unique_prefixes() {
    let d = Daemon::held();
    let ids: Vec<String> = (0..3)
        .map(|_| cli_create(&d, &["--user", "alice"]))
        .collect();
    let id = &ids[1];
    let api = common::api::job(&d, id).await;
    assert_eq!(api["number"], 2, "numbered in creation order");

    assert_eq!(json_out(&ok(&d, &["job", "get", id, "-o", "json"])), api);
    let prefix = unique_prefix(id, &ids);
    assert!(prefix.len() >= 4);
    assert_eq!(
        json_out(&ok(&d, &["job", "get", prefix, "-o", "json"])),
        api,
        "prefix {prefix}"
    );
    assert_eq!(
        json_out(&ok(&d, &["job", "get", &id.to_uppercase(), "-o", "json"])),
        api
    );
    // The job number, bare or with `#`, in every command that takes a job.
    for n in ["2", "#2"] {
        assert_eq!(json_out(&ok(&d, &["job", "get", n, "-o", "json"])), api);
    }
    assert!(ok(&d, &["metrics", "2", "-o", "json"]).starts_with('['));
    assert!(ok(&d, &["job", "artifacts", "#2", "-o", "json"]).starts_with('['));
    let err = fails(&d, &["job", "get", "9"], 1);
    assert!(err.contains("no job #9"), "{err}");

    // A trainer ended by a signal reads as such, not as a negative exit code.
    d.sql(&format!(
        "UPDATE jobs SET runner = 'subprocess', exit_code = -15 WHERE id = '{id}'"
    ));
    let table = ok(&d, &["job", "get", "2"]);
    assert!(table.contains("subprocess (killed by SIGTERM)"), "{table}");

    let table = ok(&d, &["job", "get", prefix]);
    for want in [
        "#2",
        id.as_str(),
        "pending",
        "alice",
        FRAMEWORK,
        "yolo11n",
        "s3://bucket/data/",
    ] {
        assert!(table.contains(want), "{want} missing from:\n{table}");
    }

    // Ids created together share their leading (time) digits: the error
    // lists the jobs the prefix matches, with their numbers.
    let shared = &ids[0][..4];
    assert!(ids.iter().all(|i| i.starts_with(shared)));
    let (code, _, err) = run(&d, &["job", "get", shared]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].contains("more than one job")
            && lines[0].contains(shared),
        "{err}"
    );
    for (n, candidate) in ids.iter().enumerate() {
        let row = lines
            .iter()
            .find(|l| l.contains(candidate.as_str()))
            .unwrap_or_else(|| panic!("{candidate} is not listed:\n{err}"));
        assert!(
            row.contains(&format!("#{}", n + 1))
                && row.contains("yolo11n")
                && row.contains("pending"),
            "{row}"
        );
    }
    let err = fails(&d, &["job", "get", "ffffffff"], 1);
    assert!(err.contains("no job") && err.contains("ffffffff"), "{err}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = fails(&d, &["job", "get", &unknown], 1);
    assert!(err.contains("not found") && err.contains(&unknown), "{err}");
    for bad in ["abc", "xyz!", "g000", "#x", "#0", "012"] {
        let err = fails(&d, &["job", "get", bad], 1);
        assert!(err.contains("at least 4"), "{err}");
    }

    // At most 10 candidates, and a note that there are more.
    for _ in 0..10 {
        create_id(&d, "bob").await;
    }
    let (_, _, err) = run(&d, &["job", "get", shared]);
    let listed = err.lines().filter(|l| l.contains(shared)).count() - 1;
    assert_eq!(listed, 10, "{err}");
    assert!(err.contains("and more"), "{err}");
}

#[tokio::test]
async fn jobs_get_unique_increasing_numbers_even_when_created_at_once() {
    let d = Daemon::held();
    let body = job_body("alice");
    let created = futures::future::join_all((0..40).map(|_| create(&d, &body))).await;
    let mut numbers: Vec<i64> = created
        .iter()
        .map(|j| j["number"].as_i64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=40).collect::<Vec<_>>());
    // Creation order is number order.
    let (_, listed) = get(&d, &format!("{JOBS}?limit=1000")).await;
    let by_age: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|j| j["number"].as_i64().unwrap())
        .collect();
    assert_eq!(by_age, (1..=40).collect::<Vec<_>>());

    // The list filter by number.
    let (status, one) = get(&d, &format!("{JOBS}?number=17")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["number"], 17);
    let (_, none) = get(&d, &format!("{JOBS}?number=41")).await;
    assert_eq!(none, json!([]));
    for junk in ["abc", "0", "-3", "1.5", "%2342"] {
        let (status, body) = get(&d, &format!("{JOBS}?number={junk}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{junk}: {body}");
        assert_eq!(body["field"], "number", "{junk}: {body}");
    }
    // Numbers survive a restart and keep increasing after it.
    let mut d = d;
    d.restart();
    assert_eq!(create(&d, &job_body("alice")).await["number"], 41);
    let doc: Value = d.get_json("/openapi.json").await;
    let params = doc["paths"]["/api/v1/training/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(params.iter().any(|p| p["name"] == "number"), "{params:?}");
    assert!(doc["components"]["schemas"]["Job"]["properties"]["number"].is_object());
}

#[tokio::test]
async fn job_cancel_cancels_one_or_several() {
    let d = Daemon::held();
    let ids: Vec<String> = (0..4).map(|_| cli_create(&d, &[])).collect();
    let out = ok(&d, &["job", "cancel", unique_prefix(&ids[0], &ids)]);
    assert_eq!(out, format!("cancelled {}\n", ids[0]));
    assert_eq!(common::api::job(&d, &ids[0]).await["status"], "cancelled");

    let out = ok(&d, &["job", "cancel", &ids[1], &ids[2]]);
    assert_eq!(out, format!("cancelled {}\ncancelled {}\n", ids[1], ids[2]));
    for id in &ids[1..3] {
        assert_eq!(common::api::job(&d, id).await["status"], "cancelled");
    }

    // Already-terminal jobs are errors, but the others are still cancelled.
    let (code, out, err) = run(&d, &["job", "cancel", &ids[0], &ids[3]]);
    assert_eq!(code, 1);
    assert_eq!(out, format!("cancelled {}\n", ids[3]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&ids[0]) && err.contains("already cancelled"),
        "{err}"
    );
    assert_eq!(err.matches(&ids[0]).count(), 1, "the id once: {err}");
    // Numbers work here too.
    let err = fails(&d, &["job", "cancel", "#1"], 1);
    assert_eq!(err.matches(&ids[0]).count(), 1, "{err}");
    assert_eq!(common::api::job(&d, &ids[3]).await["status"], "cancelled");

    let (code, _, _) = run(&d, &["job", "cancel"]);
    assert_eq!(code, 2, "an id is required");
}

// ----------------------------------------------------------------- metrics

#[tokio::test]
async fn metrics_print_in_ascending_step_order_in_every_format() {
    let d = Daemon::capturing();
    let (id, token) = job_with_token(&d, "alice").await;
    // Reported out of order (a retried batch, a late callback).
    let points = json!({"points": [
        {"epoch": 1, "step": 20, "loss": 0.5, "accuracy": 0.7, "mAP50": 0.61},
        {"epoch": 0, "step": 10, "loss": 0.9, "accuracy": 0.4},
        {"epoch": 2, "step": 30, "loss": 0.25, "accuracy": 0.85, "mAP50": 0.7},
    ]});
    assert_eq!(
        ingest(&d, &id, Some(&token), &points).await.0,
        StatusCode::OK
    );
    let late =
        json!({"status": "running", "metrics": {"epoch": 0, "step": 5, "loss": 1.2, "lr": 0.001}});
    assert_eq!(
        callback(&d, &id, Some(&token), &late).await.0,
        StatusCode::OK
    );
    let prefix = &id[..13];

    let table = ok(&d, &["metrics", prefix]);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["EPOCH", "STEP", "loss", "accuracy", "lr", "mAP50", "TIME"],
        "{table}"
    );
    let steps: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(steps, ["5", "10", "20", "30"], "{table}");
    assert!(
        lines[1].contains("1.2") && lines[1].contains("0.001"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].split_whitespace().any(|c| c == "-"),
        "missing values show as -: {}",
        lines[2]
    );

    let json = json_out(&ok(&d, &["metrics", prefix, "-o", "json"]));
    let steps: Vec<i64> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [5, 10, 20, 30]);
    // The same objects the API returns, just reordered.
    let mut api = all_points(&d, &id).await;
    api.sort_by_key(|p| p["step"].as_i64());
    assert_eq!(json, Value::Array(api));

    let csv = ok(&d, &["metrics", prefix, "-o", "csv"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "id,epoch,step,loss,accuracy,lr,mAP50,created_at");
    let steps: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(2).unwrap())
        .collect();
    assert_eq!(steps, ["5", "10", "20", "30"], "{csv}");
    assert_eq!(rows[1].split(',').count(), 8);
    assert!(rows[1].contains(",1.2,"), "{}", rows[1]);

    let last = ok(&d, &["metrics", prefix, "--last", "2", "-o", "csv"]);
    assert_eq!(last.lines().count(), 3);
    assert!(last.lines().nth(2).unwrap().contains(",30,"));

    // A trainer that reports only steps: no made-up epoch 0 anywhere.
    let (stepped, token) = job_with_token(&d, "carol").await;
    let points: Vec<Value> = (1..=5)
        .map(|i| json!({"step": i * 100, "loss": 1.0 / i as f64}))
        .collect();
    let batch = json!({ "points": points });
    assert_eq!(
        ingest(&d, &stepped, Some(&token), &batch).await.0,
        StatusCode::OK
    );
    let table = ok(&d, &["metrics", &stepped]);
    for line in table.lines().skip(1) {
        assert!(line.starts_with("-  "), "no epoch shows as -:\n{table}");
    }
    let csv = ok(&d, &["metrics", &stepped, "-o", "csv"]);
    for row in csv.lines().skip(1) {
        assert_eq!(row.split(',').nth(1), Some(""), "{csv}");
    }
    // --plot draws only the --last N points.
    let plot = ok(&d, &["metrics", &stepped, "--plot", "loss"]);
    assert!(plot.contains("loss: 5 points over steps"), "{plot}");
    let plot = ok(&d, &["metrics", &stepped, "--plot", "loss", "--last", "2"]);
    assert!(
        plot.contains("loss: 2 points over steps, last 0.2, best 0.2"),
        "{plot}"
    );

    // A job without points prints an empty list, not an error.
    let (empty, _) = job_with_token(&d, "bob").await;
    assert_eq!(
        json_out(&ok(&d, &["metrics", &empty, "-o", "json"])),
        json!([])
    );
    let (code, _, _) = run(&d, &["metrics", &empty, "-o", "wide"]);
    assert_eq!(code, 2, "unsupported format is a usage error");
}

// ------------------------------------------------ version, flags, errors

#[tokio::test]
async fn version_prints_both_versions_and_tolerates_an_unreachable_server() {
    let d = Daemon::held();
    let out = ok(&d, &["version"]);
    assert!(
        out.contains(&format!("client: platform {VERSION}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("server: platform {VERSION}")) && out.contains(&d.url),
        "{out}"
    );
    let v = json_out(&ok(&d, &["version", "-o", "json"]));
    assert_eq!(v["client"], VERSION);
    assert_eq!(v["server"], VERSION);

    let (code, out, err) = run(&d, &["version", "--server", "http://127.0.0.1:1"]);
    assert_eq!(
        code, 0,
        "an unreachable server is not an error for version: {err}"
    );
    assert!(
        out.contains(&format!("client: platform {VERSION}")),
        "{out}"
    );
    assert!(out.contains("unreachable"), "{out}");
    let (code, out, _) = run(
        &d,
        &["version", "-o", "json", "--server", "http://127.0.0.1:1"],
    );
    assert_eq!(code, 0);
    assert_eq!(json_out(&out)["server"], Value::Null);
    let out = ok(&d, &["--version"]);
    assert!(out.contains(VERSION));
    // Even an unusable server setting does not hide the client's version.
    let (code, out, err) = run(&d, &["version", "--server", "not a url"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("client: platform {VERSION}")) && out.contains("unreachable"),
        "{out}"
    );
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_the_client_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = Daemon::held();
    for _ in 0..3 {
        cli_create(&d, &[]);
    }
    for args in [
        vec!["job", "list", "-q"],
        vec!["job", "list"],
        vec!["version"],
    ] {
        // stdout is a pipe whose reading end is already closed.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = d
            .cli_command(&args, &[])
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.signal() == Some(13) || out.status.code() == Some(0),
            "{args:?}: ended by SIGPIPE like other tools, got {:?} {err}",
            out.status
        );
    }
}

#[tokio::test]
async fn followers_end_when_a_pending_job_is_cancelled() {
    let d = Daemon::held();
    let id = cli_create(&d, &[]);
    let followers: Vec<_> = [
        vec!["job", "watch", id.as_str()],
        vec!["metrics", id.as_str(), "--follow"],
        vec!["job", "logs", id.as_str(), "--follow"],
    ]
    .into_iter()
    .map(|args| {
        let child = d
            .cli_command(&args, &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (args, child)
    })
    .collect();
    // Let them attach to the still-pending job, then cancel it.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    ok(&d, &["job", "cancel", &id]);
    for (args, mut child) in followers {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} still follows a cancelled job");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let out = child.wait_with_output().unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cancelled"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn global_flags_work_before_and_after_the_subcommand() {
    let d = Daemon::held();
    let id = cli_create(&d, &[]);
    let nowhere = [("PLATFORM_SERVER", "http://127.0.0.1:1")];
    for args in [
        vec!["--server", d.url.as_str(), "-o", "json", "job", "list"],
        vec!["job", "--server", d.url.as_str(), "list", "-o", "json"],
        vec!["job", "list", "-o", "json", "--server", d.url.as_str()],
        vec![
            "-o",
            "json",
            "job",
            "list",
            "--server",
            d.url.as_str(),
            "--no-color",
            "--quiet",
        ],
    ] {
        let (code, out, err) = split(d.cli_env(&args, &nowhere));
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(json_out(&out)[0]["id"], json!(id), "{args:?}");
    }
    // --server beats PLATFORM_SERVER; the environment is used without it.
    let (code, _, err) = split(d.cli_env(&["job", "list"], &nowhere));
    assert_eq!(code, 1);
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
    // -v is accepted anywhere too.
    ok(&d, &["-v", "job", "list", "-vv"]);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let d = Daemon::held();
    let before = snapshot(&d);
    for args in [
        vec![],
        vec!["job"],
        vec!["job", "bogus"],
        vec!["bogus"],
        vec!["job", "create"],
        vec!["job", "create", "--framework", FRAMEWORK, "--model", "m"],
        vec!["job", "list", "--limit", "x"],
        vec!["job", "list", "--nope"],
        vec!["job", "list", "-o", "xml"],
        vec!["job", "get"],
        vec!["job", "get", "a", "b"],
        vec!["metrics"],
        vec!["completions", "tcsh"],
        vec!["job", "get", "0000", "-o", "csv"],
    ] {
        let (code, out, err) = run(&d, &args);
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert!(!err.is_empty(), "{args:?} says why");
        assert!(!err.contains("panicked"));
    }
    assert_eq!(snapshot(&d), before);
}

#[test]
fn help_lists_global_options_apart_and_typos_get_suggestions() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        split(
            Command::new(common::bin())
                .args(args)
                .env_clear()
                .env("HOME", tmp.path())
                .output()
                .unwrap(),
        )
    };
    let (code, help, _) = cli(&["job", "get", "--help"]);
    assert_eq!(code, 0);
    let (own, global) = help
        .split_once("Global Options:")
        .unwrap_or_else(|| panic!("no Global Options heading:\n{help}"));
    assert!(
        own.contains("--help") && !own.contains("--server"),
        "{help}"
    );
    for flag in [
        "--server",
        "--token",
        "--output",
        "--no-color",
        "--verbose",
        "--quiet",
    ] {
        assert!(global.contains(flag), "{flag}: {help}");
    }
    assert!(global.contains("[env: PLATFORM_SERVER]"), "{help}");
    assert!(!help.contains("=]"), "no stray '=': {help}");

    for (typo, want) in [
        ("jbo", "'job'"),
        ("verison", "'version'"),
        ("list", "'job list'"),
        ("watch", "'job watch'"),
    ] {
        let (code, _, err) = cli(&[typo]);
        assert_eq!(code, 2, "{typo}: {err}");
        assert!(
            err.contains("similar") && err.contains(want),
            "{typo}: {err}"
        );
    }
    let (_, _, err) = cli(&["metric"]);
    assert!(
        err.contains("'metrics'") && !err.contains("demo-train"),
        "{err}"
    );
    // Global options may come first; nested typos keep clap's suggestions.
    let (_, _, err) = cli(&["--server", "http://x:1", "-o", "json", "jbo"]);
    assert!(err.contains("'job'"), "{err}");
    let (_, _, err) = cli(&["job", "lsit"]);
    assert!(err.contains("'list'"), "{err}");
}

#[tokio::test]
async fn an_edited_trainers_file_is_reloaded_on_request_and_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("trainers.toml");
    std::fs::write(&file, "").unwrap();
    let d = Daemon::start_with(
        Opts {
            args: vec!["--trainers".into(), file.display().to_string()],
            ..Opts::default()
        }
        .held(),
    );
    let yolo = ["job", "create", "-f", "yolo", "-m", "m", "-d", "s3://b/d/"];
    let err = fails(&d, &yolo, 1);
    assert!(
        err.contains("unknown framework")
            && err.contains(&file.display().to_string())
            && err.contains("platform framework reload"),
        "the error says how to register it: {err}"
    );

    let entry = "[trainers.yolo]\ncommand = [\"python3\", \"train.py\"]\n";
    std::fs::write(&file, entry).unwrap();
    let out = ok(&d, &["framework", "reload"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("yolo ") && l.contains("python3 train.py")),
        "{out}"
    );
    ok(&d, &yolo);

    // A broken file changes nothing, and says why.
    std::fs::write(&file, "[trainers.yolo]\ncommand = []\n").unwrap();
    let err = fails(&d, &["framework", "reload"], 1);
    assert!(
        err.contains("invalid") && err.contains("must not be empty") && err.contains("stay in use"),
        "{err}"
    );
    let (status, body) = post(&d, "/api/v1/training/frameworks/reload", &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(ok(&d, &["framework", "list"]).contains("yolo"));
    ok(&d, &yolo);
    assert!(d.log_text().contains("trainer registry not reloaded"));

    // SIGHUP reloads too (without a handler it would end the daemon).
    std::fs::write(
        &file,
        format!("{entry}[trainers.other]\ncommand = [\"x\"]\n"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    eventually(10, "the SIGHUP reload", || async {
        let (_, list) = get(&d, "/api/v1/training/frameworks").await;
        list.as_array()
            .and_then(|l| l.iter().find(|f| f["name"] == "other").cloned())
    })
    .await;
    let (status, _) = get(&d, "/health").await;
    assert_eq!(status, StatusCode::OK, "still serving");

    let doc: Value = d.get_json("/openapi.json").await;
    let op = &doc["paths"]["/api/v1/training/frameworks/reload"]["post"];
    assert!(
        op["responses"]["200"].is_object() && op["responses"]["422"].is_object(),
        "{op}"
    );
}

#[test]
fn an_unreachable_server_is_one_friendly_line() {
    let tmp = tempfile::tempdir().unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["job", "list"],
        vec!["job", "get", &id],
        vec!["job", "get", "0193"],
        vec!["job", "cancel", &id],
        vec!["job", "create", "-f", "demo", "-m", "m", "-d", "s3://b/d/"],
        vec!["metrics", &id],
    ];
    for (server, env) in [("http://127.0.0.1:1", true), ("http://127.0.0.1:1", false)] {
        for args in &commands {
            let mut cmd = Command::new(common::bin());
            cmd.args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap())
                .env("HOME", tmp.path());
            if env {
                cmd.env("PLATFORM_SERVER", server);
            } else {
                cmd.args(["--server", server]);
            }
            let (code, out, err) = split(cmd.output().unwrap());
            assert_eq!(code, 1, "{args:?}");
            assert_eq!(out, "");
            assert_one_line(&err);
            assert!(
                err.contains(&format!("cannot reach the platform server at {server}")),
                "{err}"
            );
            assert!(err.contains("is `platform serve` running?"), "{err}");
            assert!(err.contains("connection refused"), "{err}");
        }
    }
    // The default server is the documented one.
    let o = Command::new(common::bin())
        .args(["job", "list"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    if err.contains("cannot reach") {
        assert!(err.contains("http://127.0.0.1:8000"), "{err}");
    }
    let (code, _, err) = split(
        Command::new(common::bin())
            .args(["job", "list", "--server", "ftp://example"])
            .env_clear()
            .env("HOME", tmp.path())
            .output()
            .unwrap(),
    );
    assert_eq!(code, 1);
    assert_one_line(&err);
    assert!(err.contains("invalid server URL"), "{err}");
}

#[tokio::test]
async fn the_api_token_is_sent_from_flag_or_environment() {
    let d = Daemon::start_with(
        Opts {
            args: vec!["--api-token".into(), "tok3n-long-enough-1".into()],
            ..Default::default()
        }
        .held(),
    );
    let err = fails(&d, &["job", "list"], 1);
    assert!(err.contains("API token"), "{err}");
    ok(&d, &["job", "list", "--token", "tok3n-long-enough-1"]);
    let (code, _, err) = split(d.cli_env(
        &["job", "list"],
        &[("PLATFORM_TOKEN", "tok3n-long-enough-1")],
    ));
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = split(d.cli_env(
        &["job", "list", "--token", "wrong"],
        &[("PLATFORM_TOKEN", "tok3n-long-enough-1")],
    ));
    assert_eq!(code, 1, "the flag wins over the environment");
}

// ------------------------------------------------------------------ colour

#[tokio::test]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    let d = Daemon::held();
    let id = cli_create(&d, &[]);
    ok(&d, &["job", "cancel", &id]);
    cli_create(&d, &[]);
    // Not a TTY (captured): plain text whatever the command.
    for args in [
        vec!["job", "list"],
        vec!["job", "list", "-o", "wide"],
        vec!["job", "get", &id],
        vec!["version"],
    ] {
        let out = ok(&d, &args);
        assert!(!has_ansi(&out), "{args:?}: {out:?}");
    }
    // On a terminal: coloured status words, still aligned.
    let tty = on_tty(&d, "job list", &[]);
    assert!(has_ansi(&tty), "colour on a TTY: {tty:?}");
    let plain = strip_ansi(&tty);
    let lines: Vec<&str> = plain.lines().collect();
    let col = lines[0].find("PROGRESS").unwrap();
    for l in &lines[1..] {
        assert!(
            l[col..].starts_with("0%"),
            "columns line up on a TTY:\n{plain}"
        );
    }
    // --no-color and NO_COLOR turn it off.
    assert!(!has_ansi(&on_tty(&d, "job list --no-color", &[])));
    assert!(!has_ansi(&on_tty(
        &d,
        &format!("job get {id} --no-color"),
        &[]
    )));
    assert!(!has_ansi(&on_tty(&d, "job list", &[("NO_COLOR", "1")])));
}

// ------------------------------------------------------ completions, man

#[test]
fn completions_and_man_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let o = Command::new(common::bin())
            .args(args)
            .env_clear()
            .env("HOME", tmp.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef platform"),
        ("fish", "complete -c platform"),
    ] {
        let script = cli(&["completions", shell]);
        assert!(script.contains(marker), "{shell}");
        for word in ["job", "create", "cancel", "metrics", "server", "framework"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let page = cli(&["man"]);
    assert!(
        page.contains(".TH platform 1") || page.contains(".TH PLATFORM 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains("job") && page.contains("serve"));
    let dir = tmp.path().join("man1");
    cli(&["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "platform.1",
        "platform-job.1",
        "platform-job-create.1",
        "platform-job-list.1",
        "platform-metrics.1",
        "platform-serve.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
}

#[tokio::test]
async fn job_create_accepts_an_uploaded_dataset_by_name() {
    let d = Daemon::held();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("0001.jpg"), b"jpeg").unwrap();
    ok(
        &d,
        &[
            "dataset",
            "upload",
            dir.path().to_str().unwrap(),
            "--name",
            "coco128",
        ],
    );
    let listed = json_out(&ok(&d, &["dataset", "list", "-o", "json"]));
    let uri = listed[0]["uri"].as_str().unwrap().to_string();
    let job = json_out(&ok(
        &d,
        &[
            "job", "create", "-f", "demo", "-m", "m", "-d", "coco128", "-o", "json",
        ],
    ));
    assert_eq!(job["dataset_s3_uri"], uri);
    let err = fails(
        &d,
        &["job", "create", "-f", "demo", "-m", "m", "-d", "nope"],
        1,
    );
    assert!(err.contains("no dataset named \"nope\""), "{err}");
    assert_one_line(&err);
}
