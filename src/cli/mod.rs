//! The command line: clap definitions for every subcommand and the
//! dispatcher. Client commands talk to the daemon only through
//! [`crate::client::Client`], never through the daemon's own modules.
//!
//! Command modules (`job`, `metrics`, `dataset`, …) build on shared ones
//! (`exit`, `events`, `metric_keys`, `output`, `resolve`, `spec`,
//! `stream`, `tracker`, `transfer`), never
//! the other way round and never on each other in a loop; what they take
//! from this file is only the tree's global flags ([`GlobalArgs`], [`Cli`]).

pub(crate) mod account;
pub(crate) mod artifacts;
pub(crate) mod compare;
pub(crate) mod dataset;
pub(crate) mod events;
pub(crate) mod exit;
pub(crate) mod framework;
pub mod generate;
pub(crate) mod gpu;
pub(crate) mod job;
mod label;
pub(crate) mod metric_keys;
pub(crate) mod metrics;
pub(crate) mod output;
pub(crate) mod prune;
pub(crate) mod report;
pub(crate) mod resolve;
pub(crate) mod sched;
pub(crate) mod spec;
pub mod stream;
pub(crate) mod suggest;
pub(crate) mod sweep;
pub(crate) mod tracker;
pub(crate) mod transfer;
pub(crate) mod watch;
pub(crate) mod webhook;

pub use exit::Exit;
pub use suggest::parse;

use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::config::ServeArgs;
use output::OutputFormat;

/// Default daemon URL for client commands.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

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

/// Options accepted before or after any subcommand (listed under their own
/// heading in every command's `--help`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global Options")]
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
    /// List queues, or pause and resume one.
    #[command(subcommand)]
    Queue(sched::QueueCommand),
    /// Show a job's metric points (oldest first), or overlay several jobs' in one chart.
    Metrics(metrics::MetricsArgs),
    /// Upload and list datasets in the daemon's object store.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Show, list and cancel sweeps (create one with `job create --sweep`).
    #[command(subcommand)]
    Sweep(sweep::SweepCommand),
    /// List the trainer frameworks the daemon knows, or make it reload them.
    #[command(subcommand)]
    Framework(framework::FrameworkCommand),
    /// Manage webhook endpoints and see their deliveries (admins).
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// List the daemon's GPUs: which job holds each, latest telemetry.
    #[command(subcommand)]
    Gpu(gpu::GpuCommand),
    /// Remove the metric history (downsampled or deleted), archived logs and, when asked, artifacts of jobs that ended long ago (admins).
    Prune(prune::PruneArgs),
    /// Send a trainer callback from the trainer environment (CALLBACK_URL, CALLBACK_TOKEN).
    Report(report::ReportArgs),
    /// Work on the daemon's database file (where the daemon runs, not over HTTP).
    #[command(subcommand)]
    Db(DbCommand),
    /// Check a token with a server and save both as a context (mode 0600).
    Login(account::LoginArgs),
    /// List, switch and delete saved contexts (server and token pairs).
    #[command(subcommand)]
    Context(account::ContextCommand),
    /// Print who the server takes you for (user, role, token name).
    Whoami,
    /// Create, list, disable and enable users (admins).
    #[command(subcommand)]
    User(account::UserCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(account::TokenCommand),
    /// Show the audit trail of state-changing requests (admins).
    Audit(account::AuditArgs),
    /// Print the client's version and the server's, when reachable.
    Version,
    /// Print a shell completion script.
    Completions(generate::CompletionsArgs),
    /// Print the man page, or write every page to a directory.
    Man(generate::ManArgs),
    /// Supervise one trainer process (started by the daemon).
    #[command(hide = true)]
    Supervise(crate::runner::supervisor::SuperviseArgs),
    /// Run the built-in demo trainer (started by the daemon).
    #[command(hide = true, name = "demo-train")]
    DemoTrain,
}

