//! Types shared by the client and the server: the API's wire format, defined
//! once, plus the job status state machine and field validation.

pub mod callback;
pub mod expand;
pub mod feed;
pub mod framework;
pub mod gpu;
pub mod idempotency;
pub mod job;
pub mod labels;
pub mod metric;
pub mod names;
pub mod plan;
pub mod record;
pub mod retention;
pub mod retry;
pub mod sched;
pub mod status;
pub mod storage;
pub mod sweep;
pub mod user;
pub mod validate;
pub mod webhook;

pub use callback::{BatchAck, CallbackAck, MetricBatch, TrainingUpdate, Update};
pub use feed::{FeedPage, FeedPos, FeedRead, FeedScope};
pub use framework::Framework;
pub use gpu::{AssignedGpu, GpuInfo, GpuTelemetry};
pub use job::{CreateJob, IllegalTransition, Job, JobFilter, JobListQuery};
pub use labels::{Labels, NewLabels};
pub use metric::{Metric, MetricFilter, MetricPoint, MetricQuery, Order};
pub use plan::{LaunchPlan, ProcessPlan};
pub use record::JobRecord;
pub use retention::{MetricsRetention, PrunePlan, PruneReport, PruneRequest, Pruned};
pub use retry::{AttemptEnd, AttemptEvent, Decision, RetryPolicy};
pub use sched::{Attempt, CreateScheduling, JobScheduling, QueueInfo, UpdateJob};
pub use status::JobStatus;
pub use storage::{Dataset, DatasetSummary, StoredFile};
pub use sweep::{CreateSweep, Sweep, SweepRecord, SweepSpec};
pub use user::{
    validate_user_name, AuditEntry, AuditFilter, AuditQuery, CreateToken, CreateUser, CreatedUser,
    NewToken, Principal, Role, TokenInfo, TokenOwner, TokenRecord, UpdateUser, User, Whoami,
};
pub use validate::ValidationError;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The service name `/health` and `/` report (the seed's).
pub const SERVICE_NAME: &str = "platform-backend";

/// Body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// Always `platform-backend`.
    pub service: String,
    /// Server version.
    pub version: String,
    /// Per-component checks (`database`, …): `ok` or what is wrong.
    #[serde(default)]
    pub checks: std::collections::BTreeMap<String, String>,
    /// Whether this replica runs the scheduler and watches trainers (with
    /// `--leader-election off`, always; replicas that follow stay ready).
    #[serde(default)]
    pub leader: bool,
    /// The leader lease's epoch while this replica holds it (none with
    /// `--leader-election off`); it grows with each new leader.
    #[serde(default)]
    pub epoch: Option<i64>,
    /// This replica's name (`--replica-id`).
    #[serde(default)]
    pub replica: String,
    /// The daemon's GPUs (subprocess runner) with their holders; empty
    /// without any.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
}

/// Body of `GET /`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceInfo {
    /// Always `platform-backend`.
    pub service: String,
    /// Server version.
    pub version: String,
    /// Path of the API documentation.
    pub docs: String,
    /// Path of the health check.
    pub health: String,
    /// Path of the web dashboard.
    #[serde(default)]
    pub ui: String,
}

/// Every error body: `{"detail": …}`, plus `status` on lifecycle conflicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// One readable sentence.
    pub detail: String,
    /// The job's current status (409 on a terminal job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// The offending field (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
