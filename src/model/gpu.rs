//! GPUs as the API shows them: a GPU of the daemon's machine with the job
//! holding it and its latest sample, and a job's assigned GPUs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Prefix of the metric keys that hold a job's system metrics (GPU
/// telemetry): `system/gpu0/utilization`, … Training metric reads leave
/// them out unless asked (`?system=true`).
pub const SYSTEM_PREFIX: &str = "system/";

/// A GPU assigned to a job: its index as `nvidia-smi` numbers it (PCI bus
/// order) and its UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct AssignedGpu {
    /// `nvidia-smi` index (the order of `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    pub index: u32,
    /// The GPU's UUID (`GPU-…`).
    pub uuid: String,
}

/// One sample of a GPU's telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuTelemetry {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Utilisation, percent (0–100).
    pub utilization: Option<f64>,
    /// Memory in use, MiB.
    pub memory_used_mib: Option<f64>,
    /// Temperature, degrees Celsius.
    pub temperature_c: Option<f64>,
    /// Power draw, watts.
    pub power_w: Option<f64>,
}

/// A GPU of the daemon's machine, as `GET /api/v1/gpus` and `platform gpu
/// list` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuInfo {
    /// `nvidia-smi` index.
    pub index: u32,
    /// The GPU's UUID.
    pub uuid: String,
    /// Model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory, MiB.
    pub memory_total_mib: u64,
    /// The job holding it (from its launch until its trainer exits), or null.
    pub job_id: Option<Uuid>,
    /// Its latest sample, taken while a job holds it; null before any.
    #[serde(default)]
    pub telemetry: Option<GpuTelemetry>,
    /// Held by a running job and at 0 % utilisation for longer than the
    /// daemon's `--gpu-idle-after`.
    #[serde(default)]
    pub idle: bool,
}

/// The metric keys of one GPU's sample, in the job's system metrics.
pub fn telemetry_metrics(index: u32, t: &GpuTelemetry) -> Vec<(String, f64)> {
    [
        ("utilization", t.utilization),
        ("memory_used_mib", t.memory_used_mib),
        ("temperature_c", t.temperature_c),
        ("power_w", t.power_w),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (format!("{SYSTEM_PREFIX}gpu{index}/{k}"), v)))
    .collect()
}
