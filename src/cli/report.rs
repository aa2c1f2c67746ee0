//! `platform report`: send a trainer callback from the SPEC §4 environment,
//! so trainers in any language (even shell scripts) can report progress.
//!
//! Reports go through an on-disk queue in the trainer's working directory
//! ([`crate::trainer::spool`]): while the daemon is away a running report is
//! queued and the command returns at once, so training goes on; the next
//! invocation delivers the backlog first, in order; a terminal report waits
//! until everything is delivered, up to `PLATFORM_REPORT_TIMEOUT`.

use std::time::Duration;

use clap::Args;
use serde_json::Number;

use super::exit::Exit;
use crate::model::{JobStatus, TrainingUpdate};
use crate::trainer::delivery::{parse_timeout, TIMEOUT_ENV};
use crate::trainer::spool::{Delivery, Spool};
use crate::trainer::{Endpoint, Report, ReportError};

/// Exit code when the job already ended (the daemon answered 409).
pub const EXIT_ENDED: i32 = 3;

/// `platform report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// New status: running, completed, failed or cancelled.
    #[arg(long, default_value = "running", value_parser = parse_status)]
    pub status: JobStatus,
    /// Progress between 0 and 1.
    #[arg(long)]
    pub progress: Option<f64>,
    /// A progress line, e.g. "epoch 3/50".
    #[arg(long)]
    pub message: Option<String>,
    /// A metric as NAME=NUMBER; repeatable (epoch, step, loss, accuracy are lifted).
    #[arg(long = "metric", value_name = "NAME=NUMBER")]
    pub metrics: Vec<String>,
    /// Where the checkpoint was stored.
    #[arg(long, value_name = "URI")]
    pub checkpoint: Option<String>,
    /// Failure description.
    #[arg(long)]
    pub error: Option<String>,
    /// Idempotency sequence (increasing per job). Default: numbered from
    /// the clock, after any sequence given before.
    #[arg(long)]
    pub sequence: Option<i64>,
    /// Seconds to keep retrying while the server is unreachable (default
    /// 3600); meanwhile a running report is queued, a terminal one waits.
    #[arg(long, value_name = "SECONDS", env = TIMEOUT_ENV, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Superseded by --timeout; accepted for older scripts.
    #[arg(long, hide = true)]
    pub retries: Option<u32>,
    /// Only say the trainer is alive (keeps a job with a heartbeat timeout
    /// from being marked stalled); sends no status. Cheap: call it often.
    #[arg(long, conflicts_with_all = ["progress", "message", "metrics", "checkpoint", "error", "sequence"])]
    pub heartbeat: bool,
}

fn parse_status(s: &str) -> Result<JobStatus, String> {
    s.parse::<JobStatus>().map_err(|e| e.to_string())
}

/// Runs `platform report`; exit code 3 when the job already ended.
pub async fn run(a: ReportArgs) -> anyhow::Result<()> {
    if a.heartbeat {
        let endpoint = Endpoint::from_env(a.timeout)?;
        let id = endpoint
            .job_id()
            .ok_or_else(|| Exit::usage("cannot tell the job from CALLBACK_URL; set JOB_ID"))?;
        endpoint.bounded(endpoint.client().heartbeat(id)).await?;
        return Ok(());
    }
    let mut metrics = std::collections::BTreeMap::new();
    for m in &a.metrics {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| Exit::usage(format!("--metric {m:?}: expected NAME=NUMBER")))?;
        let n: Number = v
            .trim()
            .parse::<Number>()
            .ok()
            .filter(|n| n.as_f64().is_some_and(f64::is_finite))
            .ok_or_else(|| Exit::usage(format!("--metric {m:?}: {v:?} is not a finite number")))?;
        metrics.insert(k.trim().to_string(), n);
    }
    let update = TrainingUpdate {
        job_id: None,
        status: a.status,
        progress: a.progress,
        message: a.message,
        metrics: (!metrics.is_empty()).then_some(metrics),
        checkpoint_s3_uri: a.checkpoint,
        error: a.error,
        sequence: a.sequence,
    };
    let endpoint = Endpoint::from_env(a.timeout)?;
    // A report the daemon would reject must not wait in the queue.
    if let Some(id) = endpoint.job_id() {
        update
            .clone()
            .validate(id)
            .map_err(|e| Exit::usage(format!("invalid report: {e}")))?;
    }
    let terminal = update.status.is_terminal();
    let key = endpoint
        .job_id()
        .map_or_else(|| "job".to_string(), |id| id.to_string());
    let mut spool = Spool::open_default(&key)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the report queue in {} of the working directory or in the temporary directory: {e}",
                crate::trainer::spool::DIR_NAME
            )
        })?;
    let delivered = queue_and_deliver(&mut spool, &endpoint, update, terminal).await;
    settle(spool, delivered, terminal)
}

/// Queues `update` behind earlier reports (waiting for room when the queue
/// is full) and delivers the queue: all of it, patiently, for a terminal
/// report; otherwise as far as the daemon answers.
async fn queue_and_deliver(
    spool: &mut Spool,
    endpoint: &Endpoint,
    update: TrainingUpdate,
    terminal: bool,
) -> Result<Delivery, ReportError> {
    let mut report = Report::Callback(update);
    while let Err(back) = spool.push(report) {
        report = *back;
        spool.deliver_front(endpoint, true).await?;
    }
    // Durable before it is sent, so a crash cannot reorder or lose it.
    spool
        .save()
        .map_err(|e| ReportError::Refused(format!("cannot save the report queue: {e}")))?;
    spool.deliver_all(endpoint, terminal).await
}

/// Saves or removes the queue after a delivery and turns the outcome into
/// the exit code.
fn settle(
    spool: Spool,
    delivered: Result<Delivery, ReportError>,
    terminal: bool,
) -> anyhow::Result<()> {
    let dir = spool.dir().display().to_string();
    let queued = spool.len();
    match delivered {
        Ok(Delivery::Delivered) if terminal => remove(spool),
        Ok(Delivery::Delivered) => save(&spool),
        Ok(Delivery::Deferred(e)) => {
            save(&spool)?;
            eprintln!(
                "note: {e}; {queued} report(s) wait in {dir} for the next `platform report` (a terminal report waits until they are delivered)"
            );
            Ok(())
        }
        Err(ReportError::Ended(s)) => {
            remove(spool)?;
            Err(Exit {
                code: EXIT_ENDED,
                message: format!("the job is already {s}; stop training"),
            }
            .into())
        }
        Err(e) => {
            save(&spool)?;
            let left = if queued > 0 {
                format!(" ({queued} report(s) still wait in {dir})")
            } else {
                String::new()
            };
            Err(anyhow::anyhow!("{e}{left}"))
        }
    }
}

fn save(spool: &Spool) -> anyhow::Result<()> {
    spool.save().map_err(|e| {
        anyhow::anyhow!(
            "cannot save the report queue in {}: {e}",
            spool.dir().display()
        )
    })
}

fn remove(spool: Spool) -> anyhow::Result<()> {
    let dir = spool.dir().display().to_string();
    spool
        .remove()
        .map_err(|e| anyhow::anyhow!("cannot remove the report queue {dir}: {e}"))
}
