//! `platform framework list|reload`: the trainer frameworks the daemon
//! knows, and making it re-read its trainers file after an edit.

use clap::Subcommand;

use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::model::Framework;

/// `platform framework` subcommands.
#[derive(Debug, Subcommand)]
pub enum FrameworkCommand {
    /// List registered frameworks.
    #[command(visible_alias = "ls")]
    List,
    /// Make the daemon re-read its trainers file and directory (as SIGHUP
    /// does), then list the frameworks registered now. A broken file
    /// changes nothing and the error says why.
    Reload,
}

/// Runs a `platform framework` subcommand.
pub async fn run(g: &GlobalArgs, out: &Printer, cmd: FrameworkCommand) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let client = g.client()?;
    let list: Vec<Framework> = match cmd {
        FrameworkCommand::List => client.frameworks().await?,
        FrameworkCommand::Reload => client.reload_frameworks().await?,
    };
    output::print_list(
        out,
        fmt,
        &list,
        &["NAME", "SOURCE", "COMMAND", "IMAGE", "GPU"],
        |f| {
            vec![
                f.name.clone(),
                f.source.clone(),
                if f.command.is_empty() {
                    "(built in)".into()
                } else {
                    f.command.join(" ")
                },
                f.image.clone().unwrap_or_else(|| "-".into()),
                f.resources.gpu.map_or("-".into(), |g| g.to_string()),
            ]
        },
    )
}
