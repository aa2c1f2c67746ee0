//! What a runner needs to start one trainer, built in one place for real
//! launches (the scheduler) and dry runs (`job create --dry-run`): the
//! job, its framework's trainer entry, and the complete environment.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::env::{self, ContractSource};
use crate::model::{Job, JobRecord};
use crate::trainers::{Trainer, Trainers};

/// Everything a runner needs to start one trainer.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The job.
    pub job: Job,
    /// How to run its framework.
    pub trainer: Trainer,
    /// The trainer's complete environment (SPEC §4 contract + base + entry env).
    pub env: BTreeMap<String, String>,
    /// Which of `env`'s variables are secrets (Kubernetes puts them in a Secret).
    pub secret_keys: BTreeSet<String>,
}

impl LaunchSpec {
    /// `env` with the values of secret variables replaced by [`MASKED`].
    pub fn masked_env(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|(k, v)| {
                let v = if self.secret_keys.contains(k) {
                    MASKED.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// What a dry run shows instead of a secret's value.
pub const MASKED: &str = "********";

/// Why a job cannot be turned into a launch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Its framework was registered when the job was created but is not now.
    #[error("framework {name:?} is not registered any more; registered frameworks: {known}")]
    UnknownFramework {
        /// The job's framework.
        name: String,
        /// The registered ones, comma-separated.
        known: String,
    },
}

/// Builds [`LaunchSpec`]s from the trainer registry (as it is at each
/// launch: a reload applies to jobs launched after it) and the daemon's
/// side of the contract.
pub struct SpecBuilder {
    registry: Arc<Trainers>,
    contract: Arc<dyn ContractSource>,
    /// Trainers run on a machine whose GPUs the daemon hands out.
    local_gpus: bool,
}

impl SpecBuilder {
    /// A builder over `registry`, with `contract` for the daemon's values.
    pub fn new(registry: Arc<Trainers>, contract: Arc<dyn ContractSource>) -> Self {
        Self {
            registry,
            contract,
            local_gpus: false,
        }
    }

    /// With `on`, each trainer's environment names exactly the GPUs its
    /// launch was given ([`env::put_gpus`]).
    pub fn local_gpus(mut self, on: bool) -> Self {
        self.local_gpus = on;
        self
    }

    /// The launch of `rec`'s trainer, which calls back with `token`.
    pub fn build(&self, rec: &JobRecord, token: &str) -> Result<LaunchSpec, SpecError> {
        let registry = self.registry.current();
        let trainer = registry.get(&rec.job.framework).cloned().ok_or_else(|| {
            SpecError::UnknownFramework {
                name: rec.job.framework.clone(),
                known: registry.names().join(", "),
            }
        })?;
        let contract = self.contract.contract(rec.job.id);
        let (mut env, secret_keys) = env::build(&rec.job, token, &trainer, &contract);
        if self.local_gpus {
            env::put_gpus(&mut env, &rec.job.sched.assigned_gpus, rec.job.sched.gpus);
        }
        Ok(LaunchSpec {
            job: rec.job.clone(),
            trainer,
            env,
            secret_keys,
        })
    }
}
