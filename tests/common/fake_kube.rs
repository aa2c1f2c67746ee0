//! A FAKE Kubernetes API server for the Kubernetes runner's tests.
//!
//! No real API server can run on the machines these tests run on (no
//! container engine, no kube-apiserver), so this in-process axum server
//! speaks the real wire format for exactly the calls the runner makes, and
//! nothing else:
//!
//! - batch/v1 Jobs: create (201; 409 `AlreadyExists`), get (404
//!   `NotFound`), list and watch with label selectors, delete with
//!   `DeleteOptions` (uid preconditions → 409 `Conflict`; `Background` /
//!   `Foreground` propagation garbage-collects the pods and Secrets the Job
//!   owns, as the garbage collector would);
//! - v1 Secrets: create (`stringData` folded into base64 `data`), get,
//!   list; v1 Pods: get, list, watch; pod logs (`follow`, `tailLines`;
//!   400 while the container has not started);
//! - SelfSubjectAccessReview, answering from a configurable deny list;
//! - bearer-token authentication (401 `Unauthorized`), `Status` objects for
//!   every error, one global `resourceVersion` counter, watch streams of
//!   newline-separated `{"type","object"}` events that resume from a
//!   `resourceVersion`, end at `timeoutSeconds`, and answer a compacted
//!   version with an `ERROR` event carrying a 410 `Expired` Status.
//!
//! A test plays the cluster's controllers through [`FakeKube`]'s methods:
//! [`FakeKube::run_pod`] acts as job controller plus kubelet and really
//! runs the container's command as a local process (env from the manifest,
//! secrets resolved from the Secret), reporting its exit as pod and Job
//! status; other methods move a Job or pod through its states (running,
//! succeeded, failed, OOMKilled, image pull error, unschedulable, deleted
//! from outside) or restart the API server (connections dropped, watch
//! history compacted so resumed watches get 410).
//!
//! What it does NOT cover: schema validation and defaulting of objects
//! (manifests are checked offline against the k8s-openapi types instead),
//! admission (quotas, LimitRanges, Pod Security), real RBAC evaluation,
//! the scheduler, images and containers, pagination (`limit`/`continue`),
//! field selectors, set-based label selectors (`in`, `notin`), patch and
//! update verbs, `dryRun`, bookmarks, server-side apply, and timing (events
//! arrive at once). Calls it does not implement answer 404 and are listed
//! by [`FakeKube::unhandled`], which every test checks is empty.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, mpsc, Notify};

/// The bearer token the fake accepts.
pub const TOKEN: &str = "fake-kube-token";

/// Object kinds the fake stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// batch/v1 Job.
    Job,
    /// v1 Secret.
    Secret,
    /// v1 Pod.
    Pod,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            Kind::Secret | Kind::Pod => "v1",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Secret => "Secret",
            Kind::Pod => "Pod",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Secret => "secrets",
            Kind::Pod => "pods",
        }
    }
    fn group(self) -> &'static str {
        match self {
            Kind::Job => "batch",
            _ => "",
        }
    }
    /// `jobs.batch`, `secrets`: the name in Status messages.
    fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            g => format!("{}.{g}", self.plural()),
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// JSON body (Null when none).
    pub body: Value,
}

#[derive(Debug)]
struct WatchEvent {
    kind: Kind,
    ns: String,
    rv: u64,
    kind_word: &'static str,
    object: Value,
}

