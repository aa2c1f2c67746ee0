//! Queries on `webhooks` and `webhook_deliveries` (the outbox) on
//! PostgreSQL.
//!
//! Deliveries are queued by the writer in the transaction that changes a
//! job's status (`round_trips.rs`). Workers, on any replica, claim due ones
//! with `FOR UPDATE SKIP LOCKED` and a lease ([`claim`]): two workers never
//! take the same row, and a worker that died lets its claims lapse.
//! Only the worker holding a claim records the attempt ([`finish`]).
//! Times here are the database's (`now()`), shared by every replica.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, GenericClient};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{col, corrupt, fail, rows, text};
use crate::db::webhook::{secret_prefix, test_payload};
use crate::db::DbError;
use crate::model::webhook::{
    AttemptOutcome, ClaimedDelivery, Delivery, Webhook, WebhookFormat, WebhookRecord,
};

/// The advisory lock (`pg_advisory_xact_lock(int, int)`) replicas take to
/// replace the configured endpoints one at a time.
const CONFIGURE_LOCK: (i32, i32) = (0x706c_6174, 1);

const HOOK_COLUMNS: &str = "id, url, secret, format, events, frameworks, users, source, created_at";
const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.webhook_id, d.job_id, d.event, d.state, \
     d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.finished_at";

/// A fresh `webhook-id`: `msg_` and 24 random hex digits, like SQLite's.
const MESSAGE_ID: &str = "'msg_' || substr(md5(gen_random_uuid()::text), 1, 24)";

fn format(s: &str) -> Result<WebhookFormat, DbError> {
    WebhookFormat::parse(s).ok_or_else(|| corrupt(format!("webhook format {s:?}")))
}

fn hook(r: &Row) -> Result<WebhookRecord, DbError> {
    let secret: String = col(r, 2)?;
    Ok(WebhookRecord {
        webhook: Webhook {
            id: col(r, 0)?,
            url: col(r, 1)?,
            format: format(col(r, 3)?)?,
            events: col(r, 4)?,
            frameworks: col(r, 5)?,
            users: col(r, 6)?,
            source: col(r, 7)?,
            secret_prefix: secret_prefix(&secret),
            created_at: col(r, 8)?,
        },
        secret,
    })
}

fn delivery(r: &Row) -> Result<Delivery, DbError> {
    let state: String = col(r, 5)?;
    let next: DateTime<Utc> = col(r, 7)?;
    Ok(Delivery {
        id: col(r, 0)?,
        message_id: col(r, 1)?,
        webhook_id: col(r, 2)?,
        job_id: col(r, 3)?,
        event: col(r, 4)?,
        next_attempt_at: (state == "pending").then_some(next),
        state,
        attempts: i64::from(col::<i32>(r, 6)?),
        last_status: col::<Option<i32>>(r, 8)?.map(i64::from),
        last_error: col(r, 9)?,
        created_at: col(r, 10)?,
        finished_at: col(r, 11)?,
    })
}

/// A filter list as stored: NUL as U+FFFD, as the writer stores the names
/// it is matched against.
fn names(list: &Option<Vec<String>>) -> Option<Vec<String>> {
    list.as_ref().map(|l| l.iter().map(|x| text(x)).collect())
}

