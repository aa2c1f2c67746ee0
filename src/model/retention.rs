//! Retention (issue 17): what `platform prune` and the automatic policy ask
//! for, what they answer, and what a job says about what was removed from
//! it. The job row itself always stays: its status, config and attempts
//! are kept, so `job get` and lists keep working; only its metric history
//! (downsampled or deleted), its archived log and, when asked for
//! separately, its artifacts go.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::validate::ValidationError;

/// Points per series a downsampled history keeps when nothing else is said.
pub const DEFAULT_MAX_POINTS: u32 = 1000;
/// The fewest points a downsampled history may keep (first and last).
pub const MIN_MAX_POINTS: u32 = 2;
/// The most points a downsampled history may keep (the read limit).
pub const MAX_MAX_POINTS: u32 = 10_000;
/// The longest age a prune can name: a century, in days.
pub const MAX_DAYS: f64 = 36_500.0;

/// What a prune does with the metric history (training points and GPU
/// telemetry) of the jobs it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricsRetention {
    /// Keep at most `max_points` points per series: the first, the last
    /// and each stretch's extremes (what `?max_points=` draws), so the
    /// curve looks the same.
    #[default]
    Downsample,
    /// Delete every point.
    Delete,
    /// Leave the history as it is (prune only logs or artifacts).
    Keep,
}

/// Body of `POST /api/v1/prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PruneRequest {
    /// Touch only jobs that ended (completed, failed or cancelled) more
    /// than this many days ago (fractions allowed, 0 to 36500).
    #[schema(minimum = 0, maximum = 36500)]
    pub older_than_days: f64,
    /// What happens to their metric history.
    #[serde(default)]
    pub metrics: MetricsRetention,
    /// With `downsample`: points kept per series (2 to 10000, default 1000).
    #[serde(default)]
    #[schema(minimum = 2, maximum = 10000)]
    pub max_points: Option<u32>,
    /// Also delete their archived trainer logs.
    #[serde(default)]
    pub logs: bool,
    /// Also delete their artifacts (`jobs/<id>/outputs/`): checkpoints and
    /// exports are gone for good, so this is never implied.
    #[serde(default)]
    pub artifacts: bool,
    /// Only count what would go; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A checked [`PruneRequest`]: what to remove from each old job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrunePlan {
    /// Jobs that ended before this are touched.
    pub cutoff: DateTime<Utc>,
    /// Points kept per series: `Some(0)` deletes the history, `None`
    /// leaves it.
    pub keep_points: Option<u32>,
    /// Delete archived logs.
    pub logs: bool,
    /// Delete artifacts.
    pub artifacts: bool,
    /// Change nothing.
    pub dry_run: bool,
}

impl PrunePlan {
    /// Whether the plan removes anything at all.
    pub fn removes_anything(&self) -> bool {
        self.keep_points.is_some() || self.logs || self.artifacts
    }
}

impl PruneRequest {
    /// Checks ranges; `now` fixes the cut-off.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<PrunePlan, ValidationError> {
        let days = self.older_than_days;
        if !days.is_finite() || !(0.0..=MAX_DAYS).contains(&days) {
            return Err(ValidationError::new(
                "older_than_days",
                format!("must be a number of days between 0 and {MAX_DAYS}"),
            ));
        }
        if let Some(n) = self.max_points {
            if !(MIN_MAX_POINTS..=MAX_MAX_POINTS).contains(&n) {
                return Err(ValidationError::new(
                    "max_points",
                    format!("must be between {MIN_MAX_POINTS} and {MAX_MAX_POINTS}"),
                ));
            }
            if self.metrics != MetricsRetention::Downsample {
                return Err(ValidationError::new(
                    "max_points",
                    "applies only to \"metrics\": \"downsample\"",
                ));
            }
        }
        let keep_points = match self.metrics {
            MetricsRetention::Downsample => Some(self.max_points.unwrap_or(DEFAULT_MAX_POINTS)),
            MetricsRetention::Delete => Some(0),
            MetricsRetention::Keep => None,
        };
        // Whole microseconds, as the database stores them.
        let age = chrono::Duration::microseconds((days * 86_400e6).round() as i64);
        Ok(PrunePlan {
            cutoff: now - age,
            keep_points,
            logs: self.logs,
            artifacts: self.artifacts,
            dry_run: self.dry_run,
        })
    }
}

