//! The job: the API object, the create request and the list query.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::labels::{Labels, NewLabels};
use super::retention::Pruned;
use super::sched::{Attempt, CreateScheduling, JobScheduling};
use super::status::JobStatus;
use super::validate::{required_plain_text, text, ValidationError};

/// Seed length limits for the create body, in characters.
pub const MAX_USER_ID: usize = 255;
/// Seed limit for `model_name`.
pub const MAX_MODEL_NAME: usize = 255;
/// Seed limit for `framework`.
pub const MAX_FRAMEWORK: usize = 100;
/// Seed limit for `dataset_s3_uri`.
pub const MAX_DATASET_URI: usize = 1024;
/// Largest `config`, in bytes of compact JSON. A trainer gets its config
/// as one environment variable (`CONFIG`), and Linux refuses to start a
/// program with a single environment string over 128 KiB; half of that
/// leaves room for everything else in the environment.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// A training job as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// UUID v7 (time-ordered): the canonical id, in every path.
    pub id: Uuid,
    /// The job's number in this deployment: unique and increasing in
    /// creation order (1, 2, 3, …; gaps are possible). The CLI accepts it
    /// wherever it takes a job id (`42` or `#42`).
    #[serde(default)]
    pub number: i64,
    /// Who submitted the job.
    pub user_id: String,
    /// Model to train, e.g. `yolo11n`.
    pub model_name: String,
    /// Registered trainer framework, e.g. `ultralytics`.
    pub framework: String,
    /// Where the training data lives.
    pub dataset_s3_uri: String,
    /// Free-form trainer configuration (a JSON object) or null.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Lifecycle status.
    pub status: JobStatus,
    /// 0.0 … 1.0.
    pub progress: f64,
    /// The trainer's latest message.
    pub message: Option<String>,
    /// Where the trainer stored its checkpoint.
    pub checkpoint_s3_uri: Option<String>,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    /// When the job was accepted.
    pub created_at: DateTime<Utc>,
    /// Last change of any field.
    pub updated_at: DateTime<Utc>,
    /// When the job first became running.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Which runner launched it (`subprocess`, `kubernetes`), once launched.
    #[serde(default)]
    pub runner: Option<String>,
    /// The trainer's exit code, when known.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Queue, priority, attempts, limits, heartbeats, dependencies.
    #[serde(flatten)]
    pub sched: JobScheduling,
    /// Tags, note, name and sweep.
    #[serde(flatten)]
    pub labels: Labels,
    /// What retention (`platform prune`) removed from the job, and when;
    /// null while it is whole.
    #[serde(default)]
    pub pruned: Option<Pruned>,
}

/// A status change the state machine refuses (see [`JobStatus::can_become`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} job cannot become {to}")]
pub struct IllegalTransition {
    /// The job's status.
    pub from: JobStatus,
    /// The refused next status.
    pub to: JobStatus,
}

impl Job {
    /// Moves the job to `next` when the state machine allows it, stamping
    /// `started_at` on the first `running` and `completed_at` on a terminal
    /// status. A launch (`pending → running`) starts a new attempt; leaving
    /// `running` ends the current one. Every status change goes through here; the job is untouched
    /// when the change is refused.
    pub fn transition(
        &mut self,
        next: JobStatus,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        if !self.status.can_become(next) {
            return Err(IllegalTransition {
                from: self.status,
                to: next,
            });
        }
        let from = self.status;
        self.status = next;
        self.updated_at = now;
        if next == JobStatus::Running && self.started_at.is_none() {
            self.started_at = Some(now);
        }
        if next.is_terminal() && self.completed_at.is_none() {
            self.completed_at = Some(now);
        }
        let s = &mut self.sched;
        if from == JobStatus::Pending && next == JobStatus::Running {
            // A launch: a new attempt, with its own clocks.
            s.attempt += 1;
            s.attempts.push(Attempt {
                attempt: s.attempt,
                started_at: now,
                ended_at: None,
                exit_code: None,
                reason: None,
                counted: true,
            });
            s.next_attempt_at = None;
            s.last_heartbeat_at = None;
            s.stalled_at = None;
        } else if from == JobStatus::Running && next != JobStatus::Running {
            if let Some(a) = s.current_attempt_mut() {
                a.ended_at.get_or_insert(now);
            }
            s.stalled_at = None;
        }
        Ok(())
    }

    /// The job as its create answered it: what a replayed `POST` with the
    /// same `Idempotency-Key` returns ("the same body"), whatever happened
    /// to the job since. Every field a create sets from the request, and
    /// the rest at their initial values.
    pub fn as_created(&self) -> Job {
        Job {
            status: JobStatus::Pending,
            progress: 0.0,
            message: None,
            checkpoint_s3_uri: None,
            error: None,
            updated_at: self.created_at,
            started_at: None,
            completed_at: None,
            runner: None,
            exit_code: None,
            pruned: None,
            sched: JobScheduling {
                attempt: 0,
                attempts: Vec::new(),
                termination_reason: None,
                last_heartbeat_at: None,
                stalled_at: None,
                next_attempt_at: None,
                assigned_gpus: Vec::new(),
                gpu_idle: false,
                ..self.sched.clone()
            },
            ..self.clone()
        }
    }
}

