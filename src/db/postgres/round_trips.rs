//! The SQL of one write batch ([`super::writer`]): round trip 1 locks the
//! batch's jobs, reads their attempts and the database's clock; round trip
//! 2 writes everything as multi-row statements over `unnest` arrays and
//! commits. Each round trip is pipelined: PostgreSQL runs the statements
//! in order, each (read committed) with a snapshot taken when it starts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::accounts::{AuditColumns, INSERT_AUDIT};
use super::batch::{Batch, Committed, Slot};
use super::{jobs, text};
use crate::model::{Attempt, JobRecord};

/// Round trip 1: `BEGIN`, the locked rows, their attempts, the database's
/// clock. The attempts are a statement of their own, after the lock: a
/// subquery of the locking statement would read them from that
/// statement's snapshot, taken before it waited for a lock, so a change
/// committed meanwhile would be missed.
pub(super) async fn lock(
    c: &Object,
    targets: &[Uuid],
) -> Result<(HashMap<Uuid, Slot>, DateTime<Utc>), tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM jobs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        jobs::COLUMNS
    );
    let attempts_sql = format!(
        "SELECT id, {} FROM jobs WHERE id = ANY($1) AND attempt > 0",
        jobs::ATTEMPTS
    );
    let (begin, select, attempts, clock) = futures::try_join!(
        c.prepare_cached("BEGIN"),
        c.prepare_cached(&sql),
        c.prepare_cached(&attempts_sql),
        c.prepare_cached("SELECT clock_timestamp()"),
    )?;
    let some = !targets.is_empty();
    let locked = async {
        if some {
            c.query(&select, &[&targets]).await
        } else {
            Ok(Vec::new())
        }
    };
    let attempted = async {
        if some {
            c.query(&attempts, &[&targets]).await
        } else {
            Ok(Vec::new())
        }
    };
    let (_, rows, attempt_rows, now) = futures::try_join!(
        c.execute(&begin, &[]),
        locked,
        attempted,
        c.query_one(&clock, &[]),
    )?;
    let now: DateTime<Utc> = now.try_get(0)?;
    let mut stored: HashMap<Uuid, Vec<Attempt>> = HashMap::new();
    for r in &attempt_rows {
        match jobs::attempts(r.try_get(1)?) {
            Ok(a) => {
                stored.insert(r.try_get(0)?, a);
            }
            Err(e) => tracing::error!(error = %e, "a stored job's attempts cannot be read"),
        }
    }
    let mut slots = HashMap::with_capacity(rows.len());
    for r in &rows {
        // A row that does not decode is left out: writes to it answer
        // `Missing` rather than failing the whole batch.
        match jobs::record(r) {
            Ok(mut rec) => {
                let attempts = stored.remove(&rec.job.id).unwrap_or_default();
                rec.job.sched.attempts = attempts.clone();
                slots.insert(
                    rec.job.id,
                    Slot {
                        rec,
                        new: false,
                        dirty: false,
                        visible: false,
                        stored_attempts: attempts,
                    },
                );
            }
            Err(e) => tracing::error!(error = %e, "a stored job cannot be read"),
        }
    }
    Ok((slots, now))
}

/// Inserts jobs from [`Columns::insert_args`] (numbers from the sequence).
pub(super) const INSERT_JOBS: &str = "INSERT INTO jobs (id, user_id, model_name, framework, \
     dataset_s3_uri, config, status, progress, message, checkpoint_s3_uri, error, created_at, \
     updated_at, started_at, completed_at, runner, exit_code, callback_token_hash, last_sequence, \
     runner_state, queue, priority, retry_policy, max_duration_s, max_pending_s, \
     heartbeat_timeout_s, stale_after_s, after_ids, tags, note, name, sweep_id, gpus, \
     assigned_gpus) \
     SELECT id, u, m, f, d, c::json, s, p, msg, ck, err, ca, ua, sa, co, r, ec, th, ls, rs, \
     q, pr, rp::json, md, mp, hb, sl, af::uuid[], tg::jsonb, nt, nm, sw, g, ag::json \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::float8[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], \
     $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::text[], $17::int4[], \
     $18::text[], $19::int8[], $20::text[], $21::text[], $22::int4[], $23::text[], \
     $24::float8[], $25::float8[], $26::float8[], $27::float8[], $28::text[], $29::text[], \
     $30::text[], $31::text[], $32::uuid[], $33::int4[], $34::text[]) WITH ORDINALITY \
     AS t(id, u, m, f, d, c, s, p, msg, ck, err, ca, ua, sa, co, r, ec, th, ls, rs, \
     q, pr, rp, md, mp, hb, sl, af, tg, nt, nm, sw, g, ag, ord) \
     ORDER BY ord RETURNING id, number";

