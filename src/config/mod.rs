//! Server configuration: the `platform serve` flags, their environment
//! variables (the seed's names), and how the layers combine into one
//! [`ServerConfig`].
//!
//! Precedence is flags > environment > `.env` in the working directory >
//! the config file > defaults. clap resolves flags over environment; the
//! lower layers are folded into the environment by [`load_env_layers`]
//! before parsing, each only filling variables that are still unset.
//!
//! - `args`: the flags ([`ServeArgs`]) and serve-only value types;
//! - `layers`: `.env` and config-file layering;
//! - `dirs`: the default per-user directories;
//! - `retention`: the automatic retention policy's flags.

mod args;
pub mod contexts;
mod dirs;
mod layers;
mod retention;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use args::{DatabaseArgs, LeaderElection, LogFormat, RunnerKind, ServeArgs};
pub use dirs::{default_config_dir, default_data_dir};
pub use layers::load_env_layers;
pub use retention::{RetentionArgs, RetentionPolicy};

use crate::db::{DbUrl, UrlError};
use crate::runner::kubernetes::config::KubeSettings;
use crate::storage::StorageConfig;
use crate::switch::Switch;

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad `--bind`/`HOST`/`PORT`.
    #[error("invalid listen address {0:?}: expected HOST:PORT, e.g. 127.0.0.1:8000")]
    Bind(String),
    /// Unusable `DATABASE_URL` (its text shows the URL with the password masked).
    #[error(transparent)]
    DatabaseUrl(#[from] UrlError),
    /// A non-loopback bind without a token.
    #[error("refusing to listen on {0} without an API token: set PLATFORM_API_TOKEN (or --api-token; PLATFORM_ADMIN_TOKEN or --require-auth for user tokens), or pass --allow-unauthenticated to expose the API to your network")]
    Unauthenticated(SocketAddr),
    /// A token that is empty or only whitespace.
    #[error("refusing to listen on {0} with an empty API token: set PLATFORM_API_TOKEN (or --api-token) to a secret of at least {MIN_TOKEN_CHARS} characters, or leave it unset (a non-loopback address then needs --allow-unauthenticated)")]
    EmptyToken(SocketAddr),
    /// A token too short to resist guessing.
    #[error("the API token is {0} characters long, too short to resist guessing: set PLATFORM_API_TOKEN (or --api-token) to at least {MIN_TOKEN_CHARS} characters, e.g. the output of `openssl rand -hex 32`")]
    ShortToken(usize),
    /// No data directory could be found.
    #[error("cannot find the user's data directory; set PLATFORM_DATA_DIR or --data-dir")]
    NoDataDir,
    /// Bad `CORS_ORIGINS`.
    #[error(
        "invalid CORS_ORIGINS {0:?}: expected a JSON list or a comma-separated list of origins"
    )]
    Cors(String),
    /// Bad `--kill-grace`.
    #[error("invalid --kill-grace {0}: expected a number of seconds ≥ 0")]
    KillGrace(f64),
    /// A number of seconds out of range.
    #[error("invalid {flag} {value}: expected a number of seconds of at least {min}")]
    Seconds {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: f64,
        /// The least allowed.
        min: f64,
    },
    /// Bad `WEBHOOKS`.
    #[error("invalid WEBHOOKS: {0}; expected a JSON list of objects with \"url\" and \"secret\" (and optionally \"events\", \"frameworks\", \"users\", \"format\")")]
    Webhooks(String),
    /// Inconsistent object store settings.
    #[error("{0}")]
    Storage(String),
    /// Bad `QUEUES` / `[queues.NAME]`.
    #[error(transparent)]
    Queues(#[from] crate::queues::QueuesError),
    /// `--leader-election lease` with a single-node part.
    #[error("{0}")]
    SingleNode(&'static str),
    /// Bad `--replica-id`.
    #[error(
        "invalid PLATFORM_REPLICA_ID {0:?}: expected 1 to 100 letters, digits, '.', '_' or '-'"
    )]
    ReplicaId(String),
}

/// The shortest API token accepted (surrounding whitespace does not count).
pub const MIN_TOKEN_CHARS: usize = 16;

