//! Live views driven by the daemon's event streams: `platform job watch`
//! (also `job create --follow`) and `platform job list --watch`.
//!
//! On a terminal they animate (an indicatif bar; a redrawn table); when
//! stdout is not a terminal they print plain lines, and `-o json` prints
//! every event as one JSON line. Ctrl-C detaches without touching the job.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

use super::events::{job_events_path, Update, ALL_JOBS_EVENTS_PATH};
use super::exit::{self, Exit};
use super::metric_keys::{rank, Direction};
use super::output::{self, OutputFormat, Printer};
use super::stream::{EventStream, Item, SseEvent};
use crate::client::Client;
use crate::model::{Job, JobListQuery, Metric, MetricQuery};

/// Exit code after Ctrl-C (the shell's convention for SIGINT).
const INTERRUPTED: i32 = 130;

/// `platform job watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Job id or unique prefix (≥ 4 characters).
    pub id: String,
}

/// What a watcher knows about a job so far.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The latest snapshot.
    pub job: Option<Job>,
    /// Latest value of every metric key.
    latest: BTreeMap<String, f64>,
    /// Best value of every key with a known direction, with its epoch.
    best: HashMap<String, (f64, i64)>,
    /// Epoch of the latest point.
    epoch: Option<i64>,
}

impl Tracker {
    /// Folds in one event.
    pub fn apply(&mut self, u: &Update) {
        match u {
            Update::Job(j) => self.job = Some((**j).clone()),
            Update::Metric(m) => {
                if m.metrics.contains_key("epoch") || m.epoch > 0 {
                    self.epoch = Some(m.epoch);
                }
                for (k, v) in &m.metrics {
                    let Some(v) = v.as_f64() else { continue };
                    if k == "epoch" || k == "step" {
                        continue;
                    }
                    self.latest.insert(k.clone(), v);
                    let dir = Direction::of(k);
                    let better = |old: f64| match dir {
                        Direction::Lower => v < old,
                        Direction::Higher => v > old,
                        Direction::Unknown => false,
                    };
                    if dir != Direction::Unknown {
                        let e = self.best.entry(k.clone()).or_insert((v, m.epoch));
                        if better(e.0) {
                            *e = (v, m.epoch);
                        }
                    }
                }
            }
            Update::Other => {}
        }
    }

    /// Current and total epochs, when known (from the message `epoch 3/10`,
    /// the points' epochs and `config.epochs`).
    pub fn epochs(&self) -> (Option<i64>, Option<i64>) {
        let job = self.job.as_ref();
        let from_msg = job.and_then(|j| j.message.as_deref()).and_then(parse_epoch);
        let total = job
            .and_then(|j| j.config.as_ref())
            .and_then(|c| c.get("epochs"))
            .and_then(|v| v.as_i64())
            .or(from_msg.map(|m| m.1));
        (from_msg.map(|m| m.0).or(self.epoch), total)
    }

