//! The Kubernetes objects of one training job: a batch/v1 Job running the
//! trainer, and a Secret holding the contract's secret variables, owned by
//! the Job so Kubernetes deletes it with the Job.
//!
//! Everything here is a pure function of the launch spec and the runner's
//! settings, so the golden tests and `job create --dry-run` see exactly
//! what a launch creates.
//!
//! Per-job overrides read from the job's `config` (documented in
//! `deploy/kubernetes/README.md`):
//! - `config.resources`: `{cpu, memory, gpu}`, each replacing the trainer
//!   entry's value (`gpu: 0` drops the GPU request); the job's `gpus`,
//!   when above 0, replaces the entry's `gpu` too;
//! - `config.timeout_seconds`: the Job's `activeDeadlineSeconds`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, LocalObjectReference, PodSpec, PodTemplateSpec,
    ResourceRequirements, Secret, SecretKeySelector, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;
use uuid::Uuid;

use super::config::KubeSettings;
use crate::model::ValidationError;
use crate::runner::LaunchSpec;
use crate::trainers::{Resources, DEMO};

/// Label every object the platform creates carries.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "platform";
/// Label holding the training job's id (on the Job, its pods and its Secret).
pub const JOB_ID_LABEL: &str = "platform/job-id";
/// Label holding the framework (sanitised to a label value).
pub const FRAMEWORK_LABEL: &str = "platform/framework";
/// Annotation holding the job's user.
pub const USER_ANNOTATION: &str = "platform/user";
/// Annotation holding the job's model.
pub const MODEL_ANNOTATION: &str = "platform/model";
/// Kueue's queue label.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Name of the trainer's container.
pub const CONTAINER: &str = "trainer";
/// Extended resource name of a GPU.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Where the Dockerfile installs this binary (runs the `demo` trainer).
pub const IMAGE_BINARY: &str = "/usr/local/bin/platform";

/// The label selector matching everything the platform created.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The label selector matching one job's objects.
pub fn job_selector(id: Uuid) -> String {
    format!("{},{JOB_ID_LABEL}={id}", managed_selector())
}

/// Label holding the attempt a Job runs (absent on attempt 1, whose
/// objects keep the names and labels they had before attempts existed).
pub const ATTEMPT_LABEL: &str = "platform/attempt";

/// The Job (and Secret) name of a job's `attempt`: DNS-1123, at most 49
/// characters. Attempt 1 keeps the plain name, so Jobs created before
/// retries existed are re-adopted; later ones get `-a<N>`, so a retry never
/// adopts the failed attempt's Job.
pub fn job_name(id: Uuid, attempt: u32) -> String {
    if attempt <= 1 {
        format!("platform-{id}")
    } else {
        format!("platform-{id}-a{attempt}")
    }
}

/// The attempt a platform-managed object belongs to.
pub fn attempt_of(meta: &ObjectMeta) -> u32 {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(ATTEMPT_LABEL))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

/// The training job a platform-managed object belongs to.
pub fn job_id_of(meta: &ObjectMeta) -> Option<Uuid> {
    let labels = meta.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    Uuid::parse_str(labels.get(JOB_ID_LABEL)?).ok()
}

/// The objects of one job, in creation order.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The batch/v1 Job.
    pub job: Job,
    /// The Secret with the secret variables (none when there are none).
    pub secret: Option<Secret>,
}

impl Manifests {
    /// The objects as JSON, in creation order.
    pub fn to_values(&self) -> Vec<Value> {
        let mut out = vec![serde_json::to_value(&self.job).unwrap_or(Value::Null)];
        if let Some(s) = &self.secret {
            out.push(serde_json::to_value(s).unwrap_or(Value::Null));
        }
        out
    }
}

