//! Object storage: one [`Store`] over S3 (MinIO, AWS, R2, any S3-compatible
//! service) or a local directory, reached through `object_store`.
//!
//! Everything the daemon keeps outside SQLite lives here under the layout in
//! [`keys`]. Users see real URIs: `s3://<bucket>/<key>` for S3,
//! `file://<absolute path>` for the local default. Credentials stay inside
//! this module: `Debug` output and error messages are redacted, and only
//! [`Store::trainer_env`] hands them on, to trainers, as SPEC §4 requires.
//!
//! This file holds the [`Store`] and the types its operations share; each
//! concern adds its own `impl Store` block:
//!
//! - `backend`: building the clients from [`StorageConfig`], the start-up
//!   and health checks, the trainers' S3 variables;
//! - `diagnose`: object_store errors → one redacted sentence each;
//! - `objects`: streamed uploads, listings and downloads of any key;
//! - `datasets`, `artifacts`, `logs`: the operations on each kind of data.

pub mod config;
pub mod keys;
mod upload;

mod artifacts;
mod backend;
mod datasets;
mod diagnose;
mod logs;
mod objects;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::ObjectStore;

pub use config::{
    BackendConfig, S3Config, Secret, StorageArgs, StorageConfig, DEFAULT_MAX_OBJECT_BYTES,
};

use crate::model::ValidationError;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Why a storage operation failed (each maps to one HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name, path or URI is not acceptable (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Nothing is stored there (404). Names the object relative to its
    /// dataset or job, never by a server path.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A create-only upload found the object already there (409).
    #[error("{0} already exists")]
    Exists(String),
    /// The local store cannot hold this object beside others (409): a
    /// directory cannot also be a file (`a` and `a/b`), unlike on S3.
    #[error("{0} cannot be stored: the local object store cannot hold a file and a folder of the same name along its path")]
    Clash(String),
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
    /// The local store's disk is full (`ENOSPC`); nothing was stored (507).
    #[error("{0}")]
    DiskFull(String),
}

impl StoreError {
    /// The same error, with a missing or existing object called `what`
    /// (e.g. `file "a.jpg" of dataset "coco"`): users name files relative
    /// to their dataset or job, not by key.
    fn naming(self, what: impl FnOnce() -> String) -> Self {
        match self {
            StoreError::NotFound(_) => StoreError::NotFound(what()),
            StoreError::Exists(_) => StoreError::Exists(what()),
            StoreError::Clash(_) => StoreError::Clash(what()),
            e => e,
        }
    }
}

/// Whether an upload may replace an object already at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace whatever is there.
    Replace,
    /// Store only if nothing is there yet ([`StoreError::Exists`] otherwise).
    CreateOnly,
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

impl Store {
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
}

/// An object_store path holding `k` verbatim. `Path::from` would
/// percent-encode characters such as `#` and `%`, so a file would be stored
/// and listed under a different name than the one uploaded; keys are
/// validated by [`keys`] before they get here, so parsing succeeds.
fn to_key(k: &str) -> Key {
    Key::parse(k).unwrap_or_else(|_| Key::from(k))
}

/// Read size for streaming local files and log uploads.
const READ_CHUNK: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh directory, removed when the guard drops.
    pub(super) fn local() -> (tempfile::TempDir, Store) {
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
}
