//! `platform metrics ID`: a job's metric points as a table, JSON or CSV,
//! always in ascending step order.

use clap::Args;

use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::model::Metric;

/// `platform metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Job id or unique prefix (≥ 4 characters).
    pub id: String,
    /// Only the last N points.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

/// Runs `platform metrics`.
pub async fn run(g: &GlobalArgs, out: &Printer, a: MetricsArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Csv])?;
    let client = g.client()?;
    let id = client.resolve_job(&a.id).await?;
    let mut points = client.all_metrics(id, None).await?;
    sort_by_step(&mut points);
    if let Some(n) = a.last {
        let skip = points.len().saturating_sub(n);
        points.drain(..skip);
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

/// Ascending step order: by epoch, then step, then arrival.
pub fn sort_by_step(points: &mut [Metric]) {
    points.sort_by_key(|m| (m.epoch, m.step.unwrap_or(i64::MIN), m.id));
}

/// Metric names across `points`: lifted ones first, the rest sorted.
pub fn keys(points: &[Metric]) -> Vec<String> {
    const SKIP: [&str; 2] = ["epoch", "step"];
    const FIRST: [&str; 2] = ["loss", "accuracy"];
    let mut rest = std::collections::BTreeSet::new();
    for p in points {
        for k in p.metrics.keys() {
            if !SKIP.contains(&k.as_str()) && !FIRST.contains(&k.as_str()) {
                rest.insert(k.clone());
            }
        }
    }
    FIRST
        .iter()
        .filter(|k| points.iter().any(|p| p.metrics.contains_key(**k)))
        .map(|k| k.to_string())
        .chain(rest)
        .collect()
}

fn print_table(points: &[Metric]) {
    let keys = keys(points);
    let mut headers = vec!["EPOCH", "STEP"];
    let upper: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    headers.extend(upper.iter().map(String::as_str));
    headers.push("TIME");
    let mut t = output::table(&headers);
    for p in points {
        let mut row = vec![
            p.epoch.to_string(),
            p.step.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        ];
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
    let keys = keys(points);
    let mut header = vec!["id".to_string(), "epoch".into(), "step".into()];
    header.extend(keys.iter().cloned());
    header.push("created_at".into());
    println!(
        "{}",
        header
            .iter()
            .map(|h| csv_field(h))
            .collect::<Vec<_>>()
            .join(",")
    );
    for p in points {
        let mut row = vec![
            p.id.to_string(),
            p.epoch.to_string(),
            p.step.map(|s| s.to_string()).unwrap_or_default(),
        ];
        for k in &keys {
            row.push(p.metrics.get(k).map(|v| v.to_string()).unwrap_or_default());
        }
        row.push(
            p.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        println!(
            "{}",
            row.iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(",")
        );
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
