//! Scheduling on the command line: `job create`'s scheduling flags,
//! `job update`, `job wait`, `job resubmit` and `platform queue …`.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;
use uuid::Uuid;

use super::exit::Exit;
use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::client::Client;
use crate::model::retry::RetryPolicy;
use crate::model::{CreateJob, CreateScheduling, Job, JobStatus, UpdateJob};

/// The exit code of `job wait` when its `--timeout` passes first.
pub const WAIT_TIMEOUT_EXIT: i32 = 124;

/// `job create`'s scheduling flags.
#[derive(Debug, Args, Default)]
pub struct SchedArgs {
    /// Queue to launch from (see `platform queue list`) [default: default].
    #[arg(long)]
    pub queue: Option<String>,
    /// Priority 0–100 (higher launches first within its queue) [default: 50].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub priority: Option<u8>,
    /// Start only after these jobs completed (numbers, ids or prefixes); fail if one fails.
    #[arg(long, value_name = "JOB", num_args = 1..)]
    pub after: Vec<String>,
    /// Longest run of one attempt (e.g. 90, 1.5, 500ms, 30m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_duration: Option<f64>,
    /// Longest wait to launch before the job fails `queue-timeout`.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_pending: Option<f64>,
    /// Silence (no trainer call) after which the job is marked stalled.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub heartbeat_timeout: Option<f64>,
    /// Further silence after which a stalled job is stopped and fails `stale`.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub stale_after: Option<f64>,
    /// Retry when the trainer exits with this code (repeatable); see --max-attempts.
    #[arg(
        long = "retry-on-exit-code",
        value_name = "CODE",
        allow_negative_numbers = true
    )]
    pub retry_codes: Vec<i32>,
    /// Attempts in all, with --retry-on-exit-code [default: 3].
    #[arg(long, value_name = "N", requires = "retry_codes", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: Option<u32>,
    /// A whole retry policy as JSON (max_attempts, backoff, rules), or @FILE.
    #[arg(long, value_name = "JSON", conflicts_with = "retry_codes")]
    pub retry: Option<String>,
    /// GPUs to run with [default: the trainer's resources.gpu, else 0].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub gpus: Option<u32>,
}

/// A duration: seconds (fractions allowed) or a number with ms, s, m, h or d.
pub fn duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{s:?}: expected a duration like 90, 1.5, 500ms, 30m or 2h"
            ))
        }
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("{s:?}: expected a duration above 0 like 90, 1.5, 500ms, 30m or 2h"))
}

impl SchedArgs {
    /// The request's scheduling fields (dependencies resolved to ids).
    pub async fn resolve(self, client: &Client) -> anyhow::Result<CreateScheduling> {
        let retry = match (self.retry, self.retry_codes.is_empty()) {
            (Some(text), _) => Some(parse_policy(&text)?),
            (None, false) => Some(RetryPolicy::on_exit_codes(
                self.retry_codes,
                self.max_attempts.unwrap_or(3),
            )),
            (None, true) => None,
        };
        let mut after = Vec::new();
        for raw in &self.after {
            after.push(super::resolve::job_id(client, raw).await?);
        }
        Ok(CreateScheduling {
            queue: self.queue,
            priority: self.priority,
            retry,
            max_duration: self.max_duration,
            max_pending: self.max_pending,
            heartbeat_timeout: self.heartbeat_timeout,
            stale_after: self.stale_after,
            after,
            gpus: self.gpus,
        })
    }
}

fn parse_policy(text: &str) -> anyhow::Result<RetryPolicy> {
    let body = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Exit::usage(format!("--retry: cannot read {path}: {e}")))?,
        None => text.to_string(),
    };
    let policy: RetryPolicy = serde_json::from_str(&body)
        .map_err(|e| Exit::usage(format!("--retry is not a valid retry policy: {e}")))?;
    policy
        .validate("retry")
        .map_err(|e| Exit::usage(format!("--retry: {e}")))?;
    Ok(policy)
}

/// `platform job update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix.
    pub id: String,
    /// New priority 0–100 (pending jobs only).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), required = true)]
    pub priority: Option<u8>,
}

/// `platform job wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Jobs: numbers (42 or #42), full ids, or unique id prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Give up after this long (e.g. 90, 30m) and exit 124.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub timeout: Option<f64>,
}

/// `platform job resubmit`.
#[derive(Debug, Args)]
pub struct ResubmitArgs {
    /// Job whose spec to reuse: its number, full id, or a unique id prefix.
    pub id: String,
    /// Override a field of the spec (user_id, model_name, framework,
    /// dataset_s3_uri, queue, priority, max_duration, max_pending,
    /// heartbeat_timeout, stale_after) or, for any other key, a config key
    /// (dotted keys nest); the value is parsed as JSON when valid. Repeatable.
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `platform queue` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every queue: limits, paused or not, running and pending jobs.
    #[command(visible_alias = "ls")]
    List,
    /// Stop launching jobs from a queue (running jobs go on; admins).
    Pause(QueueName),
    /// Launch jobs from a paused queue again (admins).
    Resume(QueueName),
}

