//! Trainer callbacks: the seed's `TrainingUpdate` and the batch metric body.

use serde::{Deserialize, Serialize};
use serde_json::Number;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

use super::metric::{MetricPoint, MAX_METRIC_KEYS, MAX_METRIC_KEY_LEN};
use super::status::JobStatus;
use super::validate::{optional_integer, optional_text, ValidationError};

/// Longest `message`, in characters.
pub const MAX_MESSAGE: usize = 10_000;
/// Longest `error`, in characters.
pub const MAX_ERROR: usize = 65_536;
/// Longest `checkpoint_s3_uri`, in characters.
pub const MAX_URI: usize = 1024;
/// Most points in one batch request.
pub const MAX_BATCH_POINTS: usize = 1000;

/// Body of `POST /api/v1/training/jobs/{id}/callback`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrainingUpdate {
    /// Optional; when present it must equal the path id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Uuid>)]
    pub job_id: Option<String>,
    /// New status (a callback never sets `pending`).
    #[schema(value_type = ReportedStatus)]
    pub status: JobStatus,
    /// 0.0 … 1.0; omitted leaves the stored progress unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub progress: Option<f64>,
    /// Human-readable progress line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 10000)]
    pub message: Option<String>,
    /// Flat map of numbers; stores one metric point when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = nullable_point)]
    pub metrics: Option<BTreeMap<String, Number>>,
    /// Where the trainer stored its checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub checkpoint_s3_uri: Option<String>,
    /// Failure description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65536)]
    pub error: Option<String>,
    /// Increasing per job; one not above the last applied is acknowledged
    /// (`applied: false`), not applied.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_integer"
    )]
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    pub sequence: Option<i64>,
}

/// The statuses a callback may report (`pending` is refused with 422).
/// Documentation only: callbacks decode into [`JobStatus`].
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ReportedStatus {
    /// The trainer runs.
    Running,
    /// The trainer finished successfully.
    Completed,
    /// The trainer failed.
    Failed,
    /// The trainer gave up on a cancel.
    Cancelled,
}

/// The schema of one metric point as trainers send it: a flat map of
/// finite numbers, at most [`MAX_METRIC_KEYS`] names of 1–255 characters;
/// `epoch` and `step` are integers.
fn point() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let integer = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(i64::MIN))
            .maximum(Some(i64::MAX))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A flat map of finite numbers by name (at most 512 names of 1–255 characters); `epoch` and `step` are integers",
        ))
        .property("epoch", integer())
        .property("step", integer())
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::Number)))
        .max_properties(Some(MAX_METRIC_KEYS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_METRIC_KEY_LEN)),
        ))
        .build()
}

fn nullable_point() -> utoipa::openapi::schema::Object {
    let mut p = point();
    p.schema_type = utoipa::openapi::schema::SchemaType::from_iter([
        utoipa::openapi::schema::Type::Object,
        utoipa::openapi::schema::Type::Null,
    ]);
    p
}

/// A validated callback, ready for the lifecycle rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Target status (never `pending`).
    pub status: JobStatus,
    /// New progress, when given.
    pub progress: Option<f64>,
    /// New message, when given.
    pub message: Option<String>,
    /// Metric point to store, when given and non-empty.
    pub point: Option<MetricPoint>,
    /// New checkpoint URI, when given.
    pub checkpoint_s3_uri: Option<String>,
    /// New error, when given.
    pub error: Option<String>,
    /// Idempotency sequence, when given.
    pub sequence: Option<i64>,
}

impl TrainingUpdate {
    /// Checks the body against the path's job id and the SPEC's ranges.
    pub fn validate(self, path_id: Uuid) -> Result<Update, ValidationError> {
        if let Some(id) = &self.job_id {
            if Uuid::parse_str(id).ok() != Some(path_id) {
                return Err(ValidationError::new(
                    "job_id",
                    "must match the job id in the path",
                ));
            }
        }
        if self.status == JobStatus::Pending {
            return Err(ValidationError::new(
                "status",
                "a callback cannot set status pending",
            ));
        }
        if let Some(p) = self.progress {
            if !p.is_finite() || !(0.0..=1.0).contains(&p) {
                return Err(ValidationError::new(
                    "progress",
                    "must be between 0.0 and 1.0",
                ));
            }
        }
        optional_text("message", self.message.as_deref(), MAX_MESSAGE)?;
        optional_text("error", self.error.as_deref(), MAX_ERROR)?;
        optional_text(
            "checkpoint_s3_uri",
            self.checkpoint_s3_uri.as_deref(),
            MAX_URI,
        )?;
        validate_sequence(self.sequence)?;
        let point = match &self.metrics {
            Some(m) if !m.is_empty() => Some(MetricPoint::from_numbers("metrics", m)?),
            _ => None,
        };
        Ok(Update {
            status: self.status,
            progress: self.progress,
            message: self.message,
            point,
            checkpoint_s3_uri: self.checkpoint_s3_uri,
            error: self.error,
            sequence: self.sequence,
        })
    }
}

fn validate_sequence(sequence: Option<i64>) -> Result<(), ValidationError> {
    match sequence {
        Some(s) if s < 0 => Err(ValidationError::new("sequence", "must be 0 or more")),
        _ => Ok(()),
    }
}

/// Answer to an accepted callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallbackAck {
    /// Always `"ok"`.
    pub status: String,
    /// The job the callback was for.
    pub job_id: Uuid,
    /// Whether this callback changed the job: `false` when its `sequence`
    /// was not greater than one already applied (acknowledged, ignored).
    /// Servers from before this field always applied what they acknowledged.
    #[serde(default = "applied_by_default")]
    pub applied: bool,
}

fn applied_by_default() -> bool {
    true
}

/// Body of `POST /api/v1/training/jobs/{id}/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricBatch {
    /// Up to 1,000 flat maps of numbers, stored in order.
    #[schema(schema_with = points)]
    pub points: Vec<BTreeMap<String, Number>>,
    /// Optional idempotency sequence (same rule as callbacks).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_integer"
    )]
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    pub sequence: Option<i64>,
}

impl MetricBatch {
    /// Validates every point; one bad point rejects the whole batch.
    pub fn validate(&self) -> Result<Vec<MetricPoint>, ValidationError> {
        if self.points.len() > MAX_BATCH_POINTS {
            return Err(ValidationError::new(
                "points",
                format!("must hold at most {MAX_BATCH_POINTS} points"),
            ));
        }
        validate_sequence(self.sequence)?;
        self.points
            .iter()
            .enumerate()
            .map(|(i, p)| MetricPoint::from_numbers(&format!("points[{i}]"), p))
            .collect()
    }
}

fn points() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(point())
        .max_items(Some(MAX_BATCH_POINTS))
        .build()
}

/// Answer to an accepted metric batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchAck {
    /// Always `"ok"`.
    pub status: String,
    /// The job the points were for.
    pub job_id: Uuid,
    /// How many points were stored (0 for an already-applied sequence).
    pub stored: usize,
}
