//! Reading Kubernetes status: whether a Job has ended and how, what is
//! wrong with a pod that does not start, and the reason, in words, that a
//! failed job's `error` gets. Pure functions of the objects the API
//! returned, so every case is unit-tested without a cluster.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

use super::manifest::CONTAINER;
use crate::model::AttemptEvent;
use crate::runner::supervisor::signal_name;

/// Where a Job is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum JobPhase {
    /// Not ended (pods pending or running, or suspended by a queue).
    Active,
    /// The `Complete` condition is true.
    Succeeded,
    /// The `Failed` condition is true.
    Failed {
        /// Its reason, e.g. `BackoffLimitExceeded`, `DeadlineExceeded`.
        reason: String,
        /// Its message.
        message: String,
    },
}

/// The phase from the Job's conditions.
pub fn job_phase(job: &Job) -> JobPhase {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    for c in conditions.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return JobPhase::Succeeded,
            "Failed" => {
                return JobPhase::Failed {
                    reason: c.reason.clone().unwrap_or_else(|| "Failed".into()),
                    message: c.message.clone().unwrap_or_default(),
                }
            }
            _ => {}
        }
    }
    JobPhase::Active
}

/// A pod that cannot get going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The image cannot be pulled.
    ImagePull,
    /// No node can take the pod.
    Unschedulable,
}

/// Waiting reasons that mean the image cannot be pulled.
const PULL_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];

/// What keeps `pod` from running, if anything, with the cluster's words.
pub fn pod_problem(pod: &Pod) -> Option<(ProblemKind, String)> {
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten();
    for cs in containers {
        let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or_default();
        if PULL_REASONS.contains(&reason) {
            let mut text = format!("image {:?}: {reason}", cs.image);
            if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                text.push_str(&format!(": {m}"));
            }
            return Some((ProblemKind::ImagePull, text));
        }
    }
    if status.phase.as_deref() == Some("Pending") {
        let unschedulable = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(c) = unschedulable {
            return Some((
                ProblemKind::Unschedulable,
                c.message
                    .clone()
                    .unwrap_or_else(|| "no node can run it".into()),
            ));
        }
    }
    None
}

/// How a job's trainer container ended, as its pod shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEnd {
    /// The pod.
    pub pod: String,
    /// The container's exit code, when it ran and terminated.
    pub exit_code: Option<i32>,
    /// Why it ended: the container's reason (`OOMKilled`, `Error`,
    /// `Completed`) or the pod's (`Evicted`).
    pub reason: Option<String>,
    /// The cluster's message.
    pub message: Option<String>,
    /// The signal that ended it, when known.
    pub signal: Option<i32>,
}

/// The retry policy's event for a failed Job: out of memory, evicted or
/// preempted (a disruption), or none (a plain exit, judged by its code).
pub fn event_of(job_reason: &str, end: Option<&PodEnd>) -> Option<AttemptEvent> {
    let pod_reason = end.and_then(|e| e.reason.as_deref());
    match (job_reason, pod_reason) {
        (_, Some("OOMKilled")) => Some(AttemptEvent::Oom),
        (_, Some("Evicted" | "Preempting" | "DisruptionTarget" | "TerminationByKubelet")) => {
            Some(AttemptEvent::Evicted)
        }
        (_, Some("NodeLost")) => Some(AttemptEvent::Vanished),
        _ => None,
    }
}

/// The trainer's end in the newest of `pods` that has one.
pub fn pod_end(pods: &[Pod]) -> Option<PodEnd> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    pods.into_iter().rev().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let terminated: Option<&ContainerStateTerminated> = status
            .container_statuses
            .iter()
            .flatten()
            .filter(|c| c.name == CONTAINER)
            .find_map(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
            });
        match terminated {
            Some(t) => Some(PodEnd {
                pod: name,
                exit_code: Some(t.exit_code),
                reason: t.reason.clone(),
                message: t.message.clone().filter(|m| !m.is_empty()),
                signal: t.signal,
            }),
            None if status.phase.as_deref() == Some("Failed") => Some(PodEnd {
                pod: name,
                exit_code: None,
                reason: status.reason.clone(),
                message: status.message.clone(),
                signal: None,
            }),
            None => None,
        }
    })
}

/// Facts about the Job that explain a failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFacts {
    /// The Job's name.
    pub name: String,
    /// `activeDeadlineSeconds`.
    pub deadline_seconds: Option<i64>,
    /// The trainer container's memory limit.
    pub memory_limit: Option<String>,
}

impl JobFacts {
    /// The facts of `job`.
    pub fn of(job: &Job) -> Self {
        let spec = job.spec.as_ref();
        let memory_limit = spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| q.0.clone());
        Self {
            name: job.metadata.name.clone().unwrap_or_default(),
            deadline_seconds: spec.and_then(|s| s.active_deadline_seconds),
            memory_limit,
        }
    }
}

