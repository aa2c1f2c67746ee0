//! The Kubernetes runner (`TRAINING_MODE=kubernetes`): one batch/v1 Job per
//! training job, with the secret part of the trainer's environment in a
//! Secret owned by the Job.
//!
//! - [`config`]: its `platform serve` flags and the settings they resolve to;
//! - [`client`]: configuration and the start-up permission check;
//! - [`manifest`]: the Job and Secret of a job (also `--dry-run`);
//! - [`watch`]: watchers on the platform's Jobs and pods that keep the
//!   database true (ended, failed, deleted from outside, stuck pods);
//! - [`status`]: reading Job and pod status into reasons in words.
//!
//! The runner only acts on Jobs it tracks: the ones it launched, or
//! re-adopted after a restart from the database's `running` jobs. It
//! never modifies or deletes any other Job, even one carrying its labels.
//!
//! Every Kubernetes API call it makes, and the RBAC rule allowing it:
//!
//! | call | why | rule |
//! |---|---|---|
//! | `POST …/selfsubjectaccessreviews` | start-up permission check | none (every identity) |
//! | `POST /apis/batch/v1/namespaces/NS/jobs` | launch | jobs.batch: create |
//! | `GET …/jobs/NAME` | re-adopt, adopt on 409, confirm a vanished Job | jobs.batch: get |
//! | `GET …/jobs?labelSelector=…` (list, watch) | the Job watcher | jobs.batch: list, watch |
//! | `DELETE …/jobs/NAME` (background, uid precondition) | cancel, give up on a stuck pod | jobs.batch: delete |
//! | `POST /api/v1/namespaces/NS/secrets` | the per-job Secret | secrets: create |
//! | `GET …/pods?labelSelector=…` (list, watch) | pod watcher, exit codes, log lookup | pods: list, watch |
//! | `GET …/pods/NAME/log` | logs, a failed trainer's last lines | pods/log: get |

pub mod client;
pub mod config;
pub mod manifest;
pub mod status;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures::{AsyncReadExt, StreamExt};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{LaunchSpec, LogOptions, LogStream, PlanError, Runner, RunnerError};
use crate::jobs::{Jobs, RunnerOutcome};
use crate::model::{JobRecord, LaunchPlan};
use crate::storage::Store;
use client::{timed, API_TIMEOUT};
use config::{is_dns_label, KubeSettings};
use status::ProblemKind;

/// What the runner stores on a job (`runner_state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeState {
    /// The Job's namespace.
    pub namespace: String,
    /// The Job's name.
    pub job: String,
    /// The Job's uid (guards deletes against a same-named Job).
    pub uid: Option<String>,
}

/// A Job the runner is responsible for.
#[derive(Debug)]
pub(crate) struct Tracked {
    name: String,
    uid: Option<String>,
    /// Its outcome is being recorded; ignore further events.
    settling: bool,
    /// A delete is in flight.
    cancelling: bool,
    /// What keeps its pod from running, since when.
    problem: Option<(ProblemKind, String, Instant)>,
}