/// Body of `POST /api/v1/training/jobs` (seed `TrainingJobCreate`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateJob {
    /// Who submits the job (1–255 characters, not all whitespace). With a
    /// user token it may be left out: the job is the token's user's.
    #[serde(default, deserialize_with = "given_user_id")]
    #[schema(schema_with = user_id_schema)]
    pub user_id: String,
    /// Model to train (1–255 characters, not all whitespace).
    #[schema(schema_with = model_name_schema)]
    pub model_name: String,
    /// A registered framework (`GET /api/v1/training/frameworks`).
    #[schema(schema_with = framework_schema)]
    pub framework: String,
    /// Dataset location (1–1024 characters, not all whitespace); with the
    /// dataset check on, it must hold data in the daemon's object store.
    #[schema(schema_with = dataset_schema)]
    pub dataset_s3_uri: String,
    /// Optional JSON object passed to the trainer as `CONFIG`; at most
    /// 65536 bytes as compact JSON (it travels in one environment variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Queue, priority, retry policy, time limits, dependencies (all optional).
    #[serde(flatten)]
    pub sched: CreateScheduling,
    /// Tags, note and name (all optional).
    #[serde(flatten)]
    pub labels: NewLabels,
}

/// `user_id` may be left out (with a user token it is the token's user),
/// but one that is given must say something: an empty one is refused here,
/// because after decoding it could not be told from one left out.
fn given_user_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id = String::deserialize(d)?;
    if id.is_empty() {
        return Err(serde::de::Error::custom(
            "user_id must not be empty: leave it out to submit as the token's user",
        ));
    }
    Ok(id)
}

fn user_id_schema() -> utoipa::openapi::schema::Object {
    text(
        MAX_USER_ID,
        "Who submits the job; with a user token it defaults to the token's user, and a member may name only themselves",
    )
}

fn model_name_schema() -> utoipa::openapi::schema::Object {
    text(MAX_MODEL_NAME, "Model to train, e.g. `yolo11n`")
}

fn framework_schema() -> utoipa::openapi::schema::Object {
    text(
        MAX_FRAMEWORK,
        "A registered framework (`GET /api/v1/training/frameworks`)",
    )
}

fn dataset_schema() -> utoipa::openapi::schema::Object {
    text(
        MAX_DATASET_URI,
        "Dataset location; with the dataset check on, it must hold data in the daemon's object store",
    )
}

impl CreateJob {
    /// Applies the seed's field rules, plus what a launch needs: no control
    /// characters in the text fields, and `config` an object (or null) of
    /// at most [`MAX_CONFIG_BYTES`]. A job that passes can be launched.
    pub fn validate(&self) -> Result<(), ValidationError> {
        required_plain_text("user_id", &self.user_id, MAX_USER_ID)?;
        required_plain_text("model_name", &self.model_name, MAX_MODEL_NAME)?;
        required_plain_text("framework", &self.framework, MAX_FRAMEWORK)?;
        required_plain_text("dataset_s3_uri", &self.dataset_s3_uri, MAX_DATASET_URI)?;
        self.sched.validate()?;
        self.labels.validate()?;
        match &self.config {
            None | Some(Value::Null) => Ok(()),
            Some(config @ Value::Object(_)) => {
                // The trainer sees exactly this text (see `runner::env`).
                let size = config.to_string().len();
                if size > MAX_CONFIG_BYTES {
                    return Err(ValidationError::new(
                        "config",
                        format!(
                            "is {size} bytes as JSON; at most {MAX_CONFIG_BYTES} bytes (64 KiB) are allowed, since trainers receive it in one environment variable; pass large settings as a file in the dataset or object store instead"
                        ),
                    ));
                }
                Ok(())
            }
            Some(_) => Err(ValidationError::new(
                "config",
                "must be a JSON object or null",
            )),
        }
    }

    /// The config to store: an explicit `null` is the same as no config.
    pub fn stored_config(&self) -> Option<&Value> {
        self.config.as_ref().filter(|v| !v.is_null())
    }
}

/// Default page size of the job list.
pub const DEFAULT_JOB_LIMIT: i64 = 50;
/// Largest page size of the job list.
pub const MAX_JOB_LIMIT: i64 = 1000;

