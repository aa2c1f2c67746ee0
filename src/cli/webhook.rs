//! `platform webhook add|list|remove|test|deliveries`: the daemon's webhook
//! endpoints (admin: the API token) and the record of their deliveries.

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::exit::Exit;
use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::client::Client;
use crate::model::webhook::{CreateWebhook, Delivery, WebhookFormat, JOB_EVENTS};

/// `platform webhook` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add an endpoint that receives a signed JSON event whenever a job
    /// changes status; prints its signing secret, shown only this once.
    Add(AddArgs),
    /// List endpoints (URLs cut after their first path segment, secrets by
    /// prefix only).
    #[command(visible_alias = "ls")]
    List,
    /// Remove an endpoint added over the API, with its delivery records
    /// (endpoints from the daemon's configuration are changed there).
    #[command(visible_alias = "rm")]
    Remove(IdArg),
    /// Queue a `webhook.test` event to an endpoint; follow it with
    /// `platform webhook deliveries`.
    Test(IdArg),
    /// Show an endpoint's latest deliveries, newest first: state, attempts,
    /// the receiver's last answer.
    Deliveries(DeliveriesArgs),
}

/// `platform webhook add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Where events are POSTed (http:// or https://).
    pub url: String,
    /// Only this event type (repeat for more; default: all).
    #[arg(long = "event", value_name = "EVENT", value_parser = JOB_EVENTS)]
    pub events: Vec<String>,
    /// Only jobs of this framework (repeat for more; default: all).
    #[arg(long = "framework", value_name = "FRAMEWORK")]
    pub frameworks: Vec<String>,
    /// Only jobs of this user (repeat for more; default: all).
    #[arg(long = "user", value_name = "USER")]
    pub users: Vec<String>,
    /// Body shape: generic JSON, or a Slack incoming-webhook message.
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = ["json", "slack"])]
    pub format: String,
}

/// An endpoint's id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Webhook id (a UUID, as `platform webhook list` shows it).
    pub id: String,
}

/// `platform webhook deliveries`.
#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Webhook id (a UUID, as `platform webhook list` shows it).
    pub id: String,
    /// At most this many (1–1000).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

/// Runs a `platform webhook` subcommand.
pub async fn run(g: &GlobalArgs, out: &Printer, cmd: WebhookCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    match cmd {
        WebhookCommand::Add(a) => add(&client, out, a).await,
        WebhookCommand::List => list(&client, out).await,
        WebhookCommand::Remove(a) => {
            out.format(&[OutputFormat::Table])?;
            let id = webhook_id(&a.id)?;
            client.remove_webhook(id).await?;
            if !out.quiet {
                println!("removed webhook {id}");
            }
            Ok(())
        }
        WebhookCommand::Test(a) => test(&client, out, a).await,
        WebhookCommand::Deliveries(a) => deliveries(&client, out, a).await,
    }
}

fn webhook_id(raw: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        Exit::usage(format!(
            "{raw:?} is not a webhook id; `platform webhook list` shows them"
        ))
    })
}

/// `None` for an empty repeatable flag: the API reads absent as "all".
fn filter(values: Vec<String>) -> Option<Vec<String>> {
    (!values.is_empty()).then_some(values)
}

async fn add(client: &Client, out: &Printer, a: AddArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let req = CreateWebhook {
        url: a.url,
        events: filter(a.events),
        frameworks: filter(a.frameworks),
        users: filter(a.users),
        format: WebhookFormat::parse(&a.format).unwrap_or_default(),
    };
    let created = client.add_webhook(&req).await?;
    match fmt {
        OutputFormat::Json => out.json(&created),
        OutputFormat::Yaml => out.yaml(&created),
        // A script that asks for quiet gets what it cannot get again.
        _ if out.quiet => {
            println!("{}", created.secret);
            Ok(())
        }
        _ => {
            println!("added webhook {}", created.webhook.id);
            println!("secret: {}", created.secret);
            println!(
                "  shown only now: receivers verify the webhook-signature header with it (Standard Webhooks)"
            );
            println!("  try it: platform webhook test {}", created.webhook.id);
            Ok(())
        }
    }
}

/// "a, b" or "all".
fn names(list: &Option<Vec<String>>) -> String {
    list.as_ref().map_or_else(|| "all".into(), |l| l.join(","))
}

async fn list(client: &Client, out: &Printer) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let hooks = client.webhooks().await?;
    output::print_list(
        out,
        fmt,
        &hooks,
        &[
            "ID",
            "URL",
            "FORMAT",
            "EVENTS",
            "FRAMEWORKS",
            "USERS",
            "SOURCE",
            "SECRET",
            "CREATED",
        ],
        |w| {
            vec![
                w.id.to_string(),
                w.url.clone(),
                w.format.as_str().into(),
                names(&w.events),
                names(&w.frameworks),
                names(&w.users),
                w.source.clone(),
                w.secret_prefix.clone(),
                output::ago(w.created_at),
            ]
        },
    )
}

async fn test(client: &Client, out: &Printer, a: IdArg) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let d = client.test_webhook(webhook_id(&a.id)?).await?;
    match fmt {
        OutputFormat::Json => out.json(&d),
        OutputFormat::Yaml => out.yaml(&d),
        _ if out.quiet => Ok(()),
        _ => {
            println!(
                "queued {} to webhook {} (delivery {}, {})",
                d.event, d.webhook_id, d.id, d.message_id
            );
            println!("  follow it: platform webhook deliveries {}", d.webhook_id);
            Ok(())
        }
    }
}

async fn deliveries(client: &Client, out: &Printer, a: DeliveriesArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let list = client
        .webhook_deliveries(webhook_id(&a.id)?, Some(a.limit))
        .await?;
    output::print_list(
        out,
        fmt,
        &list,
        &[
            "ID", "EVENT", "JOB", "STATE", "ATTEMPTS", "LAST", "NEXT", "CREATED",
        ],
        delivery_row,
    )
}

fn delivery_row(d: &Delivery) -> Vec<String> {
    let last = match (d.last_status, &d.last_error) {
        (_, Some(error)) => error.clone(),
        (Some(status), None) => status.to_string(),
        (None, None) if d.state == "pending" && d.attempts > 0 => "sending".into(),
        (None, None) => "-".into(),
    };
    let next = d.next_attempt_at.map_or_else(
        || "-".into(),
        |t| match (t - chrono::Utc::now()).num_seconds() {
            s if s <= 0 => "now".into(),
            s => format!("in {}", output::duration(s)),
        },
    );
    vec![
        d.id.to_string(),
        d.event.clone(),
        d.job_id.map_or_else(|| "-".into(), |j| j.to_string()),
        d.state.clone(),
        d.attempts.to_string(),
        last,
        next,
        output::ago(d.created_at),
    ]
}
