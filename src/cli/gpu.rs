//! `platform gpu list`: the daemon's GPUs, who holds each and their latest
//! telemetry.

use clap::Subcommand;

use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::model::GpuInfo;

/// `platform gpu` subcommands.
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Every GPU local trainers may use: holder job, utilisation, memory.
    #[command(visible_alias = "ls")]
    List,
}

/// Runs a `platform gpu` subcommand.
pub async fn run(g: &GlobalArgs, out: &Printer, cmd: GpuCommand) -> anyhow::Result<()> {
    let GpuCommand::List = cmd;
    let client = g.client()?;
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let gpus = client.gpus().await?;
    match fmt {
        OutputFormat::Json => out.json(&gpus),
        OutputFormat::Yaml => out.yaml(&gpus),
        _ => {
            if gpus.is_empty() {
                if !out.quiet {
                    println!("no GPUs (the daemon found none, runs --gpus none, or runs jobs on Kubernetes)");
                }
                return Ok(());
            }
            let mut t = output::table(&[
                "GPU", "NAME", "MEMORY", "JOB", "UTIL", "MEM USED", "TEMP", "POWER",
            ]);
            for gpu in &gpus {
                t.add_row(row(gpu));
            }
            output::print_table(&t);
            Ok(())
        }
    }
}

fn row(g: &GpuInfo) -> Vec<String> {
    let t = g.telemetry.as_ref();
    let num = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.0}{unit}"));
    let util = num(t.and_then(|t| t.utilization), " %");
    vec![
        g.index.to_string(),
        g.name.clone(),
        format!("{} MiB", g.memory_total_mib),
        g.job_id.map_or("-".into(), |id| id.to_string()),
        if g.idle {
            format!("{util} (idle)")
        } else {
            util
        },
        num(t.and_then(|t| t.memory_used_mib), " MiB"),
        num(t.and_then(|t| t.temperature_c), " °C"),
        num(t.and_then(|t| t.power_w), " W"),
    ]
}
