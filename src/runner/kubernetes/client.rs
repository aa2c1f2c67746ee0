//! Connecting to the Kubernetes API server: which configuration to use
//! (`KUBE_CONFIG_PATH`, in-cluster, or the default kubeconfig), and the
//! start-up check that the API server answers and grants every permission
//! the runner uses — saying exactly which are missing.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::config::KubeSettings;

/// One RBAC rule the runner needs in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` is the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` when there is one.
    pub resource: &'static str,
    /// Verbs used.
    pub verbs: &'static [&'static str],
}

/// Every permission the runner uses, and why; `deploy/kubernetes/rbac.yaml`
/// grants exactly these (a test keeps the two equal).
pub const PERMISSIONS: &[Permission] = &[
    // create: launch; get: re-adopt after a restart, confirm a vanished Job;
    // list+watch: the Job watcher; delete: cancel, and give up on a pod
    // that cannot pull its image or be scheduled.
    Permission {
        group: "batch",
        resource: "jobs",
        verbs: &["create", "delete", "get", "list", "watch"],
    },
    // create: the per-job Secret (it is deleted with its Job by the
    // garbage collector, so no delete is needed).
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["create"],
    },
    // list: find a job's pod (logs, exit codes); watch: the pod watcher.
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
    },
    // get: read a trainer's log.
    Permission {
        group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
];

/// The Kubernetes client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No usable configuration.
    #[error("{0}")]
    Config(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server at {url}: {reason}")]
    Unreachable {
        /// The API server URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Permissions are missing.
    #[error("the Kubernetes credentials lack permissions the kubernetes runner needs in namespace {namespace:?}: missing {missing}; apply deploy/kubernetes/rbac.yaml or grant these verbs to the daemon's service account")]
    Forbidden {
        /// The namespace checked.
        namespace: String,
        /// E.g. `delete on jobs.batch, get on pods/log`.
        missing: String,
    },
}

/// Loads the configuration: `KUBE_CONFIG_PATH` when set, else the
/// in-cluster service account when running in a pod, else `$KUBECONFIG` /
/// `~/.kube/config`.
pub async fn load_config(s: &KubeSettings) -> Result<Config, ConnectError> {
    let options = KubeConfigOptions {
        context: s.context.clone(),
        ..Default::default()
    };
    if let Some(path) = &s.config_path {
        let kc = Kubeconfig::read_from(path).map_err(|e| {
            ConnectError::Config(format!(
                "cannot read the kubeconfig {} (KUBE_CONFIG_PATH): {e}",
                path.display()
            ))
        })?;
        return Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| {
                ConnectError::Config(format!(
                    "the kubeconfig {} (KUBE_CONFIG_PATH) is not usable: {e}",
                    path.display()
                ))
            });
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() && s.context.is_none() {
        return Config::incluster().map_err(|e| {
            ConnectError::Config(format!(
                "running in a pod, but the in-cluster service account configuration is not usable: {e}"
            ))
        });
    }
    Config::from_kubeconfig(&options).await.map_err(|e| {
        ConnectError::Config(format!(
            "no Kubernetes configuration found ({e}): run the daemon in a pod with a service account, set KUBE_CONFIG_PATH, or create ~/.kube/config"
        ))
    })
}

/// A client for `config`.
pub fn client(config: Config) -> Result<Client, ConnectError> {
    let url = config.cluster_url.to_string();
    Client::try_from(config).map_err(|e| {
        ConnectError::Config(format!(
            "cannot set up a Kubernetes client for {url}: {}",
            describe(&e)
        ))
    })
}

/// Checks every [`PERMISSIONS`] verb with a SelfSubjectAccessReview (which
/// every authenticated identity may create). Fails when the API server
/// does not answer or any verb is denied.
pub async fn check_permissions(
    client: &Client,
    url: &str,
    namespace: &str,
) -> Result<(), ConnectError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let checks = PERMISSIONS.iter().flat_map(|p| {
        let api = api.clone();
        p.verbs.iter().map(move |verb| {
            let api = api.clone();
            async move {
                let (resource, subresource) = match p.resource.split_once('/') {
                    Some((r, s)) => (r, Some(s.to_string())),
                    None => (p.resource, None),
                };
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            namespace: Some(namespace.to_string()),
                            verb: Some(verb.to_string()),
                            group: Some(p.group.to_string()),
                            resource: Some(resource.to_string()),
                            subresource,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let answer = api.create(&PostParams::default(), &review).await;
                (p, *verb, answer)
            }
        })
    });
    let answers = futures::future::join_all(checks).await;
    let mut missing = Vec::new();
    for (p, verb, answer) in answers {
        match answer {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => missing.push(format!("{verb} on {}", qualified(p))),
            Err(kube::Error::Api(status)) if status.code == 401 => {
                return Err(ConnectError::Unreachable {
                    url: url.to_string(),
                    reason: format!(
                        "it rejected the credentials (401 Unauthorized: {})",
                        status.message
                    ),
                })
            }
            Err(kube::Error::Api(status)) => {
                return Err(ConnectError::Config(format!(
                    "the Kubernetes API server at {url} refused a permission check (SelfSubjectAccessReview): {} ({})",
                    status.message, status.code
                )))
            }
            Err(e) => {
                return Err(ConnectError::Unreachable {
                    url: url.to_string(),
                    reason: describe(&e),
                })
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ConnectError::Forbidden {
            namespace: namespace.to_string(),
            missing: missing.join(", "),
        })
    }
}

/// `jobs.batch`, `secrets`, `pods/log`: how `kubectl auth can-i` names them.
fn qualified(p: &Permission) -> String {
    if p.group.is_empty() {
        p.resource.to_string()
    } else {
        match p.resource.split_once('/') {
            Some((r, sub)) => format!("{r}.{}/{sub}", p.group),
            None => format!("{}.{}", p.resource, p.group),
        }
    }
}

/// A kube error as one readable phrase: the API server's message, or the
/// innermost transport error ("connection refused").
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => crate::errors::root_cause(other),
    }
}

/// How long one API request may take before the runner gives up on it
/// (the client has no read timeout, so that watches and followed logs
/// can stay open).
pub(crate) const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `request`, failing when the API server does not answer within [`API_TIMEOUT`].
pub(crate) async fn timed<T>(
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(API_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!(
                    "no answer from the Kubernetes API server within {}s",
                    API_TIMEOUT.as_secs()
                )
                .into(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_named_like_kubectl() {
        let names: Vec<String> = PERMISSIONS.iter().map(qualified).collect();
        assert_eq!(names, ["jobs.batch", "secrets", "pods", "pods/log"]);
    }
}
