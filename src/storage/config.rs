//! Object store settings: the storage flags of `platform serve` and their
//! environment variables ([`StorageArgs`], SPEC §5), and what they resolve
//! to: S3 when a bucket or endpoint is configured, otherwise the local
//! directory `<data dir>/store`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::switch::Switch;

/// The object store flags of `platform serve` (flattened into its flags).
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO [default: AWS S3 when BUCKET_NAME is set].
    #[arg(long, env = "S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// Alias of S3_ENDPOINT (the AWS SDKs' name for it).
    #[arg(long, env = "AWS_ENDPOINT_URL", hide = true, value_name = "URL")]
    pub aws_endpoint_url: Option<String>,

    /// Bucket for datasets, job outputs and logs; selects S3 storage [default: a local directory in the data directory].
    #[arg(long = "bucket", env = "BUCKET_NAME", value_name = "NAME")]
    pub bucket_name: Option<String>,

    /// S3 access key id [default: the AWS credential chain].
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        hide_env_values = true,
        value_name = "ID"
    )]
    pub aws_access_key_id: Option<String>,

    /// S3 secret access key (prefer the environment variable: flags are visible in `ps`).
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub aws_secret_access_key: Option<String>,

    /// S3 session token, for temporary credentials.
    #[arg(
        long,
        env = "AWS_SESSION_TOKEN",
        hide_env_values = true,
        hide = true,
        value_name = "TOKEN"
    )]
    pub aws_session_token: Option<String>,

    /// S3 region (S3-compatible servers usually accept the default).
    #[arg(
        long,
        env = "AWS_REGION",
        default_value = "us-east-1",
        value_name = "REGION"
    )]
    pub aws_region: String,

    /// Path-style S3 requests (endpoint/bucket/key), as MinIO and most S3-compatible servers expect; "off" for virtual-hosted style.
    #[arg(
        long,
        env = "S3_PATH_STYLE",
        value_enum,
        default_value = "on",
        value_name = "on|off"
    )]
    pub s3_path_style: Switch,

    /// Allow a plain-HTTP S3 endpoint [default: on for http:// endpoints].
    #[arg(long, env = "S3_ALLOW_HTTP", value_enum, value_name = "on|off")]
    pub s3_allow_http: Option<Switch>,

    /// Check at job creation that the dataset URI exists in the configured store ("off" for stores the daemon cannot see).
    #[arg(
        long,
        env = "DATASET_CHECK",
        value_enum,
        default_value = "on",
        value_name = "on|off"
    )]
    pub dataset_check: Switch,

    /// Largest object a dataset or artifact upload may create, in bytes.
    #[arg(long, env = "MAX_OBJECT_BYTES", default_value_t = DEFAULT_MAX_OBJECT_BYTES, value_name = "BYTES")]
    pub max_object_bytes: u64,

    /// Serve S3 artifact downloads as redirects to presigned URLs valid this many seconds (0: stream through the daemon).
    #[arg(
        long,
        env = "PRESIGN_DOWNLOADS",
        default_value_t = 0,
        value_name = "SECONDS"
    )]
    pub presign_downloads: u64,
}

/// A secret string whose `Debug`/`Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where objects live.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// A directory on this machine (the embedded default).
    Local {
        /// The store's root directory.
        root: PathBuf,
    },
    /// An S3-compatible service.
    S3(S3Config),
}

/// How to reach an S3-compatible service.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL; `None` means AWS itself.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// Region (signing needs one even for MinIO).
    pub region: String,
    /// Static access key id; `None` falls back to the AWS credential chain.
    pub access_key_id: Option<String>,
    /// Static secret key.
    pub secret_access_key: Option<Secret>,
    /// Session token for temporary credentials.
    pub session_token: Option<Secret>,
    /// Whether plain-HTTP endpoints are allowed.
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted.
    pub path_style: bool,
}

/// Everything the store and its endpoints need.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The backend.
    pub backend: BackendConfig,
    /// Whether job creation checks that the dataset exists.
    pub dataset_check: bool,
    /// Largest object an upload may create.
    pub max_object_bytes: u64,
    /// Serve S3 downloads as redirects to presigned URLs valid this long.
    pub presign_downloads: Option<Duration>,
}

