//! Queries on `webhooks` and `webhook_deliveries` (the outbox).
//!
//! Deliveries are written in the transaction that changes a job's status
//! ([`enqueue_job_event`]), claimed by a worker with a lease
//! ([`claim`]: the shape of PostgreSQL's `FOR UPDATE SKIP LOCKED`; on
//! SQLite the one writer makes the claim atomic), and finished only by the
//! worker that holds the claim ([`finish`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::db::webhook::{job_payload, secret_prefix, test_payload};
use crate::db::{parse_ts, ts, DbError};
use crate::model::webhook::{
    AttemptOutcome, ClaimedDelivery, Delivery, Webhook, WebhookFormat, WebhookRecord,
};
use crate::model::Job;

const HOOK_COLUMNS: &str = "id, url, secret, format, events, frameworks, users, source, created_at";
const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.webhook_id, d.job_id, d.event, d.state, \
     d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.finished_at";

fn corrupt(e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(e.to_string())
}

fn list_column(s: Option<String>) -> Result<Option<Vec<String>>, DbError> {
    s.as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(corrupt)
}

fn list_text(l: &Option<Vec<String>>) -> Option<String> {
    l.as_ref()
        .map(|l| serde_json::Value::from(l.clone()).to_string())
}

fn hook_from_row(r: &Row<'_>) -> Result<WebhookRecord, DbError> {
    let secret: String = r.get(2)?;
    let format: String = r.get(3)?;
    Ok(WebhookRecord {
        webhook: Webhook {
            id: Uuid::parse_str(&r.get::<_, String>(0)?).map_err(corrupt)?,
            url: r.get(1)?,
            format: WebhookFormat::parse(&format)
                .ok_or_else(|| corrupt(format!("webhook format {format:?}")))?,
            events: list_column(r.get(4)?)?,
            frameworks: list_column(r.get(5)?)?,
            users: list_column(r.get(6)?)?,
            source: r.get(7)?,
            secret_prefix: secret_prefix(&secret),
            created_at: parse_ts(&r.get::<_, String>(8)?)?,
        },
        secret,
    })
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, DbError> {
    s.as_deref().map(parse_ts).transpose()
}

fn delivery_from_row(r: &Row<'_>) -> Result<Delivery, DbError> {
    let state: String = r.get(5)?;
    let next: String = r.get(7)?;
    let job: Option<String> = r.get(3)?;
    Ok(Delivery {
        id: r.get(0)?,
        message_id: r.get(1)?,
        webhook_id: Uuid::parse_str(&r.get::<_, String>(2)?).map_err(corrupt)?,
        job_id: job
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(corrupt)?,
        event: r.get(4)?,
        next_attempt_at: (state == "pending").then(|| parse_ts(&next)).transpose()?,
        state,
        attempts: r.get(6)?,
        last_status: r.get(8)?,
        last_error: r.get(9)?,
        created_at: parse_ts(&r.get::<_, String>(10)?)?,
        finished_at: opt_ts(r.get(11)?)?,
    })
}

/// Stores an endpoint.
pub fn insert(c: &Connection, rec: &WebhookRecord) -> Result<(), DbError> {
    let w = &rec.webhook;
    c.prepare_cached(&format!(
        "INSERT INTO webhooks ({HOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        w.id.to_string(),
        w.url,
        rec.secret,
        w.format.as_str(),
        list_text(&w.events),
        list_text(&w.frameworks),
        list_text(&w.users),
        w.source,
        ts(&w.created_at),
    ])?;
    Ok(())
}

/// Every endpoint, oldest first.
pub fn list(c: &Connection) -> Result<Vec<WebhookRecord>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {HOOK_COLUMNS} FROM webhooks ORDER BY created_at, id"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(hook_from_row(r)?);
    }
    Ok(out)
}

/// One endpoint.
pub fn get(c: &Connection, id: Uuid) -> Result<Option<WebhookRecord>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = ?1"
    ))?;
    stmt.query_row([id.to_string()], |r| Ok(hook_from_row(r)))
        .optional()?
        .transpose()
}

/// Removes an endpoint and its deliveries; whether it existed.
pub fn delete(c: &Connection, id: Uuid) -> Result<bool, DbError> {
    Ok(c.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
        .execute([id.to_string()])?
        > 0)
}

/// Removes the endpoints of `source` (config reloads replace them).
/// Makes `recs` the endpoints of `source`. An endpoint whose URL is still
/// there keeps its id and its pending deliveries (a restart re-reads the
/// configuration; deleting and re-adding would drop them), taking the new
/// secret, format and filters; the others are removed with their
/// deliveries.
pub fn replace_source(c: &Connection, source: &str, recs: &[WebhookRecord]) -> Result<(), DbError> {
    let mut kept = Vec::with_capacity(recs.len());
    for rec in recs {
        let w = &rec.webhook;
        let existing: Option<String> = c
            .prepare_cached("SELECT id FROM webhooks WHERE source = ?1 AND url = ?2")?
            .query_row(params![source, w.url], |r| r.get(0))
            .optional()?;
        match existing {
            Some(id) => {
                c.prepare_cached(
                    "UPDATE webhooks SET secret = ?2, format = ?3, events = ?4, frameworks = ?5, \
                     users = ?6 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    rec.secret,
                    w.format.as_str(),
                    list_text(&w.events),
                    list_text(&w.frameworks),
                    list_text(&w.users),
                ])?;
                kept.push(id);
            }
            None => {
                insert(c, rec)?;
                kept.push(w.id.to_string());
            }
        }
    }
    let kept = serde_json::Value::from(kept).to_string();
    c.prepare_cached(
        "DELETE FROM webhooks WHERE source = ?1 AND id NOT IN (SELECT value FROM json_each(?2))",
    )?
    .execute(params![source, kept])?;
    Ok(())
}

