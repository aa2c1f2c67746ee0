//! The command line: clap definitions for every subcommand and the
//! dispatcher. Client commands talk to the daemon only through
//! [`crate::client::Client`].

pub mod generate;
pub mod job;
pub mod metrics;
pub mod output;

use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::config::ServeArgs;
use output::OutputFormat;

/// Default daemon URL for client commands.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// `platform`: run ML training jobs from one binary.
#[derive(Debug, Parser)]
#[command(
    name = "platform",
    version,
    about = "Run ML training jobs: a daemon with an HTTP API, runners for local processes and Kubernetes, and this CLI.",
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after any subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// URL of the platform daemon.
    #[arg(long, global = true, env = "PLATFORM_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// API token sent as a bearer token.
    #[arg(
        long,
        global = true,
        env = "PLATFORM_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Never use colour (also: NO_COLOR).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// More log output (repeat for more).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(long, global = true)]
    pub quiet: bool,
}

impl GlobalArgs {
    /// A client for `--server` with `--token`.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.server, self.token.clone())?)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: HTTP API, database, scheduler and runner.
    Serve(Box<ServeArgs>),
    /// Create, list, inspect and cancel training jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Show a job's metric points (oldest first).
    Metrics(metrics::MetricsArgs),
    /// Print the client's version and the server's, when reachable.
    Version,
    /// Print a shell completion script.
    Completions(generate::CompletionsArgs),
    /// Print the man page, or write every page to a directory.
    Man(generate::ManArgs),
}

/// A failure that ends the process with a specific exit code. The message,
/// when not empty, is printed as `error: …`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// Process exit code.
    pub code: i32,
    /// What to print (may be empty when already reported).
    pub message: String,
}

impl Exit {
    /// Exit code 2: the command line was wrong.
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: 2,
            message: message.into(),
        }
        .into()
    }

    /// A silent exit with `code` (the command already reported why).
    pub fn silent(code: i32) -> anyhow::Error {
        Exit {
            code,
            message: String::new(),
        }
        .into()
    }
}

/// Runs a client command (everything but `serve`).
pub async fn run_client(global: GlobalArgs, command: Command) -> anyhow::Result<()> {
    let out = output::Printer::new(&global);
    match command {
        Command::Job(cmd) => job::run(&global, &out, cmd).await,
        Command::Metrics(args) => metrics::run(&global, &out, args).await,
        Command::Version => version(&global, &out).await,
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
        Command::Serve(_) => unreachable_serve(),
    }
}

fn unreachable_serve() -> anyhow::Result<()> {
    Err(Exit::usage("`serve` is not a client command"))
}

async fn version(global: &GlobalArgs, out: &output::Printer) -> anyhow::Result<()> {
    let client = global.client()?;
    let server = client.health().await;
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
    if fmt == OutputFormat::Json {
        let v = serde_json::json!({
            "client": env!("CARGO_PKG_VERSION"),
            "server": server.as_ref().ok().map(|h| h.version.clone()),
            "server_url": client.base(),
        });
        out.json(&v)?;
        return Ok(());
    }
    println!("client: platform {}", env!("CARGO_PKG_VERSION"));
    match server {
        Ok(h) => println!("server: platform {} at {}", h.version, client.base()),
        Err(e) => println!(
            "server: unreachable at {} ({})",
            client.base(),
            short_reason(&e)
        ),
    }
    Ok(())
}

fn short_reason(e: &crate::client::ClientError) -> String {
    match e {
        crate::client::ClientError::Unreachable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}