const UPDATE_JOBS: &str = "UPDATE jobs AS j SET status = t.s, progress = t.p, message = t.msg, \
     checkpoint_s3_uri = t.ck, error = t.err, updated_at = t.ua, started_at = t.sa, \
     completed_at = t.co, runner = t.r, exit_code = t.ec, last_sequence = t.ls, \
     runner_state = t.rs, callback_token_hash = t.th, priority = t.pr, attempt = t.at, \
     termination_reason = t.tr, last_heartbeat_at = t.hb, stalled_at = t.st, \
     next_attempt_at = t.na, tags = t.tg::jsonb, note = t.nt, assigned_gpus = t.ag::json, \
     xid = CASE WHEN t.v THEN pg_current_xact_id()::text::bigint ELSE j.xid END \
     FROM unnest($1::uuid[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[], \
     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::int4[], \
     $12::int8[], $13::text[], $14::text[], $15::bool[], $16::int4[], $17::int4[], $18::text[], \
     $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::text[], $23::text[], \
     $24::text[]) \
     AS t(id, s, p, msg, ck, err, ua, sa, co, r, ec, ls, rs, th, v, pr, at, tr, hb, st, na, tg, nt, \
     ag) \
     WHERE j.id = t.id";

/// Attempts started or ended (one row per job and attempt per batch).
const UPSERT_ATTEMPTS: &str = "INSERT INTO job_attempts (job_id, attempt, started_at, ended_at, \
     exit_code, reason, counted) SELECT * FROM unnest($1::uuid[], $2::int4[], \
     $3::timestamptz[], $4::timestamptz[], $5::int4[], $6::text[], $7::bool[]) \
     ON CONFLICT (job_id, attempt) DO UPDATE SET ended_at = excluded.ended_at, \
     exit_code = excluded.exit_code, reason = excluded.reason, counted = excluded.counted";

const INSERT_POINTS: &str = "INSERT INTO metrics (job_id, epoch, step, loss, accuracy, metrics, \
     created_at, attempt) SELECT j, e, st, l, a, m::json, c, at FROM unnest($1::uuid[], \
     $2::int8[], $3::int8[], $4::float8[], $5::float8[], $6::text[], $7::timestamptz[], \
     $8::int4[]) WITH ORDINALITY AS t(j, e, st, l, a, m, c, at, ord) ORDER BY ord RETURNING id";

/// The outbox: one delivery per event and endpoint whose filters take it.
const INSERT_DELIVERIES: &str = "INSERT INTO webhook_deliveries (message_id, webhook_id, job_id, \
     event, payload, state, next_attempt_at, created_at) \
     SELECT 'msg_' || substr(md5(gen_random_uuid()::text), 1, 24), w.id, t.j, t.e, t.p, \
     'pending', t.c, t.c \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::timestamptz[]) WITH ORDINALITY AS t(j, e, p, f, u, c, ord) \
     JOIN webhooks w ON (w.events IS NULL OR t.e = ANY (w.events)) \
     AND (w.frameworks IS NULL OR t.f = ANY (w.frameworks)) \
     AND (w.users IS NULL OR t.u = ANY (w.users)) \
     ORDER BY t.ord, w.created_at, w.id";