/// The readable reason and exit code of a failed Job.
pub fn failure(
    facts: &JobFacts,
    reason: &str,
    message: &str,
    end: Option<&PodEnd>,
) -> (String, Option<i32>) {
    let job = format!("Kubernetes Job {} failed: {reason}", facts.name);
    if reason == "DeadlineExceeded" {
        let limit = facts
            .deadline_seconds
            .map(|s| format!(" of {s}s (config.timeout_seconds)"))
            .unwrap_or_default();
        return (
            format!(
                "the job ran longer than its time limit{limit} and Kubernetes stopped it ({job})"
            ),
            end.and_then(|e| e.exit_code),
        );
    }
    let Some(end) = end else {
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        };
        return (format!("{job}{detail}"), None);
    };
    let pod = &end.pod;
    let text = match (end.reason.as_deref(), end.exit_code) {
        (Some("OOMKilled"), code) => {
            let limit = facts
                .memory_limit
                .as_ref()
                .map(|m| format!(" of {m}"))
                .unwrap_or_default();
            let code = code.map(|c| format!(", exit code {c}")).unwrap_or_default();
            format!(
                "the trainer ran out of memory: its container was OOMKilled (memory limit{limit}{code}; raise config.resources.memory); pod {pod}, {job}"
            )
        }
        (_, Some(code)) if code > 128 => {
            let sig = end.signal.unwrap_or(code - 128);
            format!(
                "the trainer was killed by signal {sig} ({}), exit code {code}; pod {pod}, {job}",
                signal_name(sig)
            )
        }
        (_, Some(code)) => format!("the trainer exited with code {code}; pod {pod}, {job}"),
        (Some(r), None) => format!(
            "the trainer's pod {pod} ended: {r}{}; {job}",
            end.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        (None, None) => format!("the trainer's pod {pod} failed; {job}"),
    };
    (text, end.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "platform-x"},
            "spec": {"activeDeadlineSeconds": 60, "template": {"spec": {"containers": [
                {"name": "trainer", "resources": {"limits": {"memory": "2Gi"}}}]}}},
            "status": status
        }))
        .unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "platform-x-abcde", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn job_phases() {
        assert_eq!(job_phase(&job(json!({"active": 1}))), JobPhase::Active);
        assert_eq!(
            job_phase(&job(
                json!({"conditions": [{"type": "Complete", "status": "True"}]})
            )),
            JobPhase::Succeeded
        );
        assert_eq!(
            job_phase(&job(json!({"conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}]}))),
            JobPhase::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into()
            }
        );
        assert_eq!(
            job_phase(&job(
                json!({"conditions": [{"type": "Failed", "status": "False"}]})
            )),
            JobPhase::Active
        );
    }

    #[test]
    fn oom_killed_names_the_limit() {
        let p = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        let end = pod_end(&[p]).unwrap();
        let facts = JobFacts::of(&job(json!({})));
        let (text, code) = failure(&facts, "BackoffLimitExceeded", "", Some(&end));
        assert_eq!(code, Some(137));
        assert!(text.contains("OOMKilled"), "{text}");
        assert!(text.contains("2Gi"), "{text}");
        assert!(text.contains("BackoffLimitExceeded"), "{text}");
    }

    #[test]
    fn exit_codes_deadlines_and_evictions() {
        let facts = JobFacts::of(&job(json!({})));
        let exited = PodEnd {
            pod: "p".into(),
            exit_code: Some(3),
            reason: Some("Error".into()),
            message: None,
            signal: None,
        };
        let (text, code) = failure(&facts, "BackoffLimitExceeded", "", Some(&exited));
        assert!(text.starts_with("the trainer exited with code 3"), "{text}");
        assert_eq!(code, Some(3));
        let killed = PodEnd {
            exit_code: Some(143),
            ..exited.clone()
        };
        assert!(failure(&facts, "BackoffLimitExceeded", "", Some(&killed))
            .0
            .contains("SIGTERM"));
        let (text, _) = failure(&facts, "DeadlineExceeded", "", None);
        assert!(text.contains("time limit of 60s"), "{text}");
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        let end = pod_end(&[evicted]).unwrap();
        let (text, code) = failure(&facts, "BackoffLimitExceeded", "", Some(&end));
        assert!(text.contains("Evicted: The node was low"), "{text}");
        assert_eq!(code, None);
        let (text, _) = failure(&facts, "PodFailurePolicy", "rule 0 matched", None);
        assert_eq!(
            text,
            "Kubernetes Job platform-x failed: PodFailurePolicy (rule 0 matched)"
        );
    }

    #[test]
    fn problems_image_pull_and_unschedulable() {
        let pulling = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "trainer", "image": "registry/x:1", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
            "message": "Back-off pulling image"}}}]}));
        let (kind, text) = pod_problem(&pulling).unwrap();
        assert_eq!(kind, ProblemKind::ImagePull);
        assert!(text.contains("ImagePullBackOff") && text.contains("registry/x:1"));
        let pending = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
        );
        let (kind, text) = pod_problem(&pending).unwrap();
        assert_eq!(kind, ProblemKind::Unschedulable);
        assert!(text.contains("Insufficient nvidia.com/gpu"));
        let creating = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(pod_problem(&creating), None);
    }
}
