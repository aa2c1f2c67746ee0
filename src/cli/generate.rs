//! Shell completions and man pages, generated from the clap definitions.
//! The checked-in copies under `completions/` and `man/` are compared with
//! fresh output by a test, so they cannot go stale.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// `platform completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `platform man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page (one per command) into this directory instead of
    /// printing the top-level page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The shells with a checked-in completion script, and its file name.
pub(crate) const COMPLETION_FILES: [(Shell, &str); 4] = [
    (Shell::Bash, "platform.bash"),
    (Shell::Zsh, "_platform"),
    (Shell::Fish, "platform.fish"),
    (Shell::PowerShell, "_platform.ps1"),
];

/// The clap command with environment values hidden, so generated files do
/// not depend on the machine that generated them, and help never shows an
/// unset variable as `[env: NAME=]` (what the parser uses too).
pub(crate) fn command() -> clap::Command {
    fn hide(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.hide_env_values(true))
            .mut_subcommands(hide)
    }
    hide(Cli::command())
}

/// The completion script for `shell`.
pub(crate) fn completion_script(shell: Shell) -> Vec<u8> {
    let mut cmd = command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "platform", &mut buf);
    buf
}

/// Every man page: `platform.1`, `platform-job.1`, `platform-job-create.1`, …
pub(crate) fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = command();
    cmd.build();
    let mut out = Vec::new();
    collect_pages(&cmd, "platform", &mut out)?;
    Ok(out)
}

fn collect_pages(
    cmd: &clap::Command,
    name: &str,
    out: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let page = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    out.push((format!("{name}.1"), buf));
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        collect_pages(sub, &format!("{name}-{}", sub.get_name()), out)?;
    }
    Ok(())
}

/// Writes every completion script into `dir`.
pub fn write_completions(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (shell, file) in COMPLETION_FILES {
        std::fs::write(dir.join(file), completion_script(shell))
            .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    Ok(())
}

/// Writes every man page into `dir`.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, page) in man_pages()? {
        std::fs::write(dir.join(&file), page)
            .with_context(|| format!("cannot write {}", dir.join(&file).display()))?;
    }
    Ok(())
}

/// Runs `platform completions`.
pub(crate) fn completions(a: CompletionsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(&completion_script(a.shell))?;
    Ok(())
}

/// Runs `platform man`.
pub(crate) fn man(a: ManArgs) -> anyhow::Result<()> {
    use std::io::Write;
    match a.dir {
        Some(dir) => write_man_pages(&dir),
        None => {
            let pages = man_pages()?;
            if let Some((_, top)) = pages.first() {
                std::io::stdout().write_all(top)?;
            }
            Ok(())
        }
    }
}
