//! `platform job …`: create, list, get and cancel jobs.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser, ValueParser};
use clap::{Args, Subcommand};

use super::exit::{self, Exit};
use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::client::Client;
use crate::model::status::ALL_STATUSES;
use crate::model::{CreateJob, Job, JobListQuery, JobStatus, LaunchPlan};

/// `platform job` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a training job.
    Create(Box<CreateArgs>),
    /// List jobs, newest first.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one job.
    Get(GetArgs),
    /// Cancel one or more jobs.
    Cancel(CancelArgs),
    /// List a job's artifacts (checkpoints and other outputs).
    Artifacts(super::artifacts::ArtifactsArgs),
    /// Download a job's artifacts, or one of them.
    Download(super::artifacts::DownloadArgs),
    /// Print a job's trainer output (stdout and stderr).
    Logs(LogsArgs),
    /// Follow a job live (progress bar, metrics, ETA) until it ends.
    Watch(super::watch::WatchArgs),
    /// Change a pending job's priority.
    Update(super::sched::UpdateArgs),
    /// Wait until jobs end; exit 0 only if all completed (124 on --timeout).
    Wait(super::sched::WaitArgs),
    /// Create a new job from an old one's spec, with overrides (with a user
    /// token, the new job is yours; members resubmit only their own jobs).
    Resubmit(super::sched::ResubmitArgs),
    /// Set or remove a job's tags (any status).
    Tag(super::sweep::TagArgs),
    /// Set a job's note (any status; an empty text clears it).
    Note(super::sweep::NoteArgs),
    /// Compare jobs side by side: differing config, status, duration, metrics.
    Compare(super::compare::CompareArgs),
}

/// `platform job logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix (≥ 4 hex characters).
    pub id: String,
    /// Keep printing new output until the job ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

/// `platform job create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Registered trainer framework (see `platform framework list`).
    #[arg(long, short = 'f')]
    pub framework: String,
    /// Model to train, e.g. yolo11n.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Dataset URI (e.g. s3://bucket/datasets/coco128/), or the name of a dataset uploaded with `platform dataset upload`.
    #[arg(long, short = 'd')]
    pub dataset: String,
    /// Who the job belongs to [default: $PLATFORM_USER, else $USER].
    #[arg(long, short = 'u', env = "PLATFORM_USER")]
    pub user: Option<String>,
    /// Trainer config from a JSON or YAML file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set a config key (value parsed as JSON when valid, else a string); repeatable, wins over --config.
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Wait for the job, printing its progress, and exit non-zero unless it completes.
    #[arg(long, short = 'F', conflicts_with = "dry_run")]
    pub follow: bool,
    /// Print what would be launched (Kubernetes manifests, or the process's argv and environment, secrets masked) without creating anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Idempotency-Key sent with the create: running the command again with the same key and job returns the job created the first time instead of a second one [default: a fresh key per run, reused for its own retries].
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Queue, priority, dependencies, limits and retries.
    #[command(flatten)]
    pub sched: super::sched::SchedArgs,
    /// Sweeps, tags and note.
    #[command(flatten)]
    pub sweep: super::sweep::SweepArgs,
}

/// `platform job list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this status.
    #[arg(long, value_parser = status_arg())]
    pub status: Option<JobStatus>,
    /// Only this user's jobs.
    #[arg(long, conflicts_with = "mine")]
    pub user: Option<String>,
    /// Only your own jobs (the user of your token).
    #[arg(long)]
    pub mine: bool,
    /// At most this many jobs (1–1000).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print only full job ids, one per line.
    #[arg(short = 'q', long = "ids")]
    pub ids_only: bool,
    /// Keep the table live (status, progress, latest metric) until Ctrl-C.
    #[arg(short = 'w', long, conflicts_with = "ids_only")]
    pub watch: bool,
    /// Only the jobs of this sweep (its id).
    #[arg(long, value_name = "SWEEP_ID")]
    pub sweep: Option<uuid::Uuid>,
    /// Only jobs with this tag; repeatable (every one must match).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

