//! Object storage, end to end: the real daemon over both backends — the
//! local directory default and a real S3 server on loopback (s3s-fs, which
//! checks request signatures). Every scenario in [`both!`] runs once per
//! backend with the same assertions.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, stderr, stdout, Daemon, Opts};
use platform::client::encode_path;
use platform::storage::{keys, BackendConfig, S3Config, Secret, StorageConfig, Store};
use rand::RngCore;
use reqwest::StatusCode;
use s3::S3Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Local,
    S3,
}

/// Runs each scenario once per backend.
macro_rules! both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(super::Backend::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name(super::Backend::S3).await
            }
        }
    )* };
}

both!(
    round_trip,
    cli_upload_is_resumable,
    dataset_check_on_job_create,
    artifact_upload_needs_the_job_token,
    path_traversal_is_rejected,
    health_reports_storage,
    uploads_respect_the_size_limit,
    interrupted_upload_stores_nothing,
    cli_lists_and_downloads_artifacts,
    store_functions_for_runners,
    demo_checkpoint_and_archived_logs,
    artifact_uploads_close_after_the_grace,
    missing_files_are_named_within_their_dataset_or_job,
    trainers_download_their_jobs_dataset,
);

/// A daemon on one backend (and the S3 server it uses).
struct Env {
    d: Daemon,
    s3: Option<S3Server>,
    http: reqwest::Client,
}

impl Env {
    fn start(b: Backend, envs: &[(&str, &str)]) -> Env {
        Self::start_with(b, envs, false)
    }

    /// Jobs launch a stand-in trainer that hands the test its token
    /// ([`Opts::capturing`]).
    fn capturing(b: Backend, envs: &[(&str, &str)]) -> Env {
        Self::start_with(b, envs, true)
    }