/// Query of `GET /api/v1/training/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only this user's jobs.
    pub user_id: Option<String>,
    /// Only jobs in this status (alias `status`; empty: any).
    #[serde(alias = "status")]
    #[param(value_type = Option<String>, pattern = "^(pending|running|completed|failed|cancelled)?$")]
    pub status_filter: Option<String>,
    /// Page size, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Jobs to skip (≥ 0).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub offset: Option<i64>,
    /// Only jobs whose id starts with this (used by the CLI's prefix resolution).
    #[param(pattern = "^[0-9A-Fa-f-]{0,36}$")]
    pub id_prefix: Option<String>,
    /// Only the job with this number (≥ 1).
    #[param(minimum = 1)]
    pub number: Option<i64>,
    /// Only jobs in this queue (empty: any).
    #[param(pattern = "^([a-z0-9][a-z0-9._-]{0,63})?$")]
    pub queue: Option<String>,
    /// Only the jobs of this sweep.
    pub sweep: Option<Uuid>,
    /// `?tag=KEY=VALUE` filters (repeatable), read from the raw query by
    /// the handler and sent one by one by the client: a form-encoded query
    /// has no lists (described in the route's parameters).
    #[serde(skip)]
    pub tag: Vec<String>,
}

/// A validated [`JobListQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobFilter {
    /// Only this user's jobs.
    pub user_id: Option<String>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Lowercase id prefix.
    pub id_prefix: Option<String>,
    /// Only the job with this number.
    pub number: Option<i64>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Only the jobs of this sweep.
    pub sweep_id: Option<Uuid>,
    /// Only jobs carrying every one of these tags.
    pub tags: Vec<(String, String)>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

impl JobListQuery {
    /// Checks ranges and the status name.
    pub fn validate(&self) -> Result<JobFilter, ValidationError> {
        let limit = self.limit.unwrap_or(DEFAULT_JOB_LIMIT);
        if !(1..=MAX_JOB_LIMIT).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                format!("must be between 1 and {MAX_JOB_LIMIT}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ValidationError::new("offset", "must be 0 or more"));
        }
        let status = match self.status_filter.as_deref() {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<JobStatus>()
                    .map_err(|e| ValidationError::new("status_filter", e.to_string()))?,
            ),
        };
        let id_prefix = match self.id_prefix.as_deref() {
            None | Some("") => None,
            Some(p) if p.len() <= 36 && p.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
                Some(p.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(ValidationError::new(
                    "id_prefix",
                    "must be at most 36 hexadecimal digits and dashes",
                ))
            }
        };
        if self.number.is_some_and(|n| n < 1) {
            return Err(ValidationError::new("number", "must be 1 or more"));
        }
        let queue = self.queue.clone().filter(|q| !q.is_empty());
        if let Some(q) = &queue {
            super::sched::check_queue_name(q).map_err(|m| ValidationError::new("queue", m))?;
        }
        let tags = self
            .tag
            .iter()
            .map(|t| super::labels::parse_tag(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobFilter {
            queue,
            sweep_id: self.sweep,
            tags,
            user_id: self.user_id.clone().filter(|u| !u.is_empty()),
            status,
            id_prefix,
            number: self.number,
            limit,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CreateJob {
        CreateJob {
            user_id: "alice".into(),
            model_name: "yolo11n".into(),
            framework: "demo".into(),
            dataset_s3_uri: "s3://bucket/datasets/coco128/".into(),
            config: None,
            sched: Default::default(),
            labels: Default::default(),
        }
    }

    #[test]
    fn control_characters_are_refused_in_every_text_field() {
        assert!(body().validate().is_ok());
        for name in ["user_id", "model_name", "framework", "dataset_s3_uri"] {
            for bad in ["\0", "\u{1}", "\n", "\u{7f}"] {
                let mut b = body();
                let field = match name {
                    "user_id" => &mut b.user_id,
                    "model_name" => &mut b.model_name,
                    "framework" => &mut b.framework,
                    _ => &mut b.dataset_s3_uri,
                };
                field.push_str(bad);
                let e = b.validate().unwrap_err();
                assert_eq!(e.field, name, "{bad:?}");
            }
        }
    }

    #[test]
    fn a_user_id_may_be_left_out_but_not_given_empty() {
        let rest = r#""model_name":"m","framework":"demo","dataset_s3_uri":"s3://b/""#;
        let left_out: CreateJob = serde_json::from_str(&format!("{{{rest}}}")).unwrap();
        assert_eq!(left_out.user_id, "");
        let e =
            serde_json::from_str::<CreateJob>(&format!(r#"{{"user_id":"",{rest}}}"#)).unwrap_err();
        assert!(e.to_string().contains("user_id must not be empty"), "{e}");
        let given: CreateJob =
            serde_json::from_str(&format!(r#"{{"user_id":"bob",{rest}}}"#)).unwrap();
        assert_eq!(given.user_id, "bob");
    }

    #[test]
    fn config_is_limited_to_64_kib_of_json() {
        // {"k":"…"} is 8 bytes plus the string.
        let sized = |n: usize| serde_json::json!({ "k": "x".repeat(n - 8) });
        let mut b = body();
        b.config = Some(sized(MAX_CONFIG_BYTES));
        assert_eq!(
            b.config.as_ref().unwrap().to_string().len(),
            MAX_CONFIG_BYTES
        );
        assert!(b.validate().is_ok());
        b.config = Some(sized(MAX_CONFIG_BYTES + 1));
        let e = b.validate().unwrap_err();
        assert_eq!(e.field, "config");
        assert!(e.message.contains("65537 bytes"), "{e}");
    }
}
