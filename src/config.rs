//! Server configuration: the `platform serve` flags, their environment
//! variables (the seed's names), and how the layers combine.
//!
//! Precedence is flags > environment > `.env` in the working directory >
//! the config file > defaults. clap resolves flags over environment; the
//! lower layers are folded into the environment by [`load_env_layers`]
//! before parsing, each only filling variables that are still unset.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::runner::kubernetes::config::{KubeArgs, KubeSettings};
use crate::storage::{StorageArgs, StorageConfig};
use crate::switch::Switch;

/// Which runner launches trainers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunnerKind {
    /// Local child processes (the default on a dev box).
    #[value(alias = "local")]
    Subprocess,
    /// One Kubernetes Job per training job.
    Kubernetes,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `platform serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: $HOST:$PORT, else 127.0.0.1:8000].
    #[arg(long, env = "PLATFORM_BIND", value_name = "ADDR")]
    pub bind: Option<String>,

    /// Database URL: sqlite:///relative/path or sqlite:////absolute/path [default: platform.db in the data directory].
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Directory for the database and the local object store [default: the user's data directory].
    #[arg(long, env = "PLATFORM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Which runner launches trainers.
    #[arg(
        long = "runner",
        env = "TRAINING_MODE",
        value_enum,
        default_value = "subprocess"
    )]
    pub runner: RunnerKind,

    /// Bearer token required on the user-facing API.
    #[arg(
        long,
        env = "PLATFORM_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,

    /// Allow a non-loopback bind without an API token.
    #[arg(long)]
    pub allow_unauthenticated: bool,

    /// Require each job's bearer token on callbacks ("off" for seed-era trainers).
    #[arg(
        long,
        env = "CALLBACK_AUTH",
        value_enum,
        default_value = "on",
        value_name = "on|off"
    )]
    pub callback_auth: Switch,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,

    /// Base URL trainers use to reach this daemon [default: http://<bind address>].
    #[arg(long, env = "BACKEND_BASE_URL", value_name = "URL")]
    pub backend_base_url: Option<String>,

    /// Allowed CORS origins: a JSON list or comma-separated.
    #[arg(long, env = "CORS_ORIGINS", value_name = "LIST")]
    pub cors_origins: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Debug logging (the seed's DEBUG).
    #[arg(long, env = "DEBUG", value_parser = clap::builder::FalseyValueParser::new())]
    pub debug: bool,

    /// Trainers file (TOML) [default: trainers.toml in the user's config directory, if present].
    #[arg(long = "trainers", env = "TRAINERS_FILE", value_name = "FILE")]
    pub trainers_file: Option<PathBuf>,

    /// Directory with one sub-directory per framework (the seed's layout).
    #[arg(long, env = "TRAINER_SUBPROCESS_PATH", value_name = "DIR")]
    pub trainer_subprocess_path: Option<PathBuf>,

    /// Most jobs running at once [default: 1 for subprocess, 0 (unlimited) for kubernetes].
    #[arg(long, env = "MAX_CONCURRENT_JOBS", value_name = "N")]
    pub max_concurrent_jobs: Option<usize>,

    /// Seconds between SIGTERM and SIGKILL when cancelling a trainer.
    #[arg(
        long,
        env = "KILL_GRACE",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub kill_grace: f64,

    /// Cancel running jobs when the daemon stops (default: leave them running and re-adopt them).
    #[arg(long)]
    pub stop_jobs_on_exit: bool,

    /// Log bytes kept per job, at least 8 KiB (older output is dropped).
    #[arg(long, env = "MAX_LOG_BYTES", default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub max_log_bytes: u64,

    /// Object store settings.
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Accept jobs but launch none (maintenance): pending jobs wait until a daemon runs without it.
    #[arg(long, env = "HOLD_JOBS", value_parser = clap::builder::FalseyValueParser::new())]
    pub hold_jobs: bool,
    /// Kubernetes runner settings.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad `--bind`/`HOST`/`PORT`.
    #[error("invalid listen address {0:?}: expected HOST:PORT, e.g. 127.0.0.1:8000")]
    Bind(String),
    /// Unsupported `DATABASE_URL`.
    #[error("unsupported DATABASE_URL {0:?}: platform stores its data in SQLite; use sqlite:///relative/path or sqlite:////absolute/path")]
    DatabaseUrl(String),
    /// A non-loopback bind without a token.
    #[error("refusing to listen on {0} without an API token: set PLATFORM_API_TOKEN (or --api-token), or pass --allow-unauthenticated to expose the API to your network")]
    Unauthenticated(SocketAddr),
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
    /// Inconsistent object store settings.
    #[error("{0}")]
    Storage(String),
}

/// The resolved server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The SQLite file.
    pub database_path: PathBuf,
    /// Data directory (database, local object store).
    pub data_dir: PathBuf,
    /// Runner kind.
    pub runner: RunnerKind,
    /// API bearer token.
    pub api_token: Option<String>,
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
    /// Concurrency limit (0 = unlimited).
    pub max_concurrent_jobs: usize,
    /// Grace period before SIGKILL.
    pub kill_grace: std::time::Duration,
    /// Cancel trainers on shutdown.
    pub stop_jobs_on_exit: bool,
    /// Log bytes kept per job.
    pub max_log_bytes: u64,
    /// Object store settings.
    pub storage: StorageConfig,
    /// Launch nothing.
    pub hold_jobs: bool,
    /// Kubernetes runner settings.
    pub kube: KubeSettings,
}

impl ServerConfig {
    /// Resolves `args` (already layered by clap) into a configuration.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let bind = resolve_bind(args.bind.as_deref())?;
        // An empty token (`--api-token ""`, `PLATFORM_API_TOKEN=`) is no token.
        let api_token = args.api_token.clone().filter(|t| !t.is_empty());
        if !bind.ip().is_loopback() && api_token.is_none() && !args.allow_unauthenticated {
            return Err(ConfigError::Unauthenticated(bind));
        }
        let data_dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        let database_path = match &args.database_url {
            Some(url) => parse_database_url(url)?,
            None => data_dir.join("platform.db"),
        };
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
        Ok(Self {
            bind,
            database_path,
            data_dir,
            runner: args.runner,
            api_token,
            callback_auth: args.callback_auth == Switch::On,
            max_body_bytes: args.max_body_bytes,
            backend_base_url,
            cors_origins,
            trainers_file,
            trainer_dir: args.trainer_subprocess_path.clone(),
            max_concurrent_jobs,
            kill_grace: std::time::Duration::from_secs_f64(args.kill_grace),
            stop_jobs_on_exit: args.stop_jobs_on_exit,
            max_log_bytes: args.max_log_bytes,
            storage,
            hold_jobs: args.hold_jobs,
            kube: KubeSettings::from_args(&args.kube),
        })
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

/// SQLAlchemy's rule: `sqlite:///relative`, `sqlite:////absolute`;
/// `sqlite+aiosqlite://` is a synonym. A bare path is taken as a path.
pub fn parse_database_url(url: &str) -> Result<PathBuf, ConfigError> {
    let rest = url
        .strip_prefix("sqlite+aiosqlite://")
        .or_else(|| url.strip_prefix("sqlite://"));
    match rest {
        Some(r) => {
            let path = r.strip_prefix('/').unwrap_or(r);
            if path.is_empty() || path == ":memory:" {
                return Err(ConfigError::DatabaseUrl(url.to_string()));
            }
            Ok(PathBuf::from(path))
        }
        None if url.contains("://") || url.is_empty() => {
            Err(ConfigError::DatabaseUrl(url.to_string()))
        }
        None => Ok(PathBuf::from(url)),
    }
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

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "platform")
}

