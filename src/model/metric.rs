//! Metric points: what trainers report per epoch/step and what the metrics
//! endpoints return.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::validate::{integral, optional_text, ValidationError};

/// Most keys one metric point may carry.
pub const MAX_METRIC_KEYS: usize = 512;
/// Longest metric name, in characters.
pub const MAX_METRIC_KEY_LEN: usize = 255;

/// A stored metric point (seed `TrainingMetricResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metric {
    /// Increasing per daemon; use it with `after_id` for incremental reads.
    pub id: i64,
    /// The job that reported it.
    pub job_id: Uuid,
    /// Epoch (0 when the trainer did not say).
    pub epoch: i64,
    /// Step within the run, when reported.
    pub step: Option<i64>,
    /// `loss`, lifted from `metrics`.
    pub loss: Option<f64>,
    /// `accuracy`, lifted from `metrics`.
    pub accuracy: Option<f64>,
    /// Every reported number, by name.
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
    /// When the point was stored.
    pub created_at: DateTime<Utc>,
    /// The attempt of the job that reported it (1 before retries existed).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

/// A validated metric point, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Epoch, default 0.
    pub epoch: i64,
    /// Step, when present.
    pub step: Option<i64>,
    /// Loss, when present.
    pub loss: Option<f64>,
    /// Accuracy, when present.
    pub accuracy: Option<f64>,
    /// The whole map as reported.
    pub metrics: Map<String, Value>,
}

impl MetricPoint {
    /// Lifts `epoch`, `step`, `loss` and `accuracy` out of a flat map of numbers.
    ///
    /// `field` names the map in errors (`metrics`, `points[3]`).
    pub fn from_numbers(
        field: &str,
        numbers: &std::collections::BTreeMap<String, Number>,
    ) -> Result<Self, ValidationError> {
        if numbers.len() > MAX_METRIC_KEYS {
            return Err(ValidationError::new(
                field,
                format!("must have at most {MAX_METRIC_KEYS} keys"),
            ));
        }
        // The dotted name is built only for an error: this runs on every
        // callback, for every key.
        let at = |key: &str, e: ValidationError| {
            ValidationError::new(format!("{field}.{key}"), e.message)
        };
        let mut metrics = Map::new();
        for (key, n) in numbers {
            if key.is_empty() {
                return Err(ValidationError::new(
                    field,
                    "metric names must not be empty",
                ));
            }
            optional_text("", Some(key), MAX_METRIC_KEY_LEN).map_err(|e| at(key, e))?;
            if n.as_f64().is_none_or(|f| !f.is_finite()) {
                return Err(ValidationError::new(
                    format!("{field}.{key}"),
                    "must be a finite number",
                ));
            }
            metrics.insert(key.clone(), Value::Number(n.clone()));
        }
        let int = |name: &str| -> Result<Option<i64>, ValidationError> {
            numbers
                .get(name)
                .map(|n| integral("", n).map_err(|e| at(name, e)))
                .transpose()
        };
        let float = |name: &str| numbers.get(name).and_then(Number::as_f64);
        Ok(Self {
            epoch: int("epoch")?.unwrap_or(0),
            step: int("step")?,
            loss: float("loss"),
            accuracy: float("accuracy"),
            metrics,
        })
    }
}

/// Default page size of the metrics query.
pub const DEFAULT_METRIC_LIMIT: i64 = 100;
/// Largest page size of the metrics query.
pub const MAX_METRIC_LIMIT: i64 = 10_000;

/// Sort order of metric points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the seed's order).
    #[default]
    Desc,
}

/// Query of `GET /api/v1/training/jobs/{id}/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricQuery {
    /// Page size, 1–10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
    /// `desc` (default, newest first) or `asc`; empty: the default.
    #[param(value_type = Option<String>, pattern = "^(asc|desc)?$")]
    pub order: Option<String>,
    /// Only points with an id greater than this (≥ 0).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub after_id: Option<i64>,
    /// Downsample the whole history (after `after_id`) to at most this many
    /// points, 2–10000, keeping first, last and extremes; replaces `limit`.
    #[param(minimum = 2, maximum = 10000)]
    pub max_points: Option<i64>,
    /// `true`: the job's system metrics (GPU telemetry, keys
    /// `system/gpu<N>/…`) instead of its training metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<bool>,
}

/// A validated [`MetricQuery`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricFilter {
    /// Page size.
    pub limit: i64,
    /// Sort order.
    pub order: Order,
    /// Exclusive lower bound on ids.
    pub after_id: Option<i64>,
    /// Downsampling target.
    pub max_points: Option<i64>,
    /// System metrics (GPU telemetry) instead of training metrics.
    pub system: bool,
}

impl MetricQuery {
    /// Checks ranges and the order name.
    pub fn validate(&self) -> Result<MetricFilter, ValidationError> {
        let limit = self.limit.unwrap_or(DEFAULT_METRIC_LIMIT);
        if !(1..=MAX_METRIC_LIMIT).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                format!("must be between 1 and {MAX_METRIC_LIMIT}"),
            ));
        }
        let order = match self.order.as_deref() {
            None | Some("") | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(_) => return Err(ValidationError::new("order", "must be asc or desc")),
        };
        if self.after_id.is_some_and(|a| a < 0) {
            return Err(ValidationError::new("after_id", "must be 0 or more"));
        }
        if self
            .max_points
            .is_some_and(|m| !(2..=MAX_METRIC_LIMIT).contains(&m))
        {
            return Err(ValidationError::new(
                "max_points",
                format!("must be between 2 and {MAX_METRIC_LIMIT}"),
            ));
        }
        Ok(MetricFilter {
            limit,
            order,
            after_id: self.after_id,
            max_points: self.max_points,
            system: self.system.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn numbers(json: &str) -> BTreeMap<String, Number> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn lifts_known_columns() {
        let p = MetricPoint::from_numbers(
            "metrics",
            &numbers(r#"{"epoch": 3, "step": 40, "loss": 0.5, "mAP50": 0.7}"#),
        )
        .unwrap();
        assert_eq!(
            (p.epoch, p.step, p.loss, p.accuracy),
            (3, Some(40), Some(0.5), None)
        );
        assert_eq!(p.metrics.len(), 4);
    }

    #[test]
    fn epoch_defaults_to_zero_and_must_be_integral() {
        assert_eq!(
            MetricPoint::from_numbers("m", &numbers(r#"{"loss": 1}"#))
                .unwrap()
                .epoch,
            0
        );
        let err = MetricPoint::from_numbers("m", &numbers(r#"{"epoch": 1.5}"#)).unwrap_err();
        assert_eq!(err.field, "m.epoch");
    }
}
