//! The trainer registry: which frameworks exist and how to launch each.
//!
//! Entries come from three places, later ones winning: the built-in `demo`
//! framework (this binary run as a trainer), sub-directories of
//! `TRAINER_SUBPROCESS_PATH` (the seed's layout: `<dir>/<framework>/train`
//! or `train.py`), and the trainers TOML file.
//!
//! [`Trainers`] is the daemon's one handle on the registry: everything that
//! needs it (job creation, launches, `/frameworks`) reads the current
//! snapshot from it, and a reload (SIGHUP, `POST …/frameworks/reload`)
//! swaps in a new one, or keeps the old one when the files are broken.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::framework::Framework;
pub use crate::model::framework::{Resources, Toleration};

/// The framework that is always registered.
pub const DEMO: &str = "demo";

/// Where an entry was registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Compiled into the binary (`demo`).
    Builtin,
    /// Discovered under `TRAINER_SUBPROCESS_PATH`.
    Directory,
    /// Declared in the trainers file.
    File,
}

/// How to launch one framework's trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trainer {
    /// Framework name, as used in `job create --framework`.
    pub name: String,
    /// argv; never run through a shell. Empty for the built-in demo (the
    /// runner runs this binary's own trainer).
    pub command: Vec<String>,
    /// Working directory.
    #[schema(value_type = Option<String>)]
    pub workdir: Option<PathBuf>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container image (Kubernetes runner).
    pub image: Option<String>,
    /// Pod resources (Kubernetes runner).
    #[serde(default)]
    pub resources: Resources,
    /// Node selector (Kubernetes runner).
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations (Kubernetes runner).
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// How its jobs are retried unless they say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::model::RetryPolicy>,
    /// Silence (seconds) after which its jobs are `stalled`, unless they
    /// say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<f64>,
    /// Where the entry came from.
    pub source: Source,
}

/// One `[trainers.NAME]` table of the trainers file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    command: Vec<String>,
    workdir: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    image: Option<String>,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    tolerations: Vec<Toleration>,
    retry: Option<crate::model::RetryPolicy>,
    heartbeat_timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainersFile {
    #[serde(default)]
    trainers: BTreeMap<String, FileEntry>,
}

/// A registry that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The trainers file is unreadable.
    #[error("cannot read the trainers file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (not a `source`: the message already says it once).
        error: std::io::Error,
    },
    /// The trainers file is not valid.
    #[error("the trainers file {path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The trainers directory is unreadable.
    #[error("cannot read the trainers directory {path}: {error}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why (not a `source`: the message already says it once).
        error: std::io::Error,
    },
}

/// Every registered framework, by name.
#[derive(Debug, Clone)]
pub struct Registry {
    entries: BTreeMap<String, Trainer>,
}

