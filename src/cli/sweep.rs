//! `platform sweep get|list|cancel`, `job create --sweep/--sweep-file`
//! (the spec goes to `POST /api/v1/sweeps`; the server expands it), and a
//! job's tags and note (`job tag`, `job note`, `--tag`/`--note` on create).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::exit::Exit;
use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::client::Client;
use crate::model::labels::parse_tag;
use crate::model::sweep::{parse_sweep_arg, ParamValues, Parameters};
use crate::model::{CreateJob, CreateSweep, NewLabels, Sweep, SweepSpec, UpdateJob};

/// Sweep, tag and note flags of `job create`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Create a grid sweep: one job per combination, each value merged into the config at KEY (dotted keys nest); repeatable. Values split on commas; quote one holding a comma ('aug="a,b",c'); values are JSON scalars when they parse (0.01, true), else strings.
    #[arg(long = "sweep", value_name = "KEY=V1,V2,…", conflicts_with_all = ["dry_run", "follow"])]
    pub sweep: Vec<String>,
    /// Create a sweep from a YAML or JSON file: `method: grid|random`, `count` and `seed` (random), and `parameters` (KEY: [values], or {values: […]}, or {min, max, log: true, integer: true} for random search).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dry_run", "follow", "sweep"])]
    pub sweep_file: Option<PathBuf>,
    /// Tag the job (every job of a sweep); repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// A free-text note on the job.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

impl SweepArgs {
    /// Whether a sweep was asked for.
    pub fn is_sweep(&self) -> bool {
        !self.sweep.is_empty() || self.sweep_file.is_some()
    }

    /// The create's tags and note.
    pub fn labels(&self) -> anyhow::Result<NewLabels> {
        Ok(NewLabels {
            tags: tag_map(&self.tags)?,
            note: self.note.clone(),
            name: None,
        })
    }

    fn spec(&self) -> anyhow::Result<SweepSpec> {
        if let Some(path) = &self.sweep_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Exit::usage(format!("cannot read {}: {e}", path.display())))?;
            // YAML is a superset of JSON: one parser reads both.
            return serde_yaml_ng::from_str(&text)
                .map_err(|e| Exit::usage(format!("{} is not a sweep spec: {e}", path.display())));
        }
        let mut params = Vec::new();
        for arg in &self.sweep {
            let (k, values) = parse_sweep_arg(arg).map_err(Exit::usage)?;
            params.push((k, ParamValues::List(values)));
        }
        Ok(SweepSpec {
            parameters: Parameters(params),
            ..Default::default()
        })
    }
}

fn tag_map(tags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| parse_tag(t).map_err(|e| Exit::usage(format!("--tag: {}", e.message))))
        .collect()
}

/// `job create … --sweep …`: sends the base job and the spec.
pub async fn create(
    client: &Client,
    out: &Printer,
    fmt: OutputFormat,
    job: CreateJob,
    a: &SweepArgs,
) -> anyhow::Result<()> {
    let req = CreateSweep {
        job,
        spec: a.spec()?,
    };
    let sweep = client.create_sweep(&req).await?;
    print_sweep(out, fmt, &sweep, true)
}

/// `platform sweep` subcommands.
#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Show a sweep: its spec, counts by status and jobs.
    Get(SweepIdArgs),
    /// List sweeps, newest first (members see their own).
    #[command(visible_alias = "ls")]
    List(SweepListArgs),
    /// Cancel every job of a sweep that has not ended.
    Cancel(SweepIdArgs),
}

/// A sweep's id.
#[derive(Debug, Args)]
pub struct SweepIdArgs {
    /// The sweep's id (as `job create --sweep` printed it).
    pub id: Uuid,
}