/// The resolved server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The database (its `Debug` masks any password).
    pub database: DbUrl,
    /// Connections in the PostgreSQL pool (`--db-pool-size`, else the
    /// URL's `pool_size`, else the backend's default).
    pub db_pool_size: Option<usize>,
    /// Data directory (database, local object store).
    pub data_dir: PathBuf,
    /// Runner kind.
    pub runner: RunnerKind,
    /// `--leader-election` (lease only with PostgreSQL and Kubernetes).
    pub leader_election: LeaderElection,
    /// This replica's name (`--replica-id`, else generated).
    pub replica_id: String,
    /// API bearer token (the operator's admin token).
    pub api_token: Option<String>,
    /// The first admin's token, stored when no user exists yet.
    pub admin_token: Option<String>,
    /// Whether user routes need a token.
    pub require_auth: bool,
    /// Whether callbacks need their job's token.
    pub callback_auth: bool,
    /// JSON body limit.
    pub max_body_bytes: usize,
    /// Base URL handed to trainers (default: from the bound address).
    pub backend_base_url: Option<String>,
    /// CORS origins (`*` allowed).
    pub cors_origins: Vec<String>,
    /// Trainers file, if any.
    pub trainers_file: Option<PathBuf>,
    /// Trainers directory, if any.
    pub trainer_dir: Option<PathBuf>,
    /// Concurrency limit (0 = unlimited) of the `default` queue.
    pub max_concurrent_jobs: usize,
    /// Every queue, `default` included.
    pub queues: crate::queues::Queues,
    /// Default and largest `max_duration`.
    pub max_job_duration: Option<f64>,
    /// Default `heartbeat_timeout`.
    pub heartbeat_timeout: Option<f64>,
    /// Default `stale_after`.
    pub stale_after: Option<f64>,
    /// Grace period before SIGKILL.
    pub kill_grace: std::time::Duration,
    /// How long after its end a job still takes new artifact uploads.
    pub artifact_grace: std::time::Duration,
    /// How long an `Idempotency-Key` answers with its job.
    pub idempotency_ttl: std::time::Duration,
    /// Allow private webhook targets.
    pub webhook_allow_private: bool,
    /// Time one webhook attempt may take.
    pub webhook_timeout: std::time::Duration,
    /// The first webhook retry's delay.
    pub webhook_retry_base: std::time::Duration,
    /// How long after its event a webhook delivery is retried.
    pub webhook_retry_for: std::time::Duration,
    /// Configured webhook endpoints (`WEBHOOKS`), each with its secret.
    pub configured_webhooks: Vec<(crate::model::webhook::CreateWebhook, String)>,
    /// Cancel trainers on shutdown.
    pub stop_jobs_on_exit: bool,
    /// Log bytes kept per job.
    pub max_log_bytes: u64,
    /// Object store settings.
    pub storage: StorageConfig,
    /// Launch nothing.
    pub hold_jobs: bool,
    /// `--gpus`.
    pub gpus: crate::gpus::Selection,
    /// Between GPU telemetry samples.
    pub gpu_sample_interval: std::time::Duration,
    /// 0 % utilisation for this long flags a running job `gpu_idle`.
    pub gpu_idle_after: std::time::Duration,
    /// Kubernetes runner settings.
    pub kube: KubeSettings,
    /// The automatic retention policy (off unless configured).
    pub retention: RetentionPolicy,
    /// Connection handling: caps and timeouts.
    pub http: HttpLimits,
    /// Failed API-token attempts per minute per client address (0 = no limit).
    pub max_auth_failures: u32,
    /// Test-only cap on the database's size in pages
    /// (`PLATFORM_TEST_DB_MAX_PAGES`).
    pub test_db_max_pages: Option<u64>,
    /// Test-only event hub capacity (`PLATFORM_TEST_EVENT_CAPACITY`).
    pub test_event_capacity: Option<usize>,
}

/// How the HTTP server treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most open connections (before fitting the open-files limit); `None`
    /// takes the default.
    pub max_connections: Option<usize>,
    /// Most event streams and followed logs at once.
    pub max_streams: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: std::time::Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: std::time::Duration,
}

