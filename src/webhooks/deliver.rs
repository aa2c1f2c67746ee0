//! The delivery worker: claims due deliveries, sends each (signed, with a
//! timeout, no redirects, to a checked address) and records the attempt.
//!
//! It reads before it writes: a wake-up (a job's change of status, a test,
//! a timer) first asks a reader when the next delivery is due, and only
//! claims, which is a write, when one is. Callbacks publish a job event for
//! every progress update, but only a change of status can queue a
//! delivery, so the worker remembers each live job's last status and lets
//! the other events pass without a read: a busy callback path costs it
//! nothing, and the writer sees a claim only when there is work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{sign, target, Webhooks};
use crate::events::Event;
use crate::model::webhook::{AttemptOutcome, ClaimedDelivery, WebhookFormat};
use crate::model::JobStatus;

/// Most attempts in flight at once.
const IN_FLIGHT: usize = 32;
/// How often the worker looks for due work when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// Longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(4 * 3600);
/// Most characters of an error kept per attempt.
const MAX_ERROR: usize = 300;

/// Runs until `shutdown`: delivers what is due, waking on job events, on
/// tests and on a one-second tick.
pub async fn run(
    hooks: Arc<Webhooks>,
    mut events: broadcast::Receiver<Event>,
    shutdown: CancellationToken,
) {
    let worker = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7());
    let mut sends: JoinSet<()> = JoinSet::new();
    let mut statuses = LastStatus::default();
    // An interval, not a sleep per turn: under a stream of events a fresh
    // sleep would never fire, and due retries would wait for a status change.
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = true;
    loop {
        if look && sends.len() < IN_FLIGHT && due(&hooks).await {
            let room = (IN_FLIGHT - sends.len()) as i64;
            let lease = hooks.cfg.timeout + Duration::from_secs(30);
            match hooks.db.claim_deliveries(&worker, lease, room).await {
                Ok(claimed) => {
                    for d in claimed {
                        let (hooks, worker) = (hooks.clone(), worker.clone());
                        sends.spawn(async move { attempt(&hooks, &worker, d).await });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries"),
            }
        }
        // Whether this wake-up is worth a read of the outbox.
        look = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = sends.join_next(), if !sends.is_empty() => true,
            _ = hooks.wake.notified() => true,
            e = events.recv() => match e {
                Ok(Event::Job(job)) => statuses.changed(job.id, job.status),
                // Another replica's worker sends what its commits queued;
                // a resync may follow missed changes of any kind.
                Ok(Event::Resync) => true,
                Ok(_) => false,
                // Missed events may have held a change of status.
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => true,
        };
    }
    // Attempts in flight end with the daemon; their claims lapse and the
    // next start sends them again (receivers dedupe on webhook-id).
    sends.abort_all();
}

/// The last status seen of each live job.
#[derive(Default)]
struct LastStatus(HashMap<uuid::Uuid, JobStatus>);

impl LastStatus {
    /// Whether `status` is news for job `id` that can have queued a
    /// delivery: a change to anything but `pending` (a job's first event
    /// after a start counts as one). Ended jobs are forgotten.
    fn changed(&mut self, id: uuid::Uuid, status: JobStatus) -> bool {
        let before = match status.is_terminal() {
            true => self.0.remove(&id),
            false => self.0.insert(id, status),
        };
        before != Some(status) && status != JobStatus::Pending
    }
}

/// Whether some pending delivery is due now (a read).
async fn due(hooks: &Webhooks) -> bool {
    match hooks.db.next_delivery_due().await {
        Ok(Some(at)) => at <= crate::db::now(),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read pending webhook deliveries");
            false
        }
    }
}

/// One attempt, recorded.
async fn attempt(hooks: &Webhooks, worker: &str, d: ClaimedDelivery) {
    let id = d.delivery.id;
    let outcome = match send(hooks, &d).await {
        Ok(status) if (200..300).contains(&status) => AttemptOutcome::Delivered { status },
        Ok(status) => retry_or_give_up(
            hooks,
            &d,
            Some(status),
            format!("the receiver answered {status}"),
        ),
        Err(error) => retry_or_give_up(hooks, &d, None, error),
    };
    if let AttemptOutcome::GaveUp { error, .. } = &outcome {
        tracing::warn!(delivery = id, webhook = %d.delivery.webhook_id, error = %error, "webhook delivery given up");
    }
    if let Err(e) = hooks.db.finish_delivery(id, worker, outcome).await {
        tracing::warn!(delivery = id, error = %e, "cannot record a webhook attempt");
    }
}