/// Queues `event` for `job` to every endpoint whose filters take it, in
/// the caller's transaction (one statement; no endpoint, no row).
pub fn enqueue_job_event(
    c: &Connection,
    job: &Job,
    event: &str,
    now: &DateTime<Utc>,
) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO webhook_deliveries (message_id, webhook_id, job_id, event, payload, state, \
         next_attempt_at, created_at) \
         SELECT 'msg_' || lower(hex(randomblob(12))), w.id, ?1, ?2, ?3, 'pending', ?4, ?4 \
         FROM webhooks w \
         WHERE (w.events IS NULL OR EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = ?2)) \
         AND (w.frameworks IS NULL OR EXISTS (SELECT 1 FROM json_each(w.frameworks) WHERE value = ?5)) \
         AND (w.users IS NULL OR EXISTS (SELECT 1 FROM json_each(w.users) WHERE value = ?6))",
    )?
    .execute(params![
        job.id.to_string(),
        event,
        job_payload(job, event, now)?,
        ts(now),
        job.framework,
        job.user_id,
    ])?;
    Ok(())
}

/// Queues a test event to endpoint `id`; the delivery, or `None` when
/// there is no such endpoint.
pub fn enqueue_test(
    c: &Connection,
    id: Uuid,
    event: &str,
    now: &DateTime<Utc>,
) -> Result<Option<Delivery>, DbError> {
    if get(c, id)?.is_none() {
        return Ok(None);
    }
    let row: i64 = c
        .prepare_cached(
            "INSERT INTO webhook_deliveries (message_id, webhook_id, event, payload, state, \
             next_attempt_at, created_at) \
             VALUES ('msg_' || lower(hex(randomblob(12))), ?1, ?2, ?3, 'pending', ?4, ?4) RETURNING id",
        )?
        .query_row(
            params![id.to_string(), event, test_payload(id, event, now), ts(now)],
            |r| r.get(0),
        )?;
    delivery(c, row)
}

fn delivery(c: &Connection, id: i64) -> Result<Option<Delivery>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = ?1"
    ))?;
    stmt.query_row([id], |r| Ok(delivery_from_row(r)))
        .optional()?
        .transpose()
}

/// Claims up to `limit` due deliveries for `worker` until `lease_until`:
/// pending, due, and not held by a live claim. Counts the attempt.
pub fn claim(
    c: &Connection,
    worker: &str,
    now: &DateTime<Utc>,
    lease_until: &DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>, DbError> {
    let ids: Vec<i64> = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET claimed_by = ?1, claim_expires_at = ?2, \
             attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                WHERE state = 'pending' AND next_attempt_at <= ?3 \
                AND (claim_expires_at IS NULL OR claim_expires_at < ?3) \
                ORDER BY next_attempt_at, id LIMIT ?4) \
             RETURNING id",
        )?
        .query_map(params![worker, ts(lease_until), ts(now), limit], |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS}, d.payload, w.url, w.secret, w.format \
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ?1"
    ))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let claimed = stmt
            .query_row([id], |r| {
                Ok(delivery_from_row(r).and_then(|delivery| {
                    let format: String = r.get(15)?;
                    Ok(ClaimedDelivery {
                        delivery,
                        payload: r.get(12)?,
                        url: r.get(13)?,
                        secret: r.get(14)?,
                        format: WebhookFormat::parse(&format)
                            .ok_or_else(|| corrupt(format!("webhook format {format:?}")))?,
                    })
                }))
            })
            .optional()?;
        if let Some(claimed) = claimed {
            out.push(claimed?);
        }
    }
    Ok(out)
}

/// Records an attempt's outcome, if `worker` still holds the claim
/// (otherwise another worker took the delivery over; nothing changes).
pub fn finish(
    c: &Connection,
    id: i64,
    worker: &str,
    outcome: &AttemptOutcome,
    now: &DateTime<Utc>,
) -> Result<(), DbError> {
    let (state, next, status, error) = match outcome {
        AttemptOutcome::Delivered { status } => ("delivered", None, Some(*status), None),
        AttemptOutcome::Retry { at, status, error } => {
            ("pending", Some(ts(at)), *status, Some(error.as_str()))
        }
        AttemptOutcome::GaveUp { status, error } => ("failed", None, *status, Some(error.as_str())),
    };
    let finished = (state != "pending").then(|| ts(now));
    c.prepare_cached(
        "UPDATE webhook_deliveries SET state = ?3, next_attempt_at = COALESCE(?4, next_attempt_at), \
         last_status = ?5, last_error = ?6, finished_at = ?7, claimed_by = NULL, \
         claim_expires_at = NULL WHERE id = ?1 AND claimed_by = ?2",
    )?
    .execute(params![id, worker, state, next, status, error, finished])?;
    Ok(())
}

/// The latest deliveries of endpoint `id`, newest first.
pub fn deliveries(c: &Connection, id: Uuid, limit: i64) -> Result<Vec<Delivery>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.webhook_id = ?1 \
         ORDER BY d.id DESC LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![id.to_string(), limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(delivery_from_row(r)?);
    }
    Ok(out)
}

/// When the earliest pending delivery is due (the worker sleeps until then).
pub fn next_due(c: &Connection) -> Result<Option<DateTime<Utc>>, DbError> {
    let next: Option<String> = c
        .prepare_cached(
            "SELECT MIN(COALESCE(MAX(next_attempt_at, claim_expires_at), next_attempt_at)) \
             FROM webhook_deliveries WHERE state = 'pending'",
        )?
        .query_row([], |r| r.get(0))?;
    opt_ts(next)
}
