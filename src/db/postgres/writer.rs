//! Batched writes on PostgreSQL: one transaction per batch, two round
//! trips.
//!
//! Like SQLite's writer, one task per replica takes whatever writes are
//! queued (up to [`MAX_BATCH`]) and commits them together:
//!
//! 1. `BEGIN`, then the batch's existing jobs `FOR NO KEY UPDATE` in id
//!    order (so two replicas' batches never deadlock; not `FOR UPDATE`,
//!    which would conflict with the `FOR KEY SHARE` a metric insert takes
//!    on its job), then `clock_timestamp()`: one pipelined round trip. The
//!    batch's time is the database's, taken after the locks, so replicas
//!    with skewed clocks still stamp consistent times.
//! 2. The rules run in memory, in queue order (several writes to one job
//!    chain); a rule's refusal or panic stores nothing for that write.
//! 3. One multi-row `INSERT` of new jobs, one `UPDATE … FROM unnest(…)` of
//!    changed jobs, one multi-row `INSERT` of points, and `COMMIT`:
//!    pipelined, the second round trip.
//!
//! Callers are answered only after `COMMIT`; a failed batch fails every
//! write in it. Nothing here sends `NOTIFY` (it would serialise commits);
//! a notifier for other replicas belongs after [`Writer`]'s commit, beside
//! the hub's publish.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{jobs, unavailable};
use crate::db::{panic_message, Changes, DbError, Modified};
use crate::model::{Job, JobRecord, Metric, MetricPoint};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// Why a batch failed, handed to each of its writes.
#[derive(Debug, Clone)]
struct Failure {
    unavailable: bool,
    message: Arc<str>,
}

impl Failure {
    fn from_pg(e: &tokio_postgres::Error) -> Failure {
        Failure {
            unavailable: e.is_closed(),
            message: super::describe(e).into(),
        }
    }

    fn to_db_error(&self) -> DbError {
        if self.unavailable {
            DbError::Unavailable(self.message.to_string())
        } else {
            DbError::Commit(self.message.to_string())
        }
    }
}

/// What the commit decided, for the writes to build their answers from.
struct Committed {
    /// Numbers of the jobs inserted.
    numbers: HashMap<Uuid, i64>,
    /// Ids of the points inserted, in the batch's order.
    point_ids: Vec<i64>,
}

/// Sends a write's answer once the batch's fate is known.
type Finish = Box<dyn FnOnce(Result<&Committed, &Failure>) + Send>;

/// A job row as the batch has it.
struct Slot {
    rec: JobRecord,
    /// Inserted by this batch.
    new: bool,
    /// Must be written back.
    dirty: bool,
    /// The change is visible (the all-jobs feed sends the job again).
    visible: bool,
}

/// The in-memory state of one batch between its two round trips.
struct Batch {
    now: DateTime<Utc>,
    rows: HashMap<Uuid, Slot>,
    /// Jobs inserted, in order.
    created: Vec<Uuid>,
    /// Points to insert: job, point, time.
    points: Vec<(Uuid, MetricPoint, DateTime<Utc>)>,
}

/// One queued write.
trait Op: Send {
    /// The existing job it locks, if any.
    fn target(&self) -> Option<Uuid>;
    /// Applies the write to the batch; returns how to answer after commit.
    fn run(self: Box<Self>, batch: &mut Batch) -> Finish;
    /// The batch failed before the write ran.
    fn fail(self: Box<Self>, failure: &Failure);
}

struct Create {
    rec: JobRecord,
    done: oneshot::Sender<Result<Job, DbError>>,
}

impl Op for Create {
    fn target(&self) -> Option<Uuid> {
        None
    }

    fn run(self: Box<Self>, b: &mut Batch) -> Finish {
        let Create { mut rec, done } = *self;
        (rec.job.created_at, rec.job.updated_at) = (b.now, b.now);
        let id = rec.job.id;
        let job = rec.job.clone();
        b.rows.insert(
            id,
            Slot {
                rec,
                new: true,
                dirty: true,
                visible: true,
            },
        );
        b.created.push(id);
        Box::new(move |outcome| {
            let r = outcome
                .map(|c| Job {
                    number: c.numbers.get(&id).copied().unwrap_or_default(),
                    ..job
                })
                .map_err(Failure::to_db_error);
            let _ = done.send(r);
        })
    }

