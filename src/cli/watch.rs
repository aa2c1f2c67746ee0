//! Live views driven by the daemon's event streams: `platform job watch`
//! (also `job create --follow`) and `platform job list --watch`.
//!
//! On a terminal they animate (an indicatif bar; a redrawn table); when
//! stdout is not a terminal they print plain lines, and `-o json` prints
//! every event as one JSON line. Ctrl-C detaches without touching the job.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

use super::events::{job_events_path, Update, ALL_JOBS_EVENTS_PATH};
use super::exit::{self, Exit};
use super::output::{self, OutputFormat, Printer};
use super::stream::{EventStream, Item, SseEvent};
use super::tracker::{fit, Tracker};
use crate::client::Client;
use crate::model::{Job, JobListQuery, Metric, MetricQuery};

/// Exit code after Ctrl-C (the shell's convention for SIGINT).
const INTERRUPTED: i32 = 130;

/// `platform job watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix (≥ 4 hex characters).
    pub id: String,
}

/// Columns of a bar line besides the status word and the message:
/// " [" + bar + "] " + "100%" + " ".
const BAR_FRAME: usize = 2 + 2 + 4 + 1;

/// Width of the lines printed when stdout is not a terminal (no cutting
/// needed there, but a line should stay readable).
const PLAIN_WIDTH: usize = 200;

/// Columns left for the message on a bar line after the status word and a
/// bar `width` wide, with one spare: a line that fills the terminal exactly
/// leaves the cursor waiting to wrap.
fn message_room(status_len: usize, width: usize) -> usize {
    usize::from(console::Term::stdout().size().1).saturating_sub(status_len + width + BAR_FRAME + 1)
}

/// How a watcher shows what happens.
enum View {
    Bar { bar: ProgressBar, width: usize },
    Lines { last: String },
    Json,
    Quiet,
}

impl View {
    fn new(out: &Printer) -> anyhow::Result<View> {
        let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
        Ok(match fmt {
            OutputFormat::Json => View::Json,
            _ if out.quiet => View::Quiet,
            _ if out.tty => {
                let columns = usize::from(console::Term::stdout().size().1);
                let width = if columns >= 100 { 30 } else { 20 };
                let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stdout());
                // `{msg}`, not `{wide_msg}`: the message is fitted to the
                // terminal here, whole words only (see `Tracker::line`).
                bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{{prefix}} [{{bar:{width}.cyan/blue}}] {{percent:>3}}% {{msg}}"
                    ))
                    .context("progress bar template")?
                    .progress_chars("=> "),
                );
                View::Bar { bar, width }
            }
            _ => View::Lines {
                last: String::new(),
            },
        })
    }

    fn event(&mut self, e: &SseEvent, t: &Tracker) -> anyhow::Result<()> {
        match self {
            View::Json => {
                let data: serde_json::Value = serde_json::from_str(&e.data)
                    .unwrap_or(serde_json::Value::String(e.data.clone()));
                let line = serde_json::json!({"event": e.event, "id": e.id, "data": data});
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{line}")?;
                stdout.flush()?;
            }
            View::Lines { last } => {
                // One line per change of the job, not per point.
                if e.event == "job" {
                    if let Some(job) = &t.job {
                        let line = format!(
                            "{} {} {}",
                            output::status(job.status),
                            output::percent(job.progress),
                            t.line(PLAIN_WIDTH)
                        );
                        let key = format!(
                            "{} {} {:?}",
                            job.status,
                            output::percent(job.progress),
                            job.message
                        );
                        if key != *last {
                            println!("{}", line.trim_end());
                            *last = key;
                        }
                    }
                }
            }
            View::Bar { .. } => self.tick(t),
            View::Quiet => {}
        }
        Ok(())
    }

    fn tick(&self, t: &Tracker) {
        if let (View::Bar { bar, width }, Some(job)) = (self, &t.job) {
            bar.set_prefix(output::status(job.status));
            bar.set_position((job.progress.clamp(0.0, 1.0) * 1000.0).round() as u64);
            bar.set_message(t.line(message_room(job.status.as_str().len(), *width)));
        }
    }

    fn note(&self, text: &str) {
        match self {
            View::Bar { bar, width } => {
                // Room for the longest status word, whatever the job's is.
                let room = message_room("cancelled".len(), *width);
                bar.set_message(fit(vec![(0, text.to_string())], room));
            }
            View::Quiet => {}
            _ => eprintln!("{text}"),
        }
    }

    fn finish(&self, t: &Tracker, job: &Job) {
        match self {
            View::Bar { bar, .. } => {
                self.tick(t);
                bar.finish_and_clear();
            }
            View::Json | View::Quiet => return,
            View::Lines { .. } => {}
        }
        for line in t.summary(job) {
            println!("{line}");
        }
    }

    /// Leaves the bar as it is and moves below it, so what is printed next
    /// (the detach note, the shell prompt) starts on a line of its own.
    fn detach(&self) {
        if let View::Bar { bar, .. } = self {
            bar.abandon();
            println!();
        }
    }
}