/// Builds the Job and Secret of `spec`.
pub fn build(spec: &LaunchSpec, s: &KubeSettings) -> Result<Manifests, ValidationError> {
    let job = &spec.job;
    let trainer = &spec.trainer;
    // The attempt this launch starts.
    let attempt = job.sched.attempt + 1;
    let name = job_name(job.id, attempt);
    let overrides = Overrides::from_config(job.config.as_ref())?;

    let (image, command) = match (&trainer.image, trainer.command.is_empty()) {
        (Some(image), false) => (image.clone(), Some(trainer.command.clone())),
        // The built-in demo: this binary, from the image the Dockerfile builds.
        (image, true) if trainer.name == DEMO => (
            image.clone().unwrap_or_else(|| s.demo_image.clone()),
            Some(vec![IMAGE_BINARY.to_string(), "demo-train".to_string()]),
        ),
        // No command: the image's own entrypoint.
        (Some(image), true) => (image.clone(), None),
        (None, _) => {
            return Err(ValidationError::new(
                "framework",
                format!(
                    "{:?} has no container image: set `image` in its trainers-file entry to run it on Kubernetes",
                    trainer.name
                ),
            ))
        }
    };

    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (JOB_ID_LABEL.to_string(), job.id.to_string()),
        (FRAMEWORK_LABEL.to_string(), label_value(&job.framework)),
    ]);
    if attempt > 1 {
        labels.insert(ATTEMPT_LABEL.to_string(), attempt.to_string());
    }
    let pod_labels = labels.clone();
    if let Some(q) = s.kueue_queue_of(&job.sched.queue) {
        labels.insert(QUEUE_LABEL.to_string(), q.to_string());
    }
    let annotations = BTreeMap::from([
        (USER_ANNOTATION.to_string(), job.user_id.clone()),
        (MODEL_ANNOTATION.to_string(), job.model_name.clone()),
    ]);

    let env = spec
        .env
        .iter()
        // The daemon's PATH, HOME… mean nothing in the trainer's image.
        .filter(|(k, _)| {
            !crate::runner::env::BASE.contains(&k.as_str()) || trainer.env.contains_key(*k)
        })
        .map(|(k, v)| {
            if spec.secret_keys.contains(k) {
                EnvVar {
                    name: k.clone(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: name.clone(),
                            key: k.clone(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..Default::default()
                }
            }
        })
        .collect();

    // A job's own `gpus` (which defaults to the entry's) replaces the
    // entry's request; `config.resources.gpu` still wins over both.
    let mut base = trainer.resources.clone();
    if spec.job.sched.gpus > 0 {
        base.gpu = Some(spec.job.sched.gpus);
    }
    let resources = overrides.resources(&base);
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(image),
        command,
        working_dir: trainer.workdir.as_ref().map(|w| w.display().to_string()),
        env: Some(env),
        resources: requirements(&resources),
        ..Default::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".to_string()),
        containers: vec![container],
        node_selector: non_empty_map(&trainer.node_selector),
        tolerations: (!trainer.tolerations.is_empty())
            .then(|| trainer.tolerations.iter().map(toleration).collect()),
        image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
            s.image_pull_secrets
                .iter()
                .map(|n| LocalObjectReference { name: n.clone() })
                .collect()
        }),
        service_account_name: s.service_account.clone(),
        // Trainers talk to the platform, not to the Kubernetes API.
        automount_service_account_token: s.service_account.is_none().then_some(false),
        ..Default::default()
    };
    let k8s_job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Retries are the platform's decision, not the cluster's.
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(s.job_ttl_seconds),
            active_deadline_seconds: overrides.timeout_seconds,
            suspend: s.kueue_queue_of(&job.sched.queue).is_some().then_some(true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    };

    let secret = (!spec.secret_keys.is_empty()).then(|| Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(s.namespace.clone()),
            labels: Some(pod_labels),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        immutable: Some(true),
        string_data: Some(
            spec.secret_keys
                .iter()
                .filter_map(|k| spec.env.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
        ),
        ..Default::default()
    });
    Ok(Manifests {
        job: k8s_job,
        secret,
    })
}

/// Makes `secret` a dependent of the created `job`, so deleting the Job
/// (background propagation) deletes the Secret too.
pub fn own(secret: &mut Secret, job: &Job) {
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".to_string(),
        kind: "Job".to_string(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    }]);
}

/// Per-job settings read from the job's `config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `config.resources`.
    pub resources: Resources,
    /// `config.timeout_seconds`.
    pub timeout_seconds: Option<i64>,
}

