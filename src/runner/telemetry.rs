//! GPU telemetry of local trainers: while jobs hold GPUs, one `nvidia-smi`
//! query every few seconds samples them all; each sample is kept as the
//! GPU's latest (`GET /api/v1/gpus`, `/metrics`) and stored as its job's
//! system metrics (`system/gpu<N>/…` points, see
//! [`crate::model::gpu::SYSTEM_PREFIX`]). A GPU at 0 % for longer than
//! `idle_after` under a running job flags the GPU `idle` and is logged
//! once per stretch.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Number, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::gpus::{smi, Gpus};
use crate::jobs::Jobs;
use crate::model::gpu::telemetry_metrics;

/// How often and when a GPU counts as idle.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Between samples.
    pub every: Duration,
    /// 0 % utilisation this long under a running job flags the GPU idle.
    pub idle_after: Duration,
}

/// Samples until `stop` is cancelled.
pub async fn run(jobs: Arc<Jobs>, gpus: Arc<Gpus>, settings: Settings, stop: CancellationToken) {
    gpus.set_idle_after(settings.idle_after);
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_failure = false;
    let mut flagged: HashSet<(u32, Uuid)> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if gpus.holders().is_empty() {
            continue;
        }
        let samples = match smi::sample().await {
            Ok(s) => {
                warned_failure = false;
                s
            }
            Err(e) => {
                if !warned_failure {
                    tracing::warn!(error = %e, "cannot sample GPU telemetry; retrying quietly");
                    warned_failure = true;
                }
                continue;
            }
        };
        let held = gpus.record(&samples);
        let mut per_job: BTreeMap<Uuid, (Map<String, Value>, Vec<f64>)> = BTreeMap::new();
        for (index, t) in &samples {
            let Some((job, idle_since)) = held.get(index) else {
                continue;
            };
            let (point, utils) = per_job.entry(*job).or_default();
            utils.extend(t.utilization);
            for (key, v) in telemetry_metrics(*index, t) {
                if let Some(n) = Number::from_f64(v) {
                    point.insert(key, Value::Number(n));
                }
            }
            let idle = idle_since.is_some_and(|since| {
                (t.at - since).to_std().unwrap_or_default() >= settings.idle_after
            });
            if idle && flagged.insert((*index, *job)) {
                tracing::warn!(job_id = %job, gpu = index, idle_s = settings.idle_after.as_secs(), "a GPU held by a running job has been idle (0 % utilisation)");
            } else if !idle {
                flagged.remove(&(*index, *job));
            }
        }
        flagged.retain(|(i, j)| held.get(i).is_some_and(|(job, _)| job == j));
        for (job, (metrics, utils)) in per_job {
            let mean = utils.iter().sum::<f64>() / utils.len().max(1) as f64;
            if let Err(e) = jobs.record_system_metrics(job, metrics, mean).await {
                tracing::debug!(job_id = %job, error = %e, "GPU telemetry not stored");
            }
        }
    }
}
