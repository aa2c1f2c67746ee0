//! Webhooks: endpoints that receive signed JSON events when jobs change
//! status, and the record of each delivery. Wire types for the API and
//! the CLI.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::status::JobStatus;
use super::validate::ValidationError;

/// The event types a job emits: one per status it enters after `pending`.
pub const JOB_EVENTS: [&str; 4] = [
    "job.running",
    "job.completed",
    "job.failed",
    "job.cancelled",
];
/// The event `POST /api/v1/webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";
/// The longest webhook URL accepted.
pub const MAX_URL: usize = 2048;

/// The event type for a job entering `status` (`None` for `pending`).
pub fn job_event(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Pending => None,
        JobStatus::Running => Some(JOB_EVENTS[0]),
        JobStatus::Completed => Some(JOB_EVENTS[1]),
        JobStatus::Failed => Some(JOB_EVENTS[2]),
        JobStatus::Cancelled => Some(JOB_EVENTS[3]),
    }
}

/// How a delivery's body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"type", "timestamp", "data": <the job>}`.
    #[default]
    Json,
    /// A Slack incoming-webhook message: `{"text": "…"}`.
    Slack,
}

impl WebhookFormat {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            _ => None,
        }
    }
}

/// Body of `POST /api/v1/webhooks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateWebhook {
    /// Where events are POSTed (`http` or `https`, at most 2048 characters).
    /// Private, loopback and link-local targets are refused unless the
    /// daemon runs with `--webhook-allow-private`.
    #[schema(max_length = 2048, pattern = r"^\s*https?://[^\s/?#]+")]
    pub url: String,
    /// Only these event types (`job.running`, `job.completed`,
    /// `job.failed`, `job.cancelled`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Only jobs of these frameworks; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frameworks: Option<Vec<String>>,
    /// Only jobs of these users; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// Body shape: `json` (default) or `slack`.
    #[serde(default)]
    pub format: WebhookFormat,
}

impl CreateWebhook {
    /// Field rules that need no network (the target check is the daemon's).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let url = self.url.trim();
        let ok_scheme = url.starts_with("http://") || url.starts_with("https://");
        if url.is_empty() || url.len() > MAX_URL || !ok_scheme {
            return Err(ValidationError::new(
                "url",
                format!("must be an http:// or https:// URL of at most {MAX_URL} characters"),
            ));
        }
        if let Some(events) = &self.events {
            let known = |e: &String| JOB_EVENTS.contains(&e.as_str());
            if events.is_empty() || !events.iter().all(known) {
                return Err(ValidationError::new(
                    "events",
                    format!("must list one or more of {}", JOB_EVENTS.join(", ")),
                ));
            }
        }
        for (field, list) in [("frameworks", &self.frameworks), ("users", &self.users)] {
            if list
                .as_ref()
                .is_some_and(|l| l.is_empty() || l.iter().any(|x| x.is_empty()))
            {
                return Err(ValidationError::new(
                    field,
                    "must be a non-empty list of non-empty names, or absent for all",
                ));
            }
        }
        Ok(())
    }
}

/// What lists show of a webhook URL: scheme, host and port, and the
/// path's first segment when more follow; everything else (later
/// segments, query, fragment, user info) becomes `…`. Incoming-webhook
/// URLs (Slack's `https://hooks.slack.com/services/T…/B…/<token>`,
/// Discord's, Teams') carry their credential in the path, so a listed URL
/// is a secret unless it is cut; a lone segment may be the token itself,
/// so it is cut too.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let origin = format!("{scheme}://{host}");
    if tail.is_empty() || tail == "/" {
        return format!("{origin}{tail}");
    }
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [first, _, ..] => format!("{origin}/{first}/…"),
        _ => format!("{origin}/…"),
    }
}

/// A webhook endpoint as the API lists it: its secret is never shown
/// again after the create, only its first characters, and its URL only as
/// [`shown_url`] cuts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// Id (UUID v7).
    pub id: Uuid,
    /// Target URL. Lists and `GET` show only its scheme, host and the
    /// path's first segment (when more follow), the rest as `…`: URLs such
    /// as Slack's carry their secret in the path. The create's answer shows
    /// it in full, that once.
    pub url: String,
    /// Body shape.
    pub format: WebhookFormat,
    /// Event types sent (`null`: all).
    pub events: Option<Vec<String>>,
    /// Frameworks whose jobs are sent (`null`: all).
    pub frameworks: Option<Vec<String>>,
    /// Users whose jobs are sent (`null`: all).
    pub users: Option<Vec<String>>,
    /// `api` (managed over the API) or `config` (from `WEBHOOKS`; changed there).
    pub source: String,
    /// The first characters of the signing secret, to tell secrets apart.
    pub secret_prefix: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Answer of `POST /api/v1/webhooks`: the endpoint and, this once, its
/// signing secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The Standard Webhooks signing secret (`whsec_<base64>`): shown only
    /// here. Receivers verify `webhook-signature` with it.
    pub secret: String,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Id, increasing.
    pub id: i64,
    /// The `webhook-id` header: the same on every attempt (receivers dedupe on it).
    pub message_id: String,
    /// The endpoint.
    pub webhook_id: Uuid,
    /// The job, for job events.
    pub job_id: Option<Uuid>,
    /// Event type.
    pub event: String,
    /// `pending` (queued or retrying), `delivered` or `failed` (gave up).
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt, when it got one.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A stored endpoint with its secret (daemon side only; never serialised).
#[derive(Debug, Clone)]
pub struct WebhookRecord {
    /// The public part (`secret_prefix` derived from `secret`).
    pub webhook: Webhook,
    /// The signing secret, `whsec_<base64>`.
    pub secret: String,
}

/// A delivery claimed by a worker, with what sending it needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The delivery (its `attempts` already counts this attempt).
    pub delivery: Delivery,
    /// The event as stored: `{"type", "timestamp", "data"}`.
    pub payload: String,
    /// Target URL.
    pub url: String,
    /// Signing secret.
    pub secret: String,
    /// Body shape.
    pub format: WebhookFormat,
}

/// How one attempt ended ([`ClaimedDelivery`] → the database).
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Failed; try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// The answer's status, when there was one.
        status: Option<u16>,
        /// What went wrong, one line.
        error: String,
    },
    /// Failed for the last time.
    GaveUp {
        /// The answer's status, when there was one.
        status: Option<u16>,
        /// What went wrong, one line.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn listed_urls_keep_the_origin_and_the_first_segment_only() {
        for (url, shown) in [
            (
                "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
                "https://hooks.slack.com/services/…",
            ),
            (
                "https://discord.com/api/webhooks/123/tok",
                "https://discord.com/api/…",
            ),
            ("https://example.com/s3cr3t-token", "https://example.com/…"),
            (
                "http://127.0.0.1:9000/hook?key=abc",
                "http://127.0.0.1:9000/…",
            ),
            ("https://user:pw@example.com/a/b", "https://example.com/a/…"),
            ("https://example.com/", "https://example.com/"),
            ("https://example.com", "https://example.com"),
            ("https://example.com?token=x", "https://example.com/…"),
            ("http://[::1]:8080/a/b#frag", "http://[::1]:8080/a/…"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
    }
}
