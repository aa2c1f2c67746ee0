//! Creates under an `Idempotency-Key` on PostgreSQL.
//!
//! These run beside the batching writer, in a transaction of their own:
//! the key's holder must be looked up, an expired holder's key cleared
//! and the new job inserted atomically, and two replicas (or two requests)
//! with the same key must not both insert. A transaction-scoped advisory
//! lock on the key serialises them; the unique index on
//! `(idempotency_owner, idempotency_key)` stays the last guard. Creates
//! are rare next to callbacks, so the extra round trips cost nothing that
//! matters, and a conflict here never fails a writer batch.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, GenericClient};
use uuid::Uuid;

use super::accounts::{AuditColumns, INSERT_AUDIT};
use super::round_trips::{Columns, INSERT_JOBS};
use super::{corrupt, fail, jobs, text};
use crate::db::{Created, DbError, IdempotencyClaim};
use crate::model::{AuditEntry, JobRecord};

/// The class of the key locks (`pg_advisory_xact_lock(int, int)`).
const KEY_LOCK: i32 = 0x706c_6174;

/// The job holding `(owner, key)`, with its request fingerprint.
pub(super) async fn holder(
    c: &impl GenericClient,
    claim: &IdempotencyClaim,
    lock: bool,
) -> Result<Option<(JobRecord, String)>, DbError> {
    let sql = format!(
        "SELECT {}, request_fingerprint FROM jobs \
         WHERE idempotency_owner = $1 AND idempotency_key = $2{}",
        jobs::with_attempts(),
        if lock { " FOR NO KEY UPDATE" } else { "" }
    );
    let stmt = c.prepare_cached(&sql).await.map_err(fail)?;
    let (owner, key) = (text(&claim.owner), text(&claim.key));
    let Some(r) = c.query_opt(&stmt, &[&owner, &key]).await.map_err(fail)? else {
        return Ok(None);
    };
    let rec = jobs::record_with_attempts(&r)?;
    let fingerprint: String = r.try_get(r.len() - 1).map_err(corrupt)?;
    Ok(Some((rec, fingerprint)))
}

/// What a fresh holder answers; `None` when the key is free or expired.
pub(super) fn existing(
    held: Option<(JobRecord, String)>,
    claim: &IdempotencyClaim,
) -> Option<Created> {
    held.filter(|(rec, _)| rec.job.created_at >= claim.since)
        .map(|(rec, fingerprint)| Created::Existing {
            job: rec.job,
            same_request: fingerprint == claim.fingerprint,
        })
}

/// Sets (or, with `None`, clears) the key a job was created under.
async fn set_key(
    c: &impl GenericClient,
    id: Uuid,
    key: Option<&IdempotencyClaim>,
) -> Result<u64, tokio_postgres::Error> {
    let stmt = c
        .prepare_cached(
            "UPDATE jobs SET idempotency_owner = $2, idempotency_key = $3, \
             request_fingerprint = $4 WHERE id = $1",
        )
        .await?;
    let owner = key.map(|k| text(&k.owner));
    let name = key.map(|k| text(&k.key));
    let fingerprint = key.map(|k| k.fingerprint.clone());
    c.execute(&stmt, &[&id, &owner, &name, &fingerprint]).await
}

/// Stores `rec` under the claim's key unless a live job holds it, with
/// `audit` (at the job's creation time, naming it) in the same
/// transaction.
pub(super) async fn create_once(
    c: &mut Client,
    mut rec: JobRecord,
    claim: &IdempotencyClaim,
    audit: Option<AuditEntry>,
) -> Result<Created, DbError> {
    let tx = c.transaction().await.map_err(fail)?;
    let lock = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock($1, hashtext($2::text || chr(10) || $3::text))",
        )
        .await
        .map_err(fail)?;
    tx.execute(&lock, &[&KEY_LOCK, &text(&claim.owner), &text(&claim.key)])
        .await
        .map_err(fail)?;
    let held = holder(&tx, claim, true).await?;
    let expired = held.as_ref().map(|(r, _)| r.job.id);
    if let Some(found) = existing(held, claim) {
        tx.commit().await.map_err(fail)?;
        return Ok(found);
    }
    if let Some(id) = expired {
        set_key(&tx, id, None).await.map_err(fail)?;
    }
    let now: DateTime<Utc> = tx
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(corrupt)?;
    (rec.job.created_at, rec.job.updated_at) = (now, now);
    let mut cols = Columns::default();
    cols.push(&rec, true);
    let insert = tx.prepare_cached(INSERT_JOBS).await.map_err(fail)?;
    let row = tx
        .query_one(&insert, &cols.insert_args())
        .await
        .map_err(fail)?;
    rec.job.number = row.try_get(1).map_err(corrupt)?;
    set_key(&tx, rec.job.id, Some(claim)).await.map_err(fail)?;
    if let Some(mut a) = audit {
        (a.at, a.target) = (now, Some(rec.job.id.to_string()));
        let mut cols = AuditColumns::default();
        cols.push(&a);
        let insert = tx.prepare_cached(INSERT_AUDIT).await.map_err(fail)?;
        tx.execute(&insert, &cols.args()).await.map_err(fail)?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(Created::New(rec.job))
}