impl Overrides {
    /// Reads `config.resources` and `config.timeout_seconds`.
    pub fn from_config(config: Option<&Value>) -> Result<Self, ValidationError> {
        let mut out = Overrides::default();
        let Some(config) = config else {
            return Ok(out);
        };
        if let Some(t) = config.get("timeout_seconds").filter(|v| !v.is_null()) {
            match t.as_i64() {
                Some(n) if n >= 1 => out.timeout_seconds = Some(n),
                _ => {
                    return Err(ValidationError::new(
                        "config.timeout_seconds",
                        format!("must be a whole number of seconds ≥ 1, got {t}"),
                    ))
                }
            }
        }
        let Some(r) = config.get("resources").filter(|v| !v.is_null()) else {
            return Ok(out);
        };
        let Some(r) = r.as_object() else {
            return Err(ValidationError::new(
                "config.resources",
                format!(
                    "must be an object like {{\"cpu\": \"4\", \"memory\": \"16Gi\", \"gpu\": 1}}, got {r}"
                ),
            ));
        };
        for (key, v) in r {
            match key.as_str() {
                "cpu" | "memory" => {
                    let q = quantity(v).ok_or_else(|| {
                        ValidationError::new(
                            format!("config.resources.{key}"),
                            format!(
                                "must be a Kubernetes quantity such as \"{}\", got {v}",
                                if key == "cpu" { "500m" } else { "16Gi" }
                            ),
                        )
                    })?;
                    if key == "cpu" {
                        out.resources.cpu = Some(q);
                    } else {
                        out.resources.memory = Some(q);
                    }
                }
                "gpu" => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => out.resources.gpu = Some(n),
                    None => {
                        return Err(ValidationError::new(
                            "config.resources.gpu",
                            format!("must be a whole number ≥ 0, got {v}"),
                        ))
                    }
                },
                other => {
                    return Err(ValidationError::new(
                        format!("config.resources.{other}"),
                        "is not supported; use cpu, memory or gpu",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The trainer entry's resources with these overrides applied.
    pub fn resources(&self, base: &Resources) -> Resources {
        Resources {
            cpu: self.resources.cpu.clone().or_else(|| base.cpu.clone()),
            memory: self
                .resources
                .memory
                .clone()
                .or_else(|| base.memory.clone()),
            gpu: self.resources.gpu.or(base.gpu),
        }
    }
}

/// A quantity from a JSON string or number, when Kubernetes would accept it.
fn quantity(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) if n.as_f64().is_some_and(|f| f > 0.0) => n.to_string(),
        _ => return None,
    };
    valid_quantity(&s).then_some(s)
}

/// Whether `s` is a Kubernetes resource quantity (`4`, `500m`, `1.5`, `16Gi`, `1e3`).
pub fn valid_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 16] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let digits_end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let exponent_ok = suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    number_ok && (SUFFIXES.contains(&suffix) || exponent_ok)
}

fn requirements(r: &Resources) -> Option<ResourceRequirements> {
    let mut q = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        q.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(mem) = &r.memory {
        q.insert("memory".to_string(), Quantity(mem.clone()));
    }
    if let Some(gpu) = r.gpu.filter(|g| *g > 0) {
        q.insert(GPU_RESOURCE.to_string(), Quantity(gpu.to_string()));
    }
    // Requests equal limits: a training pod gets what it asked for, and
    // extended resources such as GPUs must be limits anyway.
    (!q.is_empty()).then(|| ResourceRequirements {
        requests: Some(q.clone()),
        limits: Some(q),
        ..Default::default()
    })
}

fn toleration(t: &crate::trainers::Toleration) -> Toleration {
    Toleration {
        key: t.key.clone(),
        operator: t.operator.clone(),
        value: t.value.clone(),
        effect: t.effect.clone(),
        toleration_seconds: t.toleration_seconds,
    }
}

fn non_empty_map(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.clone())
}

/// `s` as a valid label value: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending alphanumeric.
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        for ok in ["4", "500m", "1.5", "16Gi", "1e3", "0.5", "128974848", "2E6"] {
            assert!(valid_quantity(ok), "{ok}");
        }
        for bad in ["", "lots", "4 cores", "16GB", "1..5", ".", "-1", "1e"] {
            assert!(!valid_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn overrides_parse_and_name_the_bad_key() {
        let o = Overrides::from_config(Some(
            &json!({"resources": {"cpu": 2, "memory": "8Gi", "gpu": 0}, "timeout_seconds": 60}),
        ))
        .unwrap();
        assert_eq!(o.resources.cpu.as_deref(), Some("2"));
        assert_eq!(o.resources.gpu, Some(0));
        assert_eq!(o.timeout_seconds, Some(60));
        let base = Resources {
            cpu: Some("4".into()),
            memory: None,
            gpu: Some(2),
        };
        let merged = o.resources(&base);
        assert_eq!(merged.cpu.as_deref(), Some("2"));
        assert_eq!(merged.gpu, Some(0));
        let limits = requirements(&merged).unwrap().limits.unwrap();
        assert!(!limits.contains_key(GPU_RESOURCE));
        let err = |c: Value| Overrides::from_config(Some(&c)).unwrap_err().to_string();
        assert!(err(json!({"resources": {"gpu": "lots"}})).contains("config.resources.gpu"));
        assert!(err(json!({"resources": {"cpus": 1}})).contains("config.resources.cpus"));
        assert!(err(json!({"resources": {"memory": "16GB"}})).contains("config.resources.memory"));
        assert!(err(json!({"timeout_seconds": 0})).contains("config.timeout_seconds"));
        assert!(err(json!({"resources": 5})).contains("config.resources"));
    }

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(label_value("ultralytics"), "ultralytics");
        assert_eq!(label_value("my trainer/v2!"), "my-trainer-v2");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        let id = Uuid::now_v7();
        assert_eq!(job_name(id, 1), format!("platform-{id}"));
        assert_eq!(job_name(id, 0), job_name(id, 1));
        assert!(job_name(id, 20).ends_with("-a20") && job_name(id, 20).len() <= 63);
    }
}
