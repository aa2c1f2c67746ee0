//! The per-user directories platform falls back to when no path is
//! configured: data (database, local object store) and config (config
//! file, trainers file), following the OS's conventions (XDG on Linux).

use std::path::PathBuf;

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "platform")
}

/// The user's data directory for platform (e.g. `~/.local/share/platform`).
pub fn default_data_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_path_buf())
}

/// The user's config directory for platform (e.g. `~/.config/platform`).
pub fn default_config_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().to_path_buf())
}