/// A queue's name.
#[derive(Debug, Args)]
pub struct QueueName {
    /// The queue.
    pub name: String,
}

/// Runs a `platform queue` subcommand.
pub async fn queue(g: &GlobalArgs, out: &Printer, cmd: QueueCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let queues = match cmd {
        QueueCommand::List => client.queues().await?,
        QueueCommand::Pause(q) => vec![client.pause_queue(&q.name, true).await?],
        QueueCommand::Resume(q) => vec![client.pause_queue(&q.name, false).await?],
    };
    match fmt {
        OutputFormat::Json => out.json(&queues),
        OutputFormat::Yaml => out.yaml(&queues),
        _ => {
            let mut t =
                output::table(&["QUEUE", "LIMIT", "PER USER", "STATE", "RUNNING", "PENDING"]);
            for q in &queues {
                let limit = |n: u32| {
                    if n == 0 {
                        "-".to_string()
                    } else {
                        n.to_string()
                    }
                };
                t.add_row(vec![
                    q.name.clone(),
                    limit(q.max_concurrent),
                    q.max_per_user.map_or("-".into(), limit),
                    if q.paused { "paused" } else { "active" }.to_string(),
                    q.running.to_string(),
                    q.pending.to_string(),
                ]);
            }
            output::print_table(&t);
            Ok(())
        }
    }
}

/// `job update`: a pending job's priority.
pub async fn update(client: &Client, out: &Printer, a: UpdateArgs) -> anyhow::Result<()> {
    let id = super::resolve::job_id(client, &a.id).await?;
    let job = client
        .update_job(
            id,
            &UpdateJob {
                priority: a.priority,
                ..Default::default()
            },
        )
        .await?;
    if !out.quiet {
        println!(
            "job {} ({}) now has priority {}",
            output::job_number(&job),
            job.id,
            job.sched.priority
        );
    }
    Ok(())
}

/// `job wait`: until every job ended; 0 only if all completed, 1 if one
/// did not, [`WAIT_TIMEOUT_EXIT`] when the timeout passed first.
pub async fn wait(client: &Client, out: &Printer, a: WaitArgs) -> anyhow::Result<()> {
    let mut ids: Vec<Uuid> = Vec::new();
    for raw in &a.ids {
        ids.push(super::resolve::job_id(client, raw).await?);
    }
    let all = async {
        let mut ended = Vec::new();
        for id in &ids {
            ended.push(super::events::until_final(client, *id).await?);
        }
        Ok::<_, anyhow::Error>(ended)
    };
    let ended = match a.timeout {
        Some(t) => match tokio::time::timeout(Duration::from_secs_f64(t), all).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Exit {
                    code: WAIT_TIMEOUT_EXIT,
                    message: format!("gave up waiting after {t} s (--timeout)"),
                }
                .into())
            }
        },
        None => all.await?,
    };
    let failed: Vec<&Job> = ended
        .iter()
        .filter(|j| j.status != JobStatus::Completed)
        .collect();
    if !out.quiet {
        for j in &ended {
            println!("job {} {}", output::job_number(j), output::status(j.status));
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] => super::exit::finish(one),
        many => Err(Exit {
            code: 1,
            message: format!("{} of {} jobs did not complete", many.len(), ended.len()),
        }
        .into()),
    }
}

/// `job get`'s scheduling lines.
pub fn job_rows(j: &Job) -> Vec<(&'static str, String)> {
    let s = &j.sched;
    let secs = |v: Option<f64>| v.map(|v| format!("{v} s"));
    let mut rows = vec![
        ("Queue", s.queue.clone()),
        ("Priority", s.priority.to_string()),
    ];
    if s.attempt > 0 {
        let of = s.retry.as_ref().map_or(String::new(), |r| {
            format!(" (retry policy: up to {})", r.max_attempts)
        });
        rows.push(("Attempt", format!("{}{of}", s.attempt)));
    }
    if !s.after.is_empty() {
        let after: Vec<String> = s.after.iter().map(Uuid::to_string).collect();
        rows.push(("After", after.join(", ")));
    }
    for (k, v) in [
        ("Max run", secs(s.max_duration)),
        ("Max wait", secs(s.max_pending)),
        ("Heartbeat", secs(s.heartbeat_timeout)),
    ] {
        if let Some(v) = v {
            rows.push((k, v));
        }
    }
    if let Some(at) = s.stalled_at {
        rows.push((
            "Condition",
            format!("stalled (no heartbeat since before {})", output::ago(at)),
        ));
    }
    if let Some(at) = s.next_attempt_at {
        rows.push(("Next try", at.format("%Y-%m-%d %H:%M:%S UTC").to_string()));
    }
    if let Some(r) = &s.termination_reason {
        rows.push(("Ended by", r.clone()));
    }
    rows
}