/// What a prune removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PruneReport {
    /// Nothing was changed: the numbers say what a real run would remove.
    pub dry_run: bool,
    /// Jobs that ended before this were considered.
    pub cutoff: DateTime<Utc>,
    /// Jobs something was removed from (in a dry run: would be).
    pub jobs: u64,
    /// Training metric points deleted.
    pub points_deleted: u64,
    /// System metric points (GPU telemetry) deleted.
    pub system_points_deleted: u64,
    /// Archived trainer logs deleted.
    pub logs_deleted: u64,
    /// Their size in bytes.
    pub log_bytes: u64,
    /// Artifact objects deleted.
    pub artifacts_deleted: u64,
    /// Their size in bytes.
    pub artifact_bytes: u64,
    /// Bytes of the SQLite file given back to the file system (incremental
    /// vacuum). 0 on PostgreSQL, whose autovacuum reclaims space by itself;
    /// null for a SQLite file created before auto-vacuum (run
    /// `platform db vacuum` once, with the daemon stopped).
    pub reclaimed_bytes: Option<u64>,
    /// The run stopped early (the daemon is shutting down); what it did
    /// stays done, and the next run carries on.
    pub interrupted: bool,
    /// Jobs that could not be pruned, each with why (at most 20 are
    /// listed); they are tried again by the next run.
    pub errors: Vec<String>,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// What retention removed from a job ([`super::Job::pruned`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pruned {
    /// When a prune last removed something from it.
    pub at: DateTime<Utc>,
    /// Its metric history now keeps at most this many points per series
    /// (0: deleted); null when it is whole.
    pub max_points: Option<u32>,
    /// Its archived trainer log was deleted.
    pub logs: bool,
    /// Its artifacts were deleted.
    pub artifacts: bool,
}

impl Pruned {
    /// One line for people: what is gone.
    pub fn describe(&self) -> String {
        let mut gone = Vec::new();
        match self.max_points {
            Some(0) => gone.push("metrics deleted".to_string()),
            Some(n) => gone.push(format!("metrics downsampled to {n} points")),
            None => {}
        }
        if self.logs {
            gone.push("logs deleted".into());
        }
        if self.artifacts {
            gone.push("artifacts deleted".into());
        }
        if gone.is_empty() {
            gone.push("nothing removed".into());
        }
        gone.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(days: f64) -> PruneRequest {
        PruneRequest {
            older_than_days: days,
            metrics: MetricsRetention::Downsample,
            max_points: None,
            logs: false,
            artifacts: false,
            dry_run: false,
        }
    }

    #[test]
    fn defaults_downsample_to_a_thousand_points() {
        let r: PruneRequest = serde_json::from_str(r#"{"older_than_days": 30}"#).unwrap();
        let now = Utc::now();
        let plan = r.validate(now).unwrap();
        assert_eq!(plan.keep_points, Some(DEFAULT_MAX_POINTS));
        assert_eq!(plan.cutoff, now - chrono::Duration::days(30));
        assert!(!plan.logs && !plan.artifacts && !plan.dry_run);
    }

    #[test]
    fn bounds_are_checked() {
        let now = Utc::now();
        for bad in [-1.0, MAX_DAYS + 1.0, f64::NAN] {
            assert_eq!(req(bad).validate(now).unwrap_err().field, "older_than_days");
        }
        let mut r = req(1.5);
        r.max_points = Some(1);
        assert_eq!(r.validate(now).unwrap_err().field, "max_points");
        r.max_points = Some(10);
        r.metrics = MetricsRetention::Delete;
        assert_eq!(r.validate(now).unwrap_err().field, "max_points");
        r.max_points = None;
        assert_eq!(r.validate(now).unwrap().keep_points, Some(0));
        r.metrics = MetricsRetention::Keep;
        let plan = r.validate(now).unwrap();
        assert!(!plan.removes_anything());
        assert_eq!(plan.cutoff, now - chrono::Duration::hours(36));
    }

    #[test]
    fn marks_describe_what_is_gone() {
        let p = Pruned {
            at: Utc::now(),
            max_points: Some(500),
            logs: true,
            artifacts: false,
        };
        assert_eq!(
            p.describe(),
            "metrics downsampled to 500 points, logs deleted"
        );
    }
}
