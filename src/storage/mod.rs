//! Object storage: one [`Store`] over S3 (MinIO, AWS, R2, any S3-compatible
//! service) or a local directory, reached through `object_store`.
//!
//! Everything the daemon keeps outside SQLite lives here under the layout in
//! [`keys`]. Users see real URIs: `s3://<bucket>/<key>` for S3,
//! `file://<absolute path>` for the local default. Credentials stay inside
//! this module: `Debug` output and error messages are redacted, and only
//! [`Store::trainer_env`] hands them on, to trainers, as SPEC §4 requires.

pub mod config;
pub mod keys;
mod upload;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig,
};
use uuid::Uuid;

pub use config::{
    BackendConfig, S3Config, Secret, StorageArgs, StorageConfig, DEFAULT_MAX_OBJECT_BYTES,
};

use crate::model::{Dataset, DatasetSummary, StoredFile, ValidationError};

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Why a storage operation failed (each maps to one HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name, path or URI is not acceptable (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Nothing is stored there (404).
    #[error("{0} does not exist")]
    NotFound(String),
    /// The upload exceeds `MAX_OBJECT_BYTES` (413).
    #[error("the upload is larger than the limit of {limit} bytes (MAX_OBJECT_BYTES)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client stopped sending mid-upload; nothing was stored (400).
    #[error("the upload was interrupted and nothing was stored: {0}")]
    Interrupted(String),
    /// The store failed or cannot be reached (503). Already redacted.
    #[error("{0}")]
    Unavailable(String),
}

/// Where to read a download from.
pub enum Fetched {
    /// A presigned URL the client can fetch directly.
    Redirect(String),
    /// The bytes, through the daemon.
    Stream(Download),
}

/// An object being downloaded.
pub struct Download {
    /// Size in bytes.
    pub size: u64,
    /// Last write time.
    pub last_modified: chrono::DateTime<Utc>,
    /// Entity tag, when the store gives one.
    pub e_tag: Option<String>,
    /// The bytes.
    pub body: ByteStream,
}

enum Backend {
    S3 {
        /// The same client as `objects`, kept concrete for presigning.
        signer: Arc<AmazonS3>,
        cfg: S3Config,
    },
    Local {
        root: PathBuf,
    },
}

/// The configured object store.
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Same backend without retries, so checks fail fast and clearly.
    probe: Arc<dyn ObjectStore>,
    backend: Backend,
    max_object_bytes: u64,
    presign: Option<Duration>,
    /// Strings scrubbed from every message (credentials).
    redact: Vec<String>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.describe())
            .finish()
    }
}