/// `--status`: the model's statuses by their wire names, each with a line
/// for `--help`, the man page and completions.
fn status_arg() -> ValueParser {
    let values = ALL_STATUSES.map(|s| PossibleValue::new(s.as_str()).help(status_help(s)));
    // The possible values are checked first, so the parse always succeeds.
    ValueParser::new(PossibleValuesParser::new(values).try_map(|s| s.parse::<JobStatus>()))
}

/// Each status in a few words for `--help`; a new status will not compile
/// until it has its line here.
fn status_help(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Pending => "Waiting to launch",
        JobStatus::Running => "Launched",
        JobStatus::Completed => "Finished successfully",
        JobStatus::Failed => "Failed",
        JobStatus::Cancelled => "Cancelled",
    }
}

/// `platform job get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix (≥ 4 hex characters).
    pub id: String,
}

/// `platform job cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Jobs: numbers (42 or #42), full ids, or unique id prefixes (≥ 4 hex characters).
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Runs a `platform job` subcommand.
pub async fn run(g: &GlobalArgs, out: &Printer, cmd: JobCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    match cmd {
        JobCommand::Create(a) => create(&client, out, *a).await,
        JobCommand::List(a) => list(&client, out, a).await,
        JobCommand::Get(a) => {
            let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
            let id = super::resolve::job_id(&client, &a.id).await?;
            let job = client.get_job(id).await?;
            print_job(out, fmt, &job)
        }
        JobCommand::Cancel(a) => cancel(&client, out, a).await,
        JobCommand::Artifacts(a) => super::artifacts::list(&client, out, a).await,
        JobCommand::Download(a) => super::artifacts::download(&client, out, a).await,
        JobCommand::Logs(a) => logs(&client, a).await,
        JobCommand::Watch(a) => {
            let id = super::resolve::job_id(&client, &a.id).await?;
            super::watch::watch(&client, out, id).await
        }
        JobCommand::Update(a) => super::sched::update(&client, out, a).await,
        JobCommand::Wait(a) => super::sched::wait(&client, out, a).await,
        JobCommand::Resubmit(a) => super::sched::resubmit(&client, out, a).await,
        JobCommand::Tag(a) => super::sweep::tag(&client, out, a).await,
        JobCommand::Note(a) => super::sweep::note(&client, out, a).await,
        JobCommand::Compare(a) => super::compare::run(&client, out, a).await,
    }
}

async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::io::Write;
    let id = super::resolve::job_id(client, &a.id).await?;
    let resp = client.logs(id, a.follow, a.tail).await?;
    let mut body = resp.bytes_stream();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("the log stream broke off: {e}"))?;
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    if a.follow {
        // The stream ends with the job; like `watch`, only `completed` is success.
        return exit::finish_brief(&super::events::until_final(client, id).await?);
    }
    Ok(())
}

async fn create(client: &Client, out: &Printer, a: CreateArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let config = super::spec::build_config(a.config.as_deref(), &a.set)?;
    // With a user token the job is that user's (a member may not name
    // anyone else); without one, the seed's rule: $PLATFORM_USER, $USER.
    let user = match a.user {
        Some(u) => u,
        None => match super::account::token_user(client).await {
            Some(me) => me,
            None => std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "default".into()),
        },
    };
    let req = CreateJob {
        user_id: user,
        model_name: a.model,
        framework: a.framework,
        dataset_s3_uri: dataset_uri(client, a.dataset).await?,
        config,
        sched: a.sched.resolve(client).await?,
        labels: a.sweep.labels()?,
    };
    if a.sweep.is_sweep() {
        return super::sweep::create(client, out, fmt, req, &a.sweep).await;
    }
    if a.dry_run {
        return print_plan(out, fmt, &client.plan_job(&req).await?);
    }
    let key = a
        .idempotency_key
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let job = super::spec::create_with_retries(client, &req, &key).await?;
    if a.follow {
        if !out.quiet && fmt == OutputFormat::Table {
            eprintln!("created job {} ({})", output::job_number(&job), job.id);
        }
        return super::watch::watch(client, out, job.id).await;
    }
    match fmt {
        OutputFormat::Table if out.quiet => {
            println!("{}", job.id);
            Ok(())
        }
        OutputFormat::Table => {
            println!(
                "created job {} ({}), {}",
                output::job_number(&job),
                job.id,
                output::status(job.status)
            );
            println!("  follow it:  platform job watch {}", output::job_arg(&job));
            Ok(())
        }
        f => print_job(out, f, &job),
    }
}