    fn fail(self: Box<Self>, failure: &Failure) {
        let _ = self.done.send(Err(failure.to_db_error()));
    }
}

struct RunnerState {
    id: Uuid,
    state: Option<String>,
    done: oneshot::Sender<Result<(), DbError>>,
}

impl Op for RunnerState {
    fn target(&self) -> Option<Uuid> {
        Some(self.id)
    }

    fn run(self: Box<Self>, b: &mut Batch) -> Finish {
        let RunnerState { id, state, done } = *self;
        if let Some(slot) = b.rows.get_mut(&id) {
            slot.rec.runner_state = state;
            slot.dirty = true;
        }
        Box::new(move |outcome| {
            let _ = done.send(outcome.map(|_| ()).map_err(Failure::to_db_error));
        })
    }

    fn fail(self: Box<Self>, failure: &Failure) {
        let _ = self.done.send(Err(failure.to_db_error()));
    }
}

struct Modify<E, F> {
    id: Uuid,
    rule: F,
    done: oneshot::Sender<Result<Modified, E>>,
}

impl<E, F> Op for Modify<E, F>
where
    F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<Changes, E> + Send + 'static,
    E: From<DbError> + Send + 'static,
{
    fn target(&self) -> Option<Uuid> {
        Some(self.id)
    }

    fn run(self: Box<Self>, b: &mut Batch) -> Finish {
        let Modify { id, rule, done } = *self;
        let decided = apply(id, rule, b);
        Box::new(move |outcome| {
            let r = match (outcome, decided) {
                (Err(f), _) => Err(E::from(f.to_db_error())),
                (Ok(_), Decided::Answer(r)) => r,
                (
                    Ok(c),
                    Decided::Stored {
                        mut job,
                        points,
                        first,
                        now,
                    },
                ) => {
                    if job.number == 0 {
                        job.number = c.numbers.get(&id).copied().unwrap_or_default();
                    }
                    let ids = c.point_ids.iter().skip(first);
                    let points = points
                        .into_iter()
                        .zip(ids)
                        .map(|(p, &pid)| Metric {
                            id: pid,
                            job_id: id,
                            epoch: p.epoch,
                            step: p.step,
                            loss: p.loss,
                            accuracy: p.accuracy,
                            metrics: p.metrics,
                            created_at: now,
                        })
                        .collect();
                    Ok(Modified::Stored { job, points })
                }
            };
            let _ = done.send(r);
        })
    }

    fn fail(self: Box<Self>, failure: &Failure) {
        let _ = self.done.send(Err(E::from(failure.to_db_error())));
    }
}

/// What a rule came to, before the commit.
enum Decided<E> {
    /// The answer, whatever the commit does (unless it fails).
    Answer(Result<Modified, E>),
    /// Stored: the answer needs the commit's numbers and point ids.
    Stored {
        job: Box<Job>,
        points: Vec<MetricPoint>,
        /// Index of the first point in the batch's points.
        first: usize,
        now: DateTime<Utc>,
    },
}

/// Runs `rule` on job `id` as the batch has it.
fn apply<E, F>(id: Uuid, rule: F, b: &mut Batch) -> Decided<E>
where
    F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<Changes, E>,
    E: From<DbError>,
{
    let Some(slot) = b.rows.get_mut(&id) else {
        return Decided::Answer(Ok(Modified::Missing));
    };
    // Later than the job's last change even if the clock stepped back:
    // the per-job event stream resumes by `updated_at`.
    let now = b
        .now
        .max(slot.rec.job.updated_at + chrono::Duration::microseconds(1));
    let mut rec = slot.rec.clone();
    let changes = match std::panic::catch_unwind(AssertUnwindSafe(|| rule(&mut rec, now))) {
        Ok(Ok(changes)) => changes,
        Ok(Err(refused)) => return Decided::Answer(Err(refused)),
        Err(p) => {
            let message = panic_message(p.as_ref());
            tracing::error!(panic = %message, "a database write panicked; undoing it");
            return Decided::Answer(Err(E::from(DbError::Panicked(message))));
        }
    };
    if !changes.job && changes.points.is_empty() {
        return Decided::Answer(Ok(Modified::Unchanged));
    }
    if changes.job {
        slot.rec = rec.clone();
        slot.dirty = true;
        slot.visible = true;
    }
    let first = b.points.len();
    b.points
        .extend(changes.points.iter().map(|p| (id, p.clone(), now)));
    Decided::Stored {
        job: Box::new(rec.job),
        points: changes.points,
        first,
        now,
    }
}

