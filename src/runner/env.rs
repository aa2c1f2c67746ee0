//! The trainer's environment: SPEC §4's contract variables, a minimal base
//! (never the daemon's whole environment) and the trainer entry's own `env`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use crate::model::Job;
use crate::storage::Store;
use crate::trainers::Trainer;

/// Variables copied from the daemon's environment when set.
pub const BASE: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "USER"];

/// Contract variables that are secrets.
pub const SECRET_KEYS: [&str; 3] = [
    "CALLBACK_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Inputs of [`build`] that come from the daemon rather than the job.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    /// Daemon base URL (`BACKEND_BASE_URL`).
    pub base_url: String,
    /// Where outputs go (`OUTPUT_S3_URI`).
    pub output_uri: String,
    /// S3 settings for trainers (empty without S3).
    pub storage_env: BTreeMap<String, String>,
}

/// Where trainers find the daemon and their outputs.
pub trait ContractSource: Send + Sync {
    /// The contract values for job `id`.
    fn contract(&self, id: Uuid) -> Contract;
}

/// The contract from the daemon's address and its object store.
pub struct StoreContract {
    /// `BACKEND_BASE_URL`.
    pub base_url: String,
    /// The object store (`OUTPUT_S3_URI`, S3 settings for trainers).
    pub store: Arc<Store>,
}

impl ContractSource for StoreContract {
    fn contract(&self, id: Uuid) -> Contract {
        Contract {
            base_url: self.base_url.clone(),
            output_uri: self.store.output_uri(id),
            storage_env: self.store.trainer_env(),
        }
    }
}

/// The callback URL of job `id`.
pub fn callback_url(base_url: &str, id: Uuid) -> String {
    format!("{base_url}/api/v1/training/jobs/{id}/callback")
}

/// The full environment for `job`'s trainer: base, then the entry's `env`,
/// then the contract (which the entry cannot override).
pub fn build(
    job: &Job,
    token: &str,
    trainer: &Trainer,
    contract: &Contract,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut env = BTreeMap::new();
    for key in BASE {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.to_string(), v);
        }
    }
    env.extend(trainer.env.clone());
    let config = job
        .config
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let contract_vars = [
        ("JOB_ID", job.id.to_string()),
        ("CALLBACK_URL", callback_url(&contract.base_url, job.id)),
        ("CALLBACK_TOKEN", token.to_string()),
        ("BACKEND_BASE_URL", contract.base_url.clone()),
        ("MODEL_NAME", job.model_name.clone()),
        ("FRAMEWORK", job.framework.clone()),
        ("DATASET_S3_URI", job.dataset_s3_uri.clone()),
        ("OUTPUT_S3_URI", contract.output_uri.clone()),
        ("CONFIG", config.to_string()),
    ];
    for (k, v) in contract_vars {
        env.insert(k.to_string(), v);
    }
    env.extend(contract.storage_env.clone());
    let secrets = SECRET_KEYS
        .iter()
        .filter(|k| env.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    (env, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainers::Registry;

    #[test]
    fn contract_wins_over_entry_env_and_config_defaults_to_object() {
        let reg = Registry::builtin();
        let mut trainer = reg.get("demo").unwrap().clone();
        trainer.env.insert("JOB_ID".into(), "spoofed".into());
        trainer.env.insert("EXTRA".into(), "1".into());
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "01a2168a-db6a-736c-8397-0011d2208f72", "user_id": "u", "model_name": "m",
            "framework": "demo", "dataset_s3_uri": "s3://b/d/", "config": null,
            "status": "pending", "progress": 0.0, "message": null, "checkpoint_s3_uri": null,
            "error": null, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "started_at": null, "completed_at": null
        }))
        .unwrap();
        let contract = Contract {
            base_url: "http://127.0.0.1:8000".into(),
            output_uri: "file:///x/jobs/j/outputs/".into(),
            storage_env: BTreeMap::new(),
        };
        let (env, secrets) = build(&job, "tok", &trainer, &contract);
        assert_eq!(env["JOB_ID"], job.id.to_string());
        assert_eq!(env["EXTRA"], "1");
        assert_eq!(env["CONFIG"], "{}");
        assert_eq!(
            env["CALLBACK_URL"],
            format!(
                "http://127.0.0.1:8000/api/v1/training/jobs/{}/callback",
                job.id
            )
        );
        assert!(secrets.contains("CALLBACK_TOKEN"));
        assert!(!env.contains_key("DATABASE_URL"));
    }
}
