//! `GET /api/v1/gpus`: the daemon's GPUs (subprocess runner), which job
//! holds each and their latest telemetry; any signed-in user may list them.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::responses::{Unauthorized, Unavailable};
use super::AppState;
use crate::model::GpuInfo;

/// The GPU routes (user routes).
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/gpus", get(list_gpus))
}

/// Every GPU local trainers may use, by index: its holder (from the
/// launch until the trainer exits) and latest sample. Empty without GPUs
/// and with the Kubernetes runner.
#[utoipa::path(get, path = "/api/v1/gpus", tag = "gpus",
    responses(
        (status = 200, description = "GPUs by index", body = Vec<GpuInfo>),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_gpus(State(st): State<AppState>) -> Json<Vec<GpuInfo>> {
    Json(st.gpus.list())
}

/// `/metrics` lines: per GPU, who holds it and its latest sample.
pub fn prometheus_text(st: &AppState) -> String {
    let gpus = st.gpus.list();
    if gpus.is_empty() {
        return String::new();
    }
    let mut text = String::new();
    let gauge =
        |text: &mut String, name: &str, help: &str, value: &dyn Fn(&GpuInfo) -> Option<f64>| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for g in &gpus {
                if let Some(v) = value(g) {
                    text.push_str(&format!(
                        "{name}{{gpu=\"{}\",uuid=\"{}\"}} {v}\n",
                        g.index, g.uuid
                    ));
                }
            }
        };
    gauge(
        &mut text,
        "platform_gpu_in_use",
        "Whether a job holds the GPU (1) or not (0).",
        &|g| Some(f64::from(u8::from(g.job_id.is_some()))),
    );
    gauge(
        &mut text,
        "platform_gpu_idle",
        "Whether a running job's GPU has been idle too long (1).",
        &|g| Some(f64::from(u8::from(g.idle))),
    );
    gauge(
        &mut text,
        "platform_gpu_utilization_percent",
        "Latest GPU utilisation sample.",
        &|g| g.telemetry.as_ref()?.utilization,
    );
    gauge(
        &mut text,
        "platform_gpu_memory_used_mib",
        "Latest GPU memory in use.",
        &|g| g.telemetry.as_ref()?.memory_used_mib,
    );
    gauge(
        &mut text,
        "platform_gpu_temperature_celsius",
        "Latest GPU temperature.",
        &|g| g.telemetry.as_ref()?.temperature_c,
    );
    gauge(
        &mut text,
        "platform_gpu_power_watts",
        "Latest GPU power draw.",
        &|g| g.telemetry.as_ref()?.power_w,
    );
    text
}
