//! Keeping the database true: a `kube::runtime::watcher` on the platform's
//! Jobs and one on their pods, plus a one-second tick for timeouts.
//!
//! - A tracked Job that completes → the job is `completed` (unless it
//!   already ended); one that fails → `failed` with the reason in words and
//!   the trainer's exit code from its pod.
//! - A tracked Job deleted by someone else → `failed`, saying so. After
//!   every (re)list the watcher also looks for tracked Jobs it did not see
//!   (deleted while the watch was down) and confirms with a GET.
//! - A pod that cannot pull its image, or cannot be scheduled, for longer
//!   than its timeout → `failed`, and the platform deletes the Job.
//!
//! Watch errors (API server restarts, `410 Expired`, 5xx) are retried with
//! the watcher's exponential backoff; the loops never end on their own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use uuid::Uuid;

use super::client::{self, timed};
use super::manifest::{self, job_id_of, managed_selector};
use super::status::{self, JobFacts, JobPhase, ProblemKind};
use super::Inner;
use crate::jobs::RunnerOutcome;

/// Lines of a failed trainer's log quoted in the job's `error`.
const TAIL_LINES: i64 = 20;

/// Watches the platform's Jobs until the task is aborted.
pub(crate) async fn watch_jobs(inner: Arc<Inner>) {
    let cfg = watcher::Config::default().labels(&managed_selector());
    let mut events = watcher::watcher(inner.job_api.clone(), cfg)
        .default_backoff()
        .boxed();
    // Jobs seen since the last Init, to find the ones that vanished.
    let mut listed: Option<HashSet<Uuid>> = None;
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(job)) => {
                if let (Some(seen), Some(id)) = (listed.as_mut(), job_id_of(&job.metadata)) {
                    seen.insert(id);
                }
                on_job(&inner, job);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = listed.take() {
                    find_vanished(&inner, &seen);
                }
            }
            Ok(Event::Apply(job)) => on_job(&inner, job),
            Ok(Event::Delete(job)) => on_deleted(&inner, &job),
            Err(e) => {
                tracing::warn!(error = %e, "watching Kubernetes Jobs failed; retrying with backoff")
            }
        }
    }
}

/// Watches the platform's pods until the task is aborted.
pub(crate) async fn watch_pods(inner: Arc<Inner>) {
    let cfg = watcher::Config::default().labels(&managed_selector());
    let mut events = watcher::watcher(inner.pod_api.clone(), cfg)
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => on_pod(&inner, &pod),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watching Kubernetes pods failed; retrying with backoff")
            }
        }
    }
}

/// Checks pod problems against their timeouts once a second.
pub(crate) async fn tick(inner: Arc<Inner>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        check_problems(&inner);
    }
}

/// A tracked Job changed: settle it when it has ended.
pub(crate) fn on_job(inner: &Arc<Inner>, job: KubeJob) {
    let Some(id) = job_id_of(&job.metadata) else {
        return;
    };
    let phase = status::job_phase(&job);
    // Only the Job of the attempt being tracked settles it: an earlier
    // attempt's Job (still there until its TTL) says nothing about it.
    let name = job.metadata.name.clone().unwrap_or_default();
    let current = inner.with_tracked(id, |t| t.name == name).unwrap_or(false);
    if phase == JobPhase::Active || !current || !inner.claim(id) {
        return;
    }
    let attempt = manifest::attempt_of(&job.metadata);
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut pods = inner.pods_of(&inner.pod_api, id).await;
        // An earlier attempt's pods may still be there.
        pods.retain(|p| manifest::attempt_of(&p.metadata) == attempt);
        let end = status::pod_end(&pods);
        let outcome = match phase {
            JobPhase::Succeeded => RunnerOutcome {
                exit_code: Some(end.and_then(|e| e.exit_code).unwrap_or(0)),
                failure: None,
                attempt: Some(attempt),
                ..Default::default()
            },
            JobPhase::Failed { reason, message } => {
                let (mut text, exit_code) =
                    status::failure(&JobFacts::of(&job), &reason, &message, end.as_ref());
                if let Some(e) = &end {
                    let tail = inner.log_tail(&inner.pod_api, &e.pod, TAIL_LINES).await;
                    if !tail.is_empty() {
                        text = format!("{text}; last log lines:\n{tail}");
                    }
                }
                RunnerOutcome {
                    exit_code,
                    failure: Some(text),
                    event: status::event_of(&reason, end.as_ref()),
                    attempt: Some(attempt),
                }
            }
            JobPhase::Active => return,
        };
        inner.finish(id, outcome).await;
    });
}