impl ServerConfig {
    /// Resolves `args` (already layered by clap) into a configuration.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let bind = resolve_bind(args.bind.as_deref())?;
        let api_token = check_token(args.api_token.as_deref(), bind)?;
        let admin_token = check_token(args.admin_token.as_deref(), bind)?;
        let require_auth = api_token.is_some() || admin_token.is_some() || args.require_auth;
        if !bind.ip().is_loopback() && !require_auth && !args.allow_unauthenticated {
            return Err(ConfigError::Unauthenticated(bind));
        }
        let (data_dir, database) = args.database.resolve()?;
        let backend_base_url = args
            .backend_base_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_string());
        let cors_origins = match &args.cors_origins {
            Some(s) => parse_list(s).ok_or_else(|| ConfigError::Cors(s.clone()))?,
            None => Vec::new(),
        };
        if !args.kill_grace.is_finite() || args.kill_grace < 0.0 {
            return Err(ConfigError::KillGrace(args.kill_grace));
        }
        let trainers_file = args.trainers_file.clone().or_else(|| {
            default_config_dir()
                .map(|d| d.join("trainers.toml"))
                .filter(|p| p.is_file())
        });
        let max_concurrent_jobs = args.max_concurrent_jobs.unwrap_or(match args.runner {
            RunnerKind::Subprocess => 1,
            RunnerKind::Kubernetes => 0,
        });
        let storage =
            StorageConfig::from_args(&args.storage, &data_dir).map_err(ConfigError::Storage)?;
        let queues = crate::queues::Queues::parse(
            args.queues.as_deref(),
            u32::try_from(max_concurrent_jobs).unwrap_or(u32::MAX),
        )?;
        if args.leader_election == LeaderElection::Lease {
            single_node_check(&database, args.runner)?;
        }
        let replica_id = match &args.replica_id {
            Some(id) => check_replica_id(id)?,
            None => default_replica_id(),
        };
        Ok(Self {
            bind,
            database,
            db_pool_size: args.db_pool_size.map(|n| n as usize),
            data_dir,
            runner: args.runner,
            leader_election: args.leader_election,
            replica_id,
            api_token,
            admin_token,
            require_auth,
            callback_auth: args.callback_auth == Switch::On,
            max_body_bytes: args.max_body_bytes,
            backend_base_url,
            cors_origins,
            trainers_file,
            trainer_dir: args.trainer_subprocess_path.clone(),
            max_concurrent_jobs,
            queues: queues.clone(),
            max_job_duration: args.max_job_duration.filter(|s| *s > 0.0),
            heartbeat_timeout: args.heartbeat_timeout.filter(|s| *s > 0.0),
            stale_after: args.stale_after,
            kill_grace: std::time::Duration::from_secs_f64(args.kill_grace),
            artifact_grace: std::time::Duration::from_secs(args.artifact_grace),
            idempotency_ttl: args.idempotency_ttl,
            webhook_allow_private: args.webhook_allow_private,
            webhook_timeout: args.webhook_timeout,
            webhook_retry_base: args.webhook_retry_base,
            webhook_retry_for: args.webhook_retry_for,
            configured_webhooks: match &args.webhooks {
                Some(text) => parse_webhooks(text)?,
                None => Vec::new(),
            },
            stop_jobs_on_exit: args.stop_jobs_on_exit,
            max_log_bytes: args.max_log_bytes,
            storage,
            hold_jobs: args.hold_jobs,
            gpus: args.gpus.clone().unwrap_or_default(),
            gpu_sample_interval: seconds("--gpu-sample-interval", args.gpu_sample_interval, 0.1)?,
            gpu_idle_after: seconds("--gpu-idle-after", args.gpu_idle_after, 0.0)?,
            kube: KubeSettings {
                queue_map: queues
                    .all()
                    .iter()
                    .filter_map(|q| Some((q.name.clone(), q.kueue_queue.clone()?)))
                    .collect(),
                ..KubeSettings::from_args(&args.kube)
            },
            retention: RetentionPolicy::from_args(&args.retention),
            http: HttpLimits {
                max_connections: args.max_connections.map(|n| n as usize),
                max_streams: args.max_streams as usize,
                header_timeout: args.header_timeout,
                idle_timeout: args.idle_timeout,
            },
            max_auth_failures: args.max_auth_failures,
            test_db_max_pages: test_env("PLATFORM_TEST_DB_MAX_PAGES"),
            test_event_capacity: test_env("PLATFORM_TEST_EVENT_CAPACITY"),
        })
    }
}

/// `--leader-election lease` needs every part shared: the database on a
/// server, trainers as Kubernetes Jobs (a subprocess trainer is a child
/// of one replica, its logs on that node).
fn single_node_check(database: &DbUrl, runner: RunnerKind) -> Result<(), ConfigError> {
    if matches!(database, DbUrl::Sqlite(_)) {
        return Err(ConfigError::SingleNode("--leader-election lease needs a PostgreSQL DATABASE_URL: a SQLite database is a file of one node, so replicas cannot share it"));
    }
    if runner == RunnerKind::Subprocess {
        return Err(ConfigError::SingleNode("--leader-election lease needs --runner kubernetes (TRAINING_MODE=kubernetes): subprocess trainers are children of one replica, which no other replica can watch or stop"));
    }
    Ok(())
}

fn check_replica_id(id: &str) -> Result<String, ConfigError> {
    let fits = (1..=100).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fits {
        Ok(id.to_string())
    } else {
        Err(ConfigError::ReplicaId(id.to_string()))
    }
}

/// `HOST-PID-RANDOM`: unique even for two daemons on one host, and on
/// Kubernetes it starts with the pod's name (its host name).
fn default_replica_id() -> String {
    let host: String = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(60)
        .collect();
    let host = if host.is_empty() {
        "platform".to_string()
    } else {
        host
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..6])
}