    fn start_with(b: Backend, envs: &[(&str, &str)], capture: bool) -> Env {
        let s3 = (b == Backend::S3).then(S3Server::start);
        let mut all = s3.as_ref().map(S3Server::envs).unwrap_or_default();
        all.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let d = Daemon::start_with(Opts {
            envs: all,
            capture,
            ..Default::default()
        });
        Env {
            d,
            s3,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// The URI of the store's root, as the daemon reports it.
    fn root_uri(&self) -> String {
        match &self.s3 {
            Some(_) => format!("s3://{}/", s3::BUCKET),
            None => {
                let root = std::fs::canonicalize(self.d.data_dir.join("store")).unwrap();
                format!("file://{}/", root.display())
            }
        }
    }

    async fn put(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        bearer: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.put(self.d.at(path)).body(body);
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        json_of(rb.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut rb = self.http.get(self.d.at(path));
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        json_of(rb.send().await.unwrap()).await
    }

    async fn get_bytes(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Bytes) {
        let mut rb = self.http.get(self.d.at(path));
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        (r.status(), r.bytes().await.unwrap())
    }

    async fn create_job(&self, dataset: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut body = common::demo_job(json!({"epochs": 1}));
        body["dataset_s3_uri"] = json!(dataset);
        let mut rb = self
            .http
            .post(self.d.at("/api/v1/training/jobs"))
            .json(&body);
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        json_of(rb.send().await.unwrap()).await
    }

    /// A job and its callback token, once the job runs (a capturing env).
    async fn job_with_token(&self, bearer: Option<&str>) -> (String, String) {
        self.job_on("s3://anywhere/datasets/x/", bearer).await
    }

    /// [`Env::job_with_token`] for a job of `dataset`.
    async fn job_on(&self, dataset: &str, bearer: Option<&str>) -> (String, String) {
        let (s, job) = self.create_job(dataset, bearer).await;
        assert_eq!(s, StatusCode::CREATED, "{job}");
        let id = job["id"].as_str().unwrap().to_string();
        let token = common::api::callback_token(&self.d, &id);
        eventually(20, "the job to run", || async {
            (self
                .get(&format!("/api/v1/training/jobs/{id}"), bearer)
                .await
                .1["status"]
                == "running")
                .then_some(())
        })
        .await;
        (id, token)
    }
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let s = r.status();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

const MIB: usize = 1024 * 1024;

async fn round_trip(b: Backend) {
    let e = Env::start(b, &[]);
    let root = e.root_uri();
    let (s, f) = e
        .put(
            "/api/v1/datasets/coco/files/images/a.jpg",
            b"hello".to_vec(),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert_eq!(f["path"], "images/a.jpg");
    assert_eq!(f["size"], 5);
    assert_eq!(f["uri"], format!("{root}datasets/coco/images/a.jpg"));
    // Larger than one multipart part (8 MiB), so it goes up in parts.
    let big = random(20 * MIB + 123);
    let (s, f) = e
        .put(
            "/api/v1/datasets/coco/files/weights/big.bin",
            big.clone(),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert_eq!(f["size"], big.len());
    // Names with spaces, '#', '%' and non-ASCII keep their exact spelling.
    let odd = "labels/my file #1 (50%) é.txt";
    let (s, f) = e
        .put(
            &format!("/api/v1/datasets/coco/files/{}", encode_path(odd)),
            b"odd".to_vec(),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert_eq!(f["path"], odd);

    let (s, list) = e.get("/api/v1/datasets", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list,
        json!([{"name": "coco", "uri": format!("{root}datasets/coco/"), "file_count": 3,
                "total_bytes": 5 + big.len() + 3}])
    );
    let (s, ds) = e.get("/api/v1/datasets/coco", None).await;
    assert_eq!(s, StatusCode::OK);
    let paths: Vec<&str> = ds["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["images/a.jpg", odd, "weights/big.bin"]);
    assert_eq!(ds["files"][2]["size"], big.len());
    assert_eq!(ds["total_bytes"], 5 + big.len() + 3);

    let (s, got) = e
        .get_bytes("/api/v1/datasets/coco/files/weights/big.bin", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(got == big, "downloaded bytes differ");
    let (s, got) = e
        .get_bytes(
            &format!("/api/v1/datasets/coco/files/{}", encode_path(odd)),
            None,
        )
        .await;
    assert_eq!((s, &got[..]), (StatusCode::OK, &b"odd"[..]));

    // Overwrite replaces the content.
    e.put(
        "/api/v1/datasets/coco/files/images/a.jpg",
        b"bye".to_vec(),
        None,
    )
    .await;
    let (_, got) = e
        .get_bytes("/api/v1/datasets/coco/files/images/a.jpg", None)
        .await;
    assert_eq!(&got[..], b"bye");

    let (s, body) = e.get("/api/v1/datasets/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, _) = e
        .get_bytes("/api/v1/datasets/coco/files/images/missing.jpg", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn cli_upload_is_resumable(b: Backend) {
    let e = Env::start(b, &[]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("sub/deeper")).unwrap();
    std::fs::write(p.join("a.txt"), "0123456789").unwrap();
    std::fs::write(p.join("sub/b.bin"), random(9 * MIB)).unwrap();
    std::fs::write(p.join("sub/deeper/c.txt"), "c").unwrap();
    let dir_arg = p.to_str().unwrap();

    let o = e.d.cli(&["dataset", "upload", dir_arg, "--name", "ds"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let uri = format!("{}datasets/ds/", e.root_uri());
    assert!(stdout(&o).contains(&uri), "{}", stdout(&o));
    let (_, ds) = e.get("/api/v1/datasets/ds", None).await;
    assert_eq!(ds["file_count"], 3);
    assert_eq!(ds["total_bytes"], 10 + 9 * MIB + 1);

    // Second run: nothing to do.
    let o =
        e.d.cli(&["dataset", "upload", dir_arg, "--name", "ds", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["uploaded_files"].clone(), v["skipped_files"].clone()),
        (json!(0), json!(3))
    );
    assert_eq!(v["uri"], uri);

    // A changed size and a new file are uploaded; the rest is skipped.
    std::fs::write(p.join("a.txt"), "01234567890123").unwrap();
    std::fs::write(p.join("d.txt"), "new").unwrap();
    let o =
        e.d.cli(&["dataset", "upload", dir_arg, "--name", "ds", "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["uploaded_files"].clone(), v["skipped_files"].clone()),
        (json!(2), json!(2))
    );
    let (_, got) = e.get_bytes("/api/v1/datasets/ds/files/a.txt", None).await;
    assert_eq!(&got[..], b"01234567890123");

    let o = e.d.cli(&["dataset", "list", "-o", "json"]);
    let (_, api) = e.get("/api/v1/datasets", None).await;
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap(), api);
    let o = e.d.cli(&["dataset", "list"]);
    assert!(
        stdout(&o).contains("ds") && stdout(&o).contains(&uri),
        "{}",
        stdout(&o)
    );

    // Bad names are usage errors, and nothing is uploaded.
    let o = e.d.cli(&["dataset", "upload", dir_arg, "--name", "../x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("ok.txt"), "x").unwrap();
    std::fs::write(bad.path().join("a\\b.txt"), "x").unwrap();
    let o = e.d.cli(&[
        "dataset",
        "upload",
        bad.path().to_str().unwrap(),
        "--name",
        "bad",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("a\\b.txt"), "{}", stderr(&o));
    let (s, _) = e.get("/api/v1/datasets/bad", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn dataset_check_on_job_create(b: Backend) {
    let e = Env::start(b, &[("DATASET_CHECK", "on")]);
    let root = e.root_uri();
    let missing = format!("{root}datasets/missing/");
    let (s, body) = e.create_job(&missing, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "dataset_s3_uri");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&missing) && detail.contains("datasets/missing"),
        "{detail}"
    );

    let (s, body) = e
        .create_job("s3://some-other-bucket/datasets/x/", None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not in the configured object store"),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains(&root), "{body}");

    e.put(
        "/api/v1/datasets/present/files/img/1.jpg",
        b"x".to_vec(),
        None,
    )
    .await;
    for uri in [
        format!("{root}datasets/present/"),
        format!("{root}datasets/present"),
        format!("{root}datasets/present/img/1.jpg"),
    ] {
        let (s, body) = e.create_job(&uri, None).await;
        assert_eq!(s, StatusCode::CREATED, "{uri}: {body}");
    }
    // A prefix that only shares leading characters is not the dataset.
    let (s, _) = e.create_job(&format!("{root}datasets/pres"), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Rejected requests stored nothing.
    let (_, jobs) = e.get("/api/v1/training/jobs", None).await;
    assert_eq!(jobs.as_array().unwrap().len(), 3);

    let off = Env::start(b, &[("DATASET_CHECK", "off")]);
    let (s, body) = off.create_job(&missing, None).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

async fn artifact_upload_needs_the_job_token(b: Backend) {
    let api = "operator-api-token";
    // A stand-in trainer: the demo trainer would add its own checkpoint.
    let e = Env::capturing(b, &[("PLATFORM_API_TOKEN", api)]);
    let (id, token) = e.job_with_token(Some(api)).await;
    let path = format!("/api/v1/training/jobs/{id}/artifacts/checkpoints/best.pt");

    let (s, body) = e.put(&path, b"weights".to_vec(), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, _) = e
        .put(&path, b"weights".to_vec(), Some("not-the-token"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = e.put(&path, b"weights".to_vec(), Some(api)).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the API token is no trainer token"
    );
    let (s, f) = e.put(&path, b"weights".to_vec(), Some(&token)).await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    let outputs = format!("{}jobs/{id}/outputs/", e.root_uri());
    assert_eq!(f["uri"], format!("{outputs}checkpoints/best.pt"));
    let big = random(12 * MIB);
    let (s, f) = e
        .put(
            &format!("/api/v1/training/jobs/{id}/artifacts/last.pt"),
            big.clone(),
            Some(&token),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");

    // Listing and downloading are user-facing: they need the API token.
    let list = format!("/api/v1/training/jobs/{id}/artifacts");
    let (s, _) = e.get(&list, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, files) = e.get(&list, Some(api)).await;
    assert_eq!(s, StatusCode::OK, "{files}");
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["path"], "checkpoints/best.pt");
    assert_eq!(files[0]["size"], 7);
    assert_eq!(files[1]["path"], "last.pt");
    assert_eq!(files[1]["uri"], format!("{outputs}last.pt"));
    assert!(files[1]["last_modified"].is_string());
    let (s, got) = e.get_bytes(&format!("{list}/last.pt"), Some(api)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got == big);
    let (s, _) = e.get_bytes(&format!("{list}/last.pt"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A finished job still accepts its trainer's final uploads (documented).
    // Cancel it, unless the demo trainer already completed it.
    e.http
        .delete(e.d.at(&format!("/api/v1/training/jobs/{id}")))
        .bearer_auth(api)
        .send()
        .await
        .unwrap();
    eventually(20, "the job to end", || async {
        let (_, job) = e
            .get(&format!("/api/v1/training/jobs/{id}"), Some(api))
            .await;
        ["completed", "failed", "cancelled"]
            .contains(&job["status"].as_str().unwrap_or(""))
            .then_some(())
    })
    .await;
    let (s, _) = e
        .put(&format!("{list}/final.pt"), b"f".to_vec(), Some(&token))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // … but nothing an ended job stored is ever replaced: 409 naming the
    // file, with the job's status, and the bytes stay as they were.
    for name in ["final.pt", "last.pt"] {
        let (s, body) = e
            .put(
                &format!("{list}/{name}"),
                b"rewritten".to_vec(),
                Some(&token),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{name}: {body}");
        assert_eq!(body["status"], "cancelled", "{body}");
        assert!(body["detail"].as_str().unwrap().contains(name), "{body}");
    }
    let (_, got) = e.get_bytes(&format!("{list}/final.pt"), Some(api)).await;
    assert_eq!(&got[..], b"f");
    let (_, got) = e.get_bytes(&format!("{list}/last.pt"), Some(api)).await;
    assert!(got == big);

    let unknown = uuid::Uuid::now_v7();
    let (s, _) = e
        .put(
            &format!("/api/v1/training/jobs/{unknown}/artifacts/x"),
            b"x".to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = e
        .get(
            &format!("/api/v1/training/jobs/{unknown}/artifacts"),
            Some(api),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = e
        .put(
            "/api/v1/training/jobs/not-a-uuid/artifacts/x",
            b"x".to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Another job's token does not open this job's prefix.
    let (_, other_token) = e.job_with_token(Some(api)).await;
    let (s, _) = e
        .put(&format!("{list}/x"), b"x".to_vec(), Some(&other_token))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// After `--artifact-grace` (here 0 s) an ended job takes no uploads at all:
/// its token cannot add to its outputs for ever.
/// A trainer reads its job's dataset with the job's token alone: no API
/// token, no storage credentials, and nothing outside that dataset.
async fn trainers_download_their_jobs_dataset(b: Backend) {
    let api = "operator-api-token";
    let e = Env::capturing(b, &[("PLATFORM_API_TOKEN", api)]);
    for (name, path, body) in [
        ("mine", "a.txt", "A"),
        ("mine", "sub/b.txt", "BB"),
        ("other", "secret.txt", "S"),
    ] {
        let target = format!("/api/v1/datasets/{name}/files/{path}");
        let (s, f) = e.put(&target, body, Some(api)).await;
        assert_eq!(s, StatusCode::CREATED, "{f}");
    }
    let (id, token) = e
        .job_on(&format!("{}datasets/mine/", e.root_uri()), Some(api))
        .await;
    let listing = format!("/api/v1/training/jobs/{id}/dataset");
    assert_eq!(e.get(&listing, None).await.0, StatusCode::UNAUTHORIZED);
    let (s, _) = e.get(&listing, Some(api)).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the API token is no trainer token"
    );
    let (s, d) = e.get(&listing, Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let paths: Vec<_> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].clone())
        .collect();
    assert_eq!(paths, [json!("a.txt"), json!("sub/b.txt")]);
    assert_eq!(
        (d["file_count"].clone(), d["total_bytes"].clone()),
        (json!(2), json!(3))
    );
    let file = |p: &str| format!("/api/v1/training/jobs/{id}/dataset/files/{p}");
    let (s, bytes) = e.get_bytes(&file("sub/b.txt"), Some(&token)).await;
    assert_eq!((s, &bytes[..]), (StatusCode::OK, &b"BB"[..]));
    assert_eq!(
        e.get_bytes(&file("sub/b.txt"), Some(api)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Nothing beside the dataset: not another dataset's file, not by a detour.
    assert_eq!(
        e.get(&file("secret.txt"), Some(&token)).await.0,
        StatusCode::NOT_FOUND
    );
    for detour in [
        "../other/secret.txt",
        "%2e%2e/other/secret.txt",
        "..%2Fother%2Fsecret.txt",
    ] {
        let s = raw_status(&e.d.url, "GET", &file(detour), Some(&token)).await;
        assert!(s == 422 || s == 400, "{detour}: {s}");
    }
    // A dataset that is one object lists as that file.
    let (one, one_token) = e
        .job_on(
            &format!("{}datasets/other/secret.txt", e.root_uri()),
            Some(api),
        )
        .await;
    let (s, d) = e
        .get(
            &format!("/api/v1/training/jobs/{one}/dataset"),
            Some(&one_token),
        )
        .await;
    assert_eq!(
        (s, d["files"][0]["path"].clone()),
        (StatusCode::OK, json!("secret.txt")),
        "{d}"
    );
    let (s, bytes) = e
        .get_bytes(
            &format!("/api/v1/training/jobs/{one}/dataset/files/secret.txt"),
            Some(&one_token),
        )
        .await;
    assert_eq!((s, &bytes[..]), (StatusCode::OK, &b"S"[..]));
    // Outside the store: a 404 that says so.
    let (far, far_token) = e.job_with_token(Some(api)).await;
    let (s, body) = e
        .get(
            &format!("/api/v1/training/jobs/{far}/dataset"),
            Some(&far_token),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("s3://anywhere/datasets/x/"),
        "{body}"
    );
}

async fn artifact_uploads_close_after_the_grace(b: Backend) {
    let e = Env::capturing(b, &[("ARTIFACT_GRACE", "0")]);
    let (id, token) = e.job_with_token(None).await;
    let list = format!("/api/v1/training/jobs/{id}/artifacts");
    let (s, f) = e
        .put(&format!("{list}/a.pt"), b"a".to_vec(), Some(&token))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    // While the job is live a trainer may replace its own file.
    let (s, f) = e
        .put(&format!("{list}/a.pt"), b"aa".to_vec(), Some(&token))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    let r = e
        .http
        .delete(e.d.at(&format!("/api/v1/training/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (s, body) = e
        .put(&format!("{list}/b.pt"), b"b".to_vec(), Some(&token))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("--artifact-grace"),
        "{body}"
    );
    let (_, files) = e.get(&list, None).await;
    let paths: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["a.pt"], "a refused upload stores nothing");
}

/// A 404 names the file as the user did, within its dataset or job, and
/// never shows where the store lives on the server.
async fn missing_files_are_named_within_their_dataset_or_job(b: Backend) {
    let e = Env::capturing(b, &[]);
    let (s, _) = e
        .put("/api/v1/datasets/coco/files/a.jpg", b"x".to_vec(), None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (id, _) = e.job_with_token(None).await;
    let data_dir = e.d.data_dir.to_str().unwrap().to_string();
    for (path, want) in [
        (
            "/api/v1/datasets/coco/files/dir/missing.jpg".to_string(),
            r#"file "dir/missing.jpg" of dataset "coco" does not exist"#.to_string(),
        ),
        (
            format!("/api/v1/training/jobs/{id}/artifacts/ckpt/missing.pt"),
            format!(r#"artifact "ckpt/missing.pt" of job {id} does not exist"#),
        ),
    ] {
        let (s, body) = e.get(&path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert_eq!(detail, want);
        assert!(
            !detail.contains(&data_dir) && !detail.contains("://"),
            "{detail}"
        );
    }
}

/// The local store is a filesystem: a file cannot also be a folder. Such a
/// path is a 409 to write and a 404 to read, not "store unavailable"; and
/// the longest segment the rules allow can be stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_refuses_a_file_where_a_folder_is_needed() {
    let e = Env::start(Backend::Local, &[]);
    let files = "/api/v1/datasets/d/files";
    let (s, _) = e
        .put(&format!("{files}/a/b.txt"), b"x".to_vec(), None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for clash in ["a", "a/b.txt/c"] {
        let (s, body) = e
            .put(&format!("{files}/{clash}"), b"y".to_vec(), None)
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{clash}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("{clash:?}")), "{detail}");
        assert!(!detail.contains(e.d.data_dir.to_str().unwrap()), "{detail}");
    }
    let (s, body) = e.get(&format!("{files}/a/b.txt/c"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let longest = "s".repeat(keys::MAX_SEGMENT_BYTES);
    let (s, body) = e
        .put(&format!("{files}/{longest}"), b"z".to_vec(), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, _) = e
        .put(&format!("{files}/{longest}s"), b"z".to_vec(), None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Sends a request exactly as written (no client-side `..` normalization)
/// and returns the status code.
async fn raw_status(base: &str, method: &str, target: &str, bearer: Option<&str>) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 4\r\nConnection: close\r\n\r\nevil"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn path_traversal_is_rejected(b: Backend) {
    let e = Env::capturing(b, &[]);
    let (id, token) = e.job_with_token(None).await;
    let dataset_targets = [
        "/api/v1/datasets/d/files/../../../etc/x",
        "/api/v1/datasets/d/files/a/../../x",
        "/api/v1/datasets/d/files/%2e%2e/%2e%2e/x",
        "/api/v1/datasets/d/files/%2E%2E%2Fx",
        "/api/v1/datasets/d/files/./x",
        "/api/v1/datasets/d/files//etc/passwd",
        "/api/v1/datasets/d/files/%2Fetc%2Fpasswd",
        "/api/v1/datasets/d/files/..%5C..%5Cx",
        "/api/v1/datasets/d/files/a%5Cb",
        "/api/v1/datasets/d/files/a%00b",
        "/api/v1/datasets/d/files/a%0Ab",
        "/api/v1/datasets/d/files/a//b",
        "/api/v1/datasets/../files/x",
        "/api/v1/datasets/%2e%2e/files/x",
        "/api/v1/datasets/a%2Fb/files/x",
        "/api/v1/datasets/.hidden/files/x",
    ];
    for t in dataset_targets {
        for method in ["PUT", "GET"] {
            let s = raw_status(&e.d.url, method, t, None).await;
            assert!(s == 422 || s == 400, "{method} {t}: {s}");
        }
    }
    let long = "x".repeat(keys::MAX_PATH_BYTES + 1);
    let s = raw_status(
        &e.d.url,
        "PUT",
        &format!("/api/v1/datasets/d/files/{long}"),
        None,
    )
    .await;
    assert_eq!(s, 422);
    let artifact_targets = [
        "../logs/trainer.log",
        "%2e%2e/logs/trainer.log",
        "%2e%2e%2flogs%2ftrainer.log",
        "..%2F..%2F..%2Fdatasets%2Fd%2Fx",
        "/abs",
        "%2Fabs",
        "a%5C..%5C..%5Cb",
    ];
    for t in artifact_targets {
        let target = format!("/api/v1/training/jobs/{id}/artifacts/{t}");
        let s = raw_status(&e.d.url, "PUT", &target, Some(&token)).await;
        assert!(s == 422 || s == 400, "PUT {target}: {s}");
    }
    // Nothing was written anywhere.
    let (_, list) = e.get("/api/v1/datasets", None).await;
    assert_eq!(list, json!([]));
    let (_, arts) = e
        .get(&format!("/api/v1/training/jobs/{id}/artifacts"), None)
        .await;
    assert_eq!(arts, json!([]));
    if b == Backend::Local {
        let files: Vec<_> = walkdir::WalkDir::new(e.d.data_dir.parent().unwrap())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|f| f.file_type().is_file())
            // The database, its lock and the runner's per-job state and logs.
            .filter(|f| !f.file_name().to_string_lossy().starts_with("platform."))
            // The first admin's token, written once at first start (mode 0600).
            .filter(|f| f.path() != e.d.data_dir.join("admin-token"))
            .filter(|f| !f.path().starts_with(e.d.data_dir.join("runs")))
            // The test's own stand-in trainer and the tokens it captured.
            .filter(|f| {
                !f.path()
                    .starts_with(e.d.data_dir.parent().unwrap().join("capture"))
            })
            .map(|f| f.path().display().to_string())
            .collect();
        assert!(files.is_empty(), "unexpected files: {files:?}");
    }
}

async fn health_reports_storage(b: Backend) {
    let mut e = Env::start(b, &[]);
    let (s, h) = e.get("/health", None).await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["checks"]["storage"], "ok");
    assert_eq!(h["checks"]["database"], "ok");
    match e.s3.as_mut() {
        Some(s3) => s3.stop(),
        None => {
            // Replace the store directory with a plain file.
            let root = e.d.data_dir.join("store");
            std::fs::remove_dir_all(&root).unwrap();
            std::fs::write(&root, "not a directory").unwrap();
        }
    }
    let h = eventually(20, "an unhealthy storage check", || async {
        let (s, h) = e.get("/health", None).await;
        (s == StatusCode::SERVICE_UNAVAILABLE).then_some(h)
    })
    .await;
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["checks"]["database"], "ok");
    let why = h["checks"]["storage"].as_str().unwrap();
    assert!(why != "ok" && !why.is_empty(), "{h}");
    if b == Backend::S3 {
        assert!(why.contains("cannot reach the S3 endpoint"), "{why}");
    }
}

async fn uploads_respect_the_size_limit(b: Backend) {
    let e = Env::start(b, &[("MAX_OBJECT_BYTES", "1048576")]);
    let (s, f) = e
        .put("/api/v1/datasets/lim/files/exact.bin", random(MIB), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    // Declared too large: refused before reading.
    let (s, body) = e
        .put(
            "/api/v1/datasets/lim/files/declared.bin",
            random(MIB + 1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("1048576"),
        "{body}"
    );
    // Streamed without a length: refused once the limit is passed.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..20)
        .map(|_| Ok(Bytes::from(random(64 * 1024))))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (s, _) = e
        .put("/api/v1/datasets/lim/files/streamed.bin", body, None)
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, ds) = e.get("/api/v1/datasets/lim", None).await;
    assert_eq!(ds["file_count"], 1, "{ds}");
    assert_eq!(ds["files"][0]["path"], "exact.bin");
}

async fn interrupted_upload_stores_nothing(b: Backend) {
    let e = Env::start(b, &[]);
    // 10 MiB (past the first part) and then the client's body fails.
    let mut chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..10).map(|_| Ok(Bytes::from(random(MIB)))).collect();
    chunks.push(Err(std::io::Error::other("disk read failed")));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = e
        .http
        .put(e.d.at("/api/v1/datasets/broken/files/half.bin"))
        .body(body)
        .send()
        .await;
    if let Ok(r) = r {
        assert!(!r.status().is_success(), "{}", r.status());
    }
    let (s, _) = e.get("/api/v1/datasets/broken", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = e
        .get_bytes("/api/v1/datasets/broken/files/half.bin", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn cli_lists_and_downloads_artifacts(b: Backend) {
    let e = Env::capturing(b, &[]);
    let (id, token) = e.job_with_token(None).await;
    let big = random(9 * MIB);
    for (path, body) in [
        ("ckpt/best.pt", big.clone()),
        ("ckpt/last.pt", b"last".to_vec()),
        ("results.csv", b"a,b\n".to_vec()),
    ] {
        let (s, f) = e
            .put(
                &format!("/api/v1/training/jobs/{id}/artifacts/{path}"),
                body,
                Some(&token),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{f}");
    }
    let prefix = &id[..8];
    let o = e.d.cli(&["job", "artifacts", prefix, "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, api) = e
        .get(&format!("/api/v1/training/jobs/{id}/artifacts"), None)
        .await;
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap(), api);
    let o = e.d.cli(&["job", "artifacts", prefix]);
    let table = stdout(&o);
    assert!(
        table.contains("ckpt/best.pt") && table.contains("9.00 MiB"),
        "{table}"
    );

    let out = tempfile::tempdir().unwrap();
    let all = out.path().join("all");
    let o =
        e.d.cli(&["job", "download", prefix, "--to", all.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(all.join("ckpt/best.pt")).unwrap() == big);
    assert_eq!(std::fs::read(all.join("results.csv")).unwrap(), b"a,b\n");
    let leftovers: Vec<_> = walkdir::WalkDir::new(&all)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|f| f.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty());

    let one = out.path().join("one");
    let o = e.d.cli(&[
        "job",
        "download",
        &id,
        "ckpt",
        "--to",
        one.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(one.join("ckpt/last.pt").is_file() && one.join("ckpt/best.pt").is_file());
    assert!(!one.join("results.csv").exists());

    let o = e.d.cli(&[
        "job",
        "download",
        &id,
        "nope.pt",
        "--to",
        one.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no artifact \"nope.pt\""),
        "{}",
        stderr(&o)
    );
}

/// The functions the runner will call (log archival, checkpoint uploads,
/// trainer environment), in-process against the same backends.
async fn store_functions_for_runners(b: Backend) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let server = (b == Backend::S3).then(S3Server::start);
    let cfg = match &server {
        Some(s) => StorageConfig {
            backend: BackendConfig::S3(S3Config {
                endpoint: Some(s.endpoint.clone()),
                bucket: s3::BUCKET.into(),
                region: "us-east-1".into(),
                access_key_id: Some(s3::ACCESS_KEY.into()),
                secret_access_key: Some(Secret::new(s3::SECRET_KEY)),
                session_token: None,
                allow_http: true,
                path_style: true,
            }),
            ..StorageConfig::local(PathBuf::new())
        },
        None => StorageConfig::local(tmp.path().join("store")),
    };
    let store = Store::from_config(&cfg).unwrap();
    store.check().await.unwrap();
    let job = uuid::Uuid::now_v7();
    let out = store.output_uri(job);
    assert!(out.ends_with(&format!("jobs/{job}/outputs/")), "{out}");
    assert!(store.key_for_uri(&out).is_some());

    let f = store
        .put_artifact_bytes(job, "best.pt", Bytes::from_static(b"ckpt"))
        .await
        .unwrap();
    assert_eq!(f.uri, format!("{out}best.pt"));
    assert!(store.dataset_exists(&out).await.unwrap());
    assert!(store
        .put_artifact_bytes(job, "../escape", Bytes::new())
        .await
        .is_err());

    assert!(store.open_log(job).await.unwrap().is_none());
    let log = tmp.path().join("trainer.log");
    let text = "epoch 1\n".repeat(1_500_000); // 12 MB: a multipart upload
    std::fs::write(&log, &text).unwrap();
    let archived = store.archive_log(job, &log).await.unwrap();
    assert_eq!(archived.size, text.len() as u64);
    let mut body = store.open_log(job).await.unwrap().unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == text.as_bytes());
    // The log sits beside the outputs, not among them.
    let arts = store.artifacts(job).await.unwrap();
    assert_eq!(
        arts.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
        ["best.pt"]
    );

    let env = store.trainer_env();
    match &server {
        Some(s) => {
            assert_eq!(env["S3_ENDPOINT"], s.endpoint);
            assert_eq!(env["AWS_ENDPOINT_URL"], s.endpoint);
            assert_eq!(env["AWS_ACCESS_KEY_ID"], s3::ACCESS_KEY);
            assert_eq!(env["AWS_SECRET_ACCESS_KEY"], s3::SECRET_KEY);
            assert_eq!(env["AWS_REGION"], "us-east-1");
            assert_eq!(env["BUCKET_NAME"], s3::BUCKET);
            assert!(!format!("{store:?}").contains(s3::SECRET_KEY));
        }
        None => assert!(env.is_empty(), "{env:?}"),
    }
}

/// Runs `platform serve` expecting it to fail; returns (exit code, stderr, seconds taken).
fn serve_failure(envs: &[(&str, &str)]) -> (Option<i32>, String, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(common::bin())
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("platform serve did not fail within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err, started.elapsed().as_secs_f64())
}

#[test]
fn startup_check_says_what_is_wrong() {
    let server = S3Server::start();
    let base: Vec<(String, String)> = server.envs();
    let with = |overrides: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = base
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        v.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        v
    };
    let run = |envs: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        serve_failure(&refs)
    };

    let (code, err, secs) = run(with(&[("BUCKET_NAME", "no-such-bucket")]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bucket \"no-such-bucket\" does not exist"),
        "{err}"
    );
    assert!(secs < 15.0, "took {secs}s");

    let wrong_secret = "wrong-secret-value-123456";
    let (code, err, _) = run(with(&[("AWS_SECRET_ACCESS_KEY", wrong_secret)]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("rejected the credentials"), "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(
        !err.contains(wrong_secret) && !err.contains(s3::SECRET_KEY),
        "{err}"
    );

    let (code, err, _) = run(with(&[("AWS_ACCESS_KEY_ID", "unknown-access-key")]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("rejected the credentials"), "{err}");
    assert!(!err.contains(s3::SECRET_KEY), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, err, secs) = run(with(&[("S3_ENDPOINT", &dead)]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach the S3 endpoint {dead}")),
        "{err}"
    );
    assert!(secs < 15.0, "took {secs}s");

    let (code, err, _) = serve_failure(&[("S3_ENDPOINT", server.endpoint.as_str())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("BUCKET_NAME"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_leak() {
    let mut e = Env::start(
        Backend::S3,
        &[("RUST_LOG", "debug"), ("DATASET_CHECK", "on")],
    );
    let mut responses = Vec::new();
    responses.push(
        e.put("/api/v1/datasets/d/files/a.txt", b"a".to_vec(), None)
            .await
            .1,
    );
    responses.push(e.get("/api/v1/datasets", None).await.1);
    responses.push(e.get("/api/v1/datasets/d", None).await.1);
    responses.push(e.create_job("s3://elsewhere/x/", None).await.1);
    responses.push(
        e.create_job(&format!("{}datasets/none/", e.root_uri()), None)
            .await
            .1,
    );
    responses.push(e.get("/health", None).await.1);
    e.s3.as_mut().unwrap().stop();
    // Failures carry the store's error text: still no credentials.
    let (s, body) = e
        .put("/api/v1/datasets/d/files/b.txt", b"b".to_vec(), None)
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    responses.push(body);
    responses.push(e.get("/health", None).await.1);
    responses.push(
        e.create_job(&format!("{}datasets/d/", e.root_uri()), None)
            .await
            .1,
    );
    let all = serde_json::to_string(&responses).unwrap();
    assert!(all.contains("cannot reach the S3 endpoint"), "{all}");
    assert!(!all.contains(s3::SECRET_KEY), "{all}");
    assert!(!all.contains(s3::ACCESS_KEY), "{all}");
    let log = e.d.log_text();
    assert!(
        log.contains("S3 bucket vision-platform"),
        "the log should name the store"
    );
    assert!(!log.contains(s3::SECRET_KEY), "secret in the daemon log");
    assert!(
        !log.contains(s3::ACCESS_KEY),
        "access key in the daemon log"
    );

    // `serve --help` names the variables but never shows their values.
    let help = Command::new(common::bin())
        .args(["serve", "--help"])
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("AWS_SECRET_ACCESS_KEY"), "{help}");
    assert!(
        !help.contains(s3::SECRET_KEY) && !help.contains(s3::ACCESS_KEY),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_downloads_redirect_to_s3() {
    let e = Env::capturing(Backend::S3, &[("PRESIGN_DOWNLOADS", "60")]);
    let (id, token) = e.job_with_token(None).await;
    let body = random(3 * MIB);
    let path = format!("/api/v1/training/jobs/{id}/artifacts/model.onnx");
    let (s, _) = e.put(&path, body.clone(), Some(&token)).await;
    assert_eq!(s, StatusCode::CREATED);
    let r = e.http.get(e.d.at(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let endpoint = &e.s3.as_ref().unwrap().endpoint;
    assert!(location.starts_with(endpoint.as_str()), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(!location.contains(s3::SECRET_KEY));
    let got = reqwest::get(&location).await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap() == body);
    // The S3 server checks the signature: a tampered URL is refused.
    let tampered = location.replace("model.onnx", "model.onnz");
    assert_eq!(
        reqwest::get(&tampered).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let (s, _) = e
        .get(
            &format!("/api/v1/training/jobs/{id}/artifacts/missing.onnx"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The CLI follows the redirect.
    let out = tempfile::tempdir().unwrap();
    let o = e.d.cli(&[
        "job",
        "download",
        &id,
        "model.onnx",
        "--to",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("model.onnx")).unwrap() == body);
}

#[tokio::test]
async fn openapi_documents_storage_endpoints() {
    let d = Daemon::start();
    let doc: Value = reqwest::get(d.at("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/api/v1/datasets",
        "/api/v1/datasets/{name}",
        "/api/v1/datasets/{name}/files/{path}",
        "/api/v1/training/jobs/{id}/artifacts",
        "/api/v1/training/jobs/{id}/artifacts/{path}",
    ] {
        assert!(doc["paths"][p].is_object(), "missing {p}");
    }
    assert!(doc["paths"]["/api/v1/training/jobs/{id}/artifacts/{path}"]["put"].is_object());
}

/// The demo trainer stores its checkpoint through the artifact endpoint,
/// and a finished job's log is archived to the store, so it stays readable
/// after the daemon restarts without the runner's local copy.
async fn demo_checkpoint_and_archived_logs(b: Backend) {
    let mut e = Env::start(b, &[]);
    let mut body = common::demo_job(json!({"epochs": 3, "epoch_seconds": 0.05}));
    body["dataset_s3_uri"] = json!("s3://anywhere/datasets/x/");
    let job = common::api::create(&e.d, &body).await;
    let id = job["id"].as_str().unwrap().to_string();
    let done: Value = common::eventually(30, "the demo job to finish", || async {
        let (_, j) = e.get(&format!("/api/v1/training/jobs/{id}"), None).await;
        (j["status"] == "completed" && !j["exit_code"].is_null()).then_some(j)
    })
    .await;
    let checkpoint = done["checkpoint_s3_uri"].as_str().unwrap().to_string();
    assert_eq!(
        checkpoint,
        format!("{}jobs/{id}/outputs/best.pt", e.root_uri())
    );
    let out = e.d.cli(&["job", "artifacts", &id, "-o", "json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["path"], "best.pt");
    assert_eq!(listed[0]["uri"], checkpoint);
    let (s, bytes) = e
        .get_bytes(
            &format!("/api/v1/training/jobs/{id}/artifacts/best.pt"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(bytes.starts_with(b"{\"format\":\"platform-demo-checkpoint\""));

    // Restart without the runner's local copy: the log comes from the store.
    common::eventually(20, "the log to be archived", || async {
        e.d.log_text()
            .contains("archived the trainer's log")
            .then_some(())
    })
    .await;
    e.d.kill9();
    std::fs::remove_dir_all(e.d.data_dir.join("runs")).unwrap();
    e.d.restart();
    let (s, text) = e
        .get_bytes(&format!("/api/v1/training/jobs/{id}/logs"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("epoch 3/3") && text.contains("saved checkpoint"),
        "{text}"
    );
    let (_, tail) = e
        .get_bytes(&format!("/api/v1/training/jobs/{id}/logs?tail=1"), None)
        .await;
    assert_eq!(String::from_utf8_lossy(&tail), "done\n");
    let out = e.d.cli(&["job", "logs", &id]);
    assert_eq!(common::stdout(&out), text);
}
