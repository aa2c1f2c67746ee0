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
//!    changed jobs, one upsert of the attempts they started or ended, one
//!    multi-row `INSERT` of points, one of webhook deliveries for the
//!    status changes (the outbox: an event is queued if and only if its
//!    change commits), one of audit entries (a request's entry commits
//!    with its change), and `COMMIT`: pipelined, the second round trip.
//!
//! Callers are answered only after `COMMIT`; a failed batch fails every
//! write in it. Nothing here sends `NOTIFY` (it would serialise commits);
//! a notifier for other replicas belongs after [`Writer`]'s commit, beside
//! the hub's publish.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::batch::{Batch, Committed, Event, Point, Slot};
use super::round_trips::{lock, write};
use super::unavailable;
use crate::db::{panic_message, webhook, Changes, DbError, Modified};
use crate::model::webhook::job_event;
use crate::model::{AuditEntry, Job, JobRecord, Metric, MetricPoint};

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

/// Sends a write's answer once the batch's fate is known.
type Finish = Box<dyn FnOnce(Result<&Committed, &Failure>) + Send>;

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
    /// Stored with the job, at its creation time and naming it.
    audit: Option<AuditEntry>,
    done: oneshot::Sender<Result<Job, DbError>>,
}

impl Op for Create {
    fn target(&self) -> Option<Uuid> {
        None
    }

    fn run(self: Box<Self>, b: &mut Batch) -> Finish {
        let Create {
            mut rec,
            audit,
            done,
        } = *self;
        (rec.job.created_at, rec.job.updated_at) = (b.now, b.now);
        let id = rec.job.id;
        if let Some(mut a) = audit {
            (a.at, a.target) = (b.now, Some(id.to_string()));
            b.audits.push(a);
        }
        let job = rec.job.clone();
        b.rows.insert(
            id,
            Slot {
                rec,
                new: true,
                dirty: true,
                visible: true,
                stored_attempts: Vec::new(),
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

/// An audit entry of its own (a request that changed no job).
struct Audit {
    entry: AuditEntry,
    done: oneshot::Sender<Result<(), DbError>>,
}

impl Op for Audit {
    fn target(&self) -> Option<Uuid> {
        None
    }

    fn run(self: Box<Self>, b: &mut Batch) -> Finish {
        let Audit { mut entry, done } = *self;
        entry.at = b.now;
        b.audits.push(entry);
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
                            attempt: job.sched.attempt.max(1),
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
    if !changes.job && changes.points.is_empty() && changes.audit.is_none() {
        return Decided::Answer(Ok(Modified::Unchanged));
    }
    if changes.job {
        // Only a status change is an event (metrics and progress never).
        let event = (rec.job.status != slot.rec.job.status)
            .then(|| job_event(rec.job.status))
            .flatten();
        if let Some(event) = event {
            match webhook::job_payload(&rec.job, event, &now) {
                Ok(payload) => b.events.push(Event {
                    job: id,
                    event,
                    payload,
                    framework: rec.job.framework.clone(),
                    user: rec.job.user_id.clone(),
                    at: now,
                }),
                Err(e) => return Decided::Answer(Err(E::from(e))),
            }
        }
        slot.rec = rec.clone();
        slot.dirty = true;
        slot.visible = true;
    }
    if let Some(mut a) = changes.audit {
        a.at = now;
        b.audits.push(a);
    }
    let first = b.points.len();
    let attempt = rec.job.sched.attempt.max(1);
    b.points.extend(changes.points.iter().map(|p| Point {
        job: id,
        point: p.clone(),
        at: now,
        attempt,
    }));
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

    pub(super) async fn create(
        &self,
        rec: JobRecord,
        audit: Option<AuditEntry>,
    ) -> Result<Job, DbError> {
        let (done, result) = oneshot::channel();
        self.queue(Box::new(Create { rec, audit, done }), result)
            .await
    }

    pub(super) async fn audit(&self, entry: AuditEntry) -> Result<(), DbError> {
        let (done, result) = oneshot::channel();
        self.queue(Box::new(Audit { entry, done }), result).await
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
        events: Vec::new(),
        audits: Vec::new(),
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