/// Where the health and start-up checks look (never written to).
const PROBE_PREFIX: &str = ".platform/health";
/// What the start-up check writes and deletes to prove write access.
const PROBE_OBJECT: &str = ".platform/startup-check";
/// How long `/health` waits for the store.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Builds the store (no network traffic; see [`Store::check`]). For the
    /// local backend the root directory is created.
    pub fn from_config(cfg: &StorageConfig) -> Result<Self, StoreError> {
        let (objects, probe, backend, redact): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>, _, _) =
            match &cfg.backend {
                BackendConfig::Local { root } => {
                    std::fs::create_dir_all(root).map_err(|e| {
                        StoreError::Unavailable(format!(
                            "cannot create the local object store directory {}: {e}",
                            root.display()
                        ))
                    })?;
                    let root = root.canonicalize().map_err(|e| {
                        StoreError::Unavailable(format!(
                            "cannot open the local object store directory {}: {e}",
                            root.display()
                        ))
                    })?;
                    let fs = LocalFileSystem::new_with_prefix(&root)
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?
                        .with_automatic_cleanup(true);
                    let fs: Arc<dyn ObjectStore> = Arc::new(fs);
                    (fs.clone(), fs, Backend::Local { root }, Vec::new())
                }
                BackendConfig::S3(s3) => {
                    let main = ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout_disabled()
                        .with_read_timeout(Duration::from_secs(60));
                    let retry = RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(30),
                    };
                    let quick = ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(3))
                        .with_timeout(Duration::from_secs(10));
                    let no_retry = RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: 0,
                        retry_timeout: Duration::from_secs(10),
                    };
                    let signer = Arc::new(build_s3(s3, main, retry)?);
                    let probe = Arc::new(build_s3(s3, quick, no_retry)?);
                    let redact = [
                        s3.access_key_id.clone(),
                        s3.secret_access_key
                            .as_ref()
                            .map(|s| s.expose().to_string()),
                        s3.session_token.as_ref().map(|s| s.expose().to_string()),
                    ]
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect();
                    let backend = Backend::S3 {
                        signer: signer.clone(),
                        cfg: s3.clone(),
                    };
                    (signer, probe, backend, redact)
                }
            };
        Ok(Self {
            objects,
            probe,
            backend,
            max_object_bytes: cfg.max_object_bytes,
            presign: cfg.presign_downloads,
            redact,
        })
    }

    /// One line for logs: which backend and where (never credentials).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::S3 { cfg, .. } => format!(
                "S3 bucket {} at {}",
                cfg.bucket,
                cfg.endpoint.as_deref().unwrap_or("AWS")
            ),
            Backend::Local { root } => format!("local directory {}", root.display()),
        }
    }

    /// Largest object an upload may create.
    pub fn max_object_bytes(&self) -> u64 {
        self.max_object_bytes
    }

    /// Start-up check: lists and writes (then deletes) a probe object, and
    /// says plainly what is wrong — unreachable endpoint, missing bucket,
    /// rejected credentials, unwritable directory.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.probe_list().await?;
        let key = to_key(PROBE_OBJECT);
        self.probe
            .put(&key, PutPayload::from_static(b"ok"))
            .await
            .map_err(|e| self.explain("write to", e))?;
        self.probe
            .delete(&key)
            .await
            .map_err(|e| self.explain("delete from", e))?;
        Ok(())
    }

    /// `/health`'s check: a read-only round trip, bounded in time.
    pub async fn health(&self) -> Result<(), String> {
        match tokio::time::timeout(HEALTH_TIMEOUT, self.probe_list()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "{} did not answer within {}s",
                self.describe(),
                HEALTH_TIMEOUT.as_secs()
            )),
        }
    }

    async fn probe_list(&self) -> Result<(), StoreError> {
        let prefix = to_key(PROBE_PREFIX);
        match self.probe.list(Some(&prefix)).next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.explain("list", e)),
        }
    }

    /// The URI of `key` in this store.
    pub fn uri(&self, key: &str) -> String {
        match &self.backend {
            Backend::S3 { cfg, .. } => format!("s3://{}/{key}", cfg.bucket),
            Backend::Local { root } => format!("file://{}/{key}", root.display()),
        }
    }

    /// The key a URI names when it points into this store (under the
    /// bucket, or under the local root), without a trailing `/`; `None` for
    /// anything else, including malformed paths.
    pub fn key_for_uri(&self, uri: &str) -> Option<String> {
        let rest = match &self.backend {
            Backend::S3 { cfg, .. } => uri
                .strip_prefix("s3://")?
                .strip_prefix(cfg.bucket.as_str())?,
            Backend::Local { root } => uri.strip_prefix("file://")?.strip_prefix(root.to_str()?)?,
        };
        let key = match rest {
            "" | "/" => return Some(String::new()),
            r => r.strip_prefix('/')?.trim_end_matches('/'),
        };
        keys::relative_path("uri", key).ok()?;
        Some(key.to_string())
    }

    /// Whether `uri` names an object or a non-empty prefix in this store.
    /// A URI outside the store is a 422 naming the store's root.
    pub async fn dataset_exists(&self, uri: &str) -> Result<bool, StoreError> {
        let Some(key) = self.key_for_uri(uri) else {
            return Err(ValidationError::new(
                "dataset_s3_uri",
                format!(
                    "{uri:?} is not in the configured object store: dataset URIs start with {} \
                     (upload with `platform dataset upload`, or set DATASET_CHECK=off for data the daemon cannot see)",
                    self.uri("")
                ),
            )
            .into());
        };
        // The prefix first: datasets are prefixes, and some S3-compatible
        // servers answer HEAD on a "directory" with an error, not a 404.
        let k = to_key(&key);
        match self.objects.list(Some(&k)).next().await {
            Some(Ok(_)) => return Ok(true),
            None | Some(Err(object_store::Error::NotFound { .. })) => {}
            Some(Err(e)) => return Err(self.explain("list", e)),
        }
        if key.is_empty() {
            return Ok(false);
        }
        match self.objects.head(&k).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.explain("read", e)),
        }
    }

    /// Job creation's dataset check: the URI must be in this store and hold
    /// at least one object; the 422 says what was looked for.
    pub async fn verify_dataset(&self, uri: &str) -> Result<(), StoreError> {
        if self.dataset_exists(uri).await? {
            return Ok(());
        }
        let key = self.key_for_uri(uri).unwrap_or_default();
        Err(ValidationError::new(
            "dataset_s3_uri",
            format!(
                "no dataset at {uri}: the object store has no object {key:?} and nothing under {}; \
                 upload one with `platform dataset upload DIR --name NAME`",
                self.uri(&format!("{key}/"))
            ),
        )
        .into())
    }

    /// `OUTPUT_S3_URI` for a job: `<store>/jobs/<id>/outputs/`.
    pub fn output_uri(&self, job: Uuid) -> String {
        self.uri(&keys::outputs_prefix(job))
    }

    /// The S3 variables of SPEC §4 for trainers; empty for the local store
    /// (trainers then upload through the daemon's artifact endpoint).
    pub fn trainer_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Backend::S3 { cfg, .. } = &self.backend else {
            return env;
        };
        if let Some(e) = &cfg.endpoint {
            env.insert("S3_ENDPOINT".into(), e.clone());
            env.insert("AWS_ENDPOINT_URL".into(), e.clone());
        }
        if let (Some(k), Some(s)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            env.insert("AWS_ACCESS_KEY_ID".into(), k.clone());
            env.insert("AWS_SECRET_ACCESS_KEY".into(), s.expose().to_string());
        }
        if let Some(t) = &cfg.session_token {
            env.insert("AWS_SESSION_TOKEN".into(), t.expose().to_string());
        }
        env.insert("AWS_REGION".into(), cfg.region.clone());
        env.insert("BUCKET_NAME".into(), cfg.bucket.clone());
        env
    }

    /// Streams `body` to `key`: small bodies in one request, larger ones as
    /// a multipart upload with bounded memory. Nothing becomes visible
    /// unless the whole body arrived within `MAX_OBJECT_BYTES`.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        body: S,
        declared_len: Option<u64>,
    ) -> Result<StoredFile, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let limit = self.max_object_bytes;
        if declared_len.is_some_and(|n| n > limit) {
            return Err(StoreError::TooLarge { limit });
        }
        let size = upload::put_stream(self.objects.as_ref(), &to_key(key), body, limit)
            .await
            .map_err(|e| match e {
                upload::UploadError::Store(e) => self.explain("write to", e),
                upload::UploadError::TooLarge => StoreError::TooLarge { limit },
                upload::UploadError::Body(m) => StoreError::Interrupted(m),
            })?;
        metrics::counter!("platform_storage_uploaded_bytes_total").increment(size);
        Ok(StoredFile {
            path: key.to_string(),
            size,
            uri: self.uri(key),
            last_modified: Utc::now(),
        })
    }

    /// Stores a small artifact for a job (e.g. a checkpoint written by the
    /// built-in trainer) under `jobs/<id>/outputs/<path>`.
    pub async fn put_artifact_bytes(
        &self,
        job: Uuid,
        path: &str,
        bytes: Bytes,
    ) -> Result<StoredFile, StoreError> {
        let key = keys::output_file(job, path)?;
        let len = bytes.len() as u64;
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
        let mut f = self.put_stream(&key, body, Some(len)).await?;
        f.path = path.to_string();
        Ok(f)
    }

    /// Uploads a finished job's log file to `jobs/<id>/logs/trainer.log`.
    pub async fn archive_log(&self, job: Uuid, file: &FsPath) -> Result<StoredFile, StoreError> {
        let f = tokio::fs::File::open(file).await.map_err(|e| {
            StoreError::Unavailable(format!("cannot read log file {}: {e}", file.display()))
        })?;
        let len = f.metadata().await.ok().map(|m| m.len());
        let body = tokio_util::io::ReaderStream::with_capacity(f, READ_CHUNK);
        self.archive_log_stream(job, body, len).await
    }

    /// Uploads a finished job's log, read from a stream (a runner's
    /// captured output), to `jobs/<id>/logs/trainer.log`.
    pub async fn archive_log_stream<S, E>(
        &self,
        job: Uuid,
        body: S,
        len: Option<u64>,
    ) -> Result<StoredFile, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let key = keys::trainer_log(job);
        let mut stored = self.put_stream(&key, body, len).await?;
        stored.path = keys::TRAINER_LOG.to_string();
        Ok(stored)
    }

    /// The archived log of a job, if there is one.
    pub async fn open_log(&self, job: Uuid) -> Result<Option<ByteStream>, StoreError> {
        match self.download(&keys::trainer_log(job)).await {
            Ok(d) => Ok(Some(d.body)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object under `prefix` (ending in `/`), with paths relative to
    /// it, sorted by path.
    pub async fn list_files(&self, prefix: &str) -> Result<Vec<StoredFile>, StoreError> {
        let metas: Vec<ObjectMeta> = self
            .objects
            .list(Some(&to_key(prefix)))
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(self.explain("list", e)),
            })?;
        let mut files: Vec<StoredFile> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref();
                let rel = key.strip_prefix(prefix)?.to_string();
                Some(StoredFile {
                    uri: self.uri(key),
                    path: rel,
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Every dataset with its file count and size.
    pub async fn datasets(&self) -> Result<Vec<DatasetSummary>, StoreError> {
        let prefix = format!("{}/", keys::DATASETS);
        let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for f in self.list_files(&prefix).await? {
            if let Some((name, _)) = f.path.split_once('/') {
                let e = by_name.entry(name.to_string()).or_default();
                e.0 += 1;
                e.1 += f.size;
            }
        }
        Ok(by_name
            .into_iter()
            .map(|(name, (file_count, total_bytes))| DatasetSummary {
                uri: self.dataset_uri(&name),
                name,
                file_count,
                total_bytes,
            })
            .collect())
    }

    /// One dataset's files, or `NotFound` when it has none.
    pub async fn dataset(&self, name: &str) -> Result<Dataset, StoreError> {
        let prefix = keys::dataset_prefix(name)?;
        let files = self.list_files(&prefix).await?;
        if files.is_empty() {
            return Err(StoreError::NotFound(format!("dataset {name:?}")));
        }
        Ok(Dataset {
            name: name.to_string(),
            uri: self.dataset_uri(name),
            file_count: files.len() as u64,
            total_bytes: files.iter().map(|f| f.size).sum(),
            files,
        })
    }

    /// The URI of a dataset, to pass to `job create`.
    pub fn dataset_uri(&self, name: &str) -> String {
        self.uri(&format!("{}/{name}/", keys::DATASETS))
    }

    /// A job's artifacts (everything under its outputs prefix).
    pub async fn artifacts(&self, job: Uuid) -> Result<Vec<StoredFile>, StoreError> {
        self.list_files(&keys::outputs_prefix(job)).await
    }

    /// Reads `key`, or a presigned URL for it when presigned downloads are
    /// configured (S3 only).
    pub async fn fetch(&self, key: &str) -> Result<Fetched, StoreError> {
        if let (Backend::S3 { signer, .. }, Some(ttl)) = (&self.backend, self.presign) {
            let k = to_key(key);
            // Presigning works offline; check existence so a typo is a 404, not a broken link.
            self.objects
                .head(&k)
                .await
                .map_err(|e| self.explain("read", e))?;
            let url = signer
                .signed_url(object_store::signer::Method::GET, &k, ttl)
                .await
                .map_err(|e| self.explain("presign", e))?;
            return Ok(Fetched::Redirect(url.to_string()));
        }
        self.download(key).await.map(Fetched::Stream)
    }

    /// Streams `key` through the daemon.
    pub async fn download(&self, key: &str) -> Result<Download, StoreError> {
        let got = self
            .objects
            .get(&to_key(key))
            .await
            .map_err(|e| self.explain("read", e))?;
        let meta = got.meta.clone();
        let redact = self.redact.clone();
        let body: ByteStream = match got.payload {
            // object_store reads local files 8 KiB at a time; larger reads
            // keep big downloads fast.
            GetResultPayload::File(file, _) => {
                let file = tokio::fs::File::from_std(file);
                tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
                    .map_err(|e| StoreError::Unavailable(format!("reading the object failed: {e}")))
                    .boxed()
            }
            GetResultPayload::Stream(s) => s
                .map_err(move |e| StoreError::Unavailable(scrub(&redact, e.to_string())))
                .boxed(),
        };
        Ok(Download {
            size: meta.size,
            last_modified: meta.last_modified,
            e_tag: meta.e_tag,
            body,
        })
    }

    /// Turns a backend error into one readable, redacted sentence.
    fn explain(&self, op: &str, e: object_store::Error) -> StoreError {
        if let object_store::Error::NotFound { path, .. } = &e {
            if !self.is_missing_bucket(&e) {
                return StoreError::NotFound(self.uri(path));
            }
        }
        let text = scrub(&self.redact, error_chain(&e));
        let msg = match &self.backend {
            Backend::Local { root } => {
                format!(
                    "cannot {op} the local object store at {}: {text}",
                    root.display()
                )
            }
            Backend::S3 { cfg, .. } => {
                let at = cfg.endpoint.as_deref().unwrap_or("AWS S3");
                let lower = text.to_ascii_lowercase();
                if self.is_missing_bucket(&e) {
                    format!(
                        "bucket {:?} does not exist at {at}: create it or set BUCKET_NAME to an existing bucket",
                        cfg.bucket
                    )
                } else if matches!(
                    e,
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                ) || CREDENTIAL_ERRORS.iter().any(|c| lower.contains(c))
                {
                    format!(
                        "the S3 service at {at} rejected the credentials for bucket {:?} ({}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                        cfg.bucket,
                        s3_code(&text).unwrap_or("access denied")
                    )
                } else if is_connect_error(&e) {
                    format!(
                        "cannot reach the S3 endpoint {at}: {}; check S3_ENDPOINT and that the service is running",
                        root_cause(&e)
                    )
                } else {
                    format!("cannot {op} S3 bucket {:?} at {at}: {text}", cfg.bucket)
                }
            }
        };
        StoreError::Unavailable(msg)
    }

    fn is_missing_bucket(&self, e: &object_store::Error) -> bool {
        matches!(self.backend, Backend::S3 { .. })
            && error_chain(e).to_ascii_lowercase().contains("nosuchbucket")
    }
}

/// An object_store path holding `k` verbatim. `Path::from` would
/// percent-encode characters such as `#` and `%`, so a file would be stored
/// and listed under a different name than the one uploaded; keys are
/// validated by [`keys`] before they get here, so parsing succeeds.
fn to_key(k: &str) -> Key {
    Key::parse(k).unwrap_or_else(|_| Key::from(k))
}

/// Lowercased fragments of S3 answers that mean "these credentials do not
/// work here" (status lines and S3 error codes).
const CREDENTIAL_ERRORS: &[&str] = &[
    "403 forbidden",
    "401 unauthorized",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "notsignedup",
    "invalidtoken",
    "expiredtoken",
];

/// Read size for streaming local files and log uploads.
const READ_CHUNK: usize = 256 * 1024;

fn build_s3(c: &S3Config, opts: ClientOptions, retry: RetryConfig) -> Result<AmazonS3, StoreError> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&c.bucket)
        .with_region(&c.region)
        .with_client_options(opts)
        .with_allow_http(c.allow_http)
        .with_virtual_hosted_style_request(!c.path_style)
        .with_retry(retry);
    if let Some(e) = &c.endpoint {
        b = b.with_endpoint(e);
    }
    if let (Some(k), Some(s)) = (&c.access_key_id, &c.secret_access_key) {
        b = b.with_access_key_id(k).with_secret_access_key(s.expose());
    }
    if let Some(t) = &c.session_token {
        b = b.with_token(t.expose());
    }
    b.build()
        .map_err(|e| StoreError::Unavailable(format!("invalid S3 settings: {e}")))
}

/// Replaces every credential in `text` with `***`.
fn scrub(secrets: &[String], mut text: String) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "***");
        }
    }
    text
}