async fn insert(c: &impl GenericClient, rec: &WebhookRecord) -> Result<(), DbError> {
    let w = &rec.webhook;
    let (url, frameworks, users) = (text(&w.url), names(&w.frameworks), names(&w.users));
    let stmt = c
        .prepare_cached(&format!(
            "INSERT INTO webhooks ({HOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .await
        .map_err(fail)?;
    c.execute(
        &stmt,
        &[
            &w.id,
            &url,
            &rec.secret,
            &w.format.as_str(),
            &w.events,
            &frameworks,
            &users,
            &w.source,
            &w.created_at,
        ],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// Stores an endpoint.
pub(super) async fn add(c: &Client, rec: &WebhookRecord) -> Result<(), DbError> {
    insert(c, rec).await
}

/// Makes `recs` the endpoints of `source`, one replica at a time (two
/// doing it at once would each keep their own copies). An endpoint whose
/// URL is still there keeps its id and its pending deliveries (a restart
/// re-reads the configuration; deleting and re-adding would drop them),
/// taking the new secret, format and filters; the others are removed with
/// their deliveries.
pub(super) async fn replace(
    c: &mut Client,
    source: &str,
    recs: &[WebhookRecord],
) -> Result<(), DbError> {
    let tx = c.transaction().await.map_err(fail)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&CONFIGURE_LOCK.0, &CONFIGURE_LOCK.1],
    )
    .await
    .map_err(fail)?;
    let mut kept = Vec::with_capacity(recs.len());
    for rec in recs {
        let w = &rec.webhook;
        let (frameworks, users) = (names(&w.frameworks), names(&w.users));
        let updated = tx
            .query_opt(
                "UPDATE webhooks SET secret = $3, format = $4, events = $5, frameworks = $6, \
                 users = $7 WHERE id = (SELECT id FROM webhooks WHERE source = $1 AND url = $2 \
                 ORDER BY created_at, id LIMIT 1) RETURNING id",
                &[
                    &source,
                    &text(&w.url),
                    &rec.secret,
                    &w.format.as_str(),
                    &w.events,
                    &frameworks,
                    &users,
                ],
            )
            .await
            .map_err(fail)?;
        match updated {
            Some(row) => kept.push(col::<Uuid>(&row, 0)?),
            None => {
                insert(&tx, rec).await?;
                kept.push(w.id);
            }
        }
    }
    tx.execute(
        "DELETE FROM webhooks WHERE source = $1 AND id <> ALL($2)",
        &[&source, &kept],
    )
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)
}

/// Every endpoint, oldest first.
pub(super) async fn list(c: &Client) -> Result<Vec<WebhookRecord>, DbError> {
    let sql = format!("SELECT {HOOK_COLUMNS} FROM webhooks ORDER BY created_at, id");
    rows(c, &sql, &[], hook).await
}

/// One endpoint.
pub(super) async fn get(c: &Client, id: Uuid) -> Result<Option<WebhookRecord>, DbError> {
    let sql = format!("SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = $1");
    Ok(rows(c, &sql, &[&id], hook).await?.pop())
}

/// Removes an endpoint and (by cascade) its deliveries; whether it existed.
pub(super) async fn remove(c: &Client, id: Uuid) -> Result<bool, DbError> {
    let stmt = c
        .prepare_cached("DELETE FROM webhooks WHERE id = $1")
        .await
        .map_err(fail)?;
    Ok(c.execute(&stmt, &[&id]).await.map_err(fail)? > 0)
}

/// Queues a test event to endpoint `id` (due at once); `None` when there
/// is no such endpoint.
pub(super) async fn enqueue_test(
    c: &Client,
    id: Uuid,
    event: &str,
    now: &DateTime<Utc>,
) -> Result<Option<Delivery>, DbError> {
    let sql = format!(
        "INSERT INTO webhook_deliveries AS d (message_id, webhook_id, event, payload, state, \
         next_attempt_at, created_at) \
         SELECT {MESSAGE_ID}, w.id, $2::text, $3::text, 'pending', now(), $4::timestamptz \
         FROM webhooks w WHERE w.id = $1 \
         RETURNING {DELIVERY_COLUMNS}"
    );
    let payload = test_payload(id, event, now);
    Ok(rows(c, &sql, &[&id, &event, &payload, now], delivery)
        .await?
        .pop())
}

fn claimed(r: &Row) -> Result<ClaimedDelivery, DbError> {
    Ok(ClaimedDelivery {
        delivery: delivery(r)?,
        payload: col(r, 12)?,
        url: col(r, 13)?,
        secret: col(r, 14)?,
        format: format(col(r, 15)?)?,
    })
}

/// Claims up to `limit` due deliveries for `worker` for `lease`: pending,
/// due, and not held by a live claim; rows another worker is claiming
/// right now are skipped, not waited for. Counts the attempt.
pub(super) async fn claim(
    c: &Client,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>, DbError> {
    let sql = format!(
        "WITH due AS (SELECT id FROM webhook_deliveries \
            WHERE state = 'pending' AND next_attempt_at <= now() \
            AND (claim_expires_at IS NULL OR claim_expires_at < now()) \
            ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_deliveries AS d SET claimed_by = $1, \
            claim_expires_at = now() + make_interval(secs => $2), attempts = d.attempts + 1 \
         FROM due, webhooks w WHERE d.id = due.id AND w.id = d.webhook_id \
         RETURNING {DELIVERY_COLUMNS}, d.payload, w.url, w.secret, w.format"
    );
    let mut out = rows(c, &sql, &[&worker, &lease.as_secs_f64(), &limit], claimed).await?;
    out.sort_by_key(|d| d.delivery.id);
    Ok(out)
}

/// Records an attempt's outcome, if `worker` still holds the claim
/// (otherwise another worker took the delivery over; nothing changes).
pub(super) async fn finish(
    c: &Client,
    id: i64,
    worker: &str,
    outcome: &AttemptOutcome,
) -> Result<(), DbError> {
    let (state, next, status, error) = match outcome {
        AttemptOutcome::Delivered { status } => ("delivered", None, Some(*status), None),
        AttemptOutcome::Retry { at, status, error } => {
            ("pending", Some(*at), *status, Some(error.as_str()))
        }
        AttemptOutcome::GaveUp { status, error } => ("failed", None, *status, Some(error.as_str())),
    };
    let status = status.map(i32::from);
    let stmt = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = $3, \
             next_attempt_at = COALESCE($4, next_attempt_at), last_status = $5, \
             last_error = $6, finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END, \
             claimed_by = NULL, claim_expires_at = NULL WHERE id = $1 AND claimed_by = $2",
        )
        .await
        .map_err(fail)?;
    c.execute(&stmt, &[&id, &worker, &state, &next, &status, &error])
        .await
        .map_err(fail)?;
    Ok(())
}

/// The latest deliveries of endpoint `id`, newest first.
pub(super) async fn deliveries(c: &Client, id: Uuid, limit: i64) -> Result<Vec<Delivery>, DbError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.webhook_id = $1 \
         ORDER BY d.id DESC LIMIT $2"
    );
    rows(c, &sql, &[&id, &limit], delivery).await
}

/// When the earliest pending delivery is due (a claimed one: when its
/// claim lapses).
pub(super) async fn next_due(c: &Client) -> Result<Option<DateTime<Utc>>, DbError> {
    let stmt = c
        .prepare_cached(
            "SELECT MIN(GREATEST(next_attempt_at, claim_expires_at)) \
             FROM webhook_deliveries WHERE state = 'pending'",
        )
        .await
        .map_err(fail)?;
    col(&c.query_one(&stmt, &[]).await.map_err(fail)?, 0)
}
