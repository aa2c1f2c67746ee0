//! The Kubernetes runner's settings: its `platform serve` flags and their
//! environment variables ([`KubeArgs`], flattened into the serve flags
//! under their own help heading) and what they resolve to
//! ([`KubeSettings`]).

use std::path::PathBuf;

use clap::Args;

/// Flags of the Kubernetes runner (`TRAINING_MODE=kubernetes`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kubernetes runner")]
pub struct KubeArgs {
    /// Namespace the training Jobs run in.
    #[arg(
        long,
        env = "KUBE_NAMESPACE",
        default_value = "platform",
        value_name = "NAME"
    )]
    pub kube_namespace: String,

    /// Kubeconfig file [default: in-cluster service account, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, env = "KUBE_CONFIG_PATH", value_name = "FILE")]
    pub kube_config_path: Option<PathBuf>,

    /// Kubeconfig context [default: its current context].
    #[arg(long, env = "KUBE_CONTEXT", value_name = "NAME")]
    pub kube_context: Option<String>,

    /// Kueue LocalQueue: Jobs are created suspended with the `kueue.x-k8s.io/queue-name` label.
    #[arg(long, env = "KUEUE_QUEUE", value_name = "NAME")]
    pub kueue_queue: Option<String>,

    /// Image pull secrets for trainer pods (comma-separated Secret names).
    #[arg(
        long,
        env = "KUBE_IMAGE_PULL_SECRETS",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub kube_image_pull_secrets: Vec<String>,

    /// Service account trainer pods run as [default: none, and no API token is mounted].
    #[arg(long, env = "KUBE_SERVICE_ACCOUNT", value_name = "NAME")]
    pub kube_service_account: Option<String>,

    /// Fail a job whose image cannot be pulled for this long (0: never).
    #[arg(
        long,
        env = "KUBE_IMAGE_PULL_TIMEOUT",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    pub kube_image_pull_timeout: u64,

    /// Fail a job whose pod cannot be scheduled for this long (0: never; let the cluster queue).
    #[arg(
        long,
        env = "KUBE_UNSCHEDULABLE_TIMEOUT",
        default_value_t = 1800,
        value_name = "SECONDS"
    )]
    pub kube_unschedulable_timeout: u64,

    /// ttlSecondsAfterFinished of training Jobs: how long finished Jobs and their pods (and logs) stay.
    #[arg(
        long,
        env = "KUBE_JOB_TTL_SECONDS",
        default_value_t = 86_400,
        value_name = "SECONDS"
    )]
    pub kube_job_ttl_seconds: i32,

    /// Image that runs the built-in `demo` trainer (this binary's `demo-train`) in kubernetes mode.
    #[arg(long, env = "DEMO_IMAGE", default_value = DEFAULT_DEMO_IMAGE, value_name = "IMAGE")]
    pub demo_image: String,
}

/// The image the repository's Dockerfile builds (`docker build -t platform:VERSION .`).
pub const DEFAULT_DEMO_IMAGE: &str = concat!("platform:", env!("CARGO_PKG_VERSION"));

/// The resolved Kubernetes runner settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    /// Namespace of the training Jobs.
    pub namespace: String,
    /// Explicit kubeconfig file.
    pub config_path: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// Kueue LocalQueue name.
    pub kueue_queue: Option<String>,
    /// Platform queue → Kueue LocalQueue (`kueue_queue` of `[queues.NAME]`);
    /// queues not in it use `kueue_queue`.
    pub queue_map: std::collections::BTreeMap<String, String>,
    /// Image pull secrets for trainer pods.
    pub image_pull_secrets: Vec<String>,
    /// Service account of trainer pods.
    pub service_account: Option<String>,
    /// Image pull failures are fatal after this long (`None`: never).
    pub image_pull_timeout: Option<std::time::Duration>,
    /// Unschedulable pods are fatal after this long (`None`: never).
    pub unschedulable_timeout: Option<std::time::Duration>,
    /// `ttlSecondsAfterFinished`.
    pub job_ttl_seconds: i32,
    /// Image of the `demo` trainer.
    pub demo_image: String,
}

impl KubeSettings {
    /// The Kueue LocalQueue of platform queue `queue`, if any.
    pub fn kueue_queue_of(&self, queue: &str) -> Option<&str> {
        self.queue_map
            .get(queue)
            .or(self.kueue_queue.as_ref())
            .map(String::as_str)
    }

    /// Settings from the flags (empty strings count as unset).
    pub fn from_args(a: &KubeArgs) -> Self {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let timeout = |secs: u64| (secs > 0).then(|| std::time::Duration::from_secs(secs));
        Self {
            namespace: a.kube_namespace.clone(),
            config_path: a.kube_config_path.clone(),
            context: nonempty(&a.kube_context),
            kueue_queue: nonempty(&a.kueue_queue),
            queue_map: Default::default(),
            image_pull_secrets: a
                .kube_image_pull_secrets
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            service_account: nonempty(&a.kube_service_account),
            image_pull_timeout: timeout(a.kube_image_pull_timeout),
            unschedulable_timeout: timeout(a.kube_unschedulable_timeout),
            job_ttl_seconds: a.kube_job_ttl_seconds.max(0),
            demo_image: a.demo_image.clone(),
        }
    }
}

/// Whether `s` is a DNS-1123 label.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_must_be_dns_labels() {
        for ok in ["platform", "ml-team-2", "a"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "Platform", "-x", "x-", "a_b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
