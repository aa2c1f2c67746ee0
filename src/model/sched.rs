//! The scheduling part of a job: its queue and priority, its attempts,
//! time limits, heartbeats and dependencies; the create request's
//! scheduling fields; queues as the API shows them.
//!
//! Every field is optional on the wire with a default, so clients that
//! know only the seed's fields keep working.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::gpu::AssignedGpu;
use super::retry::RetryPolicy;
use super::validate::ValidationError;

/// The queue every deployment has; `--max-concurrent-jobs` is its limit.
pub const DEFAULT_QUEUE: &str = "default";
/// A job's priority when its create request names none.
pub const DEFAULT_PRIORITY: u8 = 50;
/// The highest priority.
pub const MAX_PRIORITY: u8 = 100;
/// The most jobs one job may wait for (`after`).
pub const MAX_AFTER: usize = 100;
/// The most GPUs one job may ask for.
pub const MAX_GPUS: u32 = 1024;
/// The longest time limit, in seconds (one year).
pub const MAX_LIMIT_SECS: f64 = 365.0 * 86_400.0;

/// Why the daemon (not the trainer, not a user) ended a job
/// (`termination_reason`).
pub mod reason {
    /// An attempt ran longer than its `max_duration`.
    pub const MAX_DURATION: &str = "max-duration";
    /// It waited to launch longer than its `max_pending`.
    pub const QUEUE_TIMEOUT: &str = "queue-timeout";
    /// It sent no heartbeat for longer than its `heartbeat_timeout` (and
    /// its `stale_after`).
    pub const STALE: &str = "stale";
    /// A job it waits for (`after`) failed or was cancelled.
    pub const DEPENDENCY_FAILED: &str = "dependency-failed";
}

/// One run of a job's trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: u32,
    /// When its trainer was launched.
    pub started_at: DateTime<Utc>,
    /// When it ended, once it did.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Its trainer's exit code, when known.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it ended, when it did not succeed (or an event: `timeout`,
    /// `stale`, `oom`, `vanished`, `evicted`).
    #[serde(default)]
    pub reason: Option<String>,
    /// Whether it counted against the retry policy's `max_attempts`.
    #[serde(default = "yes")]
    pub counted: bool,
}

fn yes() -> bool {
    true
}

/// A job's scheduling fields, as the API returns them (flattened into
/// [`super::Job`]). Limits are the effective ones, defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobScheduling {
    /// The queue it launches from.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// 0–100; higher launches first within its queue.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// The current (or last) attempt's number; 0 before the first launch.
    #[serde(default)]
    pub attempt: u32,
    /// Every attempt so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The retry policy it runs under (its own, or its trainer's); none:
    /// never retried.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Longest run of one attempt, in seconds.
    #[serde(default)]
    pub max_duration: Option<f64>,
    /// Longest wait to launch, in seconds.
    #[serde(default)]
    pub max_pending: Option<f64>,
    /// Silence (no trainer call) after which the job is `stalled`, in seconds.
    #[serde(default)]
    pub heartbeat_timeout: Option<f64>,
    /// Further silence after `stalled` after which it is stopped and
    /// failed `stale`, in seconds; none: it is only marked.
    #[serde(default)]
    pub stale_after: Option<f64>,
    /// Jobs that must complete before this one launches.
    #[serde(default)]
    pub after: Vec<Uuid>,
    /// Why the daemon ended it: `max-duration`, `queue-timeout`, `stale`,
    /// `dependency-failed`.
    #[serde(default)]
    pub termination_reason: Option<String>,
    /// The trainer's latest call of any kind (written at most every few
    /// seconds).
    #[serde(default)]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Set while the job is `stalled`: its trainer has been silent longer
    /// than `heartbeat_timeout`. A later heartbeat clears it.
    #[serde(default)]
    pub stalled_at: Option<DateTime<Utc>>,
    /// While pending for a retry: when the next attempt may launch.
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// GPUs it asks for (its own, else its trainer's `resources.gpu`, else 0).
    #[serde(default)]
    pub gpus: u32,
    /// The GPUs of its current (or last) launch by the subprocess runner,
    /// recorded before its trainer started; empty before and without any.
    #[serde(default)]
    pub assigned_gpus: Vec<AssignedGpu>,
    /// Set (in `GET /api/v1/training/jobs/{id}`) while a GPU it holds has
    /// been at 0 % utilisation for longer than the daemon's
    /// `--gpu-idle-after`; absent otherwise. Not stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpu_idle: bool,
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_string()
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

