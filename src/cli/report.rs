//! `platform report`: send a trainer callback from the SPEC §4 environment,
//! so trainers in any language (even shell scripts) can report progress.

use clap::Args;
use serde_json::Number;

use super::exit::Exit;
use crate::model::{JobStatus, TrainingUpdate};
use crate::trainer::{ReportError, Reporter};

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
    /// Idempotency sequence (increasing per job); a retried sequence is applied once.
    #[arg(long)]
    pub sequence: Option<i64>,
    /// Retries for transient failures (with exponential backoff).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

fn parse_status(s: &str) -> Result<JobStatus, String> {
    s.parse::<JobStatus>().map_err(|e| e.to_string())
}

/// Runs `platform report`; exit code 3 when the job already ended.
pub async fn run(a: ReportArgs) -> anyhow::Result<()> {
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
    let reporter = Reporter::from_env(a.retries)?;
    match reporter.send(&update).await {
        Ok(()) => Ok(()),
        Err(ReportError::Ended(s)) => Err(Exit {
            code: EXIT_ENDED,
            message: format!("the job is already {s}; stop training"),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}
