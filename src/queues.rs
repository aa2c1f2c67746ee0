//! The configured queues: names, concurrency limits, per-user limits and
//! Kueue mappings. Declared in the config file as `[queues.NAME]` tables
//! (which reach the daemon as the `QUEUES` variable, TOML or JSON);
//! `default` always exists and takes `--max-concurrent-jobs` as its limit.
//! Whether a queue is paused is state, not configuration: it lives in the
//! database.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::sched::{check_queue_name, DEFAULT_QUEUE};

/// One queue's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Its name.
    pub name: String,
    /// Most jobs running at once (0: unlimited).
    pub max_concurrent: u32,
    /// Most jobs of one user running at once.
    pub max_per_user: Option<u32>,
    /// Kubernetes: the Kueue LocalQueue its Jobs go to.
    pub kueue_queue: Option<String>,
}

/// Every queue, `default` included, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    queues: Vec<QueueConfig>,
}

/// A `[queues.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    max_concurrent: Option<u32>,
    max_per_user: Option<u32>,
    kueue_queue: Option<String>,
}

/// A queue definition that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid queue configuration (QUEUES / [queues.NAME] in the config file): {0}")]
pub struct QueuesError(String);

impl Queues {
    /// Only `default`, with `default_limit` (0: unlimited).
    pub fn only_default(default_limit: u32) -> Self {
        Self::parse(None, default_limit).unwrap_or(Self { queues: Vec::new() })
    }

    /// Parses the `QUEUES` text (a TOML table of tables, as the config
    /// file's `[queues]` arrives, or the same as JSON). `default` is added
    /// when missing; its `max_concurrent` is `default_limit` unless set.
    pub fn parse(text: Option<&str>, default_limit: u32) -> Result<Self, QueuesError> {
        let entries: BTreeMap<String, Entry> = match text.map(str::trim) {
            None | Some("") => BTreeMap::new(),
            Some(t)
                if t.starts_with('{') && serde_json::from_str::<serde_json::Value>(t).is_ok() =>
            {
                serde_json::from_str(t).map_err(|e| QueuesError(e.to_string()))?
            }
            Some(t) => {
                // An inline table (`{ gpu = { … } }`) or a document.
                let doc = if t.starts_with('{') {
                    format!("q = {t}")
                } else {
                    t.to_string()
                };
                let mut table: BTreeMap<String, BTreeMap<String, Entry>> = if t.starts_with('{') {
                    toml::from_str(&doc).map_err(|e| QueuesError(e.to_string()))?
                } else {
                    let inner: BTreeMap<String, Entry> =
                        toml::from_str(&doc).map_err(|e| QueuesError(e.to_string()))?;
                    BTreeMap::from([("q".to_string(), inner)])
                };
                table.remove("q").unwrap_or_default()
            }
        };
        let mut queues = Vec::new();
        for (name, e) in entries {
            check_queue_name(&name).map_err(QueuesError)?;
            if e.max_per_user == Some(0) {
                return Err(QueuesError(format!(
                    "queue {name:?}: max_per_user must be at least 1 (leave it out for no limit)"
                )));
            }
            let max_concurrent = match (name.as_str(), e.max_concurrent) {
                (_, Some(n)) => n,
                (DEFAULT_QUEUE, None) => default_limit,
                (_, None) => 0,
            };
            queues.push(QueueConfig {
                name,
                max_concurrent,
                max_per_user: e.max_per_user,
                kueue_queue: e.kueue_queue,
            });
        }
        if !queues.iter().any(|q| q.name == DEFAULT_QUEUE) {
            queues.push(QueueConfig {
                name: DEFAULT_QUEUE.into(),
                max_concurrent: default_limit,
                max_per_user: None,
                kueue_queue: None,
            });
            queues.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(Self { queues })
    }

    /// The queue called `name`.
    pub fn get(&self, name: &str) -> Option<&QueueConfig> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// Every queue, by name.
    pub fn all(&self) -> &[QueueConfig] {
        &self.queues
    }

    /// The names, comma-separated (for error messages).
    pub fn names(&self) -> String {
        self.queues
            .iter()
            .map(|q| q.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_always_exists_with_the_global_limit() {
        let q = Queues::parse(None, 3).unwrap();
        assert_eq!(q.all().len(), 1);
        assert_eq!(q.get("default").unwrap().max_concurrent, 3);
    }

    #[test]
    fn toml_inline_tables_documents_and_json_parse_alike() {
        let toml_inline = r#"{ gpu = { max_concurrent = 2, max_per_user = 1 }, cpu = {} }"#;
        let toml_doc = "[gpu]\nmax_concurrent = 2\nmax_per_user = 1\n[cpu]\n";
        let json = r#"{"gpu": {"max_concurrent": 2, "max_per_user": 1}, "cpu": {}}"#;
        for text in [toml_inline, toml_doc, json] {
            let q = Queues::parse(Some(text), 1).unwrap();
            assert_eq!(q.names(), "cpu, default, gpu", "{text}");
            let gpu = q.get("gpu").unwrap();
            assert_eq!((gpu.max_concurrent, gpu.max_per_user), (2, Some(1)));
            assert_eq!(q.get("cpu").unwrap().max_concurrent, 0);
        }
    }

    #[test]
    fn the_config_files_queues_table_arrives_as_its_variable_does() {
        // What `config::layers` puts into QUEUES for a `[queues.NAME]` table.
        let file: toml::Table =
            "[queues.gpu]\nmax_concurrent = 2\nkueue_queue = \"team-a\"\n[queues.cpu]\n"
                .parse()
                .unwrap();
        let text = file["queues"].to_string();
        let q = Queues::parse(Some(&text), 1).unwrap();
        assert_eq!(q.names(), "cpu, default, gpu", "{text}");
        assert_eq!(q.get("gpu").unwrap().kueue_queue.as_deref(), Some("team-a"));
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        for bad in [
            r#"{"GPU": {}}"#,
            r#"{"gpu": {"max_paralel": 2}}"#,
            r#"{"gpu": {"max_per_user": 0}}"#,
            "[gpu",
        ] {
            assert!(Queues::parse(Some(bad), 1).is_err(), "{bad}");
        }
    }
}
