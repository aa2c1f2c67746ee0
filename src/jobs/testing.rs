//! A lifecycle service for unit tests: the real [`Jobs`] over a fresh
//! SQLite database and local object store in a temporary directory.

use std::sync::Arc;

use super::{Jobs, JobsConfig};
use crate::db::Db;
use crate::events::Events;
use crate::model::{CreateJob, Job};
use crate::storage::{StorageConfig, Store};
use crate::trainers::Trainers;

/// A lifecycle service over a fresh database in a temporary directory.
pub struct Service {
    /// The service.
    pub jobs: Arc<Jobs>,
    /// The built-in registry (`demo`).
    pub registry: Arc<Trainers>,
    db: Arc<Db>,
    /// Keeps the directory (database, store) alive.
    _dir: tempfile::TempDir,
}

impl Service {
    /// A service with the built-in `demo` framework and callback auth on.
    pub async fn start() -> Service {
        Self::start_with(|_| {}).await
    }

    /// [`Service::start`] with settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut JobsConfig)) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(
            Db::open_sqlite(&dir.path().join("platform.db"))
                .await
                .expect("open the database"),
        );
        let store = Arc::new(
            Store::from_config(&StorageConfig::local(dir.path().join("store")))
                .expect("local store"),
        );
        let registry = Arc::new(Trainers::builtin());
        let mut cfg = JobsConfig {
            queues: Arc::new(crate::queues::Queues::only_default(1)),
            max_job_duration: None,
            heartbeat_timeout: None,
            stale_after: None,
            callback_auth: true,
            dataset_check: false,
            artifact_grace: std::time::Duration::from_secs(600),
            idempotency_ttl: std::time::Duration::from_secs(86_400),
            gpu_capacity: None,
        };
        tweak(&mut cfg);
        let jobs = Arc::new(Jobs::new(
            db.clone(),
            Events::new(),
            registry.clone(),
            store,
            cfg,
        ));
        Service {
            jobs,
            registry,
            db,
            _dir: dir,
        }
    }

    /// Creates a `pending` demo job training `model`.
    pub async fn create(&self, model: &str) -> Job {
        self.jobs
            .create(CreateJob {
                user_id: "alice".into(),
                model_name: model.into(),
                framework: "demo".into(),
                dataset_s3_uri: "s3://bucket/data/".into(),
                config: None,
                sched: Default::default(),
                labels: Default::default(),
            })
            .await
            .expect("create a job")
    }

    /// Closes the database.
    pub async fn close(self) {
        self.db.close().await;
    }
}