pub(super) struct Writer {
    tx: mpsc::Sender<Box<dyn Op>>,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(pool: Pool) -> Writer {
        let (tx, rx) = mpsc::channel::<Box<dyn Op>>(4096);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(pool, rx, stop.clone()));
        Writer {
            tx,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    async fn queue<T, E: From<DbError>>(
        &self,
        op: Box<dyn Op>,
        result: oneshot::Receiver<Result<T, E>>,
    ) -> Result<T, E> {
        self.tx
            .send(op)
            .await
            .map_err(|_| E::from(DbError::Closed))?;
        result.await.map_err(|_| E::from(DbError::Closed))?
    }

    pub(super) async fn create(&self, rec: JobRecord) -> Result<Job, DbError> {
        let (done, result) = oneshot::channel();
        self.queue(Box::new(Create { rec, done }), result).await
    }

    pub(super) async fn set_runner_state(
        &self,
        id: Uuid,
        state: Option<String>,
    ) -> Result<(), DbError> {
        let (done, result) = oneshot::channel();
        self.queue(Box::new(RunnerState { id, state, done }), result)
            .await
    }

    pub(super) async fn modify<E, F>(&self, id: Uuid, rule: F) -> Result<Modified, E>
    where
        F: FnOnce(&mut JobRecord, DateTime<Utc>) -> Result<Changes, E> + Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        self.queue(Box::new(Modify { id, rule, done }), result)
            .await
    }

    /// Commits what is queued, then refuses new writes (`Closed`).
    pub(super) async fn close(&self) {
        self.stop.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the database writer task failed");
            }
        }
    }
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Box<dyn Op>>, stop: CancellationToken) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            n = rx.recv_many(&mut buf, MAX_BATCH) => n,
            _ = stop.cancelled() => {
                rx.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let batch = std::mem::take(&mut buf);
        let n = batch.len();
        match pool.get().await {
            Ok(client) => commit_batch(client, batch).await,
            Err(e) => {
                let failure = Failure {
                    unavailable: true,
                    message: unavailable(&e).to_string().into(),
                };
                for op in batch {
                    op.fail(&failure);
                }
            }
        }
        metrics::histogram!("platform_db_commit_batch_size").record(n as f64);
    }
}

async fn commit_batch(client: Object, ops: Vec<Box<dyn Op>>) {
    let mut targets: Vec<Uuid> = ops
        .iter()
        .filter_map(|op| op.target())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    targets.sort();
    let (rows, now) = match lock(&client, &targets).await {
        Ok(locked) => locked,
        Err(e) => {
            let failure = Failure::from_pg(&e);
            tracing::error!(error = %failure.message, writes = ops.len(), "a database batch failed");
            discard(client).await;
            for op in ops {
                op.fail(&failure);
            }
            return;
        }
    };
    let mut batch = Batch {
        now,
        rows,
        created: Vec::new(),
        points: Vec::new(),
    };
    let finishes: Vec<Finish> = ops.into_iter().map(|op| op.run(&mut batch)).collect();
    match write(&client, &batch).await {
        Ok(committed) => {
            for finish in finishes {
                finish(Ok(&committed));
            }
        }
        Err(e) => {
            let failure = Failure::from_pg(&e);
            tracing::error!(error = %failure.message, writes = finishes.len(), "a database commit failed");
            discard(client).await;
            for finish in finishes {
                finish(Err(&failure));
            }
        }
    }
}

/// Ends whatever transaction is open and keeps the connection out of the
/// pool: after a failure its state is unknown.
async fn discard(client: Object) {
    let _ = client.batch_execute("ROLLBACK").await;
    drop(Object::take(client));
}

/// Round trip 1: `BEGIN`, the locked rows, the database's clock.
async fn lock(
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
async fn write(c: &Object, b: &Batch) -> Result<Committed, tokio_postgres::Error> {
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
