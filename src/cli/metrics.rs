//! `platform metrics ID`: a job's metric points as a table, JSON or CSV,
//! always in ascending step order; `--follow` keeps printing new points
//! from the job's event stream, `--plot` draws terminal line charts
//! (`platform metrics A B C --plot KEY` overlays the runs, with a legend).

use std::io::Write;

use clap::Args;
use uuid::Uuid;

use super::events::{job_events_path, Update};
use super::exit::{self, Exit};
use super::metric_keys::{columns, epoch_of, keys, sort_by_step, Direction};
use super::output::{self, OutputFormat, Printer};
use super::stream::{EventStream, Item};
use super::GlobalArgs;
use crate::client::Client;
use crate::model::{Metric, MetricQuery};

/// Points fetched for a plot (the server downsamples, keeping extremes).
const PLOT_POINTS: i64 = 1000;

/// `platform metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix (≥ 4 hex characters); with --plot, several jobs overlay in one chart per metric.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Only the last N points, in step order (with --plot, only these are drawn).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Keep printing new points until the job ends (-o json then prints one point per line).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Draw a line chart of these metrics in the terminal (comma-separated or repeated).
    #[arg(
        long,
        value_name = "KEY[,KEY…]",
        value_delimiter = ',',
        conflicts_with = "follow"
    )]
    pub plot: Vec<String>,
    /// The job's system metrics (GPU utilisation, memory, temperature,
    /// power: `system/gpu<N>/…`) instead of its training metrics.
    #[arg(long, conflicts_with = "follow")]
    pub system: bool,
}

/// Runs `platform metrics`.
pub async fn run(g: &GlobalArgs, out: &Printer, a: MetricsArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Csv])?;
    let client = g.client()?;
    if a.ids.len() > 1 {
        return overlay(&client, &a).await;
    }
    let id = super::resolve::job_id(&client, &a.ids[0]).await?;
    if !a.plot.is_empty() && a.last.is_none() {
        return plot(
            &[(String::new(), plot_points(&client, id, a.system).await?)],
            &a.plot,
        );
    }
    let mut points = client.all_points(id, None, a.system).await?;
    let last_id = points.iter().map(|m| m.id).max().unwrap_or(0);
    sort_by_step(&mut points);
    if let Some(n) = a.last {
        let skip = points.len().saturating_sub(n);
        points.drain(..skip);
    }
    if !a.plot.is_empty() {
        return plot(&[(String::new(), points)], &a.plot);
    }
    if a.follow {
        return follow(&client, fmt, id, points, last_id).await;
    }
    match fmt {
        OutputFormat::Json => out.json(&points),
        OutputFormat::Csv => print_csv(&points),
        _ => {
            print_table(&points);
            Ok(())
        }
    }
}

