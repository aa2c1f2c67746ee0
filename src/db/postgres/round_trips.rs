//! The SQL of one write batch ([`super::writer`]): round trip 1 locks the
//! batch's jobs and reads the database's clock, round trip 2 writes
//! everything as multi-row statements over `unnest` arrays and commits.
//! Each round trip is pipelined: PostgreSQL runs the statements in order.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use uuid::Uuid;

use super::jobs;
use super::writer::{Batch, Committed, Slot};

/// Round trip 1: `BEGIN`, the locked rows, the database's clock.
pub(super) async fn lock(
    c: &Object,
    targets: &[Uuid],
) -> Result<(HashMap<Uuid, Slot>, DateTime<Utc>), tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM jobs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        jobs::COLUMNS
    );
    let (begin, select, clock) = futures::try_join!(
        c.prepare_cached("BEGIN"),
        c.prepare_cached(&sql),
        c.prepare_cached("SELECT clock_timestamp()"),
    )?;
    let locked = async {
        if targets.is_empty() {
            Ok(Vec::new())
        } else {
            c.query(&select, &[&targets]).await
        }
    };
    let (_, rows, now) =
        futures::try_join!(c.execute(&begin, &[]), locked, c.query_one(&clock, &[]),)?;
    let now: DateTime<Utc> = now.try_get(0)?;
    let mut slots = HashMap::with_capacity(rows.len());
    for r in &rows {
        // A row that does not decode is left out: writes to it answer
        // `Missing` rather than failing the whole batch.
        match jobs::record(r) {
            Ok(rec) => {
                slots.insert(
                    rec.job.id,
                    Slot {
                        rec,
                        new: false,
                        dirty: false,
                        visible: false,
                    },
                );
            }
            Err(e) => tracing::error!(error = %e, "a stored job cannot be read"),
        }
    }
    Ok((slots, now))
}

const INSERT_JOBS: &str = "INSERT INTO jobs (id, user_id, model_name, framework, dataset_s3_uri, \
     config, status, progress, message, checkpoint_s3_uri, error, created_at, updated_at, \
     started_at, completed_at, runner, exit_code, callback_token_hash, last_sequence, runner_state) \
     SELECT id, u, m, f, d, c::json, s, p, msg, ck, err, ca, ua, sa, co, r, ec, th, ls, rs \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::float8[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], \
     $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::text[], $17::int4[], \
     $18::text[], $19::int8[], $20::text[]) WITH ORDINALITY \
     AS t(id, u, m, f, d, c, s, p, msg, ck, err, ca, ua, sa, co, r, ec, th, ls, rs, ord) \
     ORDER BY ord RETURNING id, number";

const UPDATE_JOBS: &str = "UPDATE jobs AS j SET status = t.s, progress = t.p, message = t.msg, \
     checkpoint_s3_uri = t.ck, error = t.err, updated_at = t.ua, started_at = t.sa, \
     completed_at = t.co, runner = t.r, exit_code = t.ec, last_sequence = t.ls, \
     runner_state = t.rs, callback_token_hash = t.th, \
     xid = CASE WHEN t.v THEN pg_current_xact_id()::text::bigint ELSE j.xid END \
     FROM unnest($1::uuid[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[], \
     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::int4[], \
     $12::int8[], $13::text[], $14::text[], $15::bool[]) \
     AS t(id, s, p, msg, ck, err, ua, sa, co, r, ec, ls, rs, th, v) WHERE j.id = t.id";

const INSERT_POINTS: &str = "INSERT INTO metrics (job_id, epoch, step, loss, accuracy, metrics, \
     created_at) SELECT j, e, st, l, a, m::json, c FROM unnest($1::uuid[], $2::int8[], \
     $3::int8[], $4::float8[], $5::float8[], $6::text[], $7::timestamptz[]) WITH ORDINALITY \
     AS t(j, e, st, l, a, m, c, ord) ORDER BY ord RETURNING id";

/// The batch's rows as column arrays (what `unnest` takes).
#[derive(Default)]
struct Columns {
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
}

/// PostgreSQL's `text` cannot hold NUL, which SQLite and the API accept
/// in free text (a trainer's message): it is stored as U+FFFD.
fn text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_string()
    }
}

fn opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(text)
}

impl Columns {
    fn push(&mut self, slot: &Slot) {
        let (r, j) = (&slot.rec, &slot.rec.job);
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
        self.visible.push(slot.visible);
    }
}

/// Round trip 2: the inserts, the update, `COMMIT`.
pub(super) async fn write(c: &Object, b: &Batch) -> Result<Committed, tokio_postgres::Error> {
    let (insert_jobs, update_jobs, insert_points, commit) = futures::try_join!(
        c.prepare_cached(INSERT_JOBS),
        c.prepare_cached(UPDATE_JOBS),
        c.prepare_cached(INSERT_POINTS),
        c.prepare_cached("COMMIT"),
    )?;
    let mut new = Columns::default();
    for id in &b.created {
        if let Some(slot) = b.rows.get(id) {
            new.push(slot);
        }
    }
    let mut changed = Columns::default();
    for slot in b.rows.values().filter(|s| s.dirty && !s.new) {
        changed.push(slot);
    }
    let p = &b.points;
    let metrics: Vec<String> = p
        .iter()
        .map(|(_, pt, _)| serde_json::Value::Object(pt.metrics.clone()).to_string())
        .collect();
    let pj: Vec<Uuid> = p.iter().map(|(j, _, _)| *j).collect();
    let pe: Vec<i64> = p.iter().map(|(_, pt, _)| pt.epoch).collect();
    let ps: Vec<Option<i64>> = p.iter().map(|(_, pt, _)| pt.step).collect();
    let pl: Vec<Option<f64>> = p.iter().map(|(_, pt, _)| pt.loss).collect();
    let pa: Vec<Option<f64>> = p.iter().map(|(_, pt, _)| pt.accuracy).collect();
    let pc: Vec<DateTime<Utc>> = p.iter().map(|(_, _, t)| *t).collect();
    let inserted = async {
        if new.id.is_empty() {
            return Ok(Vec::new());
        }
        let n = &new;
        c.query(
            &insert_jobs,
            &[
                &n.id,
                &n.user,
                &n.model,
                &n.framework,
                &n.dataset,
                &n.config,
                &n.status,
                &n.progress,
                &n.message,
                &n.checkpoint,
                &n.error,
                &n.created,
                &n.updated,
                &n.started,
                &n.completed,
                &n.runner,
                &n.exit_code,
                &n.token_hash,
                &n.last_sequence,
                &n.runner_state,
            ],
        )
        .await
    };
    let updated = async {
        if changed.id.is_empty() {
            return Ok(0);
        }
        let u = &changed;
        c.execute(
            &update_jobs,
            &[
                &u.id,
                &u.status,
                &u.progress,
                &u.message,
                &u.checkpoint,
                &u.error,
                &u.updated,
                &u.started,
                &u.completed,
                &u.runner,
                &u.exit_code,
                &u.last_sequence,
                &u.runner_state,
                &u.token_hash,
                &u.visible,
            ],
        )
        .await
    };
    let points = async {
        if pj.is_empty() {
            return Ok(Vec::new());
        }
        c.query(&insert_points, &[&pj, &pe, &ps, &pl, &pa, &metrics, &pc])
            .await
    };
    // Pipelined: PostgreSQL runs them in order, and COMMIT of a
    // transaction a statement failed in rolls back; success is all four.
    let (job_rows, _, point_rows, _) =
        futures::try_join!(inserted, updated, points, c.execute(&commit, &[]))?;
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