/// The error and its sources, joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = s.source();
    }
    text
}

fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | TimedOut | NotConnected | AddrNotAvailable
            ) {
                return true;
            }
        }
        cur = s.source();
    }
    let lower = error_chain(e).to_ascii_lowercase();
    lower.contains("error sending request")
        || lower.contains("connection refused")
        || lower.contains("dns error")
}

/// The innermost cause, e.g. "connection refused".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let t = cur.to_string();
    match t.find(" (os error") {
        Some(i) => t[..i].to_ascii_lowercase(),
        None => t.to_ascii_lowercase(),
    }
}

/// The S3 error code in a response body (`<Code>InvalidAccessKeyId</Code>`).
fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from_config(&StorageConfig::local(dir.path().join("store"))).unwrap();
        (dir, store)
    }

    #[test]
    fn uris_round_trip_to_keys() {
        let (_d, s) = local();
        let uri = s.uri("datasets/coco/a.jpg");
        assert!(uri.starts_with("file:///"), "{uri}");
        assert_eq!(s.key_for_uri(&uri).as_deref(), Some("datasets/coco/a.jpg"));
        assert_eq!(
            s.key_for_uri(&s.dataset_uri("coco")).as_deref(),
            Some("datasets/coco")
        );
        assert_eq!(s.key_for_uri(&s.uri("")).as_deref(), Some(""));
        assert_eq!(s.key_for_uri("s3://bucket/datasets/coco/"), None);
        assert_eq!(s.key_for_uri(&s.uri("datasets/../../etc")), None);
        assert_eq!(
            s.key_for_uri(&format!("{}x/y", s.uri("").trim_end_matches('/'))),
            None
        );
    }

    #[test]
    fn s3_uris_and_trainer_env() {
        let cfg = StorageConfig {
            backend: BackendConfig::S3(S3Config {
                endpoint: Some("http://127.0.0.1:9".into()),
                bucket: "vision".into(),
                region: "us-east-1".into(),
                access_key_id: Some("AKIDEXAMPLE".into()),
                secret_access_key: Some(Secret::new("wJalrXUtnFEMI")),
                session_token: None,
                allow_http: true,
                path_style: true,
            }),
            ..StorageConfig::local(PathBuf::new())
        };
        let s = Store::from_config(&cfg).unwrap();
        let id = Uuid::nil();
        assert_eq!(s.output_uri(id), format!("s3://vision/jobs/{id}/outputs/"));
        assert_eq!(
            s.key_for_uri("s3://vision/datasets/x/").as_deref(),
            Some("datasets/x")
        );
        assert_eq!(s.key_for_uri("s3://vision"), Some(String::new()));
        assert_eq!(s.key_for_uri("s3://visionary/datasets/x/"), None);
        let env = s.trainer_env();
        assert_eq!(env["S3_ENDPOINT"], "http://127.0.0.1:9");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:9");
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "wJalrXUtnFEMI");
        assert_eq!(env["BUCKET_NAME"], "vision");
        assert_eq!(env["AWS_REGION"], "us-east-1");
        let debug = format!("{s:?} {cfg:?}");
        assert!(!debug.contains("wJalrXUtnFEMI"), "{debug}");
        assert_eq!(
            scrub(&s.redact, "key AKIDEXAMPLE / wJalrXUtnFEMI".into()),
            "key *** / ***"
        );
    }

    #[tokio::test]
    async fn local_round_trip_and_dataset_check() {
        let (_d, s) = local();
        s.check().await.unwrap();
        s.health().await.unwrap();
        assert!(s.trainer_env().is_empty());
        let uri = s.dataset_uri("d");
        assert!(!s.dataset_exists(&uri).await.unwrap());
        let err = s.verify_dataset(&uri).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(ref v) if v.field == "dataset_s3_uri"),
            "{err}"
        );
        let id = Uuid::now_v7();
        let f = s
            .put_artifact_bytes(id, "ckpt/best.pt", Bytes::from_static(b"weights"))
            .await
            .unwrap();
        assert_eq!(f.path, "ckpt/best.pt");
        assert_eq!(f.size, 7);
        let listed = s.artifacts(id).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "ckpt/best.pt");
        assert!(s.dataset_exists(&s.output_uri(id)).await.unwrap());
        assert!(s.dataset_exists(&listed[0].uri).await.unwrap());
        assert!(s.open_log(id).await.unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "line 1\nline 2\n").unwrap();
        s.archive_log(id, &log).await.unwrap();
        let body: Vec<Bytes> = s
            .open_log(id)
            .await
            .unwrap()
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(body.concat(), b"line 1\nline 2\n");
    }
}