/// Follows a job until it ends: exit 0 only when it completed.
pub async fn watch(client: &Client, out: &Printer, id: Uuid) -> anyhow::Result<()> {
    let mut view = View::new(out)?;
    let mut tracker = Tracker::default();
    let mut events = EventStream::new(client, job_events_path(id), None);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let job = loop {
        let item = tokio::select! {
            r = events.next() => r?,
            _ = ticker.tick() => {
                view.tick(&tracker);
                continue;
            }
            _ = &mut interrupt => {
                view.detach();
                let (name, arg) = match &tracker.job {
                    Some(j) => (output::job_number(j), output::job_arg(j)),
                    None => (id.to_string(), id.to_string()),
                };
                eprintln!("detached from job {name}; it keeps running. Re-attach with: platform job watch {arg}");
                return Err(Exit::silent(INTERRUPTED));
            }
        };
        match item {
            Some(Item::Event(e)) => {
                let u = Update::decode(&e)?;
                tracker.apply(&u);
                view.event(&e, &tracker)?;
                if let Some(job) = tracker.job.as_ref().filter(|j| j.status.is_terminal()) {
                    break job.clone();
                }
            }
            Some(Item::Reconnecting(n, why)) => view.note(&format!(
                "connection lost ({why}); reconnecting (attempt {n})…"
            )),
            // Resumed after the end: the job is final.
            None => break client.get_job(id).await?,
        }
    };
    view.finish(&tracker, &job);
    exit::finish(&job)
}

/// `platform job list --watch`: a table refreshed live until Ctrl-C; one
/// plain snapshot when stdout is not a terminal.
pub async fn list(client: &Client, out: &Printer, q: &JobListQuery) -> anyhow::Result<()> {
    if !matches!(out.format(&[OutputFormat::Table])?, OutputFormat::Table) {
        return Err(Exit::usage("--watch shows a table; drop -o"));
    }
    let mut jobs = client.list_jobs(q).await?;
    let mut latest = latest_points(client, &jobs).await;
    if !out.tty {
        print_lines(&live_table(&jobs, &latest));
        return Ok(());
    }
    // Subscribe before the first draw so no change is missed.
    let mut events = EventStream::new(client, ALL_JOBS_EVENTS_PATH, None);
    let term = console::Term::stdout();
    let mut drawn = 0;
    let mut stale = false;
    let mut redraw = tokio::time::interval(Duration::from_millis(250));
    let mut since_refetch = tokio::time::Instant::now();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            item = events.next() => match item? {
                Some(Item::Event(e)) => match Update::decode(&e)? {
                    Update::Job(_) => stale = true,
                    Update::Metric(m) => {
                        latest.insert(m.job_id, m);
                    }
                    Update::Other => {}
                },
                Some(Item::Reconnecting(..)) => stale = true,
                None => {}
            },
            _ = redraw.tick() => {
                // A job change can move jobs in or out of the filter: refetch
                // (at most twice a second), then redraw.
                if stale && since_refetch.elapsed() >= Duration::from_millis(500) {
                    if let Ok(fresh) = client.list_jobs(q).await {
                        let missing: Vec<Job> = fresh.iter().filter(|j| !latest.contains_key(&j.id)).cloned().collect();
                        latest.extend(latest_points(client, &missing).await);
                        jobs = fresh;
                        stale = false;
                    }
                    since_refetch = tokio::time::Instant::now();
                }
                let mut lines = vec![format!(
                    "{} jobs · live · {} · Ctrl-C to stop",
                    jobs.len(),
                    chrono::Local::now().format("%H:%M:%S")
                )];
                lines.extend(live_table(&jobs, &latest));
                term.clear_last_lines(drawn)?;
                print_lines(&lines);
                drawn = lines.len();
            }
            _ = &mut interrupt => return Ok(()),
        }
    }
}

fn print_lines(lines: &[String]) {
    let mut stdout = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(stdout, "{l}");
    }
    let _ = stdout.flush();
}

/// The newest point of each job (jobs without points are left out).
async fn latest_points(client: &Client, jobs: &[Job]) -> HashMap<Uuid, Metric> {
    let q = MetricQuery {
        limit: Some(1),
        ..Default::default()
    };
    let fetches = jobs.iter().map(|j| {
        let q = q.clone();
        async move {
            client
                .metrics(j.id, &q)
                .await
                .ok()
                .and_then(|mut v| v.pop())
        }
    });
    futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .map(|m| (m.job_id, m))
        .collect()
}

fn live_table(jobs: &[Job], latest: &HashMap<Uuid, Metric>) -> Vec<String> {
    let mut t = output::table(&["ID", "STATUS", "PROGRESS", "LATEST METRIC", "MODEL", "AGE"]);
    for j in jobs {
        let metric = latest
            .get(&j.id)
            .map(|m| {
                let mut tr = Tracker::default();
                tr.apply(&Update::Metric(m.clone()));
                tr.key_metrics(2)
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into());
        t.add_row(vec![
            output::job_number(j),
            output::status(j.status),
            output::percent(j.progress),
            metric,
            j.model_name.clone(),
            output::ago(j.created_at),
        ]);
    }
    output::table_lines(&t)
}