impl StorageConfig {
    /// Resolves the storage flags; a half-configured S3 setup is an error
    /// naming what is missing.
    pub fn from_args(args: &StorageArgs, data_dir: &Path) -> Result<Self, String> {
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let endpoint = nonempty(&args.s3_endpoint)
            .or_else(|| nonempty(&args.aws_endpoint_url))
            .map(|e| e.trim().trim_end_matches('/').to_string());
        let bucket = nonempty(&args.bucket_name);
        let key_id = nonempty(&args.aws_access_key_id);
        let secret = nonempty(&args.aws_secret_access_key);
        let backend = match (bucket, &endpoint) {
            (None, None) => BackendConfig::Local {
                root: data_dir.join("store"),
            },
            (None, Some(_)) => {
                return Err("S3_ENDPOINT is set but BUCKET_NAME is not: set BUCKET_NAME (--bucket) to the bucket to use, or unset S3_ENDPOINT to use the local store".into())
            }
            (Some(bucket), _) => {
                if bucket.contains('/') || bucket.chars().any(char::is_whitespace) {
                    return Err(format!(
                        "invalid BUCKET_NAME {bucket:?}: give the bucket's name only, e.g. vision-platform"
                    ));
                }
                match (&key_id, &secret) {
                    (Some(_), None) => {
                        return Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both, or neither to use the AWS credential chain".into())
                    }
                    (None, Some(_)) => {
                        return Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both, or neither to use the AWS credential chain".into())
                    }
                    _ => {}
                }
                if let Some(e) = &endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(format!(
                            "invalid S3_ENDPOINT {e:?}: expected a URL such as http://127.0.0.1:9000 or https://s3.example.com"
                        ));
                    }
                }
                let is_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
                let allow_http = match args.s3_allow_http {
                    Some(s) => s == Switch::On,
                    None => is_http,
                };
                if is_http && !allow_http {
                    return Err("S3_ENDPOINT is a plain-HTTP URL but S3_ALLOW_HTTP is off: use https:// or set S3_ALLOW_HTTP=on".into());
                }
                BackendConfig::S3(S3Config {
                    endpoint,
                    bucket,
                    region: args.aws_region.trim().to_string(),
                    access_key_id: key_id,
                    secret_access_key: secret.map(Secret::new),
                    session_token: nonempty(&args.aws_session_token).map(Secret::new),
                    allow_http,
                    path_style: args.s3_path_style == Switch::On,
                })
            }
        };
        if args.max_object_bytes == 0 {
            return Err("MAX_OBJECT_BYTES must be at least 1".into());
        }
        Ok(Self {
            backend,
            dataset_check: args.dataset_check == Switch::On,
            max_object_bytes: args.max_object_bytes,
            presign_downloads: (args.presign_downloads > 0)
                .then(|| Duration::from_secs(args.presign_downloads)),
        })
    }

    /// A local store under `root` with default limits (tests, tools).
    pub fn local(root: PathBuf) -> Self {
        Self {
            backend: BackendConfig::Local { root },
            dataset_check: true,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            presign_downloads: None,
        }
    }
}

/// Default `MAX_OBJECT_BYTES`: 50 GiB.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 50 * 1024 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        storage: StorageArgs,
    }

    fn resolve(args: &[&str]) -> Result<StorageConfig, String> {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        let w = Wrap::try_parse_from(argv).map_err(|e| e.to_string())?;
        StorageConfig::from_args(&w.storage, Path::new("/data"))
    }

    #[test]
    fn local_is_the_default() {
        let c = resolve(&[]).unwrap();
        assert!(
            matches!(c.backend, BackendConfig::Local { ref root } if root == Path::new("/data/store"))
        );
        assert!(c.dataset_check);
        assert_eq!(c.presign_downloads, None);
    }

    #[test]
    fn s3_needs_consistent_settings() {
        let e = resolve(&["--s3-endpoint", "http://h:9000"]).unwrap_err();
        assert!(e.contains("BUCKET_NAME"), "{e}");
        let e = resolve(&["--bucket", "b", "--aws-access-key-id", "k"]).unwrap_err();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let e = resolve(&["--bucket", "b", "--s3-endpoint", "h:9000"]).unwrap_err();
        assert!(e.contains("S3_ENDPOINT"), "{e}");
        let e = resolve(&[
            "--bucket",
            "b",
            "--s3-endpoint",
            "http://h",
            "--s3-allow-http",
            "off",
        ])
        .unwrap_err();
        assert!(e.contains("S3_ALLOW_HTTP"), "{e}");
        let c = resolve(&[
            "--bucket",
            "b",
            "--s3-endpoint",
            "http://h:9000/",
            "--aws-access-key-id",
            "k",
            "--aws-secret-access-key",
            "topsecret",
            "--presign-downloads",
            "60",
        ])
        .unwrap();
        let BackendConfig::S3(s3) = &c.backend else {
            panic!("expected S3")
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://h:9000"));
        assert!(s3.allow_http && s3.path_style);
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(c.presign_downloads, Some(Duration::from_secs(60)));
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