impl Default for JobScheduling {
    fn default() -> Self {
        Self {
            queue: default_queue(),
            priority: DEFAULT_PRIORITY,
            attempt: 0,
            attempts: Vec::new(),
            retry: None,
            max_duration: None,
            max_pending: None,
            heartbeat_timeout: None,
            stale_after: None,
            after: Vec::new(),
            termination_reason: None,
            last_heartbeat_at: None,
            stalled_at: None,
            next_attempt_at: None,
            gpus: 0,
            assigned_gpus: Vec::new(),
            gpu_idle: false,
        }
    }
}

impl JobScheduling {
    /// Attempts so far that counted against `max_attempts`.
    pub fn counted_attempts(&self) -> u32 {
        self.attempts.iter().filter(|a| a.counted).count() as u32
    }

    /// The current attempt, while there is one.
    pub fn current_attempt_mut(&mut self) -> Option<&mut Attempt> {
        let n = self.attempt;
        self.attempts.iter_mut().rev().find(|a| a.attempt == n)
    }

    /// When the current attempt started.
    pub fn attempt_started(&self) -> Option<DateTime<Utc>> {
        let n = self.attempt;
        self.attempts
            .iter()
            .rev()
            .find(|a| a.attempt == n)
            .map(|a| a.started_at)
    }
}

/// The scheduling fields of `POST /api/v1/training/jobs` (flattened into
/// [`super::CreateJob`]); all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateScheduling {
    /// A configured queue (`GET /api/v1/queues`); default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64)]
    pub queue: Option<String>,
    /// 0–100, default 50; higher launches first within its queue.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_priority"
    )]
    #[schema(minimum = 0, maximum = 100)]
    pub priority: Option<u8>,
    /// Retry policy; default: its trainer's (trainers file), else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Longest run of one attempt, in seconds (fractions allowed); default
    /// and maximum: the server's `--max-job-duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 31536000)]
    pub max_duration: Option<f64>,
    /// Longest wait to launch, in seconds; then it fails `queue-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 31536000)]
    pub max_pending: Option<f64>,
    /// Silence after which it is `stalled`, in seconds; default: its
    /// trainer's, else the server's `--heartbeat-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 31536000)]
    pub heartbeat_timeout: Option<f64>,
    /// Further silence after which a stalled job is stopped and failed
    /// `stale`, in seconds; default: the server's `--stale-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31536000)]
    pub stale_after: Option<f64>,
    /// Jobs (ids) that must complete first; if one fails or is cancelled,
    /// this one fails `dependency-failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 100)]
    pub after: Vec<Uuid>,
    /// GPUs to run with; default: its trainer's `resources.gpu`, else 0.
    /// With the subprocess runner, more than the daemon's machine has is
    /// refused (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1024)]
    pub gpus: Option<u32>,
}

/// `deserialize_with` for a priority spelled `75` or `75.0` (both JSON
/// Schema integers); out of 0–100 is refused by validation, out of a byte
/// here.
fn optional_priority<'de, D>(d: D) -> Result<Option<u8>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let n = super::validate::optional_integer(d)?;
    n.map(|n| u8::try_from(n).map_err(|_| D::Error::custom("must be between 0 and 100")))
        .transpose()
}

/// Checks an optional limit in seconds: positive (or zero when
/// `zero_ok`), finite, at most a year.
pub fn check_seconds(field: &str, v: Option<f64>, zero_ok: bool) -> Result<(), ValidationError> {
    match v {
        Some(s) if !s.is_finite() || s < 0.0 || (s == 0.0 && !zero_ok) || s > MAX_LIMIT_SECS => {
            Err(ValidationError::new(
                field,
                format!(
                    "must be a number of seconds {} 0 and at most {MAX_LIMIT_SECS}",
                    if zero_ok { "of at least" } else { "over" }
                ),
            ))
        }
        _ => Ok(()),
    }
}