/// `platform db …`: commands on the database file itself.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check the database for damage (SQLite's integrity check, read-only):
    /// prints "ok", or what is wrong and exits 1.
    Check(crate::config::DatabaseArgs),
    /// Show the backend, schema version and rows per table (read-only).
    Status(crate::config::DatabaseArgs),
    /// Copy a SQLite database into an empty PostgreSQL database (stop the
    /// daemon first): every job, metric point, user, token and webhook;
    /// the counts are checked before anything is committed.
    Migrate(MigrateArgs),
    /// Rewrite a SQLite database file to give the space of deleted rows
    /// back (stop the daemon first), switching it to incremental
    /// auto-vacuum so later prunes give space back by themselves.
    Vacuum(crate::config::DatabaseArgs),
}

/// Flags of `platform db migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The SQLite database to copy: sqlite:///relative/path or sqlite:////absolute/path [default: the configured database].
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The empty PostgreSQL database to fill: postgresql://user:password@host:5432/database (the variable keeps the password out of the process list).
    #[arg(
        long,
        env = "PLATFORM_MIGRATE_TO",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub to: String,
    /// Where the configured database is, when --from is not given.
    #[command(flatten)]
    pub database: crate::config::DatabaseArgs,
}

/// Runs a client command (everything but `serve`).
pub async fn run_client(global: GlobalArgs, command: Command) -> anyhow::Result<()> {
    let out = output::Printer::new(&global);
    match command {
        Command::Job(cmd) => job::run(&global, &out, cmd).await,
        Command::Queue(cmd) => sched::queue(&global, &out, cmd).await,
        Command::Gpu(cmd) => gpu::run(&global, &out, cmd).await,
        Command::Metrics(args) => metrics::run(&global, &out, args).await,
        Command::Sweep(cmd) => sweep::run(&global, &out, cmd).await,
        Command::Dataset(cmd) => dataset::run(&global, &out, cmd).await,
        Command::Framework(cmd) => framework::run(&global, &out, cmd).await,
        Command::Webhook(cmd) => webhook::run(&global, &out, cmd).await,
        Command::Prune(args) => prune::run(&global, &out, args).await,
        Command::Report(args) => report::run(args).await,
        Command::DemoTrain => match crate::trainer::demo::run().await {
            0 => Ok(()),
            code => Err(Exit::silent(code)),
        },
        Command::Login(args) => account::login(&global, &out, args).await,
        Command::Context(cmd) => account::context(&out, cmd).await,
        Command::Whoami => account::whoami(&global, &out).await,
        Command::User(cmd) => account::user(&global, &out, cmd).await,
        Command::Token(cmd) => account::token(&global, &out, cmd).await,
        Command::Audit(args) => account::audit(&global, &out, args).await,
        Command::Version => version(&global, &out).await,
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
        Command::Serve(_) | Command::Supervise(_) | Command::Db(_) => {
            Err(Exit::usage("this command is not a client command"))
        }
    }
}

async fn version(global: &GlobalArgs, out: &output::Printer) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
    // The client's version is printed whatever is wrong with the server
    // setting (even an unusable --server).
    let (base, server) = match global.client() {
        Ok(client) => (
            client.base().to_string(),
            client.health().await.map_err(|e| short_reason(&e)),
        ),
        Err(e) => (global.server.clone(), Err(format!("{e:#}"))),
    };
    if fmt == OutputFormat::Json {
        let v = serde_json::json!({
            "client": env!("CARGO_PKG_VERSION"),
            "server": server.as_ref().ok().map(|h| h.version.clone()),
            "server_url": base,
        });
        out.json(&v)?;
        return Ok(());
    }
    println!("client: platform {}", env!("CARGO_PKG_VERSION"));
    match server {
        Ok(h) => println!("server: platform {} at {base}", h.version),
        Err(reason) => println!("server: unreachable at {base} ({reason})"),
    }
    Ok(())
}

fn short_reason(e: &crate::client::ClientError) -> String {
    match e {
        crate::client::ClientError::Unreachable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}