/// `platform sweep list`.
#[derive(Debug, Args)]
pub struct SweepListArgs {
    /// At most this many sweeps (1–100).
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

/// Runs a `platform sweep` subcommand.
pub async fn run(g: &GlobalArgs, out: &Printer, cmd: SweepCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    match cmd {
        SweepCommand::Get(a) => print_sweep(out, fmt, &client.sweep(a.id, false).await?, false),
        SweepCommand::Cancel(a) => print_sweep(out, fmt, &client.sweep(a.id, true).await?, false),
        SweepCommand::List(a) => {
            let sweeps = client.sweeps(a.limit).await?;
            output::print_list(
                out,
                fmt,
                &sweeps,
                &["ID", "METHOD", "JOBS", "STATUS", "USER", "CREATED"],
                |s| {
                    vec![
                        s.sweep.id.to_string(),
                        method(s),
                        s.total.to_string(),
                        counts(s),
                        s.sweep.user_id.clone(),
                        output::ago(s.sweep.created_at),
                    ]
                },
            )
        }
    }
}

fn method(s: &Sweep) -> String {
    serde_json::to_value(s.sweep.spec.method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `2 completed, 1 running`.
fn counts(s: &Sweep) -> String {
    s.counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_sweep(out: &Printer, fmt: OutputFormat, s: &Sweep, created: bool) -> anyhow::Result<()> {
    match fmt {
        OutputFormat::Json => return out.json(s),
        OutputFormat::Yaml => return out.yaml(s),
        _ if out.quiet => {
            println!("{}", s.sweep.id);
            return Ok(());
        }
        _ => {}
    }
    let seed = s
        .sweep
        .spec
        .seed
        .map(|x| format!(", seed {x}"))
        .unwrap_or_default();
    println!(
        "{} {} ({}{seed}): {} jobs; {}",
        if created { "created sweep" } else { "sweep" },
        s.sweep.id,
        method(s),
        s.total,
        counts(s)
    );
    let mut t = output::table(&["JOB", "NAME", "STATUS"]);
    for j in &s.jobs {
        t.add_row(vec![
            output::job_number(j),
            j.labels.name.clone().unwrap_or_default(),
            output::status(j.status),
        ]);
    }
    output::print_table(&t);
    if created {
        println!("  compare:  platform job compare --sweep {}", s.sweep.id);
    }
    Ok(())
}

/// `platform job tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix.
    pub id: String,
    /// Tags to set.
    #[arg(value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Tag keys to remove; repeatable.
    #[arg(long = "rm", value_name = "KEY")]
    pub remove: Vec<String>,
}

/// `platform job note`.
#[derive(Debug, Args)]
pub struct NoteArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix.
    pub id: String,
    /// The note (an empty one clears it).
    pub text: String,
}

/// `platform job tag ID k=v… [--rm k]`.
pub async fn tag(client: &Client, out: &Printer, a: TagArgs) -> anyhow::Result<()> {
    if a.tags.is_empty() && a.remove.is_empty() {
        return Err(Exit::usage("give tags to set (KEY=VALUE) or --rm KEY"));
    }
    let mut tags: BTreeMap<String, Option<String>> = tag_map(&a.tags)?
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    for k in a.remove {
        tags.insert(k, None);
    }
    update(
        client,
        out,
        &a.id,
        UpdateJob {
            tags: Some(tags),
            ..Default::default()
        },
    )
    .await
}

/// `platform job note ID TEXT`.
pub async fn note(client: &Client, out: &Printer, a: NoteArgs) -> anyhow::Result<()> {
    update(
        client,
        out,
        &a.id,
        UpdateJob {
            note: Some(a.text),
            ..Default::default()
        },
    )
    .await
}

async fn update(client: &Client, out: &Printer, id: &str, u: UpdateJob) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let id = super::resolve::job_id(client, id).await?;
    let job = client.update_job(id, &u).await?;
    match fmt {
        OutputFormat::Json => out.json(&job),
        OutputFormat::Yaml => out.yaml(&job),
        _ => {
            if !out.quiet {
                let tags: Vec<String> = job
                    .labels
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "job {}: tags {}; note {}",
                    output::job_number(&job),
                    if tags.is_empty() {
                        "none".into()
                    } else {
                        tags.join(",")
                    },
                    job.labels
                        .note
                        .as_deref()
                        .map_or("none".into(), |n| format!("{n:?}"))
                );
            }
            Ok(())
        }
    }
}

/// `job get`'s lines for the labels a job has (none for a plain job).
pub fn job_rows(j: &crate::model::Job) -> Vec<(&'static str, String)> {
    let l = &j.labels;
    let mut rows = Vec::new();
    if let Some(n) = &l.name {
        rows.push(("Name", n.clone()));
    }
    if let Some(s) = l.sweep_id {
        rows.push(("Sweep", s.to_string()));
    }
    if !l.tags.is_empty() {
        let tags: Vec<String> = l.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("Tags", tags.join(",")));
    }
    if let Some(n) = &l.note {
        rows.push(("Note", n.replace('\n', " / ")));
    }
    rows
}
