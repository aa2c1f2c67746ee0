//! CLI contexts: named (server, token) pairs saved by `platform login` in
//! `contexts.toml` in the user's config directory, mode 0600 (it holds
//! tokens), kubectl-style:
//!
//! ```toml
//! current = "lab"
//! [contexts.lab]
//! server = "https://gpu-box:8000"
//! token = "plt_…"
//! ```
//!
//! The context named by `PLATFORM_CONTEXT`, else `current`, fills
//! `PLATFORM_SERVER`/`PLATFORM_TOKEN` below the environment and `.env`
//! and above `config.toml` (see [`super::layers`]); `--server`/`--token`
//! still win.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dirs::default_config_dir;

/// File name in the config directory.
pub const CONTEXTS_FILE: &str = "contexts.toml";

/// One saved context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Daemon URL.
    pub server: String,
    /// API token, if the daemon needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who the token belonged to at login (for display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contexts {
    /// The context in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the contexts file is (`None` without a home directory).
pub fn contexts_path() -> Option<PathBuf> {
    default_config_dir().map(|d| d.join(CONTEXTS_FILE))
}

impl Contexts {
    /// Reads `path`; a missing file is no contexts.
    pub fn load(path: &Path) -> Result<Contexts, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contexts::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes `path` (and its directory) readable only by this user: a new
    /// 0600 file renamed over the old one, so no reader sees half a file
    /// and the tokens are never world-readable, even for a moment.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let text = toml::to_string(self).map_err(|e| format!("cannot write contexts: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("toml.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(fail)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// The context to use: `PLATFORM_CONTEXT`, else `current`.
    pub fn selected(&self) -> Option<(&str, &Context)> {
        let name = std::env::var("PLATFORM_CONTEXT")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| self.current.clone())?;
        self.contexts
            .get_key_value(name.as_str())
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// The selected context's variables, for [`super::layers`].
pub fn selected_vars() -> Result<Vec<(&'static str, String)>, String> {
    let Some(path) = contexts_path() else {
        return Ok(Vec::new());
    };
    let contexts = Contexts::load(&path)?;
    let Some((_, c)) = contexts.selected() else {
        return Ok(Vec::new());
    };
    let mut vars = vec![("PLATFORM_SERVER", c.server.clone())];
    vars.extend(c.token.clone().map(|t| ("PLATFORM_TOKEN", t)));
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(CONTEXTS_FILE);
        let mut c = Contexts::default();
        c.contexts.insert(
            "lab".into(),
            Context {
                server: "http://h:1".into(),
                token: Some("plt_x".into()),
                user: Some("alice".into()),
            },
        );
        c.current = Some("lab".into());
        c.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Contexts::load(&path).unwrap(), c);
        assert_eq!(c.selected().unwrap().0, "lab");
        assert_eq!(
            Contexts::load(&dir.path().join("none")).unwrap(),
            Contexts::default()
        );
    }
}
