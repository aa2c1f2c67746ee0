//! The GPU rules of the lifecycle service: recording a launch's GPUs
//! before its trainer starts, and storing GPU telemetry as a running job's
//! system metrics (points keyed `system/gpu<N>/…`, stored apart from its
//! training points and read with `?system=true`).

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{JobError, Jobs};
use crate::model::{AssignedGpu, Job, JobStatus};

impl Jobs {
    /// Records the GPUs a launch of pending job `id` is given, before its
    /// trainer starts (so a restarted daemon knows who holds what).
    pub async fn assign_gpus(&self, id: Uuid, gpus: Vec<AssignedGpu>) -> Result<Job, JobError> {
        self.change(id, move |rec, now| {
            if rec.job.status == JobStatus::Pending && rec.job.sched.assigned_gpus != gpus {
                rec.job.sched.assigned_gpus = gpus;
                rec.job.updated_at = now;
            }
            Ok(())
        })
        .await
    }

    /// Stores one sample of `id`'s GPUs as its system metrics while the job
    /// is running (a sample of an ended job is dropped); `series` is what
    /// downsampling keeps the extremes of (mean utilisation).
    pub async fn record_system_metrics(
        &self,
        id: Uuid,
        metrics: Map<String, Value>,
        series: f64,
    ) -> Result<(), JobError> {
        let rec = self.db.job(id).await?.ok_or(JobError::NotFound(id))?;
        if rec.job.status != JobStatus::Running || metrics.is_empty() {
            return Ok(());
        }
        Ok(self
            .db
            .add_system_metrics(id, rec.job.sched.attempt, metrics, series)
            .await?)
    }
}