/// Prints a dry run: Kubernetes manifests as a YAML stream (default and
/// `-o yaml`, ready for `kubectl apply -f -`) or a `List` (`-o json`); a
/// process as its argv and environment (or the whole plan as JSON/YAML).
fn print_plan(out: &Printer, fmt: OutputFormat, plan: &LaunchPlan) -> anyhow::Result<()> {
    if !plan.manifests.is_empty() {
        if fmt == OutputFormat::Json {
            return out.json(&serde_json::json!({
                "apiVersion": "v1", "kind": "List", "items": plan.manifests,
            }));
        }
        for m in &plan.manifests {
            println!("---");
            out.yaml(m)?;
        }
        for n in &plan.notes {
            eprintln!("note: {n}");
        }
        return Ok(());
    }
    match (fmt, &plan.process) {
        (OutputFormat::Json, _) => out.json(plan),
        (OutputFormat::Yaml, _) => out.yaml(plan),
        (_, Some(p)) => {
            println!("runner:  {}", plan.runner);
            println!("argv:    {}", p.argv.join(" "));
            println!(
                "workdir: {}",
                p.workdir.as_deref().unwrap_or("(the job's run directory)")
            );
            println!("env:");
            for (k, v) in &p.env {
                println!("  {k}={v}");
            }
            Ok(())
        }
        (_, None) => out.json(plan),
    }
}

/// A URI is used as given; a bare name is looked up among the datasets in
/// the daemon's store (`platform dataset list`).
async fn dataset_uri(client: &Client, dataset: String) -> anyhow::Result<String> {
    if dataset.contains("://") || dataset.is_empty() {
        return Ok(dataset);
    }
    match client.get_dataset(&dataset).await? {
        Some(d) => Ok(d.uri),
        None => Err(Exit {
            code: 1,
            message: format!(
                "there is no dataset named {dataset:?} in the store; upload one with `platform dataset upload DIR --name {dataset}` or pass a URI"
            ),
        }
        .into()),
    }
}

async fn list(client: &Client, out: &Printer, a: ListArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[
        OutputFormat::Table,
        OutputFormat::Wide,
        OutputFormat::Json,
        OutputFormat::Yaml,
    ])?;
    let user = match a.mine {
        true => Some(super::account::token_user(client).await.ok_or_else(|| {
            Exit::usage("--mine needs a user token (platform login, or --token with a user token)")
        })?),
        false => a.user,
    };
    let q = JobListQuery {
        user_id: user,
        status_filter: a.status.map(|s| s.as_str().to_string()),
        limit: Some(a.limit),
        sweep: a.sweep,
        tag: a.tags,
        ..Default::default()
    };
    if a.watch {
        return super::watch::list(client, out, &q).await;
    }
    let jobs = client.list_jobs(&q).await?;
    if a.ids_only {
        for j in &jobs {
            println!("{}", j.id);
        }
        return Ok(());
    }
    match fmt {
        OutputFormat::Json => out.json(&jobs),
        OutputFormat::Yaml => out.yaml(&jobs),
        f => {
            print_jobs_table(&jobs, f == OutputFormat::Wide);
            Ok(())
        }
    }
}

