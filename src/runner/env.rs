//! The trainer's environment: SPEC §4's contract variables, a minimal base
//! (never the daemon's whole environment) and the trainer entry's own `env`.
//!
//! Local trainers also get `PLATFORM_BIN` (the daemon's own executable) with
//! its directory first on `PATH`, so `platform report` works in a trainer
//! even when the daemon was started by its full path. Kubernetes pods run
//! their image's binaries, so they get neither.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::model::{AssignedGpu, Job};
use crate::storage::Store;
use crate::trainers::Trainer;

/// Variables copied from the daemon's environment when set.
pub const BASE: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "USER"];

/// Variables passed on from the daemon's environment when set, because they
/// tune the trainer side of the contract (here: how long trainers keep
/// retrying reports while the daemon is away).
pub const PASSED_ON: [&str; 1] = ["PLATFORM_REPORT_TIMEOUT"];

/// Names the daemon's executable, for trainers to run `$PLATFORM_BIN report`.
pub const PLATFORM_BIN: &str = "PLATFORM_BIN";

/// Used when the daemon itself has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The trainer's callback token (a Kubernetes Secret key too).
pub const TOKEN_KEY: &str = "CALLBACK_TOKEN";

/// Contract variables that are secrets.
pub const SECRET_KEYS: [&str; 3] = [TOKEN_KEY, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// Inputs of [`build`] that come from the daemon rather than the job.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    /// Daemon base URL (`BACKEND_BASE_URL`).
    pub base_url: String,
    /// Where outputs go (`OUTPUT_S3_URI`).
    pub output_uri: String,
    /// S3 settings for trainers (empty without S3).
    pub storage_env: BTreeMap<String, String>,
    /// The daemon's executable, for trainers that run on its machine
    /// (`PLATFORM_BIN`, and its directory first on `PATH`).
    pub platform_bin: Option<PathBuf>,
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
    /// The daemon's executable when trainers run on its machine (`None`
    /// for Kubernetes pods).
    pub platform_bin: Option<PathBuf>,
}

impl ContractSource for StoreContract {
    fn contract(&self, id: Uuid) -> Contract {
        Contract {
            base_url: self.base_url.clone(),
            output_uri: self.store.output_uri(id),
            storage_env: self.store.trainer_env(),
            platform_bin: self.platform_bin.clone(),
        }
    }
}

/// The callback URL of job `id`.
pub fn callback_url(base_url: &str, id: Uuid) -> String {
    format!("{base_url}/api/v1/training/jobs/{id}/callback")
}

