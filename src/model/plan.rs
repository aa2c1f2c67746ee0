//! The answer of `POST /jobs?dry_run=true`: what launching a job would do,
//! as the server sends it and `platform job create --dry-run` prints it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Job;

/// What launching a job would do, without doing it (`job create --dry-run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LaunchPlan {
    /// Always true: nothing was stored or started.
    pub dry_run: bool,
    /// The runner that would launch it.
    pub runner: String,
    /// The job as it would be stored (its id is illustrative: a real create assigns a new one).
    pub job: Job,
    /// Kubernetes: the objects that would be created, in order (secret values masked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub manifests: Vec<serde_json::Value>,
    /// Subprocess: the process that would be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessPlan>,
    /// What the objects above do not show.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A trainer process as a dry run shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessPlan {
    /// argv (never run through a shell).
    pub argv: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// The complete environment, secret values masked.
    pub env: BTreeMap<String, String>,
}
