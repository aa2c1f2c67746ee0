//! An in-process runner for unit tests of the scheduler: it starts
//! nothing, records what it was asked to do, and lets a test decide how
//! long a launch takes. Everything else under test is real (the service of
//! [`crate::jobs::testing`]: SQLite in a temporary directory, the local
//! object store). A real trainer process would make these tests slow and
//! timing-bound; the subprocess and Kubernetes runners have their own suites.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::env::{Contract, ContractSource};
use super::{LogOptions, LogStream, Runner, RunnerError, SpecBuilder};
use crate::jobs::testing::Service;
use crate::model::JobRecord;

/// What the fake runner was asked to do, in order.
#[derive(Debug, Default)]
pub struct Calls {
    /// Jobs launched (launch returned).
    pub launched: Vec<Uuid>,
    /// Jobs whose launch started (it may still be sleeping).
    pub launching: Vec<Uuid>,
    /// Jobs whose trainer was asked to stop.
    pub cancelled: Vec<Uuid>,
    /// Jobs handed over for re-adoption after a start.
    pub reconciled: Vec<Uuid>,
    /// Jobs that ended while their trainer was still watched.
    pub ended: Vec<Uuid>,
}

/// How launches of a model fail.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// [`RunnerError::Start`]: the job's own fault.
    Start,
    /// [`RunnerError::Environment`]: the machine's.
    Environment,
}

/// A runner that records calls instead of starting trainers.
#[derive(Clone, Default)]
pub struct FakeRunner {
    calls: Arc<Mutex<Calls>>,
    /// How long launching a job with this model name takes.
    slow: Arc<Mutex<HashMap<String, Duration>>>,
    /// How launching a job with this model name fails.
    failing: Arc<Mutex<HashMap<String, Failure>>>,
    /// Launched and not yet told to stop.
    active: Arc<Mutex<Vec<Uuid>>>,
}

impl FakeRunner {
    /// Launches of jobs training `model` take `delay`.
    pub fn slow_model(&self, model: &str, delay: Duration) {
        if let Ok(mut s) = self.slow.lock() {
            s.insert(model.to_string(), delay);
        }
    }

    /// Launches of jobs training `model` fail with `failure`.
    pub fn fail_model(&self, model: &str, failure: Failure) {
        if let Ok(mut f) = self.failing.lock() {
            f.insert(model.to_string(), failure);
        }
    }

    /// A snapshot of the calls so far.
    pub fn calls<T>(&self, f: impl FnOnce(&Calls) -> T) -> T {
        f(&self.calls.lock().expect("fake runner lock"))
    }

    /// The trainer of `id` ended (it no longer counts as active).
    pub fn gone(&self, id: Uuid) {
        if let Ok(mut a) = self.active.lock() {
            a.retain(|x| *x != id);
        }
    }

    fn record(&self, f: impl FnOnce(&mut Calls)) {
        if let Ok(mut c) = self.calls.lock() {
            f(&mut c);
        }
    }
}

#[async_trait]
impl Runner for FakeRunner {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn launch(&self, spec: super::LaunchSpec) -> Result<Option<String>, RunnerError> {
        let id = spec.job.id;
        self.record(|c| c.launching.push(id));
        let delay = self
            .slow
            .lock()
            .ok()
            .and_then(|s| s.get(&spec.job.model_name).copied());
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let failure = self
            .failing
            .lock()
            .ok()
            .and_then(|f| f.get(&spec.job.model_name).copied());
        match failure {
            Some(Failure::Start) => return Err(RunnerError::Start("no such trainer".into())),
            Some(Failure::Environment) => return Err(RunnerError::Environment("disk full".into())),
            None => {}
        }
        self.record(|c| c.launched.push(id));
        if let Ok(mut a) = self.active.lock() {
            a.push(id);
        }
        Ok(Some(format!("{{\"fake\":\"{id}\"}}")))
    }

    async fn cancel(&self, job: &JobRecord) -> Result<(), RunnerError> {
        self.record(|c| c.cancelled.push(job.job.id));
        self.gone(job.job.id);
        Ok(())
    }

    async fn ended(&self, job: &JobRecord) {
        self.record(|c| c.ended.push(job.job.id));
    }

    async fn logs(
        &self,
        _job: &JobRecord,
        _opts: LogOptions,
    ) -> Result<Option<LogStream>, RunnerError> {
        Ok(None)
    }

    async fn reconcile(&self, running: Vec<JobRecord>) -> Result<(), RunnerError> {
        self.record(|c| c.reconciled.extend(running.iter().map(|r| r.job.id)));
        Ok(())
    }

    fn active(&self) -> Vec<Uuid> {
        self.active.lock().map(|a| a.clone()).unwrap_or_default()
    }

    async fn shutdown(&self, _stop_jobs: bool) {}
}

/// A contract with fixed values.
struct FixedContract;

impl ContractSource for FixedContract {
    fn contract(&self, _id: Uuid) -> Contract {
        Contract {
            base_url: "http://127.0.0.1:1".into(),
            output_uri: "file:///nowhere/".into(),
            storage_env: Default::default(),
            platform_bin: None,
        }
    }
}

/// Launch specs for `svc`'s jobs, with fixed daemon-side values.
pub fn specs(svc: &Service) -> Arc<SpecBuilder> {
    Arc::new(SpecBuilder::new(
        svc.registry.clone(),
        Arc::new(FixedContract),
    ))
}