/// Jobs as column arrays (what `unnest` takes).
#[derive(Default)]
pub(super) struct Columns {
    id: Vec<Uuid>,
    user: Vec<String>,
    model: Vec<String>,
    framework: Vec<String>,
    dataset: Vec<String>,
    config: Vec<Option<String>>,
    status: Vec<&'static str>,
    progress: Vec<f64>,
    message: Vec<Option<String>>,
    checkpoint: Vec<Option<String>>,
    error: Vec<Option<String>>,
    created: Vec<DateTime<Utc>>,
    updated: Vec<DateTime<Utc>>,
    started: Vec<Option<DateTime<Utc>>>,
    completed: Vec<Option<DateTime<Utc>>>,
    runner: Vec<Option<String>>,
    exit_code: Vec<Option<i32>>,
    token_hash: Vec<Option<String>>,
    last_sequence: Vec<Option<i64>>,
    runner_state: Vec<Option<String>>,
    visible: Vec<bool>,
    queue: Vec<String>,
    priority: Vec<i32>,
    attempt: Vec<i32>,
    retry: Vec<Option<String>>,
    max_duration: Vec<Option<f64>>,
    max_pending: Vec<Option<f64>>,
    heartbeat_timeout: Vec<Option<f64>>,
    stale_after: Vec<Option<f64>>,
    /// Array literals (`{…}`): `unnest` cannot take an array per row.
    after: Vec<Option<String>>,
    termination_reason: Vec<Option<String>>,
    last_heartbeat: Vec<Option<DateTime<Utc>>>,
    stalled: Vec<Option<DateTime<Utc>>>,
    next_attempt: Vec<Option<DateTime<Utc>>>,
    /// JSON objects, NULL when a job has no tags.
    tags: Vec<Option<String>>,
    note: Vec<Option<String>>,
    name: Vec<Option<String>>,
    sweep: Vec<Option<Uuid>>,
    gpus: Vec<i32>,
    /// JSON lists of `{index, uuid}` (none: NULL).
    assigned_gpus: Vec<Option<String>>,
}

fn opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(text)
}

fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Columns {
    pub(super) fn push(&mut self, r: &JobRecord, visible: bool) {
        let j = &r.job;
        let sc = &j.sched;
        self.id.push(j.id);
        self.user.push(text(&j.user_id));
        self.model.push(text(&j.model_name));
        self.framework.push(text(&j.framework));
        self.dataset.push(text(&j.dataset_s3_uri));
        self.config.push(j.config.as_ref().map(|v| v.to_string()));
        self.status.push(j.status.as_str());
        self.progress.push(j.progress);
        self.message.push(opt_text(&j.message));
        self.checkpoint.push(opt_text(&j.checkpoint_s3_uri));
        self.error.push(opt_text(&j.error));
        self.created.push(j.created_at);
        self.updated.push(j.updated_at);
        self.started.push(j.started_at);
        self.completed.push(j.completed_at);
        self.runner.push(opt_text(&j.runner));
        self.exit_code.push(j.exit_code);
        self.token_hash.push(r.token_hash.clone());
        self.last_sequence.push(r.last_sequence);
        self.runner_state.push(opt_text(&r.runner_state));
        self.visible.push(visible);
        self.queue.push(text(&sc.queue));
        self.priority.push(i32::from(sc.priority));
        self.attempt.push(int(sc.attempt));
        // Serialising our own plain struct cannot fail.
        self.retry.push(
            sc.retry
                .as_ref()
                .and_then(|p| serde_json::to_string(p).ok()),
        );
        self.max_duration.push(sc.max_duration);
        self.max_pending.push(sc.max_pending);
        self.heartbeat_timeout.push(sc.heartbeat_timeout);
        self.stale_after.push(sc.stale_after);
        self.after.push((!sc.after.is_empty()).then(|| {
            let ids: Vec<String> = sc.after.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", ids.join(","))
        }));
        self.termination_reason
            .push(opt_text(&sc.termination_reason));
        self.last_heartbeat.push(sc.last_heartbeat_at);
        self.stalled.push(sc.stalled_at);
        self.next_attempt.push(sc.next_attempt_at);
        let l = &j.labels;
        self.tags.push(
            (!l.tags.is_empty())
                .then(|| serde_json::to_string(&l.tags).ok().map(|t| text(&t)))
                .flatten(),
        );
        self.note.push(opt_text(&l.note));
        self.name.push(opt_text(&l.name));
        self.sweep.push(l.sweep_id);
        self.gpus.push(int(sc.gpus));
        // Serialising our own plain struct cannot fail.
        self.assigned_gpus.push(
            (!sc.assigned_gpus.is_empty())
                .then(|| serde_json::to_string(&sc.assigned_gpus).ok())
                .flatten(),
        );
    }

    pub(super) fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// The parameters of [`INSERT_JOBS`].
    pub(super) fn insert_args(&self) -> [&(dyn ToSql + Sync); 34] {
        [
            &self.id,
            &self.user,
            &self.model,
            &self.framework,
            &self.dataset,
            &self.config,
            &self.status,
            &self.progress,
            &self.message,
            &self.checkpoint,
            &self.error,
            &self.created,
            &self.updated,
            &self.started,
            &self.completed,
            &self.runner,
            &self.exit_code,
            &self.token_hash,
            &self.last_sequence,
            &self.runner_state,
            &self.queue,
            &self.priority,
            &self.retry,
            &self.max_duration,
            &self.max_pending,
            &self.heartbeat_timeout,
            &self.stale_after,
            &self.after,
            &self.tags,
            &self.note,
            &self.name,
            &self.sweep,
            &self.gpus,
            &self.assigned_gpus,
        ]
    }

    /// The parameters of [`UPDATE_JOBS`].
    fn update_args(&self) -> [&(dyn ToSql + Sync); 24] {
        [
            &self.id,
            &self.status,
            &self.progress,
            &self.message,
            &self.checkpoint,
            &self.error,
            &self.updated,
            &self.started,
            &self.completed,
            &self.runner,
            &self.exit_code,
            &self.last_sequence,
            &self.runner_state,
            &self.token_hash,
            &self.visible,
            &self.priority,
            &self.attempt,
            &self.termination_reason,
            &self.last_heartbeat,
            &self.stalled,
            &self.next_attempt,
            &self.tags,
            &self.note,
            &self.assigned_gpus,
        ]
    }
}

/// Attempts to write back, as column arrays.
#[derive(Default)]
struct AttemptColumns {
    job: Vec<Uuid>,
    attempt: Vec<i32>,
    started: Vec<DateTime<Utc>>,
    ended: Vec<Option<DateTime<Utc>>>,
    exit_code: Vec<Option<i32>>,
    reason: Vec<Option<String>>,
    counted: Vec<bool>,
}

impl AttemptColumns {
    /// The attempts of `slot` that differ from what is stored.
    fn push(&mut self, slot: &Slot) {
        let now = &slot.rec.job.sched.attempts;
        for (i, a) in now.iter().enumerate() {
            if slot.stored_attempts.get(i) == Some(a) {
                continue;
            }
            self.job.push(slot.rec.job.id);
            self.attempt.push(int(a.attempt));
            self.started.push(a.started_at);
            self.ended.push(a.ended_at);
            self.exit_code.push(a.exit_code);
            self.reason.push(opt_text(&a.reason));
            self.counted.push(a.counted);
        }
    }
}