fn print_table(points: &[Metric]) {
    let keys = keys(points);
    let mut headers = vec!["EPOCH", "STEP"];
    let upper: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    headers.extend(upper.iter().map(String::as_str));
    headers.push("TIME");
    let mut t = output::table(&headers);
    for p in points {
        let mut row = vec![dash(epoch_of(p)), dash(p.step)];
        for k in &keys {
            row.push(
                p.metrics
                    .get(k)
                    .map(output::number)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        row.push(p.created_at.format("%H:%M:%S").to_string());
        t.add_row(row);
    }
    output::print_table(&t);
}

fn print_csv(points: &[Metric]) -> anyhow::Result<()> {
    let mut rows = Rows::new(OutputFormat::Csv, points);
    if points.is_empty() {
        // The header alone, so scripts always get one.
        return rows.print_header_only();
    }
    for p in points {
        rows.print(p)?;
    }
    Ok(())
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Streams new points until the job ends. Table and CSV keep their
/// columns, printing a new header line when a point brings a new metric;
/// JSON prints one point per line (history included).
async fn follow(
    client: &Client,
    fmt: OutputFormat,
    id: Uuid,
    history: Vec<Metric>,
    last_id: i64,
) -> anyhow::Result<()> {
    let mut rows = Rows::new(fmt, &history);
    for p in &history {
        rows.print(p)?;
    }
    // `j0`: the stream starts with the job's snapshot, so an ended job ends it at once.
    let cursor = format!("m{last_id}-j0");
    let mut events = EventStream::new(client, job_events_path(id), Some(cursor));
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let item = tokio::select! {
            r = events.next() => r?,
            _ = &mut interrupt => return Ok(()),
        };
        match item {
            Some(Item::Event(e)) => match Update::decode(&e)? {
                Update::Metric(m) => rows.print(&m)?,
                Update::Job(j) if j.status.is_terminal() => return exit::finish(&j),
                _ => {}
            },
            Some(Item::Reconnecting(n, why)) => {
                eprintln!("connection lost ({why}); reconnecting (attempt {n})…")
            }
            // Resumed after the end: the job is final.
            None => {
                return exit::finish(&client.get_job(id).await?);
            }
        }
    }
}

/// Prints points one at a time with stable columns.
struct Rows {
    fmt: OutputFormat,
    keys: Vec<String>,
    widths: Vec<usize>,
    started: bool,
}

impl Rows {
    fn new(fmt: OutputFormat, history: &[Metric]) -> Self {
        let mut r = Rows {
            fmt,
            keys: Vec::new(),
            widths: Vec::new(),
            started: false,
        };
        r.set_keys(keys(history), history);
        r
    }

    fn set_keys(&mut self, keys: Vec<String>, sample: &[Metric]) {
        let cell = |p: &Metric, k: &str| p.metrics.get(k).map(output::number).unwrap_or_default();
        self.widths = keys
            .iter()
            .map(|k| {
                sample
                    .iter()
                    .map(|p| cell(p, k).chars().count())
                    .chain([k.chars().count(), 8])
                    .max()
                    .unwrap_or(8)
            })
            .collect();
        self.keys = keys;
        self.started = false;
    }

    fn print(&mut self, p: &Metric) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.fmt == OutputFormat::Json {
            writeln!(stdout, "{}", serde_json::to_string(p)?)?;
            stdout.flush()?;
            return Ok(());
        }
        let new_key = p
            .metrics
            .keys()
            .any(|k| k != "epoch" && k != "step" && !self.keys.contains(k));
        if new_key {
            let all = self.keys.iter().chain(p.metrics.keys()).cloned();
            self.set_keys(columns(all), std::slice::from_ref(p));
        }
        if !self.started {
            writeln!(stdout, "{}", self.header())?;
            self.started = true;
        }
        writeln!(stdout, "{}", self.row(p))?;
        stdout.flush()?;
        Ok(())
    }

    fn print_header_only(&self) -> anyhow::Result<()> {
        println!("{}", self.header());
        Ok(())
    }

    fn header(&self) -> String {
        if self.fmt == OutputFormat::Csv {
            let mut header = vec!["id".to_string(), "epoch".into(), "step".into()];
            header.extend(self.keys.iter().cloned());
            header.push("created_at".into());
            return csv_line(&header);
        }
        let mut header = format!("{:<6}  {:<8}", "EPOCH", "STEP");
        for (k, w) in self.keys.iter().zip(&self.widths) {
            header.push_str(&format!("  {k:<w$}"));
        }
        header + "  TIME"
    }

    fn row(&self, p: &Metric) -> String {
        let step = p.step.map(|s| s.to_string());
        if self.fmt == OutputFormat::Csv {
            let mut row = vec![
                p.id.to_string(),
                epoch_of(p).map(|e| e.to_string()).unwrap_or_default(),
                step.unwrap_or_default(),
            ];
            row.extend(
                self.keys
                    .iter()
                    .map(|k| p.metrics.get(k).map(|v| v.to_string()).unwrap_or_default()),
            );
            row.push(
                p.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            );
            return csv_line(&row);
        }
        let mut row = format!(
            "{:<6}  {:<8}",
            dash(epoch_of(p)),
            step.unwrap_or_else(|| "-".into())
        );
        for (k, w) in self.keys.iter().zip(&self.widths) {
            let v = p
                .metrics
                .get(k)
                .map(output::number)
                .unwrap_or_else(|| "-".into());
            row.push_str(&format!("  {v:<w$}"));
        }
        format!("{row}  {}", p.created_at.format("%H:%M:%S"))
    }
}

/// A number, or `-` when there is none.
fn dash(n: Option<i64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

fn csv_line(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// A whole history for a plot, downsampled by the server (first, last and
/// extremes kept), in step order.
async fn plot_points(client: &Client, id: Uuid, system: bool) -> anyhow::Result<Vec<Metric>> {
    let q = MetricQuery {
        order: Some("asc".into()),
        max_points: Some(PLOT_POINTS),
        system: system.then_some(true),
        ..Default::default()
    };
    let mut points = client.metrics(id, &q).await?;
    sort_by_step(&mut points);
    Ok(points)
}

/// `platform metrics A B C --plot KEY`: each job's downsampled history,
/// labelled by what differs between them (see [`super::compare::labels`]).
async fn overlay(client: &Client, a: &MetricsArgs) -> anyhow::Result<()> {
    if a.plot.is_empty() {
        return Err(Exit::usage(
            "several jobs can only be shown together as a chart: add --plot KEY (or compare them with `platform job compare`)",
        ));
    }
    let mut jobs = Vec::with_capacity(a.ids.len());
    for text in &a.ids {
        let id = super::resolve::job_id(client, text).await?;
        jobs.push(client.get_job(id).await?);
    }
    let labels = super::compare::labels(&jobs);
    let mut runs = Vec::with_capacity(jobs.len());
    for (job, label) in jobs.iter().zip(labels) {
        let mut points = plot_points(client, job.id, a.system).await?;
        if let Some(n) = a.last {
            let skip = points.len().saturating_sub(n);
            points.drain(..skip);
        }
        runs.push((label, points));
    }
    plot(&runs, &a.plot)
}

/// Line colours of overlaid runs, in legend order.
const PALETTE: [(u8, u8, u8); 6] = [
    (80, 160, 255),
    (255, 150, 50),
    (90, 200, 90),
    (230, 80, 80),
    (180, 120, 230),
    (220, 200, 60),
];

/// `--plot`: one terminal line chart per key, over the step when every
/// point has one, else the epoch. `runs` are (label, points); several
/// runs share each chart, one line each, with a legend (coloured when the
/// terminal allows).
fn plot(runs: &[(String, Vec<Metric>)], wanted: &[String]) -> anyhow::Result<()> {
    use textplots::{Chart, ColorPlot, Plot, Shape};
    let cols = console::Term::stdout()
        .size_checked()
        .map_or(100, |(_, c)| c as u32);
    let width = (cols.saturating_sub(16) * 2).clamp(32, 300);
    let colour = console::colors_enabled();
    for key in wanted.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
        let series: Vec<Series> = runs.iter().map(|(_, p)| series(p, key)).collect();
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let (Some(mut x0), Some(mut x1)) = (xs.clone().reduce(f32::min), xs.reduce(f32::max))
        else {
            let available = keys(&runs.iter().flat_map(|(_, p)| p.clone()).collect::<Vec<_>>());
            return Err(Exit::usage(format!(
                "no point of {} has a metric {key:?}; {}: {}",
                if runs.len() == 1 {
                    "this job"
                } else {
                    "these jobs"
                },
                if runs.len() == 1 {
                    "it has"
                } else {
                    "they have"
                },
                if available.is_empty() {
                    "none yet".to_string()
                } else {
                    available.join(", ")
                }
            )));
        };
        if x0 >= x1 {
            (x0, x1) = (x0 - 1.0, x0 + 1.0);
        }
        let mut chart = Chart::new(width, 60, x0, x1);
        let shapes: Vec<Shape> = series.iter().map(|s| Shape::Lines(&s.points)).collect();
        let mut drawn = &mut chart;
        if let [only] = &series[..] {
            let (best, last) = only.best_and_last(key);
            println!(
                "{key}: {} points over {}, last {}, best {}",
                only.points.len(),
                only.axis,
                fmt(last),
                best.map(fmt).unwrap_or_else(|| "-".into())
            );
            drawn = drawn.lineplot(&shapes[0]);
        } else {
            println!("{key}: {} runs over {}", runs.len(), series[0].axis);
            for (i, ((label, _), s)) in runs.iter().zip(&series).enumerate() {
                let (r, g, b) = PALETTE[i % PALETTE.len()];
                let marker = console::style("━━").true_color(r, g, b);
                let summary = match s.points.is_empty() {
                    true => "no points".to_string(),
                    false => {
                        let (best, last) = s.best_and_last(key);
                        format!(
                            "last {}, best {}",
                            fmt(last),
                            best.map(fmt).unwrap_or_else(|| "-".into())
                        )
                    }
                };
                println!("  {marker} {label}: {summary}");
                drawn = match colour {
                    true => drawn.linecolorplot(&shapes[i], rgb::RGB8 { r, g, b }),
                    false => drawn.lineplot(&shapes[i]),
                };
            }
        }
        drawn.display();
    }
    Ok(())
}

fn fmt(v: f32) -> String {
    output::number(&serde_json::json!(v))
}

/// One metric as chart coordinates.
struct Series {
    points: Vec<(f32, f32)>,
    axis: &'static str,
}

impl Series {
    fn best_and_last(&self, key: &str) -> (Option<f32>, f32) {
        let ys = self.points.iter().map(|p| p.1);
        let best = match Direction::of(key) {
            Direction::Lower => ys.clone().reduce(f32::min),
            Direction::Higher => ys.clone().reduce(f32::max),
            Direction::Unknown => None,
        };
        (best, self.points.last().map_or(f32::NAN, |p| p.1))
    }
}

fn series(points: &[Metric], key: &str) -> Series {
    let with: Vec<&Metric> = points
        .iter()
        .filter(|p| p.metrics.contains_key(key))
        .collect();
    let by_step = !with.is_empty() && with.iter().all(|p| p.step.is_some());
    let points = with
        .iter()
        .filter_map(|p| {
            let x = if by_step {
                p.step.unwrap_or_default()
            } else {
                p.epoch
            };
            let y = p.metrics.get(key)?.as_f64()?;
            Some((x as f32, y as f32))
        })
        .collect();
    Series {
        points,
        axis: if by_step { "steps" } else { "epochs" },
    }
}