/// Runs trainers as Kubernetes Jobs.
#[derive(Clone)]
pub struct KubernetesRunner {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    jobs: Arc<Jobs>,
    /// Where finished pods' logs are archived.
    store: Arc<Store>,
    client: Client,
    settings: KubeSettings,
    job_api: Api<KubeJob>,
    pod_api: Api<Pod>,
    secret_api: Api<Secret>,
    tracked: Mutex<HashMap<Uuid, Tracked>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl KubernetesRunner {
    /// Connects to the API server, checks the runner's permissions, and
    /// starts the watchers. Fails with one readable sentence when the API
    /// server cannot be reached or a permission is missing.
    pub async fn connect(
        jobs: Arc<Jobs>,
        store: Arc<Store>,
        settings: KubeSettings,
    ) -> anyhow::Result<Self> {
        let kube = Self::connect_client(&settings).await?;
        Ok(Self::with_client(jobs, store, settings, kube))
    }

    /// The API server's client, once reachable with every permission the
    /// runner needs (one readable sentence when not).
    pub async fn connect_client(settings: &KubeSettings) -> anyhow::Result<Client> {
        if !is_dns_label(&settings.namespace) {
            anyhow::bail!(
                "invalid KUBE_NAMESPACE {:?}: a namespace is at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
                settings.namespace
            );
        }
        let config = client::load_config(settings).await?;
        let url = config.cluster_url.to_string();
        let kube = client::client(config)?;
        tokio::time::timeout(
            API_TIMEOUT,
            client::check_permissions(&kube, &url, &settings.namespace),
        )
        .await
        .map_err(|_| client::ConnectError::Unreachable {
            url: url.clone(),
            reason: format!("no answer within {}s", API_TIMEOUT.as_secs()),
        })??;
        tracing::info!(api_server = %url, namespace = %settings.namespace, "connected to Kubernetes; all permissions present");
        Ok(kube)
    }

    /// A runner over an existing client (no checks); starts the watchers.
    pub fn with_client(
        jobs: Arc<Jobs>,
        store: Arc<Store>,
        settings: KubeSettings,
        kube: Client,
    ) -> Self {
        let runner = Self::idle(jobs, store, settings, kube);
        let inner = &runner.inner;
        let handles = vec![
            tokio::spawn(watch::watch_jobs(inner.clone())),
            tokio::spawn(watch::watch_pods(inner.clone())),
            tokio::spawn(watch::tick(inner.clone())),
        ];
        if let Ok(mut t) = inner.tasks.lock() {
            t.extend(handles);
        }
        runner
    }

    /// A runner that watches nothing: logs and dry runs on a replica that
    /// does not lead (the leader's runner launches and watches).
    pub fn idle(jobs: Arc<Jobs>, store: Arc<Store>, settings: KubeSettings, kube: Client) -> Self {
        let ns = settings.namespace.clone();
        let inner = Arc::new(Inner {
            jobs,
            store,
            client: kube.clone(),
            job_api: Api::namespaced(kube.clone(), &ns),
            pod_api: Api::namespaced(kube.clone(), &ns),
            secret_api: Api::namespaced(kube, &ns),
            settings,
            tracked: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        Self { inner }
    }
}

impl Inner {
    fn track(&self, id: Uuid, name: String, uid: Option<String>) {
        if let Ok(mut t) = self.tracked.lock() {
            t.insert(
                id,
                Tracked {
                    name,
                    uid,
                    settling: false,
                    cancelling: false,
                    problem: None,
                },
            );
        }
    }

    fn untrack(&self, id: Uuid) {
        if let Ok(mut t) = self.tracked.lock() {
            t.remove(&id);
        }
    }

    /// Runs `f` on the tracked entry of `id`, if any.
    pub(crate) fn with_tracked<T>(&self, id: Uuid, f: impl FnOnce(&mut Tracked) -> T) -> Option<T> {
        self.tracked.lock().ok()?.get_mut(&id).map(f)
    }

    /// Claims the right to record `id`'s outcome (once).
    fn claim(&self, id: Uuid) -> bool {
        self.with_tracked(id, |t| {
            if t.settling || t.cancelling {
                false
            } else {
                t.settling = true;
                true
            }
        })
        .unwrap_or(false)
    }

    /// Records how the job ended and stops tracking it.
    async fn finish(&self, id: Uuid, outcome: RunnerOutcome) {
        self.untrack(id);
        match &outcome.failure {
            Some(reason) => tracing::warn!(job_id = %id, %reason, "Kubernetes Job failed"),
            None => tracing::info!(job_id = %id, "Kubernetes Job completed"),
        }
        if let Err(e) = self.jobs.finish_by_runner(id, outcome).await {
            tracing::error!(job_id = %id, error = %e, "cannot record how the Kubernetes Job ended");
        }
        self.archive(id).await;
    }

    /// Copies the finished pod's log into the object store (in the
    /// background: a long log must not hold up the watcher), so it outlives
    /// the pod (`ttlSecondsAfterFinished`, cancel, manual deletion).
    async fn archive(&self, id: Uuid) {
        let store = self.store.clone();
        let Some(pod) = self.pods_of(&self.pod_api, id).await.pop() else {
            return;
        };
        let pods = self.pod_api.clone();
        tokio::spawn(async move {
            let name = pod.metadata.name.unwrap_or_default();
            let lp = LogParams {
                container: Some(manifest::CONTAINER.into()),
                ..Default::default()
            };
            if let Ok(reader) = timed(pods.log_stream(&name, &lp)).await {
                super::archive_logs(&store, id, byte_stream(Box::pin(reader))).await;
            }
        });
    }

    /// Records that the job failed for `reason` and stops tracking it.
    async fn fail(&self, id: Uuid, reason: String) {
        let outcome = RunnerOutcome {
            exit_code: None,
            failure: Some(reason),
            ..Default::default()
        };
        self.finish(id, outcome).await;
    }

    /// Deletes a Job and its dependents (pods, Secret) in the background;
    /// with `uid`, only if it is still that very Job.
    async fn delete_job(
        &self,
        api: &Api<KubeJob>,
        name: &str,
        uid: Option<String>,
    ) -> Result<(), kube::Error> {
        let mut dp = DeleteParams::background();
        dp.preconditions = uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        });
        match timed(api.delete(name, &dp)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            // The uid precondition failed: a different Job has this name now.
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                tracing::warn!(
                    job = name,
                    "not deleting Kubernetes Job: it is not the one the platform created"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The pods of job `id`, newest last (empty when they cannot be listed).
    async fn pods_of(&self, api: &Api<Pod>, id: Uuid) -> Vec<Pod> {
        let lp = ListParams::default().labels(&manifest::job_selector(id));
        match timed(api.list(&lp)).await {
            Ok(list) => {
                let mut pods = list.items;
                pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                pods
            }
            Err(e) => {
                tracing::warn!(job_id = %id, error = %client::describe(&e), "cannot list the job's pods");
                Vec::new()
            }
        }
    }

    /// The last `lines` lines of a pod's trainer log (empty on any failure).
    async fn log_tail(&self, api: &Api<Pod>, pod: &str, lines: i64) -> String {
        let lp = LogParams {
            container: Some(manifest::CONTAINER.into()),
            tail_lines: Some(lines),
            ..Default::default()
        };
        match timed(api.logs(pod, &lp)).await {
            Ok(text) => text.trim_end().to_string(),
            Err(_) => String::new(),
        }
    }

    fn apis(&self, ns: &str) -> (Api<KubeJob>, Api<Pod>) {
        if ns == self.settings.namespace {
            (self.job_api.clone(), self.pod_api.clone())
        } else {
            (
                Api::namespaced(self.client.clone(), ns),
                Api::namespaced(self.client.clone(), ns),
            )
        }
    }
}

/// The Kubernetes state stored on `rec`, or the one its id implies.
fn state_of(rec: &JobRecord, settings: &KubeSettings) -> KubeState {
    rec.runner_state
        .as_deref()
        .and_then(|s| serde_json::from_str::<KubeState>(s).ok())
        .unwrap_or_else(|| KubeState {
            namespace: settings.namespace.clone(),
            job: manifest::job_name(rec.job.id, rec.job.sched.attempt),
            uid: None,
        })
}

/// Launch errors: a rejected object fails the job; anything else (API
/// server down, quota, missing namespace) is retried by the scheduler.
/// The Secret of an adopted Job is the earlier launch's: its trainer holds
/// that token, not the one this launch minted, so the job takes it over.
/// If it cannot be read, the minted token stays (the trainer's calls would
/// then be refused: logged).
async fn adopt_token(inner: &Inner, id: Uuid, name: &str) {
    let existing = match timed(inner.secret_api.get_opt(name)).await {
        Ok(secret) => secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(crate::runner::env::TOKEN_KEY))
            .and_then(|v| String::from_utf8(v.0).ok()),
        Err(e) => {
            tracing::warn!(job_id = %id, error = %client::describe(&e), "cannot read the adopted Job's Secret; its trainer's token is not known");
            return;
        }
    };
    match existing {
        Some(token) => {
            if let Err(e) = inner.jobs.adopt_token(id, token).await {
                tracing::warn!(job_id = %id, error = %e, "cannot take over the adopted Job's token");
            }
        }
        None => tracing::warn!(job_id = %id, "the adopted Job's Secret holds no callback token"),
    }
}

fn launch_error(what: &str, e: kube::Error) -> RunnerError {
    match &e {
        kube::Error::Api(s) if s.code == 400 || s.code == 422 => {
            RunnerError::Start(format!("Kubernetes rejected the {what}: {}", s.message))
        }
        _ => RunnerError::Environment(format!(
            "cannot create the Kubernetes {what}: {}",
            client::describe(&e)
        )),
    }
}

#[async_trait]
impl Runner for KubernetesRunner {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn launch(&self, spec: LaunchSpec) -> Result<Option<String>, RunnerError> {
        let inner = &self.inner;
        let id = spec.job.id;
        let m = manifest::build(&spec, &inner.settings)
            .map_err(|e| RunnerError::Start(e.to_string()))?;
        let name = manifest::job_name(id, spec.job.sched.attempt + 1);
        // Track first: the watcher may report on the Job before we return.
        inner.track(id, name.clone(), None);
        let mut adopted = false;
        let created = match timed(inner.job_api.create(&PostParams::default(), &m.job)).await {
            Ok(j) => j,
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                adopted = true;
                // A previous launch created it before the daemon stopped.
                match timed(inner.job_api.get_opt(&name)).await {
                    Ok(Some(j)) if manifest::job_id_of(&j.metadata) == Some(id) => {
                        tracing::info!(job_id = %id, job = %name, "adopting the Kubernetes Job an earlier launch created");
                        j
                    }
                    Ok(_) => {
                        inner.untrack(id);
                        return Err(RunnerError::Start(format!(
                            "a Kubernetes Job named {name} already exists in namespace {} and was not created for this job",
                            inner.settings.namespace
                        )));
                    }
                    Err(e) => {
                        inner.untrack(id);
                        return Err(launch_error("Job", e));
                    }
                }
            }
            Err(e) => {
                inner.untrack(id);
                return Err(launch_error("Job", e));
            }
        };
        let uid = created.metadata.uid.clone();
        inner.with_tracked(id, |t| t.uid = uid.clone());
        if let Some(mut secret) = m.secret {
            manifest::own(&mut secret, &created);
            match timed(inner.secret_api.create(&PostParams::default(), &secret)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_already_exists() => {
                    adopt_token(inner, id, &name).await;
                }
                Err(e) => {
                    inner.untrack(id);
                    if let Err(de) = inner.delete_job(&inner.job_api, &name, uid.clone()).await {
                        tracing::warn!(job_id = %id, error = %client::describe(&de), "cannot delete the Job whose Secret failed");
                    }
                    return Err(launch_error("Secret", e));
                }
            }
        }
        if adopted {
            // It may have ended while no daemon was watching.
            watch::on_job(inner, created);
        } else {
            tracing::info!(job_id = %id, job = %name, namespace = %inner.settings.namespace, "Kubernetes Job created");
        }
        let state = KubeState {
            namespace: inner.settings.namespace.clone(),
            job: name,
            uid,
        };
        serde_json::to_string(&state)
            .map(Some)
            .map_err(|e| RunnerError::Environment(format!("cannot record the Job's state: {e}")))
    }

    async fn plan(&self, spec: &LaunchSpec) -> Result<LaunchPlan, PlanError> {
        let mut masked = spec.clone();
        masked.env = spec.masked_env();
        let m = manifest::build(&masked, &self.inner.settings)?;
        let mut notes = Vec::new();
        if m.secret.is_some() {
            notes.push("the Secret gets an ownerReference to the Job once the Job exists, so Kubernetes deletes it with the Job".to_string());
        }
        Ok(LaunchPlan {
            dry_run: true,
            runner: self.name().to_string(),
            job: spec.job.clone(),
            manifests: m.to_values(),
            process: None,
            notes,
        })
    }

    async fn cancel(&self, job: &JobRecord) -> Result<(), RunnerError> {
        let inner = &self.inner;
        let id = job.job.id;
        let st = state_of(job, &inner.settings);
        let busy = inner.with_tracked(id, |t| std::mem::replace(&mut t.cancelling, true));
        if busy == Some(true) {
            return Ok(());
        }
        let (api, _) = inner.apis(&st.namespace);
        match inner.delete_job(&api, &st.job, st.uid.clone()).await {
            Ok(()) => {
                inner.untrack(id);
                tracing::info!(job_id = %id, job = %st.job, "deleted the Kubernetes Job (background propagation: its pods and Secret go too)");
                Ok(())
            }
            Err(e) => {
                // Still tracked and cancelled: the scheduler's resync retries.
                inner.with_tracked(id, |t| t.cancelling = false);
                Err(RunnerError::Environment(format!(
                    "cannot delete Kubernetes Job {}: {}",
                    st.job,
                    client::describe(&e)
                )))
            }
        }
    }

    async fn logs(
        &self,
        job: &JobRecord,
        opts: LogOptions,
    ) -> Result<Option<LogStream>, RunnerError> {
        if job.job.runner.as_deref() != Some(self.name()) {
            return Ok(None);
        }
        let st = state_of(job, &self.inner.settings);
        let (_, pods) = self.inner.apis(&st.namespace);
        let Some(pod) = self.inner.pods_of(&pods, job.job.id).await.pop() else {
            return Ok(None);
        };
        let lp = LogParams {
            container: Some(manifest::CONTAINER.into()),
            follow: opts.follow,
            tail_lines: opts.tail.map(|n| n as i64),
            ..Default::default()
        };
        let name = pod.metadata.name.unwrap_or_default();
        match timed(pods.log_stream(&name, &lp)).await {
            Ok(reader) => Ok(Some(byte_stream(Box::pin(reader)))),
            // 400: the container has not started yet; 404: the pod just went.
            Err(kube::Error::Api(s)) if s.code == 400 || s.code == 404 => Ok(None),
            Err(e) => Err(RunnerError::Environment(format!(
                "cannot read the log of pod {name}: {}",
                client::describe(&e)
            ))),
        }
    }

    async fn reconcile(&self, running: Vec<JobRecord>) -> Result<(), RunnerError> {
        let inner = &self.inner;
        for rec in running {
            let id = rec.job.id;
            let st = state_of(&rec, &inner.settings);
            if st.namespace != inner.settings.namespace {
                let reason = format!(
                    "the daemon now runs Jobs in namespace {} (KUBE_NAMESPACE) and cannot watch Kubernetes Job {} in namespace {}; it was left as it is",
                    inner.settings.namespace, st.job, st.namespace
                );
                inner.fail(id, reason).await;
                continue;
            }
            inner.track(id, st.job.clone(), st.uid.clone());
            match timed(inner.job_api.get_opt(&st.job)).await {
                Ok(Some(j)) if manifest::job_id_of(&j.metadata) == Some(id) => {
                    tracing::info!(job_id = %id, job = %st.job, "re-adopted a running Kubernetes Job");
                    watch::on_job(inner, j);
                }
                Ok(Some(_)) => {
                    let reason = format!(
                        "Kubernetes Job {} now belongs to something else (its labels name another job); the platform left it alone",
                        st.job
                    );
                    inner.fail(id, reason).await;
                }
                Ok(None) => watch::settle_deleted(inner, id, &st.job, true).await,
                Err(e) => {
                    // Keep tracking: the watcher reports on it once the API answers.
                    tracing::warn!(job_id = %id, error = %client::describe(&e), "cannot look up a running Kubernetes Job; the watcher will settle it");
                }
            }
        }
        Ok(())
    }

    fn active(&self) -> Vec<Uuid> {
        self.inner
            .tracked
            .lock()
            .map(|t| t.keys().copied().collect())
            .unwrap_or_default()
    }

    async fn shutdown(&self, stop_jobs: bool) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        if !stop_jobs {
            let n = self.active().len();
            if n > 0 {
                tracing::info!(
                    jobs = n,
                    "leaving Kubernetes Jobs running; the next daemon re-adopts them"
                );
            }
            return;
        }
        for id in self.active() {
            let _ = self.inner.jobs.cancel(id, super::STOPPED_WITH_DAEMON).await;
            if let Ok(rec) = self.inner.jobs.record(id).await {
                if let Err(e) = self.cancel(&rec).await {
                    tracing::error!(job_id = %id, error = %e, "cannot delete a Kubernetes Job on shutdown");
                }
            }
        }
    }
}

/// An `AsyncRead` as a stream of byte chunks (ends after the first error).
fn byte_stream<R: futures::AsyncRead + Send + Unpin + 'static>(reader: R) -> LogStream {
    futures::stream::unfold(Some(reader), |state| async move {
        let mut r = state?;
        let mut buf = vec![0u8; 16 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(r)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}