/// The full environment for `job`'s trainer: base, then the entry's `env`,
/// then the contract (which the entry cannot override).
///
/// Returns the environment and which of its variables are secrets.
pub fn build(
    job: &Job,
    token: &str,
    trainer: &Trainer,
    contract: &Contract,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut env = BTreeMap::new();
    for key in BASE.iter().chain(&PASSED_ON) {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.to_string(), v);
        }
    }
    env.extend(trainer.env.clone());
    if let Some(bin) = &contract.platform_bin {
        put_platform_on_path(&mut env, bin);
    }
    let config = job
        .config
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let contract_vars = [
        ("JOB_ID", job.id.to_string()),
        ("CALLBACK_URL", callback_url(&contract.base_url, job.id)),
        (TOKEN_KEY, token.to_string()),
        ("BACKEND_BASE_URL", contract.base_url.clone()),
        ("MODEL_NAME", job.model_name.clone()),
        ("FRAMEWORK", job.framework.clone()),
        ("DATASET_S3_URI", job.dataset_s3_uri.clone()),
        ("OUTPUT_S3_URI", contract.output_uri.clone()),
        ("CONFIG", config.to_string()),
        // The attempt this launch starts (1 for the first; retries count on).
        ("ATTEMPT", (job.sched.attempt + 1).to_string()),
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

/// Gives a local trainer exactly its GPUs: `CUDA_VISIBLE_DEVICES` and
/// `NVIDIA_VISIBLE_DEVICES` list their `nvidia-smi` indices (empty: none,
/// so a job that asked for no GPU cannot take one), and
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes CUDA number GPUs as `nvidia-smi` does.
/// A job asking for `wanted` GPUs that has none yet is a dry run (a launch
/// always records its GPUs first): its plan says they come at launch.
pub fn put_gpus(env: &mut BTreeMap<String, String>, gpus: &[AssignedGpu], wanted: u32) {
    let list = if gpus.is_empty() && wanted > 0 {
        format!("<{wanted} GPUs, chosen at launch>")
    } else {
        gpus.iter()
            .map(|g| g.index.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    env.insert("CUDA_VISIBLE_DEVICES".into(), list.clone());
    env.insert("NVIDIA_VISIBLE_DEVICES".into(), list);
    env.insert("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into());
}

/// Sets `PLATFORM_BIN` and puts its directory first on `PATH` (unless it is
/// already first), so `platform` in a trainer is the daemon's own binary.
fn put_platform_on_path(env: &mut BTreeMap<String, String>, bin: &std::path::Path) {
    env.insert(PLATFORM_BIN.to_string(), bin.display().to_string());
    let Some(dir) = bin.parent().map(|d| d.display().to_string()) else {
        return;
    };
    let path = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    if path.split(':').next() != Some(dir.as_str()) {
        env.insert("PATH".to_string(), format!("{dir}:{path}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainers::Registry;

    fn job() -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "01a2168a-db6a-736c-8397-0011d2208f72", "user_id": "u", "model_name": "m",
            "framework": "demo", "dataset_s3_uri": "s3://b/d/", "config": null,
            "status": "pending", "progress": 0.0, "message": null, "checkpoint_s3_uri": null,
            "error": null, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "started_at": null, "completed_at": null
        }))
        .unwrap()
    }

    fn contract(platform_bin: Option<&str>) -> Contract {
        Contract {
            base_url: "http://127.0.0.1:8000".into(),
            output_uri: "file:///x/jobs/j/outputs/".into(),
            storage_env: BTreeMap::new(),
            platform_bin: platform_bin.map(PathBuf::from),
        }
    }

    #[test]
    fn contract_wins_over_entry_env_and_config_defaults_to_object() {
        let reg = Registry::builtin();
        let mut trainer = reg.get("demo").unwrap().clone();
        trainer.env.insert("JOB_ID".into(), "spoofed".into());
        trainer.env.insert("EXTRA".into(), "1".into());
        let job = job();
        let (env, secrets) = build(&job, "tok", &trainer, &contract(None));
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
        assert!(
            !env.contains_key(PLATFORM_BIN),
            "no local binary (Kubernetes): no PLATFORM_BIN"
        );
    }

    #[test]
    fn local_trainers_find_the_daemons_binary_first_on_path() {
        let reg = Registry::builtin();
        let mut trainer = reg.get("demo").unwrap().clone();
        trainer
            .env
            .insert(PLATFORM_BIN.into(), "/elsewhere/platform".into());
        trainer
            .env
            .insert("PATH".into(), "/venv/bin:/usr/bin".into());
        let bin = "/home/u/.local/bin/platform";
        let (env, _) = build(&job(), "tok", &trainer, &contract(Some(bin)));
        assert_eq!(env[PLATFORM_BIN], bin, "the contract wins over the entry");
        assert_eq!(env["PATH"], "/home/u/.local/bin:/venv/bin:/usr/bin");
        // Already first: PATH is left alone.
        trainer
            .env
            .insert("PATH".into(), "/home/u/.local/bin:/usr/bin".into());
        let (env, _) = build(&job(), "tok", &trainer, &contract(Some(bin)));
        assert_eq!(env["PATH"], "/home/u/.local/bin:/usr/bin");
        // No PATH at all: the usual system directories follow.
        let mut env = BTreeMap::new();
        put_platform_on_path(&mut env, std::path::Path::new(bin));
        assert_eq!(env["PATH"], format!("/home/u/.local/bin:{DEFAULT_PATH}"));
    }

    #[test]
    fn local_trainers_get_exactly_their_gpus() {
        let gpu = |index| AssignedGpu {
            index,
            uuid: format!("GPU-{index}"),
        };
        let mut env = BTreeMap::new();
        put_gpus(&mut env, &[gpu(1), gpu(3)], 2);
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "1,3");
        assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "1,3");
        assert_eq!(env["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
        put_gpus(&mut env, &[], 0);
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "", "none asked, none visible");
        put_gpus(&mut env, &[], 2);
        assert!(env["CUDA_VISIBLE_DEVICES"].contains("at launch"));
    }
}
