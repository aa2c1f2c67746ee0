//! `platform framework list`: the trainer frameworks the daemon knows.

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
}

/// Runs a `platform framework` subcommand.
pub async fn run(g: &GlobalArgs, out: &Printer, cmd: FrameworkCommand) -> anyhow::Result<()> {
    let FrameworkCommand::List = cmd;
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let client = g.client()?;
    let list: Vec<Framework> = client.frameworks().await?;
    match fmt {
        OutputFormat::Json => out.json(&list),
        OutputFormat::Yaml => out.yaml(&list),
        _ => {
            let mut t = output::table(&["NAME", "SOURCE", "COMMAND", "IMAGE", "GPU"]);
            for f in &list {
                t.add_row(vec![
                    f.name.clone(),
                    f.source.clone(),
                    if f.command.is_empty() {
                        "(built in)".into()
                    } else {
                        f.command.join(" ")
                    },
                    f.image.clone().unwrap_or_else(|| "-".into()),
                    f.resources.gpu.map_or("-".into(), |g| g.to_string()),
                ]);
            }
            output::print_table(&t);
            Ok(())
        }
    }
}