/// Round trip 2: the inserts, the update, the attempts, points,
/// deliveries and audit entries, `COMMIT`.
pub(super) async fn write(c: &Object, b: &Batch) -> Result<Committed, tokio_postgres::Error> {
    let (
        insert_jobs,
        update_jobs,
        upsert_attempts,
        insert_points,
        insert_deliveries,
        insert_audit,
        commit,
    ) = futures::try_join!(
        c.prepare_cached(INSERT_JOBS),
        c.prepare_cached(UPDATE_JOBS),
        c.prepare_cached(UPSERT_ATTEMPTS),
        c.prepare_cached(INSERT_POINTS),
        c.prepare_cached(INSERT_DELIVERIES),
        c.prepare_cached(INSERT_AUDIT),
        c.prepare_cached("COMMIT"),
    )?;
    let mut new = Columns::default();
    for id in &b.created {
        if let Some(slot) = b.rows.get(id) {
            new.push(&slot.rec, slot.visible);
        }
    }
    let mut changed = Columns::default();
    let mut attempts = AttemptColumns::default();
    for slot in b.rows.values().filter(|s| s.dirty) {
        if !slot.new {
            changed.push(&slot.rec, slot.visible);
        }
        attempts.push(slot);
    }
    let p = &b.points;
    let metrics: Vec<String> = p
        .iter()
        .map(|x| serde_json::Value::Object(x.point.metrics.clone()).to_string())
        .collect();
    let pj: Vec<Uuid> = p.iter().map(|x| x.job).collect();
    let pe: Vec<i64> = p.iter().map(|x| x.point.epoch).collect();
    let ps: Vec<Option<i64>> = p.iter().map(|x| x.point.step).collect();
    let pl: Vec<Option<f64>> = p.iter().map(|x| x.point.loss).collect();
    let pa: Vec<Option<f64>> = p.iter().map(|x| x.point.accuracy).collect();
    let pc: Vec<DateTime<Utc>> = p.iter().map(|x| x.at).collect();
    let pt: Vec<i32> = p.iter().map(|x| int(x.attempt)).collect();
    let e = &b.events;
    let ej: Vec<Uuid> = e.iter().map(|x| x.job).collect();
    let ee: Vec<&str> = e.iter().map(|x| x.event).collect();
    let ep: Vec<&str> = e.iter().map(|x| x.payload.as_str()).collect();
    let ef: Vec<String> = e.iter().map(|x| text(&x.framework)).collect();
    let eu: Vec<String> = e.iter().map(|x| text(&x.user)).collect();
    let ec: Vec<DateTime<Utc>> = e.iter().map(|x| x.at).collect();
    let mut audit = AuditColumns::default();
    for a in &b.audits {
        audit.push(a);
    }
    let inserted = async {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        c.query(&insert_jobs, &new.insert_args()).await
    };
    let updated = async {
        if changed.is_empty() {
            return Ok(0);
        }
        c.execute(&update_jobs, &changed.update_args()).await
    };
    let attempted = async {
        if attempts.job.is_empty() {
            return Ok(0);
        }
        let a = &attempts;
        c.execute(
            &upsert_attempts,
            &[
                &a.job,
                &a.attempt,
                &a.started,
                &a.ended,
                &a.exit_code,
                &a.reason,
                &a.counted,
            ],
        )
        .await
    };
    let points = async {
        if pj.is_empty() {
            return Ok(Vec::new());
        }
        c.query(
            &insert_points,
            &[&pj, &pe, &ps, &pl, &pa, &metrics, &pc, &pt],
        )
        .await
    };
    let queued = async {
        if ej.is_empty() {
            return Ok(0);
        }
        c.execute(&insert_deliveries, &[&ej, &ee, &ep, &ef, &eu, &ec])
            .await
    };
    let audited = async {
        if audit.is_empty() {
            return Ok(0);
        }
        c.execute(&insert_audit, &audit.args()).await
    };
    // Pipelined: PostgreSQL runs them in order (jobs before the attempts
    // that reference them), and COMMIT of a transaction a statement failed
    // in rolls back; success is all of them.
    let (job_rows, _, _, point_rows, _, _, _) = futures::try_join!(
        inserted,
        updated,
        attempted,
        points,
        queued,
        audited,
        c.execute(&commit, &[])
    )?;
    let mut numbers = HashMap::with_capacity(job_rows.len());
    for r in &job_rows {
        numbers.insert(r.try_get::<_, Uuid>(0)?, r.try_get::<_, i64>(1)?);
    }
    // Identity values follow the insert's (ordinality) order.
    let mut point_ids = point_rows
        .iter()
        .map(|r| r.try_get::<_, i64>(0))
        .collect::<Result<Vec<_>, _>>()?;
    point_ids.sort_unstable();
    Ok(Committed { numbers, point_ids })
}
