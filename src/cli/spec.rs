//! Building and sending a job from the command line: the trainer config,
//! `--config FILE` (JSON or YAML) merged with `--set KEY=VALUE` overrides,
//! and the create with its retries (`job create`, `job resubmit`).

use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};

use super::exit::Exit;
use crate::client::Client;
use crate::model::sweep::set_dotted;
use crate::model::{CreateJob, Job};

/// Merges `--config FILE` (JSON or YAML) with `--set key=value` overrides.
/// Dotted keys (`a.b=1`) set nested objects.
pub fn build_config(file: Option<&Path>, sets: &[String]) -> anyhow::Result<Option<Value>> {
    let mut config = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let value: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) => serde_yaml_ng::from_str(&text).map_err(|e| {
                    Exit::usage(format!(
                        "config file {} is neither JSON nor YAML: {e}",
                        path.display()
                    ))
                })?,
            };
            match value {
                Value::Object(m) => Some(m),
                Value::Null => Some(Map::new()),
                _ => {
                    return Err(Exit::usage(format!(
                        "config file {} must hold a JSON/YAML object (key: value pairs)",
                        path.display()
                    )))
                }
            }
        }
        None => None,
    };
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| Exit::usage(format!("--set {set:?}: expected KEY=VALUE")))?;
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(Exit::usage(format!(
                "--set {set:?}: the key must not be empty"
            )));
        }
        let value =
            serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.into()));
        // The same nesting a sweep's dotted keys get.
        set_dotted(config.get_or_insert_with(Map::new), key, value);
    }
    Ok(config.map(Value::Object))
}

/// Sends the create, retrying what may be passing trouble (an unreachable
/// daemon, 5xx, 429, or the same key still in flight after a cut-off
/// attempt) with the same key: the daemon creates the job at most once.
pub(super) async fn create_with_retries(
    client: &Client,
    req: &CreateJob,
    key: &str,
) -> anyhow::Result<Job> {
    const ATTEMPTS: u32 = 4;
    let mut attempt = 1;
    loop {
        match client.create_job(req, Some(key)).await {
            Ok(job) => return Ok(job),
            Err(e)
                if attempt < ATTEMPTS
                    && (e.is_transient() || e.status() == Some(reqwest::StatusCode::CONFLICT)) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_parses_json_then_string_and_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "epochs: 10\nbatch: 16\nopt:\n  lr: 0.1\n").unwrap();
        let sets = vec![
            "epochs=5".to_string(),
            "name=run one".to_string(),
            "flags=[1,2]".to_string(),
            "opt.lr=0.01".to_string(),
            "on=true".to_string(),
        ];
        let c = build_config(Some(&f), &sets).unwrap().unwrap();
        assert_eq!(
            c,
            serde_json::json!({"epochs": 5, "batch": 16, "name": "run one", "flags": [1, 2],
                               "opt": {"lr": 0.01}, "on": true})
        );
    }

    #[test]
    fn no_config_means_null() {
        assert_eq!(build_config(None, &[]).unwrap(), None);
        assert!(build_config(None, &["novalue".into()]).is_err());
    }
}
