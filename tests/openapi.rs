//! The OpenAPI document, as a real daemon serves it: valid OpenAPI 3.1
//! (checked by `openapi-spec-validator`, which `scripts/test.sh` installs),
//! every `$ref` resolving, and as exact as the server: every status a route
//! can answer, the parameter bounds and name patterns it enforces, and the
//! frameworks it accepts. `scripts/fuzz-api.sh` then fuzzes a live daemon
//! against it in CI.

mod common;

use std::process::Command;

use common::{Daemon, Opts};
use platform::model::names::{DATASET_NAME_PATTERN, PATH_PATTERN};
use serde_json::{json, Value};

const TOKEN: &str = "openapi-test-token-0123456789";

fn daemon(token: bool) -> Daemon {
    let mut opts = Opts::default().held();
    if token {
        opts.args.extend(["--api-token".into(), TOKEN.into()]);
    }
    Daemon::start_with(opts)
}

async fn document(d: &Daemon) -> Value {
    let resp = d.http().get(d.at("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Every operation: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

/// The status codes an operation documents.
fn statuses(op: &Value) -> Vec<String> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The schema of parameter `name` of `method path`.
fn param(doc: &Value, path: &str, method: &str, name: &str) -> Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
        .clone()
}

/// Every `$ref` in `v`, with where it was found.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref" {
                    out.push((at.to_string(), child.as_str().unwrap_or("").to_string()));
                } else {
                    refs(child, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let d = daemon(true);
    let doc = document(&d).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    // Not optional: a missing validator fails the test instead of skipping
    // it (scripts/test.sh and CI install it).
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; from openapi_spec_validator import validate; \
             from openapi_spec_validator.readers import read_from_filename; \
             spec, _ = read_from_filename(sys.argv[1]); validate(spec); print('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs (the OpenAPI validator is a Python package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "openapi-spec-validator is not installed: pip install openapi-spec-validator \
         (scripts/test.sh does it)\n{stderr}"
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("valid"),
        "/openapi.json is not valid OpenAPI 3.1:\n{stderr}"
    );
}

#[tokio::test]
async fn every_ref_resolves() {
    let d = daemon(true);
    let doc = document(&d).await;
    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    assert!(found.len() > 20, "the document uses components: {found:?}");
    for (at, target) in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {target:?} is not a local reference"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: {target} does not resolve"
        );
    }
}