#[derive(Default)]
struct LogBuf {
    text: Mutex<Vec<u8>>,
    done: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl LogBuf {
    fn append(&self, b: &[u8]) {
        self.text.lock().unwrap().extend_from_slice(b);
        self.notify.notify_waiters();
    }
    fn finish(&self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    fn is_done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches from a version below this get 410 Expired.
    compacted: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Arc<WatchEvent>>,
    logs: HashMap<String, Arc<LogBuf>>,
    denied: HashSet<String>,
    requests: Vec<Recorded>,
    unhandled: Vec<String>,
    /// Pod name → pid of the process the kubelet runs for it.
    procs: HashMap<String, u32>,
    /// Pods whose process is being OOM-killed.
    oom: HashSet<String>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    /// Bumped on restart: every open watch ends.
    generation: tokio::sync::watch::Sender<u64>,
    /// The API server is "down".
    down: std::sync::atomic::AtomicBool,
}

/// The fake API server; stops (and kills the processes it runs) on drop.
pub struct FakeKube {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The namespace tests use.
    pub ns: String,
}

impl FakeKube {
    /// Starts a fake on an ephemeral port, on its own runtime (so tests may
    /// block their own threads while the daemon talks to it).
    pub fn start() -> FakeKube {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (events, _) = broadcast::channel(4096);
        let (generation, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            events,
            generation,
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeKube {
            url: format!("http://{addr}"),
            addr,
            shared,
            rt: Some(rt),
            server: Mutex::new(None),
            ns: "platform".into(),
        };
        fake.serve(listener);
        fake
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }

    fn serve(&self, listener: std::net::TcpListener) {
        self.shared
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        listener.set_nonblocking(true).unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        let h = self.rt().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app).await;
        });
        *self.server.lock().unwrap() = Some(h);
    }