impl CreateScheduling {
    /// Checks ranges (the queue's existence is the server's to check).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(q) = &self.queue {
            check_queue_name(q).map_err(|m| ValidationError::new("queue", m))?;
        }
        if self.priority.is_some_and(|p| p > MAX_PRIORITY) {
            return Err(ValidationError::new(
                "priority",
                "must be between 0 and 100",
            ));
        }
        if let Some(r) = &self.retry {
            r.validate("retry")?;
        }
        check_seconds("max_duration", self.max_duration, false)?;
        check_seconds("max_pending", self.max_pending, false)?;
        check_seconds("heartbeat_timeout", self.heartbeat_timeout, false)?;
        check_seconds("stale_after", self.stale_after, true)?;
        if self.gpus.is_some_and(|g| g > MAX_GPUS) {
            return Err(ValidationError::new(
                "gpus",
                format!("must be between 0 and {MAX_GPUS}"),
            ));
        }
        if self.after.len() > MAX_AFTER {
            return Err(ValidationError::new(
                "after",
                format!("at most {MAX_AFTER} jobs"),
            ));
        }
        Ok(())
    }
}

/// Queue names: 1–64 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a queue name: 1-64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// A queue as `GET /api/v1/queues` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Most jobs running at once (0: unlimited).
    pub max_concurrent: u32,
    /// Most jobs of one user running at once (none: no per-user limit).
    #[serde(default)]
    pub max_per_user: Option<u32>,
    /// Paused queues launch nothing (running jobs go on).
    pub paused: bool,
    /// Jobs running (slots taken).
    pub running: u64,
    /// Jobs waiting to launch.
    pub pending: u64,
    /// The Kueue LocalQueue its Kubernetes Jobs go to, if mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kueue_queue: Option<String>,
}

/// Body of `PATCH /api/v1/training/jobs/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateJob {
    /// New priority (0–100); only while the job is `pending`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_priority"
    )]
    #[schema(minimum = 0, maximum = 100)]
    pub priority: Option<u8>,
    /// Tags to merge into the job's (any status): a value sets the key,
    /// null deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::labels::tag_patch_schema)]
    pub tags: Option<std::collections::BTreeMap<String, Option<String>>>,
    /// A new note (any status); an empty one clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::labels::note_schema)]
    pub note: Option<String>,
}

/// Seconds (fractions allowed) as a `Duration`, for stored limits.
pub fn secs(v: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(v.clamp(0.0, MAX_LIMIT_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_plain() {
        assert!(check_queue_name("gpu-a100").is_ok());
        assert!(check_queue_name("default").is_ok());
        for bad in ["", "GPU", "-x", "a b", &"q".repeat(65)] {
            assert!(check_queue_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_positive_and_finite() {
        let mut s = CreateScheduling {
            max_duration: Some(0.25),
            ..Default::default()
        };
        assert!(s.validate().is_ok());
        s.max_duration = Some(0.0);
        assert_eq!(s.validate().unwrap_err().field, "max_duration");
        s.max_duration = None;
        s.priority = Some(101);
        assert_eq!(s.validate().unwrap_err().field, "priority");
    }

    #[test]
    fn priorities_may_be_spelled_as_whole_floats() {
        let u: UpdateJob = serde_json::from_str(r#"{"priority": 75.0}"#).unwrap();
        assert_eq!(u.priority, Some(75));
        assert!(serde_json::from_str::<UpdateJob>(r#"{"priority": 7.5}"#).is_err());
        assert!(serde_json::from_str::<UpdateJob>(r#"{"priority": 300}"#).is_err());
    }

    #[test]
    fn seed_jobs_read_with_defaults() {
        let s: JobScheduling = serde_json::from_str("{}").unwrap();
        assert_eq!((s.queue.as_str(), s.priority), ("default", 50));
    }
}
