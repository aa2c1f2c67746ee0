//! The layers below the environment: `.env` in the working directory,
//! then the config file. Both are folded into the environment before clap
//! parses, each only filling variables that are still unset, so clap's
//! own flags-over-environment rule gives the whole precedence.

use std::path::{Path, PathBuf};

use super::dirs::default_config_dir;

/// Short config-file keys and the variables they set.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("server", "PLATFORM_SERVER"),
    ("token", "PLATFORM_TOKEN"),
    ("user", "PLATFORM_USER"),
    ("bind", "PLATFORM_BIND"),
    ("data_dir", "PLATFORM_DATA_DIR"),
    ("api_token", "PLATFORM_API_TOKEN"),
];

/// Folds `.env` (working directory) and the config file
/// (`$PLATFORM_CONFIG`, else `config.toml` in the user's config directory)
/// into the environment, never overriding a variable that is already set.
/// Call before any thread starts. Returns a warning for a broken file.
pub fn load_env_layers() -> Vec<String> {
    let mut warnings = Vec::new();
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => warnings.push(format!("ignoring .env: {e}")),
    }
    // The selected CLI context (`platform login`) sits above config.toml.
    match super::contexts::selected_vars() {
        Ok(vars) => set_unset(vars),
        Err(e) => warnings.push(format!("ignoring contexts file {e}")),
    }
    let path = std::env::var_os("PLATFORM_CONFIG")
        .map(PathBuf::from)
        .or_else(|| default_config_dir().map(|d| d.join("config.toml")));
    if let Some(path) = path.filter(|p| p.is_file()) {
        if let Err(e) = apply_config_file(&path) {
            warnings.push(e);
        }
    }
    warnings
}

fn apply_config_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("ignoring config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("ignoring config file {}: {e}", path.display()))?;
    for (key, value) in table {
        let var = KEY_ALIASES
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| key.to_ascii_uppercase());
        let value = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        set_unset([(var, value)]);
    }
    Ok(())
}

/// Sets each variable that is still unset.
fn set_unset<K: AsRef<std::ffi::OsStr>>(vars: impl IntoIterator<Item = (K, String)>) {
    for (var, value) in vars {
        if std::env::var_os(&var).is_none() {
            // SAFETY (edition 2021: safe fn): called before any other thread exists.
            std::env::set_var(&var, value);
        }
    }
}