    /// Up to `n` latest metrics, most useful first, e.g. `loss 0.53 · mAP50 0.61`.
    pub fn key_metrics(&self, n: usize) -> String {
        rank(self.latest.keys().cloned())
            .into_iter()
            .take(n)
            .filter_map(|k| self.latest.get(&k).map(|v| format!("{k} {}", fmt(*v))))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// The status line: epoch, metrics, elapsed and ETA.
    fn line(&self) -> String {
        let Some(job) = &self.job else {
            return "connecting…".into();
        };
        let mut parts = Vec::new();
        match self.epochs() {
            (Some(e), Some(t)) => parts.push(format!("epoch {e}/{t}")),
            (Some(e), None) => parts.push(format!("epoch {e}")),
            _ => {}
        }
        let metrics = self.key_metrics(3);
        if !metrics.is_empty() {
            parts.push(metrics);
        }
        if let Some(m) = job.message.as_deref().filter(|m| parse_epoch(m).is_none()) {
            parts.push(m.lines().next().unwrap_or("").to_string());
        }
        let now = Utc::now();
        match job.started_at {
            Some(start) if !job.status.is_terminal() => {
                let elapsed = (now - start).num_seconds().max(0);
                let mut t = format!("{} elapsed", output::duration(elapsed));
                if job.progress > 0.0 && job.progress < 1.0 {
                    let eta = elapsed as f64 * (1.0 - job.progress) / job.progress;
                    t.push_str(&format!(", ETA {}", output::duration(eta.round() as i64)));
                }
                parts.push(t);
            }
            None if !job.status.is_terminal() => parts.push(format!(
                "waiting for a runner ({})",
                output::duration((now - job.created_at).num_seconds())
            )),
            _ => {}
        }
        parts.join(" · ")
    }

    /// The closing summary lines.
    fn summary(&self, job: &Job) -> Vec<String> {
        let took = job
            .started_at
            .zip(job.completed_at)
            .map(|(s, c)| format!(" in {}", output::duration((c - s).num_seconds())))
            .unwrap_or_default();
        let mut lines = vec![format!(
            "job {} {}{took}",
            job.id,
            output::status(job.status)
        )];
        let keys = rank(self.latest.keys().cloned());
        let best: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                self.best
                    .get(k)
                    .map(|(v, e)| format!("{k} {} (epoch {e})", fmt(*v)))
            })
            .take(4)
            .collect();
        if !best.is_empty() {
            lines.push(format!("  best        {}", best.join(", ")));
        }
        let last = self.key_metrics(4);
        if !last.is_empty() {
            let epoch = self
                .epoch
                .map(|e| format!(" (epoch {e})"))
                .unwrap_or_default();
            lines.push(format!(
                "  last        {}{epoch}",
                last.replace(" · ", ", ")
            ));
        }
        if let Some(c) = &job.checkpoint_s3_uri {
            lines.push(format!("  checkpoint  {c}"));
        }
        if let Some(e) = &job.error {
            lines.push(format!("  error       {}", e.lines().next().unwrap_or("")));
        }
        lines
    }
}

/// `epoch 3/10` (any case, anywhere in the text) → (3, 10).
pub fn parse_epoch(text: &str) -> Option<(i64, i64)> {
    let lower = text.to_ascii_lowercase();
    let rest = &lower[lower.find("epoch")? + "epoch".len()..];
    let rest = rest.trim_start_matches([' ', ':', '=']);
    let (cur, rest) = rest.split_once('/')?;
    let total: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((cur.trim().parse().ok()?, total.parse().ok()?))
}

fn fmt(v: f64) -> String {
    output::number(&serde_json::json!(v))
}

/// How a watcher shows what happens.
enum View {
    Bar(ProgressBar),
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
                let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stdout());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30.cyan/blue}] {percent:>3}% {wide_msg}",
                    )
                    .context("progress bar template")?
                    .progress_chars("=> "),
                );
                View::Bar(bar)
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
                            t.line()
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
            View::Bar(_) => self.tick(t),
            View::Quiet => {}
        }
        Ok(())
    }

    fn tick(&self, t: &Tracker) {
        if let (View::Bar(bar), Some(job)) = (self, &t.job) {
            bar.set_prefix(output::status(job.status));
            bar.set_position((job.progress.clamp(0.0, 1.0) * 1000.0).round() as u64);
            bar.set_message(t.line());
        }
    }

    fn note(&self, text: &str) {
        match self {
            View::Bar(bar) => bar.set_message(text.to_string()),
            View::Quiet => {}
            _ => eprintln!("{text}"),
        }
    }

    fn finish(&self, t: &Tracker, job: &Job) {
        match self {
            View::Bar(bar) => {
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

    fn detach(&self) {
        if let View::Bar(bar) = self {
            bar.abandon();
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
                eprintln!("detached from job {id}; it keeps running. Re-attach with: platform job watch {id}");
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
            j.id.to_string(),
            output::status(j.status),
            output::percent(j.progress),
            metric,
            j.model_name.clone(),
            output::ago(j.created_at),
        ]);
    }
    output::table_lines(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_epochs_in_messages() {
        assert_eq!(parse_epoch("epoch 21/50"), Some((21, 50)));
        assert_eq!(
            parse_epoch("Training: Epoch 3 / 10, loss 0.5"),
            Some((3, 10))
        );
        assert_eq!(parse_epoch("epoch: 4/8"), Some((4, 8)));
        assert_eq!(parse_epoch("epoch 3"), None);
        assert_eq!(parse_epoch("warming up"), None);
    }
}
