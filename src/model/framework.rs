//! Trainer framework descriptions as the API shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Kubernetes resources for a trainer's pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU request/limit, e.g. `"4"`.
    pub cpu: Option<String>,
    /// Memory request/limit, e.g. `"16Gi"`.
    pub memory: Option<String>,
    /// GPU count (`nvidia.com/gpu`).
    pub gpu: Option<u32>,
}

/// A Kubernetes toleration, as in a pod spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Taint key.
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    pub operator: Option<String>,
    /// Taint value.
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: Option<String>,
    /// For `NoExecute`: how long the pod stays bound.
    pub toleration_seconds: Option<i64>,
}

/// A registered framework (`GET /api/v1/training/frameworks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Framework {
    /// Name used in `job create --framework`.
    pub name: String,
    /// `builtin`, `directory` or `file`.
    pub source: String,
    /// argv of the trainer (empty for the built-in demo).
    pub command: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Names of the extra environment variables (values are not shown).
    pub env: Vec<String>,
    /// Container image (Kubernetes runner).
    pub image: Option<String>,
    /// Pod resources (Kubernetes runner).
    pub resources: Resources,
    /// Node selector (Kubernetes runner).
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations (Kubernetes runner).
    pub tolerations: Vec<Toleration>,
}