/// A Job was deleted: if it was tracked, someone else deleted it.
fn on_deleted(inner: &Arc<Inner>, job: &KubeJob) {
    let Some(id) = job_id_of(&job.metadata) else {
        return;
    };
    let same = inner
        .with_tracked(id, |t| t.uid.is_none() || t.uid == job.metadata.uid)
        .unwrap_or(false);
    if !same {
        return;
    }
    let name = job.metadata.name.clone().unwrap_or_default();
    let inner = inner.clone();
    tokio::spawn(async move { settle_deleted(&inner, id, &name, false).await });
}

/// Fails a tracked job whose Job no longer exists.
pub(crate) async fn settle_deleted(inner: &Inner, id: Uuid, name: &str, while_down: bool) {
    if !inner.claim(id) {
        return;
    }
    let reason = if while_down {
        format!(
            "Kubernetes Job {name} no longer exists: it was deleted while the daemon was down (from outside the platform, or by its ttlSecondsAfterFinished), so how the trainer ended is unknown"
        )
    } else {
        format!(
            "Kubernetes Job {name} was deleted from outside the platform (not by a cancel) before it finished"
        )
    };
    inner.fail(id, reason).await;
}

/// After a (re)list: tracked Jobs that were not listed may have been
/// deleted while the watch was down; a GET tells.
fn find_vanished(inner: &Arc<Inner>, seen: &HashSet<Uuid>) {
    let missing: Vec<(Uuid, String)> = match inner.tracked.lock() {
        Ok(t) => t
            .iter()
            .filter(|(id, t)| !seen.contains(id) && !t.settling && !t.cancelling)
            .map(|(id, t)| (*id, t.name.clone()))
            .collect(),
        Err(_) => return,
    };
    for (id, name) in missing {
        let inner = inner.clone();
        tokio::spawn(async move {
            match timed(inner.job_api.get_opt(&name)).await {
                Ok(Some(job)) => on_job(&inner, job),
                Ok(None) => settle_deleted(&inner, id, &name, false).await,
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %client::describe(&e), "cannot check a Kubernetes Job the watcher did not list")
                }
            }
        });
    }
}

/// Records (or clears) what keeps a tracked job's pod from running.
fn on_pod(inner: &Arc<Inner>, pod: &Pod) {
    let Some(id) = job_id_of(&pod.metadata) else {
        return;
    };
    let problem = status::pod_problem(pod);
    inner.with_tracked(id, |t| {
        t.problem = match (problem, t.problem.take()) {
            // The same trouble continues: keep when it started.
            (Some((kind, text)), Some((old, _, since))) if kind == old => Some((kind, text, since)),
            (Some((kind, text)), _) => {
                tracing::info!(job_id = %id, problem = %text, "the trainer's pod cannot start yet");
                Some((kind, text, Instant::now()))
            }
            (None, _) => None,
        };
    });
    check_problems(inner);
}

/// Fails (and deletes) the Jobs whose pod problem outlasted its timeout.
fn check_problems(inner: &Arc<Inner>) {
    let s = &inner.settings;
    let expired: Vec<(Uuid, String, Option<String>, String)> = match inner.tracked.lock() {
        Ok(mut t) => t
            .iter_mut()
            .filter(|(_, t)| !t.settling && !t.cancelling)
            .filter_map(|(id, t)| {
                let (kind, text, since) = t.problem.as_ref()?;
                let (limit, setting, what) = match kind {
                    ProblemKind::ImagePull => (
                        s.image_pull_timeout?,
                        "KUBE_IMAGE_PULL_TIMEOUT",
                        "the trainer's image could not be pulled",
                    ),
                    ProblemKind::Unschedulable => (
                        s.unschedulable_timeout?,
                        "KUBE_UNSCHEDULABLE_TIMEOUT",
                        "the trainer's pod could not be scheduled",
                    ),
                };
                if since.elapsed() < limit {
                    return None;
                }
                t.settling = true;
                let reason = format!(
                    "{what} for {}s ({setting}): {text}; the platform deleted Kubernetes Job {}",
                    limit.as_secs(),
                    t.name
                );
                Some((*id, t.name.clone(), t.uid.clone(), reason))
            })
            .collect(),
        Err(_) => return,
    };
    for (id, name, uid, reason) in expired {
        let inner = inner.clone();
        tokio::spawn(async move {
            inner.fail(id, reason).await;
            if let Err(e) = inner.delete_job(&inner.job_api, &name, uid).await {
                tracing::warn!(job_id = %id, error = %client::describe(&e), "cannot delete the Kubernetes Job of a failed job");
            }
        });
    }
}