impl Registry {
    /// Only the built-in `demo`.
    pub fn builtin() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(
            DEMO.to_string(),
            Trainer {
                name: DEMO.into(),
                command: Vec::new(),
                workdir: None,
                env: BTreeMap::new(),
                image: None,
                resources: Resources::default(),
                node_selector: BTreeMap::new(),
                tolerations: Vec::new(),
                retry: None,
                heartbeat_timeout: None,
                source: Source::Builtin,
            },
        );
        Self { entries }
    }

    /// `demo`, then the trainers directory, then the trainers file.
    pub fn load(dir: Option<&Path>, file: Option<&Path>) -> Result<Self, RegistryError> {
        let mut reg = Self::builtin();
        if let Some(dir) = dir {
            for t in discover(dir)? {
                reg.entries.insert(t.name.clone(), t);
            }
        }
        if let Some(file) = file {
            for t in parse_file(file)? {
                reg.entries.insert(t.name.clone(), t);
            }
        }
        Ok(reg)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&Trainer> {
        self.entries.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Every entry, sorted by name.
    pub fn all(&self) -> impl Iterator<Item = &Trainer> {
        self.entries.values()
    }

    /// What `GET /api/v1/training/frameworks` shows: everything but the
    /// values of `env` (they may hold secrets).
    pub fn frameworks(&self) -> Vec<Framework> {
        self.all()
            .map(|t| Framework {
                name: t.name.clone(),
                source: format!("{:?}", t.source).to_lowercase(),
                command: t.command.clone(),
                workdir: t.workdir.as_ref().map(|w| w.display().to_string()),
                env: t.env.keys().cloned().collect(),
                image: t.image.clone(),
                resources: t.resources.clone(),
                node_selector: t.node_selector.clone(),
                tolerations: t.tolerations.clone(),
            })
            .collect()
    }
}

/// The reloadable registry: the snapshot in use and where it came from.
#[derive(Debug)]
pub struct Trainers {
    current: RwLock<Arc<Registry>>,
    dir: Option<PathBuf>,
    file: Option<PathBuf>,
    /// One reload at a time, so a slow read cannot replace a newer one.
    reloading: Mutex<()>,
}

impl Trainers {
    /// Loads the registry from `dir` and `file` (see [`Registry::load`]);
    /// [`Trainers::reload`] reads the same places again.
    pub fn load(dir: Option<&Path>, file: Option<&Path>) -> Result<Self, RegistryError> {
        let reg = Registry::load(dir, file)?;
        Ok(Self {
            current: RwLock::new(Arc::new(reg)),
            dir: dir.map(Path::to_path_buf),
            file: file.map(Path::to_path_buf),
            reloading: Mutex::new(()),
        })
    }

    /// A handle on the built-in registry alone (nothing to reload from).
    pub fn builtin() -> Self {
        Self {
            current: RwLock::new(Arc::new(Registry::builtin())),
            dir: None,
            file: None,
            reloading: Mutex::new(()),
        }
    }

    /// The registry in use now. Callers keep the snapshot for the length
    /// of one operation, so a reload never changes a registry under them.
    pub fn current(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where more trainers can be registered without a restart, in words
    /// (for the unknown-framework error).
    pub fn reload_hint(&self) -> String {
        let places: Vec<String> = self
            .file
            .iter()
            .map(|f| f.display().to_string())
            .chain(self.dir.iter().map(|d| format!("{}/", d.display())))
            .collect();
        if places.is_empty() {
            "no trainers file is configured: start `platform serve` with --trainers FILE (TRAINERS_FILE) to register trainers".into()
        } else {
            format!(
                "after editing {}, `platform framework reload` (or SIGHUP to the daemon) registers the changes",
                places.join(" or ")
            )
        }
    }

    /// Reads the trainers directory and file again and, when they are
    /// valid, makes the result current; when they are not, the registry in
    /// use stays and the error says why. Blocking file I/O: call it off the
    /// async runtime.
    /// Both outcomes are logged.
    pub fn reload(&self) -> Result<Arc<Registry>, RegistryError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match Registry::load(self.dir.as_deref(), self.file.as_deref()) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
                tracing::info!(frameworks = %fresh.names().join(","), "trainer registry reloaded");
                Ok(fresh)
            }
            Err(e) => {
                tracing::error!(error = %e, "trainer registry not reloaded; the frameworks registered before stay in use");
                Err(e)
            }
        }
    }
}

fn parse_file(path: &Path) -> Result<Vec<Trainer>, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|error| RegistryError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let invalid = |message: String| RegistryError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let parsed: TrainersFile =
        toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parsed
        .trainers
        .into_iter()
        .map(|(name, e)| {
            if e.command.is_empty() || e.command[0].is_empty() {
                return Err(invalid(format!(
                    "trainers.{name}.command must not be empty"
                )));
            }
            if let Some(r) = &e.retry {
                r.validate(&format!("trainers.{name}.retry"))
                    .map_err(|v| invalid(v.to_string()))?;
            }
            crate::model::sched::check_seconds(
                &format!("trainers.{name}.heartbeat_timeout"),
                e.heartbeat_timeout,
                false,
            )
            .map_err(|v| invalid(v.to_string()))?;
            Ok(Trainer {
                name,
                command: e.command,
                // Relative working directories are relative to the file.
                workdir: e.workdir.map(|w| base.join(w)),
                env: e.env,
                image: e.image,
                resources: e.resources,
                node_selector: e.node_selector,
                tolerations: e.tolerations,
                retry: e.retry,
                heartbeat_timeout: e.heartbeat_timeout,
                source: Source::File,
            })
        })
        .collect()
}