#[tokio::test]
async fn parameters_carry_the_servers_bounds_and_patterns() {
    let d = daemon(true);
    let doc = document(&d).await;
    let jobs = "/api/v1/training/jobs";
    let metrics = "/api/v1/training/jobs/{id}/metrics";
    let bounds = |s: &Value| (s.get("minimum").cloned(), s.get("maximum").cloned());
    assert_eq!(
        bounds(&param(&doc, jobs, "get", "limit")),
        (Some(json!(1)), Some(json!(1000)))
    );
    let i64_max = Some(json!(i64::MAX));
    assert_eq!(
        bounds(&param(&doc, jobs, "get", "offset")),
        (Some(json!(0)), i64_max.clone())
    );
    assert_eq!(
        bounds(&param(&doc, metrics, "get", "limit")),
        (Some(json!(1)), Some(json!(10000)))
    );
    assert_eq!(
        bounds(&param(&doc, metrics, "get", "max_points")),
        (Some(json!(2)), Some(json!(10000)))
    );
    assert_eq!(
        bounds(&param(&doc, metrics, "get", "after_id")),
        (Some(json!(0)), i64_max)
    );
    assert_eq!(
        bounds(&param(
            &doc,
            "/api/v1/training/jobs/{id}/logs",
            "get",
            "tail"
        )),
        (Some(json!(0)), Some(json!(u64::MAX)))
    );
    let file = "/api/v1/datasets/{name}/files/{path}";
    for method in ["get", "put"] {
        assert_eq!(
            param(&doc, file, method, "name")["pattern"],
            DATASET_NAME_PATTERN
        );
        assert_eq!(param(&doc, file, method, "path")["pattern"], PATH_PATTERN);
    }
    assert_eq!(
        param(
            &doc,
            "/api/v1/training/jobs/{id}/artifacts/{path}",
            "put",
            "path"
        )["pattern"],
        PATH_PATTERN
    );
    assert_eq!(
        param(&doc, "/api/v1/training/jobs/{id}", "get", "id")["format"],
        "uuid"
    );
    // The create body: lengths, and exactly the registered frameworks.
    let create = &doc["components"]["schemas"]["CreateJob"]["properties"];
    assert_eq!(create["framework"]["enum"], json!(["demo"]));
    assert_eq!(create["user_id"]["maxLength"], 255);
    assert_eq!(create["dataset_s3_uri"]["maxLength"], 1024);
    let update = &doc["components"]["schemas"]["TrainingUpdate"]["properties"];
    assert_eq!(
        (
            update["progress"]["minimum"].clone(),
            update["progress"]["maximum"].clone()
        ),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn every_status_the_routes_answer_is_documented() {
    let d = daemon(true);
    let doc = document(&d).await;
    let ops = operations(&doc);
    assert_eq!(ops.len(), 49, "every route is documented");
    for (path, method, op) in &ops {
        let codes = statuses(op);
        let has = |c: &str| codes.iter().any(|x| x == c);
        let what = format!("{} {path} documents", method.to_uppercase());
        let public = ["/", "/health", "/metrics"].contains(&path.as_str());
        let trainer = op["security"] == json!([{"callback_token": []}]);
        if !public {
            assert!(has("401"), "{what} 401 (a token is configured): {codes:?}");
        }
        if !public && !trainer {
            assert!(
                has("429"),
                "{what} 429 (failed API-token authentication is rate-limited): {codes:?}"
            );
        }
        if trainer {
            assert!(
                !has("429"),
                "{what} no 429: job tokens are not rate-limited: {codes:?}"
            );
        }
        if path.contains("{id}") {
            assert!(has("404") && has("422"), "{what} 404 and 422: {codes:?}");
        }
        let admins_only = path.starts_with("/api/v1/webhooks")
            || path.ends_with("/pause")
            || path.ends_with("/resume")
            || path == "/api/v1/prune";
        if admins_only || (method == "patch" && path.ends_with("/jobs/{id}")) {
            assert!(has("403"), "{what} 403 for members: {codes:?}");
        }
        let json_body = op["requestBody"]["content"]
            .get("application/json")
            .is_some();
        if json_body {
            for c in ["400", "413", "415", "422"] {
                assert!(has(c), "{what} {c} for its JSON body: {codes:?}");
            }
        }
        if op["requestBody"]["content"]
            .get("application/octet-stream")
            .is_some()
        {
            for c in ["400", "413", "422", "503"] {
                assert!(has(c), "{what} {c} for its upload: {codes:?}");
            }
        }
    }
    let callback = &doc["paths"]["/api/v1/training/jobs/{id}/callback"]["post"];
    assert!(statuses(callback).contains(&"409".to_string()));
    let ack = &doc["components"]["schemas"]["CallbackAck"]["properties"];
    assert!(ack.get("applied").is_some(), "the ack documents `applied`");
    let upload = &doc["paths"]["/api/v1/training/jobs/{id}/artifacts/{path}"]["put"];
    assert!(statuses(upload).contains(&"409".to_string()));
}

/// Without an API token user routes are open, and the document says so:
/// no security requirement, no 401.
#[tokio::test]
async fn an_open_daemon_documents_no_api_token() {
    let d = daemon(false);
    let doc = document(&d).await;
    assert!(doc.get("security").is_none(), "{}", doc["security"]);
    assert!(doc["components"]["securitySchemes"]
        .get("api_token")
        .is_none());
    let list = &doc["paths"]["/api/v1/training/jobs"]["get"];
    assert!(!statuses(list).contains(&"401".to_string()));
    assert!(!statuses(list).contains(&"429".to_string()));
    // Trainer routes still need their job's token.
    let callback = &doc["paths"]["/api/v1/training/jobs/{id}/callback"]["post"];
    assert_eq!(callback["security"], json!([{"callback_token": []}]));
    assert!(statuses(callback).contains(&"401".to_string()));
}