/// One entry of `WEBHOOKS`.
#[derive(serde::Deserialize)]
struct ConfiguredWebhook {
    #[serde(flatten)]
    hook: crate::model::webhook::CreateWebhook,
    secret: String,
}

/// `WEBHOOKS`: the configured endpoints with their secrets. Secrets are
/// never echoed in the error.
fn parse_webhooks(
    text: &str,
) -> Result<Vec<(crate::model::webhook::CreateWebhook, String)>, ConfigError> {
    let list: Vec<ConfiguredWebhook> = serde_json::from_str(text).map_err(|e| {
        ConfigError::Webhooks(format!(
            "not valid at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    list.into_iter()
        .map(|c| {
            c.hook
                .validate()
                .map_err(|e| ConfigError::Webhooks(e.to_string()))?;
            if c.secret.trim().len() < 16 {
                return Err(ConfigError::Webhooks(format!(
                    "the secret of {} is shorter than 16 characters",
                    crate::model::webhook::shown_url(&c.hook.url)
                )));
            }
            Ok((c.hook, c.secret))
        })
        .collect()
}

/// Test hooks, read from the environment only (no flag, no help text: they
/// are not for operators): `PLATFORM_TEST_DB_MAX_PAGES` caps the database
/// in pages, so tests get a real `SQLITE_FULL` without filling a disk;
/// `PLATFORM_TEST_EVENT_CAPACITY` shrinks the event hub, so a test can make
/// a subscriber lag whatever the machine's socket buffers hold.
fn test_env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The API token as configured, trimmed. Unset is no token; a value that
/// is set but empty or only whitespace is refused rather than read as "no
/// token" (a typo must not open the API), and so is a short one.
fn check_token(token: Option<&str>, bind: SocketAddr) -> Result<Option<String>, ConfigError> {
    let Some(token) = token.map(str::trim) else {
        return Ok(None);
    };
    if token.is_empty() {
        return Err(ConfigError::EmptyToken(bind));
    }
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(ConfigError::ShortToken(chars));
    }
    Ok(Some(token.to_string()))
}

impl DatabaseArgs {
    /// The data directory and the database they name.
    pub fn resolve(&self) -> Result<(PathBuf, DbUrl), ConfigError> {
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        let database = match &self.database_url {
            Some(url) => DbUrl::parse(url)?,
            None => DbUrl::Sqlite(data_dir.join("platform.db")),
        };
        Ok((data_dir, database))
    }
}

fn resolve_bind(flag: Option<&str>) -> Result<SocketAddr, ConfigError> {
    let text = match flag {
        Some(b) => b.to_string(),
        None => {
            let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
            let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
            match host.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
                _ => format!("{host}:{port}"),
            }
        }
    };
    let text = text.replace("localhost", "127.0.0.1");
    text.parse::<SocketAddr>()
        .map_err(|_| ConfigError::Bind(text.clone()))
}

/// `http://<bind>`, with an unspecified address replaced by loopback.
pub fn default_base_url(bind: SocketAddr) -> String {
    let host = match bind.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("http://{host}:{}", bind.port())
}

/// A JSON list of strings, or a comma-separated list.
pub fn parse_list(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if t.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(t).ok();
    }
    Some(
        t.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

/// A duration flag of at least `min` seconds.
fn seconds(flag: &'static str, value: f64, min: f64) -> Result<std::time::Duration, ConfigError> {
    if !value.is_finite() || value < min || value > 1e9 {
        return Err(ConfigError::Seconds { flag, value, min });
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_replaces_unspecified_addresses() {
        assert_eq!(
            default_base_url("0.0.0.0:9000".parse().unwrap()),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            default_base_url("[::]:9000".parse().unwrap()),
            "http://[::1]:9000"
        );
        assert_eq!(
            default_base_url("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80"
        );
    }

    #[test]
    fn tokens_are_trimmed_and_must_be_long_enough() {
        let bind: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert_eq!(check_token(None, bind).unwrap(), None);
        assert_eq!(
            check_token(Some("  0123456789abcdef \n"), bind)
                .unwrap()
                .as_deref(),
            Some("0123456789abcdef")
        );
        for blank in ["", "   ", "\t\n"] {
            assert!(matches!(
                check_token(Some(blank), bind),
                Err(ConfigError::EmptyToken(_))
            ));
        }
        assert!(matches!(
            check_token(Some("  0123456789abcde  "), bind),
            Err(ConfigError::ShortToken(15))
        ));
    }

    #[test]
    fn lists_parse_both_forms() {
        assert_eq!(
            parse_list(r#"["http://a", "http://b"]"#).unwrap(),
            vec!["http://a", "http://b"]
        );
        assert_eq!(
            parse_list("http://a, http://b").unwrap(),
            vec!["http://a", "http://b"]
        );
        assert!(parse_list("[1, 2").is_none());
    }
}