    /// Writes a kubeconfig for this fake (token auth, namespace `platform`)
    /// into `dir` and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig.yaml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: tester\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: {}\ncurrent-context: fake\n",
                self.url, self.ns
            ),
        )
        .unwrap();
        path
    }

    /// Denies these `"verb resource"` pairs in access reviews, e.g.
    /// `"delete jobs.batch"`, `"get pods/log"`.
    pub fn deny(&self, rules: &[&str]) {
        let mut s = self.shared.store.lock().unwrap();
        s.denied.extend(rules.iter().map(|r| r.to_string()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.store.lock().unwrap().requests.clone()
    }

    /// Requests the fake does not implement (should stay empty).
    pub fn unhandled(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().unhandled.clone()
    }

    /// An object, if it exists.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Value> {
        let s = self.shared.store.lock().unwrap();
        s.objects
            .get(&(kind, self.ns.clone(), name.to_string()))
            .cloned()
    }

    /// Every object of `kind`.
    pub fn all(&self, kind: Kind) -> Vec<Value> {
        let s = self.shared.store.lock().unwrap();
        s.objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The pods of Job `job`.
    pub fn pods_of(&self, job: &str) -> Vec<Value> {
        self.all(Kind::Pod)
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["job-name"] == job)
            .collect()
    }

    /// A Secret's data, decoded.
    pub fn secret_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let secret = self.get(Kind::Secret, name)?;
        Some(decode_data(&secret))
    }

    /// Creates an object directly, as another client would (e.g. a Job
    /// the platform does not own).
    pub fn create_foreign(&self, kind: Kind, object: Value) -> Value {
        let mut s = self.shared.store.lock().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let obj = prepare_new(kind, &self.ns, object);
        s.put(&self.shared, kind, &self.ns, &name, obj, "ADDED")
    }

    /// Deletes a Job as `kubectl delete job` would (background propagation).
    pub fn delete_job(&self, name: &str) {
        let mut s = self.shared.store.lock().unwrap();
        let removed = s.remove(&self.shared, Kind::Job, &self.ns, name);
        if let Some(job) = removed {
            s.collect_garbage(&self.shared, &self.ns, &job);
        }
    }

    /// Job controller: creates the Job's pod in phase `Running` (no process).
    pub fn pod_running(&self, job: &str) -> String {
        let mut s = self.shared.store.lock().unwrap();
        let pod = s.new_pod(&self.shared, &self.ns, job, running_status());
        s.set_job_status(&self.shared, &self.ns, job, |st| {
            st["active"] = json!(1);
            st["startTime"] = json!(now());
        });
        pod
    }

    /// Kubelet: the Job's pod cannot pull its image.
    pub fn pod_image_pull_error(&self, job: &str) -> String {
        let status = json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": "trainer", "image": self.image_of(job), "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{}\"", self.image_of(job))}}
            }]
        });
        let mut s = self.shared.store.lock().unwrap();
        s.new_pod(&self.shared, &self.ns, job, status)
    }

    /// Scheduler: no node can take the Job's pod.
    pub fn pod_unschedulable(&self, job: &str) -> String {
        let status = json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "lastTransitionTime": now(),
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
        });
        let mut s = self.shared.store.lock().unwrap();
        s.new_pod(&self.shared, &self.ns, job, status)
    }

    /// Kubelet + job controller: the Job's (single) pod's trainer
    /// terminated with `exit_code` and `reason` (`Completed`, `Error`,
    /// `OOMKilled`); the Job gets `Complete` or `Failed`
    /// (`BackoffLimitExceeded`) accordingly.
    pub fn pod_terminated(&self, job: &str, exit_code: i32, reason: &str) {
        let mut s = self.shared.store.lock().unwrap();
        let pod = match s.pod_names_of(&self.ns, job).pop() {
            Some(p) => p,
            None => s.new_pod(&self.shared, &self.ns, job, running_status()),
        };
        s.terminate(&self.shared, &self.ns, job, &pod, exit_code, reason);
    }

    /// Job controller: the Job failed with `reason` (e.g. `DeadlineExceeded`).
    pub fn job_failed(&self, job: &str, reason: &str, message: &str) {
        let mut s = self.shared.store.lock().unwrap();
        s.set_job_status(&self.shared, &self.ns, job, |st| {
            st["active"] = json!(0);
            st["conditions"] = json!([
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()},
                {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()}
            ]);
        });
    }

    /// Job controller + kubelet: runs the Job's container as a local
    /// process (argv[0] `/usr/local/bin/platform` becomes `platform_exe`),
    /// with the manifest's env (secretKeyRefs resolved from the Secret,
    /// waiting for it like a kubelet). Its output is the pod's log; its
    /// exit becomes pod and Job status.
    pub fn run_pod(&self, job: &str, platform_exe: &Path) -> String {
        let shared = self.shared.clone();
        let ns = self.ns.clone();
        let job = job.to_string();
        let exe = platform_exe.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        self.rt().spawn(async move {
            kubelet(shared, ns, job, exe, tx).await;
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the fake kubelet started the pod")
    }

    /// Kills the process of the Job's pod as the kernel's OOM killer would:
    /// the pod reports `OOMKilled`, exit code 137.
    pub fn oom_kill(&self, job: &str) {
        let pid = {
            let mut s = self.shared.store.lock().unwrap();
            let pod = s
                .pod_names_of(&self.ns, job)
                .pop()
                .expect("the job has a pod");
            s.oom.insert(pod.clone());
            *s.procs.get(&pod).expect("the pod runs a process")
        };
        kill(pid, "KILL");
    }

    /// Simulates an API-server restart: the server stops answering for
    /// `down`, every watch connection drops, and the watch history is
    /// compacted, so a watcher resuming from its last version gets
    /// `410 Expired` and must relist.
    pub fn restart(&self, down: Duration) {
        self.go_down();
        std::thread::sleep(down);
        self.come_back();
    }

    /// The API server stops: connections are refused and open watches end
    /// (the store stays, so tests can change objects meanwhile).
    pub fn go_down(&self) {
        // New connections are refused; requests on kept-alive ones get 503.
        self.shared
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.server.lock().unwrap().take() {
            h.abort();
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// The API server answers again, with its watch history compacted.
    pub fn come_back(&self) {
        {
            let mut s = self.shared.store.lock().unwrap();
            // Everything before this version is gone from the history.
            s.rv += 1;
            s.compacted = s.rv;
            s.history.clear();
        }
        self.serve(std::net::TcpListener::bind(self.addr).unwrap());
    }

    /// Appends to a pod's log.
    pub fn append_log(&self, pod: &str, text: &str) {
        let buf = self.log_buf(pod);
        buf.append(text.as_bytes());
    }

    fn log_buf(&self, pod: &str) -> Arc<LogBuf> {
        self.shared
            .store
            .lock()
            .unwrap()
            .logs
            .entry(pod.to_string())
            .or_default()
            .clone()
    }

    fn image_of(&self, job: &str) -> String {
        self.get(Kind::Job, job)
            .and_then(|j| {
                j["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let pids: Vec<u32> = self
            .shared
            .store
            .lock()
            .map(|s| s.procs.values().copied().collect())
            .unwrap_or_default();
        for pid in pids {
            kill(pid, "KILL");
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn kill(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn running_status() -> Value {
    json!({
        "phase": "Running",
        "startTime": now(),
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [{
            "name": "trainer", "image": "", "imageID": "", "ready": true, "restartCount": 0,
            "started": true, "state": {"running": {"startedAt": now()}}
        }]
    })
}

fn decode_data(secret: &Value) -> BTreeMap<String, String> {
    secret["data"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let b: k8s_openapi::ByteString = serde_json::from_value(v.clone()).unwrap();
                    (k.clone(), String::from_utf8_lossy(&b.0).into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Server-side fields of a new object (and what the API server defaults
/// for the kinds the runner creates).
fn prepare_new(kind: Kind, ns: &str, mut obj: Value) -> Value {
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.name());
    let uid = uuid::Uuid::now_v7().to_string();
    let meta = &mut obj["metadata"];
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    match kind {
        Kind::Job => {
            // The job controller's selector and pod labels.
            let name = obj["metadata"]["name"].clone();
            let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
            if labels.is_null() {
                *labels = json!({});
            }
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", json!(uid)),
                ("batch.kubernetes.io/job-name", name.clone()),
                ("controller-uid", json!(uid)),
                ("job-name", name),
            ] {
                labels[k] = v;
            }
            obj["spec"]["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            if obj["status"].is_null() {
                obj["status"] = json!({});
            }
        }
        Kind::Secret => {
            // stringData is write-only: the API server folds it into data.
            if let Some(sd) = obj
                .as_object_mut()
                .and_then(|o| o.remove("stringData"))
                .and_then(|v| v.as_object().cloned())
            {
                if obj["data"].is_null() {
                    obj["data"] = json!({});
                }
                for (k, v) in sd {
                    let bytes =
                        k8s_openapi::ByteString(v.as_str().unwrap_or("").as_bytes().to_vec());
                    obj["data"][&k] = serde_json::to_value(bytes).unwrap();
                }
            }
            if obj["type"].is_null() {
                obj["type"] = json!("Opaque");
            }
        }
        Kind::Pod => {}
    }
    obj
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(
        &mut self,
        shared: &Shared,
        kind: Kind,
        ns: &str,
        word: &'static str,
        object: Value,
        rv: u64,
    ) {
        let ev = Arc::new(WatchEvent {
            kind,
            ns: ns.to_string(),
            rv,
            kind_word: word,
            object,
        });
        self.history.push(ev.clone());
        let _ = shared.events.send(ev);
    }

    /// Stores `obj` with a new resourceVersion and emits `word`.
    fn put(
        &mut self,
        shared: &Shared,
        kind: Kind,
        ns: &str,
        name: &str,
        mut obj: Value,
        word: &'static str,
    ) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects
            .insert((kind, ns.to_string(), name.to_string()), obj.clone());
        self.emit(shared, kind, ns, word, obj.clone(), rv);
        obj
    }

    fn remove(&mut self, shared: &Shared, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(kind, ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["deletionTimestamp"] = json!(now());
        self.emit(shared, kind, ns, "DELETED", obj.clone(), rv);
        if kind == Kind::Pod {
            if let Some(pid) = self.procs.remove(name) {
                kill(pid, "KILL");
            }
        }
        Some(obj)
    }

    /// The garbage collector: deletes what `owner` owned.
    fn collect_garbage(&mut self, shared: &Shared, ns: &str, owner: &Value) {
        let uid = owner["metadata"]["uid"].clone();
        let owned: Vec<(Kind, String)> = self
            .objects
            .iter()
            .filter(|((_, n, _), o)| {
                n == ns
                    && o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|((k, _, name), _)| (*k, name.clone()))
            .collect();
        for (kind, name) in owned {
            self.remove(shared, kind, ns, &name);
        }
    }

    fn pod_names_of(&self, ns: &str, job: &str) -> Vec<String> {
        self.objects
            .iter()
            .filter(|((k, n, _), o)| {
                *k == Kind::Pod && n == ns && o["metadata"]["labels"]["job-name"] == job
            })
            .map(|((_, _, name), _)| name.clone())
            .collect()
    }

    /// Creates the Job's pod (labels and owner as the job controller sets them).
    fn new_pod(&mut self, shared: &Shared, ns: &str, job: &str, mut status: Value) -> String {
        let j = self
            .objects
            .get(&(Kind::Job, ns.to_string(), job.to_string()))
            .cloned()
            .expect("the Job exists");
        let suffix: String = uuid::Uuid::now_v7().simple().to_string()[27..32].to_string();
        let name = format!("{job}-{suffix}");
        let image = j["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        if let Some(cs) = status["containerStatuses"].as_array_mut() {
            for c in cs {
                c["image"] = image.clone();
            }
        }
        let pod = json!({
            "metadata": {
                "name": name,
                "labels": j["spec"]["template"]["metadata"]["labels"],
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                    "uid": j["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": j["spec"]["template"]["spec"],
            "status": status,
        });
        let pod = prepare_new(Kind::Pod, ns, pod);
        self.put(shared, Kind::Pod, ns, &name, pod, "ADDED");
        self.logs.entry(name.clone()).or_default();
        name
    }

    fn update(
        &mut self,
        shared: &Shared,
        kind: Kind,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) {
        let Some(mut obj) = self
            .objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
        else {
            return;
        };
        f(&mut obj);
        self.put(shared, kind, ns, name, obj, "MODIFIED");
    }

    fn set_job_status(&mut self, shared: &Shared, ns: &str, job: &str, f: impl FnOnce(&mut Value)) {
        self.update(shared, Kind::Job, ns, job, |j| {
            if j["status"].is_null() {
                j["status"] = json!({});
            }
            f(&mut j["status"]);
        });
    }

    /// The trainer container ended: pod status, then Job status.
    fn terminate(
        &mut self,
        shared: &Shared,
        ns: &str,
        job: &str,
        pod: &str,
        exit_code: i32,
        reason: &str,
    ) {
        let ok = exit_code == 0;
        self.update(shared, Kind::Pod, ns, pod, |p| {
            p["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
            p["status"]["containerStatuses"] = json!([{
                "name": "trainer", "image": p["spec"]["containers"][0]["image"], "imageID": "",
                "ready": false, "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": exit_code, "reason": reason,
                    "startedAt": now(), "finishedAt": now()}}
            }]);
        });
        if let Some(buf) = self.logs.get(pod) {
            buf.finish();
        }
        self.set_job_status(shared, ns, job, |st| {
            st["active"] = json!(0);
            if ok {
                st["succeeded"] = json!(1);
                st["completionTime"] = json!(now());
                st["conditions"] = json!([
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now()},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now()}
                ]);
            } else {
                st["failed"] = json!(1);
                st["conditions"] = json!([
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", "lastTransitionTime": now()},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", "lastTransitionTime": now()}
                ]);
            }
        });
    }
}

/// The fake kubelet: runs one pod's container as a local process.
async fn kubelet(
    shared: Arc<Shared>,
    ns: String,
    job: String,
    exe: PathBuf,
    started: std::sync::mpsc::Sender<String>,
) {
    let spec = {
        let s = shared.store.lock().unwrap();
        s.objects
            .get(&(Kind::Job, ns.clone(), job.clone()))
            .map(|j| j["spec"]["template"]["spec"]["containers"][0].clone())
            .expect("the Job exists")
    };
    // Resolve the env, waiting for referenced Secrets like a kubelet does.
    let mut env: Vec<(String, String)> = Vec::new();
    for e in spec["env"].as_array().cloned().unwrap_or_default() {
        let name = e["name"].as_str().unwrap().to_string();
        if let Some(v) = e["value"].as_str() {
            env.push((name, v.to_string()));
            continue;
        }
        let sref = &e["valueFrom"]["secretKeyRef"];
        let (secret, key) = (
            sref["name"].as_str().unwrap(),
            sref["key"].as_str().unwrap(),
        );
        let value = loop {
            let found = {
                let s = shared.store.lock().unwrap();
                s.objects
                    .get(&(Kind::Secret, ns.clone(), secret.to_string()))
                    .map(decode_data)
            };
            if let Some(data) = found {
                break data.get(key).cloned().expect("the Secret has the key");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        env.push((name, value));
    }
    let pod = {
        let mut s = shared.store.lock().unwrap();
        let pod = s.new_pod(&shared, &ns, &job, running_status());
        s.set_job_status(&shared, &ns, &job, |st| {
            st["active"] = json!(1);
            st["startTime"] = json!(now());
        });
        pod
    };
    let mut argv: Vec<String> = spec["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["args"].as_array().into_iter().flatten())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    if argv[0] == "/usr/local/bin/platform" {
        argv[0] = exe.display().to_string();
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(w) = spec["workingDir"]
        .as_str()
        .filter(|w| Path::new(w).is_dir())
    {
        cmd.current_dir(w);
    }
    let mut child = cmd.spawn().expect("spawn the container's command");
    let buf = shared
        .store
        .lock()
        .unwrap()
        .logs
        .get(&pod)
        .cloned()
        .unwrap();
    shared
        .store
        .lock()
        .unwrap()
        .procs
        .insert(pod.clone(), child.id().unwrap_or(0));
    let _ = started.send(pod.clone());
    let copy = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>, buf: Arc<LogBuf>| async move {
        let mut chunk = vec![0u8; 8192];
        while let Ok(n) = r.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.append(&chunk[..n]);
        }
    };
    let out = tokio::spawn(copy(Box::new(child.stdout.take().unwrap()), buf.clone()));
    let err = tokio::spawn(copy(Box::new(child.stderr.take().unwrap()), buf.clone()));
    let status = child
        .wait()
        .await
        .expect("wait for the container's process");
    let _ = out.await;
    let _ = err.await;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let mut s = shared.store.lock().unwrap();
    let oom = s.oom.remove(&pod);
    if s.procs.remove(&pod).is_none() {
        // The pod was deleted (cancel, garbage collection): nothing to report.
        buf.finish();
        return;
    }
    let reason = match (oom, code) {
        (true, _) => "OOMKilled",
        (false, 0) => "Completed",
        _ => "Error",
    };
    s.terminate(&shared, &ns, &job, &pod, code, reason);
}

/// Where a request goes.
enum Target {
    Review,
    Collection(Kind, String),
    Object(Kind, String, String),
    Log(String, String),
}

fn route(path: &str) -> Option<Target> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kind = |p: &str| match p {
        "secrets" => Some(Kind::Secret),
        "pods" => Some(Kind::Pod),
        _ => None,
    };
    Some(match seg.as_slice() {
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => Target::Review,
        ["apis", "batch", "v1", "namespaces", ns, "jobs"] => {
            Target::Collection(Kind::Job, ns.to_string())
        }
        ["apis", "batch", "v1", "namespaces", ns, "jobs", name] => {
            Target::Object(Kind::Job, ns.to_string(), name.to_string())
        }
        ["api", "v1", "namespaces", ns, "pods", name, "log"] => {
            Target::Log(ns.to_string(), name.to_string())
        }
        ["api", "v1", "namespaces", ns, plural] => {
            Target::Collection(kind(plural)?, ns.to_string())
        }
        ["api", "v1", "namespaces", ns, plural, name] => {
            Target::Object(kind(plural)?, ns.to_string(), name.to_string())
        }
        _ => return None,
    })
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn object_json(code: StatusCode, v: &Value) -> Response {
    (code, axum::Json(v.clone())).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return status(
            503,
            "ServiceUnavailable",
            "the API server is restarting".into(),
        );
    }
    let path = uri.path().to_string();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    {
        let mut s = shared.store.lock().unwrap();
        s.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: body_json.clone(),
        });
    }
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(401, "Unauthorized", "Unauthorized".into());
    }
    let unhandled = |shared: &Shared| {
        shared
            .store
            .lock()
            .unwrap()
            .unhandled
            .push(format!("{method} {uri}"));
        status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({method} {path})"),
        )
    };
    let Some(target) = route(&path) else {
        return unhandled(&shared);
    };
    match (target, &method) {
        (Target::Review, &Method::POST) => review(&shared, body_json),
        (Target::Collection(kind, ns), &Method::GET)
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") =>
        {
            watch(&shared, kind, ns, &query)
        }
        (Target::Collection(kind, ns), &Method::GET) => list(&shared, kind, &ns, &query),
        (Target::Collection(kind, ns), &Method::POST) if kind != Kind::Pod => {
            create(&shared, kind, &ns, body_json)
        }
        (Target::Object(kind, ns, name), &Method::GET) => {
            let s = shared.store.lock().unwrap();
            match s.objects.get(&(kind, ns, name.clone())) {
                Some(o) => object_json(StatusCode::OK, o),
                None => status(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", kind.qualified()),
                ),
            }
        }
        (Target::Object(kind, ns, name), &Method::DELETE) => {
            delete(&shared, kind, &ns, &name, &body_json)
        }
        (Target::Log(ns, name), &Method::GET) => logs(&shared, &ns, &name, &query),
        _ => unhandled(&shared),
    }
}

fn review(shared: &Shared, mut body: Value) -> Response {
    let a = body["spec"]["resourceAttributes"].clone();
    let resource = match (a["group"].as_str().unwrap_or(""), a["subresource"].as_str()) {
        ("", Some(sub)) => format!("{}/{sub}", a["resource"].as_str().unwrap_or("")),
        ("", None) => a["resource"].as_str().unwrap_or("").to_string(),
        (g, Some(sub)) => format!("{}.{g}/{sub}", a["resource"].as_str().unwrap_or("")),
        (g, None) => format!("{}.{g}", a["resource"].as_str().unwrap_or("")),
    };
    let key = format!("{} {resource}", a["verb"].as_str().unwrap_or(""));
    let allowed = !shared.store.lock().unwrap().denied.contains(&key);
    body["status"] = if allowed {
        json!({"allowed": true, "reason": "fake: allowed"})
    } else {
        json!({"allowed": false, "reason": format!("fake: {key} is denied")})
    };
    body["metadata"] = json!({"creationTimestamp": null});
    object_json(StatusCode::CREATED, &body)
}

fn create(shared: &Shared, kind: Kind, ns: &str, body: Value) -> Response {
    let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            422,
            "Invalid",
            format!("{} is invalid: metadata.name: Required value", kind.name()),
        );
    };
    if body["kind"] != kind.name() || body["apiVersion"] != kind.api_version() {
        return status(
            400,
            "BadRequest",
            format!("the body is not a {}", kind.name()),
        );
    }
    let mut s = shared.store.lock().unwrap();
    if s.objects
        .contains_key(&(kind, ns.to_string(), name.clone()))
    {
        return status(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified()),
        );
    }
    let obj = prepare_new(kind, ns, body);
    let stored = s.put(shared, kind, ns, &name, obj, "ADDED");
    object_json(StatusCode::CREATED, &stored)
}

fn delete(shared: &Shared, kind: Kind, ns: &str, name: &str, opts: &Value) -> Response {
    let mut s = shared.store.lock().unwrap();
    let Some(existing) = s
        .objects
        .get(&(kind, ns.to_string(), name.to_string()))
        .cloned()
    else {
        return status(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified()),
        );
    };
    if let Some(uid) = opts["preconditions"]["uid"].as_str() {
        if existing["metadata"]["uid"] != uid {
            return status(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    existing["metadata"]["uid"]
                ),
            );
        }
    }
    let removed = s.remove(shared, kind, ns, name).unwrap();
    if matches!(
        opts["propagationPolicy"].as_str(),
        Some("Background" | "Foreground")
    ) {
        s.collect_garbage(shared, ns, &removed);
    }
    object_json(StatusCode::OK, &removed)
}

/// Minimal equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`.
fn matches(selector: Option<&String>, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()] != v.trim()
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels[k.trim()] == v.trim()
            } else if let Some(k) = term.strip_prefix('!') {
                labels[k.trim()].is_null()
            } else {
                !labels[term.trim()].is_null()
            }
        })
    })
}