fn retry_or_give_up(
    hooks: &Webhooks,
    d: &ClaimedDelivery,
    status: Option<u16>,
    error: String,
) -> AttemptOutcome {
    let error: String = error.chars().take(MAX_ERROR).collect();
    let delay = backoff(hooks.cfg.retry_base, d.delivery.attempts);
    let at = crate::db::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    let deadline = d.delivery.created_at
        + chrono::Duration::from_std(hooks.cfg.max_age).unwrap_or(chrono::Duration::MAX);
    if at > deadline {
        AttemptOutcome::GaveUp { status, error }
    } else {
        AttemptOutcome::Retry { at, status, error }
    }
}

/// The delay after the `attempts`-th failure: base, ×4 each time, capped.
pub fn backoff(base: Duration, attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    base.saturating_mul(4u32.saturating_pow(exp)).min(MAX_DELAY)
}

/// Sends one delivery: the answer's status, or why there was none.
async fn send(hooks: &Webhooks, d: &ClaimedDelivery) -> Result<u16, String> {
    let target = target::check(&d.url, hooks.cfg.allow_private)
        .await
        .map_err(|e| e.to_string())?;
    let body = render(d.format, &d.payload)?;
    let timestamp = Utc::now().timestamp();
    let signature = sign::signature(
        &d.secret,
        &d.delivery.message_id,
        timestamp,
        body.as_bytes(),
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(hooks.cfg.timeout)
        .resolve(&target.host, target.addr)
        .user_agent(concat!("platform-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let resp = client
        .post(target.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.delivery.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| crate::errors::root_cause(&e.without_url()))?;
    Ok(resp.status().as_u16())
}

/// The body for `format`, from the stored event.
fn render(format: WebhookFormat, payload: &str) -> Result<String, String> {
    match format {
        WebhookFormat::Json => Ok(payload.to_string()),
        WebhookFormat::Slack => {
            let v: serde_json::Value = serde_json::from_str(payload)
                .map_err(|e| format!("stored event is not JSON: {e}"))?;
            Ok(serde_json::json!({ "text": slack_text(&v) }).to_string())
        }
    }
}

/// One line a person reads in a Slack channel.
fn slack_text(event: &serde_json::Value) -> String {
    let data = &event["data"];
    let kind = event["type"].as_str().unwrap_or("event");
    match data["id"].as_str() {
        Some(id) => {
            let mut text = format!(
                "Job #{} ({}) {}: {} on {} for {}",
                data["number"],
                id,
                data["status"].as_str().unwrap_or("changed"),
                data["model_name"].as_str().unwrap_or("?"),
                data["framework"].as_str().unwrap_or("?"),
                data["user_id"].as_str().unwrap_or("?"),
            );
            if let Some(error) = data["error"].as_str() {
                text.push_str(&format!(" — {error}"));
            }
            text
        }
        None => format!("platform: {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_status_is_worth_a_look() {
        let mut seen = LastStatus::default();
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        assert!(!seen.changed(a, JobStatus::Pending));
        assert!(seen.changed(a, JobStatus::Running));
        // Progress updates of a running job.
        assert!(!seen.changed(a, JobStatus::Running));
        assert!(!seen.changed(a, JobStatus::Running));
        assert!(seen.changed(b, JobStatus::Running), "another job");
        // A retry puts the job back to pending, then running again.
        assert!(!seen.changed(a, JobStatus::Pending));
        assert!(seen.changed(a, JobStatus::Running));
        assert!(seen.changed(a, JobStatus::Completed));
        assert!(!seen.0.contains_key(&a), "ended jobs are forgotten");
    }

    #[test]
    fn backoff_grows_fourfold_up_to_a_cap() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 2), Duration::from_secs(20));
        assert_eq!(backoff(base, 3), Duration::from_secs(80));
        assert_eq!(backoff(base, 40), MAX_DELAY);
    }

    #[test]
    fn slack_messages_are_one_readable_line() {
        let event = serde_json::json!({"type": "job.failed", "data": {
            "id": "0190", "number": 7, "status": "failed", "model_name": "yolo11n",
            "framework": "ultralytics", "user_id": "alice", "error": "out of memory"}});
        let body = render(WebhookFormat::Slack, &event.to_string()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["text"],
            "Job #7 (0190) failed: yolo11n on ultralytics for alice — out of memory"
        );
    }
}
