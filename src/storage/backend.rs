//! Building the object_store clients from a [`StorageConfig`], and the
//! checks that say whether the store works: the start-up check (list,
//! write, delete) and `/health`'s read-only probe. Also the S3 variables
//! handed to trainers, the one place credentials leave this module.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{to_key, Backend, BackendConfig, S3Config, StorageConfig, Store, StoreError};

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
}

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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use uuid::Uuid;

    use super::*;
    use crate::storage::diagnose::scrub;
    use crate::storage::tests::local;
    use crate::storage::Secret;

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
    async fn local_store_passes_its_checks() {
        let (_d, s) = local();
        s.check().await.unwrap();
        s.health().await.unwrap();
        assert!(s.trainer_env().is_empty());
    }
}