/// The user's data directory for platform (e.g. `~/.local/share/platform`).
pub fn default_data_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_path_buf())
}

/// The user's config directory for platform (e.g. `~/.config/platform`).
pub fn default_config_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().to_path_buf())
}

/// Short config-file keys and the variables they set.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("server", "PLATFORM_SERVER"),
    ("token", "PLATFORM_TOKEN"),
    ("user", "PLATFORM_USER"),
    ("bind", "PLATFORM_BIND"),
    ("data_dir", "PLATFORM_DATA_DIR"),
    ("api_token", "PLATFORM_API_TOKEN"),
];

/// Folds `.env` (working directory) and the config file
/// (`$PLATFORM_CONFIG`, else `config.toml` in the user's config directory)
/// into the environment, never overriding a variable that is already set.
/// Call before any thread starts. Returns a warning for a broken file.
pub fn load_env_layers() -> Vec<String> {
    let mut warnings = Vec::new();
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => warnings.push(format!("ignoring .env: {e}")),
    }
    let path = std::env::var_os("PLATFORM_CONFIG")
        .map(PathBuf::from)
        .or_else(|| default_config_dir().map(|d| d.join("config.toml")));
    if let Some(path) = path.filter(|p| p.is_file()) {
        if let Err(e) = apply_config_file(&path) {
            warnings.push(e);
        }
    }
    warnings
}

fn apply_config_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("ignoring config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("ignoring config file {}: {e}", path.display()))?;
    for (key, value) in table {
        let var = KEY_ALIASES
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| key.to_ascii_uppercase());
        let value = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        if std::env::var_os(&var).is_none() {
            // SAFETY (edition 2021: safe fn): called before any other thread exists.
            std::env::set_var(&var, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_follow_sqlalchemy() {
        assert_eq!(
            parse_database_url("sqlite:///rel/x.db").unwrap(),
            PathBuf::from("rel/x.db")
        );
        assert_eq!(
            parse_database_url("sqlite:////abs/x.db").unwrap(),
            PathBuf::from("/abs/x.db")
        );
        assert_eq!(
            parse_database_url("sqlite+aiosqlite:///./t.db").unwrap(),
            PathBuf::from("./t.db")
        );
        assert!(parse_database_url("postgresql://u@h/db").is_err());
        assert!(parse_database_url("sqlite://").is_err());
    }

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