/// `job get`'s attempt table, when the job ran more than once.
pub fn print_attempts(j: &Job) {
    if j.sched.attempts.len() < 2 {
        return;
    }
    println!("Attempts:");
    for a in &j.sched.attempts {
        let code = a.exit_code.map_or("-".into(), output::exit_code);
        let ended = a.ended_at.map_or("running".into(), |e| {
            output::duration((e - a.started_at).num_seconds())
        });
        println!(
            "  #{} {}  {}  exit {}  {}",
            a.attempt,
            a.started_at.format("%Y-%m-%d %H:%M:%S"),
            ended,
            code,
            a.reason
                .as_deref()
                .and_then(|r| r.lines().next())
                .unwrap_or("")
        );
    }
}

/// Fields of the create request `--set` overrides directly.
const SPEC_FIELDS: [&str; 10] = [
    "user_id",
    "model_name",
    "framework",
    "dataset_s3_uri",
    "queue",
    "priority",
    "max_duration",
    "max_pending",
    "heartbeat_timeout",
    "stale_after",
];

/// The create request of a job like `old`, with `sets` applied.
pub fn respec(old: &Job, sets: &[String]) -> anyhow::Result<CreateJob> {
    let s = &old.sched;
    let mut body = serde_json::json!({
        "user_id": old.user_id, "model_name": old.model_name, "framework": old.framework,
        "dataset_s3_uri": old.dataset_s3_uri, "config": old.config, "queue": s.queue,
        "priority": s.priority, "retry": s.retry, "max_duration": s.max_duration,
        "max_pending": s.max_pending, "heartbeat_timeout": s.heartbeat_timeout,
        "stale_after": s.stale_after,
    });
    let mut config_sets = Vec::new();
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| Exit::usage(format!("--set {set:?}: expected KEY=VALUE")))?;
        if SPEC_FIELDS.contains(&key) {
            let value =
                serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.into()));
            body[key] = value;
        } else {
            config_sets.push(set.strip_prefix("config.").unwrap_or(set).to_string());
        }
    }
    if !config_sets.is_empty() {
        let merged = super::spec::build_config(None, &config_sets)?;
        let mut config = old.config.clone().unwrap_or_else(|| serde_json::json!({}));
        if let (Some(Value::Object(into)), Some(Value::Object(from))) = (Some(&mut config), merged)
        {
            into.extend(from);
        }
        body["config"] = config;
    }
    // Limits left empty take the server's defaults again.
    if let Value::Object(m) = &mut body {
        m.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(body).map_err(|e| Exit::usage(format!("--set: {e}")))
}

/// `job resubmit`: a new job from an old one's spec.
pub async fn resubmit(client: &Client, out: &Printer, a: ResubmitArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let id = super::resolve::job_id(client, &a.id).await?;
    let old = client.get_job(id).await?;
    let mut req = respec(&old, &a.set)?;
    // With a user token the new job is the caller's; a member may resubmit
    // only their own jobs (as the server lets them change only those).
    if let Some(me) = super::account::token_principal(client).await {
        let name = me.user.clone().unwrap_or_default();
        if !me.is_admin() && old.user_id != name {
            return Err(anyhow::anyhow!(
                "job {} belongs to {:?}; members may resubmit only their own jobs (ask {:?} or an admin)",
                output::job_number(&old),
                old.user_id,
                old.user_id
            ));
        }
        if !a.set.iter().any(|s| s.starts_with("user_id=")) {
            req.user_id = name;
        }
    }
    // One key per invocation: the command's own retries create one job.
    let key = uuid::Uuid::now_v7().to_string();
    let job = super::spec::create_with_retries(client, &req, &key).await?;
    match fmt {
        OutputFormat::Json => out.json(&job),
        OutputFormat::Yaml => out.yaml(&job),
        _ if out.quiet => {
            println!("{}", job.id);
            Ok(())
        }
        _ => {
            println!(
                "created job {} ({}) from job {}",
                output::job_number(&job),
                job.id,
                output::job_number(&old)
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("90"), Ok(90.0));
        assert_eq!(duration("1.5"), Ok(1.5));
        assert_eq!(duration("500ms"), Ok(0.5));
        assert_eq!(duration("2m"), Ok(120.0));
        assert_eq!(duration("1h"), Ok(3600.0));
        assert!(duration("0").is_err());
        assert!(duration("5 parsecs").is_err());
    }

    #[test]
    fn resubmit_overrides_fields_and_config_keys() {
        let old: Job = serde_json::from_value(serde_json::json!({
            "id": Uuid::now_v7(), "user_id": "u", "model_name": "m", "framework": "demo",
            "dataset_s3_uri": "s3://b/d/", "config": {"epochs": 3}, "status": "failed",
            "progress": 0.0, "message": null, "checkpoint_s3_uri": null, "error": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "started_at": null, "completed_at": null, "queue": "gpu", "priority": 70
        }))
        .unwrap();
        let req = respec(
            &old,
            &[
                "priority=90".into(),
                "epochs=5".into(),
                "config.lr=0.1".into(),
            ],
        )
        .unwrap();
        assert_eq!(req.sched.priority, Some(90));
        assert_eq!(req.sched.queue.as_deref(), Some("gpu"));
        assert_eq!(
            req.config,
            Some(serde_json::json!({"epochs": 5, "lr": 0.1}))
        );
        assert!(respec(&old, &["priority=high".into()]).is_err());
    }
}
