//! What both backends share about webhooks: the bodies of events as they
//! are stored in the outbox (fixed when the event happens, so every
//! attempt sends and signs the same bytes), and what lists show of a
//! secret.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::DbError;
use crate::model::Job;

/// `{"type", "timestamp", "data"}`.
fn payload(event: &str, at: &DateTime<Utc>, data: serde_json::Value) -> String {
    serde_json::json!({"type": event, "timestamp": at, "data": data}).to_string()
}

/// The body of a job event: the job as it is after the change.
pub(super) fn job_payload(job: &Job, event: &str, at: &DateTime<Utc>) -> Result<String, DbError> {
    let data = serde_json::to_value(job).map_err(|e| DbError::Corrupt(e.to_string()))?;
    Ok(payload(event, at, data))
}

/// The body of a test event for endpoint `id`.
pub(super) fn test_payload(id: Uuid, event: &str, at: &DateTime<Utc>) -> String {
    let data = serde_json::json!({"webhook_id": id, "message": "a test event from platform"});
    payload(event, at, data)
}

/// The first characters of a secret, safe to show.
pub(super) fn secret_prefix(secret: &str) -> String {
    format!("{}…", secret.chars().take(10).collect::<String>())
}