fn list(shared: &Shared, kind: Kind, ns: &str, q: &BTreeMap<String, String>) -> Response {
    let s = shared.store.lock().unwrap();
    let items: Vec<Value> = s
        .objects
        .iter()
        .filter(|((k, n, _), o)| *k == kind && n == ns && matches(q.get("labelSelector"), o))
        .map(|(_, o)| o.clone())
        .collect();
    let body = json!({
        "kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": s.rv.to_string()},
        "items": items,
    });
    object_json(StatusCode::OK, &body)
}

fn event_line(word: &str, object: &Value) -> Result<Bytes, Infallible> {
    let mut line = serde_json::to_vec(&json!({"type": word, "object": object})).unwrap();
    line.push(b'\n');
    Ok(Bytes::from(line))
}

fn watch(shared: &Arc<Shared>, kind: Kind, ns: String, q: &BTreeMap<String, String>) -> Response {
    let selector = q.get("labelSelector").cloned();
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(290);
    let from = q
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let relevant = {
        let selector = selector.clone();
        let ns = ns.clone();
        move |ev: &WatchEvent| {
            ev.kind == kind && ev.ns == ns && matches(selector.as_ref(), &ev.object)
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    // Subscribe under the lock that publishers hold, so nothing falls
    // between the backlog and the live events.
    let mut generation = shared.generation.subscribe();
    let (mut live, backlog, expired, mut last) = {
        let s = shared.store.lock().unwrap();
        let live = shared.events.subscribe();
        if from != 0 && from < s.compacted {
            (live, Vec::new(), true, 0)
        } else if from == 0 {
            // No version: the current objects as ADDED, then live events.
            let current: Vec<(&'static str, Value)> = s
                .objects
                .iter()
                .filter(|((k, n, _), o)| *k == kind && *n == ns && matches(selector.as_ref(), o))
                .map(|(_, o)| ("ADDED", o.clone()))
                .collect();
            (live, current, false, s.rv)
        } else {
            let backlog = s
                .history
                .iter()
                .filter(|e| e.rv > from && relevant(e))
                .map(|e| (e.kind_word, e.object.clone()))
                .collect();
            (live, backlog, false, s.rv)
        }
    };
    tokio::spawn(async move {
        if expired {
            let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410});
            let _ = tx.send(event_line("ERROR", &gone)).await;
            return;
        }
        for (word, obj) in backlog {
            if tx.send(event_line(word, &obj)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let started = *generation.borrow_and_update();
        loop {
            tokio::select! {
                biased;
                _ = generation.changed() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                ev = live.recv() => match ev {
                    // Nothing gets out once the server went down.
                    Ok(_) if *generation.borrow() != started => return,
                    Ok(ev) if ev.rv > last && relevant(&ev) => {
                        last = ev.rv;
                        if tx.send(event_line(ev.kind_word, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

fn logs(shared: &Shared, ns: &str, pod: &str, q: &BTreeMap<String, String>) -> Response {
    let (buf, started) = {
        let s = shared.store.lock().unwrap();
        let Some(p) = s.objects.get(&(Kind::Pod, ns.to_string(), pod.to_string())) else {
            return status(404, "NotFound", format!("pods \"{pod}\" not found"));
        };
        let state = &p["status"]["containerStatuses"][0]["state"];
        let started = !state["running"].is_null() || !state["terminated"].is_null();
        (s.logs.get(pod).cloned().unwrap_or_default(), started)
    };
    if !started {
        return status(
            400,
            "BadRequest",
            format!(
                "container \"trainer\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        );
    }
    let tail = q.get("tailLines").and_then(|t| t.parse::<usize>().ok());
    let text = buf.text.lock().unwrap().clone();
    let text = match tail {
        Some(n) => {
            let s = String::from_utf8_lossy(&text).into_owned();
            let lines: Vec<&str> = s.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut out = lines[start..].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out.into_bytes()
        }
        None => text,
    };
    if q.get("follow").map(String::as_str) != Some("true") {
        return ([(axum::http::header::CONTENT_TYPE, "text/plain")], text).into_response();
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let sent = buf.text.lock().unwrap().len();
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from(text))).await;
        let mut sent = sent;
        loop {
            let notified = buf.notify.notified();
            let chunk = buf.text.lock().unwrap()[sent..].to_vec();
            if !chunk.is_empty() {
                sent += chunk.len();
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
                continue;
            }
            if buf.is_done() {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}