/// The job table of `job list`: jobs by number; `wide` adds the full id.
pub fn print_jobs_table(jobs: &[Job], wide: bool) {
    let mut headers = vec![
        "ID",
        "STATUS",
        "PROGRESS",
        "FRAMEWORK",
        "MODEL",
        "USER",
        "CREATED",
    ];
    if wide {
        headers.insert(1, "UUID");
        headers.extend(["QUEUE", "PRI", "ATTEMPT", "DATASET", "RUNNER", "MESSAGE"]);
    }
    let mut t = output::table(&headers);
    for j in jobs {
        let mut row = vec![
            output::job_number(j),
            output::status(j.status),
            output::percent(j.progress),
            j.framework.clone(),
            j.model_name.clone(),
            j.user_id.clone(),
            output::ago(j.created_at),
        ];
        if wide {
            row.insert(1, j.id.to_string());
            row.push(j.sched.queue.clone());
            row.push(j.sched.priority.to_string());
            row.push(j.sched.attempt.to_string());
            row.push(j.dataset_s3_uri.clone());
            row.push(j.runner.clone().unwrap_or_else(|| "-".into()));
            row.push(
                j.error
                    .as_deref()
                    .or(j.message.as_deref())
                    .and_then(|m| m.lines().next())
                    .unwrap_or("-")
                    .to_string(),
            );
        }
        t.add_row(row);
    }
    output::print_table(&t);
}

fn print_job(out: &Printer, fmt: OutputFormat, j: &Job) -> anyhow::Result<()> {
    match fmt {
        OutputFormat::Json => return out.json(j),
        OutputFormat::Yaml => return out.yaml(j),
        _ => {}
    }
    let dash = || "-".to_string();
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), output::ago(t)))
            .unwrap_or_else(dash)
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("Job", output::job_number(j)),
        ("ID", j.id.to_string()),
        (
            "Status",
            format!(
                "{} ({})",
                output::status(j.status),
                output::percent(j.progress)
            ),
        ),
        ("User", j.user_id.clone()),
        ("Framework", j.framework.clone()),
        ("Model", j.model_name.clone()),
        ("Dataset", j.dataset_s3_uri.clone()),
        (
            "Config",
            j.config
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(dash),
        ),
        ("Message", j.message.clone().unwrap_or_else(dash)),
        (
            "Checkpoint",
            j.checkpoint_s3_uri.clone().unwrap_or_else(dash),
        ),
        (
            "Runner",
            match (&j.runner, j.exit_code) {
                (Some(r), Some(c)) => format!("{r} ({})", output::exit_code(c)),
                (Some(r), None) => r.clone(),
                _ => dash(),
            },
        ),
        ("Created", when(Some(j.created_at))),
        ("Started", when(j.started_at)),
        ("Completed", when(j.completed_at)),
    ];
    if let (Some(s), Some(c)) = (j.started_at, j.completed_at) {
        rows.push(("Duration", output::duration((c - s).num_seconds())));
    }
    rows.extend(super::sched::job_rows(j));
    rows.extend(super::sweep::job_rows(j));
    rows.extend(super::prune::job_rows(j));
    for (k, v) in rows {
        println!("{:<11} {v}", format!("{k}:"));
    }
    if let Some(e) = &j.error {
        println!("Error:");
        for line in e.lines() {
            println!("  {line}");
        }
    }
    super::sched::print_attempts(j);
    Ok(())
}

async fn cancel(client: &Client, out: &Printer, a: CancelArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for raw in &a.ids {
        let result = async {
            let id = super::resolve::job_id(client, raw).await?;
            client.cancel_job(id).await?;
            Ok::<_, anyhow::Error>(id)
        }
        .await;
        match result {
            Ok(id) if !out.quiet => println!("cancelled {id}"),
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                // Every failure names the job already (the server's
                // message names its id, a lookup's the argument).
                eprintln!("error: {e:#}");
            }
        }
    }
    if failed > 0 {
        return Err(Exit::silent(1));
    }
    Ok(())
}
