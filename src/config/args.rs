//! The flags of `platform serve`, with their environment variables (the
//! seed's names) and defaults, and the value types only `serve` uses. The
//! storage and Kubernetes runner flags are owned by those modules and
//! flattened in here, so `serve --help` still lists them all.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::runner::kubernetes::config::KubeArgs;
use crate::storage::StorageArgs;
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

/// How replicas sharing one database agree on a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LeaderElection {
    /// This daemon leads alone (one replica; SQLite or PostgreSQL).
    Off,
    /// A lease row in PostgreSQL: one replica at a time leads (needs
    /// PostgreSQL and the Kubernetes runner).
    Lease,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the daemon's data lives: `serve`'s flags, shared with the
/// commands that work on the data itself (`platform db check`).
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Directory for the database and the local object store [default: the user's data directory].
    #[arg(long, env = "PLATFORM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Flags of `platform serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: $HOST:$PORT, else 127.0.0.1:8000].
    #[arg(long, env = "PLATFORM_BIND", value_name = "ADDR")]
    pub bind: Option<String>,

    /// Where the data lives.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Connections in the PostgreSQL pool [default: the URL's pool_size, else 10].
    #[arg(long, env = "DB_POOL_SIZE", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: Option<u32>,

    /// Which runner launches trainers.
    #[arg(
        long = "runner",
        env = "TRAINING_MODE",
        value_enum,
        default_value = "subprocess"
    )]
    pub runner: RunnerKind,

    /// Leader election among replicas sharing one PostgreSQL database: `lease` (one replica schedules and watches trainers, every one serves the API; needs PostgreSQL and the Kubernetes runner) or `off` (this daemon does everything).
    #[arg(
        long,
        env = "PLATFORM_LEADER_ELECTION",
        value_enum,
        default_value = "off"
    )]
    pub leader_election: LeaderElection,

    /// This replica's name in the leader lease and /health [default: the host name (a pod's name on Kubernetes), the process id and a random suffix].
    #[arg(long, env = "PLATFORM_REPLICA_ID", value_name = "NAME")]
    pub replica_id: Option<String>,

    /// Bearer token required on the user-facing API.
    #[arg(
        long,
        env = "PLATFORM_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,

    /// The first admin's token, stored (as a hash) when the database has
    /// no user yet; without it a generated one goes to `admin-token` in
    /// the data directory. Setting it also requires tokens on user routes.
    #[arg(
        long,
        env = "PLATFORM_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,

    /// Require a user token (or the API token) on user routes even on a
    /// loopback address without PLATFORM_API_TOKEN (a shared machine).
    #[arg(long, env = "PLATFORM_REQUIRE_AUTH")]
    pub require_auth: bool,

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

    /// Queues besides `default`, as the config file's `[queues.NAME]`
    /// tables (`max_concurrent`, `max_per_user`, `kueue_queue`) or the same
    /// as JSON, e.g. '{"gpu": {"max_concurrent": 2, "max_per_user": 1}}'.
    #[arg(long, env = "QUEUES", value_name = "TABLES")]
    pub queues: Option<String>,

    /// Each job's default and largest `max_duration`, in seconds (default: none).
    #[arg(long, env = "MAX_JOB_DURATION", value_name = "SECONDS", value_parser = limit_seconds)]
    pub max_job_duration: Option<f64>,

    /// Default `heartbeat_timeout` of jobs whose request and trainer set none, in seconds (default: none).
    #[arg(long, env = "HEARTBEAT_TIMEOUT", value_name = "SECONDS", value_parser = limit_seconds)]
    pub heartbeat_timeout: Option<f64>,

    /// Default `stale_after` (further silence before a stalled job is stopped), in seconds (default: never stopped).
    #[arg(long, env = "STALE_AFTER", value_name = "SECONDS", value_parser = limit_seconds)]
    pub stale_after: Option<f64>,

    /// Seconds between SIGTERM and SIGKILL when cancelling a trainer.
    #[arg(
        long,
        env = "KILL_GRACE",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub kill_grace: f64,

    /// Seconds after a job ends during which its trainer may still upload
    /// new artifacts (never replacing one); later uploads are refused (409).
    #[arg(
        long,
        env = "ARTIFACT_GRACE",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub artifact_grace: u64,

    /// Seconds an `Idempotency-Key` of a job create is remembered: a retry with the same key and body within it gets the original job back (at most 86400, the default).
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "86400", value_name = "SECONDS", value_parser = seconds)]
    pub idempotency_ttl: Duration,

    /// Allow webhook targets on loopback, private, link-local and cloud-metadata addresses (refused by default: a webhook must not reach into the daemon's network).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", value_parser = clap::builder::FalseyValueParser::new())]
    pub webhook_allow_private: bool,

    /// Seconds one webhook delivery attempt may take.
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub webhook_timeout: Duration,

    /// Seconds before a failed webhook delivery is first retried; each later retry waits four times longer (at most 4 h), until WEBHOOK_RETRY_FOR has passed.
    #[arg(long, env = "WEBHOOK_RETRY_BASE", default_value = "5", value_name = "SECONDS", value_parser = seconds)]
    pub webhook_retry_base: Duration,

    /// Seconds after its event during which a failing webhook delivery is retried; after that it is recorded as failed (at most 604800, a week).
    #[arg(long, env = "WEBHOOK_RETRY_FOR", default_value = "86400", value_name = "SECONDS", value_parser = retry_window)]
    pub webhook_retry_for: Duration,

    /// Webhook endpoints from the configuration: a JSON list of {"url", "secret", "events", "frameworks", "users", "format"} (only url and secret required); they replace the configured ones at each start.
    #[arg(long, env = "WEBHOOKS", value_name = "JSON", hide_env_values = true)]
    pub webhooks: Option<String>,

    /// Cancel running jobs when the daemon stops (default: leave them running and re-adopt them).
    #[arg(long)]
    pub stop_jobs_on_exit: bool,

    /// Most open client connections; past it a new connection replaces the longest-idle one, or gets a quick 503 when none is idle [default: 4096, lowered to fit the open-files limit].
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Most event streams and followed logs open at once; past it they are answered 503.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,

    /// Seconds a client has to send a request's headers (from connecting, or from its first byte on a reused connection).
    #[arg(long, env = "HEADER_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub header_timeout: Duration,

    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "60", value_name = "SECONDS", value_parser = seconds)]
    pub idle_timeout: Duration,

    /// Failed API-token attempts per minute from one client address before it gets 429 for the rest of the minute (0 = no limit).
    #[arg(
        long,
        env = "MAX_AUTH_FAILURES",
        default_value_t = 20,
        value_name = "N"
    )]
    pub max_auth_failures: u32,

    /// Log bytes kept per job, at least 8 KiB (older output is dropped).
    #[arg(long, env = "MAX_LOG_BYTES", default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub max_log_bytes: u64,

    /// Object store settings.
    #[command(flatten)]
    pub storage: StorageArgs,

    /// GPUs trainers may use (subprocess runner): indices or UUIDs as
    /// `nvidia-smi` lists them (`0,1,3`), `all` (every GPU it lists, within an
    /// inherited CUDA_VISIBLE_DEVICES) or `none` [default: all].
    #[arg(long, env = "PLATFORM_GPUS", value_name = "LIST")]
    pub gpus: Option<crate::gpus::Selection>,

    /// Seconds between GPU telemetry samples while jobs hold GPUs.
    #[arg(
        long,
        env = "PLATFORM_GPU_SAMPLE_INTERVAL",
        default_value_t = 5.0,
        value_name = "SECONDS"
    )]
    pub gpu_sample_interval: f64,

    /// Seconds a GPU held by a running job may stay at 0 % utilisation
    /// before the job is flagged `gpu_idle`.
    #[arg(
        long,
        env = "PLATFORM_GPU_IDLE_AFTER",
        default_value_t = 600.0,
        value_name = "SECONDS"
    )]
    pub gpu_idle_after: f64,

    /// Accept jobs but launch none (maintenance): pending jobs wait until a daemon runs without it.
    #[arg(long, env = "HOLD_JOBS", value_parser = clap::builder::FalseyValueParser::new())]
    pub hold_jobs: bool,

    /// The automatic retention policy.
    #[command(flatten)]
    pub retention: super::retention::RetentionArgs,

    /// Kubernetes runner settings.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// A positive, finite number of seconds, at most a day.
fn seconds(s: &str) -> Result<Duration, String> {
    seconds_at_most(s, 86_400)
}

/// A positive, finite number of seconds, at most a week: how long webhook
/// deliveries are retried (receivers down over a weekend still get them).
fn retry_window(s: &str) -> Result<Duration, String> {
    seconds_at_most(s, 604_800)
}

fn seconds_at_most(s: &str, max: u32) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0 && *x <= f64::from(max))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected a number of seconds above 0 (at most {max}), not {s:?}"))
}

/// A scheduling limit in seconds (fractions allowed; at most a year).
fn limit_seconds(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0 && *x <= crate::model::sched::MAX_LIMIT_SECS)
        .ok_or_else(|| {
            format!("expected a number of seconds of 0 or more (at most a year), not {s:?}")
        })
}