/// The seed's layout: one sub-directory per framework with an executable
/// `train`, or a `train.py` run by the directory's `venv/bin/python` when
/// present, else `python3`.
fn discover(dir: &Path) -> Result<Vec<Trainer>, RegistryError> {
    let read = std::fs::read_dir(dir).map_err(|error| RegistryError::Directory {
        path: dir.to_path_buf(),
        error,
    })?;
    let mut out = Vec::new();
    for entry in read.flatten() {
        let sub = entry.path();
        let Some(name) = sub.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !sub.is_dir() || name.starts_with('.') {
            continue;
        }
        let train = sub.join("train");
        let train_py = sub.join("train.py");
        let command = if is_executable(&train) {
            vec![train.display().to_string()]
        } else if train_py.is_file() {
            let venv = sub.join("venv/bin/python");
            let python = if venv.is_file() {
                venv.display().to_string()
            } else {
                "python3".to_string()
            };
            vec![python, train_py.display().to_string()]
        } else {
            if train.is_file() {
                tracing::warn!(path = %train.display(), "skipping a trainer that is not executable (chmod +x it)");
            }
            continue;
        };
        out.push(Trainer {
            name,
            command,
            workdir: Some(sub.clone()),
            env: BTreeMap::new(),
            image: None,
            resources: Resources::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            retry: None,
            heartbeat_timeout: None,
            source: Source::Directory,
        });
    }
    Ok(out)
}

/// A regular file with an execute bit (what `train` must be to run).
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_entries_override_directory_and_keep_demo() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trainers");
        std::fs::create_dir_all(dir.join("yolo")).unwrap();
        std::fs::write(dir.join("yolo/train.py"), "print(1)").unwrap();
        std::fs::create_dir_all(dir.join("venvfw/venv/bin")).unwrap();
        std::fs::write(dir.join("venvfw/train.py"), "").unwrap();
        std::fs::write(dir.join("venvfw/venv/bin/python"), "").unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        // `train` counts only when it can be executed.
        use std::os::unix::fs::PermissionsExt;
        for (name, mode) in [("shell", 0o755), ("noexec", 0o644)] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            let train = dir.join(name).join("train");
            std::fs::write(&train, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&train, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let file = tmp.path().join("trainers.toml");
        std::fs::write(
            &file,
            r#"
[trainers.yolo]
command = ["python3", "other.py"]
workdir = "w"
env = { PYTHONUNBUFFERED = "1" }
resources = { cpu = "4", memory = "16Gi", gpu = 1 }
"#,
        )
        .unwrap();
        let reg = Registry::load(Some(&dir), Some(&file)).unwrap();
        assert_eq!(reg.names(), vec!["demo", "shell", "venvfw", "yolo"]);
        let yolo = reg.get("yolo").unwrap();
        assert_eq!(yolo.command, vec!["python3", "other.py"]);
        assert_eq!(
            yolo.workdir.as_deref(),
            Some(tmp.path().join("w").as_path())
        );
        assert_eq!(yolo.resources.gpu, Some(1));
        assert_eq!(yolo.source, Source::File);
        let v = reg.get("venvfw").unwrap();
        assert!(
            v.command[0].ends_with("venvfw/venv/bin/python"),
            "{:?}",
            v.command
        );
    }

    #[test]
    fn a_reload_swaps_in_the_new_file_or_keeps_the_old_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("trainers.toml");
        std::fs::write(&file, "").unwrap();
        let trainers = Trainers::load(None, Some(&file)).unwrap();
        let before = trainers.current();
        assert_eq!(before.names(), vec!["demo"]);
        assert!(trainers.reload_hint().contains("trainers.toml"));

        std::fs::write(
            &file,
            "[trainers.yolo]\ncommand = [\"python3\", \"train.py\"]\n",
        )
        .unwrap();
        assert_eq!(trainers.reload().unwrap().names(), vec!["demo", "yolo"]);
        assert_eq!(trainers.current().names(), vec!["demo", "yolo"]);
        // A snapshot taken before stays as it was.
        assert_eq!(before.names(), vec!["demo"]);

        std::fs::write(&file, "[trainers.yolo]\ncommand = []\n").unwrap();
        assert!(matches!(
            trainers.reload(),
            Err(RegistryError::Invalid { .. })
        ));
        assert_eq!(trainers.current().names(), vec!["demo", "yolo"]);

        assert!(Trainers::builtin().reload_hint().contains("--trainers"));
    }

    #[test]
    fn rejects_unknown_keys_and_empty_commands() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("t.toml");
        std::fs::write(&file, "[trainers.a]\ncommand = [\"x\"]\nimgae = \"typo\"\n").unwrap();
        assert!(matches!(
            Registry::load(None, Some(&file)),
            Err(RegistryError::Invalid { .. })
        ));
        std::fs::write(&file, "[trainers.a]\ncommand = []\n").unwrap();
        assert!(Registry::load(None, Some(&file)).is_err());
    }
}
